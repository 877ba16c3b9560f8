//! The parts of a CNI result the agent reports (any result version: 0.2.0 `ip4`, 0.3+/1.0 `ips`).

use serde_json::Value;

/// What a result says about one sandbox interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSummary {
    /// The interface's MAC as the plugin reported it.
    pub mac: Option<String>,
    /// Addresses (CIDR) assigned to it.
    pub ips: Vec<String>,
    /// Gateways, if reported.
    pub gateways: Vec<String>,
    /// DNS settings, if reported.
    pub dns: Option<Value>,
}

impl ResultSummary {
    /// Reads a result for the sandbox interface `ifname`.
    pub fn from_result(result: &Value, ifname: &str) -> Self {
        let mut out = Self::default();
        let ifaces = result
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours: Option<usize> = ifaces.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        });
        if let Some(i) = ours {
            out.mac = ifaces[i]
                .get("mac")
                .and_then(Value::as_str)
                .map(str::to_lowercase);
        }
        if let Some(ips) = result.get("ips").and_then(Value::as_array) {
            for ip in ips {
                let idx = ip.get("interface").and_then(Value::as_u64);
                if idx.is_some() && idx.map(|x| x as usize) != ours {
                    continue;
                }
                if let Some(a) = ip.get("address").and_then(Value::as_str) {
                    out.ips.push(a.to_string());
                }
                if let Some(g) = ip.get("gateway").and_then(Value::as_str) {
                    out.gateways.push(g.to_string());
                }
            }
        }
        for key in ["ip4", "ip6"] {
            if let Some(a) = result
                .get(key)
                .and_then(|v| v.get("ip"))
                .and_then(Value::as_str)
            {
                out.ips.push(a.to_string());
            }
        }
        out.dns = result
            .get("dns")
            .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
            .cloned();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_sandbox_interface() {
        let r = json!({"cniVersion":"1.0.0","interfaces":[
            {"name":"br0","mac":"AA:00:00:00:00:01"},
            {"name":"veth1","mac":"aa:00:00:00:00:02"},
            {"name":"eth1","mac":"02:00:00:00:00:03","sandbox":"/run/netns/x"}],
            "ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":2},
                   {"address":"10.9.0.5/24","interface":0}]});
        let s = ResultSummary::from_result(&r, "eth1");
        assert_eq!(s.mac.as_deref(), Some("02:00:00:00:00:03"));
        assert_eq!(s.ips, vec!["10.1.0.5/24"]);
        assert_eq!(s.gateways, vec!["10.1.0.1"]);
    }

    #[test]
    fn old_results() {
        let s = ResultSummary::from_result(&json!({"ip4":{"ip":"10.0.0.2/8"}}), "eth1");
        assert_eq!(s.ips, vec!["10.0.0.2/8"]);
        assert_eq!(s.mac, None);
    }
}
