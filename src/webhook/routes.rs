//! The admission routes: a thin layer over the pure policy (`POST /mutate`, `POST /validate`).

use super::metrics::{Metrics, ReviewLabels, RuleLabels, Verdict};
use crate::admission::{Phase, ReviewView, response_body};
use crate::dialect;
use crate::policy::{Outcome, Policy};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the routes share.
#[derive(Debug)]
pub struct AppState {
    /// The admission policy.
    pub policy: Policy,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown starts: `/readyz` fails so endpoints drop this replica; reviews are
    /// still answered.
    pub stopping: AtomicBool,
    /// Set once the listener is closed: reviews on open connections get 503 + `Retry-After: 1`.
    pub draining: AtomicBool,
}

impl AppState {
    /// State around a policy.
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(AppState {
            policy,
            metrics,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }
}

/// Answers 408 (JSON error) when a request, body included, is not handled within `limit`:
/// hyper's header timeout does not cover a body that trickles in.
pub fn with_request_timeout(app: Router, limit: std::time::Duration) -> Router {
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(r) => r,
                Err(_) => error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request was not received in time",
                ),
            }
        },
    ))
}

/// Once shutdown has started, answers carry `Connection: close` (HTTP/1.1): the API server's
/// pooled keep-alive connections to this replica then end one answered request at a time, and
/// the next request opens a connection through the Service, to another replica, instead of
/// racing the final close.
pub fn with_close_when_stopping(app: Router, state: Arc<AppState>) -> Router {
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let state = state.clone();
            async move {
                let http1 = req.version() <= http::Version::HTTP_11;
                let mut resp = next.run(req).await;
                if http1 && state.stopping.load(Ordering::Relaxed) {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        },
    ))
}

/// The admission router; `max_body` bytes at most per review (413 above).
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn mutate(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    guarded(&s, Phase::Mutate, body).await
}

async fn validate(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    guarded(&s, Phase::Validate, body).await
}

/// [`handle`], with a panic in it (a bug) answered 500 on the same connection, logged as an
/// error and counted as `reviews_total{kind="panic",verdict="error"}`, instead of the connection
/// dropped with the review unanswered. Either way the API server applies the webhook's
/// `failurePolicy`; this way the cause is on record and the connection serves the next review.
/// The state a review touches stays usable: the allocators take their locks through poisoning.
async fn guarded(s: &AppState, phase: Phase, body: Result<Bytes, BytesRejection>) -> Response {
    use futures::FutureExt as _;
    let panic = match std::panic::AssertUnwindSafe(handle(s, phase, body))
        .catch_unwind()
        .await
    {
        Ok(response) => return response,
        Err(panic) => panic,
    };
    let endpoint = phase.as_str();
    let what = crate::cli::panic_message(&*panic);
    s.metrics
        .reviews
        .get_or_create(&ReviewLabels {
            endpoint,
            kind: "panic",
            operation: "",
            verdict: "error",
        })
        .inc();
    tracing::error!(
        endpoint,
        panic = what,
        "the review's handling panicked (a bug); answered 500"
    );
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "hotnic failed to answer this review (an internal error, logged); the webhook's failurePolicy applies",
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; POST AdmissionReviews to /mutate or /validate",
    )
}

/// A JSON error body.
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// Counts a review in flight for as long as it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn handle(s: &AppState, phase: Phase, body: Result<Bytes, BytesRejection>) -> Response {
    let metrics = &s.metrics;
    let endpoint = phase.as_str();
    if s.draining.load(Ordering::Relaxed) {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; retry on another replica",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let _in_flight = InFlight::new(metrics);
    let start = Instant::now();
    let invalid = |status: StatusCode, message: String| {
        metrics
            .reviews
            .get_or_create(&ReviewLabels {
                endpoint,
                kind: "invalid",
                operation: "",
                verdict: "error",
            })
            .inc();
        tracing::info!(endpoint, status = status.as_u16(), error = %message, "rejected a request");
        error(status, &message)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return invalid(e.status(), e.body_text()),
    };
    let review = match ReviewView::parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid(StatusCode::BAD_REQUEST, e.to_string()),
    };
    answer(s, phase, &review, start).await
}

/// Decides (claiming MACs on /mutate), records metrics, answers, and logs the one line of the
/// review: its `review` span, made once the verdict is known (so its fields are written once,
/// never re-recorded), and the event in it.
async fn answer(s: &AppState, phase: Phase, review: &ReviewView<'_>, start: Instant) -> Response {
    let metrics = &s.metrics;
    let endpoint = phase.as_str();
    let request = review.as_request();
    let outcome = match phase {
        Phase::Mutate => {
            let (outcome, stats) = s.policy.mutate_with_stats(&request).await;
            if stats.claims > 0 {
                metrics.claims.inc_by(u64::from(stats.claims));
                metrics.conflicts.inc_by(u64::from(stats.conflicts));
                metrics.allocation.observe(stats.elapsed.as_secs_f64());
            }
            outcome
        }
        Phase::Validate => s.policy.validate_async(&request).await,
    };
    let answer = response_body(&review.uid, phase, &outcome);
    let verdict = match (&answer, outcome.is_allowed()) {
        (Err(_), _) => Verdict::Error,
        (Ok(_), true) => Verdict::Allowed,
        (Ok(_), false) => Verdict::Denied,
    };
    let elapsed = start.elapsed();
    let kind = dialect::Kind::of(&review.group, &review.kind);
    metrics.answered(
        phase,
        kind,
        review.operation,
        verdict,
        elapsed.as_secs_f64(),
    );
    let verdict = verdict.as_str();
    let span = tracing::info_span!(
        "review",
        // As `&str`, not `%`: recorded as strings, without a pass through `fmt`.
        uid = &*review.uid,
        endpoint,
        kind = &*review.kind,
        namespace = &*review.namespace,
        object_name = &*review.name,
        operation = review.operation.as_str(),
        dry_run = review.dry_run,
        verdict,
        latency_us = elapsed.as_micros() as u64,
    );
    let _in_span = span.enter();
    let body = match answer {
        Ok(body) => body,
        Err(e) => {
            // Never an answer without the patch or status it should carry: the API server
            // treats a 500 as a webhook failure (failurePolicy decides).
            tracing::error!(error = %e, "cannot write the answer");
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    };
    match &outcome {
        Outcome::Denied(d) => {
            for c in &d.causes {
                metrics
                    .denials
                    .get_or_create(&RuleLabels {
                        rule: c.rule.as_str(),
                    })
                    .inc();
            }
            tracing::info!(causes = d.causes.len(), message = %d.message(), "review answered");
        }
        Outcome::Allowed { patch, .. } => {
            tracing::info!(patch_ops = patch.0.len(), "review answered");
        }
    }
    metrics.macs_held.set(s.policy.allocator().held() as u64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
