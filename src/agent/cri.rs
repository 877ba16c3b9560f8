//! Finding a pod's network namespace through the CRI runtime (containerd, CRI-O) over its unix socket.
//!
//! The lookup is the one kubelet-less tools do: `ListPodSandbox` filtered by the label
//! `io.kubernetes.pod.uid`, newest sandbox first, then `PodSandboxStatus` with `verbose = true`. The
//! verbose answer carries `info["info"]`, a JSON string whose `runtimeSpec.linux.namespaces[type=network].path`
//! is the pinned network namespace (`/var/run/netns/cni-<uuid>` on containerd), plus `pid` and, on containerd,
//! `netNamespaceClosed`. CRI-O and containerd 1.7/2.x use the same `info` key and `runtimeSpec` field; only
//! containerd 1.6 is tested here.
//!
//! A stopped sandbox keeps reporting its old path (with `closed = true`): the agent still passes that path to a
//! CNI DEL so IPAM releases its leases even though the namespace is gone.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::Chain;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, NamespaceMode, PodSandbox, PodSandboxFilter, PodSandboxState,
    PodSandboxStatusRequest, PodSandboxStatusResponse, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The label kubelet puts on every pod sandbox, holding the pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The CRI sockets [`CriClient::detect`] tries, in order.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// The `info` key of a verbose `PodSandboxStatus` answer that holds the runtime's JSON (containerd and CRI-O).
const INFO_KEY: &str = "info";

/// Errors of the CRI lookup.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be connected (missing, nothing listening, permission).
    #[error("CRI socket {}: cannot connect", socket.display())]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC channel could not be set up on a connected socket.
    #[error("CRI socket {}: gRPC channel setup failed", socket.display())]
    Channel {
        /// The socket path.
        socket: PathBuf,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting or a call took longer than its bound.
    #[error("CRI socket {}: {what} got no answer within {after:?}", socket.display())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// What timed out (`connect` or the RPC name).
        what: &'static str,
        /// The bound that passed.
        after: Duration,
    },
    /// The runtime answered a call with an error.
    #[error("CRI socket {}: {call} failed: {} ({})", socket.display(), status.message(), status.code())]
    Rpc {
        /// The socket path.
        socket: PathBuf,
        /// The RPC name.
        call: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// None of the candidate sockets has a CRI runtime behind it.
    #[error("no CRI runtime found: {}", DisplayTried(tried))]
    NoRuntime {
        /// Each socket tried and why it was not used (its error with every cause).
        tried: Vec<(PathBuf, String)>,
    },
    /// The pod UID is empty (an empty label value would select nothing useful).
    #[error("empty pod UID")]
    EmptyUid,
    /// The sandbox runs in the node's network namespace: there is no pod namespace to plug into.
    #[error("pod sandbox {sandbox_id} uses the host network namespace")]
    HostNetwork {
        /// The sandbox ID.
        sandbox_id: String,
    },
    /// The verbose status does not say where the network namespace is.
    #[error(
        "pod sandbox {sandbox_id}: cannot read its network namespace from the runtime's info: {reason}"
    )]
    BadInfo {
        /// The sandbox ID.
        sandbox_id: String,
        /// What was missing or malformed.
        reason: String,
        /// Why the info does not parse, when it does not.
        #[source]
        source: Option<serde_json::Error>,
    },
}

struct DisplayTried<'a>(&'a [(PathBuf, String)]);

impl fmt::Display for DisplayTried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no socket to try");
        }
        for (i, (socket, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {why}", socket.display())?;
        }
        Ok(())
    }
}

/// Bounds on connecting and on each call, so a wedged runtime cannot hang the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriTimeouts {
    /// Connecting the socket and the first `Version` call.
    pub connect: Duration,
    /// Each later call.
    pub request: Duration,
}

impl Default for CriTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(10),
        }
    }
}

/// The runtime behind a socket, from the CRI `Version` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// e.g. `containerd`, `cri-o`.
    pub name: String,
    /// e.g. `1.6.20~ds1`.
    pub version: String,
    /// The CRI API version it speaks, e.g. `v1`.
    pub api_version: String,
}

/// What the CRI runtime reports about one pod sandbox: where its network namespace is, whether
/// it still lives, its ID, process and creation time (see [`crate::agent::netns::PodNetns`] for
/// the part the agent plugs with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The network namespace path (a bind mount such as `/var/run/netns/cni-<uuid>`). Still reported after the
    /// sandbox stopped; it may then no longer exist — a CNI DEL with it still releases IPAM leases.
    pub path: PathBuf,
    /// The sandbox is `SANDBOX_READY`.
    pub ready: bool,
    /// The runtime closed the namespace (containerd's `netNamespaceClosed`; for runtimes that do not report it,
    /// `!ready`).
    pub closed: bool,
    /// The sandbox ID.
    pub sandbox_id: String,
    /// The sandbox's process ID, when the runtime reports one (0 or absent once stopped).
    pub pid: Option<u32>,
    /// Creation time in nanoseconds since the epoch, as the runtime reports it.
    pub created_at: i64,
}

/// A CRI runtime-service client over a unix socket.
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    runtime: RuntimeInfo,
    timeouts: CriTimeouts,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI runtime at `socket` with the default [`CriTimeouts`] and checks it answers `Version`.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        Self::connect_with(socket, CriTimeouts::default()).await
    }

    /// Connects to the CRI runtime at `socket` with the given bounds and checks it answers `Version`.
    pub async fn connect_with(socket: &Path, timeouts: CriTimeouts) -> Result<Self, CriError> {
        let socket = socket.to_path_buf();
        let timed_out = |what| CriError::Timeout {
            socket: socket.clone(),
            what,
            after: timeouts.connect,
        };
        // Connect once ourselves so a missing socket or a refused connection is a plain io::Error; the
        // channel uses this stream first and connects afresh if it ever has to reconnect.
        let stream = tokio::time::timeout(timeouts.connect, UnixStream::connect(&socket))
            .await
            .map_err(|_| timed_out("connect"))?
            .map_err(|source| CriError::Connect {
                socket: socket.clone(),
                source,
            })?;
        let first = Arc::new(Mutex::new(Some(stream)));
        let path = socket.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let first = first.lock().map(|mut s| s.take()).unwrap_or(None);
            let path = path.clone();
            async move {
                let stream = match first {
                    Some(stream) => stream,
                    None => UnixStream::connect(path).await?,
                };
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // The URI is a placeholder: the connector decides where to go. No tonic-level timeouts: every call
        // here is bounded by `tokio::time::timeout`, so a slow runtime is always a `CriError::Timeout`.
        let endpoint = Endpoint::from_static("http://cri.invalid");
        let channel =
            tokio::time::timeout(timeouts.connect, endpoint.connect_with_connector(connector))
                .await
                .map_err(|_| timed_out("connect"))?
                .map_err(|source| CriError::Channel {
                    socket: socket.clone(),
                    source,
                })?;
        let mut client = RuntimeServiceClient::new(channel);
        let version = tokio::time::timeout(
            timeouts.connect,
            client.version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
        .map_err(|_| timed_out("Version"))?
        .map_err(|status| CriError::Rpc {
            socket: socket.clone(),
            call: "Version",
            status: Box::new(status),
        })?
        .into_inner();
        let runtime = RuntimeInfo {
            name: version.runtime_name,
            version: version.runtime_version,
            api_version: version.runtime_api_version,
        };
        tracing::debug!(socket = %socket.display(), runtime = %runtime.name, version = %runtime.version, "CRI runtime connected");
        Ok(Self {
            socket,
            runtime,
            timeouts,
            client,
        })
    }

    /// Connects to the first of [`DEFAULT_SOCKETS`] that has a CRI runtime behind it.
    pub async fn detect() -> Result<Self, CriError> {
        let candidates: Vec<PathBuf> = DEFAULT_SOCKETS.iter().map(PathBuf::from).collect();
        Self::detect_from(&candidates, CriTimeouts::default()).await
    }

    /// Connects to the first of `candidates` that has a CRI runtime behind it; the error lists why each failed.
    pub async fn detect_from(
        candidates: &[PathBuf],
        timeouts: CriTimeouts,
    ) -> Result<Self, CriError> {
        let mut tried = Vec::with_capacity(candidates.len());
        for socket in candidates {
            match Self::connect_with(socket, timeouts).await {
                Ok(client) => return Ok(client),
                Err(CriError::Connect { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tried.push((socket.clone(), "no such socket".to_owned()));
                }
                Err(err) => {
                    let why = Chain(&err).to_string();
                    tracing::debug!(socket = %socket.display(), error = %why, "not a usable CRI socket");
                    tried.push((socket.clone(), why));
                }
            }
        }
        Err(CriError::NoRuntime { tried })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime behind the socket.
    pub fn runtime(&self) -> &RuntimeInfo {
        &self.runtime
    }

    /// The raw CRI runtime-service client on the same channel (for calls this module does not wrap).
    pub fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone()
    }

    /// The network namespace of the pod with UID `pod_uid`: its newest sandbox (a ready one wins a tie);
    /// `Ok(None)` when the runtime has no sandbox for that pod.
    pub async fn pod_netns(&self, pod_uid: &str) -> Result<Option<SandboxInfo>, CriError> {
        if pod_uid.is_empty() {
            return Err(CriError::EmptyUid);
        }
        let mut sandboxes = self.list_pod_sandboxes(pod_uid).await?;
        sort_newest_first(&mut sandboxes);
        for sandbox in sandboxes {
            // One status call in the usual case; a sandbox removed since the list is skipped.
            if let Some(netns) = self.sandbox_netns(&sandbox.id).await? {
                return Ok(Some(netns));
            }
        }
        Ok(None)
    }

    /// The network namespaces of every sandbox the runtime has for the pod, newest first (a ready one wins a
    /// tie). Older sandboxes matter to an agent that plugged NICs into a sandbox since replaced: their DEL needs
    /// the old path.
    pub async fn pod_netns_all(&self, pod_uid: &str) -> Result<Vec<SandboxInfo>, CriError> {
        if pod_uid.is_empty() {
            return Err(CriError::EmptyUid);
        }
        let mut sandboxes = self.list_pod_sandboxes(pod_uid).await?;
        sort_newest_first(&mut sandboxes);
        let mut found = Vec::with_capacity(sandboxes.len());
        for sandbox in sandboxes {
            // A sandbox removed between the list and the status call is simply gone.
            if let Some(netns) = self.sandbox_netns(&sandbox.id).await? {
                found.push(netns);
            }
        }
        Ok(found)
    }

    /// The network namespace of the sandbox `sandbox_id`; `Ok(None)` when the runtime does not know it.
    pub async fn sandbox_netns(&self, sandbox_id: &str) -> Result<Option<SandboxInfo>, CriError> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            verbose: true,
        };
        let mut client = self.client.clone();
        let answer = self
            .call("PodSandboxStatus", client.pod_sandbox_status(request))
            .await;
        match answer {
            Ok(response) => netns_from_status(sandbox_id, &response).map(Some),
            Err(CriError::Rpc { status, .. }) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn list_pod_sandboxes(&self, pod_uid: &str) -> Result<Vec<PodSandbox>, CriError> {
        let request = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([(POD_UID_LABEL.to_owned(), pod_uid.to_owned())]),
                ..Default::default()
            }),
        };
        let mut client = self.client.clone();
        let response = self
            .call("ListPodSandbox", client.list_pod_sandbox(request))
            .await?;
        Ok(response.items)
    }

    async fn call<T>(
        &self,
        call: &'static str,
        future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(self.timeouts.request, future).await {
            Err(_) => Err(CriError::Timeout {
                socket: self.socket.clone(),
                what: call,
                after: self.timeouts.request,
            }),
            Ok(Err(status)) => Err(CriError::Rpc {
                socket: self.socket.clone(),
                call,
                status: Box::new(status),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

/// The agent's pod → namespace lookup in Kubernetes mode: the pod's newest sandbox. A pod that shares the
/// node's network is an error (hot-plugged NICs would land in the node's namespace).
impl crate::agent::netns::NetnsResolver for CriClient {
    fn netns<'a>(
        &'a self,
        pod: &'a crate::agent::netns::PodRef,
    ) -> crate::agent::netns::NetnsFuture<'a> {
        Box::pin(async move {
            let found = self.pod_netns(&pod.uid).await?;
            Ok(found.map(|n| crate::agent::netns::PodNetns {
                path: n.path,
                closed: n.closed,
            }))
        })
    }
}

/// Newest first; among sandboxes created at the same time, ready ones first; then by ID for a stable order.
fn sort_newest_first(sandboxes: &mut [PodSandbox]) {
    sandboxes.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| is_ready(b.state).cmp(&is_ready(a.state)))
            .then_with(|| a.id.cmp(&b.id))
    });
}

fn is_ready(state: i32) -> bool {
    state == PodSandboxState::SandboxReady as i32
}

/// Reads the network namespace out of a verbose `PodSandboxStatus` answer.
pub fn netns_from_status(
    sandbox_id: &str,
    response: &PodSandboxStatusResponse,
) -> Result<SandboxInfo, CriError> {
    let bad = |reason: String| CriError::BadInfo {
        sandbox_id: sandbox_id.to_owned(),
        reason,
        source: None,
    };
    let status = response
        .status
        .as_ref()
        .ok_or_else(|| bad("the answer has no status".into()))?;
    let host_network = status
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == NamespaceMode::Node as i32);
    if host_network {
        return Err(CriError::HostNetwork {
            sandbox_id: sandbox_id.to_owned(),
        });
    }
    let raw = response
        .info
        .get(INFO_KEY)
        .ok_or_else(|| bad(format!("no {INFO_KEY:?} key in the verbose info")))?;
    let info: serde_json::Value = serde_json::from_str(raw).map_err(|e| CriError::BadInfo {
        sandbox_id: sandbox_id.to_owned(),
        reason: format!("the {INFO_KEY:?} value is not JSON"),
        source: Some(e),
    })?;
    let pid = info
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0);
    let ready = is_ready(status.state);
    let closed = info
        .get("netNamespaceClosed")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(!ready);
    let namespaces = info
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no runtimeSpec.linux.namespaces".into()))?;
    let network = namespaces
        .iter()
        .find(|ns| ns.get("type").and_then(serde_json::Value::as_str) == Some("network"));
    let Some(network) = network else {
        // No network namespace entry: the sandbox shares the node's network.
        return Err(CriError::HostNetwork {
            sandbox_id: sandbox_id.to_owned(),
        });
    };
    let path = match network.get("path").and_then(serde_json::Value::as_str) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        // A runtime that lets runc create the namespace (no pinned path): only the live process holds it.
        _ => match pid {
            Some(pid) if ready => PathBuf::from(format!("/proc/{pid}/ns/net")),
            _ => {
                return Err(bad(
                    "the network namespace has no path and the sandbox has no live process".into(),
                ));
            }
        },
    };
    Ok(SandboxInfo {
        path,
        ready,
        closed,
        sandbox_id: status.id.clone(),
        pid,
        created_at: status.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxStatus, Namespace, NamespaceOption, PodSandboxStatus};

    fn response(state: PodSandboxState, info: Option<&str>) -> PodSandboxStatusResponse {
        PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "sb1".into(),
                state: state as i32,
                created_at: 7,
                ..Default::default()
            }),
            info: info
                .map(|i| HashMap::from([(INFO_KEY.to_owned(), i.to_owned())]))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    // containerd 1.6.20's verbose info as captured on these machines, trimmed to the fields read and a few more.
    const CONTAINERD_INFO: &str = r#"{"pid":4242,"processStatus":"running","netNamespaceClosed":false,"image":"localhost/hotnic/pause:test","runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}}"#;

    #[test]
    fn reads_path_pid_and_state() {
        let netns = netns_from_status(
            "sb1",
            &response(PodSandboxState::SandboxReady, Some(CONTAINERD_INFO)),
        )
        .unwrap();
        assert_eq!(netns.path, Path::new("/var/run/netns/cni-1234"));
        assert_eq!(netns.pid, Some(4242));
        assert!(netns.ready);
        assert!(!netns.closed);
        assert_eq!(netns.sandbox_id, "sb1");
        assert_eq!(netns.created_at, 7);
    }

    #[test]
    fn closed_defaults_to_not_ready_when_unreported() {
        let info = r#"{"pid":0,"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/x"}]}}}"#;
        let netns = netns_from_status(
            "sb1",
            &response(PodSandboxState::SandboxNotready, Some(info)),
        )
        .unwrap();
        assert!(netns.closed);
        assert!(!netns.ready);
        assert_eq!(netns.pid, None);
        let netns =
            netns_from_status("sb1", &response(PodSandboxState::SandboxReady, Some(info))).unwrap();
        assert!(!netns.closed);
    }

    #[test]
    fn unpinned_namespace_falls_back_to_the_live_process() {
        let info = r#"{"pid":99,"runtimeSpec":{"linux":{"namespaces":[{"type":"network"}]}}}"#;
        let netns =
            netns_from_status("sb1", &response(PodSandboxState::SandboxReady, Some(info))).unwrap();
        assert_eq!(netns.path, Path::new("/proc/99/ns/net"));
        let err = netns_from_status(
            "sb1",
            &response(PodSandboxState::SandboxNotready, Some(info)),
        )
        .unwrap_err();
        assert!(matches!(err, CriError::BadInfo { .. }), "{err}");
    }

    #[test]
    fn host_network_is_an_error() {
        let info = r#"{"pid":5,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#;
        let err = netns_from_status("sb1", &response(PodSandboxState::SandboxReady, Some(info)))
            .unwrap_err();
        assert!(matches!(err, CriError::HostNetwork { .. }), "{err}");

        let mut r = response(PodSandboxState::SandboxReady, Some(CONTAINERD_INFO));
        r.status.as_mut().unwrap().linux = Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
            }),
        });
        let err = netns_from_status("sb1", &r).unwrap_err();
        assert!(matches!(err, CriError::HostNetwork { .. }), "{err}");
    }

    #[test]
    fn missing_or_malformed_info_is_a_clear_error() {
        for info in [None, Some("not json"), Some(r#"{"pid":1}"#)] {
            let err = netns_from_status("sb1", &response(PodSandboxState::SandboxReady, info))
                .unwrap_err();
            assert!(matches!(err, CriError::BadInfo { .. }), "{err}");
            assert!(err.to_string().contains("sb1"), "{err}");
        }
        let err = netns_from_status(
            "sb1",
            &response(PodSandboxState::SandboxReady, Some("not json")),
        )
        .unwrap_err();
        assert!(
            Chain(&err)
                .to_string()
                .ends_with("is not JSON: expected ident at line 1 column 2"),
            "{}",
            Chain(&err)
        );
        let mut r = response(PodSandboxState::SandboxReady, Some(CONTAINERD_INFO));
        r.status = None;
        assert!(matches!(
            netns_from_status("sb1", &r),
            Err(CriError::BadInfo { .. })
        ));
    }

    #[test]
    fn newest_sandbox_first_ready_wins_a_tie() {
        let sb = |id: &str, created_at, state: PodSandboxState| PodSandbox {
            id: id.into(),
            created_at,
            state: state as i32,
            ..Default::default()
        };
        let mut list = vec![
            sb("old", 1, PodSandboxState::SandboxReady),
            sb("tie-notready", 5, PodSandboxState::SandboxNotready),
            sb("tie-ready", 5, PodSandboxState::SandboxReady),
            sb("mid", 3, PodSandboxState::SandboxNotready),
        ];
        sort_newest_first(&mut list);
        let ids: Vec<_> = list.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["tie-ready", "tie-notready", "mid", "old"]);
    }

    /// The agent keeps one client in shared state and awaits lookups from spawned tasks / trait objects.
    #[test]
    fn client_and_lookup_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        fn check(client: &CriClient) {
            send_sync(client);
            send(client.pod_netns("uid"));
            send(client.pod_netns_all("uid"));
            send(client.sandbox_netns("id"));
            send(CriClient::detect());
            send(CriClient::connect(Path::new("/x")));
        }
        let _ = check;
    }

    /// The OS error is the cause of a connect failure, not part of its message: shown once.
    #[tokio::test]
    async fn a_failed_connect_shows_the_os_error_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let err = CriClient::connect(&socket).await.unwrap_err();
        let text = Chain(&err).to_string();
        assert!(matches!(err, CriError::Connect { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("CRI socket {}: cannot connect", socket.display())
        );
        assert!(text.starts_with(&err.to_string()), "{text}");
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
        // detect keeps every cause of each socket passed over.
        let err = CriClient::detect_from(
            &[socket.clone(), dir.path().to_path_buf()],
            CriTimeouts::default(),
        )
        .await
        .unwrap_err();
        let CriError::NoRuntime { tried } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(tried[0].1, "no such socket");
        assert!(tried[1].1.contains("cannot connect: "), "{tried:?}");
        assert!(tried[1].1.contains("os error"), "{tried:?}");
    }

    #[test]
    fn no_runtime_lists_every_socket() {
        let err = CriError::NoRuntime {
            tried: vec![
                ("/a.sock".into(), "no such socket".into()),
                ("/b.sock".into(), "refused".into()),
            ],
        };
        assert_eq!(
            err.to_string(),
            "no CRI runtime found: /a.sock: no such socket; /b.sock: refused"
        );
    }
}
