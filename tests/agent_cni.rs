//! The CNI layer and the reconciler against the real plugins (bridge, tuning, host-local), as root,
//! with plugins run inside a "node" namespace the test creates and NICs plugged into pod
//! namespaces it creates.

#[path = "support/agent_env.rs"]
mod agent_env;

use agent_env::*;
use hotnic::agent::cni::{CniError, Invoker, NetConfList, ResultCache, RuntimeArgs};
use hotnic::agent::desired::{NetworkConfig, WantedNic};
use hotnic::agent::metrics::Metrics;
use hotnic::agent::netns::TemplateResolver;
use hotnic::agent::reconcile::Reconciler;
use hotnic::agent::status::NicState;
use hotnic::model::NetworkRef;
use serde_json::{Map, json};
use std::sync::Arc;
use std::time::Duration;

fn invoker(node: &Node) -> Invoker {
    let mut i = Invoker::new("/usr/lib/cni", Duration::from_secs(20));
    i.plugin_netns = Some(node.ns.path());
    i
}

fn bridge_config(node: &Node, net: &str, subnet: &str) -> String {
    node.bridge_nad("ns", net, "hnbr0", subnet)["spec"]["config"]
        .as_str()
        .unwrap()
        .to_string()
}

fn reconciler(node: &Node) -> Reconciler {
    Reconciler::new(
        invoker(node),
        ResultCache::new(&node.state_dir()),
        Arc::new(TemplateResolver::new("/run/netns/{uid}")),
        Arc::new(Metrics::new()),
    )
}

fn pod(ns: &Netns) -> hotnic::agent::netns::PodRef {
    hotnic::agent::netns::PodRef {
        uid: ns.name.clone(),
        namespace: "ns".into(),
        name: "p".into(),
    }
}

fn wanted(ifname: &str, net: &str, mac: &str, config: &str) -> WantedNic {
    WantedNic {
        ifname: ifname.into(),
        network: Some(NetworkRef {
            namespace: "ns".into(),
            name: net.into(),
        }),
        mac: Some(mac.parse().unwrap()),
        mac_problem: None,
        ips: vec![],
        port_id: Some("port-1".into()),
        config: NetworkConfig::Found(config.into()),
    }
}

fn mac_of(ns: &Netns, ifname: &str) -> Option<String> {
    ns.addrs()
        .into_iter()
        .find(|(n, _, _)| n == ifname)
        .map(|(_, m, _)| m)
}

#[tokio::test]
async fn conflist_chains_prev_result_and_injects_runtime_config_by_capability() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    // bridge does not declare `mac`; tuning does and sets it (it needs prevResult to find eth1).
    let conf = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "bridge", "bridge": "hnbr1",
         "ipam": {"type": "host-local", "dataDir": node.ipam_dir(), "ranges": [[{"subnet": "10.97.0.0/24"}]]}},
        {"type": "tuning", "capabilities": {"mac": true}}
    ]});
    let list = NetConfList::from_value(&conf).unwrap();
    let mut caps = Map::new();
    caps.insert("mac".into(), json!("02:00:00:0e:00:42"));
    let rt = RuntimeArgs {
        container_id: "hotnic-test-chain".into(),
        netns: pod_ns.path().display().to_string(),
        ifname: "eth1".into(),
        cni_args: vec![],
        capability_args: caps,
    };
    let inv = invoker(&node);
    let result = inv.add_list(&list, &rt).await.expect("ADD");
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        mac_of(&pod_ns, "eth1").as_deref(),
        Some("02:00:00:0e:00:42")
    );
    assert_eq!(node.leases("chain").len(), 1);
    // A re-ADD of the same ifname fails with the plugin's own error.
    assert!(matches!(
        inv.add_list(&list, &rt).await,
        Err(CniError::Plugin { .. })
    ));
    // CHECK with the cached result passes while the interface is as ADD left it, and fails
    // once it is not.
    inv.check_list(&list, &rt, &result).await.expect("CHECK");
    sh(&["ip", "-n", &pod_ns.name, "addr", "flush", "dev", "eth1"]);
    let e = inv.check_list(&list, &rt, &result).await.unwrap_err();
    assert!(
        matches!(e, CniError::Plugin { ref command, .. } if command == "CHECK"),
        "{e}"
    );
    inv.del_list(&list, &rt, Some(&result)).await.expect("DEL");
    assert_eq!(mac_of(&pod_ns, "eth1"), None);
    assert!(node.leases("chain").is_empty());
    // DEL is idempotent.
    inv.del_list(&list, &rt, Some(&result))
        .await
        .expect("second DEL");
}

#[tokio::test]
async fn plugin_errors_are_parsed_and_missing_plugins_named() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let rt = RuntimeArgs {
        container_id: "hotnic-test-err".into(),
        netns: pod_ns.path().display().to_string(),
        ifname: "eth1".into(),
        ..Default::default()
    };
    let inv = invoker(&node);
    let bad =
        NetConfList::parse(&bridge_config(&node, "bad", "10.98.0.0/24").replace("/24", "/33"))
            .unwrap();
    match inv.add_list(&bad, &rt).await {
        Err(CniError::Plugin {
            plugin,
            command,
            msg,
            ..
        }) => {
            assert_eq!((plugin.as_str(), command.as_str()), ("bridge", "ADD"));
            assert!(msg.contains("10.98.0.0/33"), "{msg}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    // bridge made the veth before host-local rejected the subnet; the rollback DEL reports the
    // same rejection but removes the link.
    let errs = inv.del_list_best_effort(&bad, &rt, None).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].to_string().contains("10.98.0.0/33"), "{errs:?}");
    let missing =
        NetConfList::parse(r#"{"cniVersion":"1.0.0","name":"m","type":"hotnic-missing"}"#).unwrap();
    let e = inv.add_list(&missing, &rt).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to find plugin \"hotnic-missing\""),
        "{e}"
    );
    // DEL of a plugin that is not installed cannot release anything: skipped, not an error.
    inv.del_list(&missing, &rt, None).await.unwrap();
    assert_eq!(pod_ns.links(), ["lo"]);
}

#[tokio::test]
async fn a_plugin_that_hangs_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hang");
    std::fs::write(&plugin, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    let inv = Invoker::new(
        &dir.path().display().to_string(),
        Duration::from_millis(200),
    );
    let list = NetConfList::parse(r#"{"cniVersion":"1.0.0","name":"h","type":"hang"}"#).unwrap();
    let e = inv
        .add_list(&list, &RuntimeArgs::default())
        .await
        .unwrap_err();
    assert!(matches!(e, CniError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn lost_cache_is_adopted_by_name_and_mac_then_unplugged() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let rec = reconciler(&node);
    let want = [wanted(
        "eth1",
        "adopt",
        "02:00:00:0f:00:01",
        &bridge_config(&node, "adopt", "10.99.0.0/24"),
    )];
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Ready, "{rep:?}");
    assert_eq!(rep.nics[0].port_id.as_deref(), Some("port-1"));
    std::fs::remove_dir_all(node.state_dir().join("cache")).unwrap();
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Ready, "{rep:?}");
    assert!(rep.errors.is_empty() && rep.events.is_empty(), "{rep:?}");
    assert_eq!(node.leases("adopt").len(), 1);
    let rep = rec.reconcile(&pod(&pod_ns), &[]).await;
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(pod_ns.links(), ["lo"]);
    assert!(node.leases("adopt").is_empty());
    assert!(node.cache_files().is_empty());
}

#[tokio::test]
async fn foreign_and_primary_interfaces_are_never_touched() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    sh(&[
        "ip",
        "-n",
        &pod_ns.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0p",
    ]);
    sh(&[
        "ip",
        "-n",
        &pod_ns.name,
        "link",
        "add",
        "eth1",
        "address",
        "02:00:00:10:00:99",
        "type",
        "veth",
        "peer",
        "name",
        "eth1p",
    ]);
    let before = pod_ns.addrs();
    let rec = reconciler(&node);
    let want = [wanted(
        "eth1",
        "foreign",
        "02:00:00:10:00:01",
        &bridge_config(&node, "foreign", "10.100.0.0/24"),
    )];
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Failed);
    assert!(
        rep.nics[0].reason.contains("not plugged by hotnic"),
        "{}",
        rep.nics[0].reason
    );
    assert_eq!(rep.events[0].reason, "NICPlugFailed");
    let rep = rec.reconcile(&pod(&pod_ns), &[]).await;
    assert!(rep.errors.is_empty());
    let rep = rec.teardown(&pod_ns.name).await;
    assert!(rep.errors.is_empty());
    assert_eq!(pod_ns.addrs(), before);
    assert!(node.leases("foreign").is_empty());
}

#[tokio::test]
async fn half_done_add_is_rolled_back_then_replugged_once() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let rec = reconciler(&node);
    let want = [wanted(
        "eth1",
        "half",
        "02:00:00:11:00:01",
        &bridge_config(&node, "half", "10.101.0.0/24"),
    )];
    rec.reconcile(&pod(&pod_ns), &want).await;
    let first_lease = node.leases("half");
    assert_eq!(first_lease.len(), 1);
    // As if the agent died during ADD: the plugin ran, the entry still says InProgress.
    let file = node
        .state_dir()
        .join("cache")
        .join(&pod_ns.name)
        .join("eth1.json");
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    entry["state"] = json!("InProgress");
    entry["result"] = json!(null);
    std::fs::write(&file, entry.to_string()).unwrap();
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Ready, "{rep:?}");
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(
        mac_of(&pod_ns, "eth1").as_deref(),
        Some("02:00:00:11:00:01")
    );
    assert_eq!(
        node.leases("half").len(),
        1,
        "exactly one lease after rollback and re-plug"
    );
    rec.teardown(&pod_ns.name).await;
    assert!(node.leases("half").is_empty() && node.cache_files().is_empty());
}

#[tokio::test]
async fn a_duplicate_interface_name_fails_and_the_first_stays() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let rec = reconciler(&node);
    let conf = bridge_config(&node, "dup", "10.102.0.0/24");
    let want = [
        wanted("eth1", "dup", "02:00:00:12:00:01", &conf),
        wanted("eth1", "dup", "02:00:00:12:00:02", &conf),
    ];
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Ready, "{rep:?}");
    assert_eq!(rep.nics[1].state, NicState::Failed);
    assert!(
        rep.nics[1].reason.contains("used by an earlier NIC"),
        "{rep:?}"
    );
    assert_eq!(
        mac_of(&pod_ns, "eth1").as_deref(),
        Some("02:00:00:12:00:01")
    );
    assert_eq!(node.leases("dup").len(), 1);
    rec.teardown(&pod_ns.name).await;
    assert!(node.leases("dup").is_empty() && node.cache_files().is_empty());
}

/// A resolver whose sandbox can be "stopped" (as CRI reports `netNamespaceClosed: true`).
struct Switchable {
    path: std::path::PathBuf,
    closed: std::sync::atomic::AtomicBool,
}

impl hotnic::agent::netns::NetnsResolver for Switchable {
    fn netns<'a>(
        &'a self,
        _pod: &'a hotnic::agent::netns::PodRef,
    ) -> hotnic::agent::netns::NetnsFuture<'a> {
        Box::pin(async move {
            Ok(Some(hotnic::agent::netns::PodNetns {
                path: self.path.clone(),
                closed: self.closed.load(std::sync::atomic::Ordering::SeqCst),
            }))
        })
    }
}

#[tokio::test]
async fn a_stopped_sandbox_is_released_with_its_old_path_and_replugged_when_back() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let resolver = Arc::new(Switchable {
        path: pod_ns.path(),
        closed: false.into(),
    });
    let rec = Reconciler::new(
        invoker(&node),
        ResultCache::new(&node.state_dir()),
        resolver.clone(),
        Arc::new(Metrics::new()),
    );
    let want = [wanted(
        "eth1",
        "stop",
        "02:00:00:13:00:01",
        &bridge_config(&node, "stop", "10.103.0.0/24"),
    )];
    assert_eq!(
        rec.reconcile(&pod(&pod_ns), &want).await.nics[0].state,
        NicState::Ready
    );
    assert_eq!(node.leases("stop").len(), 1);
    resolver
        .closed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Unknown, "{rep:?}");
    assert!(rep.nics[0].reason.contains("stopped"), "{rep:?}");
    assert!(rep.needs_retry() && rep.errors.is_empty(), "{rep:?}");
    assert!(
        node.leases("stop").is_empty(),
        "the lease is released while the sandbox is stopped"
    );
    assert!(node.cache_files().is_empty());
    resolver
        .closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let rep = rec.reconcile(&pod(&pod_ns), &want).await;
    assert_eq!(rep.nics[0].state, NicState::Ready, "{rep:?}");
    assert_eq!(
        mac_of(&pod_ns, "eth1").as_deref(),
        Some("02:00:00:13:00:01")
    );
    rec.teardown(&pod_ns.name).await;
    assert!(node.leases("stop").is_empty());
}

/// Runs `plugin_dir/hntrace` as the pod's plugin: the real bridge plugin behind a shim that
/// appends `+` when a call starts and `-` when it ends (one `write` each, O_APPEND), so the log
/// shows how many calls overlapped. The shim exists only for that count; the plug is the bridge's.
fn traced_bridge_config(node: &Node, net: &str, subnet: &str, log: &std::path::Path) -> String {
    let dir = node.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let shim = dir.join("hntrace");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf '+' >> {log}\n/usr/lib/cni/bridge\nrc=$?\nprintf -- '-' >> {log}\nexit $rc\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bridge_config(node, net, subnet).replace("\"type\":\"bridge\"", "\"type\":\"hntrace\"")
}

/// The most calls that were running at once, read off a `+`/`-` log.
fn most_at_once(log: &std::path::Path) -> usize {
    let (mut now, mut most) = (0i64, 0i64);
    for c in std::fs::read_to_string(log).unwrap().chars() {
        now += if c == '+' { 1 } else { -1 };
        most = most.max(now);
    }
    most as usize
}

#[tokio::test]
async fn many_nics_are_plugged_concurrently_reported_in_order_and_released_whole() {
    require_root_and_plugins();
    for parallel in [1usize, 8] {
        let node = Node::new();
        let pod_ns = Netns::new("many");
        let log = node.dir.path().join("calls.log");
        let mut rec = reconciler(&node);
        rec.invoker = {
            let mut i = Invoker::new(
                &format!("{}:/usr/lib/cni", node.dir.path().join("plugins").display()),
                Duration::from_secs(20),
            );
            i.plugin_netns = Some(node.ns.path());
            i
        };
        rec.parallel_plugs = parallel;
        let conf = traced_bridge_config(&node, "many", "10.103.0.0/24", &log);
        assert!(conf.contains("hntrace"), "{conf}");
        let n = 16;
        let names: Vec<String> = (1..=n).map(|i| format!("eth{i}")).collect();
        let macs: Vec<String> = (1..=n).map(|i| format!("02:00:00:13:00:{i:02x}")).collect();
        let want: Vec<WantedNic> = (0..n)
            .map(|i| wanted(&names[i], "many", &macs[i], &conf))
            .collect();
        let rep = rec.reconcile(&pod(&pod_ns), &want).await;
        assert!(rep.errors.is_empty(), "{rep:?}");
        // Reported in spec order, whatever order the plugs finished in.
        let got: Vec<&str> = rep.nics.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            rep.nics.iter().all(|s| s.state == NicState::Ready),
            "{rep:?}"
        );
        let status_order: Vec<&str> = rep
            .network_status
            .iter()
            .map(|e| e.interface.as_str())
            .collect();
        assert_eq!(status_order, got);
        let plugged: Vec<&str> = rep.events.iter().map(|e| e.ifname.as_str()).collect();
        assert_eq!(plugged, got);
        for (name, mac) in names.iter().zip(&macs) {
            assert_eq!(
                mac_of(&pod_ns, name).as_deref(),
                Some(mac.as_str()),
                "{name}"
            );
        }
        let mut ips: Vec<String> = rep
            .network_status
            .iter()
            .flat_map(|e| e.ips.clone())
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), n, "{ips:?}");
        assert_eq!(node.leases("many").len(), n);
        let most = most_at_once(&log);
        if parallel == 1 {
            assert_eq!(most, 1, "--parallel-plugs 1 runs one plugin at a time");
        } else {
            assert!(
                (2..=parallel).contains(&most),
                "{most} ADDs at once with {parallel} allowed"
            );
        }
        // A pass with nothing to do runs no plugin.
        let before = std::fs::read_to_string(&log).unwrap().len();
        let again = rec.reconcile(&pod(&pod_ns), &want).await;
        assert!(
            again.errors.is_empty() && again.events.is_empty(),
            "{again:?}"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap().len(), before);
        // Unplugging all of them leaves no link, lease or cache entry.
        let down = rec.reconcile(&pod(&pod_ns), &[]).await;
        assert!(down.errors.is_empty(), "{down:?}");
        assert_eq!(
            pod_ns
                .links()
                .iter()
                .filter(|l| l.starts_with("eth") && *l != "eth0")
                .count(),
            0
        );
        assert!(node.leases("many").is_empty(), "{:?}", node.leases("many"));
        assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    }
}
