//! The TLS listener: rustls handshakes in front of the runtime's hardened listener
//! ([`crate::runtime::server`]: connection cap, handshake, header-read and idle timeouts, drain).

use super::routes::{self, AppState};
use crate::runtime::server::{self, Handshake};
use axum::Router;
use rustls::ServerConfig;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use crate::runtime::server::ConnLimits;

/// The TLS handshake (certificates from the [`super::tls::CertStore`] behind the config).
#[derive(Clone)]
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Stream = TlsStream<TcpStream>;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.0.accept(tcp)
    }
}

/// Serves the admission router `reviews` over TLS on `listener`, in the webhook's HTTP layers
/// (the request timeout: 408; `Connection: close` once stopping), until `shutdown` resolves; then
/// stops accepting, marks the state draining (new reviews get 503 + `Retry-After: 1`), and waits
/// up to the drain timeout for open connections to finish what they are doing. `hotnic webhook`
/// serves `routes::router` here; the limit server (`examples/limit_server.rs`) a constant answer,
/// so that both measure the same stack.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    reviews: Router,
    state: Arc<AppState>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = routes::with_close_when_stopping(
        routes::with_request_timeout(reviews, limits.request_timeout),
        state.clone(),
    );
    server::serve(
        "webhook",
        listener,
        Tls(TlsAcceptor::from(tls)),
        app,
        limits,
        shutdown,
        move || state.draining.store(true, Ordering::SeqCst),
    )
    .await;
}
