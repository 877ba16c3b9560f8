//! The three dialects of "a workload with NICs": reading them into the model and writing patches
//! back in each one's own form.

pub mod annotations;
pub mod arktos;
pub mod kubevirt;
pub mod multus;

use crate::model::{Dialect, Field, Mac, Workload};
pub use annotations::PatchBuilder;
use serde_json::Value;

/// Which dialect a request's object speaks (looking at the old object too, so that removing the
/// last NIC is still seen). `Err(None)`: not hotnic's business; `Err(Some(w))`: skipped, with a
/// warning for the user.
pub fn detect(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Dialect, Option<String>> {
    match (group, kind) {
        ("", "Pod") => {
            if annotations::label(obj, "kubevirt.io") == Some("virt-launcher") {
                return Err(None);
            }
            let objects = || std::iter::once(obj).chain(old);
            let arktos = objects().any(|o| {
                o.get("spec")
                    .and_then(|s| s.get("nics"))
                    .is_some_and(|v| !v.is_null())
            });
            let multus = objects().any(|o| annotations::get(o, annotations::NETWORKS).is_some());
            // A pod with both speaks Arktos (the VM-pod API); the annotation is then not ours.
            match (arktos, multus) {
                (true, _) => Ok(Dialect::Arktos),
                (false, true) => Ok(Dialect::Multus),
                (false, false) => Err(None),
            }
        }
        ("kubevirt.io", "VirtualMachine") => Ok(Dialect::VirtualMachine),
        ("kubevirt.io", "VirtualMachineInstance") => Ok(Dialect::VirtualMachineInstance),
        _ => Err(None),
    }
}

/// Reads an object in a dialect. `namespace` is the request's (objects may lack it on CREATE).
pub fn read(d: Dialect, obj: &Value, namespace: &str) -> Workload {
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace);
    let mut w = match d {
        Dialect::Arktos => arktos::read(obj, namespace),
        Dialect::Multus => multus::read(obj, namespace),
        Dialect::VirtualMachine | Dialect::VirtualMachineInstance => {
            kubevirt::read(d, obj, namespace)
        }
    };
    w.capacity.annotation = annotations::get(obj, annotations::CAPACITY).map(|v| Field {
        path: annotations::path(annotations::CAPACITY),
        value: v.clone(),
    });
    w
}

/// Writes MACs, given as `(index into w.nics, MAC)`, in the dialect's own form.
pub fn write_macs(obj: &Value, w: &Workload, macs: &[(usize, Mac)], patch: &mut PatchBuilder) {
    match w.dialect {
        Dialect::Arktos => arktos::write_macs(obj, w, macs, patch),
        Dialect::Multus => {
            let by_element: Vec<_> = macs.iter().map(|(i, m)| (w.nics[*i].index, *m)).collect();
            multus::write_macs(obj, &by_element, patch)
        }
        Dialect::VirtualMachine | Dialect::VirtualMachineInstance => {
            let by_iface: Vec<_> = macs.iter().map(|(i, m)| (w.nics[*i].index, *m)).collect();
            kubevirt::write_macs(w.dialect, &by_iface, patch)
        }
    }
}

/// Whether an object is owned by a KubeVirt VirtualMachine (its VMI inherits the VM's MACs).
pub fn owned_by_vm(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("kind").and_then(Value::as_str) == Some("VirtualMachine")
                    && r.get("apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.starts_with("kubevirt.io/"))
            })
        })
}

/// An optional string field `key` of `obj`: absent or `null` is `None`; any other non-string is
/// reported as malformed at `{path}.{key}` and read as `None`.
fn optional_string(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<crate::model::Cause>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(crate::model::Cause::new(
                crate::model::Rule::Malformed,
                format!("{path}.{key}"),
                format!("must be a string, not {other}"),
            ));
            None
        }
    }
}
