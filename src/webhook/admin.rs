//! The admin listener (plain HTTP): `/livez`, `/readyz`, `/metrics`.

use super::routes::AppState;
use super::tls::CertStore;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Clone)]
struct Admin {
    app: Arc<AppState>,
    certs: Option<Arc<CertStore>>,
}

/// The admin router. Ready only once certificates are loaded (`certs` given), the allocator is
/// ready and the server is not draining.
pub fn router(app: Arc<AppState>, certs: Option<Arc<CertStore>>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin { app, certs })
}

async fn readyz(State(a): State<Admin>) -> Response {
    let problems: Vec<&str> = [
        (a.certs.is_none(), "certificates not loaded"),
        (!a.app.policy.allocator().is_ready(), "MAC allocator not ready"),
        (a.app.stopping.load(Ordering::Relaxed) || a.app.draining.load(Ordering::Relaxed), "shutting down"),
    ]
    .into_iter()
    .filter_map(|(bad, why)| bad.then_some(why))
    .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join(", "))).into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    let m = &a.app.metrics;
    m.macs_held.set(a.app.policy.allocator().held() as u64);
    if let Some(c) = &a.certs {
        m.cert_not_after.set(c.info().not_after);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        m.encode(),
    )
        .into_response()
}
