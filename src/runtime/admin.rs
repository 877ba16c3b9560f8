//! The admin listener (plain HTTP): `/livez`, `/readyz`, `/metrics`, served by the hardened
//! listener of [`super::server`] with the admin's own small connection cap.

use super::RuntimeError;
use super::metrics::CONTENT_TYPE;
use super::readiness::Readiness;
use super::server::{self, ConnLimits, Plain};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Most connections an admin listener keeps open (probes and scrapers are few).
pub const MAX_CONNECTIONS: usize = 64;

/// Limits of an admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Time a client gets to send a request's headers.
    pub header_read_timeout: Duration,
    /// A connection with no I/O for this long is closed (including one that never sends a
    /// request).
    pub idle_timeout: Duration,
    /// Most connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// On shutdown, how long open connections get to finish.
    pub drain_timeout: Duration,
}

impl Default for AdminLimits {
    /// The webhook's default timeouts (10 s headers, 120 s idle), [`MAX_CONNECTIONS`], 1 s drain.
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: MAX_CONNECTIONS,
            drain_timeout: Duration::from_secs(1),
        }
    }
}

impl AdminLimits {
    /// The header-read and idle timeouts of `main` (the listener the admin one stands beside),
    /// the rest as [`Default`].
    pub fn like(main: &ConnLimits) -> Self {
        AdminLimits {
            header_read_timeout: main.header_read_timeout,
            idle_timeout: main.idle_timeout,
            ..Self::default()
        }
    }

    fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            // Not applied here (see `ConnLimits::request_timeout`); the admin answers at once.
            request_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            // Plain HTTP: no handshake.
            handshake_timeout: self.header_read_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
}

type Scrape = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct Admin {
    readiness: Readiness,
    scrape: Scrape,
}

/// The admin router: `/livez` (200 while the process runs), `/readyz` (200 when every check of
/// `readiness` passes, else 503 naming each that fails), `/metrics` (`scrape`'s text, OpenMetrics).
pub fn router(readiness: Readiness, scrape: impl Fn() -> String + Send + Sync + 'static) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin {
            readiness,
            scrape: Arc::new(scrape),
        })
}

async fn readyz(State(a): State<Admin>) -> Response {
    let unmet = a.readiness.unmet();
    if unmet.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", unmet.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], (a.scrape)()).into_response()
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves `app` until `shutdown` resolves.
    pub async fn bind(
        addr: SocketAddr,
        app: Router,
        limits: AdminLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, RuntimeError> {
        Self::serve(server::bind(addr).await?, app, limits, shutdown)
    }

    /// Serves `app` on a bound `listener` until `shutdown` resolves.
    pub fn serve(
        listener: TcpListener,
        app: Router,
        limits: AdminLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, RuntimeError> {
        let addr = listener.local_addr().map_err(RuntimeError::LocalAddr)?;
        let task = tokio::spawn(server::serve(
            "admin",
            listener,
            Plain,
            app,
            limits.conn_limits(),
            shutdown,
            || {},
        ));
        Ok(AdminServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until it has stopped (after its shutdown and drain).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}
