//! `hotnic agent --node NAME` against an API server, with real CNI plugins in namespaces the test
//! creates. The suite runs against a real etcd + kube-apiserver (the real-cluster tier, when
//! `HOTNIC_TEST_ETCD` and `HOTNIC_TEST_KUBE_APISERVER` name their binaries), the agent
//! authenticated as its own ServiceAccount with exactly the RBAC of `manifests/`; and against an
//! in-test fake API server (plain HTTP, list/watch/patch/events), kept only for what a real one
//! cannot be made to do: serve Arktos' `spec.nics` (a vanilla API server drops it), record every
//! patch as sent (to show InProgress before Ready), and answer a chosen number of patches with 409
//! Conflict.

#[path = "support/agent_env.rs"]
mod agent_env;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_cluster.rs"]
mod kube_cluster;

use agent_env::*;
use fake_apiserver::{Fake, kubeconfig};
use hotnic::agent::backoff::Backoff;
use hotnic::agent::cni::{Invoker, ResultCache};
use hotnic::agent::engine::Timing;
use hotnic::agent::metrics::Metrics;
use hotnic::agent::netns::{NetnsFuture, NetnsResolver, PodRef, TemplateResolver};
use hotnic::agent::reconcile::Reconciler;
use kube_cluster::KubeCluster;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// The real cluster, for what only it can show: a concurrent writer of its own.
    fn real(&self) -> Option<&'static KubeCluster> {
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

impl Cluster for KubeCluster {
    fn put_pod(&self, pod: Value) {
        KubeCluster::put_pod(self, pod)
    }
    fn delete_pod(&self, ns: &str, name: &str) {
        KubeCluster::delete_pod(self, ns, name)
    }
    fn put_nad(&self, nad: Value) {
        KubeCluster::put_nad(self, nad)
    }
    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        KubeCluster::pod(self, ns, name)
    }
    fn events(&self) -> Vec<Value> {
        KubeCluster::events(self)
    }
    fn real(&self) -> Option<&'static KubeCluster> {
        Some(KubeCluster::shared())
    }
}

/// Another client editing a pod's labels every 20 ms (as controllers and users do) while the
/// agent writes its status: the agent's resourceVersion-guarded patches meet real conflicts.
struct ConcurrentWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u32>,
}

impl ConcurrentWriter {
    fn start(real: &'static KubeCluster, ns: &str, name: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut n = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let patch = json!({"metadata": {"labels": {"other-writer": n.to_string()}}});
                rt.block_on(real.must(
                    "PATCH",
                    &path,
                    Some(&patch),
                    Some("application/merge-patch+json"),
                ));
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        Self { stop, thread }
    }

    /// Stops writing; the last value written.
    fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
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

/// The suite against a real etcd + kube-apiserver, when their binaries are given: the agent runs
/// with a token of the `hotnic-agent` ServiceAccount bound by `manifests/base/agent-rbac.yaml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_against_a_real_kube_apiserver() {
    let Some(real) = kube_cluster::cluster_or_skip("kubernetes_mode_against_a_real_kube_apiserver")
    else {
        return;
    };
    require_root_and_plugins();
    let node = Node::new();
    real.install_test_crds(&["network-attachment-definitions.yaml"])
        .await;
    real.ensure_namespace("hotnic-system").await;
    let rbac = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/base/agent-rbac.yaml"
    ))
    .unwrap();
    real.apply_yaml(&rbac, &[]).await;
    let token = real
        .service_account_token("hotnic-system", "hotnic-agent")
        .await;
    let kc = node.dir.path().join("agent.kubeconfig");
    real.token_kubeconfig(&token, &kc);
    let t = real.namespace(&format!("r{}", unique())).await;
    suite(real, &node, &kc, &t);
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
    // Events are written after the status they explain: waited for, not read at once.
    wait_for("NICPlugged events", LIMIT, || {
        let plugged = events(c, "NICPlugged");
        if plugged.len() >= 2
            && plugged
                .iter()
                .any(|e| e["involvedObject"]["uid"] == web_uid && e["type"] == "Normal")
        {
            Ok(())
        } else {
            Err(format!("{plugged:?}"))
        }
    });
    assert!(
        c.pod(t, "elsewhere").unwrap()["metadata"]["annotations"]
            .get("hotnic.io/nic-status")
            .is_none()
    );

    // Unplug eth2 while other writers keep changing the pod: conflicts are retried.
    if let Some(fake) = c.fake() {
        fake.inject_conflicts(2);
    }
    let writer = c.real().map(|real| ConcurrentWriter::start(real, t, "web"));
    let mut web2 = multus_pod(
        t,
        "web",
        &format!("{t}-web-uid"),
        &[("brnet", "eth1", "02:00:00:30:00:01")],
    );
    web2["spec"]["nodeName"] = json!(node_name);
    c.put_pod(web2);
    let mut p = wait_nic_status(c, t, "web", &[("eth1", "Ready")]);
    if let Some(writer) = writer {
        let last = writer.stop();
        p = c.pod(t, "web").unwrap();
        assert_eq!(
            p["metadata"]["labels"]["other-writer"],
            last.to_string(),
            "the other writer's last change survives"
        );
        assert_eq!(
            states(&ann(&p, "hotnic.io/nic-status").unwrap()),
            [("eth1".to_string(), "Ready".to_string())],
            "the agent's status survives the other writer"
        );
        // Whether a write met the other writer is up to timing; say how often it did.
        let conflicts = agent.log().matches("status write conflicted").count();
        eprintln!(
            "real cluster: {conflicts} status writes conflicted with the other writer and were retried"
        );
    }
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
    wait_nic_status(c, t, "vm", &[("eth1", "Ready"), ("eth2", "Failed")]);
    // status.nicStatuses goes through pods/status after the annotation: waited for too.
    let vm = wait_for("status.nicStatuses of the VM pod", LIMIT, || {
        let vm = c.pod(t, "vm").ok_or("no pod")?;
        let s = &vm["status"]["nicStatuses"];
        if s[0]["state"] == "Ready" && s[1]["state"] == "Failed" {
            Ok(vm)
        } else {
            Err(format!("{s}"))
        }
    });
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
    let missing = format!("{t}/missing");
    wait_for("NICPlugFailed event", LIMIT, || {
        let failed = events(c, "NICPlugFailed");
        if failed.iter().any(|e| {
            e["type"] == "Warning" && e["message"].as_str().unwrap_or("").contains(&missing)
        }) {
            Ok(())
        } else {
            Err(format!("{failed:?}"))
        }
    });
}

/// A template resolver that counts its calls: with `--cri-socket` each would be a CRI lookup
/// (`ListPodSandbox` + `PodSandboxStatus`).
struct CountingResolver {
    inner: TemplateResolver,
    calls: AtomicUsize,
}

impl NetnsResolver for CountingResolver {
    fn netns<'a>(&'a self, pod: &'a PodRef) -> NetnsFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.netns(pod)
    }
}

/// A CNI plugin directory whose `bridge` and `host-local` append every call (`$CNI_COMMAND`,
/// plugin, `$CNI_IFNAME`) to `dir/calls` and then run the real plugin.
fn counting_plugins(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls");
    std::fs::write(&log, "").unwrap();
    for plugin in ["bridge", "host-local"] {
        let path = bin.join(plugin);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$CNI_COMMAND {plugin} $CNI_IFNAME\" >> {}\nexec /usr/lib/cni/{plugin} \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, log)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The controller does no work for a pod whose desired NICs did not change: 100 watch events
/// that change only a label (and so the resourceVersion), with timer resyncs every 300 ms among
/// them, cause no network-namespace lookup (a CRI call with the CRI runtime), no CNI call and no
/// status write; an edit of the NICs right after is plugged at once, still without a lookup (the
/// namespace is known while it stays the same). The agent runs in-process (its own engine, the
/// Kubernetes backend) against the fake API server, which records every patch; the plugins are
/// the real ones behind wrappers that count their calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_pods_cost_no_lookup_no_cni_call_and_no_status_write() {
    require_root_and_plugins();
    let node = Node::new();
    let fake = Fake::new();
    let url = fake.serve().await;
    let t = format!("q{}", unique());
    let pod_ns = Netns::new("quiet");
    let node_name = format!("node-{}", unique());
    fake.put_nad(node.bridge_nad(&t, "brnet", "hnbrq", "10.111.0.0/24"));
    let mut web = multus_pod(
        &t,
        "web",
        &pod_ns.name,
        &[("brnet", "eth1", "02:00:00:33:00:01")],
    );
    web["spec"]["nodeName"] = json!(node_name);
    fake.put_pod(web);

    let agent = InProcessAgent::start(&node, &url, &node_name, Duration::from_millis(300)).await;
    let (resolver, cni_log) = (agent.resolver.clone(), agent.cni_log.clone());

    let cluster: &dyn Cluster = &fake;
    wait_nic_status(cluster, &t, "web", &[("eth1", "Ready")]);
    let web_path = format!("pods/{t}/web");
    let ours = |patches: Vec<(String, Value)>| {
        patches
            .into_iter()
            .filter(|(p, _)| p.starts_with(&web_path))
            .map(|(_, b)| b)
            .collect::<Vec<_>>()
    };
    // Every write tried (conflicting ones too), and every write applied.
    let writes = || ours(fake.patches());
    let applied = || ours(fake.accepted_patches());
    // Settle: the agent's own status writes come back as watch events too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lookups = resolver.calls.load(Ordering::SeqCst);
    assert_eq!(lookups, 1, "the namespace is looked up once");
    let cni = lines(&cni_log);
    assert_eq!(cni, ["ADD bridge eth1", "ADD host-local eth1"]);
    let written = writes().len();
    let applied_before = applied().len();
    let events = fake.events().len();

    // 100 events that change nothing the agent acts on, over ~2 s (about 7 resyncs).
    for i in 0..100 {
        let mut p = fake.pod(&t, "web").unwrap();
        p["metadata"]["labels"] = json!({"unrelated": i.to_string()});
        fake.put_pod(p);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        resolver.calls.load(Ordering::SeqCst),
        lookups,
        "no namespace lookup (CRI call)"
    );
    assert_eq!(lines(&cni_log), cni, "no CNI call");
    assert_eq!(writes().len(), written, "no status write: {:?}", writes());
    assert_eq!(fake.events().len(), events, "no Event");

    // An edit of the NICs after them is plugged at once.
    let edited = Instant::now();
    let mut web2 = fake.pod(&t, "web").unwrap();
    let two = json!([{"name": "brnet", "interface": "eth1", "mac": "02:00:00:33:00:01"},
                     {"name": "brnet", "interface": "eth2", "mac": "02:00:00:33:00:02"}]);
    web2["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!(two.to_string());
    fake.put_pod(web2);
    wait_nic_status(cluster, &t, "web", &[("eth1", "Ready"), ("eth2", "Ready")]);
    let took = edited.elapsed();
    eprintln!("NIC edit after 100 unchanged events: Ready in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(pod_ns.links().contains(&"eth2".to_string()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        resolver.calls.load(Ordering::SeqCst),
        lookups,
        "the known namespace is used"
    );
    let mut want = cni.clone();
    want.extend([
        "ADD bridge eth2".to_string(),
        "ADD host-local eth2".to_string(),
    ]);
    assert_eq!(lines(&cni_log), want, "only eth2's ADD");
    // Exactly two writes: eth2 InProgress, then Ready. (A resync that runs before the watch
    // brought back the agent's own last write may try once more with the older resourceVersion;
    // the API server refuses that, and nothing is written.)
    let new: Vec<String> = applied()[applied_before..]
        .iter()
        .map(|b| b["metadata"]["annotations"]["hotnic.io/nic-status"].to_string())
        .collect();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(
        new[0].contains("InProgress") && !new[1].contains("InProgress"),
        "{new:?}"
    );
    assert_eq!(fake.events().len(), events + 1, "one NICPlugged");

    agent.stop().await;
}

/// `hotnic agent --node` in-process (the engine with the Kubernetes backend) against the fake API
/// server at `url`, with a counting resolver (`/run/netns/{uid}`) and counting plugins.
struct InProcessAgent {
    resolver: Arc<CountingResolver>,
    cni_log: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessAgent {
    /// Starts it with `--resync resync`, `--backoff-base` and `--backoff-max` `resync` too.
    async fn start(node: &Node, url: &str, node_name: &str, resync: Duration) -> Self {
        let (cni_bin, cni_log) = counting_plugins(node.dir.path());
        let mut invoker = Invoker::new(&cni_bin.display().to_string(), Duration::from_secs(20));
        invoker.plugin_netns = Some(node.ns.path());
        let resolver = Arc::new(CountingResolver {
            inner: TemplateResolver::new("/run/netns/{uid}"),
            calls: AtomicUsize::new(0),
        });
        let rec = Reconciler::new(
            invoker,
            ResultCache::new(&node.state_dir()),
            resolver.clone(),
            Arc::new(Metrics::new()),
        );
        let timing = Timing {
            poll: Duration::from_millis(100),
            resync,
            backoff: Backoff {
                base: resync,
                max: resync,
            },
            parallel: 4,
        };
        let client = KubeCluster::client_from(&kubeconfig(node.dir.path(), url)).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let node_name = node_name.to_string();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            hotnic::agent::kube::run_with_client(&rec, client, &node_name, &timing, stop).await;
        });
        Self {
            resolver,
            cni_log,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// A NIC on a network that does not exist fails and waits for its retry; creating the
/// NetworkAttachmentDefinition (seen through the agent's watch of them) plugs it at once, long
/// before the retry (an hour away here) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_network_created_later_is_plugged_at_once_not_at_the_next_retry() {
    require_root_and_plugins();
    let node = Node::new();
    let fake = Fake::new();
    let url = fake.serve().await;
    let t = format!("l{}", unique());
    let pod_ns = Netns::new("late");
    let node_name = format!("node-{}", unique());
    let mut web = multus_pod(
        &t,
        "web",
        &pod_ns.name,
        &[("later", "eth1", "02:00:00:34:00:01")],
    );
    web["spec"]["nodeName"] = json!(node_name);
    fake.put_pod(web);
    let agent = InProcessAgent::start(&node, &url, &node_name, Duration::from_secs(3600)).await;
    let cluster: &dyn Cluster = &fake;
    let failed = wait_nic_status(cluster, &t, "web", &[("eth1", "Failed")]);
    let reason = ann(&failed, "hotnic.io/nic-status").unwrap()[0]["reason"].clone();
    assert!(reason.as_str().unwrap().contains("not found"), "{reason}");
    let created = Instant::now();
    fake.put_nad(node.bridge_nad(&t, "later", "hnbrl", "10.112.0.0/24"));
    wait_nic_status(cluster, &t, "web", &[("eth1", "Ready")]);
    eprintln!("network created: NIC Ready {:?} later", created.elapsed());
    assert!(created.elapsed() < Duration::from_secs(10));
    assert!(pod_ns.links().contains(&"eth1".to_string()));
    agent.stop().await;
}
