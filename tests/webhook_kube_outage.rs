//! The blast radius of a hotnic outage, through a real kube-apiserver (the real-cluster tier,
//! SKIPPED without `HOTNIC_TEST_ETCD` / `HOTNIC_TEST_KUBE_APISERVER`): the webhook configurations
//! `manifests/` renders, pointed at an in-test hotnic (tests/support/webhook_config.rs), first
//! shown to work, then hotnic is stopped so that its port refuses connections. A test binary of
//! its own, hence a cluster of its own: nothing else may see hotnic gone.
//!
//! What the README's "If the webhook is down" promises: pods with NICs are refused (failurePolicy
//! Fail) with the webhook's name and the connection error; pods without NICs, pods in excluded
//! namespaces and deletions (no hotnic webhook sees DELETE) go through; labelling a namespace
//! `hotnic.io/ignore=true` is the emergency escape.

#[path = "support/kube_cluster.rs"]
mod kube_cluster;
#[allow(dead_code)]
#[path = "manifests_support/kustomize.rs"]
mod kustomize;
#[path = "support/webhook_config.rs"]
mod webhook_config;
#[path = "webhook_support/mod.rs"]
mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use webhook_config::NETWORKS;

const CAPACITY: &str = "hotnic.io/interface-capacity";
const NICS: &str = r#"[{"name":"bridge-conf","interface":"eth1"}]"#;

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    }))
    .unwrap()
}

fn nic_pod(name: &str) -> Pod {
    pod(name, json!({ NETWORKS: NICS }))
}

fn annotation(p: &Pod, key: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The API error of a request hotnic's outage refused: 500 InternalError naming the mutating
/// webhook and the refused connection (the API server does not retry it).
fn assert_refused(what: &str, result: Result<Pod, kube::Error>, port: u16, started: Instant) {
    let status = match result {
        Err(kube::Error::Api(s)) => s,
        other => panic!("{what}: expected a refusal while hotnic is down, got {other:?}"),
    };
    eprintln!(
        "{what}, refused in {} ms: {} {} {}",
        started.elapsed().as_millis(),
        status.code,
        status.reason,
        status.message
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError"),
        "{what}: {status:?}"
    );
    let m = &status.message;
    assert!(
        m.starts_with("Internal error occurred: failed calling webhook \"mutate.hotnic.io\": "),
        "{what}: {m}"
    );
    assert!(
        m.contains(&format!("https://127.0.0.1:{port}/mutate")) && m.contains("connection refused"),
        "{what}: {m}"
    );
    // A refused connection fails at once, well inside the 5 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{what}: took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_hotnic_down_only_nic_workloads_outside_excluded_namespaces_are_refused() {
    let Some(cluster) = kube_cluster::cluster_or_skip(
        "with_hotnic_down_only_nic_workloads_outside_excluded_namespaces_are_refused",
    ) else {
        return;
    };
    let active = webhook_config::activate(cluster).await;
    let client = cluster.admin_client().await;
    let ns = cluster.namespace("wo").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    cluster.ensure_namespace("hotnic-system").await;
    let system: Api<Pod> = Api::namespaced(client.clone(), "hotnic-system");

    // Up: a pod with NICs is admitted with a MAC.
    let up = pods
        .create(&PostParams::default(), &nic_pod("before"))
        .await
        .unwrap();
    let nets = annotation(&up, NETWORKS).unwrap();
    assert!(nets.contains("\"mac\":\"02:"), "mutated while up: {nets}");

    // Down: stopped, its port refuses connections.
    let port = active.hotnic.addr.port();
    let stopping = Instant::now();
    active.hotnic.stop();
    eprintln!("hotnic stopped in {} ms", stopping.elapsed().as_millis());
    let refused = std::net::TcpStream::connect_timeout(&active.hotnic.addr, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "hotnic still accepts connections on {port}"
    );

    // A pod with NICs: refused, and so is any update of the existing one (here: a label).
    let t = Instant::now();
    let r = pods
        .create(&PostParams::default(), &nic_pod("during"))
        .await;
    assert_refused("CREATE of a pod with NICs", r, port, t);
    assert!(pods.get_opt("during").await.unwrap().is_none());
    let t = Instant::now();
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    let r = pods
        .patch("before", &PatchParams::default(), &Patch::Merge(&label))
        .await;
    assert_refused("UPDATE of a pod with NICs", r, port, t);

    // A pod without NICs: admitted, untouched, and updates of it too.
    let plain = pods
        .create(
            &PostParams::default(),
            &pod("plain", json!({"example.com/note": "no NICs"})),
        )
        .await
        .expect("a pod without NICs is admitted while hotnic is down");
    assert_eq!(
        annotation(&plain, "example.com/note").as_deref(),
        Some("no NICs")
    );
    assert_eq!(
        plain.metadata.annotations.as_ref().map(|a| a.len()),
        Some(1)
    );
    pods.patch("plain", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("an update of a pod without NICs is admitted while hotnic is down");

    // Deleting the existing pod with NICs: no hotnic webhook sees DELETE (its MACs are released
    // once the repair loop observes the deletion), so nothing stands in the way.
    let t = Instant::now();
    pods.delete("before", &DeleteParams::default().grace_period(0))
        .await
        .expect("a DELETE goes through while hotnic is down");
    assert!(pods.get_opt("before").await.unwrap().is_none());
    eprintln!(
        "DELETE of a pod with NICs admitted in {} ms",
        t.elapsed().as_millis()
    );
    let log = std::fs::read_to_string(cluster.dir.join("kube-apiserver.log")).unwrap();
    assert!(
        !log.lines().any(|l| l.contains("failing open")),
        "a webhook was called for the DELETE:\n{}",
        cluster.apiserver_log_tail()
    );

    // A pod with NICs in an excluded namespace: admitted, not mutated.
    let own = system
        .create(&PostParams::default(), &nic_pod("hotnic-own"))
        .await
        .expect("a pod with NICs in hotnic-system is admitted while hotnic is down");
    assert_eq!(annotation(&own, NETWORKS).as_deref(), Some(NICS));
    assert_eq!(annotation(&own, CAPACITY), None);

    // The emergency escape: label the namespace hotnic.io/ignore=true, and (once the API server's
    // namespace informer has the label) pods with NICs are admitted there, unmutated.
    cluster
        .must(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}"),
            Some(&json!({"metadata": {"labels": {"hotnic.io/ignore": "true"}}})),
            Some("application/merge-patch+json"),
        )
        .await;
    let t = Instant::now();
    let escaped = loop {
        match pods
            .create(&PostParams::default(), &nic_pod("escaped"))
            .await
        {
            Ok(p) => break p,
            Err(kube::Error::Api(s)) if s.code == 500 && t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                panic!("a pod with NICs in a namespace labelled hotnic.io/ignore=true: {e:?}")
            }
        }
    };
    eprintln!(
        "namespace labelled hotnic.io/ignore=true: pods with NICs admitted after {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(annotation(&escaped, NETWORKS).as_deref(), Some(NICS));
}
