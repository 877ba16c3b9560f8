//! A pod's desired NICs, read through the dialect readers.

use super::netns::PodRef;
use crate::model::{Dialect, Mac, NetworkRef};
use serde_json::Value;

/// A NIC the pod wants plugged.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedNic {
    /// Interface name (`CNI_IFNAME`).
    pub ifname: String,
    /// Its network, if named.
    pub network: Option<NetworkRef>,
    /// The MAC asked for.
    pub mac: Option<Mac>,
    /// Why the written MAC is unusable, if it is.
    pub mac_problem: Option<String>,
    /// Static IPs (`runtimeConfig.ips`).
    pub ips: Vec<String>,
    /// Arktos port ID.
    pub port_id: Option<String>,
    /// The network's CNI config text, or why it could not be found (filled by the caller).
    pub config: Result<String, String>,
}

/// A pod's identity, dialect and wanted NICs.
#[derive(Debug, Clone)]
pub struct DesiredPod {
    /// The pod.
    pub pod: PodRef,
    /// Its dialect (`None`: no NICs of hotnic's business).
    pub dialect: Option<Dialect>,
    /// NICs to plug (present, named, not primary, not implicit).
    pub nics: Vec<WantedNic>,
}

/// Reads a pod object. `None` when it has no name.
pub fn read_pod(pod: &Value) -> Option<DesiredPod> {
    let meta = pod.get("metadata")?;
    let s = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = s("name")?.to_string();
    let namespace = s("namespace").unwrap_or("default").to_string();
    let uid = s("uid")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{namespace}_{name}"));
    let pod_ref = PodRef {
        uid,
        namespace: namespace.clone(),
        name,
    };
    let dialect = crate::dialect::detect("", "Pod", pod, None).ok();
    let mut nics = Vec::new();
    if let Some(d) = dialect {
        let w = crate::dialect::read(d, pod, &namespace);
        for nic in w
            .nics
            .iter()
            .filter(|n| n.present && !n.implicit && !n.primary)
        {
            let Some(ifname) = nic.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let mac = nic.parsed_mac();
            let mac_problem = match (&nic.mac, mac) {
                (Some(text), None) => Some(format!("MAC {text:?} is not a valid MAC address")),
                _ => None,
            };
            nics.push(WantedNic {
                ifname,
                network: nic.network.clone(),
                mac,
                mac_problem,
                ips: nic.ips.clone(),
                port_id: nic.port_id.clone(),
                config: Err("network not resolved".into()),
            });
        }
    }
    Some(DesiredPod {
        pod: pod_ref,
        dialect,
        nics,
    })
}
