//! Cluster-wide MAC uniqueness through a real kube-apiserver (the real-cluster tier; SKIPPED
//! without `HOTNIC_TEST_ETCD` / `HOTNIC_TEST_KUBE_APISERVER`): two `hotnic webhook` replicas
//! keeping `MACAddress` claims (`--allocator kubernetes`, each its own claim cache and cursor), a
//! round-robin TCP proxy in front of both (the Service), the webhook configurations `manifests/`
//! renders pointed at the proxy. 1,000 pods with three NICs each are created through the API
//! server by 32 concurrent clients in a 4,096-address range while one replica is killed and
//! restarted halfway: no MAC is on two pods, every MAC has its pod's claim; a dry-run writes no
//! claim; after the pods are deleted, one repair pass leaves no claim. The same creates through a
//! replica with the in-memory allocator give the latency baseline (the added cost of one claim
//! write per MAC). A test binary of its own: a cluster of its own.
//!
//! Also here: the repair loop under its Lease (one holder, passes that bind claims by
//! themselves) and the repair pass's duplicate report and adoption.

#[path = "support/kube_cluster.rs"]
mod kube_cluster;
#[allow(dead_code)]
#[path = "manifests_support/kustomize.rs"]
mod kustomize;
#[path = "support/replicas.rs"]
mod replicas;
#[path = "support/webhook_config.rs"]
mod webhook_config;
#[path = "webhook_support/mod.rs"]
mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_cluster::KubeCluster;
use replicas::{Proxy, SharedCerts};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webhook_config::{Hotnic, NETWORKS};

const PODS: usize = 1_000;

/// The tests of this binary share one cluster and count its claims: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CLIENTS: usize = 32;
const NICS: usize = 3;
/// 4,096 addresses (02:00:00:00:00:00 is never handed out: 4,095 usable).
const RANGE: &str = "02:00:00:00:00:00-02:00:00:00:0f:ff";

/// A replica serving `certs`, its claims in `cluster` over `RANGE` (`kube`), or in memory.
async fn replica(cluster: &KubeCluster, certs: &SharedCerts, kube: bool) -> Hotnic {
    let (cert, key) = certs.paths();
    let tweak = move |c: &mut hotnic::webhook::Config| {
        c.tls_cert = cert;
        c.tls_key = key;
        c.mac_range = RANGE.parse().unwrap();
    };
    if kube {
        Hotnic::start_in(cluster, tweak).await
    } else {
        let h = Hotnic::start_with(tweak, None);
        h.wait_ready().await;
        h
    }
}

fn pod(i: usize, generated: bool) -> Pod {
    let nets: Vec<Value> = (1..=NICS)
        .map(|n| json!({"name": "bridge-conf", "interface": format!("eth{n}")}))
        .collect();
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"annotations": {NETWORKS: Value::Array(nets).to_string()}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.example/app:1.0"}]}});
    if generated {
        p["metadata"]["generateName"] = json!(format!("gen{i}-"));
    } else {
        p["metadata"]["name"] = json!(format!("pod-{i}"));
    }
    serde_json::from_value(p).unwrap()
}

fn macs_of(p: &Pod) -> Vec<String> {
    let raw = &p.metadata.annotations.as_ref().unwrap()[NETWORKS];
    let els: Vec<Value> = serde_json::from_str(raw).unwrap();
    els.iter()
        .filter_map(|e| e["mac"].as_str().map(str::to_string))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// What a run of creates gave.
struct Run {
    latencies: Vec<Duration>,
    retries: usize,
    elapsed: Duration,
}

impl Run {
    fn describe(&self, what: &str) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        format!(
            "{what}: {} pods in {:.1} s, create latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, {} retried",
            l.len(),
            self.elapsed.as_secs_f64(),
            percentile(&l, 0.5).as_secs_f64() * 1e3,
            percentile(&l, 0.9).as_secs_f64() * 1e3,
            percentile(&l, 0.99).as_secs_f64() * 1e3,
            self.retries
        )
    }
}

/// Creates `n` pods in `ns` from `CLIENTS` concurrent clients (every fourth with
/// `generateName`); a create that fails because a webhook call failed (a replica killed
/// mid-request) is retried. `halfway` runs once when half of them are created.
async fn create_pods(
    client: &kube::Client,
    ns: &str,
    n: usize,
    halfway: Option<Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>>,
) -> Run {
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(Mutex::new(halfway));
    let hook: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let (done, retries, halfway, hook) =
            (done.clone(), retries.clone(), halfway.clone(), hook.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (c..n).step_by(CLIENTS) {
                let p = pod(i, i % 4 == 3);
                let mut attempt = 0;
                loop {
                    let t = Instant::now();
                    match pods.create(&PostParams::default(), &p).await {
                        Ok(_) => {
                            if attempt == 0 {
                                lat.push(t.elapsed());
                            }
                            break;
                        }
                        // A create retried after its first try got through.
                        Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => break,
                        Err(e) if attempt < 20 => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            if attempt == 1 {
                                let why = match &e {
                                    kube::Error::Api(s) => s.message.clone(),
                                    other => other.to_string(),
                                };
                                eprintln!("pod {i}: {why}; retrying");
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("pod {i}: still failing after {attempt} tries: {e:?}"),
                    }
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == n / 2
                    && let Some(f) = halfway.lock().unwrap().take()
                {
                    *hook.lock().unwrap() = Some(f());
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let hook = hook.lock().unwrap().take();
    if let Some(h) = hook {
        h.await.unwrap();
    }
    Run {
        latencies,
        retries: retries.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

async fn delete_all(client: &kube::Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while !pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pods not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn claims(cluster: &KubeCluster) -> Vec<Value> {
    let v = cluster
        .must("GET", "/apis/hotnic.io/v1alpha1/macaddresses", None, None)
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

/// A sample of a replica's metrics (`name` with labels, e.g. `..._sum`).
async fn metric(h: &Hotnic, name: &str) -> f64 {
    let text = reqwest::get(h.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_a_killed_one_and_a_thousand_pods_never_share_a_mac() {
    let Some(cluster) = kube_cluster::cluster_or_skip(
        "two_replicas_a_killed_one_and_a_thousand_pods_never_share_a_mac",
    ) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let admin = cluster.admin_client().await;
    let certs = SharedCerts::new();
    let proxy = Proxy::start().await;
    // The baseline replica first (in-memory claims), so the configurations can go active.
    let memory = replica(cluster, &certs, false).await;
    proxy.set(&[memory.addr]);
    let base = format!("https://127.0.0.1:{}", proxy.addr.port());
    let configs =
        webhook_config::pointed_at_url(webhook_config::rendered(), &base, &certs.ca_bundle);
    webhook_config::register(cluster, &configs).await;
    webhook_config::wait_active(cluster, &memory).await;

    // Baseline: the same creates, no claim writes.
    let base_ns = cluster.namespace("claims-base").await;
    let baseline = create_pods(&admin, &base_ns, 300, None).await;
    eprintln!("{}", baseline.describe("in-memory allocator (baseline)"));
    delete_all(&admin, &base_ns).await;

    // Two replicas with MACAddress claims behind the proxy.
    let a = Arc::new(replica(cluster, &certs, true).await);
    let b = replica(cluster, &certs, true).await;
    proxy.set(&[a.addr, b.addr]);
    memory.stop();
    let ns = cluster.namespace("claims").await;
    let restarted: Arc<tokio::sync::OnceCell<Hotnic>> = Arc::default();
    let halfway: Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send> = {
        let (a, b_addr, restarted, proxy) = (a.clone(), b.addr, restarted.clone(), proxy.clone());
        let paths = certs.paths();
        Box::new(move || {
            tokio::spawn(async move {
                let t = Instant::now();
                // Killed as SIGKILL kills: its connections cut first (in-flight reviews
                // unanswered, no answer from it after that), then the replica itself, its
                // cache and cursor gone.
                proxy.cut(a.addr).await;
                tokio::task::spawn_blocking(move || a.kill()).await.unwrap();
                let again = replica_with(cluster, paths).await;
                proxy.set(&[again.addr, b_addr]);
                eprintln!(
                    "replica A killed and a new one ready behind the proxy in {:.2} s",
                    t.elapsed().as_secs_f64()
                );
                let _ = restarted.set(again);
            })
        })
    };
    let run = create_pods(&admin, &ns, PODS, Some(halfway)).await;
    eprintln!(
        "{}",
        run.describe("MACAddress claims, 2 replicas, one killed halfway")
    );
    let a2 = restarted.get().expect("the replica was restarted");

    // No MAC on two pods; every pod's MACs claimed for it.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let stored = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(stored.len(), PODS);
    let mut by_mac: HashMap<String, Vec<String>> = HashMap::new();
    for p in &stored {
        let macs = macs_of(p);
        assert_eq!(macs.len(), NICS, "{:?}", p.metadata.name);
        for m in macs {
            by_mac
                .entry(m)
                .or_default()
                .push(p.metadata.name.clone().unwrap());
        }
    }
    let duplicates: Vec<_> = by_mac.iter().filter(|(_, ps)| ps.len() > 1).collect();
    eprintln!(
        "{} MACs on {} pods: {} duplicates",
        by_mac.len(),
        stored.len(),
        duplicates.len()
    );
    assert!(
        duplicates.is_empty(),
        "MACs on several pods: {duplicates:?}"
    );
    let all = claims(cluster).await;
    let owner_of: BTreeMap<String, Value> = all
        .iter()
        .map(|c| {
            (
                c["spec"]["address"].as_str().unwrap().to_string(),
                c["spec"]["owner"].clone(),
            )
        })
        .collect();
    for p in &stored {
        let name = p.metadata.name.clone().unwrap();
        let token = p
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("hotnic.io/claim-token");
        for m in macs_of(p) {
            let o = owner_of
                .get(&m)
                .unwrap_or_else(|| panic!("{m} of {name}: no claim"));
            let mine = o["name"] == json!(name) || token.is_some_and(|t| o["token"] == json!(t));
            assert!(mine, "{m} of {name} is claimed for {o}");
        }
    }
    let leaked_now = all.len() - by_mac.len();
    let conflicts = metric(&b, "hotnic_webhook_mac_claim_conflicts_total").await
        + metric(a2, "hotnic_webhook_mac_claim_conflicts_total").await;
    let alloc_sum = metric(&b, "hotnic_webhook_mac_allocation_duration_seconds_sum").await;
    let alloc_n = metric(&b, "hotnic_webhook_mac_allocation_duration_seconds_count").await;
    eprintln!(
        "{} claims for {} MACs in use ({leaked_now} of requests that did not finish, for the repair loop); \
         {conflicts} candidates retried after a conflict; replica B: {alloc_n} reviews claimed MACs, mean {:.2} ms each",
        all.len(),
        by_mac.len(),
        alloc_sum / alloc_n.max(1.0) * 1e3,
    );

    // A dry-run writes no claim and answers the same shape.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answer = pods.create(&dry, &pod(PODS + 1, false)).await.unwrap();
    let dry_macs = macs_of(&answer);
    assert_eq!(dry_macs.len(), NICS);
    assert!(
        dry_macs.iter().all(|m| !by_mac.contains_key(m)),
        "{dry_macs:?}"
    );
    assert_eq!(
        claims(cluster).await.len(),
        all.len(),
        "a dry-run wrote a claim"
    );

    // Deleted, one repair pass: no claim left.
    let t = Instant::now();
    delete_all(&admin, &ns).await;
    let repairer = webhook_config::repairer(&b, Duration::ZERO).await;
    let report = repairer.pass().await.unwrap();
    eprintln!(
        "pods deleted, one repair pass in {:.2} s: {report:?}",
        t.elapsed().as_secs_f64()
    );
    let left = claims(cluster).await;
    assert!(
        left.is_empty(),
        "{} claims leaked: {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
    let (b_l, base_l) = {
        let mut x = run.latencies.clone();
        x.sort();
        let mut y = baseline.latencies.clone();
        y.sort();
        (x, y)
    };
    eprintln!(
        "added latency per create (3 MACs, one claim write each): p50 {:+.1} ms, p99 {:+.1} ms",
        (percentile(&b_l, 0.5).as_secs_f64() - percentile(&base_l, 0.5).as_secs_f64()) * 1e3,
        (percentile(&b_l, 0.99).as_secs_f64() - percentile(&base_l, 0.99).as_secs_f64()) * 1e3
    );
    b.stop();
    a2.stop();
}

async fn replica_with(cluster: &'static KubeCluster, (cert, key): (PathBuf, PathBuf)) -> Hotnic {
    Hotnic::start_in(cluster, move |c| {
        c.tls_cert = cert;
        c.tls_key = key;
        c.mac_range = RANGE.parse().unwrap();
    })
    .await
}

/// The repair loop as the webhook runs it: one replica holds the Lease and passes bind claims by
/// themselves; a MAC two pods carry without claims (from before hotnic: created in a namespace
/// hotnic does not see) is adopted for the older one and reported on both as a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_repairs_adopts_and_reports_duplicates() {
    let Some(cluster) =
        kube_cluster::cluster_or_skip("the_lease_holder_repairs_adopts_and_reports_duplicates")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let admin = cluster.admin_client().await;
    // Two pods in hotnic-system (no webhook sees it) with the same static MAC.
    cluster.ensure_namespace("hotnic-system").await;
    let sys: Api<Pod> = Api::namespaced(admin.clone(), "hotnic-system");
    let mac = "02:dd:00:00:00:01";
    for name in ["dup-old", "dup-young"] {
        let p: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {NETWORKS:
                format!(r#"[{{"name":"bridge-conf","interface":"eth1","mac":"{mac}"}}]"#)}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
        sys.create(&PostParams::default(), &p).await.unwrap();
        // creationTimestamp has one-second resolution: make "old" older.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let replicas: Vec<Hotnic> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(
                Hotnic::start_in(cluster, |c| {
                    if let hotnic::webhook::AllocatorConfig::Kubernetes(k) = &mut c.allocator {
                        k.repair = Some(hotnic::webhook::RepairSettings {
                            interval: Duration::from_millis(500),
                            grace: Duration::from_secs(60),
                            lease_namespace: "hotnic-system".into(),
                            lease_name: hotnic::webhook::REPAIR_LEASE.into(),
                            lease_duration: Duration::from_secs(3),
                            identity: format!("replica-{}", rand_suffix()),
                        });
                    }
                })
                .await,
            );
        }
        v
    };
    let claim_path = format!(
        "/apis/hotnic.io/v1alpha1/macaddresses/{}",
        mac.replace(':', "-")
    );
    let start = Instant::now();
    let claim = loop {
        if let Ok((200, v)) = cluster.request("GET", &claim_path, None, None).await {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no adoption after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "adopted by the lease holder's repair loop after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(claim["spec"]["owner"]["name"], "dup-old", "{claim}");
    assert!(claim["spec"]["owner"]["uid"].is_string(), "{claim}");
    let lease = cluster
        .must(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/hotnic-system/leases/hotnic-webhook-repair",
            None,
            None,
        )
        .await;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(holder.starts_with("replica-"), "{lease}");
    // Both pods get a DuplicateMAC Warning naming the other.
    let start = Instant::now();
    loop {
        let evs = cluster
            .must(
                "GET",
                "/apis/events.k8s.io/v1/namespaces/hotnic-system/events",
                None,
                None,
            )
            .await;
        let dup: Vec<&Value> = evs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "DuplicateMAC")
            .collect();
        let on = |n: &str| dup.iter().any(|e| e["regarding"]["name"] == n);
        if on("dup-old") && on("dup-young") {
            let note = dup[0]["note"].as_str().unwrap();
            assert!(
                note.contains(mac) && note.contains("hotnic never rewrites a MAC"),
                "{note}"
            );
            assert_eq!(dup[0]["type"], "Warning");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no DuplicateMAC events: {evs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dups = metric(&replicas[0], "hotnic_webhook_mac_duplicates").await
        + metric(&replicas[1], "hotnic_webhook_mac_duplicates").await;
    assert!(dups >= 1.0, "the lease holder reports the duplicate");
    // Deleting the older pod: its claim is released by the loop (its owner is gone) and adopted
    // again for the other carrier on a later pass.
    sys.delete("dup-old", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        if let Ok((200, v)) = cluster.request("GET", &claim_path, None, None).await
            && v["spec"]["owner"]["name"] == "dup-young"
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not moved to dup-young"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sys.delete("dup-young", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    // And once both are gone, no claim is left.
    let start = Instant::now();
    while let Ok((200, _)) = cluster.request("GET", &claim_path, None, None).await {
        assert!(start.elapsed() < Duration::from_secs(20), "not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &replicas {
        r.stop();
    }
}

fn rand_suffix() -> String {
    format!(
        "{:08x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    )
}
