//! The node agent (`hotnic agent`): makes running pods' NICs match their specs with real CNI
//! plugins.
//!
//! - [`cni`]: plugin invocation, configs, results, the result cache;
//! - [`cri`]: a pod's sandbox network namespace through the CRI runtime (containerd, CRI-O);
//! - [`netns`]: pod → network namespace ([`netns::NetnsResolver`]);
//! - [`links`]: what is in a namespace;
//! - [`desired`]: a pod's wanted NICs (via the dialect readers);
//! - [`reconcile`]: the per-pod reconciler;
//! - [`status`]: NIC status and Multus `network-status`;
//! - [`vm`]: VM pods: NICs hot-plugged into the pod's libvirt domain;
//! - [`metrics`]: the agent's metrics; [`admin_router`]: its admin endpoints, served by the
//!   runtime's admin listener ([`crate::runtime::admin`]), readiness included.

pub mod backoff;
pub mod cni;
pub mod cri;
pub mod desired;
pub mod engine;
pub mod kube;
pub mod links;
pub mod manifests;
pub mod metrics;
pub mod netns;
pub mod reconcile;
pub mod standalone;
pub mod status;
pub mod vm;

use crate::cli::{LogFormat, init_logging, parse_duration};
use crate::runtime::{
    AdminLimits, AdminServer, Flag, Readiness, RuntimeError, Shutdown, Signals, admin,
};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `hotnic agent` (each flag has a `HOTNIC_*` environment twin).
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["pods_dir", "node"])))]
pub struct AgentArgs {
    /// Standalone mode: read Pod and NetworkAttachmentDefinition manifests (*.yaml, *.yml, *.json)
    /// from this directory and write status to DIR/status/{namespace}_{name}.json.
    #[arg(long, env = "HOTNIC_PODS_DIR")]
    pub pods_dir: Option<PathBuf>,
    /// Kubernetes mode: manage the pods of this node (API server from in-cluster config or KUBECONFIG).
    #[arg(long, env = "HOTNIC_NODE", conflicts_with = "pods_dir")]
    pub node: Option<String>,
    /// Pod network namespace path; {namespace}, {name} and {uid} are substituted. Default: the CRI
    /// runtime in Kubernetes mode, `/run/netns/{namespace}_{name}` in standalone mode.
    #[arg(long, env = "HOTNIC_NETNS_PATH_TEMPLATE")]
    pub netns_path_template: Option<String>,
    /// CRI runtime socket to ask for pod sandboxes' network namespaces (default: the first of
    /// containerd's and CRI-O's usual sockets that answers).
    #[arg(
        long,
        env = "HOTNIC_CRI_SOCKET",
        conflicts_with = "netns_path_template"
    )]
    pub cri_socket: Option<PathBuf>,
    /// Where the CNI result cache lives.
    #[arg(long, env = "HOTNIC_STATE_DIR", default_value = "/var/lib/hotnic")]
    pub state_dir: PathBuf,
    /// CNI plugin search path (also passed as CNI_PATH).
    #[arg(long, env = "HOTNIC_CNI_PATH", default_value = cni::exec::DEFAULT_CNI_PATH)]
    pub cni_path: String,
    /// Limit for one plugin run (the plugin is killed after it).
    #[arg(long, env = "HOTNIC_PLUGIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub plugin_timeout: Duration,
    /// Run CNI plugins inside this network namespace (via nsenter) instead of the agent's own:
    /// where bridges are made and macvlan masters looked up.
    #[arg(long, env = "HOTNIC_PLUGIN_NETNS")]
    pub plugin_netns: Option<PathBuf>,
    /// Admin listen address, plain HTTP: /livez /readyz /metrics (off when not given).
    #[arg(long, env = "HOTNIC_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// How often the pods directory is re-read.
    #[arg(long, env = "HOTNIC_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Reconcile every pod at least this often.
    #[arg(long, env = "HOTNIC_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub resync: Duration,
    /// First retry delay after a failure (doubles per failure).
    #[arg(long, env = "HOTNIC_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "HOTNIC_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// How many pods are reconciled at once.
    #[arg(long, env = "HOTNIC_PARALLEL_PODS", default_value_t = 4)]
    pub parallel_pods: usize,
    /// How many CNI ADDs of one pod's NICs run at once (1: one after another, for plugins that
    /// cannot share a pod's namespace concurrently).
    #[arg(long, env = "HOTNIC_PARALLEL_PLUGS", default_value_t = reconcile::DEFAULT_PARALLEL_PLUGS,
          value_parser = parse_parallel_plugs)]
    pub parallel_plugs: usize,
    /// Reconcile once and exit.
    #[arg(long, env = "HOTNIC_ONCE")]
    pub once: bool,
    /// libvirt connection URI for VM pods' domains.
    #[arg(long, env = "HOTNIC_LIBVIRT_URI", default_value = crate::libvirt::virsh::DEFAULT_URI)]
    pub libvirt_uri: String,
    /// A VM pod's libvirt domain name; {namespace}, {name} and {uid} are substituted (the pod's
    /// hotnic.io/domain annotation overrides it).
    #[arg(long, env = "HOTNIC_DOMAIN_NAME_TEMPLATE", default_value = vm::DEFAULT_DOMAIN_TEMPLATE)]
    pub domain_name_template: String,
    /// How long a VM's guest may take to release an unplugged NIC before it is reported Failed
    /// (and retried later; nothing is torn down under a device still attached).
    #[arg(long, env = "HOTNIC_VM_DETACH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub vm_detach_timeout: Duration,
    /// Log format.
    #[arg(long, env = "HOTNIC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Crash test hook: exit with status 86 right after the first ADD result is cached, before
    /// the status that reports it is written.
    #[arg(long, env = "HOTNIC_AGENT_TEST_EXIT_AFTER_ADD", hide = true)]
    pub test_exit_after_add: bool,
}

/// Why `hotnic agent` could not start, or stopped on an error. Shown with every cause (the
/// binary prints it with `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Signal handlers or the admin listener could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Neither mode was asked for.
    #[error("give --pods-dir DIR (standalone) or --node NAME (Kubernetes)")]
    NoMode,
    /// The CRI socket given cannot be used.
    #[error(transparent)]
    Cri(#[from] cri::CriError),
    /// No CRI socket was given and none of the usual ones has a runtime behind it.
    #[error("finding the CRI runtime (give --cri-socket PATH or --netns-path-template T)")]
    NoCri(#[source] cri::CriError),
    /// Standalone mode could not start.
    #[error(transparent)]
    Standalone(#[from] standalone::StartError),
    /// Kubernetes mode could not start.
    #[error(transparent)]
    Kube(#[from] kube::ClientError),
}

/// `--parallel-plugs`: 1 to 64.
fn parse_parallel_plugs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(format!("{s:?}: give a number from 1 to 64")),
    }
}

/// The exit status of the crash test hook.
pub const TEST_EXIT_CODE: i32 = 86;

/// The agent's admin endpoints: `/livez`; `/readyz`, ready once `synced` is set (the first full
/// reconcile pass is done) and until `shutdown` starts; `/metrics`, the `hotnic_agent_` metrics.
pub fn admin_router(metrics: Arc<metrics::Metrics>, synced: &Flag, shutdown: &Shutdown) -> Router {
    let readiness = Readiness::new();
    readiness.require_flag("first reconcile pass not done", synced);
    readiness.require("shutting down", {
        let shutdown = shutdown.clone();
        move || !shutdown.is_started()
    });
    admin::router(readiness, move || metrics.encode())
}

/// Runs `hotnic agent` until SIGTERM or SIGINT (or after one pass with `--once`).
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    init_logging(args.log_format);
    // Handlers first (as the webhook's): a SIGTERM during start-up stops the agent cleanly.
    let shutdown = Shutdown::new();
    Signals::install()?.forward(shutdown.clone());
    let m = Arc::new(metrics::Metrics::new());
    let synced = Flag::new();
    let admin = match args.admin_listen {
        Some(addr) => {
            let router = admin_router(m.clone(), &synced, &shutdown);
            let limits = AdminLimits::default();
            let admin = AdminServer::bind(addr, router, limits, shutdown.started()).await?;
            tracing::info!(addr = %admin.addr(), "admin endpoints: /livez /readyz /metrics");
            Some(admin)
        }
        None => None,
    };
    let result = run_backend(&args, m, synced, &shutdown).await;
    // After `--once` or a failure, the admin listener stops too.
    shutdown.start();
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    result
}

/// Builds the reconciler and runs the backend `args` ask for until `shutdown` starts.
async fn run_backend(
    args: &AgentArgs,
    m: Arc<metrics::Metrics>,
    synced: Flag,
    shutdown: &Shutdown,
) -> Result<(), AgentError> {
    let mut invoker = cni::Invoker::new(&args.cni_path, args.plugin_timeout);
    invoker.plugin_netns = args.plugin_netns.clone();
    let mut rec = reconcile::Reconciler::new(
        invoker,
        cni::ResultCache::new(&args.state_dir),
        resolver(args).await?,
        m,
    );
    rec.synced = synced;
    rec.parallel_plugs = args.parallel_plugs;
    rec.vm = Arc::new(vm::VmPlugger {
        virsh: crate::libvirt::virsh::Virsh::new(&args.libvirt_uri),
        domain_template: args.domain_name_template.clone(),
        detach_timeout: args.vm_detach_timeout,
        ..vm::VmPlugger::default()
    });
    if args.test_exit_after_add {
        rec.after_add = Some(Arc::new(|pod, ifname| {
            tracing::warn!(pod = %pod, ifname, "test hook: exiting right after ADD");
            std::process::exit(TEST_EXIT_CODE);
        }));
    }
    let timing = engine::Timing {
        poll: args.poll_interval,
        resync: args.resync,
        backoff: backoff::Backoff {
            base: args.backoff_base,
            max: args.backoff_max,
        },
        parallel: args.parallel_pods,
    };
    match (&args.pods_dir, &args.node) {
        (Some(dir), _) => {
            tracing::info!(dir = %dir.display(), state = %args.state_dir.display(), "agent running standalone");
            Ok(standalone::run(&rec, dir.clone(), &timing, args.once, stopping(shutdown)).await?)
        }
        (None, Some(node)) => {
            tracing::info!(node, state = %args.state_dir.display(), "agent running for a Kubernetes node");
            Ok(kube::run(&rec, node, &timing, stopping(shutdown)).await?)
        }
        (None, None) => Err(AgentError::NoMode),
    }
}

/// Picks how pods' network namespaces are found: a path template when given, else the CRI runtime
/// (the given socket, or a detected one) in Kubernetes mode, else the default template.
async fn resolver(args: &AgentArgs) -> Result<Arc<dyn netns::NetnsResolver>, AgentError> {
    if let Some(template) = &args.netns_path_template {
        return Ok(Arc::new(netns::TemplateResolver::new(template.clone())));
    }
    let client = match (&args.cri_socket, &args.node) {
        (Some(socket), _) => cri::CriClient::connect(socket).await?,
        (None, Some(_)) => cri::CriClient::detect().await.map_err(AgentError::NoCri)?,
        (None, None) => {
            return Ok(Arc::new(netns::TemplateResolver::new(
                netns::DEFAULT_TEMPLATE,
            )));
        }
    };
    let rt = client.runtime();
    tracing::info!(socket = %client.socket().display(), runtime = %rt.name, version = %rt.version, "pod network namespaces come from the CRI runtime");
    Ok(Arc::new(client))
}

/// Resolves once `shutdown` starts (logged).
fn stopping(shutdown: &Shutdown) -> impl std::future::Future<Output = ()> + use<> {
    let started = shutdown.started();
    async move {
        started.await;
        tracing::info!("shutting down");
    }
}
