//! `kubectl hotnic` against a real kube-apiserver with hotnic's own webhook registered (the
//! real-cluster tier: etcd + kube-apiserver from `HOTNIC_TEST_ETCD` / `HOTNIC_TEST_KUBE_APISERVER`,
//! SKIPPED without them). The webhook configurations are the ones `manifests/` renders, pointed at
//! an in-test `hotnic webhook` (tests/support/webhook_config.rs). The plugin BINARY is run as a
//! user would (`--kubeconfig` the admin's); what it stored is read back from the API server.
//!
//! The concurrency guard is tested twice: through the library with a hook that edits the object
//! between the plugin's read and its patch (retried, or reported after the last attempt; never
//! overwritten), and by sending a patch built on a stale read straight to the API server (which
//! refuses it: the `test` op fails).
//!
//! Arktos VM pods are not tested here: a vanilla kube-apiserver drops `spec.nics`, so no Arktos
//! pod can be stored. tests/nic_cli.rs covers them offline (`list -f`, `--dry-run=client`).

#[path = "support/kube_cluster.rs"]
mod kube_cluster;
#[allow(dead_code)]
#[path = "manifests_support/kustomize.rs"]
mod kustomize;
#[path = "support/webhook_config.rs"]
mod webhook_config;
#[path = "webhook_support/mod.rs"]
mod webhook_support;

use futures::FutureExt;
use hotnic::nic::args::{DryRun, KubeFlags};
use hotnic::nic::client::{self, NicError, Session};
use hotnic::nic::edit::{self, NicSpec};
use hotnic::nic::target::Target;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_cluster::KubeCluster;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tokio::sync::OnceCell;
use webhook_config::{Active, NETWORKS};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-hotnic");

static ACTIVE: OnceCell<Active> = OnceCell::const_new();
static ATTEMPTED: AtomicBool = AtomicBool::new(false);

/// The cluster with hotnic's configurations active, or `None` (SKIPPED) without the binaries.
async fn setup(test: &str) -> Option<&'static KubeCluster> {
    let cluster = kube_cluster::cluster_or_skip(test)?;
    ACTIVE
        .get_or_init(|| async {
            assert!(
                !ATTEMPTED.swap(true, Ordering::SeqCst),
                "the webhook setup failed in another test: see the first failure"
            );
            webhook_config::activate(cluster).await
        })
        .await;
    Some(cluster)
}

/// The plugin's exit code, stdout and stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl-hotnic ARGS --kubeconfig <admin>` (with `-n ns` when given); `args` is split on
/// whitespace, as a shell would.
async fn plugin(cluster: &KubeCluster, ns: Option<&str>, args: &str) -> Run {
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut cmd = tokio::process::Command::new(PLUGIN);
    cmd.args(&args)
        .arg("--kubeconfig")
        .arg(&cluster.admin_kubeconfig)
        .env_remove("KUBECONFIG");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.output().await.expect("running kubectl-hotnic");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    eprintln!(
        "$ kubectl-hotnic {} -> {:?}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

async fn ok(cluster: &KubeCluster, ns: &str, args: &str) -> String {
    let r = plugin(cluster, Some(ns), args).await;
    assert_eq!(r.code, Some(0), "{args}: {}", r.stderr);
    r.stdout
}

fn pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    })
}

async fn create_pod(cluster: &KubeCluster, ns: &str, p: Value) {
    cluster
        .must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(&p),
            None,
        )
        .await;
}

/// Creates pod `name` in `ns` with one secondary NIC: eth1 on net-a.
async fn create_eth1_pod(cluster: &KubeCluster, ns: &str, name: &str) {
    let nets = r#"[{"name":"net-a","interface":"eth1"}]"#;
    create_pod(cluster, ns, pod(name, json!({ NETWORKS: nets }))).await;
}

async fn get_pod(cluster: &KubeCluster, ns: &str, name: &str) -> Value {
    cluster
        .must(
            "GET",
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            None,
            None,
        )
        .await
}

fn ann<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no annotation {key}: {}", obj["metadata"]))
}

fn elements(p: &Value) -> Vec<Value> {
    serde_json::from_str(ann(p, NETWORKS)).unwrap()
}

/// A MAC hotnic's webhook injected: lower-case, `02:…` (the default range), not the masquerade one.
fn injected(mac: &Value, what: &str) -> String {
    let mac = mac
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no MAC: {mac}"));
    let ok = mac.len() == 17
        && mac.starts_with("02:")
        && mac != "02:00:00:00:00:00"
        && mac
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || ('a'..='f').contains(&c));
    assert!(ok, "{what}: {mac:?} is not a MAC hotnic injects");
    mac.to_string()
}

async fn merge_patch(cluster: &KubeCluster, path: &str, patch: Value) -> Value {
    cluster
        .must(
            "PATCH",
            path,
            Some(&patch),
            Some("application/merge-patch+json"),
        )
        .await
}

#[tokio::test]
async fn multus_add_list_remove() {
    let Some(cluster) = setup("multus_add_list_remove").await else {
        return;
    };
    let ns = cluster.namespace("nk-multus").await;
    create_eth1_pod(cluster, &ns, "web").await;
    let m1 = injected(
        &elements(&get_pod(cluster, &ns, "web").await)[0]["mac"],
        "eth1",
    );

    let out = ok(
        cluster,
        &ns,
        "add pod/web --name eth2 --network other/net-b",
    )
    .await;
    let stored = get_pod(cluster, &ns, "web").await;
    let m2 = injected(&elements(&stored)[1]["mac"], "eth2");
    // The element appended in JSON form, the first kept as it was; the webhook added the MAC.
    assert_eq!(
        ann(&stored, NETWORKS),
        format!(
            r#"[{{"name":"net-a","interface":"eth1","mac":"{m1}"}},{{"name":"net-b","namespace":"other","interface":"eth2","mac":"{m2}"}}]"#
        )
    );
    assert_eq!(ann(&stored, "hotnic.io/interface-capacity"), "4");
    assert_eq!(
        out,
        format!(
            "pod/web: added eth2
NAME   NETWORK       MAC                 PRIMARY   HOT-UNPLUGGABLE   STATE   REASON
eth2   other/net-b   {m2}   no        yes               -       -
"
        )
    );

    // The agent reports (as `hotnic agent` writes it); list shows state and reason.
    let status = json!([
        {"name": "eth1", "mac": m1, "state": "Ready"},
        {"name": "eth2", "mac": m2, "state": "Failed", "reason": "NetworkAttachmentDefinition other/net-b not found"}
    ]);
    merge_patch(
        cluster,
        &format!("/api/v1/namespaces/{ns}/pods/web"),
        json!({"metadata": {"annotations": {"hotnic.io/nic-status": status.to_string()}}}),
    )
    .await;
    let listed = ok(cluster, &ns, "list pod/web").await;
    let w = listed_width(&ns);
    assert_eq!(
        listed,
        format!(
            "\
NAME   {:<w$}   MAC                 PRIMARY   HOT-UNPLUGGABLE    STATE    REASON
eth0   {:<w$}   -                   yes       no (primary NIC)   -        -
eth1   {:<w$}   {m1}   no        yes                Ready    -
eth2   {:<w$}   {m2}   no        yes                Failed   NetworkAttachmentDefinition other/net-b not found
Capacity: 4 (hotnic.io/interface-capacity); 3 NICs in use, 1 slot remaining
",
            "NETWORK",
            "(cluster default)",
            format!("{ns}/net-a"),
            "other/net-b"
        )
    );
    let json: Value =
        serde_json::from_str(&ok(cluster, &ns, "list pod/web -o json").await).unwrap();
    assert_eq!(json["nics"][2]["state"], "Failed");
    assert_eq!(
        (json["inUse"].as_u64(), json["remaining"].as_u64()),
        (Some(3), Some(1))
    );

    // Remove eth2: the element goes, eth1 stays as it was.
    let out = ok(cluster, &ns, "remove pod/web --name eth2").await;
    assert_eq!(out, "pod/web: eth2 removed\n");
    let stored = get_pod(cluster, &ns, "web").await;
    assert_eq!(
        ann(&stored, NETWORKS),
        format!(r#"[{{"name":"net-a","interface":"eth1","mac":"{m1}"}}]"#)
    );

    // The primary is refused (exit 1), nothing sent.
    let rv = stored["metadata"]["resourceVersion"].clone();
    let r = plugin(cluster, Some(&ns), "remove pod/web --name eth0").await;
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.starts_with("error: hotnic's policy denies this change:\n  metadata.annotations[k8s.v1.cni.cncf.io/networks]: \"eth0\" is the pod's primary interface"),
        "{}",
        r.stderr
    );
    assert_eq!(
        get_pod(cluster, &ns, "web").await["metadata"]["resourceVersion"],
        rv
    );
}

/// Width of the NETWORK column of the table in `multus_add_list_remove`.
fn listed_width(ns: &str) -> usize {
    [
        "(cluster default)".len(),
        ns.len() + "/net-a".len(),
        "other/net-b".len(),
    ]
    .into_iter()
    .max()
    .unwrap()
}

#[tokio::test]
async fn multus_short_form_is_rewritten_as_json_keeping_entries() {
    let Some(cluster) = setup("multus_short_form_is_rewritten_as_json_keeping_entries").await
    else {
        return;
    };
    let ns = cluster.namespace("nk-short").await;
    create_pod(cluster, &ns, pod("web", json!({ NETWORKS: "net-a@eth1" }))).await;
    let before = get_pod(cluster, &ns, "web").await;
    // hotnic's webhook already rewrote it at create (to give eth1 its MAC).
    let m1 = injected(&elements(&before)[0]["mac"], "eth1");
    ok(
        cluster,
        &ns,
        "add pod/web --name eth2 --network net-b --ips 10.1.1.5/24,10.1.2.5/24",
    )
    .await;
    let stored = get_pod(cluster, &ns, "web").await;
    let m2 = injected(&elements(&stored)[1]["mac"], "eth2");
    assert_eq!(
        ann(&stored, NETWORKS),
        format!(
            r#"[{{"name":"net-a","interface":"eth1","mac":"{m1}"}},{{"name":"net-b","interface":"eth2","ips":["10.1.1.5/24","10.1.2.5/24"],"mac":"{m2}"}}]"#
        )
    );

    // A short-form annotation as stored where hotnic's webhook does not run (a namespace
    // labelled hotnic.io/ignore=true, as objects written before hotnic was installed): the
    // plugin tests the raw string and writes the JSON list, keeping the entries.
    let ignored = cluster.namespace("nk-short-ignored").await;
    merge_patch(
        cluster,
        &format!("/api/v1/namespaces/{ignored}"),
        json!({"metadata": {"labels": {"hotnic.io/ignore": "true"}}}),
    )
    .await;
    create_pod(
        cluster,
        &ignored,
        pod("plain", json!({ NETWORKS: "x/net-a@eth1, net-z@eth9" })),
    )
    .await;
    let raw = ann(&get_pod(cluster, &ignored, "plain").await, NETWORKS).to_string();
    assert_eq!(
        raw, "x/net-a@eth1, net-z@eth9",
        "stored as written (no webhook here)"
    );
    let out = ok(
        cluster,
        &ignored,
        "add pod/plain --name eth2 --network net-b --dry-run=client",
    )
    .await;
    let (patch, _) = out.split_once("\npod/plain: ").unwrap();
    let json_form = r#"[{"name":"net-a","namespace":"x","interface":"eth1"},{"name":"net-z","interface":"eth9"},{"name":"net-b","interface":"eth2"}]"#;
    assert_eq!(
        serde_json::from_str::<Value>(patch).unwrap(),
        json!([
            {"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": raw},
            {"op": "replace", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": json_form}
        ])
    );
    ok(
        cluster,
        &ignored,
        "add pod/plain --name eth2 --network net-b",
    )
    .await;
    let stored = get_pod(cluster, &ignored, "plain").await;
    assert_eq!(
        ann(&stored, NETWORKS),
        json_form,
        "no webhook here: no MACs, JSON form"
    );
}

#[tokio::test]
async fn dry_runs_store_nothing_and_server_dry_run_shows_the_injected_mac() {
    let Some(cluster) =
        setup("dry_runs_store_nothing_and_server_dry_run_shows_the_injected_mac").await
    else {
        return;
    };
    let ns = cluster.namespace("nk-dry").await;
    create_eth1_pod(cluster, &ns, "web").await;
    let before = get_pod(cluster, &ns, "web").await;
    let raw = ann(&before, NETWORKS).to_string();

    // Tests running beside this one share the webhook and claim MACs meanwhile: none of them is
    // handed the MAC this dry-run proposed, which its validating call then checks.
    let args = "add pod/web --name eth2 --network net-b --dry-run=server";
    let out = plugin(cluster, Some(&ns), args).await;
    assert_eq!(out.code, Some(0), "{args}: {}", out.stderr);
    let out = out.stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "pod/web: eth2 would be added (server dry run: admitted, not stored)"
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..2], ["eth2", &format!("{ns}/net-b")]);
    injected(&json!(row[2]), "server dry run");
    assert_eq!(row[3..], ["no", "yes", "-", "-"]);

    let out = ok(
        cluster,
        &ns,
        "add pod/web --name eth2 --network net-b --dry-run=client",
    )
    .await;
    let (patch, rest) = out.split_once("\npod/web: ").unwrap();
    let mut want = raw.trim_end_matches(']').to_string();
    want.push_str(r#",{"name":"net-b","interface":"eth2"}]"#);
    assert_eq!(
        serde_json::from_str::<Value>(patch).unwrap(),
        json!([
            {"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": raw},
            {"op": "replace", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": want}
        ])
    );
    assert!(rest.starts_with("eth2 would be added (client dry run: nothing sent; hotnic's webhook assigns the MAC on admission)\n"), "{rest}");

    let r = ok(cluster, &ns, "remove pod/web --name eth1 --dry-run=server").await;
    assert_eq!(
        r,
        "pod/web: eth1 would be removed (server dry run: admitted, not stored)\n"
    );

    let after = get_pod(cluster, &ns, "web").await;
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(ann(&after, NETWORKS), raw);
}

fn vm_resource() -> kube::api::ApiResource {
    hotnic::nic::target::api_resource(hotnic::dialect::Kind::VirtualMachine)
}

fn vm_spec(vm: &Value) -> &Value {
    &vm["spec"]["template"]["spec"]
}

#[tokio::test]
async fn kubevirt_vm_add_remove_and_the_primary_refused_like_the_webhook() {
    let Some(cluster) =
        setup("kubevirt_vm_add_remove_and_the_primary_refused_like_the_webhook").await
    else {
        return;
    };
    cluster
        .install_test_crds(&["network-attachment-definitions.yaml", "kubevirt.yaml"])
        .await;
    let ns = cluster.namespace("nk-vm").await;
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
    let get = || async { serde_json::to_value(vms.get("vm1").await.unwrap()).unwrap() };
    let before = get().await;
    let ifs = &vm_spec(&before)["domain"]["devices"]["interfaces"];
    let (m0, m1) = (
        injected(&ifs[0]["macAddress"], "default"),
        injected(&ifs[1]["macAddress"], "secondary"),
    );

    let net = format!("{ns}/bridge-conf");
    let out = ok(
        cluster,
        &ns,
        &format!("add vm/vm1 --name dyn1 --network {net}"),
    )
    .await;
    let stored = get().await;
    let ifs = vm_spec(&stored)["domain"]["devices"]["interfaces"].clone();
    let m2 = injected(&ifs[2]["macAddress"], "dyn1");
    assert_eq!(
        ifs,
        json!([
            {"name": "default", "masquerade": {}, "macAddress": m0},
            {"name": "secondary", "bridge": {}, "macAddress": m1},
            {"name": "dyn1", "bridge": {}, "macAddress": m2}
        ])
    );
    assert_eq!(
        vm_spec(&stored)["networks"],
        json!([
            {"name": "default", "pod": {}},
            {"name": "secondary", "multus": {"networkName": "bridge-conf"}},
            {"name": "dyn1", "multus": {"networkName": net}}
        ])
    );
    assert!(out.starts_with("vm/vm1: added dyn1\n"), "{out}");
    assert!(out.contains(&format!("dyn1   {net}   {m2}   no ")), "{out}");

    let w = net
        .len()
        .max("(pod network)".len())
        .max(ns.len() + "/bridge-conf".len());
    let listed = ok(cluster, &ns, "list vm/vm1").await;
    assert_eq!(
        listed,
        format!(
            "\
NAME        {:<w$}   MAC                 PRIMARY   HOT-UNPLUGGABLE    STATE   REASON
default     {:<w$}   {m0}   yes       no (primary NIC)   -       -
secondary   {:<w$}   {m1}   no        yes                -       -
dyn1        {:<w$}   {m2}   no        yes                -       -
Capacity: 4 (hotnic.io/interface-capacity); 3 NICs in use, 1 slot remaining
",
            "NETWORK",
            "(pod network)",
            format!("{ns}/bridge-conf"),
            net
        )
    );

    // Unplug: state absent, MAC kept; again: nothing to do.
    let out = ok(cluster, &ns, "remove vm/vm1 --name dyn1").await;
    assert!(
        out.starts_with("vm/vm1: dyn1 set to state: absent (KubeVirt unplugs it)\n"),
        "{out}"
    );
    let stored = get().await;
    assert_eq!(
        vm_spec(&stored)["domain"]["devices"]["interfaces"][2],
        json!({"name": "dyn1", "bridge": {}, "macAddress": m2, "state": "absent"})
    );
    let out = ok(cluster, &ns, "remove vm/vm1 --name dyn1").await;
    assert!(
        out.starts_with("vm/vm1: dyn1 is already absent (being unplugged); nothing to do\n"),
        "{out}"
    );

    // The primary: refused by the plugin with exactly the causes hotnic's webhook gives for the
    // same edit sent by hand.
    let by_hand: json_patch::Patch = serde_json::from_value(json!([{"op": "add",
        "path": "/spec/template/spec/domain/devices/interfaces/0/state", "value": "absent"}]))
    .unwrap();
    let status = match vms
        .patch("vm1", &PatchParams::default(), &Patch::Json::<()>(by_hand))
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("the webhook let the primary go absent: {other:?}"),
    };
    assert!(
        status
            .message
            .starts_with("admission webhook \"validate.hotnic.io\" denied the request"),
        "{status:?}"
    );
    let webhook_causes: Vec<String> = status
        .details
        .as_ref()
        .unwrap()
        .causes
        .iter()
        .map(|c| format!("  {}: {}", c.field, c.message))
        .collect();
    assert!(!webhook_causes.is_empty());
    let rv = get().await["metadata"]["resourceVersion"].clone();
    let r = plugin(cluster, Some(&ns), "remove vm/vm1 --name default").await;
    assert_eq!(r.code, Some(1));
    let mut lines = r.stderr.lines();
    assert_eq!(
        lines.next(),
        Some(
            "error: hotnic's policy denies this change (hotnic's webhook would deny it the same):"
        )
    );
    assert_eq!(
        lines.map(str::to_string).collect::<Vec<_>>(),
        webhook_causes
    );
    assert_eq!(
        get().await["metadata"]["resourceVersion"],
        rv,
        "nothing sent"
    );
}

#[tokio::test]
async fn kubevirt_vmi_add() {
    let Some(cluster) = setup("kubevirt_vmi_add").await else {
        return;
    };
    cluster
        .install_test_crds(&["network-attachment-definitions.yaml", "kubevirt.yaml"])
        .await;
    let ns = cluster.namespace("nk-vmi").await;
    let path = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances");
    cluster
        .must(
            "POST",
            &path,
            Some(&json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": "vmi1"},
                "spec": {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                    "networks": [{"name": "default", "pod": {}}]}})),
            None,
        )
        .await;
    let out = ok(
        cluster,
        &ns,
        "add vmi/vmi1 --name n1 --network net-x --mac 02:00:00:EE:00:01",
    )
    .await;
    assert!(
        out.contains("n1     ") && out.contains("02:00:00:ee:00:01"),
        "{out}"
    );
    let stored = cluster
        .must("GET", &format!("{path}/vmi1"), None, None)
        .await;
    assert_eq!(
        stored["spec"]["domain"]["devices"]["interfaces"][1],
        json!({"name": "n1", "bridge": {}, "macAddress": "02:00:00:ee:00:01"})
    );
    assert_eq!(
        stored["spec"]["networks"][1],
        json!({"name": "n1", "multus": {"networkName": "net-x"}})
    );
}

#[tokio::test]
async fn a_real_webhook_denial_is_shown_as_its_causes() {
    let Some(cluster) = setup("a_real_webhook_denial_is_shown_as_its_causes").await else {
        return;
    };
    let ns = cluster.namespace("nk-denied").await;
    let mac = "02:ee:11:00:00:01";
    create_pod(
        cluster,
        &ns,
        pod("holder", json!({ NETWORKS: format!(r#"[{{"name":"net-a","interface":"eth1","mac":"{mac}"}}]"#) })),
    )
    .await;
    create_eth1_pod(cluster, &ns, "web").await;
    let before = get_pod(cluster, &ns, "web").await;
    // The plugin's own check passes (it knows no other pod's MACs); hotnic's webhook denies (its
    // mutating phase, which claims the MAC: holder's MACAddress claim says no).
    let r = plugin(
        cluster,
        Some(&ns),
        &format!("add pod/web --name eth2 --network net-b --mac {mac}"),
    )
    .await;
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        format!(
            "error: denied by admission webhook \"mutate.hotnic.io\" (403 Forbidden):\n  \
             metadata.annotations[k8s.v1.cni.cncf.io/networks][1].mac: {mac} is already used by Pod {ns}/holder; choose another MAC, or leave it out and hotnic assigns one\n"
        )
    );
    let after = get_pod(cluster, &ns, "web").await;
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // Other API errors: one line, exit 1.
    let r = plugin(cluster, Some(&ns), "list pod/nope").await;
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr, "error: pods \"nope\" not found (404 NotFound)\n");
}

/// A session as the admin, in `ns`.
async fn session(cluster: &KubeCluster, ns: &str) -> Session {
    Session::connect(&KubeFlags {
        kubeconfig: Some(cluster.admin_kubeconfig.clone()),
        context: None,
        namespace: Some(ns.to_string()),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_concurrent_edit_between_read_and_patch_is_retried_never_overwritten() {
    let Some(cluster) =
        setup("a_concurrent_edit_between_read_and_patch_is_retried_never_overwritten").await
    else {
        return;
    };
    let ns = cluster.namespace("nk-race").await;
    create_eth1_pod(cluster, &ns, "web").await;
    let m1 = injected(
        &elements(&get_pod(cluster, &ns, "web").await)[0]["mac"],
        "eth1",
    );
    let s = session(cluster, &ns).await;
    let t: Target = "pod/web".parse().unwrap();
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/web");

    // Another writer adds eth3 after the plugin read the pod and before its patch arrives.
    let other = json!({"metadata": {"annotations": {NETWORKS: format!(
        r#"[{{"name":"net-a","interface":"eth1","mac":"{m1}"}},{{"name":"net-c","interface":"eth3"}}]"#)}}});
    let hook = {
        let (cluster, path, other) = (cluster, pod_path.clone(), other.clone());
        move |attempt: u32| {
            let (path, other) = (path.clone(), other.clone());
            async move {
                if attempt == 1 {
                    merge_patch(cluster, &path, other).await;
                }
            }
            .boxed()
        }
    };
    let build = |obj: &Value| edit::plan_add(t.kind, obj, &ns, &NicSpec::new("eth2", "net-b"));
    let applied = client::apply(&s, &t, DryRun::None, &build, Some(&hook))
        .await
        .unwrap();
    assert_eq!(applied.attempts, 2, "the first patch must fail its test op");
    let els = elements(&get_pod(cluster, &ns, "web").await);
    let names: Vec<&str> = els
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["eth1", "eth3", "eth2"],
        "the other writer's eth3 kept: {els:?}"
    );
    assert_eq!(els[0]["mac"], m1.as_str());
    injected(&els[1]["mac"], "eth3");
    injected(&els[2]["mac"], "eth2");
    assert_eq!(
        applied.object,
        get_pod(cluster, &ns, "web").await,
        "re-read after the patch"
    );

    // A writer that never stops (it rewrites eth1's element, a key of its own, on every
    // attempt): reported after the last attempt, and what it wrote stays.
    create_eth1_pod(cluster, &ns, "busy").await;
    let busy: Target = "pod/busy".parse().unwrap();
    let busy_path = format!("/api/v1/namespaces/{ns}/pods/busy");
    let n = Arc::new(AtomicU32::new(0));
    let hook = {
        let (path, n, ns) = (busy_path.clone(), n.clone(), ns.clone());
        move |attempt: u32| {
            let (path, ns) = (path.clone(), ns.clone());
            n.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut els = elements(&get_pod(cluster, &ns, "busy").await);
                els[0]["x-writer"] = json!(attempt);
                merge_patch(
                    cluster,
                    &path,
                    json!({"metadata": {"annotations": {NETWORKS: Value::Array(els).to_string()}}}),
                )
                .await;
            }
            .boxed()
        }
    };
    let build = |obj: &Value| edit::plan_add(busy.kind, obj, &ns, &NicSpec::new("eth2", "net-b"));
    let err = client::apply(&s, &busy, DryRun::None, &build, Some(&hook))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NicError::Conflict { attempts, .. } if *attempts == client::ATTEMPTS),
        "{err:?}"
    );
    assert_eq!(n.load(Ordering::SeqCst), client::ATTEMPTS);
    assert!(
        err.to_string().starts_with(&format!(
            "pod/busy kept changing while hotnic edited it ({} attempts, last: ",
            client::ATTEMPTS
        )) && err.to_string().contains("no other change was overwritten"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
    let els = elements(&get_pod(cluster, &ns, "busy").await);
    assert_eq!(els.len(), 1, "eth2 was not added: {els:?}");
    assert_eq!(
        els[0]["x-writer"],
        client::ATTEMPTS,
        "the other writer's last change kept"
    );
}

#[tokio::test]
async fn the_api_server_refuses_a_patch_built_on_a_stale_read() {
    let Some(cluster) = setup("the_api_server_refuses_a_patch_built_on_a_stale_read").await else {
        return;
    };
    let ns = cluster.namespace("nk-stale").await;
    create_eth1_pod(cluster, &ns, "web").await;
    create_pod(cluster, &ns, pod("bare", json!({"other": "x"}))).await;
    let path = |n: &str| format!("/api/v1/namespaces/{ns}/pods/{n}");
    for (name, change) in [
        // The annotation changed (its `test` fails).
        (
            "web",
            json!({"metadata": {"annotations": {NETWORKS: r#"[{"name":"net-a","interface":"eth1"},{"name":"net-c","interface":"eth3"}]"#}}}),
        ),
        // A pod without the annotation: the patch creates it under a resourceVersion test.
        ("bare", json!({"metadata": {"labels": {"touched": "yes"}}})),
    ] {
        let read = get_pod(cluster, &ns, name).await;
        let patch = edit::plan_add(
            hotnic::dialect::Kind::Pod,
            &read,
            &ns,
            &NicSpec::new("eth2", "net-b"),
        )
        .unwrap()
        .patch;
        let changed = merge_patch(cluster, &path(name), change).await;
        let (code, body) = cluster
            .request(
                "PATCH",
                &path(name),
                Some(&serde_json::to_value(&patch).unwrap()),
                Some("application/json-patch+json"),
            )
            .await
            .unwrap();
        eprintln!("stale patch on {name}: {code} {body}");
        assert_eq!(code, 422, "{body}");
        let status: kube::core::Status = serde_json::from_value(body.clone()).unwrap();
        assert!(
            client::is_stale(&status),
            "not recognised as a stale read: {body}"
        );
        let now = get_pod(cluster, &ns, name).await;
        assert_eq!(now, changed, "{name}: the stale patch changed something");
    }
}

#[tokio::test]
async fn namespace_and_context_come_from_the_kubeconfig_like_kubectl() {
    let Some(cluster) = setup("namespace_and_context_come_from_the_kubeconfig_like_kubectl").await
    else {
        return;
    };
    let ns = cluster.namespace("nk-ctx").await;
    create_eth1_pod(cluster, &ns, "web").await;
    // A kubeconfig whose context names the test namespace: no -n needed.
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let text = std::fs::read_to_string(&cluster.admin_kubeconfig).unwrap();
    assert!(text.contains("namespace: default"));
    std::fs::write(
        &kc,
        text.replace("namespace: default", &format!("namespace: {ns}")),
    )
    .unwrap();
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(PLUGIN)
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let kcs = kc.display().to_string();
    let (code, out, err) = run(vec![
        "list".into(),
        "pod/web".into(),
        "--kubeconfig".into(),
        kcs.clone(),
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("eth1   {ns}/net-a")), "{out}");
    // $KUBECONFIG is honoured too, and --context picks the context (here: the only one).
    let out = tokio::process::Command::new(PLUGIN)
        .args(["list", "pod/web", "--context", "c"])
        .env("KUBECONFIG", &kc)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -n wins over the context's namespace: the pod is not in "default".
    let (code, _, err) = run(vec![
        "list".into(),
        "pod/web".into(),
        "--kubeconfig".into(),
        kcs.clone(),
        "-n".into(),
        "default".into(),
    ])
    .await;
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "error: pods \"web\" not found (404 NotFound)\n")
    );
    let (code, _, err) = run(vec![
        "list".into(),
        "pod/web".into(),
        "--kubeconfig".into(),
        kcs,
        "--context".into(),
        "nope".into(),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: kubeconfig: "), "{err}");
}
