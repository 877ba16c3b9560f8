//! `hotnic webhook`: the TLS admission server the kube-apiserver calls, and its admin listener.

pub mod admin;
pub mod log;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod tls;

use crate::allocator::{InMemoryAllocator, MacAllocator, MacRange, ScopeMode};
use crate::certs::CertsError;
use crate::claims::{self, KubeAllocator};
use crate::cli::{LogFormat, PolicyArgs, parse_duration};
use crate::policy::{Policy, PolicyConfig};
use crate::runtime::{self, AdminLimits, AdminServer, RuntimeError, Shutdown, Signals};
use metrics::Metrics;
use routes::AppState;
use serve::ConnLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tls::{CertStore, TlsError};
use tokio::task::JoinHandle;

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Neither certificate files nor `--dev`.
    NoCertificates,
    /// The `--dev` certificates cannot be made.
    DevCertificates(#[source] CertsError),
    /// The serving certificate and key cannot be loaded.
    Certificates(#[source] TlsError),
    /// A listener cannot be bound, a signal handler not installed.
    Runtime(#[source] RuntimeError),
    /// No Kubernetes client for `--allocator kubernetes` (no in-cluster config, no kubeconfig).
    Kube(#[source] KubeClientError),
}

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The `--kubeconfig` file cannot be read or used.
    #[error("reading the kubeconfig {0}")]
    Kubeconfig(PathBuf, #[source] kube::config::KubeconfigError),
    /// Neither in-cluster configuration nor `KUBECONFIG` / `~/.kube/config`.
    #[error("finding the cluster (in-cluster service account, KUBECONFIG or ~/.kube/config)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client cannot be built from the configuration.
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// `{}`: what failed; `{:#}`: that and every cause, `: `-separated (as `anyhow` shows errors).
impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WebhookError::NoCertificates => {
                "--tls-cert and --tls-key are required (or --dev for self-signed development certificates)"
            }
            WebhookError::DevCertificates(_) => "preparing the --dev certificates",
            WebhookError::Certificates(_) => "loading the serving certificate",
            WebhookError::Runtime(_) => "starting the webhook",
            WebhookError::Kube(_) => "connecting to the API server for --allocator kubernetes",
        })?;
        if f.alternate() {
            runtime::write_sources(f, self)?;
        }
        Ok(())
    }
}

impl From<RuntimeError> for WebhookError {
    fn from(e: RuntimeError) -> Self {
        WebhookError::Runtime(e)
    }
}

impl From<TlsError> for WebhookError {
    fn from(e: TlsError) -> Self {
        WebhookError::Certificates(e)
    }
}

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
    /// MAC range and default capacity.
    #[command(flatten)]
    pub policy: PolicyArgs,
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
    /// Time a request, body included, may take to arrive and be answered (408 after; the API
    /// server waits at most 30 s).
    #[arg(long, env = "HOTNIC_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most TLS connections open at once; more wait in the kernel's accept queue.
    #[arg(long, env = "HOTNIC_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// A connection with no traffic for this long is closed (the API server drops idle
    /// connections after 90 s).
    #[arg(long, env = "HOTNIC_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "HOTNIC_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Development mode: self-signed certificates under --dev-certs-dir (created or reused, for
    /// localhost and 127.0.0.1) and loopback listen addresses. Explicit flags still win.
    #[arg(long, env = "HOTNIC_DEV")]
    pub dev: bool,
    /// Where --dev keeps its certificates.
    #[arg(long, env = "HOTNIC_DEV_CERTS_DIR", default_value = "certs")]
    pub dev_certs_dir: PathBuf,
    /// Where MAC claims live: `kubernetes` (MACAddress objects, cluster-wide, survives restarts;
    /// the default) or `memory` (this process only; the --dev default).
    #[arg(long, env = "HOTNIC_ALLOCATOR", value_enum)]
    pub allocator: Option<AllocatorKind>,
    /// Where a MAC must be unique: in the whole `cluster`, or on each `network` (L2 domain).
    #[arg(long, env = "HOTNIC_MAC_SCOPE", value_enum, default_value_t = ScopeMode::Cluster)]
    pub mac_scope: ScopeMode,
    /// Kubeconfig for --allocator kubernetes [default: in-cluster, else KUBECONFIG or ~/.kube/config].
    #[arg(long, env = "HOTNIC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Bound on each API call of the allocator (the webhook's timeoutSeconds is 5).
    #[arg(long, env = "HOTNIC_API_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// How often the replica holding the repair lease runs a repair pass.
    #[arg(long, env = "HOTNIC_REPAIR_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub repair_interval: Duration,
    /// How long a claim whose owner does not exist (yet) is kept: its request may still be in
    /// admission. Longer than any admission takes.
    #[arg(long, env = "HOTNIC_CLAIM_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub claim_grace: Duration,
    /// Namespace of the repair loop's coordination.k8s.io Lease (`hotnic-webhook-repair`).
    #[arg(long, env = "HOTNIC_LEASE_NAMESPACE", default_value = "hotnic-system")]
    pub lease_namespace: String,
    /// This replica's name in the Lease and in events [default: the host name].
    #[arg(long, env = "HOTNIC_POD_NAME")]
    pub identity: Option<String>,
}

/// `--allocator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllocatorKind {
    /// MACAddress claim objects in the API server.
    Kubernetes,
    /// One process's memory.
    Memory,
}

/// Where claims live, resolved.
#[derive(Debug, Clone)]
pub enum AllocatorConfig {
    /// In memory.
    Memory,
    /// In the API server.
    Kubernetes(KubeSettings),
}

/// `--allocator kubernetes` settings.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// `--kubeconfig` (`None`: inferred).
    pub kubeconfig: Option<PathBuf>,
    /// Bound on each API call.
    pub api_timeout: Duration,
    /// The repair loop (`None`: not run by this process).
    pub repair: Option<RepairSettings>,
}

/// The repair loop's settings.
#[derive(Debug, Clone)]
pub struct RepairSettings {
    /// Between passes.
    pub interval: Duration,
    /// Age before a claim without its owner is released.
    pub grace: Duration,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// This replica's name.
    pub identity: String,
}

/// The Lease of the repair loop.
pub const REPAIR_LEASE: &str = "hotnic-webhook-repair";

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
    /// Where MAC claims live.
    pub allocator: AllocatorConfig,
    /// Where MACs must be unique.
    pub mac_scope: ScopeMode,
}

impl Config {
    /// Resolves command-line arguments (creating dev certificates when asked).
    pub fn from_args(a: &WebhookArgs) -> Result<Self, WebhookError> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let (tls_cert, tls_key) = match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ if a.dev => {
                crate::certs::ensure_dev(&a.dev_certs_dir).map_err(WebhookError::DevCertificates)?
            }
            _ => return Err(WebhookError::NoCertificates),
        };
        Ok(Config {
            listen: a
                .listen
                .unwrap_or(if a.dev { loopback(8443) } else { any(8443) }),
            admin_listen: a
                .admin_listen
                .unwrap_or(if a.dev { loopback(8080) } else { any(8080) }),
            tls_cert,
            tls_key,
            policy: a.policy.config(),
            mac_range: a.policy.mac_range,
            max_body_bytes: a.max_body_bytes,
            limits: ConnLimits {
                header_read_timeout: a.header_read_timeout,
                idle_timeout: a.idle_timeout,
                request_timeout: a.request_timeout,
                max_connections: a.max_connections as usize,
                handshake_timeout: Duration::from_secs(10),
                drain_timeout: a.drain_timeout,
            },
            shutdown_delay: a.shutdown_delay,
            cert_reload_interval: a.cert_reload_interval,
            allocator: match a.allocator.unwrap_or(if a.dev {
                AllocatorKind::Memory
            } else {
                AllocatorKind::Kubernetes
            }) {
                AllocatorKind::Memory => AllocatorConfig::Memory,
                AllocatorKind::Kubernetes => AllocatorConfig::Kubernetes(KubeSettings {
                    kubeconfig: a.kubeconfig.clone(),
                    api_timeout: a.api_timeout,
                    repair: Some(RepairSettings {
                        interval: a.repair_interval,
                        grace: a.claim_grace,
                        lease_namespace: a.lease_namespace.clone(),
                        lease_name: REPAIR_LEASE.into(),
                        lease_duration: Duration::from_secs(15),
                        identity: a.identity.clone().unwrap_or_else(default_identity),
                    }),
                }),
            },
            mac_scope: a.mac_scope,
        })
    }
}

/// The host name (a pod's name in a cluster), else `hotnic-<pid>`.
fn default_identity() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("hotnic-{}", std::process::id()))
}

/// A Kubernetes client from `kubeconfig`, or inferred (in-cluster, `KUBECONFIG`, `~/.kube/config`).
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<kube::Client, KubeClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |e| KubeClientError::Kubeconfig(path.to_path_buf(), e);
            let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(bad)?
        }
        None => kube::Config::infer()
            .await
            .map_err(KubeClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(KubeClientError::Client)
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
    shutdown: Shutdown,
    done: JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown (ready false, delay, stop accepting, drain).
    pub fn shutdown(&mut self) {
        self.shutdown.start();
    }

    /// Waits until the server has drained and stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Loads the certificates (refusing a key that does not match), binds both listeners and serves
/// until [`Running::shutdown`].
pub async fn start(cfg: Config) -> Result<Running, WebhookError> {
    start_until(cfg, Shutdown::new()).await
}

/// The same, stopping when `shutdown` starts (by a signal, or [`Running::shutdown`]): `/readyz`
/// fails at once and reviews get `Connection: close`; after `shutdown_delay` the TLS listener
/// closes and drains; then the admin listener stops. Dropping [`Running`] (and every other clone
/// of `shutdown`) stops it the same way.
pub async fn start_until(cfg: Config, shutdown: Shutdown) -> Result<Running, WebhookError> {
    let store = Arc::new(CertStore::open(&cfg.tls_cert, &cfg.tls_key)?);
    let tls = tls::server_config(store.clone())?;
    let metrics = Arc::new(Metrics::new());
    let allocator: Arc<dyn MacAllocator> = match &cfg.allocator {
        AllocatorConfig::Memory => {
            Arc::new(InMemoryAllocator::new(cfg.mac_range).with_scope_mode(cfg.mac_scope))
        }
        AllocatorConfig::Kubernetes(k) => {
            let client = kube_client(k.kubeconfig.as_deref())
                .await
                .map_err(WebhookError::Kube)?;
            let a = Arc::new(KubeAllocator::new(
                client.clone(),
                cfg.mac_range,
                cfg.mac_scope,
                k.api_timeout,
            ));
            tokio::spawn(a.clone().watch(shutdown.clone()));
            if let Some(r) = &k.repair {
                let repairer =
                    claims::Repairer::new(client.clone(), cfg.mac_scope, r.grace, &r.identity);
                let lock = claims::lease::LeaseLock::new(
                    client,
                    &r.lease_namespace,
                    &r.lease_name,
                    &r.identity,
                    r.lease_duration,
                );
                let metrics = metrics.clone();
                tokio::spawn(claims::lease::run(
                    repairer,
                    lock,
                    r.interval,
                    shutdown.clone(),
                    move |report| {
                        for (kind, n) in &report.done {
                            metrics
                                .repairs
                                .get_or_create(&metrics::RepairLabels { kind })
                                .inc_by(*n as u64);
                        }
                        metrics.duplicates.set(report.duplicates as u64);
                    },
                ));
            }
            a
        }
    };
    let policy = Policy::new(cfg.policy.clone(), allocator);
    metrics.cert_not_after.set(store.info().not_after);
    let state = AppState::new(policy, metrics.clone());
    let listener = runtime::server::bind(cfg.listen).await?;
    let admin = runtime::server::bind(cfg.admin_listen).await?;
    let addr = listener.local_addr().map_err(RuntimeError::LocalAddr)?;
    let info = store.info();

    // The admin listener outlives the TLS one: probes see the not-ready phase and the drain.
    let admin_stop = Shutdown::new();
    let admin = AdminServer::serve(
        admin,
        admin::router(state.clone(), Some(store.clone())),
        AdminLimits::like(&cfg.limits),
        admin_stop.started(),
    )?;
    let admin_addr = admin.addr();
    let watcher = tokio::spawn(store.watch(cfg.cert_reload_interval, {
        let metrics = metrics.clone();
        move |info| {
            metrics.cert_reloads.inc();
            metrics.cert_not_after.set(info.not_after);
        }
    }));
    tracing::info!(%addr, %admin_addr, subject = %info.subject, dns = ?info.dns, ips = ?info.ips, "hotnic webhook serving");

    let app = routes::router(state.clone(), cfg.max_body_bytes);
    let stop_accepting = {
        let state = state.clone();
        let delay = cfg.shutdown_delay;
        let started = shutdown.started();
        async move {
            started.await;
            state.stopping.store(true, Ordering::SeqCst);
            tracing::info!(delay = ?delay, "shutting down: not ready, still answering");
            tokio::time::sleep(delay).await;
        }
    };
    let done = tokio::spawn({
        let state = state.clone();
        async move {
            serve::serve_tls(listener, tls, app, state, cfg.limits, stop_accepting).await;
            watcher.abort();
            admin_stop.start();
            admin.stopped().await;
            tracing::info!("hotnic webhook stopped");
        }
    });
    Ok(Running {
        addr,
        admin_addr,
        state,
        shutdown,
        done,
    })
}

/// Runs `hotnic webhook` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(args: WebhookArgs) -> Result<(), WebhookError> {
    crate::cli::init_logging(args.log_format);
    let cfg = Config::from_args(&args)?;
    // Handlers first: a SIGTERM right after "serving" is logged must drain, not kill.
    let shutdown = Shutdown::new();
    Signals::install()?.forward(shutdown.clone());
    start_until(cfg, shutdown).await?.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    fn resolve(argv: &[&str]) -> anyhow::Result<Config> {
        let cli = Cli::try_parse_from(std::iter::once("webhook").chain(argv.iter().copied()))?;
        Ok(Config::from_args(&cli.args)?)
    }

    #[test]
    fn dev_changes_only_the_defaults_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let certs = certs.to_str().unwrap();
        let c = resolve(&["--dev", "--dev-certs-dir", certs]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:8080".parse().unwrap());
        assert!(c.tls_cert.starts_with(certs) && c.tls_cert.exists());
        assert!(
            matches!(c.allocator, AllocatorConfig::Memory),
            "--dev: in memory"
        );
        let c = resolve(&[
            "--dev",
            "--dev-certs-dir",
            certs,
            "--listen",
            "127.0.0.1:9443",
            "--default-capacity",
            "8",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.policy.default_capacity, 8);
        let c = resolve(&["--tls-cert", "a.crt", "--tls-key", "a.key"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.admin_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.max_body_bytes, 8 << 20);
        assert_eq!(c.mac_range, MacRange::default_range());
        // Outside --dev, MACAddress claims with the repair loop; --allocator memory still works.
        let AllocatorConfig::Kubernetes(k) = &c.allocator else {
            panic!("{:?}", c.allocator)
        };
        let r = k.repair.as_ref().unwrap();
        assert_eq!(
            (r.interval, r.grace),
            (Duration::from_secs(30), Duration::from_secs(60))
        );
        assert_eq!(
            (r.lease_namespace.as_str(), r.lease_name.as_str()),
            ("hotnic-system", REPAIR_LEASE)
        );
        assert_eq!(c.mac_scope, ScopeMode::Cluster);
        let c = resolve(&[
            "--tls-cert",
            "a.crt",
            "--tls-key",
            "a.key",
            "--allocator",
            "memory",
            "--mac-scope",
            "network",
        ])
        .unwrap();
        assert!(matches!(c.allocator, AllocatorConfig::Memory));
        assert_eq!(c.mac_scope, ScopeMode::Network);
    }

    #[test]
    fn bad_flags_are_refused() {
        for argv in [
            &["--tls-cert", "a.crt"][..],
            &["--mac-range", "nonsense", "--dev"],
            &["--default-capacity", "33", "--dev"],
            &["--drain-timeout", "soon", "--dev"],
            &["--log-format", "xml", "--dev"],
            &["--allocator", "etcd", "--dev"],
            &["--mac-scope", "vlan", "--dev"],
            &["--claim-grace", "soon", "--dev"],
            &[],
        ] {
            assert!(resolve(argv).is_err(), "{argv:?}");
        }
    }
}
