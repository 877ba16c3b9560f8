//! Shared pieces of the agent integration tests: root check, network namespaces with Drop guards,
//! a `hotnic agent` child process running inside a test-made "node" namespace, polling helpers.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails clearly when the test cannot run here (CI runs as root with the CNI plugins installed).
pub fn require_root_and_plugins() {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "agent integration tests need root (network namespaces, CNI plugins)"
    );
    for p in ["bridge", "macvlan", "host-local"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).is_file(),
            "CNI plugin /usr/lib/cni/{p} missing: install containernetworking-plugins"
        );
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique token (fits interface names: at most 9 characters).
pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:05}{:02}", std::process::id() % 100_000, n % 100)
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates `hn-<tag>-<unique>`.
    pub fn new(tag: &str) -> Self {
        Self::named(&format!("hn-{tag}-{}", unique()))
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -j addr` inside: ifname → (mac, IPv4 CIDRs).
    pub fn addrs(&self) -> Vec<(String, String, Vec<String>)> {
        let v: Value = serde_json::from_str(&sh(&["ip", "-n", &self.name, "-j", "addr", "show"]))
            .expect("ip -j output");
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let ips = l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["family"] == "inet")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect();
                (
                    l["ifname"].as_str().unwrap().to_string(),
                    l["address"].as_str().unwrap_or("").to_string(),
                    ips,
                )
            })
            .collect()
    }

    /// Interface names inside.
    pub fn links(&self) -> Vec<String> {
        self.addrs().into_iter().map(|(n, _, _)| n).collect()
    }
}

impl Netns {
    /// Creates the namespace `name` (the caller makes it unique).
    pub fn named(name: &str) -> Self {
        sh(&["ip", "netns", "add", name]);
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Self { name: name.into() }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Waits (polling) until `f` gives `Some`, failing with `what` and the last observation after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Writes a file atomically (hidden temp + rename) so the agent never reads half of it.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A node: its network namespace (bridges and macvlan masters live there), a manifests
/// directory, a state dir and an IPAM data dir.
pub struct Node {
    /// The node namespace.
    pub ns: Netns,
    /// Temp root.
    pub dir: tempfile::TempDir,
}

impl Node {
    /// A fresh node.
    pub fn new() -> Self {
        let ns = Netns::new("node");
        let dir = tempfile::tempdir().unwrap();
        for d in ["pods", "state", "ipam"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { ns, dir }
    }

    /// The manifests directory.
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// host-local's data dir.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Lease files of a network (IP addresses), sorted.
    pub fn leases(&self, net: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.ipam_dir().join(net))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Cache files left under the state dir.
    pub fn cache_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out);
                    } else {
                        out.push(e.path());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state_dir(), &mut out);
        out
    }

    /// A bridge NetworkAttachmentDefinition (bridge inside the node namespace) with host-local IPAM.
    pub fn bridge_nad(&self, ns: &str, name: &str, bridge: &str, subnet: &str) -> Value {
        json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{
                    "type": "bridge", "bridge": bridge, "capabilities": {"mac": true},
                    "ipam": {"type": "host-local", "dataDir": self.ipam_dir(),
                             "ranges": [[{"subnet": subnet}]]}
                }]
            }).to_string()}
        })
    }

    /// A macvlan NetworkAttachmentDefinition (single plugin config, 0.4.0) over `master`.
    pub fn macvlan_nad(&self, ns: &str, name: &str, master: &str, subnet: &str) -> Value {
        json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": json!({
                "cniVersion": "0.4.0", "name": name, "type": "macvlan", "master": master,
                "mode": "bridge", "capabilities": {"mac": true},
                "ipam": {"type": "host-local", "dataDir": self.ipam_dir(),
                         "ranges": [[{"subnet": subnet}]]}
            }).to_string()}
        })
    }

    /// Writes a manifest as `<file>.json` in the pods dir.
    pub fn put(&self, file: &str, obj: &Value) {
        write_atomic(
            &self.pods_dir().join(format!("{file}.json")),
            &serde_json::to_string_pretty(obj).unwrap(),
        );
    }

    /// Removes a manifest.
    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.pods_dir().join(format!("{file}.json"))).unwrap();
    }

    /// The status document of a pod, if written.
    pub fn status(&self, ns: &str, name: &str) -> Option<Value> {
        let p = self
            .pods_dir()
            .join("status")
            .join(format!("{ns}_{name}.json"));
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Starts `hotnic agent` inside the node namespace.
    pub fn agent(&self, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let log = self.dir.path().join(format!("agent-{}.log", unique()));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path().display()))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_hotnic"))
            .arg("agent")
            .arg("--pods-dir")
            .arg(self.pods_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--netns-path-template", "/run/netns/{uid}"])
            .args([
                "--poll-interval",
                "100ms",
                "--backoff-base",
                "200ms",
                "--backoff-max",
                "2s",
            ])
            .args(extra)
            .env("RUST_LOG", "hotnic=debug")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("starting hotnic agent"),
            log,
        }
    }
}

/// A running `hotnic agent`, killed on drop.
pub struct Agent {
    /// The process (nsenter, which execs the agent).
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Agent {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for it to exit on its own; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_for("the agent to exit", limit, || match self.child.try_wait() {
            Ok(Some(s)) => Ok(s.code()),
            _ => Err("still running".into()),
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Multus pod manifest whose uid is the pod namespace's name (template `/run/netns/{uid}`).
pub fn multus_pod(ns: &str, name: &str, uid: &str, nets: &[(&str, &str, &str)]) -> Value {
    let elements: Vec<Value> = nets
        .iter()
        .map(|(net, ifname, mac)| json!({"name": net, "interface": ifname, "mac": mac}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid,
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": serde_json::to_string(&elements).unwrap(),
                "k8s.v1.cni.cncf.io/network-status": json!([{"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.9"], "default": true}]).to_string()
            }},
        "spec": {"containers": [{"name": "c", "image": "pause"}]}
    })
}

/// NIC states from a status document: name → (state, reason).
pub fn nic_states(status: &Value) -> Vec<(String, String, String)> {
    status["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["state"].as_str().unwrap_or("").to_string(),
                n["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

impl Node {
    /// Starts `hotnic agent --node NODE` in the test's own network namespace (so it reaches an API
    /// server on 127.0.0.1), with plugins run inside the node namespace.
    pub fn kube_agent(&self, node_name: &str, kubeconfig: &Path) -> Agent {
        self.kube_agent_with(node_name, kubeconfig, "/run/netns/{uid}")
    }

    /// [`Node::kube_agent`] with another `--netns-path-template`.
    pub fn kube_agent_with(
        &self,
        node_name: &str,
        kubeconfig: &Path,
        netns_template: &str,
    ) -> Agent {
        let log = self.dir.path().join(format!("agent-{}.log", unique()));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotnic"));
        cmd.arg("agent")
            .args(["--node", node_name])
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--plugin-netns")
            .arg(self.ns.path())
            .args(["--netns-path-template", netns_template])
            .args([
                "--poll-interval",
                "200ms",
                "--backoff-base",
                "200ms",
                "--backoff-max",
                "2s",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "hotnic=debug")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        Agent {
            child: cmd.spawn().expect("starting hotnic agent"),
            log,
        }
    }
}
