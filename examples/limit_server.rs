//! The limit server: `hotnic webhook`'s TLS + HTTP stack answering every review with a constant
//! `allowed: true`. It is the ceiling no webhook on this stack can beat, measured side by side
//! with hotnic by `bench/compare.sh` (issue 12).
//!
//! ```text
//! cargo run --release --example limit_server -- --dev --log-format json   # 127.0.0.1:8443
//! cargo run --release --example loadgen -- --expect constant --review create4
//! ```
//!
//! Same as `hotnic webhook`: the flags (the very same `WebhookArgs`, so the same defaults and
//! `--dev` certificates), the logging setup, the certificate store and rustls configuration
//! (`webhook::tls`), the accept loop, limits and hyper settings with the webhook's HTTP layers
//! (`webhook::serve::serve_tls`), the body limit and the body extractor, the global allocator
//! (mimalloc, `src/global_alloc.rs`). Different: the handler
//! reads the body into a typed struct that keeps only `request.uid` (borrowed, the rest is
//! skipped) and answers `{"response": {"uid": …, "allowed": true}}`; no policy, no metrics, no
//! per-review log line, no admin listener (`--admin-listen` is accepted and ignored).
//!
//! `--read view` makes it the decode floor instead: each review decoded as hotnic decodes it
//! (`ReviewView::parse`), then the same constant answer (`bench/compare.sh --floor`).
#![deny(unsafe_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use hotnic::allocator::InMemoryAllocator;
use hotnic::policy::Policy;
use hotnic::runtime::{Shutdown, Signals};
use hotnic::webhook::metrics::Metrics;
use hotnic::webhook::routes::AppState;
use hotnic::webhook::tls::{self, CertStore};
use hotnic::webhook::{Config, WebhookArgs, serve};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "limit_server",
    about = "hotnic's serving stack with a constant answer"
)]
struct Cli {
    #[command(flatten)]
    args: WebhookArgs,
    /// What to read of a review: `uid` (the limit server) or `view` (hotnic's whole decode, the
    /// policy's view of both objects, and nothing done with it: the decode floor, for
    /// `bench/compare.sh --floor`).
    #[arg(long, value_enum, default_value_t = Read::Uid)]
    read: Read,
}

/// What the server reads of each review (`--read`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Read {
    /// `request.uid` only, the rest skipped.
    Uid,
    /// What hotnic decodes (`ReviewView::parse`).
    View,
}

/// The only part of an AdmissionReview the limit server reads.
#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(borrow)]
    request: RequestIn<'a>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
}

/// `allowed: true` with the review's uid; 400 (as hotnic answers) for a body that is not one.
async fn allow(body: Result<Bytes, BytesRejection>) -> Response {
    respond(body, |b| {
        serde_json::from_slice::<ReviewIn>(b)
            .map(|r| r.request.uid)
            .map_err(|e| e.to_string())
    })
}

/// [`allow`], the review decoded as hotnic decodes it (`--read view`).
async fn allow_view(body: Result<Bytes, BytesRejection>) -> Response {
    respond(body, |b| {
        hotnic::admission::ReviewView::parse(b)
            .map(|r| r.uid)
            .map_err(|e| e.to_string())
    })
}

/// The constant answer with the uid `read` finds in the body.
fn respond(
    body: Result<Bytes, BytesRejection>,
    read: impl for<'a> FnOnce(&'a [u8]) -> Result<Cow<'a, str>, String>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return (e.status(), e.body_text()).into_response(),
    };
    match read(&body) {
        Ok(uid) => axum::Json(ReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &uid,
                allowed: true,
            },
        })
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("not an AdmissionReview: {e}"),
        )
            .into_response(),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.args, cli.read).await {
        eprintln!("limit_server: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: WebhookArgs, read: Read) -> anyhow::Result<()> {
    hotnic::cli::init_logging(args.log_format);
    let cfg = Config::from_args(&args)?;
    let shutdown = Shutdown::new();
    Signals::install()?.forward(shutdown.clone());
    let store = Arc::new(CertStore::open(&cfg.tls_cert, &cfg.tls_key)?);
    let tls = tls::server_config(store)?;
    // Only its draining/stopping flags are used: the layers and the drain read them.
    let state = AppState::new(
        Policy::new(
            cfg.policy.clone(),
            Arc::new(InMemoryAllocator::new(cfg.mac_range)),
        ),
        Arc::new(Metrics::new()),
    );
    let listener = hotnic::runtime::server::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let handler = match read {
        Read::Uid => post(allow),
        Read::View => post(allow_view),
    };
    let reviews = Router::new()
        .route("/mutate", handler.clone())
        .route("/validate", handler)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes));
    tracing::info!(%addr, "limit server serving");
    let stop = {
        let state = state.clone();
        let started = shutdown.started();
        async move {
            started.await;
            state
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    serve::serve_tls(listener, tls, reviews, state, cfg.limits, stop).await;
    tracing::info!("limit server stopped");
    Ok(())
}

// The same global allocator as `hotnic` (the only unsafe code here).
#[path = "../src/global_alloc.rs"]
mod global_alloc;

#[global_allocator]
static ALLOCATOR: global_alloc::Mimalloc = global_alloc::Mimalloc;
