//! hotnic's webhook configurations as `manifests/` renders them (the in-repo kustomize renderer),
//! pointed at an in-test `hotnic webhook` and registered with the real API server of the
//! real-cluster tier. Only `clientConfig` changes: the manifests' `service` becomes
//! `url: https://127.0.0.1:<port><the manifest's path>` and `caBundle` the in-test CA; rules,
//! selectors, matchConditions, timeouts, failure policies and side effects stay as shipped.
//!
//! The in-test hotnic keeps its MAC claims in the cluster (`--allocator kubernetes`): the
//! `MACAddress` CRD and the webhook's RBAC are installed from `manifests/base/`, and hotnic talks
//! to the API server as its own ServiceAccount `hotnic-system/hotnic-webhook` with exactly that
//! RBAC. It runs no repair loop of its own: the tests run repair passes when they need one.
//!
//! Used by `tests/webhook_kube.rs` and `tests/webhook_kube_outage.rs`, which include beside this
//! file, at their crate root, `kube_cluster` (support/kube_cluster.rs), `webhook_support`
//! (webhook_support/mod.rs) and `kustomize` (manifests_support/kustomize.rs).
#![allow(dead_code)]

use crate::kube_cluster::{KubeCluster, collection_path};
use crate::kustomize;
use crate::webhook_support::Server;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The configurations the manifests ship, in the order they are registered: the validating one
/// first, the mutating one last (see [`wait_active`]).
pub const CONFIGURATIONS: [(&str, &str); 2] = [
    ("ValidatingWebhookConfiguration", "hotnic"),
    ("MutatingWebhookConfiguration", "hotnic"),
];

/// The namespace [`wait_active`] probes in (dry-run only: nothing is ever created there).
pub const PROBE_NAMESPACE: &str = "hotnic-probe";

/// The Multus networks annotation.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// An in-test `hotnic webhook` (the real server, certificates from the `hotnic certs` code with
/// IP SAN 127.0.0.1) on a thread and runtime of its own, so that it outlives the runtimes of the
/// tests that use it (each `#[tokio::test]` has its own).
pub struct Hotnic {
    /// The TLS listener (`127.0.0.1:<ephemeral>`).
    pub addr: SocketAddr,
    /// The plain-HTTP admin listener.
    pub admin: SocketAddr,
    /// The CA that signed its serving certificate, PEM.
    pub ca_pem: String,
    /// The same, base64 (`caBundle`).
    pub ca_bundle: String,
    /// The kubeconfig it uses (the webhook's ServiceAccount), when it keeps claims in a cluster.
    pub kubeconfig: Option<PathBuf>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<bool>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Hotnic {
    /// Starts the server (in-memory MAC claims) and returns once it listens.
    pub fn start() -> Hotnic {
        Self::start_with(|_| {}, None)
    }

    /// Starts the server keeping its claims in `cluster` as the webhook's ServiceAccount (see the
    /// module docs); `tweak` adjusts the rest. Returns once its claims are synced (`/readyz`).
    pub async fn start_in(
        cluster: &KubeCluster,
        tweak: impl FnOnce(&mut hotnic::webhook::Config) + Send + 'static,
    ) -> Hotnic {
        let kubeconfig = webhook_identity(cluster).await;
        let kc = kubeconfig.clone();
        let h = Self::start_with(
            move |c| {
                c.allocator =
                    hotnic::webhook::AllocatorConfig::Kubernetes(hotnic::webhook::KubeSettings {
                        kubeconfig: Some(kc),
                        api_timeout: Duration::from_secs(5),
                        repair: None,
                    });
                tweak(c);
            },
            Some(kubeconfig),
        );
        h.wait_ready().await;
        h
    }

    /// Waits until `/readyz` answers 200 (at most 30 s).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(self.admin_url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the in-test hotnic is not ready after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the server with settings adjusted by `tweak`; `kubeconfig` is recorded for
    /// [`repairer`].
    pub fn start_with(
        tweak: impl FnOnce(&mut hotnic::webhook::Config) + Send + 'static,
        kubeconfig: Option<PathBuf>,
    ) -> Hotnic {
        let (info_tx, info_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let thread = std::thread::Builder::new()
            .name("hotnic-webhook".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the webhook's runtime");
                rt.block_on(async move {
                    // The pair is read at start; nothing rotates it here, so no reloads.
                    let mut server = Server::start_with(|c| {
                        c.cert_reload_interval = Duration::from_secs(3600);
                        tweak(c);
                    })
                    .await;
                    info_tx
                        .send((server.addr(), server.admin(), server.certs.clone()))
                        .unwrap();
                    // Loaded: the key need not wait on disk for a drop that, in a binary that
                    // never stops the server, does not come (a failed re-read keeps the pair).
                    let _ = std::fs::remove_dir_all(server.dir.path());
                    // A sender that is dropped (the process ends) never stops it; `false` kills
                    // it: the runtime is dropped with every connection and task in it.
                    if stop_rx.await == Ok(true) {
                        let mut running = server.running.take().unwrap();
                        running.shutdown();
                        running.wait().await;
                    }
                });
            })
            .expect("spawning the webhook thread");
        let (addr, admin, certs) = info_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the in-test hotnic webhook did not start");
        Hotnic {
            addr,
            admin,
            ca_bundle: certs.ca_bundle(),
            ca_pem: certs.ca_pem,
            kubeconfig,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// `https://127.0.0.1:PORT{path}`: what the API server is told to call.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Stops the server (graceful shutdown: not ready, a short still-answering delay, listener
    /// closed, connections drained) and returns once it is gone: its port refuses connections.
    /// Blocks the calling thread for well under a second.
    pub fn stop(&self) {
        self.end(true)
    }

    /// Kills the server: no drain, its runtime dropped with every connection and task in it
    /// (what a SIGKILL or a node loss does, nearly: while the tasks are torn down one by one, a
    /// review still in flight may run on to an answer from torn-down parts, which a killed
    /// process never sends; behind the proxy of support/replicas.rs, `Proxy::cut` it first).
    /// Returns once its port refuses connections.
    pub fn kill(&self) {
        self.end(false)
    }

    fn end(&self, graceful: bool) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(graceful);
        }
        if let Some(t) = self.thread.lock().unwrap().take() {
            t.join().expect("the webhook thread panicked");
        }
    }

    /// `hotnic_webhook_reviews_total` from the admin `/metrics`: label set → count.
    pub async fn reviews(&self) -> BTreeMap<String, u64> {
        let text = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .filter_map(|l| l.strip_prefix("hotnic_webhook_reviews_total{"))
            .map(|l| {
                let (labels, value) = l.rsplit_once("} ").expect("a sample line");
                let n: f64 = value.trim().parse().expect("a sample value");
                (labels.to_string(), n as u64)
            })
            .collect()
    }

    /// Every review hotnic answered, all endpoints, kinds, operations and verdicts.
    pub async fn reviews_total(&self) -> u64 {
        self.reviews().await.values().sum()
    }

    /// The reviews whose label set contains every one of `labels` (e.g. `endpoint="validate"`).
    pub async fn reviews_matching(&self, labels: &[&str]) -> u64 {
        self.reviews()
            .await
            .iter()
            .filter(|(k, _)| labels.iter().all(|l| k.split(',').any(|p| p == *l)))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The three webhook configurations `manifests/` renders to, in [`CONFIGURATIONS`] order.
pub fn rendered() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let objects = kustomize::render(&dir).expect("rendering manifests/");
    CONFIGURATIONS
        .iter()
        .map(|(kind, name)| {
            let found: Vec<&Value> = objects
                .iter()
                .filter(|o| o["kind"] == *kind && o["metadata"]["name"] == *name)
                .collect();
            assert_eq!(found.len(), 1, "manifests/ renders one {kind} {name}");
            found[0].clone()
        })
        .collect()
}

/// `configs` with every webhook's `clientConfig` pointed at `hotnic`: the manifest's service
/// becomes `url` with the same path, and `caBundle` the in-test CA. Nothing else changes.
pub fn pointed_at(configs: Vec<Value>, hotnic: &Hotnic) -> Vec<Value> {
    pointed_at_url(configs, &hotnic.url(""), &hotnic.ca_bundle)
}

/// The same, pointed at `base` (`https://127.0.0.1:PORT`) trusting `ca_bundle` (base64 PEM).
pub fn pointed_at_url(mut configs: Vec<Value>, base: &str, ca_bundle: &str) -> Vec<Value> {
    for c in &mut configs {
        let name = c["metadata"]["name"].clone();
        let webhooks = c["webhooks"].as_array_mut().expect("webhooks");
        assert!(!webhooks.is_empty(), "{name}: no webhooks");
        for w in webhooks {
            let cc = &w["clientConfig"];
            let path = cc["service"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: clientConfig.service.path: {cc}"));
            assert!(
                cc["caBundle"].as_str().is_some_and(|b| !b.is_empty()),
                "{name}: the rendered configuration carries a caBundle: {cc}"
            );
            w["clientConfig"] = json!({"url": format!("{base}{path}"), "caBundle": ca_bundle});
        }
    }
    configs
}

/// Registers `configs` as the admin, in order, and checks that the API server stored what
/// matters as sent (an API server without the match-conditions feature would drop them
/// silently, and then hotnic would see every pod).
pub async fn register(cluster: &KubeCluster, configs: &[Value]) {
    for c in configs {
        let collection = collection_path(c);
        let stored = cluster.must("POST", &collection, Some(c), None).await;
        let name = c["metadata"]["name"].as_str().unwrap();
        for (i, (sent, got)) in c["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .zip(stored["webhooks"].as_array().expect("stored webhooks"))
            .enumerate()
        {
            for key in [
                "name",
                "clientConfig",
                "rules",
                "matchConditions",
                "namespaceSelector",
                "objectSelector",
                "failurePolicy",
                "sideEffects",
                "timeoutSeconds",
                "matchPolicy",
                "admissionReviewVersions",
            ] {
                assert_eq!(
                    got[key], sent[key],
                    "{collection}/{name}: webhooks[{i}].{key} stored differently"
                );
            }
            if sent.get("reinvocationPolicy").is_some() {
                assert_eq!(got["reinvocationPolicy"], sent["reinvocationPolicy"]);
            }
        }
    }
}

/// Waits until the API server calls hotnic for both phases: a server-side dry-run create of a
/// Multus pod comes back with an injected MAC (the mutating configuration is active) and hotnic
/// counted a `/validate` review (the validating one is). Returns how long that took.
pub async fn wait_active(cluster: &KubeCluster, hotnic: &Hotnic) -> Duration {
    cluster.ensure_namespace(PROBE_NAMESPACE).await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": PROBE_NAMESPACE, "annotations": {
            NETWORKS: r#"[{"name":"probe-net","interface":"eth1"}]"#}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    });
    let path = format!("/api/v1/namespaces/{PROBE_NAMESPACE}/pods?dryRun=All");
    let start = Instant::now();
    let mut last;
    loop {
        match cluster.request("POST", &path, Some(&pod), None).await {
            Ok((201, v)) => {
                let nets = v["metadata"]["annotations"][NETWORKS]
                    .as_str()
                    .unwrap_or("");
                let mutated = nets.contains("\"mac\"");
                let validated = hotnic.reviews_matching(&[r#"endpoint="validate""#]).await > 0;
                if mutated && validated {
                    return start.elapsed();
                }
                last = format!("mutated: {mutated}, validated: {validated}, networks: {nets}");
            }
            other => last = format!("{other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API server does not call the in-test hotnic after 30 s (last: {last});\n{}",
            cluster.apiserver_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything at once: an in-test hotnic, the rendered configurations pointed at it,
/// registered, and active.
pub struct Active {
    /// The in-test webhook.
    pub hotnic: Hotnic,
    /// The configurations as registered.
    pub configs: Vec<Value>,
    /// From the registration to the first review of each phase.
    pub activation: Duration,
}

/// Installs what `--allocator kubernetes` needs from `manifests/base/` (the `MACAddress` CRD, the
/// webhook's ServiceAccount and RBAC in `hotnic-system`) and returns a kubeconfig that
/// authenticates as that ServiceAccount.
pub async fn webhook_identity(cluster: &KubeCluster) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base");
    let crd = std::fs::read_to_string(base.join("macaddress-crd.yaml")).unwrap();
    let crd: Value = serde_yaml::from_str(&crd).unwrap();
    cluster.install_crd(&crd).await;
    cluster.ensure_namespace("hotnic-system").await;
    let rbac = std::fs::read_to_string(base.join("webhook-rbac.yaml")).unwrap();
    // Parsed first: the YAML reader is not Send, and this runs inside spawned tasks too.
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&rbac)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    for v in docs.iter().filter(|v| !v.is_null()) {
        cluster.create(&collection_path(v), v).await;
    }
    let token = cluster
        .service_account_token("hotnic-system", "hotnic-webhook")
        .await;
    let path = cluster.dir.join("hotnic-webhook.kubeconfig");
    cluster.token_kubeconfig(&token, &path);
    path
}

/// A repairer with the webhook's own identity (its RBAC), as the webhook's repair loop runs it;
/// `grace` is how long a claim without its owner is kept.
pub async fn repairer(hotnic: &Hotnic, grace: Duration) -> hotnic::claims::Repairer {
    let kubeconfig = hotnic
        .kubeconfig
        .as_ref()
        .expect("hotnic keeps claims in a cluster");
    let client = crate::kube_cluster::KubeCluster::client_from(kubeconfig).await;
    hotnic::claims::Repairer::new(
        client,
        hotnic::allocator::ScopeMode::Cluster,
        grace,
        "in-test",
    )
}

/// Starts hotnic (claims in the cluster), registers the rendered configurations and waits until
/// they are active.
pub async fn activate(cluster: &KubeCluster) -> Active {
    let hotnic = Hotnic::start_in(cluster, |_| {}).await;
    let configs = pointed_at(rendered(), &hotnic);
    register(cluster, &configs).await;
    let activation = wait_active(cluster, &hotnic).await;
    eprintln!(
        "hotnic webhook at {} active in the API server after {:.2} s",
        hotnic.url(""),
        activation.as_secs_f64()
    );
    Active {
        hotnic,
        configs,
        activation,
    }
}
