//! The TLS listener: accept, handshake (bounded), serve HTTP/1.1 or HTTP/2, drain on shutdown.

use super::idle::{Activity, Tracked, idle};
use super::routes::AppState;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client gets to send a request's headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    /// A connection with no I/O for this long is closed (idle keep-alives, clients that never
    /// send a request).
    pub idle_timeout: Duration,
    /// Time a request (headers and body) may take to arrive and be answered (408 after).
    pub request_timeout: Duration,
    /// Most connections open at once (handshaking included).
    pub max_connections: usize,
    /// Time a client gets to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long in-flight reviews may take to finish on shutdown.
    pub drain_timeout: Duration,
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; then stops accepting, marks the
/// state draining (new reviews get 503 + `Retry-After: 1`), and waits up to the drain timeout for
/// open connections to finish what they are doing.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    state: Arc<AppState>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let service = TowerToHyperService::new(app.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let activity = Activity::new();
                    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
                    let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
                    tokio::select! {
                        r = conn => if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        },
                        // Dropping the connection closes it; no review is ever this long
                        // without I/O (the policy runs inline in microseconds).
                        () = idle(&activity, limits.idle_timeout) => {
                            tracing::debug!(%peer, "closing an idle connection");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(connections = graceful.count(), "draining");
    match tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
    }
}

/// Most connections the admin listener keeps open (probes and scrapers are few).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves `app` over plain HTTP/1.1 on `listener` (the admin endpoints) until `shutdown`
/// resolves, with the same header-read and idle timeouts as the TLS listener and a small
/// connection cap; open connections are simply dropped at the end.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
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
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        conns.spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let io = TokioIo::new(Tracked::new(tcp, activity.clone()));
            tokio::select! {
                r = builder.serve_connection(io, service) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                },
                () = idle(&activity, limits.idle_timeout) => {}
            }
        });
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}
