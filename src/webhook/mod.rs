//! `hotnic webhook`: the TLS admission server the kube-apiserver calls, and its admin listener.

pub mod admin;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod tls;

use crate::allocator::{InMemoryAllocator, MacRange};
use crate::cli::{LogFormat, parse_duration};
use crate::policy::{Policy, PolicyConfig};
use anyhow::{Context, Result};
use metrics::Metrics;
use routes::AppState;
use serve::ConnLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tls::CertStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Arguments of `hotnic webhook` (each flag has a `HOTNIC_*` environment twin).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// TLS listen address [default: 0.0.0.0:8443; with --dev 127.0.0.1:8443].
    #[arg(long, env = "HOTNIC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin listen address, plain HTTP: /livez /readyz /metrics [default: 0.0.0.0:8080; with --dev 127.0.0.1:8080].
    #[arg(long, env = "HOTNIC_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Serving certificate chain (PEM). Reloaded when it changes.
    #[arg(long, env = "HOTNIC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM). Must match the certificate.
    #[arg(long, env = "HOTNIC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Range injected MACs come from (locally administered unicast addresses only).
    #[arg(long, env = "HOTNIC_MAC_RANGE", default_value = "02:00:00:00:00:00-02:ff:ff:ff:ff:ff")]
    pub mac_range: MacRange,
    /// Interface capacity for workloads that state none (before max with their NIC count).
    #[arg(long, env = "HOTNIC_DEFAULT_CAPACITY", default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub default_capacity: u8,
    /// Largest review body accepted (413 above).
    #[arg(long, env = "HOTNIC_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Log format.
    #[arg(long, env = "HOTNIC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// On SIGTERM: how long to keep answering while /readyz fails, so endpoints drop this replica.
    #[arg(long, env = "HOTNIC_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Then: how long in-flight reviews may take to finish.
    #[arg(long, env = "HOTNIC_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Time a client gets to send request headers (slow clients are cut off).
    #[arg(long, env = "HOTNIC_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "HOTNIC_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Development mode: self-signed certificates under --dev-certs-dir (created or reused, for
    /// localhost and 127.0.0.1) and loopback listen addresses. Explicit flags still win.
    #[arg(long, env = "HOTNIC_DEV")]
    pub dev: bool,
    /// Where --dev keeps its certificates.
    #[arg(long, env = "HOTNIC_DEV_CERTS_DIR", default_value = "certs")]
    pub dev_certs_dir: PathBuf,
}

/// A resolved server configuration (what tests build directly).
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS listen address (port 0 for an ephemeral one).
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// Certificate chain file.
    pub tls_cert: PathBuf,
    /// Key file.
    pub tls_key: PathBuf,
    /// Policy settings.
    pub policy: PolicyConfig,
    /// MAC range.
    pub mac_range: MacRange,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Connection limits.
    pub limits: ConnLimits,
    /// Ready-false period before the listener closes.
    pub shutdown_delay: Duration,
    /// Certificate poll interval.
    pub cert_reload_interval: Duration,
}

impl Config {
    /// Resolves command-line arguments (creating dev certificates when asked).
    pub fn from_args(a: &WebhookArgs) -> Result<Self> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let (tls_cert, tls_key) = match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ if a.dev => crate::certs::ensure_dev(&a.dev_certs_dir)?,
            _ => anyhow::bail!("--tls-cert and --tls-key are required (or --dev for self-signed development certificates)"),
        };
        Ok(Config {
            listen: a.listen.unwrap_or(if a.dev { loopback(8443) } else { any(8443) }),
            admin_listen: a.admin_listen.unwrap_or(if a.dev { loopback(8080) } else { any(8080) }),
            tls_cert,
            tls_key,
            policy: PolicyConfig { default_capacity: a.default_capacity },
            mac_range: a.mac_range,
            max_body_bytes: a.max_body_bytes,
            limits: ConnLimits {
                header_read_timeout: a.header_read_timeout,
                handshake_timeout: Duration::from_secs(10),
                drain_timeout: a.drain_timeout,
            },
            shutdown_delay: a.shutdown_delay,
            cert_reload_interval: a.cert_reload_interval,
        })
    }
}

/// A running webhook.
#[derive(Debug)]
pub struct Running {
    /// Where the TLS listener is.
    pub addr: SocketAddr,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    /// Shared state (policy, metrics, shutdown flags).
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown (ready false, delay, stop accepting, drain).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the server has drained and stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Loads the certificates (refusing a key that does not match), binds both listeners and serves.
pub async fn start(cfg: Config) -> Result<Running> {
    let store = Arc::new(CertStore::open(&cfg.tls_cert, &cfg.tls_key)?);
    let tls = tls::server_config(store.clone())?;
    let policy = Policy::new(cfg.policy.clone(), Arc::new(InMemoryAllocator::new(cfg.mac_range)));
    let metrics = Arc::new(Metrics::new());
    metrics.cert_not_after.set(store.info().not_after);
    let state = AppState::new(policy, metrics.clone());
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let admin = TcpListener::bind(cfg.admin_listen).await.with_context(|| format!("binding {}", cfg.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let info = store.info();
    tracing::info!(%addr, %admin_addr, subject = %info.subject, dns = ?info.dns, ips = ?info.ips, "hotnic webhook serving");

    let watcher = tokio::spawn(store.clone().watch(cfg.cert_reload_interval, {
        let metrics = metrics.clone();
        move |info| {
            metrics.cert_reloads.inc();
            metrics.cert_not_after.set(info.not_after);
        }
    }));
    let (admin_stop_tx, admin_stop_rx) = oneshot::channel::<()>();
    let admin_app = admin::router(state.clone(), Some(store));
    let admin_task = tokio::spawn(async move {
        let serve = axum::serve(admin, admin_app).with_graceful_shutdown(async {
            let _ = admin_stop_rx.await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "admin listener failed");
        }
    });

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = routes::router(state.clone(), cfg.max_body_bytes);
    let shutdown = {
        let state = state.clone();
        let delay = cfg.shutdown_delay;
        async move {
            let _ = stop_rx.await;
            state.stopping.store(true, Ordering::SeqCst);
            tracing::info!(delay = ?delay, "shutting down: not ready, still answering");
            tokio::time::sleep(delay).await;
        }
    };
    let done = tokio::spawn({
        let state = state.clone();
        async move {
            serve::serve_tls(listener, tls, app, state, cfg.limits, shutdown).await;
            watcher.abort();
            let _ = admin_stop_tx.send(());
            let _ = admin_task.await;
            tracing::info!("hotnic webhook stopped");
        }
    });
    Ok(Running { addr, admin_addr, state, stop: Some(stop_tx), done })
}

/// Runs `hotnic webhook` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(args: WebhookArgs) -> Result<()> {
    crate::cli::init_logging(args.log_format);
    let cfg = Config::from_args(&args)?;
    let mut running = start(cfg).await?;
    wait_for_signal().await?;
    running.shutdown();
    running.wait().await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}
