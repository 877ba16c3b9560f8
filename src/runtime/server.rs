//! The hardened HTTP listener every hotnic listener runs on (the webhook's TLS listener, the admin
//! listeners of the webhook and the agent): accept under a connection cap, a bounded handshake,
//! HTTP/1.1 or HTTP/2 through hyper with a header-read timeout, idle connections cut off, and on
//! shutdown: stop accepting, then a bounded graceful drain, then the rest closed.

use super::RuntimeError;
use super::idle::{Activity, Tracked, idle};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client gets to send a request's headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    /// A connection with no I/O for this long is closed (idle keep-alives, clients that never
    /// send a request).
    pub idle_timeout: Duration,
    /// Time a request (headers and body) may take to arrive and be answered (408 after). The
    /// webhook's routes apply it (`webhook::routes::with_request_timeout`): the answer is theirs.
    pub request_timeout: Duration,
    /// Most connections open at once (handshaking included); more wait in the kernel's accept
    /// queue.
    pub max_connections: usize,
    /// Time a client gets to finish the handshake (TLS).
    pub handshake_timeout: Duration,
    /// On shutdown, how long open connections get to finish what they are doing.
    pub drain_timeout: Duration,
}

/// How an accepted TCP connection becomes the stream HTTP is spoken on.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The stream after the handshake.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Runs the handshake (bounded by [`ConnLimits::handshake_timeout`]).
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain HTTP: no handshake.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Stream = TcpStream;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<TcpStream>> + Send {
        std::future::ready(Ok(tcp))
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}

/// Serves `app` on `listener` until `shutdown` resolves; then closes the listener, calls
/// `closed` (the webhook marks itself draining there), lets open connections finish within the
/// drain timeout, and closes what is left. `name` labels the logs (`webhook`, `admin`).
pub async fn serve<H: Handshake>(
    name: &'static str,
    listener: TcpListener,
    handshake: H,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    closed: impl FnOnce(),
) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        // At the connection cap, stop accepting (the kernel backlog holds newcomers) until a
        // connection ends.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = handshake.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        conns.spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, handshake.handshake(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = name, %peer, error = %e, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "handshake timed out");
                        return;
                    }
                };
            let activity = Activity::new();
            let io = TokioIo::new(Tracked::new(stream, activity.clone()));
            let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                },
                // Dropping the connection closes it; no answer of hotnic's is ever this long
                // without I/O.
                () = idle(&activity, limits.idle_timeout) => {
                    tracing::debug!(listener = name, %peer, "closing an idle connection");
                }
            }
        });
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    closed();
    tracing::info!(
        listener = name,
        connections = graceful.count(),
        "listener closed; draining"
    );
    match tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!(listener = name, "drained"),
        Err(_) => tracing::warn!(
            listener = name,
            "drain timeout reached; closing the remaining connections"
        ),
    }
    conns.shutdown().await;
}
