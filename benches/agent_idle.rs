//! Idle cost of `hotnic agent --node`: many pods on the node, all settled, nothing changing; the
//! CPU time the agent process (and the children it waited for: plugins, `nsenter`/`ip`) used over
//! a window, read from `/proc/<pid>/stat`.
//!
//! Real parts only (as root, the real-cluster tier): etcd + kube-apiserver from
//! `HOTNIC_TEST_ETCD` / `HOTNIC_TEST_KUBE_APISERVER`, the real `hotnic` binary with its default
//! timing (`--resync 60s`, `--parallel-pods 4`), the real bridge plugin and host-local. Every pod
//! has `spec.nodeName` set, a Multus annotation with one NIC on a bridge network, and a network
//! namespace of its own (`/run/netns/{namespace}_{name}`), so all of them settle to Ready before
//! the window starts.
//!
//! `cargo bench --bench agent_idle` (root). Knobs: `HOTNIC_BENCH_PODS` (500),
//! `HOTNIC_BENCH_WINDOW_SECS` (30), `HOTNIC_BENCH_SETTLE_SECS` (10), `HOTNIC_BENCH_RESYNC` (the
//! agent's `--resync`, default its own default), `HOTNIC_BENCH_AGENT_BIN` (another `hotnic` binary,
//! e.g. one built from an older commit, to compare).
#[path = "../tests/support/agent_env.rs"]
mod agent_env;
#[path = "../tests/support/kube_cluster.rs"]
mod kube_cluster;

use agent_env::*;
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user, system, children user, children system) clock ticks of a process.
fn cpu_ticks(pid: u32) -> [u64; 4] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent is running");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15,
    // cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let n = |i: usize| f[i - 3].parse::<u64>().unwrap();
    [n(14), n(15), n(16), n(17)]
}

fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: the measurement takes minutes
    // and is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("agent_idle: a measurement, run it with `cargo bench --bench agent_idle`");
        return;
    }
    let Some(real) = kube_cluster::cluster_or_skip("agent_idle") else {
        return;
    };
    require_root_and_plugins();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(real));
}

async fn run(real: &'static kube_cluster::KubeCluster) {
    let pods = env_num("HOTNIC_BENCH_PODS", 500) as usize;
    let window = Duration::from_secs(env_num("HOTNIC_BENCH_WINDOW_SECS", 30));
    let settle = Duration::from_secs(env_num("HOTNIC_BENCH_SETTLE_SECS", 10));
    let agent_bin = std::env::var("HOTNIC_BENCH_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_hotnic").to_string());

    let node = Node::new();
    real.install_test_crds(&["network-attachment-definitions.yaml"])
        .await;
    let ns = real.namespace(&format!("idle{}", std::process::id())).await;
    let nad = node.bridge_nad(&ns, "idlenet", "hnidle0", "10.140.0.0/16");
    real.must(
        "POST",
        &format!("/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions"),
        Some(&nad),
        None,
    )
    .await;
    let node_name = format!("idle-node-{}", unique());

    // One network namespace per pod (the agent's template finds it by namespace and name).
    let t = Instant::now();
    let names: Vec<String> = (0..pods).map(|i| format!("p{i:04}")).collect();
    let netns: Vec<Netns> = names
        .iter()
        .map(|n| Netns::named(&format!("{ns}_{n}")))
        .collect();
    eprintln!(
        "agent_idle: {} network namespaces made in {:.1} s",
        netns.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let ns = ns.clone();
            let node_name = node_name.clone();
            async move {
                let mac = format!("02:00:00:{:02x}:{:02x}:01", i / 256, i % 256);
                let mut pod = multus_pod(&ns, name, "", &[("idlenet", "eth1", &mac)]);
                pod["metadata"].as_object_mut().unwrap().remove("uid");
                pod["spec"]["nodeName"] = json!(node_name);
                real.must(
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/pods"),
                    Some(&pod),
                    None,
                )
                .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "agent_idle: {pods} pods created in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let log = node.dir.path().join("agent.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(&agent_bin);
    cmd.arg("agent")
        .args(["--node", &node_name])
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("--plugin-netns")
        .arg(node.ns.path())
        .args(["--netns-path-template", "/run/netns/{namespace}_{name}"])
        .env("KUBECONFIG", &real.admin_kubeconfig)
        .env("RUST_LOG", "hotnic=info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    if let Ok(resync) = std::env::var("HOTNIC_BENCH_RESYNC") {
        cmd.args(["--resync", &resync]);
    }
    let child = cmd.spawn().expect("starting hotnic agent");
    let agent = Agent { child, log };
    let pid = agent.child.id();

    // Every pod Ready.
    let t = Instant::now();
    loop {
        let list = real
            .must("GET", &format!("/api/v1/namespaces/{ns}/pods"), None, None)
            .await;
        let ready = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["metadata"]["annotations"]["hotnic.io/nic-status"]
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .is_some_and(|s| s[0]["state"] == "Ready")
            })
            .count();
        if ready == pods {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "only {ready} of {pods} pods Ready after 600 s; agent log: {}",
            agent.log.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converge = t.elapsed();
    let at_ready = cpu_ticks(pid);
    eprintln!(
        "agent_idle: all {pods} pods Ready {:.1} s after the agent started",
        converge.as_secs_f64()
    );
    tokio::time::sleep(settle).await;

    let before = cpu_ticks(pid);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = cpu_ticks(pid);
    let secs = start.elapsed().as_secs_f64();
    let hz = clock_ticks_per_second() as f64;
    let d: Vec<f64> = (0..4).map(|i| (after[i] - before[i]) as f64 / hz).collect();
    let total = d.iter().sum::<f64>();
    let startup: f64 = (0..4).map(|i| at_ready[i] as f64 / hz).sum();
    println!(
        "agent_idle: {pods} pods settled, nothing changing, {secs:.1} s window: agent CPU {total:.3} s \
         ({:.2} % of one core; user {:.3} s, system {:.3} s, waited-for children {:.3} s); \
         {startup:.2} s of CPU to bring all {pods} pods Ready ({:.1} s)",
        100.0 * total / secs,
        d[0],
        d[1],
        d[2] + d[3],
        converge.as_secs_f64(),
    );
    drop(agent);
    drop(netns);
}
