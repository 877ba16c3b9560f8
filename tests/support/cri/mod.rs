//! Test harness: a private containerd (CRI plugin on) running real pod sandboxes, with no kubelet and no
//! registry.
//!
//! [`Containerd::start`] creates a network namespace of its own (`ip netns add`), writes a containerd config
//! (own root, state and socket under a temp dir; `restrict_oom_score_adj`, cgroupfs, overlayfs, CNI bridge
//! conflist with host-local IPAM whose data dir is in the temp dir), starts
//! `nsenter --net=/run/netns/<ns> containerd --config ...` (not `ip netns exec`: its private mount namespace
//! would hide containerd's `/var/run/netns/cni-*` bind mounts from the test), builds the pause image
//! (`build-pause-image.sh`: static C program, one-layer OCI archive) and imports it with `ctr images import`
//! so CRI never pulls, then waits until CRI reports the runtime and the network ready.
//!
//! Dropping it stops and removes every sandbox, stops containerd, kills what it left behind (shims, sandbox
//! processes — only those naming this harness's socket or in its cgroup), unmounts what is left under its temp
//! dir and the netns bind mounts of its sandboxes, removes its pod cgroups (runc leaves them, kubelet's job)
//! and deletes its network namespace. It only ever removes things it created.
//!
//! Include it with `#[path = "support/cri/mod.rs"] mod cri_support;`. Needs root, `containerd`, `ctr`, `runc`,
//! `gcc` (static libc), `nsenter`, `ip` and the CNI plugins in `/usr/lib/cni`; panics with a clear message
//! when one is missing (CI has them all, so a missing one is a failure, not a skip).
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hotnic::agent::cri::{CriClient, POD_UID_LABEL};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

/// The CNI plugin directory (Debian's containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The name the pause image is imported as (the CRI `sandbox_image`).
pub const PAUSE_IMAGE: &str = "localhost/hotnic/pause:test";
/// The CNI network containerd attaches every sandbox's eth0 to.
pub const POD_NETWORK: &str = "hotnic-cri-pods";
/// Its bridge (inside the harness's own network namespace, so the name cannot clash).
pub const POD_BRIDGE: &str = "hncri0";
/// Its subnet.
pub const POD_SUBNET: &str = "10.88.0.0/24";
/// The Kubernetes namespace the harness's sandboxes claim to be in.
pub const POD_NAMESPACE: &str = "hotnic-cri-test";

const WAIT: Duration = Duration::from_secs(20);
const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/cri");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running private containerd; see the module docs.
pub struct Containerd {
    /// Unique name of this harness: the network namespace name and the cgroup parent's name.
    pub id: String,
    /// The temp dir holding root, state, socket, configs, logs and the IPAM data dir.
    pub dir: PathBuf,
    /// containerd's CRI (gRPC) socket.
    pub socket: PathBuf,
    /// host-local's data dir: leases are files under `<ipam_dir>/<network>/`.
    pub ipam_dir: PathBuf,
    /// The cgroup parent given to every sandbox (removed on drop).
    pub cgroup_parent: String,
    /// Time from the start of [`Containerd::start`] until CRI was ready (image built and imported).
    pub setup_time: Duration,
    log: PathBuf,
    netns_created: bool,
    child: Option<Child>,
    client: Option<RuntimeServiceClient<Channel>>,
    /// Netns paths of the sandboxes this harness ran, to unmount if containerd left them.
    netns_paths: Mutex<Vec<PathBuf>>,
    tmp: Option<tempfile::TempDir>,
}

impl Containerd {
    /// Starts a private containerd and waits until CRI is ready. Panics (clearly) when something is missing.
    pub async fn start() -> Containerd {
        let started = Instant::now();
        preflight();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("hncri{}x{n}", std::process::id());
        let tmp = tempfile::Builder::new()
            .prefix("hotnic-cri-")
            .tempdir()
            .expect("create temp dir");
        let dir = tmp.path().to_path_buf();
        let mut this = Containerd {
            socket: dir.join("containerd.sock"),
            ipam_dir: dir.join("ipam"),
            cgroup_parent: format!("/{id}"),
            log: dir.join("containerd.log"),
            dir,
            id,
            setup_time: Duration::ZERO,
            netns_created: false,
            child: None,
            client: None,
            netns_paths: Mutex::new(Vec::new()),
            tmp: Some(tmp),
        };
        // From here on a panic drops `this`, which cleans up whatever was created so far.
        let cni_conf_dir = this.dir.join("cni");
        fs::create_dir_all(&cni_conf_dir).expect("create CNI conf dir");
        fs::create_dir_all(&this.ipam_dir).expect("create IPAM dir");

        let image = this.dir.join("pause.tar");
        run_ok(
            Command::new(format!("{HERE}/build-pause-image.sh"))
                .arg(&image)
                .arg(PAUSE_IMAGE),
        );

        run_ok(Command::new("ip").args(["netns", "add", &this.id]));
        this.netns_created = true;

        let config = fill(
            &read_template("containerd.toml.in"),
            &[
                ("@ROOT@", &this.dir.join("root").display().to_string()),
                ("@STATE@", &this.dir.join("state").display().to_string()),
                ("@SOCKET@", &this.socket.display().to_string()),
                ("@PAUSE_IMAGE@", PAUSE_IMAGE),
                ("@CNI_CONF_DIR@", &cni_conf_dir.display().to_string()),
            ],
        );
        let config_path = this.dir.join("containerd.toml");
        fs::write(&config_path, config).expect("write containerd config");
        fs::write(
            cni_conf_dir.join("10-hotnic-cri-pods.conflist"),
            this.bridge_conflist(POD_NETWORK, POD_BRIDGE, POD_SUBNET),
        )
        .expect("write CNI conflist");

        let log = fs::File::create(&this.log).expect("create containerd log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", this.netns_path().display()))
            .arg("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn nsenter containerd");
        this.child = Some(child);
        this.wait_for_socket();

        run_ok(
            Command::new("ctr")
                .arg("--address")
                .arg(&this.socket)
                .args(["--namespace", "k8s.io", "images", "import"])
                .args(["--snapshotter", "overlayfs"])
                .arg(&image),
        );

        let client = CriClient::connect(&this.socket)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", this.log_tail()));
        this.client = Some(client.runtime_client());
        this.wait_until_ready().await;
        this.setup_time = started.elapsed();
        this
    }

    /// The path of the network namespace containerd runs in (and where the pod bridge lives).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.id))
    }

    /// A raw CRI runtime client on this containerd.
    pub fn client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("containerd is started")
    }

    /// A `ctr` command on this containerd (its socket), in the `k8s.io` namespace where CRI keeps its
    /// images; add the subcommand and its arguments.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        command
    }

    /// runc's state directory for this containerd (the runc runtime's `Root` in its config); give it to
    /// `ctr run --runc-root` so containers run outside CRI keep their state here too, not in the machine's
    /// shared `/run/containerd/runc`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("state").join("runc")
    }

    /// Runs a pod sandbox (pod `name`, UID `uid`, `attempt`); returns its ID and the RunPodSandbox latency.
    pub async fn run_sandbox(&self, name: &str, uid: &str, attempt: u32) -> (String, Duration) {
        self.run(name, uid, attempt, NamespaceMode::Pod).await
    }

    /// Runs a pod sandbox in the node's network namespace (`hostNetwork: true`; no CNI); returns its ID.
    pub async fn run_host_network_sandbox(&self, name: &str, uid: &str) -> String {
        self.run(name, uid, 0, NamespaceMode::Node).await.0
    }

    async fn run(
        &self,
        name: &str,
        uid: &str,
        attempt: u32,
        network: NamespaceMode,
    ) -> (String, Duration) {
        let labels = HashMap::from([
            (POD_UID_LABEL.to_owned(), uid.to_owned()),
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                POD_NAMESPACE.to_owned(),
            ),
        ]);
        let request = RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                    namespace: POD_NAMESPACE.to_owned(),
                    attempt,
                }),
                // Like kubelet: no hostname for a host-network pod (it shares the node's UTS namespace).
                hostname: if network == NamespaceMode::Node {
                    String::new()
                } else {
                    name.to_owned()
                },
                labels,
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: self.cgroup_parent.clone(),
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: network as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        };
        let started = Instant::now();
        let id = self
            .client()
            .run_pod_sandbox(request)
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log_tail()))
            .into_inner()
            .pod_sandbox_id;
        let latency = started.elapsed();
        if let Some(path) = self.sandbox_netns_path(&id).await {
            self.netns_paths.lock().unwrap().push(path);
        }
        (id, latency)
    }

    /// StopPodSandbox.
    pub async fn stop_sandbox(&self, id: &str) {
        self.client()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}\n{}", self.log_tail()));
    }

    /// RemovePodSandbox.
    pub async fn remove_sandbox(&self, id: &str) {
        self.client()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}\n{}", self.log_tail()));
    }

    /// The IP CRI reports for a sandbox (`PodSandboxStatus.network.ip`).
    pub async fn sandbox_ip(&self, id: &str) -> String {
        self.client()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"))
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// A single bridge plugin config (cniVersion 1.0.0) with host-local IPAM in this harness's IPAM dir.
    pub fn bridge_config(&self, network: &str, bridge: &str, subnet: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir,
                "ranges": [[{ "subnet": subnet }]],
            },
        })
    }

    /// Runs a CNI plugin from [`CNI_BIN_DIR`] like a runtime does, from inside the harness's network namespace
    /// (so bridges and host-side veths land there, not on the machine).
    pub fn cni(
        &self,
        command: &str,
        netns: &Path,
        container_id: &str,
        ifname: &str,
        config: &serde_json::Value,
    ) -> Output {
        let plugin = config["type"].as_str().expect("config has a type");
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .arg(format!("{CNI_BIN_DIR}/{plugin}"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", CNI_BIN_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn CNI plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.to_string().as_bytes())
            .expect("write CNI config");
        child.wait_with_output().expect("wait for CNI plugin")
    }

    /// host-local's leases for `network`: (IP, file content — container ID and ifname).
    pub fn leases(&self, network: &str) -> Vec<(String, String)> {
        let Ok(entries) = fs::read_dir(self.ipam_dir.join(network)) else {
            return Vec::new();
        };
        let mut leases: Vec<_> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_ip = name.parse::<std::net::IpAddr>().is_ok();
                is_ip.then(|| (name, fs::read_to_string(e.path()).unwrap_or_default()))
            })
            .collect();
        leases.sort();
        leases
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "--- containerd log ({}), last lines:\n{tail}",
            self.log.display()
        )
    }

    fn bridge_conflist(&self, network: &str, bridge: &str, subnet: &str) -> String {
        fill(
            &read_template("bridge.conflist.in"),
            &[
                ("@NETWORK@", network),
                ("@BRIDGE@", bridge),
                ("@IPAM_DIR@", &self.ipam_dir.display().to_string()),
                ("@SUBNET@", subnet),
            ],
        )
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.socket.exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited early ({status})\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "containerd socket {} did not appear within {WAIT:?}\n{}",
                self.socket.display(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self
                .client()
                .status(StatusRequest { verbose: false })
                .await
                .map(|r| r.into_inner().status.unwrap_or_default().conditions);
            let not_ready: Vec<String> = match &status {
                Ok(conditions) => {
                    let ready = |t: &str| conditions.iter().any(|c| c.r#type == t && c.status);
                    ["RuntimeReady", "NetworkReady"]
                        .into_iter()
                        .filter(|t| !ready(t))
                        .map(str::to_owned)
                        .collect()
                }
                Err(e) => vec![format!("Status call failed: {e}")],
            };
            if not_ready.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "CRI not ready within {WAIT:?}: {not_ready:?} {status:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sandbox_netns_path(&self, id: &str) -> Option<PathBuf> {
        let response = self
            .client()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            })
            .await
            .ok()?
            .into_inner();
        hotnic::agent::cri::netns_from_status(id, &response)
            .ok()
            .map(|n| n.path)
    }

    /// Stops and removes every sandbox of this containerd (all are this harness's), on a thread of its own
    /// so it works from `Drop` inside or outside a tokio runtime.
    fn remove_all_sandboxes(&self) {
        if self.client.is_none() {
            return;
        }
        let socket = self.socket.clone();
        let connect_to = socket.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                // A channel of its own: the test's channel lives on the test's runtime, blocked in this drop.
                let mut client = CriClient::connect(&connect_to)
                    .await
                    .map_err(|e| e.to_string())?
                    .runtime_client();
                let bounded = Duration::from_secs(10);
                let list = tokio::time::timeout(
                    bounded,
                    client.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
                )
                .await
                .map_err(|_| "ListPodSandbox timed out".to_owned())?
                .map_err(|e| format!("ListPodSandbox: {e}"))?
                .into_inner();
                let mut problems = Vec::new();
                for sandbox in list.items {
                    let id = sandbox.id;
                    let stop = client.stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    });
                    match tokio::time::timeout(bounded, stop).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => problems.push(format!("StopPodSandbox {id}: {e}")),
                        Err(e) => problems.push(format!("StopPodSandbox {id}: {e}")),
                    }
                    let remove = client.remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    });
                    match tokio::time::timeout(bounded, remove).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => problems.push(format!("RemovePodSandbox {id}: {e}")),
                        Err(e) => problems.push(format!("RemovePodSandbox {id}: {e}")),
                    }
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "cri harness: removing sandboxes on {}: {e}",
                socket.display()
            ),
            Err(_) => eprintln!("cri harness: the sandbox-removal thread panicked"),
        }
    }

    fn stop_containerd(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Kills processes left behind: shims (their command line names this harness's socket) and anything still
    /// in this harness's pod cgroups.
    fn kill_leftovers(&self) {
        let mut pids = self.shim_pids();
        // A killed shim cannot remove its socket (/run/containerd/s/<hash>): find it through the shim's fds.
        let shim_sockets: Vec<PathBuf> =
            pids.iter().flat_map(|pid| shim_socket_paths(pid)).collect();
        for dir in self.cgroup_dirs() {
            for cgroup in walk_dirs(&dir) {
                let procs = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().map(str::to_owned));
            }
        }
        pids.sort();
        pids.dedup();
        if !pids.is_empty() {
            eprintln!(
                "cri harness {}: killing leftover processes {pids:?}",
                self.id
            );
            // Some may have exited meanwhile (a shim once its sandbox died): ignore kill's complaints.
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
        for socket in shim_sockets {
            let _ = fs::remove_file(socket);
        }
    }

    /// Processes whose command line names this harness's socket: its containerd shims.
    pub fn shim_pids(&self) -> Vec<String> {
        let socket = self.socket.display().to_string();
        let mut pids = Vec::new();
        if let Ok(procs) = fs::read_dir("/proc") {
            for entry in procs.filter_map(Result::ok) {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if pid.parse::<u32>().is_err() {
                    continue;
                }
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                if cmdline.split('\0').any(|arg| arg == socket) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Pod cgroup directories (every hierarchy) that still exist for this harness.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_dirs()
    }

    /// Kills containerd with SIGKILL and nothing else, leaving its shims and sandboxes running (to test that
    /// drop still cleans up after a crash).
    pub fn kill_containerd_hard(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// This harness's cgroup parent in every mounted hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let relative = self.cgroup_parent.trim_start_matches('/');
        let mut dirs = Vec::new();
        let root = Path::new("/sys/fs/cgroup");
        if root.join(relative).is_dir() {
            dirs.push(root.join(relative)); // cgroup v2 only
        }
        if let Ok(hierarchies) = fs::read_dir(root) {
            for h in hierarchies.filter_map(Result::ok) {
                let dir = h.path().join(relative);
                if dir.is_dir() {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }

    fn remove_cgroups(&self) {
        for dir in self.cgroup_dirs() {
            let mut all = walk_dirs(&dir);
            all.reverse(); // children first
            for cgroup in all {
                // A just-killed process can keep its cgroup busy for a moment.
                let mut tries = 0;
                while let Err(e) = fs::remove_dir(&cgroup) {
                    tries += 1;
                    if e.kind() == std::io::ErrorKind::NotFound {
                        break;
                    }
                    if tries == 50 {
                        eprintln!("cri harness: rmdir {}: {e}", cgroup.display());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Unmounts whatever is still mounted under the temp dir (overlay rootfs, shm) and the netns bind mounts
    /// of this harness's sandboxes, then removes those netns files.
    fn unmount_leftovers(&self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
            .collect();
        let netns_paths = self
            .netns_paths
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len())); // deepest first
        for mount in mounts {
            umount(Path::new(&mount));
        }
        for path in netns_paths {
            if path.exists() {
                umount(&path);
                if let Err(e) = fs::remove_file(&path) {
                    eprintln!("cri harness: remove {}: {e}", path.display());
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_all_sandboxes();
        }
        self.stop_containerd();
        self.kill_leftovers();
        self.unmount_leftovers();
        self.remove_cgroups();
        if self.netns_created {
            let _ = Command::new("ip").args(["netns", "del", &self.id]).status();
        }
        if let Some(tmp) = self.tmp.take() {
            if std::env::var_os("HOTNIC_TEST_KEEP").is_some() {
                eprintln!("cri harness: keeping {}", tmp.keep().display());
            } else if let Err(e) = tmp.close() {
                eprintln!("cri harness: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// Fails clearly when the test cannot run here (CI runs as root with everything installed).
fn preflight() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "the CRI tests need root (they create network namespaces and run containerd); CI runs them as root"
    );
    let missing: Vec<&str> = [
        "containerd",
        "ctr",
        "runc",
        "gcc",
        "nsenter",
        "ip",
        "tar",
        "sha256sum",
    ]
    .into_iter()
    .filter(|bin| !in_path(bin))
    .collect();
    assert!(
        missing.is_empty(),
        "the CRI tests need {missing:?} in PATH (Debian: containerd runc gcc util-linux iproute2; .ci/run installs them)"
    );
    for plugin in ["bridge", "host-local"] {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        assert!(
            path.exists(),
            "the CRI tests need the CNI plugin {} (Debian: containernetworking-plugins)",
            path.display()
        );
    }
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn read_template(name: &str) -> String {
    fs::read_to_string(format!("{HERE}/{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(key, value);
    }
    assert!(!out.contains("@"), "unfilled placeholder in:\n{out}");
    out
}

fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The paths of the unix sockets a shim listens on under /run/containerd/s/ (from its fds and its netns's
/// /proc/<pid>/net/unix).
fn shim_socket_paths(pid: &str) -> Vec<PathBuf> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let table = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (inodes.iter().any(|i| i == inode) && path.starts_with("/run/containerd/s/"))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// `dir` and every directory below it, parents before children (not following symlinks).
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn umount(path: &Path) {
    let ok = Command::new("umount")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
