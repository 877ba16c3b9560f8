//! `TYPE/NAME` arguments: which object a command is about.

use crate::dialect::Kind;
use kube::api::{ApiResource, GroupVersionKind};
use std::fmt;
use std::str::FromStr;

/// An object named on the command line, e.g. `pod/web` or `vm/vm-fedora`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// Why a `TYPE/NAME` argument is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((ty, name)) = s.split_once('/') else {
            return Err(TargetError(format!(
                "{s:?}: write TYPE/NAME, e.g. pod/web, vm/vm-fedora or vmi/vm-fedora"
            )));
        };
        let kind = kind_of(ty).ok_or_else(|| {
            TargetError(format!(
                "{ty:?} is not a type hotnic edits; use pod, vm (VirtualMachine) or vmi (VirtualMachineInstance)"
            ))
        })?;
        if name.is_empty() || name.contains('/') {
            return Err(TargetError(format!("{s:?}: write TYPE/NAME, e.g. pod/web")));
        }
        Ok(Target {
            kind,
            name: name.to_string(),
        })
    }
}

/// The kind a kubectl-style type name means (`pod`, `pods`, `po`, `vm`, `virtualmachine`, ...).
pub fn kind_of(ty: &str) -> Option<Kind> {
    let ty = ty.to_ascii_lowercase();
    let ty = ty.split('.').next().unwrap_or("");
    match ty {
        "pod" | "pods" | "po" => Some(Kind::Pod),
        "vm" | "vms" | "virtualmachine" | "virtualmachines" => Some(Kind::VirtualMachine),
        "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => {
            Some(Kind::VirtualMachineInstance)
        }
        _ => None,
    }
}

/// The short type name the plugin prints (`pod`, `vm`, `vmi`).
pub fn short(kind: Kind) -> &'static str {
    match kind {
        Kind::Pod => "pod",
        Kind::VirtualMachine => "vm",
        Kind::VirtualMachineInstance => "vmi",
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", short(self.kind), self.name)
    }
}

/// The API resource of a kind (core v1 pods, kubevirt.io/v1 VMs and VMIs).
pub fn api_resource(kind: Kind) -> ApiResource {
    // Every kind hotnic reads is served at v1 (core v1, kubevirt.io/v1).
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), "v1", kind.as_str()),
        kind.resource(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_style_types() {
        let t: Target = "pod/web".parse().unwrap();
        assert_eq!((t.kind, t.name.as_str()), (Kind::Pod, "web"));
        assert_eq!(
            "VirtualMachine/vm1".parse::<Target>().unwrap().kind,
            Kind::VirtualMachine
        );
        assert_eq!(
            "vmis.kubevirt.io/x".parse::<Target>().unwrap().kind,
            Kind::VirtualMachineInstance
        );
        assert_eq!("po/x".parse::<Target>().unwrap().to_string(), "pod/x");
        for bad in ["web", "deploy/web", "pod/", "pod/a/b"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        let r = api_resource(Kind::VirtualMachineInstance);
        assert_eq!(
            (r.group.as_str(), r.plural.as_str()),
            ("kubevirt.io", "virtualmachineinstances")
        );
        assert_eq!(api_resource(Kind::Pod).api_version, "v1");
    }
}
