//! The `MACAddress` custom resource (`hotnic.io/v1alpha1`, cluster-scoped): one object per MAC in
//! use, named after the MAC, so that the API server's create-if-absent on the name is the lock.
//! The CRD itself is `manifests/base/macaddress-crd.yaml` (tests/manifests.rs checks that this
//! type and it agree).
//!
//! Names: `02-1a-2b-3c-4d-5e` for a cluster-wide claim (the MAC with `-` for `:`); with
//! `--mac-scope network`, a NIC on a network is claimed as `<mac>.<namespace>.<network>`
//! (`02-1a-2b-3c-4d-5e.demo.blue`), or `<mac>.<namespace>.h<16 hex digits>` when the network's
//! name is not a DNS label or the whole would exceed 253 characters (a hash of the name). The
//! spec always carries the address and the network in full; the name is only the lock.

use crate::allocator::{Owner, Scope};
use crate::model::{Mac, NetworkRef};
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// API group.
pub const GROUP: &str = "hotnic.io";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "MACAddress";
/// Resource (plural).
pub const PLURAL: &str = "macaddresses";

/// A claim on one MAC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacAddress {
    /// `hotnic.io/v1alpha1`.
    #[serde(default = "api_version")]
    pub api_version: String,
    /// `MACAddress`.
    #[serde(default = "kind")]
    pub kind: String,
    /// Name (the MAC, see the module docs), uid, resourceVersion, creationTimestamp.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The claim.
    pub spec: MacAddressSpec,
}

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind() -> String {
    KIND.into()
}

/// What a `MACAddress` says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacAddressSpec {
    /// The MAC, lower-case `aa:bb:cc:dd:ee:ff`.
    pub address: String,
    /// `namespace/name` of the network the MAC is unique on; absent: unique in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The NIC's name in its owner (`eth1`, a KubeVirt interface name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nic: String,
    /// Who holds it.
    pub owner: ClaimOwner,
}

/// The object holding a MAC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimOwner {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Resource (`pods`, `virtualmachines`, `virtualmachineinstances`).
    pub resource: String,
    /// Kind (`Pod`, ...), for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name; absent while an object created with `generateName` has none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `generateName` of such an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// The object's uid, once known (bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The claim token of an object created without a name (its `hotnic.io/claim-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<&Owner> for ClaimOwner {
    fn from(o: &Owner) -> Self {
        ClaimOwner {
            group: o.group.clone(),
            resource: o.resource.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            generate_name: o.generate_name.clone(),
            uid: o.uid.clone(),
            token: o.token.clone(),
        }
    }
}

impl From<&ClaimOwner> for Owner {
    fn from(o: &ClaimOwner) -> Self {
        Owner {
            group: o.group.clone(),
            kind: if o.kind.is_empty() {
                o.resource.clone()
            } else {
                o.kind.clone()
            },
            resource: o.resource.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            generate_name: o.generate_name.clone(),
            uid: o.uid.clone(),
            token: o.token.clone(),
        }
    }
}

impl Resource for MacAddress {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl MacAddress {
    /// A new claim of `mac` in `scope` for `owner`'s NIC `nic`, named as the module docs say.
    pub fn new(scope: &Scope, mac: Mac, nic: &str, owner: &Owner) -> Self {
        MacAddress {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name(scope, mac)),
                ..ObjectMeta::default()
            },
            spec: MacAddressSpec {
                address: mac.to_string(),
                network: match scope {
                    Scope::Cluster => None,
                    Scope::Network(n) => Some(n.to_string()),
                },
                nic: nic.to_string(),
                owner: owner.into(),
            },
        }
    }

    /// The claimed MAC and its scope, from the spec; `None` for a spec that does not parse.
    pub fn key(&self) -> Option<(Scope, Mac)> {
        let mac = self.spec.address.parse().ok()?;
        let scope = match &self.spec.network {
            None => Scope::Cluster,
            Some(n) => {
                let (namespace, name) = n.split_once('/')?;
                Scope::Network(NetworkRef {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
        };
        Some((scope, mac))
    }

    /// The holder.
    pub fn owner(&self) -> Owner {
        (&self.spec.owner).into()
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The object name of the claim of `mac` in `scope`.
pub fn name(scope: &Scope, mac: Mac) -> String {
    let m = mac.to_string().replace(':', "-");
    match scope {
        Scope::Cluster => m,
        Scope::Network(n) => {
            let plain = format!("{m}.{}.{}", n.namespace, n.name);
            let name_ok = n.name.split('.').all(dns_label);
            if dns_label(&n.namespace) && name_ok && plain.len() <= 253 {
                plain
            } else {
                format!(
                    "{m}.{}.h{:016x}",
                    short(&n.namespace),
                    fnv64(&n.to_string())
                )
            }
        }
    }
}

/// A namespace as a DNS label (namespaces always are; anything else is hashed).
fn short(ns: &str) -> String {
    if dns_label(ns) {
        ns.to_string()
    } else {
        format!("h{:016x}", fnv64(ns))
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (names are persisted).
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_mac_and_carry_the_network_scope() {
        let mac: Mac = "02:1A:2b:3c:4d:5e".parse().unwrap();
        assert_eq!(name(&Scope::Cluster, mac), "02-1a-2b-3c-4d-5e");
        let net = |ns: &str, n: &str| {
            Scope::Network(NetworkRef {
                namespace: ns.into(),
                name: n.into(),
            })
        };
        assert_eq!(
            name(&net("demo", "blue.v2"), mac),
            "02-1a-2b-3c-4d-5e.demo.blue.v2"
        );
        let odd = name(&net("demo", "Subnet_A"), mac);
        assert!(odd.starts_with("02-1a-2b-3c-4d-5e.demo.h") && odd.len() == 17 + 6 + 17);
        assert_ne!(odd, name(&net("demo", "Subnet_B"), mac));
        let long = name(&net("demo", &"a".repeat(240)), mac);
        assert!(long.len() <= 253, "{long}");
    }

    #[test]
    fn round_trips_scope_mac_and_owner() {
        let owner = Owner {
            group: "kubevirt.io".into(),
            kind: "VirtualMachine".into(),
            resource: "virtualmachines".into(),
            namespace: "demo".into(),
            name: Some("vm1".into()),
            ..Owner::default()
        };
        let scope = Scope::Network(NetworkRef {
            namespace: "demo".into(),
            name: "blue".into(),
        });
        let mac: Mac = "02:00:00:00:00:07".parse().unwrap();
        let claim = MacAddress::new(&scope, mac, "nic1", &owner);
        let json = serde_json::to_value(&claim).unwrap();
        assert_eq!(json["apiVersion"], "hotnic.io/v1alpha1");
        assert_eq!(json["kind"], "MACAddress");
        assert_eq!(json["spec"]["network"], "demo/blue");
        assert!(json["spec"]["owner"].get("uid").is_none());
        let back: MacAddress = serde_json::from_value(json).unwrap();
        assert_eq!(back.key(), Some((scope, mac)));
        assert_eq!(back.owner(), owner);
        let mut bad = back;
        bad.spec.address = "nope".into();
        assert_eq!(bad.key(), None);
    }
}
