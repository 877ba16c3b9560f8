//! `hotnic agent --cri-socket`: the agent asks a real containerd (CRI) where a pod's sandbox network
//! namespace is and plugs into that very namespace with the real bridge plugin; unplugging releases
//! the link and the lease. Root, like the other agent and CRI tests.

#[path = "support/agent_env.rs"]
mod agent_env;
#[path = "support/cri/mod.rs"]
mod cri_support;

use agent_env::*;
use cri_support::Containerd;
use hotnic::agent::cri::CriClient;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// `(ifname, mac)` of every link in the namespace at `netns`.
fn links_in(netns: &Path) -> Vec<(String, String)> {
    let out = sh(&[
        "nsenter",
        &format!("--net={}", netns.display()),
        "ip",
        "-j",
        "link",
        "show",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or("").to_string(),
                l["address"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Starts `hotnic agent --pods-dir --cri-socket` inside the node namespace.
fn cri_agent(node: &Node, socket: &Path) -> Agent {
    let log = node.dir.path().join(format!("agent-{}.log", unique()));
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path().display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_hotnic"))
        .arg("agent")
        .arg("--pods-dir")
        .arg(node.pods_dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("--cri-socket")
        .arg(socket)
        .args(["--poll-interval", "100ms", "--backoff-base", "200ms"])
        // Nothing in the pods dir changes when a sandbox stops or is replaced: the periodic
        // resync is what notices (in Kubernetes mode the pod's status update does).
        .args(["--resync", "1s"])
        .env("RUST_LOG", "hotnic=debug")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("starting hotnic agent");
    Agent { child, log }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_follows_the_pod_sandbox_the_cri_runtime_reports() {
    require_root_and_plugins();
    let c = Containerd::start().await;
    let node = Node::new();
    let uid = format!("{}-web", c.id);
    let (sandbox, _) = c.run_sandbox("web", &uid, 0).await;
    let sandbox_netns = CriClient::connect(&c.socket)
        .await
        .expect("connect to the harness's containerd")
        .pod_netns(&uid)
        .await
        .expect("CRI lookup")
        .expect("the sandbox is found")
        .path;
    let before = links_in(&sandbox_netns);
    assert!(
        before.iter().any(|(n, _)| n == "eth0"),
        "the sandbox has its primary eth0 from containerd's CNI: {before:?}"
    );

    node.put(
        "nad",
        &node.bridge_nad("t1", "blue", "hncri0", "10.93.0.0/24"),
    );
    let mac = "02:00:00:0c:00:01";
    node.put(
        "pod",
        &multus_pod("t1", "web", &uid, &[("blue", "net1", mac)]),
    );
    let agent = cri_agent(&node, &c.socket);

    wait_for("net1 Ready", LIMIT, || {
        let s = node.status("t1", "web").ok_or("no status file")?;
        let states = nic_states(&s);
        match states.as_slice() {
            [(n, st, _)] if n == "net1" && st == "Ready" => Ok(()),
            _ => Err(format!("{states:?}\n{}", agent.log())),
        }
    });
    let after = links_in(&sandbox_netns);
    assert!(
        after.iter().any(|(n, m)| n == "net1" && m == mac),
        "net1 with the requested MAC is in the CRI sandbox's namespace: {after:?}"
    );
    let eth0 = |l: &[(String, String)]| l.iter().find(|(n, _)| n == "eth0").cloned();
    assert_eq!(eth0(&after), eth0(&before), "the primary eth0 is untouched");
    assert_eq!(node.leases("blue").len(), 1, "one lease for net1");

    // The sandbox stops (its namespace is closed): the NIC is released through the old path, the
    // lease with it, and reported Unknown; a new sandbox for the pod gets the NIC again.
    c.stop_sandbox(&sandbox).await;
    wait_for("net1 released with the stopped sandbox", LIMIT, || {
        let s = node.status("t1", "web").ok_or("no status file")?;
        let states = nic_states(&s);
        let unknown = matches!(states.as_slice(), [(n, st, _)] if n == "net1" && st == "Unknown");
        if unknown && node.leases("blue").is_empty() && node.cache_files().is_empty() {
            Ok(())
        } else {
            Err(format!("{states:?} leases {:?}", node.leases("blue")))
        }
    });
    let (_sandbox2, _) = c.run_sandbox("web", &uid, 1).await;
    let sandbox_netns = CriClient::connect(&c.socket)
        .await
        .unwrap()
        .pod_netns(&uid)
        .await
        .unwrap()
        .expect("the new sandbox is found")
        .path;
    let before = links_in(&sandbox_netns);
    wait_for("net1 Ready again in the new sandbox", LIMIT, || {
        let l = links_in(&sandbox_netns);
        let s = node.status("t1", "web").ok_or("no status file")?;
        let states = nic_states(&s);
        let ready = matches!(states.as_slice(), [(n, st, _)] if n == "net1" && st == "Ready");
        if ready && l.iter().any(|(n, m)| n == "net1" && m == mac) {
            Ok(())
        } else {
            Err(format!("{states:?} {l:?}\n{}", agent.log()))
        }
    });
    assert_eq!(node.leases("blue").len(), 1, "exactly one lease again");

    // Unplug: the NIC leaves the annotation; the link and its lease go.
    node.put("pod", &multus_pod("t1", "web", &uid, &[]));
    wait_for("net1 unplugged", LIMIT, || {
        let l = links_in(&sandbox_netns);
        if l.iter().all(|(n, _)| n != "net1") && node.leases("blue").is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?} leases {:?}", node.leases("blue")))
        }
    });
    assert_eq!(
        eth0(&links_in(&sandbox_netns)),
        eth0(&before),
        "eth0 survives the unplug"
    );
}
