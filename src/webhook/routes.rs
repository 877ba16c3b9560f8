//! The admission routes: a thin layer over the pure policy (`POST /mutate`, `POST /validate`).

use super::metrics::{EndpointLabels, Metrics, ReviewLabels, RuleLabels};
use crate::admission::{Phase, Review, response};
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
    handle(&s, Phase::Mutate, body)
}

async fn validate(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(&s, Phase::Validate, body)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint; POST AdmissionReviews to /mutate or /validate")
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

fn handle(s: &AppState, phase: Phase, body: Result<Bytes, BytesRejection>) -> Response {
    let metrics = &s.metrics;
    let endpoint = phase.as_str();
    if s.draining.load(Ordering::Relaxed) {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "shutting down; retry on another replica");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let _in_flight = InFlight::new(metrics);
    let start = Instant::now();
    let invalid = |status: StatusCode, message: String| {
        metrics
            .reviews
            .get_or_create(&ReviewLabels { endpoint, kind: "invalid".into(), operation: "", verdict: "error" })
            .inc();
        tracing::info!(endpoint, status = status.as_u16(), error = %message, "rejected a request");
        error(status, &message)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return invalid(e.status(), e.body_text()),
    };
    let review = match Review::parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let span = tracing::info_span!(
        "review",
        uid = %review.uid,
        endpoint,
        kind = %review.kind.kind,
        namespace = %review.namespace,
        name = %review.name,
        operation = review.operation.as_str(),
        dry_run = review.dry_run,
    );
    let _entered = span.enter();
    let request = review.as_request();
    let outcome = match phase {
        Phase::Mutate => s.policy.mutate(&request),
        Phase::Validate => s.policy.validate(&request),
    };
    let body = response(&review.uid, phase, &outcome);
    let verdict = if outcome.is_allowed() { "allowed" } else { "denied" };
    let elapsed = start.elapsed();
    metrics
        .reviews
        .get_or_create(&ReviewLabels {
            endpoint,
            kind: review.kind.kind.clone(),
            operation: review.operation.as_str(),
            verdict,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&EndpointLabels { endpoint })
        .observe(elapsed.as_secs_f64());
    match &outcome {
        Outcome::Denied(d) => {
            for c in &d.causes {
                metrics.denials.get_or_create(&RuleLabels { rule: c.rule.as_str() }).inc();
            }
            tracing::info!(verdict, latency_us = elapsed.as_micros() as u64, causes = d.causes.len(), message = %d.message(), "review answered");
        }
        Outcome::Allowed { patch, .. } => {
            tracing::info!(verdict, latency_us = elapsed.as_micros() as u64, patch_ops = patch.0.len(), "review answered");
        }
    }
    metrics.macs_held.set(s.policy.allocator().held() as u64);
    (StatusCode::OK, axum::Json(body)).into_response()
}
