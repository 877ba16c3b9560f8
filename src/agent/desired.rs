//! A pod's desired NICs, read through the dialect readers, and the hash of them the engine uses to
//! tell whether a pod changed.

use super::netns::PodRef;
use crate::model::{Dialect, Mac, NetworkRef};
use crate::runtime::Chain;
use serde_json::Value;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A NIC the pod wants plugged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WantedNic {
    /// Interface name (`CNI_IFNAME`).
    pub ifname: String,
    /// Its network, if named.
    pub network: Option<NetworkRef>,
    /// The MAC asked for.
    pub mac: Option<Mac>,
    /// Why the written MAC is unusable, if it is.
    pub mac_problem: Option<InvalidMac>,
    /// Static IPs (`runtimeConfig.ips`).
    pub ips: Vec<String>,
    /// Arktos port ID.
    pub port_id: Option<String>,
    /// The network's CNI config, as far as it is known: [`read_pod`] leaves it
    /// [`NetworkConfig::Unresolved`]; the engine looks the network up before a reconcile.
    pub config: NetworkConfig,
}

/// A MAC written on a NIC that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("MAC {text:?} is not a valid MAC address")]
pub struct InvalidMac {
    /// The text as written.
    pub text: String,
}

/// What is known of a NIC's network config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetworkConfig {
    /// Not looked up (yet): the NIC names no network, or nobody asked the backend.
    Unresolved,
    /// The network's CNI config text (NetworkAttachmentDefinition `spec.config`).
    Found(String),
    /// The network has no usable config.
    Unavailable(NetworkError),
}

impl From<Result<String, NetworkError>> for NetworkConfig {
    fn from(r: Result<String, NetworkError>) -> Self {
        match r {
            Ok(config) => Self::Found(config),
            Err(e) => Self::Unavailable(e),
        }
    }
}

/// Why a network has no usable config. Compared and hashed by its text with every cause (it is an
/// input of a reconcile, see [`DesiredPod::input_hash`]: the same reason, the same input).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetworkError {
    /// No such NetworkAttachmentDefinition.
    #[error("NetworkAttachmentDefinition {0} not found")]
    NotFound(NetworkRef),
    /// The NetworkAttachmentDefinition has no `spec.config`.
    #[error("NetworkAttachmentDefinition {0} has no spec.config")]
    NoConfig(NetworkRef),
    /// Its `spec.config` is not a string.
    #[error(
        "NetworkAttachmentDefinition {net}: spec.config must be a CNI JSON string, not {value}"
    )]
    ConfigNotAString {
        /// The network.
        net: NetworkRef,
        /// What `spec.config` holds (JSON).
        value: String,
    },
    /// The backend could not look it up (e.g. the API server refused or could not be reached).
    #[error("getting NetworkAttachmentDefinition {net}")]
    Lookup {
        /// The network.
        net: NetworkRef,
        /// The backend's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl PartialEq for NetworkError {
    fn eq(&self, other: &Self) -> bool {
        Chain(self).to_string() == Chain(other).to_string()
    }
}

impl Eq for NetworkError {}

impl Hash for NetworkError {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Chain(self).to_string().hash(state);
    }
}

/// A pod's identity, dialect and wanted NICs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesiredPod {
    /// The pod.
    pub pod: PodRef,
    /// Its dialect (`None`: no NICs of hotnic's business).
    pub dialect: Option<Dialect>,
    /// NICs to plug (present, named, not primary, not implicit).
    pub nics: Vec<WantedNic>,
    /// Set for a VM pod (its NICs go into a libvirt domain, see [`crate::agent::vm`]).
    pub vm: Option<VmTarget>,
}

/// What a pod says about its VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmTarget {
    /// The domain named by the `hotnic.io/domain` annotation (else the agent's template).
    pub domain: Option<String>,
}

/// A VM pod: an Arktos pod with `spec.virtualMachine`, or any pod with a `hotnic.io/domain`
/// annotation.
pub fn vm_target(pod: &Value) -> Option<VmTarget> {
    let domain = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(super::vm::DOMAIN_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let arktos_vm = pod
        .pointer("/spec/virtualMachine")
        .is_some_and(|v| !v.is_null());
    (arktos_vm || domain.is_some()).then_some(VmTarget { domain })
}

impl DesiredPod {
    /// A hash of everything a reconcile of the pod depends on that the pod object and the networks
    /// say: its identity, dialect and wanted NICs with their networks' config text (or why there is
    /// none). Equal hashes: the same input, so a reconcile that succeeded with it need not run
    /// again. Computed from the values themselves (derived `Hash`), stable within one process.
    pub fn input_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    /// The networks its NICs name.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkRef> {
        self.nics.iter().filter_map(|n| n.network.as_ref())
    }
}

/// Which pod an object is: `metadata.uid` (standalone manifests without one get
/// `{namespace}_{name}`), namespace (default `default`) and name. `None` when it has no name.
pub fn pod_ref(pod: &Value) -> Option<PodRef> {
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
    Some(PodRef {
        uid,
        namespace,
        name,
    })
}

/// Whether the pod is being deleted (`metadata.deletionTimestamp` set): it gets no new NICs.
pub fn is_terminating(pod: &Value) -> bool {
    pod.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}

/// Reads a pod object. `None` when it has no name.
pub fn read_pod(pod: &Value) -> Option<DesiredPod> {
    let pod_ref = pod_ref(pod)?;
    let namespace = pod_ref.namespace.clone();
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
                (Some(text), None) => Some(InvalidMac { text: text.clone() }),
                _ => None,
            };
            nics.push(WantedNic {
                ifname,
                network: nic.network.clone(),
                mac,
                mac_problem,
                ips: nic.ips.clone(),
                port_id: nic.port_id.clone(),
                config: NetworkConfig::Unresolved,
            });
        }
    }
    Some(DesiredPod {
        pod: pod_ref,
        dialect,
        nics,
        vm: vm_target(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, rv: &str, networks: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": rv,
                "labels": labels,
                "annotations": {"k8s.v1.cni.cncf.io/networks": networks.to_string()}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}})
    }

    fn hash(p: &Value, config: &str) -> u64 {
        let mut d = read_pod(p).unwrap();
        for n in &mut d.nics {
            n.config = NetworkConfig::Found(config.to_string());
        }
        d.input_hash()
    }

    #[test]
    fn the_input_hash_follows_the_desired_nics_and_configs_only() {
        let nets = json!([{"name": "br", "interface": "eth1", "mac": "02:00:00:00:00:01"}]);
        let base = hash(&pod(json!({"a": "1"}), "1", nets.clone()), "{}");
        // Labels and resourceVersion are not inputs.
        assert_eq!(
            hash(&pod(json!({"a": "2", "b": "x"}), "99", nets.clone()), "{}"),
            base
        );
        // The NICs and their networks' config text are.
        let other_mac = json!([{"name": "br", "interface": "eth1", "mac": "02:00:00:00:00:02"}]);
        assert_ne!(hash(&pod(json!({"a": "1"}), "1", other_mac), "{}"), base);
        let two = json!([{"name": "br", "interface": "eth1", "mac": "02:00:00:00:00:01"},
                         {"name": "br", "interface": "eth2", "mac": "02:00:00:00:00:03"}]);
        assert_ne!(hash(&pod(json!({"a": "1"}), "1", two), "{}"), base);
        assert_ne!(
            hash(&pod(json!({"a": "1"}), "1", nets.clone()), "{\"x\":1}"),
            base
        );
        // So is why a network has no config, and whether it was looked up at all.
        let mut d = read_pod(&pod(json!({}), "1", nets)).unwrap();
        assert_eq!(d.nics[0].config, NetworkConfig::Unresolved);
        let unresolved = d.input_hash();
        let missing = NetworkRef {
            namespace: "ns".into(),
            name: "br".into(),
        };
        d.nics[0].config = NetworkConfig::Unavailable(NetworkError::NotFound(missing.clone()));
        let not_found = d.input_hash();
        assert!(not_found != base && not_found != unresolved);
        d.nics[0].config = NetworkConfig::Unavailable(NetworkError::NoConfig(missing));
        assert_ne!(d.input_hash(), not_found);
    }

    #[test]
    fn network_errors_compare_by_their_text_with_causes() {
        let net = NetworkRef {
            namespace: "ns".into(),
            name: "n".into(),
        };
        let lookup = |why: &str| NetworkError::Lookup {
            net: net.clone(),
            source: Arc::new(std::io::Error::other(why.to_string())),
        };
        assert_eq!(lookup("refused"), lookup("refused"));
        assert_ne!(lookup("refused"), lookup("timed out"));
        assert_eq!(
            Chain(&lookup("refused")).to_string(),
            "getting NetworkAttachmentDefinition ns/n: refused"
        );
    }

    #[test]
    fn pod_ref_and_terminating() {
        let mut p = pod(json!({}), "1", json!([]));
        assert_eq!(pod_ref(&p).unwrap().uid, "u1");
        assert!(!is_terminating(&p));
        p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(is_terminating(&p));
        p["metadata"].as_object_mut().unwrap().remove("uid");
        assert_eq!(pod_ref(&p).unwrap().uid, "ns_p");
        p["metadata"]["name"] = json!("");
        assert_eq!(pod_ref(&p), None);
    }
}
