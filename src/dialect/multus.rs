//! Multus pods: the `k8s.v1.cni.cncf.io/networks` annotation (JSON list or short form).

use super::annotations::{self, NETWORKS, PatchBuilder};
use crate::model::{
    BindingField, Cause, Dialect, Field, Mac, NetworkRef, Nic, Rule, Workload, index_path,
};
use serde_json::{Map, Value};

/// The annotation's elements, each as a JSON object (short-form entries converted).
#[derive(Debug, Default)]
pub struct Elements {
    /// The elements, in order.
    pub items: Vec<Value>,
    /// Whether the annotation used the short comma form.
    pub short_form: bool,
    /// Problems that make the annotation unreadable.
    pub problems: Vec<Cause>,
}

/// Parses the annotation value (a JSON list, or `net`, `ns/net`, `ns/net@ifname` separated by commas).
pub fn parse_elements(raw: &Value) -> Elements {
    let base = annotations::path(NETWORKS);
    let mut out = Elements::default();
    let Some(text) = raw.as_str() else {
        out.problems.push(Cause::new(
            Rule::Malformed,
            base,
            "must be a string: a JSON list of network-selection elements",
        ));
        return out;
    };
    let text = text.trim();
    if text.is_empty() {
        return out;
    }
    if text.starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(text) {
            Ok(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_object() {
                        out.problems.push(Cause::new(
                            Rule::Malformed,
                            index_path(&base, i),
                            "must be an object such as {\"name\": \"net1\", \"interface\": \"eth1\"}",
                        ));
                    }
                }
                out.items = items;
            }
            Err(e) => out.problems.push(Cause::new(
                Rule::Malformed,
                base,
                format!(
                    "not valid JSON ({e}); write a JSON list such as [{{\"name\":\"net1\",\"interface\":\"eth1\"}}] or the short form \"net1@eth1,ns2/net2@eth2\""
                ),
            )),
        }
        return out;
    }
    out.short_form = true;
    for (i, entry) in text.split(',').enumerate() {
        match parse_short(entry.trim()) {
            Ok(v) => out.items.push(v),
            Err(msg) => {
                out.problems
                    .push(Cause::new(Rule::Malformed, index_path(&base, i), msg));
                out.items.push(Value::Object(Map::new()));
            }
        }
    }
    out
}

/// One short-form entry: `net`, `ns/net`, `net@ifname` or `ns/net@ifname`.
fn parse_short(entry: &str) -> Result<Value, String> {
    let hint = "write `net`, `namespace/net` or `namespace/net@ifname`, separated by commas";
    if entry.is_empty() {
        return Err(format!("empty entry; {hint}"));
    }
    let (net, ifname) = match entry.split_once('@') {
        Some((n, i)) if !i.contains('@') => (n, Some(i)),
        Some(_) => return Err(format!("{entry:?} has more than one '@'; {hint}")),
        None => (entry, None),
    };
    let (ns, name) = match net.split_once('/') {
        Some((ns, n)) if !n.contains('/') => (Some(ns), n),
        Some(_) => return Err(format!("{entry:?} has more than one '/'; {hint}")),
        None => (None, net),
    };
    if name.is_empty() || ns.is_some_and(str::is_empty) || ifname.is_some_and(str::is_empty) {
        return Err(format!("{entry:?} has an empty part; {hint}"));
    }
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    if let Some(ns) = ns {
        m.insert("namespace".into(), Value::String(ns.into()));
    }
    if let Some(i) = ifname {
        m.insert("interface".into(), Value::String(i.into()));
    }
    Ok(Value::Object(m))
}

/// Reads a Multus pod. The first NIC is the implicit primary (cluster default network, eth0).
pub fn read(obj: &Value, namespace: &str) -> Workload {
    let mut w = Workload::new(Dialect::Multus);
    w.primary_network = annotations::get(obj, annotations::DEFAULT_NETWORK).map(|v| Field {
        path: annotations::path(annotations::DEFAULT_NETWORK),
        value: v.clone(),
    });
    w.nics.push(Nic {
        name: Some("eth0".into()),
        path: "the cluster default network (eth0)".into(),
        name_path: annotations::path(annotations::DEFAULT_NETWORK),
        mac: None,
        mac_path: String::new(),
        binding: Vec::new(),
        method: None,
        network: None,
        ips: Vec::new(),
        port_id: None,
        present: true,
        primary: true,
        implicit: true,
        index: 0,
    });
    let Some(raw) = annotations::get(obj, NETWORKS) else {
        return w;
    };
    let base = annotations::path(NETWORKS);
    let parsed = parse_elements(raw);
    w.problems.extend(parsed.problems);
    let mut default_routes = Vec::new();
    for (i, item) in parsed.items.iter().enumerate() {
        let Some(el) = item.as_object() else { continue };
        let path = index_path(&base, i);
        let field = |k: &str| format!("{path}.{k}");
        let mut text = |k: &str| super::optional_string(el, k, &path, &mut w.problems);
        let name = text("name");
        let ns = text("namespace");
        let ifname = text("interface");
        let mac = text("mac").filter(|m| !m.is_empty());
        if name.as_deref().is_none_or(str::is_empty) {
            w.problems.push(Cause::new(
                Rule::Multus,
                field("name"),
                "missing; every element names its NetworkAttachmentDefinition, e.g. \"name\": \"bridge-net\"",
            ));
        }
        let ips = match el.get("ips") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                w.problems.push(Cause::new(
                    Rule::Malformed,
                    field("ips"),
                    "must be a list of CIDR strings such as [\"10.1.1.5/24\"]",
                ));
                Vec::new()
            }
        };
        if !ips.is_empty() && el.contains_key("ipam-claim-reference") {
            w.problems.push(Cause::new(
                Rule::Multus,
                field("ips"),
                "ips and ipam-claim-reference exclude each other; keep one of them",
            ));
        }
        if el.get("default-route").is_some_and(|v| !v.is_null()) {
            default_routes.push(field("default-route"));
        }
        let network_ns = ns.clone().unwrap_or_else(|| namespace.to_string());
        let network = name.clone().map(|n| NetworkRef {
            namespace: network_ns.clone(),
            name: n,
        });
        let binding = vec![
            BindingField {
                key: "namespace".into(),
                path: field("namespace"),
                value: Value::String(network_ns),
                set_once: false,
            },
            BindingField {
                key: "name".into(),
                path: field("name"),
                value: name.map(Value::String).unwrap_or(Value::Null),
                set_once: false,
            },
            BindingField {
                key: "ips".into(),
                path: field("ips"),
                value: if ips.is_empty() {
                    Value::Null
                } else {
                    Value::from(ips.clone())
                },
                set_once: false,
            },
        ];
        w.nics.push(Nic {
            name: ifname,
            name_path: field("interface"),
            mac,
            mac_path: field("mac"),
            binding,
            method: None,
            network,
            ips,
            port_id: None,
            present: true,
            primary: false,
            implicit: false,
            index: i,
            path,
        });
    }
    for extra in default_routes.iter().skip(1) {
        w.problems.push(Cause::new(
            Rule::Multus,
            extra.clone(),
            format!(
                "only one element may set default-route (already set at {}); remove it here",
                default_routes[0]
            ),
        ));
    }
    w
}

/// Writes MACs (`(element index, MAC)`) into the annotation, in JSON form, keeping element order
/// and every other field.
pub fn write_macs(obj: &Value, macs: &[(usize, Mac)], patch: &mut PatchBuilder) {
    let Some(raw) = annotations::get(obj, NETWORKS) else {
        return;
    };
    let parsed = parse_elements(raw);
    if !parsed.problems.is_empty() {
        return;
    }
    let mut items = parsed.items;
    let mut changed = parsed.short_form;
    for (i, mac) in macs {
        if let Some(el) = items.get_mut(*i).and_then(Value::as_object_mut) {
            let text = mac.to_string();
            if el.get("mac").and_then(Value::as_str) != Some(text.as_str()) {
                el.insert("mac".into(), Value::String(text));
                changed = true;
            }
        }
    }
    if changed {
        let text = serde_json::to_string(&items).unwrap_or_default();
        patch.set_annotation(NETWORKS, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_form() {
        let e = parse_elements(&json!("macvlan-conf@eth1, demo/bridge-conf ,a/b@c"));
        assert!(e.problems.is_empty());
        assert_eq!(
            e.items,
            vec![
                json!({"name": "macvlan-conf", "interface": "eth1"}),
                json!({"name": "bridge-conf", "namespace": "demo"}),
                json!({"name": "b", "namespace": "a", "interface": "c"}),
            ]
        );
        for bad in ["a,,b", "a@b@c", "a/b/c", "/x", "x@", "a,"] {
            assert!(!parse_elements(&json!(bad)).problems.is_empty(), "{bad}");
        }
    }

    #[test]
    fn json_form_errors_are_causes() {
        assert_eq!(
            parse_elements(&json!("[{")).problems[0].rule,
            Rule::Malformed
        );
        assert_eq!(
            parse_elements(&json!("[1]")).problems[0].field,
            "metadata.annotations[k8s.v1.cni.cncf.io/networks][0]"
        );
        assert!(!parse_elements(&json!(5)).problems.is_empty());
    }
}
