//! The three dialects of "a workload with NICs": reading them into the model and writing patches
//! back in each one's own form.

pub mod annotations;
pub mod arktos;
pub mod kubevirt;
pub mod multus;
pub mod view;

use crate::model::{Dialect, Field, FieldPath, Finding, Mac, Syntax, Workload};
pub use annotations::PatchBuilder;
use serde_json::Value;

/// A kind of object hotnic reads. The one list of them: the webhook configurations' `rules`
/// name exactly these (tests/manifests.rs checks it), and the metrics label kinds by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Core `v1` `Pod` (Arktos and Multus).
    Pod,
    /// `kubevirt.io` `VirtualMachine`.
    VirtualMachine,
    /// `kubevirt.io` `VirtualMachineInstance`.
    VirtualMachineInstance,
}

impl Kind {
    /// Every kind hotnic reads.
    pub const ALL: [Kind; 3] = [
        Kind::Pod,
        Kind::VirtualMachine,
        Kind::VirtualMachineInstance,
    ];

    /// The kind of a request's `group` and `kind`, if hotnic reads it.
    pub fn of(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }

    /// API group (`""` for core).
    pub fn group(&self) -> &'static str {
        match self {
            Kind::Pod => "",
            Kind::VirtualMachine | Kind::VirtualMachineInstance => "kubevirt.io",
        }
    }

    /// The kind's name (`Pod`, `VirtualMachine`, `VirtualMachineInstance`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::VirtualMachine => "VirtualMachine",
            Kind::VirtualMachineInstance => "VirtualMachineInstance",
        }
    }

    /// The API resource (plural), as webhook rules name it.
    pub fn resource(&self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::VirtualMachine => "virtualmachines",
            Kind::VirtualMachineInstance => "virtualmachineinstances",
        }
    }
}

/// Where each dialect writes its NICs, as JSON object keys from the object's root: an object
/// carries NICs when one of these is present.
const NIC_FIELDS: &[&[&str]] = &[
    // Multus: the networks annotation.
    &["metadata", "annotations", annotations::NETWORKS],
    // Arktos: spec.nics.
    &["spec", "nics"],
    // KubeVirt VirtualMachineInstance.
    &["spec", "domain", "devices", "interfaces"],
    // KubeVirt VirtualMachine.
    &[
        "spec",
        "template",
        "spec",
        "domain",
        "devices",
        "interfaces",
    ],
];

/// Whether an object carries NICs in any dialect's form: the networks annotation, `spec.nics`,
/// or KubeVirt interfaces, present (with any value, `null` too, like CEL's `has()`). `null` (no
/// object) carries none.
///
/// This is "is this object ours?": the webhook configurations' `matchConditions`
/// (manifests/base/webhook-configurations.yaml) say the same in CEL, and tests/manifests.rs
/// checks that they agree on every captured review and every example.
pub fn carries_nics(obj: &Value) -> bool {
    NIC_FIELDS.iter().any(|path| view::at(obj, path).is_some())
}

/// Which dialect a request's object speaks (looking at the old object too, so that removing the
/// last NIC is still seen). `Err(None)`: not hotnic's business (a kind hotnic does not read,
/// neither object [carries NICs](carries_nics), or a KubeVirt launcher pod); `Err(Some(w))`:
/// skipped, with a warning for the user.
pub fn detect(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Dialect, Option<String>> {
    let Some(kind) = Kind::of(group, kind) else {
        return Err(None);
    };
    let objects = || std::iter::once(obj).chain(old);
    if !objects().any(carries_nics) {
        return Err(None);
    }
    match kind {
        Kind::Pod => {
            if annotations::label(obj, "kubevirt.io") == Some("virt-launcher") {
                return Err(None);
            }
            let arktos =
                objects().any(|o| view::at(o, &["spec", "nics"]).is_some_and(|v| !v.is_null()));
            let multus = objects().any(|o| annotations::get(o, annotations::NETWORKS).is_some());
            // A pod with both speaks Arktos (the VM-pod API); the annotation is then not ours.
            match (arktos, multus) {
                (true, _) => Ok(Dialect::Arktos),
                (false, true) => Ok(Dialect::Multus),
                (false, false) => Err(None),
            }
        }
        Kind::VirtualMachine => Ok(Dialect::VirtualMachine),
        Kind::VirtualMachineInstance => Ok(Dialect::VirtualMachineInstance),
    }
}

/// Reads an object in a dialect. `namespace` is the request's (objects may lack it on CREATE).
pub fn read(d: Dialect, obj: &Value, namespace: &str) -> Workload {
    let namespace = view::at(obj, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace);
    if !obj.is_object() {
        let mut w = Workload::new(d);
        w.findings
            .push(Finding::new("object", Syntax::NotAWorkload(obj.clone())));
        return w;
    }
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
            multus::write_macs(obj, w.text_sites.as_ref(), &by_element, patch)
        }
        Dialect::VirtualMachine | Dialect::VirtualMachineInstance => {
            let by_iface: Vec<_> = macs.iter().map(|(i, m)| (w.nics[*i].index, *m)).collect();
            kubevirt::write_macs(w.dialect, &by_iface, patch)
        }
    }
}

/// Whether an object is owned by a KubeVirt VirtualMachine (its VMI inherits the VM's MACs).
pub fn owned_by_vm(obj: &Value) -> bool {
    view::at(obj, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                view::member(r, "kind").and_then(Value::as_str) == Some("VirtualMachine")
                    && view::member(r, "apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.starts_with("kubevirt.io/"))
            })
        })
}

/// An optional string field `key` of `obj`: absent or `null` is `None`; any other non-string is
/// recorded as a syntax finding at `{path}.{key}` and read as `None`.
fn optional_string(
    obj: &serde_json::Map<String, Value>,
    key: &'static str,
    path: &FieldPath,
    findings: &mut Vec<Finding>,
) -> Option<String> {
    match view::in_map(obj, key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            findings.push(Finding::new(
                path.member(key),
                Syntax::NotAString(other.clone()),
            ));
            None
        }
    }
}
