//! `kubectl hotnic` offline: the plugin binary (and `hotnic nic`) run as a user would, on files
//! (`list -f`, `add|remove -f --dry-run=client`), no cluster. Arktos VM pods are tested here:
//! a vanilla kube-apiserver drops `spec.nics`, so the real-cluster tier (tests/nic_kube.rs)
//! cannot store one.

use std::path::Path;
use std::process::{Command, Output};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-hotnic");
const HOTNIC: &str = env!("CARGO_BIN_EXE_hotnic");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // No kubeconfig may be picked up by accident.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("running the plugin")
}

fn ok(args: &[&str]) -> String {
    let out = run(PLUGIN, args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failing(args: &[&str], code: i32) -> String {
    let out = run(PLUGIN, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn list_multus_pod_from_a_file() {
    let expected = "\
NAME   NETWORK             MAC                 PRIMARY   HOT-UNPLUGGABLE    STATE   REASON
eth0   (cluster default)   -                   yes       no (primary NIC)   -       -
eth1   demo/macvlan-conf   02:aa:bb:cc:dd:01   no        yes                -       -
eth2   demo/bridge-conf    -                   no        yes                -       -
Capacity: not set (hotnic.io/interface-capacity unset); 3 NICs in use, hot-plug not limited by hotnic
";
    assert_eq!(ok(&["list", "-f", "examples/multus/pod.yaml"]), expected);
    // `hotnic nic` is the same command.
    let out = run(HOTNIC, &["nic", "list", "-f", "examples/multus/pod.yaml"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn list_arktos_vm_pod_with_agent_status() {
    let dir = tempfile::tempdir().unwrap();
    let status = r#"[{"name":"eth1","portID":"p1","mac":"02:00:00:00:00:b1","state":"Ready"},{"name":"eth2","mac":"02:00:00:00:00:b2","state":"Failed","reason":"plugin bridge: no such device br9"}]"#;
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vm-pod", "namespace": "demo", "annotations": {
            "hotnic.io/interface-capacity": "4",
            "hotnic.io/mac-addresses": r#"{"eth0":"02:00:00:00:00:b0","eth1":"02:00:00:00:00:b1","eth2":"02:00:00:00:00:b2"}"#,
            "hotnic.io/nic-status": status}},
        "spec": {"nics": [
            {"name": "eth0", "portId": "p0"},
            {"name": "eth1", "portId": "p1", "subnetName": "subnet-a"},
            {"name": "eth2", "subnetName": "subnet-b", "ipAddress": "10.0.0.7"}],
            "virtualMachine": {"name": "vm", "image": "img"}}
    });
    let file = write(dir.path(), "vm-pod.json", &pod.to_string());
    assert_eq!(
        ok(&["list", "-f", &file]),
        "\
NAME   NETWORK    MAC                 PRIMARY   HOT-UNPLUGGABLE    STATE    REASON
eth0   -          02:00:00:00:00:b0   yes       no (primary NIC)   -        -
eth1   subnet-a   02:00:00:00:00:b1   no        yes                Ready    -
eth2   subnet-b   02:00:00:00:00:b2   no        yes                Failed   plugin bridge: no such device br9
Capacity: 4 (hotnic.io/interface-capacity); 3 NICs in use, 1 slot remaining
"
    );
    assert_eq!(
        ok(&["list", "-f", &file, "-o", "wide"]),
        "\
NAME   NETWORK    MAC                 PRIMARY   HOT-UNPLUGGABLE    STATE    REASON                              BINDING   IPS        PORT-ID   FIELD
eth0   -          02:00:00:00:00:b0   yes       no (primary NIC)   -        -                                   -         -          p0        spec.nics[0]
eth1   subnet-a   02:00:00:00:00:b1   no        yes                Ready    -                                   -         -          p1        spec.nics[1]
eth2   subnet-b   02:00:00:00:00:b2   no        yes                Failed   plugin bridge: no such device br9   -         10.0.0.7   -         spec.nics[2]
Capacity: 4 (hotnic.io/interface-capacity); 3 NICs in use, 1 slot remaining
"
    );
}

#[test]
fn list_kubevirt_vm_as_table_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let vm = serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm1", "namespace": "demo"},
        "spec": {"template": {"spec": {
            "domain": {"devices": {"interfaces": [
                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                {"name": "sriov1", "sriov": {}, "macAddress": "02:00:00:00:00:02"},
                {"name": "br1", "bridge": {}, "macAddress": "02:00:00:00:00:03"},
                {"name": "br2", "bridge": {}, "macAddress": "02:00:00:00:00:04", "state": "absent"}]},
                "resources": {"requests": {"kubevirt.io/interface": "4"}}},
            "networks": [
                {"name": "default", "pod": {}},
                {"name": "sriov1", "multus": {"networkName": "sriov-net"}},
                {"name": "br1", "multus": {"networkName": "infra/bridge-net"}},
                {"name": "br2", "multus": {"networkName": "bridge-net"}}]}}}
    });
    let file = write(dir.path(), "vm.yaml", &serde_yaml::to_string(&vm).unwrap());
    assert_eq!(
        ok(&["list", "-f", &file]),
        "\
NAME      NETWORK            MAC                 PRIMARY   HOT-UNPLUGGABLE                                       STATE    REASON
default   (pod network)      02:00:00:00:00:01   yes       no (primary NIC)                                      -        -
sriov1    demo/sriov-net     02:00:00:00:00:02   no        no (KubeVirt: only bridge binding can be unplugged)   -        -
br1       infra/bridge-net   02:00:00:00:00:03   no        yes                                                   -        -
br2       demo/bridge-net    02:00:00:00:00:04   no        no (already being unplugged)                          absent   -
Capacity: 4 (resources.requests[kubevirt.io/interface]); 3 NICs in use, 1 slot remaining
"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["list", "-f", &file, "-o", "json"])).unwrap();
    assert_eq!(json["dialect"], "kubevirt-vm");
    assert_eq!(
        (json["capacity"].as_u64(), json["remaining"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(json["nics"][1]["hotUnpluggable"], false);
    assert_eq!(
        json["nics"][1]["notUnpluggableBecause"],
        "KubeVirt: only bridge binding can be unplugged"
    );
    assert_eq!(json["nics"][2]["binding"], "bridge");
    let yaml: serde_json::Value =
        serde_yaml::from_str(&ok(&["list", "-f", &file, "-o", "yaml"])).unwrap();
    assert_eq!(yaml, json, "-o yaml and -o json carry the same listing");
}

#[test]
fn arktos_add_and_remove_dry_run_client_print_the_patch() {
    let out = ok(&[
        "add",
        "-f",
        "examples/arktos/vm-pod.yaml",
        "--name",
        "eth2",
        "--network",
        "subnet-c",
        "--port-id",
        "p-3",
        "--dry-run=client",
    ]);
    let (patch, rest) = out.split_once("\npod/ubuntu01: ").expect(&out);
    let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
    assert_eq!(
        patch,
        serde_json::json!([
            {"op": "test", "path": "/spec/nics", "value": [
                {"name": "eth0", "portID": "a2815656-76f7-46d4-9d11-057063db1a14"},
                {"name": "eth1", "portID": "33da18a3-1ad1-428a-90f5-9d906dc498fe", "subnetName": "subnet-b"}]},
            {"op": "add", "path": "/spec/nics/-",
             "value": {"name": "eth2", "subnetName": "subnet-c", "portID": "p-3"}}
        ])
    );
    assert_eq!(
        rest,
        "\
eth2 would be added (client dry run: nothing sent; hotnic's webhook assigns the MAC on admission)
NAME   NETWORK    MAC   PRIMARY   HOT-UNPLUGGABLE   STATE   REASON
eth2   subnet-c   -     no        yes               -       -
"
    );
    let out = ok(&[
        "remove",
        "-f",
        "examples/arktos/vm-pod.yaml",
        "--name",
        "eth1",
        "--dry-run=client",
    ]);
    assert!(
        out.starts_with("[\n  {\n    \"op\": \"test\",\n    \"path\": \"/spec/nics/1\""),
        "{out}"
    );
    assert!(
        out.contains("\"op\": \"remove\",\n    \"path\": \"/spec/nics/1\""),
        "{out}"
    );
    assert!(
        out.ends_with("pod/ubuntu01: eth1 would be removed (client dry run: nothing sent)\n"),
        "{out}"
    );

    // The primary is refused with the policy's (the webhook's) cause, exit 1.
    let err = failing(
        &[
            "remove",
            "-f",
            "examples/arktos/vm-pod.yaml",
            "--name",
            "eth0",
            "--dry-run=client",
        ],
        1,
    );
    assert_eq!(
        err,
        "error: hotnic's policy denies this change (hotnic's webhook would deny it the same):\n  spec.nics: \"eth0\" (was spec.nics[0]) is the primary NIC and may not be removed or renamed; keep it (only secondary NICs can be unplugged)\n"
    );
}

#[test]
fn kubevirt_and_multus_dry_run_client() {
    let out = ok(&[
        "add",
        "-f",
        "examples/kubevirt/vm.yaml",
        "--name",
        "dyn1",
        "--network",
        "demo/bridge-conf",
        "--mac",
        "02:00:00:00:0A:01",
        "--dry-run=client",
    ]);
    assert!(
        out.ends_with(
            "vm/vm-fedora: dyn1 would be added (client dry run: nothing sent)
NAME   NETWORK            MAC                 PRIMARY   HOT-UNPLUGGABLE   STATE   REASON
dyn1   demo/bridge-conf   02:00:00:00:0a:01   no        yes               -       -
"
        ),
        "{out}"
    );
    let out = ok(&[
        "remove",
        "-f",
        "examples/kubevirt/vm.yaml",
        "--name",
        "secondary",
        "--dry-run=client",
    ]);
    assert!(out.contains("\"path\": \"/spec/template/spec/domain/devices/interfaces/1/state\",\n    \"value\": \"absent\""), "{out}");
    assert!(out.contains("vm/vm-fedora: secondary would be set to state: absent (KubeVirt unplugs it) (client dry run: nothing sent)\n"), "{out}");
    assert!(out.ends_with("secondary   demo/bridge-conf   -     no        no (already being unplugged)   absent   -\n"), "{out}");

    let err = failing(
        &[
            "remove",
            "-f",
            "examples/kubevirt/vm.yaml",
            "--name",
            "default",
            "--dry-run=client",
        ],
        1,
    );
    assert_eq!(
        err,
        "error: hotnic's policy denies this change (hotnic's webhook would deny it the same):\n  spec.template.spec.domain.devices.interfaces[0].state: the primary interface (on the pod network) cannot be unplugged; remove \"state\": \"absent\" (only secondary NICs can be unplugged)\n"
    );
    let err = failing(
        &[
            "remove",
            "-f",
            "examples/multus/pod.yaml",
            "--name",
            "eth7",
            "--dry-run=client",
        ],
        1,
    );
    assert_eq!(
        err,
        "error: no NIC named \"eth7\"; its NICs: eth0, eth1, eth2\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["add", "deployment/web", "--name", "eth1", "--network", "n"][..],
        &["add", "pod/web", "--network", "n"],
        &[
            "add",
            "pod/web",
            "--name",
            "eth1",
            "--network",
            "n",
            "--mac",
            "nope",
        ],
        &[
            "add",
            "pod/web",
            "--name",
            "eth1",
            "--network",
            "n",
            "--dry-run=maybe",
        ],
        &["list"],
        &["list", "pod/web", "-o", "table"],
        &["completion", "fish"],
        &["frobnicate"],
    ] {
        failing(args, 2);
    }
    // -f edits offline only.
    let err = failing(
        &[
            "add",
            "-f",
            "examples/multus/pod.yaml",
            "--name",
            "eth3",
            "--network",
            "n",
        ],
        2,
    );
    assert!(err.contains("--dry-run=client"), "{err}");
    // A flag that does not fit the object's dialect.
    let err = failing(
        &[
            "add",
            "-f",
            "examples/multus/pod.yaml",
            "--name",
            "eth3",
            "--network",
            "n",
            "--port-id",
            "p",
            "--dry-run=client",
        ],
        2,
    );
    assert_eq!(
        err,
        "error: --port-id is for Arktos VM pods (spec.nics); this object has none\n"
    );
}

#[test]
fn completion_scripts() {
    let bash = ok(&["completion", "bash"]);
    assert!(
        bash.contains(
            "complete -F _kubectl__hotnic -o nosort -o bashdefault -o default kubectl-hotnic"
        ),
        "{bash}"
    );
    for word in [
        "add",
        "remove",
        "list",
        "completion",
        "--network",
        "--dry-run",
        "--kubeconfig",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let zsh = ok(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef kubectl-hotnic"), "{zsh}");
    assert!(zsh.contains("--network"));
}

#[test]
fn no_kubeconfig_is_a_failure_not_a_usage_error() {
    let err = failing(&["list", "pod/web"], 1);
    assert!(err.starts_with("error: no kubeconfig"), "{err}");
}
