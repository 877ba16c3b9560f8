//! The CRI network-namespace lookup against a real containerd running real pod sandboxes (root; see
//! `tests/support/cri/mod.rs`), plus the bounded failure modes of connecting.
//!
//! Run: `cargo test --test cri_containerd -- --nocapture` (prints setup time and RunPodSandbox latency).

#[path = "support/cri/mod.rs"]
mod cri_support;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cri_support::{Containerd, POD_NETWORK};
use hotnic::agent::cri::{CriClient, CriError, CriTimeouts, SandboxInfo};

/// The inode of a namespace file (two paths are the same namespace iff their nsfs inodes are equal).
fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// IPv4 addresses of `ifname` inside the network namespace at `netns`, via `nsenter --net=PATH ip -j addr`.
fn ipv4_in_netns(netns: &Path, ifname: &str) -> Vec<String> {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-j", "addr", "show", "dev", ifname])
        .output()
        .expect("run nsenter ip");
    assert!(
        output.status.success(),
        "ip addr in {}: {}",
        netns.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ip -j output");
    links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .collect()
}

fn report(c: &Containerd, latencies: &[Duration]) {
    eprintln!(
        "cri harness {}: setup (pause image build + containerd start + import + CRI ready) {:?}; RunPodSandbox {:?}",
        c.id, c.setup_time, latencies
    );
}

async fn lookup(client: &CriClient, uid: &str) -> SandboxInfo {
    client
        .pod_netns(uid)
        .await
        .unwrap_or_else(|e| panic!("pod_netns({uid}): {e}"))
        .unwrap_or_else(|| panic!("pod_netns({uid}): no sandbox found"))
}

#[tokio::test]
async fn finds_each_sandboxs_netns_by_pod_uid() {
    let c = Containerd::start().await;
    let uid_a = format!("{}-uid-a", c.id);
    let uid_b = format!("{}-uid-b", c.id);
    let (sb_a, lat_a) = c.run_sandbox("pod-a", &uid_a, 0).await;
    let (sb_b, lat_b) = c.run_sandbox("pod-b", &uid_b, 0).await;
    report(&c, &[lat_a, lat_b]);

    // detect_from skips what is not a CRI socket and lands on the real one.
    let missing = c.dir.join("missing.sock");
    let client = CriClient::detect_from(&[missing, c.socket.clone()], CriTimeouts::default())
        .await
        .expect("detect the harness's containerd");
    assert_eq!(client.socket(), c.socket);
    assert_eq!(client.runtime().name, "containerd");

    let started = std::time::Instant::now();
    let a = lookup(&client, &uid_a).await;
    let b = lookup(&client, &uid_b).await;
    eprintln!(
        "cri harness {}: two pod_netns lookups {:?}",
        c.id,
        started.elapsed()
    );
    let leases = c.leases(POD_NETWORK);
    for (netns, sandbox, other) in [(&a, &sb_a, &sb_b), (&b, &sb_b, &sb_a)] {
        assert_eq!(&netns.sandbox_id, sandbox);
        assert!(netns.ready && !netns.closed, "{netns:?}");
        assert!(
            netns.path.exists(),
            "{} does not exist",
            netns.path.display()
        );
        // It is the sandbox's own namespace: the same as its pause process's.
        let pid = netns.pid.expect("a running sandbox has a pid");
        assert_eq!(
            ns_inode(&netns.path),
            ns_inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))),
            "{netns:?} is not the namespace of the sandbox's process"
        );
        // eth0 in it holds the address containerd's CNI ADD leased for this very sandbox.
        let ips = ipv4_in_netns(&netns.path, "eth0");
        assert_eq!(
            ips.len(),
            1,
            "eth0 addresses in {}: {ips:?}",
            netns.path.display()
        );
        assert_eq!(ips[0], c.sandbox_ip(sandbox).await);
        let lease = leases
            .iter()
            .find(|(ip, _)| ip == &ips[0])
            .unwrap_or_else(|| panic!("no host-local lease for {} in {leases:?}", ips[0]));
        assert!(lease.1.contains(sandbox.as_str()), "{lease:?}");
        assert!(!lease.1.contains(other.as_str()), "{lease:?}");
    }
    assert_ne!(a.path, b.path);
    assert_ne!(ns_inode(&a.path), ns_inode(&b.path));
    // Neither is the namespace containerd itself runs in, nor the test's own.
    for netns in [&a, &b] {
        assert_ne!(ns_inode(&netns.path), ns_inode(&c.netns_path()));
        assert_ne!(
            ns_inode(&netns.path),
            ns_inode(Path::new("/proc/self/ns/net"))
        );
    }
}

#[tokio::test]
async fn unknown_pod_uid_is_none() {
    let c = Containerd::start().await;
    let uid = format!("{}-uid-known", c.id);
    let (_, latency) = c.run_sandbox("pod-known", &uid, 0).await;
    report(&c, &[latency]);
    let client = CriClient::connect(&c.socket).await.expect("connect");

    assert!(client.pod_netns(&uid).await.expect("lookup").is_some());
    let unknown = format!("{}-uid-unknown", c.id);
    assert_eq!(client.pod_netns(&unknown).await.expect("lookup"), None);
    assert!(
        client
            .pod_netns_all(&unknown)
            .await
            .expect("lookup")
            .is_empty()
    );
    // A prefix of a real UID is not a match (the label selector is exact).
    assert_eq!(
        client
            .pod_netns(&uid[..uid.len() - 1])
            .await
            .expect("lookup"),
        None
    );
    assert!(matches!(
        client.pod_netns("").await,
        Err(CriError::EmptyUid)
    ));
    // An unknown sandbox ID is None too, not an error.
    assert_eq!(
        client
            .sandbox_netns("0123456789abcdef")
            .await
            .expect("status"),
        None
    );
}

#[tokio::test]
async fn host_network_sandbox_has_no_pod_netns_to_plug_into() {
    let c = Containerd::start().await;
    let uid = format!("{}-uid-host", c.id);
    let sandbox = c.run_host_network_sandbox("pod-host", &uid).await;
    let client = CriClient::connect(&c.socket).await.expect("connect");
    let err = client.pod_netns(&uid).await.unwrap_err();
    assert!(
        matches!(&err, CriError::HostNetwork { sandbox_id } if sandbox_id == &sandbox),
        "{err:?}"
    );
    assert!(err.to_string().contains("host network"), "{err}");
    // containerd ran no CNI ADD for it.
    assert_eq!(c.leases(POD_NETWORK), Vec::new());
}

#[tokio::test]
async fn stopped_sandbox_keeps_its_path_and_cni_del_still_releases_the_lease() {
    let c = Containerd::start().await;
    let uid = format!("{}-uid-stop", c.id);
    let (sandbox, latency) = c.run_sandbox("pod-stop", &uid, 0).await;
    let client = CriClient::connect(&c.socket).await.expect("connect");
    let before = lookup(&client, &uid).await;
    assert!(before.ready && !before.closed, "{before:?}");

    // Plug a second NIC the way the agent does: CNI ADD into the path CRI reported, on another network.
    let extra_net = "hotnic-cri-extra";
    let extra = c.bridge_config(extra_net, "hnextra0", "10.89.0.0/24");
    let container_id = format!("hotnic-{sandbox}");
    let add = c.cni("ADD", &before.path, &container_id, "eth1", &extra);
    assert!(
        add.status.success(),
        "CNI ADD: {}{}",
        String::from_utf8_lossy(&add.stdout),
        String::from_utf8_lossy(&add.stderr)
    );
    let plugged = ipv4_in_netns(&before.path, "eth1");
    assert_eq!(plugged.len(), 1, "{plugged:?}");
    let leases = c.leases(extra_net);
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].0, plugged[0]);
    assert!(leases[0].1.contains(&container_id), "{leases:?}");

    c.stop_sandbox(&sandbox).await;
    let after = lookup(&client, &uid).await;
    assert_eq!(after.sandbox_id, sandbox);
    assert_eq!(
        after.path, before.path,
        "the stopped sandbox still reports its old path"
    );
    assert!(!after.ready, "{after:?}");
    assert!(after.closed, "{after:?}");
    eprintln!(
        "after StopPodSandbox: netns path {} exists: {}; pod-network leases left: {:?}",
        after.path.display(),
        after.path.exists(),
        c.leases(POD_NETWORK)
    );

    // The agent's DEL for the NIC it plugged uses the old path; host-local must release the lease anyway.
    let del = c.cni("DEL", &after.path, &container_id, "eth1", &extra);
    assert!(
        del.status.success(),
        "CNI DEL with the old path: {}{}",
        String::from_utf8_lossy(&del.stdout),
        String::from_utf8_lossy(&del.stderr)
    );
    assert_eq!(
        c.leases(extra_net),
        Vec::new(),
        "the lease was not released"
    );
    // DEL is idempotent.
    let again = c.cni("DEL", &after.path, &container_id, "eth1", &extra);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The pod gets a new sandbox (attempt 1): the lookup moves to it; the old one is still listed, last.
    let (renewed, latency2) = c.run_sandbox("pod-stop", &uid, 1).await;
    report(&c, &[latency, latency2]);
    let current = lookup(&client, &uid).await;
    assert_eq!(current.sandbox_id, renewed);
    assert!(current.ready && !current.closed, "{current:?}");
    assert_ne!(current.path, before.path);
    let all = client.pod_netns_all(&uid).await.expect("lookup all");
    let ids: Vec<&str> = all.iter().map(|n| n.sandbox_id.as_str()).collect();
    assert_eq!(ids, [renewed.as_str(), sandbox.as_str()]);
    assert!(all[1].closed);

    // Removed sandboxes disappear from the lookup.
    c.remove_sandbox(&sandbox).await;
    c.stop_sandbox(&renewed).await;
    c.remove_sandbox(&renewed).await;
    assert_eq!(client.pod_netns(&uid).await.expect("lookup"), None);
}

#[tokio::test]
async fn connecting_where_no_runtime_listens_fails_clearly_and_quickly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let short = CriTimeouts {
        connect: Duration::from_millis(300),
        request: Duration::from_millis(300),
    };

    // No socket file at all.
    let missing = dir.path().join("missing.sock");
    let err = CriClient::connect_with(&missing, short).await.unwrap_err();
    assert!(
        matches!(&err, CriError::Connect { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.sock"), "{err}");

    // A socket file with nothing listening (the listener is gone).
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind"));
    let err = CriClient::connect_with(&dead, short).await.unwrap_err();
    assert!(
        matches!(&err, CriError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );

    // Something listens but never answers (never even accepts): bounded by the connect timeout.
    let silent = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    let err = CriClient::connect_with(&silent, short).await.unwrap_err();
    assert!(matches!(&err, CriError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("silent.sock"), "{err}");

    // Something accepts and hangs up at once: not a CRI runtime.
    let rude = dir.path().join("rude.sock");
    let listener = tokio::net::UnixListener::bind(&rude).expect("bind");
    let rude_server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let err = CriClient::connect_with(&rude, short).await.unwrap_err();
    assert!(
        matches!(&err, CriError::Channel { .. } | CriError::Rpc { .. }),
        "{err:?}"
    );
    rude_server.abort();

    // detect_from reports every candidate and why it was passed over.
    let err = CriClient::detect_from(&[missing.clone(), dead.clone(), silent.clone()], short)
        .await
        .unwrap_err();
    let CriError::NoRuntime { tried } = &err else {
        panic!("{err:?}");
    };
    let tried_paths: Vec<&PathBuf> = tried.iter().map(|(p, _)| p).collect();
    assert_eq!(tried_paths, [&missing, &dead, &silent]);
    assert_eq!(tried[0].1, "no such socket");
    let message = err.to_string();
    assert!(
        message.contains("dead.sock") && message.contains("silent.sock"),
        "{message}"
    );
}

/// Runs a sandbox, drops the harness (after a containerd crash when `crash`), and checks nothing it made is
/// left: processes, netns bind mount, mounts under its temp dir, the temp dir, pod cgroups, its netns.
async fn harness_cleanup(crash: bool) {
    let mut c = Containerd::start().await;
    let uid = format!("{}-uid-cleanup", c.id);
    c.run_sandbox("pod-cleanup", &uid, 0).await;
    let client = CriClient::connect(&c.socket).await.expect("connect");
    let netns = lookup(&client, &uid).await;
    drop(client);
    let pause = netns.pid.expect("pid");
    let shims = c.shim_pids();
    assert!(
        !shims.is_empty(),
        "no shim found for {}",
        c.socket.display()
    );
    let cgroups = c.leftover_cgroups();
    assert!(!cgroups.is_empty(), "runc made no pod cgroup");
    let (dir, id) = (c.dir.clone(), c.id.clone());
    if crash {
        c.kill_containerd_hard();
    }
    drop(c);

    let alive =
        |pid: &str| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| !cmd.is_empty());
    assert!(!alive(&pause.to_string()), "pause process {pause} survived");
    for shim in &shims {
        assert!(!alive(shim), "shim {shim} survived");
    }
    assert!(!netns.path.exists(), "{} left behind", netns.path.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
    for cgroup in &cgroups {
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.display().to_string();
    assert!(
        !mountinfo.lines().any(|l| l.contains(&dir)),
        "mounts left under {dir}"
    );
    let netns_list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns_list = String::from_utf8_lossy(&netns_list.stdout);
    assert!(
        !netns_list.split_whitespace().any(|n| n == id),
        "netns {id} left behind"
    );
}

#[tokio::test]
async fn harness_leaves_nothing_behind() {
    harness_cleanup(false).await;
}

#[tokio::test]
async fn harness_leaves_nothing_behind_after_a_containerd_crash() {
    harness_cleanup(true).await;
}
