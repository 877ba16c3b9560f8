//! NIC status as reported: `hotnic.io/nic-status`, Multus `network-status`, Arktos `nicStatuses`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A NIC's state (the Arktos `NICState` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicState {
    /// Not known yet (e.g. no network namespace yet).
    Unknown,
    /// Being plugged.
    InProgress,
    /// Plugged.
    Ready,
    /// Plugging failed; `reason` says why. Retried with backoff.
    Failed,
}

/// One NIC's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicStatus {
    /// Interface name.
    pub name: String,
    /// Arktos port ID.
    #[serde(rename = "portID", skip_serializing_if = "Option::is_none", default)]
    pub port_id: Option<String>,
    /// The MAC (as plugged when Ready, else as asked for).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<String>,
    /// The state.
    pub state: NicState,
    /// Why it is not Ready (the plugin's message on failure).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
}

/// One Multus `network-status` entry hotnic produces for a Ready NIC.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkStatusEntry {
    /// `namespace/name` of the network.
    pub network: String,
    /// Interface name.
    pub interface: String,
    /// Addresses without prefix length.
    pub ips: Vec<String>,
    /// MAC.
    pub mac: Option<String>,
    /// DNS settings from the result.
    pub dns: Option<Value>,
    /// Gateways from the result.
    pub gateway: Vec<String>,
}

impl NetworkStatusEntry {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.network));
        m.insert("interface".into(), json!(self.interface));
        if !self.ips.is_empty() {
            m.insert("ips".into(), json!(self.ips));
        }
        if let Some(mac) = &self.mac {
            m.insert("mac".into(), json!(mac));
        }
        m.insert("dns".into(), self.dns.clone().unwrap_or_else(|| json!({})));
        if !self.gateway.is_empty() {
            m.insert("gateway".into(), json!(self.gateway));
        }
        Value::Object(m)
    }
}

/// Merges hotnic's entries into an existing `network-status` list (JSON text or absent): entries
/// for interfaces hotnic does not manage (the default network included) are kept untouched and in
/// order; managed ones are replaced in place (or dropped when no longer Ready); new ones appended.
pub fn merge_network_status(
    existing: Option<&str>,
    managed: &[String],
    ours: &[NetworkStatusEntry],
) -> Value {
    let old: Vec<Value> = existing
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut placed = vec![false; ours.len()];
    for e in old {
        let iface = e.get("interface").and_then(Value::as_str).unwrap_or("");
        let is_default = e.get("default").and_then(Value::as_bool) == Some(true);
        if is_default || !managed.iter().any(|m| m == iface) {
            out.push(e);
            continue;
        }
        if let Some(i) = ours.iter().position(|o| o.interface == iface)
            && !placed[i]
        {
            out.push(ours[i].to_json());
            placed[i] = true;
        }
    }
    for (i, o) in ours.iter().enumerate() {
        if !placed[i] {
            out.push(o.to_json());
        }
    }
    Value::Array(out)
}

/// Strips the prefix length from a CIDR.
pub fn address_only(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(iface: &str) -> NetworkStatusEntry {
        NetworkStatusEntry {
            network: "ns/n".into(),
            interface: iface.into(),
            ips: vec!["10.0.0.2".into()],
            mac: Some("02:00:00:00:00:01".into()),
            dns: None,
            gateway: vec![],
        }
    }

    #[test]
    fn keeps_default_and_foreign_entries_in_order() {
        let existing = r#"[{"name":"cbr0","interface":"eth0","default":true,"ips":["10.244.0.5"]},
            {"name":"ns/old","interface":"eth1"},{"name":"other","interface":"net9"}]"#;
        let v = merge_network_status(
            Some(existing),
            &["eth1".into(), "eth2".into()],
            &[e("eth2")],
        );
        let names: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["interface"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["eth0", "net9", "eth2"]);
        assert_eq!(v[0]["ips"][0], "10.244.0.5");
        let v = merge_network_status(Some(existing), &["eth1".into()], &[e("eth1")]);
        assert_eq!(v[1]["name"], "ns/n");
        assert_eq!(v.as_array().unwrap().len(), 3);
    }
}
