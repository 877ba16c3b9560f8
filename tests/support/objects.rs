//! Builders for test objects in each dialect.
#![allow(dead_code)]

use serde_json::{Value, json};

pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// A Multus pod whose networks annotation is `nets` (a JSON list, serialised).
pub fn multus(nets: Value) -> Value {
    multus_raw(&nets.to_string())
}

/// A Multus pod with the annotation text as given.
pub fn multus_raw(text: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "demo", "annotations": {NETWORKS: text}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    })
}

/// An Arktos VM pod with these NICs and (optionally) the MAC annotation.
pub fn arktos(nics: Value, macs: Option<Value>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vm1", "namespace": "demo"},
        "spec": {"nics": nics, "virtualMachine": {"name": "vm1", "image": "ubuntu"}}
    });
    if let Some(m) = macs {
        p["metadata"]["annotations"] = json!({"hotnic.io/mac-addresses": m.to_string()});
    }
    p
}

/// A KubeVirt VirtualMachine with these interfaces and networks.
pub fn vm(ifaces: Value, nets: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm-fedora", "namespace": "demo"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {"devices": {"interfaces": ifaces}, "resources": {"requests": {"memory": "1Gi"}}},
            "networks": nets
        }}}
    })
}

/// A KubeVirt VirtualMachineInstance with these interfaces and networks.
pub fn vmi(ifaces: Value, nets: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi1", "namespace": "demo"},
        "spec": {"domain": {"devices": {"interfaces": ifaces}}, "networks": nets}
    })
}

/// The usual VM: a masquerade primary on the pod network and a bridge secondary.
pub fn vm_basic() -> Value {
    vm(
        json!([{"name": "default", "masquerade": {}}, {"name": "secondary", "bridge": {}}]),
        json!([{"name": "default", "pod": {}}, {"name": "secondary", "multus": {"networkName": "bridge-conf"}}]),
    )
}

/// Sets an annotation.
pub fn annotate(mut obj: Value, key: &str, value: &str) -> Value {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = Value::String(value.into());
    obj
}

/// The VM template spec (mutable).
pub fn vm_spec(obj: &mut Value) -> &mut Value {
    if obj["kind"] == "VirtualMachine" {
        &mut obj["spec"]["template"]["spec"]
    } else {
        &mut obj["spec"]
    }
}
