//! KubeVirt `VirtualMachine` / `VirtualMachineInstance`: interfaces paired with networks by name.

use super::annotations::{KUBEVIRT_INTERFACE_RESOURCE, PatchBuilder};
use super::view::{at, in_map, member};
use crate::model::{
    BindingField, Dialect, Fact, Field, FieldPath, Finding, Mac, NetworkRef, Nic, Syntax, Workload,
    key_path,
};
use serde_json::Value;

/// Interface binding methods KubeVirt knows (one per interface).
const METHODS: &[&str] = &[
    "bridge",
    "masquerade",
    "sriov",
    "slirp",
    "passt",
    "macvtap",
    "binding",
];

/// Where the VMI spec lives: JSON Pointer tokens and field path.
fn root(d: Dialect) -> (&'static [&'static str], &'static str) {
    match d {
        Dialect::VirtualMachine => (&["spec", "template", "spec"], "spec.template.spec"),
        _ => (&["spec"], "spec"),
    }
}

/// Field paths of the interface and network lists (fixed, so NIC paths borrow them).
fn list_paths(d: Dialect) -> (&'static str, &'static str) {
    match d {
        Dialect::VirtualMachine => (
            "spec.template.spec.domain.devices.interfaces",
            "spec.template.spec.networks",
        ),
        _ => ("spec.domain.devices.interfaces", "spec.networks"),
    }
}

/// A list at `tokens`, or a syntax finding when it is there but not a list.
fn list<'a>(v: Option<&'a Value>, path: &str, findings: &mut Vec<Finding>) -> &'a [Value] {
    match v {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => &[],
        Some(other) => {
            findings.push(Finding::new(path, Syntax::NotAList(other.clone())));
            &[]
        }
    }
}

fn name_of(v: &Value) -> Option<&str> {
    member(v, "name").and_then(Value::as_str)
}

/// Reads a VM or VMI.
pub fn read(d: Dialect, obj: &Value, namespace: &str) -> Workload {
    let mut w = Workload::new(d);
    let (tokens, base) = root(d);
    let Some(spec) = at(obj, tokens) else {
        return w;
    };
    let (ifaces_path, nets_path) = list_paths(d);
    let ifaces = list(
        at(spec, &["domain", "devices", "interfaces"]),
        ifaces_path,
        &mut w.findings,
    );
    let nets = list(member(spec, "networks"), nets_path, &mut w.findings);

    let resources = format!("{base}.domain.resources");
    for (which, slot) in [("requests", 0), ("limits", 1)] {
        if let Some(v) = at(
            spec,
            &["domain", "resources", which, KUBEVIRT_INTERFACE_RESOURCE],
        ) {
            let f = Field {
                path: key_path(&format!("{resources}.{which}"), KUBEVIRT_INTERFACE_RESOURCE),
                value: v.clone(),
            };
            if slot == 0 {
                w.capacity.request = Some(f);
            } else {
                w.capacity.limit = Some(f);
            }
        }
    }

    // Interfaces and networks are paired by name: record the names without a partner.
    for (j, net) in nets.iter().enumerate() {
        let path = FieldPath::element(nets_path, j).member("name");
        let Some(n) = name_of(net) else {
            w.found(path, Fact::UnnamedNetwork);
            continue;
        };
        if !ifaces.iter().any(|i| name_of(i) == Some(n)) {
            let fact = Fact::NetworkWithoutInterface {
                name: n.to_string(),
                interfaces: ifaces_path.to_string(),
            };
            w.found(path, fact);
        }
    }

    let mut primary = None;
    for (i, iface) in ifaces.iter().enumerate() {
        let path = FieldPath::element(ifaces_path, i);
        let Some(obj_i) = iface.as_object() else {
            w.found(path, Syntax::NotAnObject);
            continue;
        };
        let name = super::optional_string(obj_i, "name", &path, &mut w.findings);
        let mac = super::optional_string(obj_i, "macAddress", &path, &mut w.findings)
            .filter(|m| !m.is_empty());
        let present = in_map(obj_i, "state").and_then(Value::as_str) != Some("absent");
        let method = METHODS
            .iter()
            .find(|m| in_map(obj_i, m).is_some())
            .map(|m| {
                if *m == "binding" {
                    let plugin = in_map(obj_i, "binding").and_then(name_of).unwrap_or("");
                    format!("binding:{plugin}")
                } else {
                    m.to_string()
                }
            });
        let mut binding: Vec<BindingField> = obj_i
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "macAddress" | "state"))
            .map(|(k, v)| BindingField {
                key: format!("interface.{k}").into(),
                path: path.member(k.clone()),
                value: v.clone(),
                set_once: false,
            })
            .collect();
        let net = name
            .as_deref()
            .and_then(|n| nets.iter().position(|x| name_of(x) == Some(n)));
        let mut network = None;
        match (net, &name) {
            (Some(j), _) => {
                let net_obj = &nets[j];
                if let Some(m) = net_obj.as_object() {
                    binding.extend(
                        m.iter()
                            .filter(|(k, _)| k.as_str() != "name")
                            .map(|(k, v)| BindingField {
                                key: format!("network.{k}").into(),
                                path: FieldPath::element(nets_path, j).member(k.clone()),
                                value: v.clone(),
                                set_once: false,
                            }),
                    );
                }
                let is_default = member(net_obj, "pod").is_some()
                    || at(net_obj, &["multus", "default"]).and_then(Value::as_bool) == Some(true);
                if is_default && primary.is_none() {
                    primary = Some(w.nics.len());
                }
                network = at(net_obj, &["multus", "networkName"])
                    .and_then(Value::as_str)
                    .map(|full| match full.split_once('/') {
                        Some((ns, n)) => NetworkRef {
                            namespace: ns.into(),
                            name: n.into(),
                        },
                        None => NetworkRef {
                            namespace: namespace.into(),
                            name: full.into(),
                        },
                    });
            }
            (None, Some(n)) => w.found(
                path.member("name"),
                Fact::InterfaceWithoutNetwork {
                    name: n.clone(),
                    networks: nets_path.to_string(),
                },
            ),
            (None, None) => {}
        }
        w.nics.push(Nic {
            name_path: path.member("name"),
            mac_parsed: Nic::parse_mac(mac.as_deref()),
            mac,
            mac_path: path.member("macAddress"),
            binding,
            method,
            network,
            ips: Vec::new(),
            port_id: None,
            present,
            primary: false,
            implicit: false,
            index: i,
            name,
            path,
        });
    }
    if let Some(p) = primary.or(if w.nics.is_empty() { None } else { Some(0) }) {
        w.nics[p].primary = true;
    }
    w
}

/// Writes MACs (`(interface index, MAC)`) into `macAddress`.
pub fn write_macs(d: Dialect, macs: &[(usize, Mac)], patch: &mut PatchBuilder) {
    let (tokens, _) = root(d);
    for (i, mac) in macs {
        let index = i.to_string();
        let mut path: Vec<&str> = tokens.to_vec();
        path.extend([
            "domain",
            "devices",
            "interfaces",
            index.as_str(),
            "macAddress",
        ]);
        patch.add(&path, Value::String(mac.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_paths_are_under_the_root() {
        for d in [Dialect::VirtualMachine, Dialect::VirtualMachineInstance] {
            let (_, base) = root(d);
            let (ifaces, nets) = list_paths(d);
            assert_eq!(ifaces, format!("{base}.domain.devices.interfaces"));
            assert_eq!(nets, format!("{base}.networks"));
        }
    }
}
