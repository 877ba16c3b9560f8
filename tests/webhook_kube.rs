//! The webhook end to end through a real kube-apiserver (the real-cluster tier: etcd +
//! kube-apiserver v1.28 from `HOTNIC_TEST_ETCD` / `HOTNIC_TEST_KUBE_APISERVER`, SKIPPED without
//! them). The webhook configurations are the ones `manifests/` renders, with only `clientConfig`
//! pointed at an in-test `hotnic webhook` (tests/support/webhook_config.rs); everything is driven
//! with a kube-rs client the way kubectl would: creates, server-side dry-runs, merge and JSON
//! patches, server-side apply, deletes. What the user gets back is asserted as the API server
//! returns it (status code, reason, message, `details.causes`).
//!
//! One cluster and one hotnic per test binary; every test works in a namespace of its own. Two
//! tests assert that hotnic's review counter does not move; they take [`COUNTER`] exclusively,
//! every other test holds it shared while it talks to the API server.
//!
//! hotnic keeps its MAC claims as `MACAddress` objects in this cluster (`--allocator kubernetes`,
//! as its ServiceAccount with the manifests' RBAC); no repair loop runs on its own here: tests that
//! need a deletion observed run a repair pass (`webhook_config::repairer`).

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
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube_cluster::KubeCluster;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{OnceCell, RwLock};
use webhook_config::{Active, NETWORKS};

const CAPACITY: &str = "hotnic.io/interface-capacity";
const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
const NETWORKS_PATH: &str = "metadata.annotations[k8s.v1.cni.cncf.io/networks]";

static ACTIVE: OnceCell<Active> = OnceCell::const_new();
static ATTEMPTED: AtomicBool = AtomicBool::new(false);
/// Shared: the test makes hotnic review things. Exclusive: the test asserts the counter stays.
static COUNTER: RwLock<()> = RwLock::const_new(());

/// The cluster with hotnic's configurations active, or `None` (SKIPPED) without the binaries.
async fn setup(test: &str) -> Option<(&'static KubeCluster, &'static Active)> {
    let cluster = kube_cluster::cluster_or_skip(test)?;
    let active = ACTIVE
        .get_or_init(|| async {
            // A setup that panicked is not retried by every other test (409s that hide why).
            assert!(
                !ATTEMPTED.swap(true, Ordering::SeqCst),
                "the webhook setup failed in another test: see the first failure"
            );
            webhook_config::activate(cluster).await
        })
        .await;
    Some((cluster, active))
}

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    }))
    .unwrap()
}

fn multus_pod(name: &str, networks: &str) -> Pod {
    pod(name, json!({ NETWORKS: networks }))
}

fn annotations(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.annotations.clone().unwrap_or_default()
}

/// The Multus elements of a pod.
fn networks(p: &Pod) -> Vec<Value> {
    let raw = annotations(p)
        .get(NETWORKS)
        .cloned()
        .unwrap_or_else(|| panic!("no {NETWORKS} on {:?}", p.metadata.name));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{NETWORKS} is not JSON ({e}): {raw}"))
}

/// The `mac` of every element, in order (`None` where there is none).
fn macs(p: &Pod) -> Vec<Option<String>> {
    networks(p)
        .iter()
        .map(|e| e["mac"].as_str().map(str::to_string))
        .collect()
}

/// A MAC hotnic hands out: lower-case `aa:bb:…`, locally administered unicast, in the default
/// range `02:…`, never KubeVirt's masquerade `02:00:00:00:00:00`.
fn assert_injected(mac: Option<&str>, what: &str) -> String {
    let mac = mac.unwrap_or_else(|| panic!("{what}: no MAC injected"));
    let octets: Vec<&str> = mac.split(':').collect();
    assert!(
        octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))),
        "{what}: {mac:?} is not a lower-case colon MAC"
    );
    let first = u8::from_str_radix(octets[0], 16).unwrap();
    assert_eq!(
        first & 0b11,
        0b10,
        "{what}: {mac} is not locally administered unicast"
    );
    assert_eq!(
        octets[0], "02",
        "{what}: {mac} is outside the default --mac-range"
    );
    assert_ne!(mac, "02:00:00:00:00:00", "{what}: the masquerade MAC");
    mac.to_string()
}

/// A denial as the user gets it: through kube-rs and, for the raw body, through plain REST.
struct Denied {
    status: kube::core::Status,
    raw_code: u16,
    raw: Value,
}

impl Denied {
    /// Checks what hotnic's denial looks like after the API server: `code`/`reason`, the message
    /// `admission webhook "<webhook>" denied the request: hotnic: … <field>: <hint> …`, and
    /// the cause `{field, message: hint, reason}` in `details.causes`, in both clients.
    fn assert(&self, webhook: &str, code: u16, field: &str, hint: &str) {
        let (reason, cause_reason) = if code == 422 {
            ("Invalid", "FieldValueInvalid")
        } else {
            ("Forbidden", "FieldValueForbidden")
        };
        let s = &self.status;
        eprintln!("denial as the API server returns it: {}", self.raw);
        assert_eq!((s.code, s.reason.as_str()), (code, reason), "{s:?}");
        let prefix = format!("admission webhook \"{webhook}\" denied the request: hotnic: ");
        assert!(s.message.starts_with(&prefix), "message: {}", s.message);
        assert!(
            s.message.contains(&format!("{field}: {hint}")),
            "message lacks `{field}: {hint}`: {}",
            s.message
        );
        let causes = &s.details.as_ref().expect("details").causes;
        assert!(
            causes
                .iter()
                .any(|c| c.field == field && c.message == hint && c.reason == cause_reason),
            "no cause {field}: {hint} in {causes:?}"
        );
        assert_eq!(self.raw_code, code, "{}", self.raw);
        assert_eq!(self.raw["kind"], "Status");
        assert_eq!(self.raw["status"], "Failure");
        assert_eq!(self.raw["reason"], reason);
        assert_eq!(self.raw["message"], s.message.as_str());
        let raw_causes = self.raw["details"]["causes"].as_array().expect("causes");
        assert!(
            raw_causes.contains(&json!({"field": field, "message": hint, "reason": cause_reason})),
            "no cause {field}: {hint} in {}",
            self.raw["details"]
        );
    }
}

/// Sends `patch` (a merge patch, or a JSON Patch when it is a list) for object `name` through
/// `api` and through plain REST; both must be denied and the object must stay as it was.
async fn denied<K>(cluster: &KubeCluster, api: &Api<K>, name: &str, patch: Value) -> Denied
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let before = api.get(name).await.unwrap();
    let (result, ct) = if patch.is_array() {
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        (
            api.patch(name, &PatchParams::default(), &Patch::Json::<()>(p))
                .await,
            "application/json-patch+json",
        )
    } else {
        (
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            "application/merge-patch+json",
        )
    };
    let status = match result {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("{name}: expected a denial of {patch}, got {other:?}"),
    };
    let path = format!("{}/{name}", api.resource_url());
    let (raw_code, raw) = cluster
        .request("PATCH", &path, Some(&patch), Some(ct))
        .await
        .unwrap();
    let after = api.get(name).await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "{name}: a denied update changed the object"
    );
    Denied {
        status,
        raw_code,
        raw,
    }
}

#[tokio::test]
async fn create_injects_macs_and_capacity_and_dry_run_stores_nothing() {
    let Some((cluster, _)) =
        setup("create_injects_macs_and_capacity_and_dry_run_stores_nothing").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-create").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);

    // One element with a user MAC (upper-case: normalised), one without.
    let nets = r#"[{"name":"macvlan-conf","interface":"eth1","mac":"02:AA:00:00:01:01"},
                   {"name":"bridge-conf","namespace":"NS","interface":"eth2","x-unknown":7}]"#
        .replace("NS", &ns);
    let created = pods
        .create(&PostParams::default(), &multus_pod("web", &nets))
        .await
        .unwrap();
    let stored = pods.get("web").await.unwrap();
    for (what, p) in [("returned", &created), ("stored", &stored)] {
        let els = networks(p);
        assert_eq!(els.len(), 2, "{what}: {els:?}");
        assert_eq!(
            els[0]["mac"], "02:aa:00:00:01:01",
            "{what}: user MAC normalised"
        );
        let eth2 = assert_injected(els[1]["mac"].as_str(), what);
        assert_ne!(eth2, "02:aa:00:00:01:01");
        // Order and every other key kept.
        assert_eq!(els[0]["interface"], "eth1");
        assert_eq!(
            (
                &els[1]["name"],
                &els[1]["namespace"],
                &els[1]["interface"],
                &els[1]["x-unknown"]
            ),
            (&json!("bridge-conf"), &json!(ns), &json!("eth2"), &json!(7)),
            "{what}: {els:?}"
        );
        // eth0 + 2 secondaries, default capacity 4: max(4, 3).
        assert_eq!(
            annotations(p).get(CAPACITY).map(String::as_str),
            Some("4"),
            "{what}"
        );
    }
    assert_eq!(macs(&created), macs(&stored));

    // Claimed for this pod.
    for m in macs(&stored) {
        let claim = claim_of(cluster, m.as_deref().unwrap()).await;
        assert_eq!(
            claim.as_ref().map(|c| &c["spec"]["owner"]["name"]),
            Some(&json!("web")),
            "{claim:?}"
        );
    }

    // Server-side dry-run: the answer carries the mutation, nothing is stored, nothing claimed.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let nets2 = r#"[{"name":"macvlan-conf","interface":"eth1"},{"name":"bridge-conf","interface":"eth2"},
                    {"name":"bridge-conf","interface":"eth3"},{"name":"bridge-conf","interface":"eth4"},
                    {"name":"bridge-conf","interface":"eth5"}]"#;
    let answer = pods.create(&dry, &multus_pod("dry", nets2)).await.unwrap();
    let injected: Vec<String> = macs(&answer)
        .iter()
        .enumerate()
        .map(|(i, m)| assert_injected(m.as_deref(), &format!("dry-run element {i}")))
        .collect();
    let unique: std::collections::BTreeSet<_> = injected.iter().collect();
    assert_eq!(unique.len(), 5, "distinct MACs: {injected:?}");
    assert!(!injected.contains(&eth_mac(&stored, 1)));
    // 6 NICs with eth0: max(4, 6).
    assert_eq!(
        annotations(&answer).get(CAPACITY).map(String::as_str),
        Some("6")
    );
    assert!(pods.get_opt("dry").await.unwrap().is_none());
    for m in &injected {
        assert!(
            claim_of(cluster, m).await.is_none(),
            "a dry-run claimed {m}"
        );
    }
    let (code, body) = cluster
        .request(
            "GET",
            &format!("/api/v1/namespaces/{ns}/pods/dry"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
}

fn eth_mac(p: &Pod, i: usize) -> String {
    macs(p)[i].clone().unwrap()
}

/// A pod with eth1 (macvlan-conf) and eth2 (bridge-conf), both with injected MACs.
async fn two_nic_pod(pods: &Api<Pod>, name: &str, extra: &[(&str, &str)]) -> Pod {
    let mut ann = json!({
        NETWORKS: r#"[{"name":"macvlan-conf","interface":"eth1"},{"name":"bridge-conf","interface":"eth2"}]"#
    });
    for (k, v) in extra {
        ann[*k] = json!(v);
    }
    pods.create(&PostParams::default(), &pod(name, ann))
        .await
        .unwrap();
    let p = pods.get(name).await.unwrap();
    assert_injected(macs(&p)[0].as_deref(), "eth1");
    assert_injected(macs(&p)[1].as_deref(), "eth2");
    p
}

/// The stored element list with `edit` applied, as a merge patch of the annotation.
fn networks_patch(p: &Pod, edit: impl FnOnce(&mut Vec<Value>)) -> Value {
    let mut els = networks(p);
    edit(&mut els);
    json!({"metadata": {"annotations": {NETWORKS: Value::Array(els).to_string()}}})
}

#[tokio::test]
async fn binding_change_is_denied_with_field_path_and_hint() {
    let Some((cluster, _)) = setup("binding_change_is_denied_with_field_path_and_hint").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-binding").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let p = two_nic_pod(&pods, "web", &[]).await;
    let patch = networks_patch(&p, |els| els[0]["name"] = json!("other-conf"));
    denied(cluster, &pods, "web", patch).await.assert(
        "validate.hotnic.io",
        403,
        &format!("{NETWORKS_PATH}[0].name"),
        "changed from \"macvlan-conf\" to \"other-conf\" on existing NIC \"eth1\"; a plugged NIC \
         keeps what it is plugged into; unplug it and plug a new NIC with another name instead",
    );
}

#[tokio::test]
async fn unnamed_nic_is_denied_with_field_path_and_hint() {
    let Some((cluster, _)) = setup("unnamed_nic_is_denied_with_field_path_and_hint").await else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-unnamed").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let p = two_nic_pod(&pods, "web", &[]).await;
    let patch = networks_patch(&p, |els| els.push(json!({"name": "bridge-conf"})));
    denied(cluster, &pods, "web", patch).await.assert(
        "validate.hotnic.io",
        403,
        &format!("{NETWORKS_PATH}[2].interface"),
        "missing; hot-plug needs every NIC named, e.g. \"eth3\"",
    );
    // An element that is not an object: malformed, 422, already from the mutating webhook.
    let patch = networks_patch(&p, |els| els.push(json!(7)));
    denied(cluster, &pods, "web", patch).await.assert(
        "mutate.hotnic.io",
        422,
        &format!("{NETWORKS_PATH}[2]"),
        "must be an object such as {\"name\": \"net1\", \"interface\": \"eth1\"}",
    );
}

#[tokio::test]
async fn primary_network_is_fixed_after_create() {
    let Some((cluster, _)) = setup("primary_network_is_fixed_after_create").await else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-primary").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let field = format!("metadata.annotations[{DEFAULT_NETWORK}]");
    let hint = |was: &str, now: &str| {
        format!(
            "the primary network may not be added, changed or removed on an existing pod (was \
             {was}, now {now}); recreate the pod to change it"
        )
    };

    // The Multus primary is eth0 on the cluster default network, outside the list: what can
    // change it is the default-network annotation. Removing it:
    two_nic_pod(&pods, "with", &[(DEFAULT_NETWORK, "kube-system/pod-net")]).await;
    let remove = json!({"metadata": {"annotations": {DEFAULT_NETWORK: null}}});
    denied(cluster, &pods, "with", remove).await.assert(
        "validate.hotnic.io",
        403,
        &field,
        &hint("\"kube-system/pod-net\"", "unset"),
    );
    // Changing it:
    let change = json!({"metadata": {"annotations": {DEFAULT_NETWORK: "kube-system/other"}}});
    denied(cluster, &pods, "with", change).await.assert(
        "validate.hotnic.io",
        403,
        &field,
        &hint("\"kube-system/pod-net\"", "\"kube-system/other\""),
    );
    // Adding it to a pod created without:
    two_nic_pod(&pods, "without", &[]).await;
    let add = json!({"metadata": {"annotations": {DEFAULT_NETWORK: "kube-system/pod-net"}}});
    denied(cluster, &pods, "without", add).await.assert(
        "validate.hotnic.io",
        403,
        &field,
        &hint("unset", "\"kube-system/pod-net\""),
    );
    // Naming a secondary NIC eth0 (the primary's name):
    let p = pods.get("without").await.unwrap();
    let patch = networks_patch(&p, |els| {
        els.push(json!({"name": "bridge-conf", "interface": "eth0"}))
    });
    denied(cluster, &pods, "without", patch).await.assert(
        "validate.hotnic.io",
        403,
        &format!("{NETWORKS_PATH}[2].interface"),
        "\"eth0\" is reserved for the pod's primary interface (the cluster default network); \
         name this NIC e.g. \"eth3\"",
    );
}

#[tokio::test]
async fn capacity_change_is_denied_with_field_path_and_hint() {
    let Some((cluster, _)) = setup("capacity_change_is_denied_with_field_path_and_hint").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-capacity").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let p = two_nic_pod(&pods, "web", &[]).await;
    assert_eq!(annotations(&p)[CAPACITY], "4");
    let patch = json!({"metadata": {"annotations": {CAPACITY: "8"}}});
    denied(cluster, &pods, "web", patch).await.assert(
        "validate.hotnic.io",
        403,
        &format!("metadata.annotations[{CAPACITY}]"),
        "changed from \"4\" to \"8\"; the interface capacity is fixed when the workload is \
         created (it decides the slots a VM reserves at boot); recreate the workload to change it",
    );
    // Dropping it is no change: the mutation puts it back.
    let drop = json!({"metadata": {"annotations": {CAPACITY: null}}});
    let p = pods
        .patch("web", &PatchParams::default(), &Patch::Merge(&drop))
        .await
        .unwrap();
    assert_eq!(annotations(&p)[CAPACITY], "4");
}

#[tokio::test]
async fn reapply_without_macs_keeps_them_and_hotplug_gets_a_new_one() {
    let Some((cluster, _)) =
        setup("reapply_without_macs_keeps_them_and_hotplug_gets_a_new_one").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-apply").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    // The manifest as the user keeps it: no MACs, no capacity.
    let manifest_nets =
        r#"[{"name":"macvlan-conf","interface":"eth1"},{"name":"bridge-conf","interface":"eth2"}]"#;
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"},
                     "annotations": {NETWORKS: manifest_nets}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    });
    // kubectl apply --server-side, first time: creates it.
    let ssa = PatchParams::apply("kubectl").force();
    let first = pods
        .patch("web", &ssa, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let original = macs(&first);
    assert_injected(original[0].as_deref(), "eth1");
    assert_injected(original[1].as_deref(), "eth2");
    let rv = first.metadata.resource_version.clone();

    // Re-applied unchanged (server-side apply, forced): the MACs stay.
    let mut changed = manifest.clone();
    changed["metadata"]["labels"]["tier"] = json!("front");
    let again = pods
        .patch("web", &ssa, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_eq!(macs(&again), original, "server-side apply without MACs");
    assert_eq!(
        again.labels().get("tier").map(String::as_str),
        Some("front")
    );
    assert_ne!(
        again.metadata.resource_version, rv,
        "the apply did update the pod"
    );
    assert_eq!(annotations(&again)[CAPACITY], "4");

    // A client-side apply's merge patch setting the annotation to the manifest's value.
    let merge =
        json!({"metadata": {"annotations": {NETWORKS: manifest_nets}, "labels": {"tier": "back"}}});
    let merged = pods
        .patch("web", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap();
    assert_eq!(macs(&merged), original, "merge patch without MACs");
    assert_eq!(
        merged.labels().get("tier").map(String::as_str),
        Some("back")
    );
    assert_eq!(macs(&pods.get("web").await.unwrap()), original, "as stored");

    // Hot-plug eth3 (again without any MAC in the patch): a new MAC, the others kept.
    let hotplug_nets = r#"[{"name":"macvlan-conf","interface":"eth1"},{"name":"bridge-conf","interface":"eth2"},
                           {"name":"bridge-conf","interface":"eth3"}]"#;
    let hot = json!({"metadata": {"annotations": {NETWORKS: hotplug_nets}}});
    let plugged = pods
        .patch("web", &PatchParams::default(), &Patch::Merge(&hot))
        .await
        .unwrap();
    let now = macs(&plugged);
    assert_eq!(now.len(), 3);
    assert_eq!(now[..2], original[..], "old NICs keep their MACs");
    let eth3 = assert_injected(now[2].as_deref(), "eth3");
    assert!(!original.contains(&Some(eth3)));
    assert_eq!(networks(&plugged)[2]["interface"], "eth3");
    assert_eq!(annotations(&plugged)[CAPACITY], "4");

    // And a server-side apply of the old manifest (eth3 gone again) unplugs eth3, keeping eth1/2.
    let unplugged = pods
        .patch("web", &ssa, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_eq!(macs(&unplugged), original);
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

fn interfaces(vm: &DynamicObject) -> Vec<Value> {
    vm.data["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn kubevirt_vm_gets_macs_hotplug_is_allowed_primary_unplug_is_denied() {
    let Some((cluster, _)) =
        setup("kubevirt_vm_gets_macs_hotplug_is_allowed_primary_unplug_is_denied").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    cluster
        .install_test_crds(&["network-attachment-definitions.yaml", "kubevirt.yaml"])
        .await;
    let ns = cluster.namespace("wk-kubevirt").await;
    cluster
        .must(
            "POST",
            &format!("/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions"),
            Some(&json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "bridge-conf"},
                "spec": {"config": r#"{"cniVersion":"1.0.0","name":"bridge-conf","type":"bridge","bridge":"br1"}"#}})),
            None,
        )
        .await;
    let vms: Api<DynamicObject> =
        Api::namespaced_with(cluster.admin_client().await, &ns, &vm_resource());
    let vm: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm1"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {"interfaces": [
                {"name": "default", "masquerade": {}},
                {"name": "secondary", "bridge": {}}]},
                "resources": {"requests": {"memory": "1Gi"}}},
            "networks": [
                {"name": "default", "pod": {}},
                {"name": "secondary", "multus": {"networkName": "bridge-conf"}}]}}}
    }))
    .unwrap();
    vms.create(&PostParams::default(), &vm).await.unwrap();
    let stored = vms.get("vm1").await.unwrap();
    let ifs = interfaces(&stored);
    assert_eq!(ifs.len(), 2, "{ifs:?}");
    let m0 = assert_injected(ifs[0]["macAddress"].as_str(), "default (masquerade)");
    let m1 = assert_injected(ifs[1]["macAddress"].as_str(), "secondary (bridge)");
    assert_ne!(m0, m1);
    assert_eq!(ifs[1]["bridge"], json!({}), "binding kept");
    assert_eq!(
        stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CAPACITY))
            .map(String::as_str),
        Some("4")
    );

    // Hot-plug a bridge interface and its network (kubectl patch --type json).
    let hotplug: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/-",
         "value": {"name": "dyniface1", "bridge": {}}},
        {"op": "add", "path": "/spec/template/spec/networks/-",
         "value": {"name": "dyniface1", "multus": {"networkName": "bridge-conf"}}}
    ]))
    .unwrap();
    let plugged = vms
        .patch("vm1", &PatchParams::default(), &Patch::Json::<()>(hotplug))
        .await
        .unwrap();
    let ifs = interfaces(&plugged);
    assert_eq!(ifs.len(), 3, "{ifs:?}");
    assert_eq!(
        (ifs[0]["macAddress"].as_str(), ifs[1]["macAddress"].as_str()),
        (Some(&*m0), Some(&*m1))
    );
    let m2 = assert_injected(ifs[2]["macAddress"].as_str(), "dyniface1");
    assert!(m2 != m0 && m2 != m1);

    // Unplugging the primary (pod network) interface with state: absent.
    let unplug_primary = json!([{"op": "add",
        "path": "/spec/template/spec/domain/devices/interfaces/0/state", "value": "absent"}]);
    denied(cluster, &vms, "vm1", unplug_primary).await.assert(
        "validate.hotnic.io",
        403,
        "spec.template.spec.domain.devices.interfaces[0].state",
        "the primary interface (on the pod network) cannot be unplugged; remove \"state\": \
         \"absent\" (only secondary NICs can be unplugged)",
    );

    // Unplugging a secondary bridge interface the same way is allowed; its MAC stays.
    let unplug: json_patch::Patch = serde_json::from_value(json!([{"op": "add",
        "path": "/spec/template/spec/domain/devices/interfaces/1/state", "value": "absent"}]))
    .unwrap();
    let unplugged = vms
        .patch("vm1", &PatchParams::default(), &Patch::Json::<()>(unplug))
        .await
        .unwrap();
    let ifs = interfaces(&unplugged);
    assert_eq!(
        (ifs[1]["state"].as_str(), ifs[1]["macAddress"].as_str()),
        (Some("absent"), Some(&*m1))
    );
}

/// The name of the `MACAddress` claim of `mac` (cluster scope).
fn claim_name(mac: &str) -> String {
    mac.replace(':', "-")
}

/// The stored claim of `mac`, as the admin reads it.
async fn claim_of(cluster: &KubeCluster, mac: &str) -> Option<Value> {
    let path = format!("/apis/hotnic.io/v1alpha1/macaddresses/{}", claim_name(mac));
    match cluster.request("GET", &path, None, None).await.unwrap() {
        (200, v) => Some(v),
        (404, _) => None,
        other => panic!("GET {path}: {other:?}"),
    }
}

/// One repair pass as the webhook's repair loop runs it (its ServiceAccount, its RBAC).
async fn repair_pass(active: &Active) -> hotnic::claims::repair::PassReport {
    webhook_config::repairer(&active.hotnic, std::time::Duration::from_secs(60))
        .await
        .pass()
        .await
        .expect("a repair pass with the webhook's RBAC")
}

#[tokio::test]
async fn a_deleted_pods_mac_is_free_once_the_repair_loop_observes_the_deletion() {
    let Some((cluster, active)) =
        setup("a_deleted_pods_mac_is_free_once_the_repair_loop_observes_the_deletion").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-release").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let mac = "02:ee:00:00:00:01";
    let nets = format!(r#"[{{"name":"bridge-conf","interface":"eth1","mac":"{mac}"}}]"#);
    let first = pods
        .create(&PostParams::default(), &multus_pod("first", &nets))
        .await
        .unwrap();
    // Claimed in the mutating phase, for a pod whose uid it did not know yet.
    let claim = claim_of(cluster, mac).await.expect("a MACAddress claim");
    assert_eq!(claim["spec"]["address"], mac);
    assert_eq!(
        (
            &claim["spec"]["owner"]["namespace"],
            &claim["spec"]["owner"]["name"],
            &claim["spec"]["nic"]
        ),
        (&json!(ns), &json!("first"), &json!("eth1"))
    );
    assert!(claim["spec"]["owner"].get("uid").is_none(), "{claim}");
    // The repair loop binds it to the pod's uid.
    let report = repair_pass(active).await;
    assert!(
        report.done.get("bound").is_some_and(|n| *n >= 1),
        "{report:?}"
    );
    let claim = claim_of(cluster, mac).await.unwrap();
    assert_eq!(claim["spec"]["owner"]["uid"], json!(first.metadata.uid));

    // While "first" holds the MAC, another pod may not take it.
    let err = pods
        .create(&PostParams::default(), &multus_pod("second", &nets))
        .await
        .expect_err("a MAC held by another pod");
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 403, "{s:?}");
    assert!(
        s.message.contains(&format!(
            "{NETWORKS_PATH}[0].mac: {mac} is already used by Pod {ns}/first; choose another MAC"
        )),
        "{}",
        s.message
    );

    // No webhook sees the DELETE, and the MAC stays claimed until the deletion is observed.
    let deletes = r#"operation="DELETE""#;
    let before = active.hotnic.reviews_matching(&[deletes]).await;
    pods.delete("first", &DeleteParams::default().grace_period(0))
        .await
        .expect("the DELETE of a pod with NICs is admitted");
    assert!(pods.get_opt("first").await.unwrap().is_none());
    assert_eq!(active.hotnic.reviews_matching(&[deletes]).await, before);
    assert!(claim_of(cluster, mac).await.is_some());
    assert!(
        pods.create(&PostParams::default(), &multus_pod("second", &nets))
            .await
            .is_err(),
        "released before the deletion was observed"
    );

    // A repair pass observes it: released, and now the MAC may be taken.
    let report = repair_pass(active).await;
    assert!(
        report
            .done
            .get("released_owner_gone")
            .is_some_and(|n| *n >= 1),
        "{report:?}"
    );
    assert!(claim_of(cluster, mac).await.is_none());
    pods.create(&PostParams::default(), &multus_pod("second", &nets))
        .await
        .expect("the released MAC is free");
    assert_eq!(
        macs(&pods.get("second").await.unwrap()),
        vec![Some(mac.to_string())]
    );
}

#[tokio::test]
async fn generate_name_pods_get_distinct_macs_and_release_them() {
    let Some((cluster, _)) = setup("generate_name_pods_get_distinct_macs_and_release_them").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-genname").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    // What a ReplicaSet does: the mutating phase sees no name yet, the validating one does.
    let nets =
        r#"[{"name":"bridge-conf","interface":"eth1"},{"name":"bridge-conf","interface":"eth2"}]"#;
    let mut template = multus_pod("", nets);
    template.metadata.name = None;
    template.metadata.generate_name = Some("web-".into());
    let a = pods
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let b = pods
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let (a_name, b_name) = (a.name_any(), b.name_any());
    assert!(a_name.starts_with("web-") && a_name != b_name);
    let all: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|p| macs(p))
        .enumerate()
        .map(|(i, m)| assert_injected(m.as_deref(), &format!("MAC {i}")))
        .collect();
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 4, "{all:?}");
    // A hot-plug on one keeps its MACs (the nameless allocation is its own).
    let hot = networks_patch(&a, |els| {
        els.push(json!({"name": "bridge-conf", "interface": "eth3"}))
    });
    let a2 = pods
        .patch(&a_name, &PatchParams::default(), &Patch::Merge(&hot))
        .await
        .unwrap();
    assert_eq!(macs(&a2)[..2], macs(&a)[..]);
    assert_injected(macs(&a2)[2].as_deref(), "eth3");
    // Its claims were bound to it in the validating phase (by its claim token), the hot-plug's
    // at once (an UPDATE knows the uid).
    for m in macs(&a2) {
        let claim = claim_of(cluster, m.as_deref().unwrap()).await.unwrap();
        assert_eq!(claim["spec"]["owner"]["name"], json!(a_name), "{claim}");
        assert_eq!(
            claim["spec"]["owner"]["uid"],
            json!(a.metadata.uid),
            "{claim}"
        );
    }
    // Deleting it frees its MACs once the repair loop observes it: a named pod may take them.
    pods.delete(&a_name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let active = ACTIVE.get().unwrap();
    repair_pass(active).await;
    let taken = format!(
        r#"[{{"name":"bridge-conf","interface":"eth1","mac":"{}"}}]"#,
        macs(&a2)[2].as_deref().unwrap()
    );
    pods.create(&PostParams::default(), &multus_pod("named", &taken))
        .await
        .expect("the MAC of the deleted generateName pod is free again");
}

#[tokio::test]
async fn excluded_namespaces_are_never_sent_to_hotnic() {
    let Some((cluster, active)) = setup("excluded_namespaces_are_never_sent_to_hotnic").await
    else {
        return;
    };
    let _g = COUNTER.write().await;
    let client = cluster.admin_client().await;
    cluster.ensure_namespace("hotnic-system").await;
    // Labelled at creation: the API server reads a new namespace's labels live, a later label
    // change only once its namespace informer has it.
    let ignored = "wk-ignored".to_string();
    cluster
        .must(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ignored, "labels": {"hotnic.io/ignore": "true"}}})),
            None,
        )
        .await;
    let nets = r#"[{"name":"bridge-conf","interface":"eth1"}]"#;
    let name = "excluded-nics";
    let before = active.hotnic.reviews().await;
    for ns in ["hotnic-system", "kube-system", ignored.as_str()] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let p = pods
            .create(&PostParams::default(), &multus_pod(name, nets))
            .await
            .unwrap_or_else(|e| panic!("{ns}: {e:?}"));
        assert_eq!(annotations(&p)[NETWORKS], nets, "{ns}: not mutated");
        assert!(!annotations(&p).contains_key(CAPACITY), "{ns}: not mutated");
        // An update that hotnic would deny goes through too.
        let patch = json!({"metadata": {"annotations": {NETWORKS: r#"[{"name":"other"}]"#}}});
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("{ns}: {e:?}"));
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    assert_eq!(active.hotnic.reviews().await, before, "hotnic was called");
}

#[tokio::test]
async fn pod_without_nics_is_never_sent_to_hotnic() {
    let Some((cluster, active)) = setup("pod_without_nics_is_never_sent_to_hotnic").await else {
        return;
    };
    let _g = COUNTER.write().await;
    let ns = cluster.namespace("wk-plain").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let before = active.hotnic.reviews().await;
    let ann = json!({"example.com/note": "no NICs here"});
    let created = pods
        .create(&PostParams::default(), &pod("plain", ann.clone()))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(annotations(&created)).unwrap(),
        ann,
        "admitted untouched"
    );
    let patch = json!({"metadata": {"labels": {"x": "y"}}});
    pods.patch("plain", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pods.delete("plain", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(active.hotnic.reviews().await, before, "hotnic was called");
}

/// A denied update leaves the claims as they were: the mutating phase releases nothing, and claims
/// nothing for a request the validating phase will deny (here: rule 4, an existing NIC's MAC
/// changed), so the stored pod keeps its MAC to itself and the wanted one stays free.
#[tokio::test]
async fn denied_update_leaves_the_macs_held_as_they_were() {
    let Some((cluster, _)) = setup("denied_update_leaves_the_macs_held_as_they_were").await else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-denied-mac").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let (held, wanted) = ("02:ee:00:00:00:02", "02:ee:00:00:00:03");
    let nets =
        |mac: &str| format!(r#"[{{"name":"bridge-conf","interface":"eth1","mac":"{mac}"}}]"#);
    pods.create(&PostParams::default(), &multus_pod("first", &nets(held)))
        .await
        .unwrap();
    let change = json!({"metadata": {"annotations": {NETWORKS: nets(wanted)}}});
    let d = denied(cluster, &pods, "first", change).await;
    assert_eq!(d.status.code, 403, "{:?}", d.status);
    assert!(
        d.status
            .message
            .contains(&format!("changed from {held} to {wanted}"))
    );
    assert_eq!(
        macs(&pods.get("first").await.unwrap()),
        vec![Some(held.to_string())]
    );

    // "first" still has `held`: nobody else may take it.
    let second = pods
        .create(&PostParams::default(), &multus_pod("second", &nets(held)))
        .await;
    assert!(
        matches!(&second, Err(kube::Error::Api(s)) if s.code == 403),
        "{held} is stored on pod first, yet another pod got it: {second:?}"
    );
    // And nobody has `wanted`: another pod may take it.
    pods.create(&PostParams::default(), &multus_pod("third", &nets(wanted)))
        .await
        .unwrap_or_else(|e| panic!("{wanted} is on no pod, yet: {e}"));
}

/// The MACs of a pod created with `generateName` are claimed under a claim token the mutation
/// writes into the pod (the mutating phase does not know the generated name), and bound to the
/// generated name and uid by the validating phase: an unrelated pod named `web-server` is never
/// taken for `web-x7k2p`, and is told who holds the MAC.
#[tokio::test]
async fn generate_name_pod_macs_are_not_free_for_other_pods_of_that_prefix() {
    let Some((cluster, _)) =
        setup("generate_name_pod_macs_are_not_free_for_other_pods_of_that_prefix").await
    else {
        return;
    };
    let _g = COUNTER.read().await;
    let ns = cluster.namespace("wk-genname-dup").await;
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client().await, &ns);
    let mut template = multus_pod("", r#"[{"name":"bridge-conf","interface":"eth1"}]"#);
    template.metadata.name = None;
    template.metadata.generate_name = Some("web-".into());
    let generated = pods
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let mac = macs(&generated)[0].clone().unwrap();
    let taken = format!(r#"[{{"name":"bridge-conf","interface":"eth1","mac":"{mac}"}}]"#);
    let other = pods
        .create(&PostParams::default(), &multus_pod("web-server", &taken))
        .await;
    assert!(
        matches!(&other, Err(kube::Error::Api(s)) if s.code == 403
            && s.message.contains(&format!("is already used by Pod {ns}/{}", generated.name_any()))),
        "pod web-server got {mac}, the MAC of pod {}: {other:?}",
        generated.name_any()
    );
}
