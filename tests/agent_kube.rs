//! `hotnic agent --node NAME` at the API server's wire protocol: a fake API server (plain HTTP on
//! 127.0.0.1, reached through a kubeconfig) answering list/watch pods, get
//! NetworkAttachmentDefinitions, patch pods and pods/status, create events; real CNI plugins in
//! namespaces the test creates. The same suite runs against a real etcd + kube-apiserver when
//! `HOTNIC_TEST_ETCD` and `HOTNIC_TEST_KUBE_APISERVER` name their binaries.

#[path = "support/agent_env.rs"]
mod agent_env;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/real_apiserver.rs"]
mod real_apiserver;

use agent_env::*;
use fake_apiserver::{Fake, kubeconfig};
use real_apiserver::RealApiserver;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// What the suite needs of an API server: the fake one, or a real one.
trait Cluster {
    fn put_pod(&self, pod: Value);
    fn delete_pod(&self, ns: &str, name: &str);
    fn put_nad(&self, nad: Value);
    fn pod(&self, ns: &str, name: &str) -> Option<Value>;
    fn events(&self) -> Vec<Value>;
    /// The fake, for what only it can show or do: the patches as sent, injected conflicts, and
    /// Arktos' `spec.nics` (a vanilla API server drops that field).
    fn fake(&self) -> Option<&Fake> {
        None
    }
}

impl Cluster for Fake {
    fn put_pod(&self, pod: Value) {
        Fake::put_pod(self, pod)
    }
    fn delete_pod(&self, ns: &str, name: &str) {
        Fake::delete_pod(self, ns, name)
    }
    fn put_nad(&self, nad: Value) {
        Fake::put_nad(self, nad)
    }
    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        Fake::pod(self, ns, name)
    }
    fn events(&self) -> Vec<Value> {
        Fake::events(self)
    }
    fn fake(&self) -> Option<&Fake> {
        Some(self)
    }
}

impl Cluster for RealApiserver {
    fn put_pod(&self, pod: Value) {
        RealApiserver::put_pod(self, pod)
    }
    fn delete_pod(&self, ns: &str, name: &str) {
        RealApiserver::delete_pod(self, ns, name)
    }
    fn put_nad(&self, nad: Value) {
        RealApiserver::put_nad(self, nad)
    }
    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        RealApiserver::pod(self, ns, name)
    }
    fn events(&self) -> Vec<Value> {
        RealApiserver::events(self)
    }
}

const LIMIT: Duration = Duration::from_secs(30);

fn ann(pod: &Value, key: &str) -> Option<Value> {
    pod["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
}

fn states(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").into(),
                n["state"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

fn wait_nic_status(fake: &dyn Cluster, ns: &str, name: &str, want: &[(&str, &str)]) -> Value {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    wait_for(
        &format!("nic-status of {ns}/{name} = {want:?}"),
        LIMIT,
        || {
            let p = fake.pod(ns, name).ok_or("no pod")?;
            let s = ann(&p, "hotnic.io/nic-status").ok_or("no nic-status")?;
            if states(&s) == want {
                Ok(p)
            } else {
                Err(format!("{s}"))
            }
        },
    )
}

fn events(fake: &dyn Cluster, reason: &str) -> Vec<Value> {
    fake.events()
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_plugs_reports_unplugs_and_tears_down() {
    require_root_and_plugins();
    let node = Node::new();
    let fake = Fake::new();
    let url = fake.serve().await;
    let kc = kubeconfig(node.dir.path(), &url);
    suite(&fake, &node, &kc, &format!("f{}", unique()));
}

/// The suite against a real etcd + kube-apiserver, when their binaries are given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_against_a_real_kube_apiserver() {
    let Some((apiserver, etcd)) = real_apiserver::binaries_from_env() else {
        eprintln!(
            "SKIPPED: real kube-apiserver run: set HOTNIC_TEST_KUBE_APISERVER and HOTNIC_TEST_ETCD to the binaries to enable it"
        );
        return;
    };
    require_root_and_plugins();
    let node = Node::new();
    let real = RealApiserver::start(&apiserver, &etcd).await;
    suite(&real, &node, &real.kubeconfig, &format!("r{}", unique()));
}

/// Plug, report, unplug and tear down through the API server `c`, in the namespace `t` (unique
/// per run: the pods' network namespaces are `/run/netns/{namespace}_{name}`).
fn suite(c: &dyn Cluster, node: &Node, kc: &Path, t: &str) {
    let web_ns = Netns::named(&format!("{t}_web"));
    let vm_ns = Netns::named(&format!("{t}_vm"));
    let node_name = format!("node-{}", unique());
    c.put_nad(node.bridge_nad(t, "brnet", "hnbrk", "10.110.0.0/24"));
    let mut web = multus_pod(
        t,
        "web",
        &format!("{t}-web-uid"),
        &[
            ("brnet", "eth1", "02:00:00:30:00:01"),
            ("brnet", "eth2", "02:00:00:30:00:02"),
        ],
    );
    web["spec"]["nodeName"] = json!(node_name);
    c.put_pod(web.clone());
    // An Arktos VM pod: spec.nics, MACs in hotnic.io/mac-addresses, one NIC on a missing network.
    let vm = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vm", "namespace": t, "uid": format!("{t}-vm-uid"),
            "annotations": {"hotnic.io/mac-addresses": json!({"eth1": "02:00:00:31:00:01", "eth2": "02:00:00:31:00:02"}).to_string()}},
        "spec": {"nodeName": node_name, "containers": [{"name": "vm", "image": "x"}],
            "nics": [{"name": "eth0"}, {"name": "eth1", "subnetName": "brnet", "portId": "port-1"},
                     {"name": "eth2", "subnetName": "missing", "portId": "port-2"}]}});
    let arktos = c.fake().is_some();
    if arktos {
        c.put_pod(vm);
    }
    // A pod on another node: never touched.
    let mut other = multus_pod(
        t,
        "elsewhere",
        "nonexistent-netns",
        &[("brnet", "eth1", "02:00:00:32:00:01")],
    );
    other["spec"]["nodeName"] = json!("some-other-node");
    c.put_pod(other);

    let agent = node.kube_agent_with(&node_name, kc, "/run/netns/{namespace}_{name}");
    let p = wait_nic_status(c, t, "web", &[("eth1", "Ready"), ("eth2", "Ready")]);
    let addrs = web_ns.addrs();
    for (ifname, mac) in [("eth1", "02:00:00:30:00:01"), ("eth2", "02:00:00:30:00:02")] {
        let a = addrs
            .iter()
            .find(|(n, _, _)| n == ifname)
            .unwrap_or_else(|| panic!("{ifname} missing: {addrs:?}"));
        assert_eq!(a.1, mac);
        assert!(a.2[0].starts_with("10.110.0."), "{a:?}");
    }
    let ns_list = ann(&p, "k8s.v1.cni.cncf.io/network-status").unwrap();
    let ifaces: Vec<_> = ns_list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(ifaces, ["eth0", "eth1", "eth2"]);
    assert_eq!(ns_list[0]["default"], true);

    // While plugging, the NICs were shown InProgress first (the fake recorded every patch).
    let web_path = format!("pods/{t}/web");
    let web_states: Vec<String> = c
        .fake()
        .map(Fake::patches)
        .unwrap_or_default()
        .iter()
        .filter(|(path, _)| *path == web_path)
        .filter_map(|(_, b)| {
            b["metadata"]["annotations"]["hotnic.io/nic-status"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    if c.fake().is_some() {
        assert!(
            web_states.first().is_some_and(|s| s.contains("InProgress")),
            "{web_states:?}"
        );
        assert!(
            web_states.last().is_some_and(|s| !s.contains("InProgress")),
            "{web_states:?}"
        );
    }
    if arktos {
        arktos_checks(c, t, &vm_ns);
    }
    // Every write was guarded by the resourceVersion it was computed from.
    if let Some(fake) = c.fake() {
        assert!(
            fake.patches()
                .iter()
                .all(|(_, b)| b["metadata"]["resourceVersion"].is_string())
        );
    }
    // Events.
    let web_uid = c.pod(t, "web").unwrap()["metadata"]["uid"].clone();
    let plugged = events(c, "NICPlugged");
    assert!(plugged.len() >= 2, "{plugged:?}");
    assert!(
        plugged
            .iter()
            .any(|e| e["involvedObject"]["uid"] == web_uid && e["type"] == "Normal")
    );
    assert!(
        c.pod(t, "elsewhere").unwrap()["metadata"]["annotations"]
            .get("hotnic.io/nic-status")
            .is_none()
    );

    // Unplug eth2 while other writers keep changing the pod: conflicts are retried.
    if let Some(fake) = c.fake() {
        fake.inject_conflicts(2);
    }
    let mut web2 = multus_pod(
        t,
        "web",
        &format!("{t}-web-uid"),
        &[("brnet", "eth1", "02:00:00:30:00:01")],
    );
    web2["spec"]["nodeName"] = json!(node_name);
    c.put_pod(web2);
    let p = wait_nic_status(c, t, "web", &[("eth1", "Ready")]);
    if let Some(fake) = c.fake() {
        assert!(fake.conflicts_served() >= 2);
        assert!(
            p["metadata"]["labels"]["other-writer"].is_string(),
            "the other writer's change survives"
        );
    }
    assert!(!web_ns.links().contains(&"eth2".to_string()));
    let ns_list = ann(&p, "k8s.v1.cni.cncf.io/network-status").unwrap();
    assert_eq!(ns_list.as_array().unwrap().len(), 2, "{ns_list}");
    wait_for("NICUnplugged event", LIMIT, || {
        let e = events(c, "NICUnplugged");
        if e.iter()
            .any(|e| e["involvedObject"]["fieldPath"] == "interface(eth2)")
        {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });

    // Pods deleted: everything released.
    c.delete_pod(t, "web");
    if arktos {
        c.delete_pod(t, "vm");
    }
    wait_for("teardown of deleted pods", LIMIT, || {
        let (a, b, leases, cache) = (
            web_ns.links(),
            vm_ns.links(),
            node.leases("brnet"),
            node.cache_files(),
        );
        if a == ["lo"] && b == ["lo"] && leases.is_empty() && cache.is_empty() {
            Ok(())
        } else {
            Err(format!("{a:?} {b:?} {leases:?} {cache:?}"))
        }
    });
    drop(agent);
}

/// Arktos VM pod: nic-status annotation and status.nicStatuses through pods/status; a NIC on a
/// missing network fails with a Warning event.
fn arktos_checks(c: &dyn Cluster, t: &str, vm_ns: &Netns) {
    let vm = wait_nic_status(c, t, "vm", &[("eth1", "Ready"), ("eth2", "Failed")]);
    let nic_statuses = &vm["status"]["nicStatuses"];
    assert_eq!(nic_statuses[0]["portID"], "port-1");
    assert_eq!(nic_statuses[0]["state"], "Ready");
    assert!(
        nic_statuses[1]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "NetworkAttachmentDefinition {t}/missing not found"
            )),
        "{nic_statuses}"
    );
    if let Some(fake) = c.fake() {
        let status_path = format!("pods/{t}/vm/status");
        assert!(fake.patches().iter().any(|(path, _)| *path == status_path));
    }
    assert_eq!(
        vm_ns
            .addrs()
            .iter()
            .find(|(n, _, _)| n == "eth1")
            .unwrap()
            .1,
        "02:00:00:31:00:01"
    );
    let failed = events(c, "NICPlugFailed");
    let missing = format!("{t}/missing");
    assert!(
        failed
            .iter()
            .any(|e| e["type"] == "Warning" && e["message"].as_str().unwrap().contains(&missing)),
        "{failed:?}"
    );
}
