//! Agent metrics (prometheus-client) and the admin listener: `/livez`, `/readyz`, `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Label set: `result` = `success` | `failure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// NIC plugs (CNI ADD) by result.
    pub plugs: Family<ResultLabel, Counter>,
    /// NIC unplugs (CNI DEL) by result.
    pub unplugs: Family<ResultLabel, Counter>,
    /// Seconds from the start of a plug to its result being cached.
    pub plug_latency: Histogram,
    /// Pods the agent manages (with NICs desired or plugged).
    pub pods_managed: Gauge,
    /// Pod reconciles that ended with an error.
    pub reconcile_errors: Counter,
    /// Set once the first full reconcile pass is done.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hotnic_agent");
        let plugs = Family::<ResultLabel, Counter>::default();
        let unplugs = Family::<ResultLabel, Counter>::default();
        let plug_latency = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let pods_managed = Gauge::default();
        let reconcile_errors = Counter::default();
        registry.register("plugs", "NIC plugs (CNI ADD) by result", plugs.clone());
        registry.register(
            "unplugs",
            "NIC unplugs (CNI DEL) by result",
            unplugs.clone(),
        );
        registry.register(
            "plug_latency_seconds",
            "Time from starting a plug to its result being cached",
            plug_latency.clone(),
        );
        registry.register(
            "pods_managed",
            "Pods with NICs desired or plugged",
            pods_managed.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Pod reconciles that ended with an error",
            reconcile_errors.clone(),
        );
        Self {
            registry,
            plugs,
            unplugs,
            plug_latency,
            pods_managed,
            reconcile_errors,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts a plug.
    pub fn plug(&self, ok: bool) {
        self.plugs.get_or_create(&label(ok)).inc();
    }

    /// Counts an unplug.
    pub fn unplug(&self, ok: bool) {
        self.unplugs.get_or_create(&label(ok)).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn label(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "success" } else { "failure" }.into(),
    }
}

/// The admin router.
pub fn admin_router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(m)
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    if m.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first reconcile pass not done",
        )
            .into_response()
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// Serves the admin router on `addr` until the task is dropped.
pub async fn serve_admin(
    addr: std::net::SocketAddr,
    m: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin listener {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "admin endpoints: /livez /readyz /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin_router(m)).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    }))
}
