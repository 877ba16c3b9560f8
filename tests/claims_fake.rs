//! The scenario of `tests/claims_kube.rs` where no kube-apiserver binary is at hand: the
//! `MACAddress` API is an in-test server (tests/support/fake_claims.rs: create-if-absent with 409
//! AlreadyExists, get, list, watch, delete, patch), and the test plays the API server's part in
//! admission: every pod create is a `/mutate` review, the patch applied, a `/validate` review of
//! the result (with the name a `generateName` gets and a uid), and the pod stored when allowed.
//! Two real `hotnic webhook` replicas (real TLS, `--allocator kubernetes` against the fake, each
//! its own cache and cursor) behind a round-robin TCP proxy; 1,000 pods with three NICs from 32
//! concurrent clients in a 4,096-address range; one replica killed halfway (as SIGKILL does: its
//! connections cut at the proxy, then its runtime dropped) and restarted. Then:
//! no MAC on two pods, every MAC claimed for its pod, a dry-run writes no claim, and after the
//! pods are deleted one repair pass leaves no claim. Also: a replica whose next candidates another
//! writer has just claimed, unseen by its watch, claims elsewhere after the first conflict. Runs
//! always (no binaries needed).

#[path = "support/fake_claims.rs"]
mod fake_claims;
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

use base64::Engine;
use fake_claims::FakeClaims;
use replicas::{Proxy, SharedCerts};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use webhook_config::{Hotnic, NETWORKS};

const PODS: usize = 1_000;
const CLIENTS: usize = 32;
const NICS: usize = 3;
const RANGE: &str = "02:00:00:00:00:00-02:00:00:00:0f:ff";

fn replica(kubeconfig: PathBuf, (cert, key): (PathBuf, PathBuf)) -> Hotnic {
    let kc = kubeconfig.clone();
    Hotnic::start_with(
        move |c| {
            c.tls_cert = cert;
            c.tls_key = key;
            c.mac_range = RANGE.parse().unwrap();
            c.allocator =
                hotnic::webhook::AllocatorConfig::Kubernetes(hotnic::webhook::KubeSettings {
                    kubeconfig: Some(kc),
                    api_timeout: Duration::from_secs(5),
                    repair: None,
                });
        },
        Some(kubeconfig),
    )
}

fn pod(i: usize) -> Value {
    let nets: Vec<Value> = (1..=NICS)
        .map(|n| json!({"name": "bridge-conf", "interface": format!("eth{n}")}))
        .collect();
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "scenario", "annotations": {NETWORKS: Value::Array(nets).to_string()}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}});
    if i % 4 == 3 {
        p["metadata"]["generateName"] = json!(format!("gen{i}-"));
    } else {
        p["metadata"]["name"] = json!(format!("pod-{i}"));
    }
    p
}

fn review(uid: String, op_object: &Value, name: &str, dry_run: bool) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "scenario", "name": name, "operation": "CREATE",
        "object": op_object, "oldObject": null, "dryRun": dry_run,
        "userInfo": {"username": "test"}}})
}

/// What the API server does with a create: mutate, apply, validate; `Ok(Ok(stored))` when
/// admitted, `Ok(Err(denial))` when denied (the phase, the review uid and the whole `status`:
/// code, reason, message, causes), `Err` when a webhook call failed (a killed replica).
async fn admit(
    client: &reqwest::Client,
    base: &str,
    mut obj: Value,
    n: usize,
    dry_run: bool,
) -> Result<Result<Value, String>, String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let call = |path: &'static str, body: Value| async move {
        let r = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        if r.status() != 200 {
            return Err(format!("{path}: HTTP {}", r.status()));
        }
        let v: Value = r.json().await.map_err(|e| format!("{path}: {e}"))?;
        Ok::<Value, String>(v["response"].clone())
    };
    let denied = |path: &str, uid: String, r: &Value| {
        Err(format!(
            "{path} (review {uid}) denied: code {}, reason {}, message {:?}, causes {}",
            r["status"]["code"],
            r["status"]["reason"],
            r["status"]["message"],
            r["status"]["details"]["causes"]
        ))
    };
    let m = call("/mutate", review(format!("m{n}"), &obj, &name, dry_run)).await?;
    if m["allowed"] != true {
        return Ok(denied("/mutate", format!("m{n}"), &m));
    }
    if let Some(p) = m["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    let name = if name.is_empty() {
        format!(
            "{}{:05x}",
            obj["metadata"]["generateName"].as_str().unwrap(),
            n
        )
    } else {
        name
    };
    obj["metadata"]["name"] = json!(name);
    obj["metadata"]["uid"] = json!(format!("uid-{n}"));
    let v = call("/validate", review(format!("v{n}"), &obj, &name, dry_run)).await?;
    if v["allowed"] != true {
        return Ok(denied("/validate", format!("v{n}"), &v));
    }
    Ok(Ok(obj))
}

fn macs_of(p: &Value) -> Vec<String> {
    let els: Vec<Value> =
        serde_json::from_str(p["metadata"]["annotations"][NETWORKS].as_str().unwrap()).unwrap();
    els.iter()
        .filter_map(|e| e["mac"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_a_killed_one_and_a_thousand_pods_never_share_a_mac_without_kube_apiserver() {
    let fake = FakeClaims::new();
    let url = fake.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_claims::kubeconfig(dir.path(), &url);
    let certs = SharedCerts::new();
    let a = Arc::new(replica(kubeconfig.clone(), certs.paths()));
    let b = replica(kubeconfig.clone(), certs.paths());
    a.wait_ready().await;
    b.wait_ready().await;
    let proxy = Proxy::start().await;
    proxy.set(&[a.addr, b.addr]);
    let client = webhook_support::client_for(proxy.addr, &[&certs.ca_pem], |b| b.http1_only());
    let base = format!("https://localhost:{}", proxy.addr.port());

    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let restarted: Arc<tokio::sync::OnceCell<Hotnic>> = Arc::default();
    let restart_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, fake, done, retries) = (
            client.clone(),
            base.clone(),
            fake.clone(),
            done.clone(),
            retries.clone(),
        );
        let (a, restarted, restart_task, proxy, kc, paths, b_addr) = (
            a.clone(),
            restarted.clone(),
            restart_task.clone(),
            proxy.clone(),
            kubeconfig.clone(),
            certs.paths(),
            b.addr,
        );
        tasks.push(tokio::spawn(async move {
            for i in (c..PODS).step_by(CLIENTS) {
                let mut attempt = 0;
                loop {
                    match admit(&client, &base, pod(i), i * 100 + attempt, false).await {
                        Ok(Ok(p)) => {
                            fake.put_pod(p);
                            break;
                        }
                        Ok(Err(denial)) => panic!("pod {i} (attempt {attempt}): {denial}"),
                        Err(e) if attempt < 20 => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            if attempt == 1 {
                                eprintln!("pod {i}: {e}; retrying");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("pod {i}: {e}"),
                    }
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == PODS / 2 {
                    let (a, restarted, proxy, kc, paths) = (
                        a.clone(),
                        restarted.clone(),
                        proxy.clone(),
                        kc.clone(),
                        paths.clone(),
                    );
                    *restart_task.lock().unwrap() = Some(tokio::spawn(async move {
                        let t = Instant::now();
                        // Killed as SIGKILL kills: its connections cut first (no answer
                        // from it after that), then the replica itself.
                        proxy.cut(a.addr).await;
                        tokio::task::spawn_blocking(move || a.kill()).await.unwrap();
                        let again = replica(kc, paths);
                        again.wait_ready().await;
                        proxy.set(&[again.addr, b_addr]);
                        eprintln!(
                            "replica A killed and a new one ready in {:.2} s",
                            t.elapsed().as_secs_f64()
                        );
                        let _ = restarted.set(again);
                    }));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let restart = restart_task.lock().unwrap().take();
    restart.unwrap().await.unwrap();
    let elapsed = start.elapsed();

    let pods = fake.pods();
    assert_eq!(pods.len(), PODS);
    let mut by_mac: HashMap<String, Vec<String>> = HashMap::new();
    for p in &pods {
        let macs = macs_of(p);
        assert_eq!(macs.len(), NICS);
        for m in macs {
            by_mac
                .entry(m)
                .or_default()
                .push(p["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    let duplicates: Vec<_> = by_mac.iter().filter(|(_, v)| v.len() > 1).collect();
    let claims = fake.claims();
    let (created, conflicts) = fake.creates();
    eprintln!(
        "{PODS} pods admitted in {:.1} s through 2 replicas (one killed halfway), {} retried: {} MACs, {} duplicates; {} claims ({created} created, {conflicts} AlreadyExists)",
        elapsed.as_secs_f64(),
        retries.load(Ordering::Relaxed),
        by_mac.len(),
        duplicates.len(),
        claims.len(),
    );
    assert!(duplicates.is_empty(), "{duplicates:?}");
    let owner: HashMap<&str, &Value> = claims
        .iter()
        .map(|c| (c["spec"]["address"].as_str().unwrap(), &c["spec"]["owner"]))
        .collect();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let token = &p["metadata"]["annotations"]["hotnic.io/claim-token"];
        for m in macs_of(p) {
            let o = owner[m.as_str()];
            assert!(
                o["name"] == name || (!token.is_null() && o["token"] == *token),
                "{m} of {name}: claimed for {o}"
            );
        }
    }

    // A dry-run: the same shape, no claim written.
    let before = fake.claims().len();
    let dry = admit(&client, &base, pod(PODS + 1), 999_999, true)
        .await
        .unwrap()
        .unwrap_or_else(|denial| panic!("the dry-run: {denial}"));
    assert_eq!(macs_of(&dry).len(), NICS);
    assert_eq!(fake.claims().len(), before, "a dry-run wrote a claim");

    // Pods deleted, one repair pass: nothing left.
    fake.delete_pods();
    let admin = kube_cluster::KubeCluster::client_from(&kubeconfig).await;
    let report = hotnic::claims::Repairer::new(
        admin,
        hotnic::allocator::ScopeMode::Cluster,
        Duration::ZERO,
        "test",
    )
    .pass()
    .await
    .unwrap();
    eprintln!("one repair pass: {report:?}");
    assert!(
        fake.claims().is_empty(),
        "{} claims leaked",
        fake.claims().len()
    );
    b.stop();
    restarted.get().unwrap().stop();
}

/// A replica's next candidates all just claimed by another writer that its watch has not shown
/// it yet (another replica claiming next-fit at the same place, its watch behind on a busy
/// node): after the first such conflict it claims elsewhere in the range, instead of trailing
/// the other writer conflict after conflict (a review meets at most `MAX_CONFLICTS` rounds of
/// them before it is denied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_next_candidates_another_writer_just_claimed_claims_elsewhere() {
    use hotnic::allocator::{ClaimError, ClaimRequest, MacAllocator, MacRange, Owner, Scope};
    use hotnic::model::Mac;
    let fake = FakeClaims::new();
    let url = fake.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_claims::kubeconfig(dir.path(), &url);
    let client = kube_cluster::KubeCluster::client_from(&kubeconfig).await;
    // 2^20 addresses: a random place in it is clear of the other writer's 64.
    let range: MacRange = "02:00:00:00:00:00-02:00:00:0f:ff:ff".parse().unwrap();
    let alloc = Arc::new(hotnic::claims::KubeAllocator::new(
        client,
        range,
        hotnic::allocator::ScopeMode::Cluster,
        Duration::from_secs(5),
    ));
    let shutdown = hotnic::runtime::Shutdown::new();
    tokio::spawn(alloc.clone().watch(shutdown.clone()));
    let start = Instant::now();
    while !alloc.is_ready() {
        assert!(start.elapsed() < Duration::from_secs(10), "never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pod = |name: &str| Owner {
        kind: "Pod".into(),
        resource: "pods".into(),
        namespace: "scenario".into(),
        name: Some(name.into()),
        ..Owner::default()
    };
    // Where this replica's cursor is (just past a candidate asked for and not claimed), and the
    // 64 addresses from there claimed by another object, unseen by the watch.
    let probe = alloc.candidate(&Scope::Cluster, &|_| false).unwrap();
    let next = Mac::from_u64(range.next_fit(probe.to_u64() + 1, |_| false).unwrap());
    let ahead: Vec<Mac> = (0..64)
        .map(|k| Mac::from_u64(next.to_u64() + k))
        .filter(|m| range.contains(*m))
        .collect();
    let other = pod("other");
    for m in &ahead {
        let claim = hotnic::claims::MacAddress::new(&Scope::Cluster, *m, "eth1", &other);
        fake.put_claim_unwatched(serde_json::to_value(claim).unwrap());
    }

    // Candidate, claim, a conflict skipped: what a review does.
    let mine = hotnic::allocator::KnownOwner::new(pod("mine"));
    let mut conflicts = Vec::new();
    let got = loop {
        let mac = alloc
            .candidate(&Scope::Cluster, &|m| conflicts.contains(&m))
            .unwrap();
        let r = alloc
            .claim(ClaimRequest {
                owner: &mine,
                scope: &Scope::Cluster,
                mac,
                nic: "eth1",
                dry_run: false,
            })
            .await;
        match r {
            Ok(()) => break mac,
            Err(ClaimError::Conflict { .. }) => conflicts.push(mac),
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            conflicts.len() < 8,
            "{} conflicts in a row: {conflicts:?}",
            conflicts.len()
        );
    };
    assert!(!ahead.contains(&got), "{got} is the other's");
    assert_eq!(
        conflicts.first(),
        Some(&next),
        "the first candidate was the other's"
    );
    shutdown.start();
}
