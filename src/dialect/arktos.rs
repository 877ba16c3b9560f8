//! Arktos VM pods: `spec.nics[]`, with MACs in the `hotnic.io/mac-addresses` annotation.

use super::annotations::{self, MAC_ADDRESSES, MAC_ADDRESSES_PATH, PatchBuilder};
use crate::model::{
    BindingField, Dialect, FieldPath, Finding, Mac, NetworkRef, Nic, Syntax, Workload,
};
use serde_json::{Map, Value};

/// Field path of the list.
const NICS: &str = "spec.nics";

/// The MAC annotation as a map (NIC name → MAC text), or its syntax error.
fn mac_map(obj: &Value) -> Result<Map<String, Value>, Finding> {
    let bad = |s: Syntax| Finding::new(MAC_ADDRESSES_PATH, s);
    match annotations::get(obj, MAC_ADDRESSES) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => match m.iter().find(|(_, v)| !v.is_string()) {
                Some((k, v)) => Err(bad(Syntax::MacNotAString {
                    nic: k.clone(),
                    found: v.clone(),
                })),
                None => Ok(m),
            },
            Ok(other) => Err(bad(Syntax::NotAJsonObject(other))),
            Err(e) => Err(bad(Syntax::NotJson(e.to_string()))),
        },
        Some(other) => Err(bad(Syntax::AnnotationNotAString(other.clone()))),
    }
}

/// Reads an Arktos pod. The primary NIC is `eth0` (and the first NIC).
pub fn read(obj: &Value, namespace: &str) -> Workload {
    let mut w = Workload::new(Dialect::Arktos);
    let macs = mac_map(obj).unwrap_or_else(|f| {
        w.findings.push(f);
        Map::new()
    });
    let list = match super::view::at(obj, &["spec", "nics"]) {
        None | Some(Value::Null) => return w,
        Some(Value::Array(a)) => a,
        Some(other) => {
            w.found(NICS, Syntax::NotAList(other.clone()));
            return w;
        }
    };
    for (i, item) in list.iter().enumerate() {
        let path = FieldPath::element(NICS, i);
        let Some(el) = item.as_object() else {
            w.found(path, Syntax::NotAnObject);
            continue;
        };
        let mut text = |k: &'static str| super::optional_string(el, k, &path, &mut w.findings);
        let name = text("name");
        let lower = text("portId");
        let upper = text("portID");
        let subnet = text("subnetName").filter(|s| !s.is_empty());
        let ip = text("ipAddress").filter(|s| !s.is_empty());
        let (port_key, port_id) = match (&lower, &upper) {
            (Some(a), Some(b)) if a != b => {
                let spellings = Syntax::PortIdSpellings {
                    lower: a.clone(),
                    upper: b.clone(),
                };
                w.found(path.member("portID"), spellings);
                ("portId", lower.clone())
            }
            (Some(_), _) => ("portId", lower.clone()),
            (None, Some(_)) => ("portID", upper.clone()),
            (None, None) => ("portId", None),
        };
        let mac = name
            .as_deref()
            .and_then(|n| macs.get(n))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let mac_path = match &name {
            Some(n) => FieldPath::new(MAC_ADDRESSES_PATH).member(n.clone()),
            None => FieldPath::new(MAC_ADDRESSES_PATH),
        };
        w.nics.push(Nic {
            primary: i == 0 || name.as_deref() == Some("eth0"),
            name_path: path.member("name"),
            mac_parsed: Nic::parse_mac(mac.as_deref()),
            mac,
            mac_path,
            binding: vec![BindingField {
                key: "portId".into(),
                path: path.member(port_key),
                value: port_id.clone().map(Value::String).unwrap_or(Value::Null),
                set_once: true,
            }],
            method: None,
            network: subnet.map(|s| NetworkRef {
                namespace: namespace.to_string(),
                name: s,
            }),
            ips: ip.into_iter().collect(),
            port_id,
            present: true,
            implicit: false,
            index: i,
            name,
            path,
        });
    }
    w
}

/// Rewrites the MAC annotation to hold exactly the named NICs' MACs: `macs` (by NIC index in
/// `w.nics`) first, then what is already there. Entries of NICs no longer in the spec are dropped.
pub fn write_macs(obj: &Value, w: &Workload, macs: &[(usize, Mac)], patch: &mut PatchBuilder) {
    let Ok(current) = mac_map(obj) else { return };
    let mut next = Map::new();
    for (i, nic) in w.nics.iter().enumerate() {
        let Some(name) = &nic.name else { continue };
        let value = macs
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, m)| Value::String(m.to_string()))
            .or_else(|| current.get(name).cloned());
        if let Some(v) = value {
            next.entry(name.clone()).or_insert(v);
        }
    }
    if next != current {
        let text = serde_json::to_string(&next).unwrap_or_default();
        patch.set_annotation(MAC_ADDRESSES, text);
    }
}
