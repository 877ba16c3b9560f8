//! The policy's view of an object: the object decoded with only the members the readers, the
//! patch writers and the policy read; every other member is skipped unread (containers,
//! `managedFields`, status, other annotations…). The webhook decodes reviews this way, so a
//! review costs what hotnic reads, not what the object weighs.
//!
//! Only members are dropped, never changed: a kept member holds exactly the JSON sent, and a value
//! that is not an object where one is expected is kept whole, so every reader sees in the view
//! what it would see in the whole object (the tests below check it on every capture).

use super::annotations::{
    CAPACITY, DEFAULT_NETWORK, KUBEVIRT_INTERFACE_RESOURCE, MAC_ADDRESSES, NETWORKS,
};
use crate::allocator::CLAIM_TOKEN;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Which part of a value to keep.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The whole value.
    All,
    /// An object: only these members (each kept as said); any other value: whole.
    Members(&'static [(&'static str, Keep)]),
}

use Keep::{All, Members};

const ANNOTATIONS: &[(&str, Keep)] = &[
    (NETWORKS, All),
    (DEFAULT_NETWORK, All),
    (MAC_ADDRESSES, All),
    (CAPACITY, All),
    (CLAIM_TOKEN, All),
];

const METADATA: &[(&str, Keep)] = &[
    ("name", All),
    ("namespace", All),
    ("generateName", All),
    ("uid", All),
    ("annotations", Members(ANNOTATIONS)),
    ("labels", Members(&[("kubevirt.io", All)])),
    ("ownerReferences", All),
];

const INTERFACE_RESOURCE: &[(&str, Keep)] = &[(KUBEVIRT_INTERFACE_RESOURCE, All)];

const DOMAIN: &[(&str, Keep)] = &[
    ("devices", Members(&[("interfaces", All)])),
    (
        "resources",
        Members(&[
            ("requests", Members(INTERFACE_RESOURCE)),
            ("limits", Members(INTERFACE_RESOURCE)),
        ]),
    ),
];

/// A VMI spec (also a VM's `spec.template.spec`).
const VMI_SPEC: &[(&str, Keep)] = &[("domain", Members(DOMAIN)), ("networks", All)];

const SPEC: &[(&str, Keep)] = &[
    // Arktos.
    ("nics", All),
    // VirtualMachineInstance.
    ("domain", Members(DOMAIN)),
    ("networks", All),
    // VirtualMachine.
    ("template", Members(&[("spec", Members(VMI_SPEC))])),
];

const OBJECT: Keep = Members(&[("metadata", Members(METADATA)), ("spec", Members(SPEC))]);

/// An object decoded as the policy's view (see the module docs); `Null` when absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectView(pub Value);

impl<'de> serde::Deserialize<'de> for ObjectView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OBJECT.deserialize(d).map(ObjectView)
    }
}

impl<'de> DeserializeSeed<'de> for Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self {
            All => serde::Deserialize::deserialize(d),
            Members(members) => d.deserialize_any(Pruning(members)),
        }
    }
}

/// Member `key` of `v` if it is an object, as `Value::get`. A view's objects hold a handful of
/// members, where comparing names is cheaper than hashing the key (serde_json's maps hash with
/// SipHash); larger objects (whole objects, as `check` and the agent read them) are hashed.
pub fn member<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    in_map(v.as_object()?, key)
}

/// Member `key` of an object, as `Map::get` ([`member`] for a map in hand).
pub fn in_map<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    /// Up to this many members, a scan.
    const SCAN: usize = 8;
    if map.len() <= SCAN {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

/// The value at `keys` (each a [`member`] of the one before).
pub fn at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |v, k| member(v, k))
}

/// A member name as bytes, borrowed from the input when it has no escapes. Taken as bytes so
/// that serde_json does not check the UTF-8 of names that are only compared with known ones and
/// then skipped (as it does not for the values skipped); a name kept is one of ours.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, [u8]>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
            // Deserializers that hand names as strings (a `Value`'s, in tests).
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.into_bytes())))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Visits a value, keeping only `members` if it is an object.
struct Pruning(&'static [(&'static str, Keep)]);

impl<'de> Visitor<'de> for Pruning {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.0.iter().find(|(k, _)| k.as_bytes() == &*key) {
                Some((name, keep)) => {
                    let v = map.next_value_seed(*keep)?;
                    out.insert((*name).to_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    // Anything else is kept whole, as `Value` decodes it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Members(self.0).deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Review, ReviewView};
    use crate::allocator::{InMemoryAllocator, MacRange};
    use crate::policy::{Policy, PolicyConfig};
    use serde_json::json;
    use std::sync::Arc;

    fn view(v: &Value) -> Value {
        serde_json::from_value::<ObjectView>(v.clone()).unwrap().0
    }

    #[test]
    fn member_finds_what_get_finds() {
        let mut big = Map::new();
        for i in 0..20 {
            big.insert(format!("k{i}"), json!(i));
        }
        for obj in [
            json!({"a": 1, "b": {"c": 2}, "": 3}),
            Value::Object(big),
            json!([1]),
            json!("a"),
            json!(null),
        ] {
            for key in ["a", "b", "", "k0", "k19", "k20", "c"] {
                assert_eq!(member(&obj, key), obj.get(key), "{obj} {key}");
            }
        }
        let v = json!({"a": {"b": {"c": 1}}});
        assert_eq!(at(&v, &["a", "b", "c"]), Some(&json!(1)));
        assert_eq!(at(&v, &["a", "x", "c"]), None);
        assert_eq!(at(&v, &[]), Some(&v));
    }

    #[test]
    fn keeps_what_the_readers_read_and_nothing_else() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "namespace": "demo", "uid": "u", "labels": {"app": "x", "kubevirt.io": "y"},
            "annotations": {"other": "1", "hotnic.io/interface-capacity": 4,
                "k8s.v1.cni.cncf.io/networks": "[]"}, "managedFields": [{"a": 1}]},
            "spec": {"containers": [{"name": "c"}], "nics": [{"name": "eth0"}], "domain": 5,
                "template": {"spec": {"networks": [], "domain": {"cpu": {}, "resources":
                {"requests": {"memory": "1Gi", "kubevirt.io/interface": "4"}}}}}},
            "status": {"phase": "Pending"}});
        assert_eq!(
            view(&pod),
            json!({"metadata": {"name": "p", "namespace": "demo", "uid": "u",
                "labels": {"kubevirt.io": "y"},
                "annotations": {"hotnic.io/interface-capacity": 4,
                    "k8s.v1.cni.cncf.io/networks": "[]"}},
                "spec": {"nics": [{"name": "eth0"}], "domain": 5,
                    "template": {"spec": {"networks": [], "domain": {"resources":
                    {"requests": {"kubevirt.io/interface": "4"}}}}}}})
        );
        // Not an object: kept whole.
        for v in [
            json!([1, {"a": 2}]),
            json!("x"),
            json!(null),
            json!(1.5),
            json!(-3),
        ] {
            assert_eq!(view(&v), v);
        }
        assert_eq!(
            serde_json::from_str::<ObjectView>(r#"{"metadata": {"n\u0061me": "p"}}"#)
                .unwrap()
                .0,
            json!({"metadata": {"name": "p"}})
        );
        // A name never kept is compared as bytes and skipped, like the values skipped: its
        // UTF-8 (here a lone surrogate escape) is not checked.
        assert_eq!(
            serde_json::from_str::<ObjectView>(r#"{"metadata": {"\ud800": 1, "name": "p"}}"#)
                .unwrap()
                .0,
            json!({"metadata": {"name": "p"}})
        );
    }

    /// Every captured review: the view gives the policy the same answers as the whole object.
    #[test]
    fn the_policy_answers_the_same_on_every_capture() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/apiserver-v1.32"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let whole = Review::parse(&body).unwrap();
            let lean = ReviewView::parse(&body).unwrap();
            assert_eq!(lean.uid, whole.uid);
            assert_eq!(view(&whole.object), lean.object, "{}", path.display());
            for dry_run in [true, false] {
                let policy = || {
                    let range = MacRange::default_range();
                    let alloc = InMemoryAllocator::with_cursor(range, range.start().to_u64() + 7);
                    Policy::new(PolicyConfig::default(), Arc::new(alloc))
                };
                let (a, b) = (whole.as_request(), lean.as_request());
                let (a, b) = (
                    crate::policy::Request { dry_run, ..a },
                    crate::policy::Request { dry_run, ..b },
                );
                let (pa, pb) = (policy(), policy());
                // The claim token is random: compared as present or not.
                let token = |o: crate::policy::Outcome| {
                    let mut v = serde_json::to_value(o.patch().cloned()).unwrap();
                    for op in v.as_array_mut().into_iter().flatten() {
                        if op["path"]
                            .as_str()
                            .is_some_and(|p| p.ends_with("claim-token"))
                        {
                            op["value"] = json!("T");
                        }
                    }
                    (v, o.denial().cloned())
                };
                assert_eq!(
                    token(pa.mutate(&a)),
                    token(pb.mutate(&b)),
                    "{}",
                    path.display()
                );
                assert_eq!(pa.validate(&a), pb.validate(&b), "{}", path.display());
            }
            n += 1;
        }
        assert!(n >= 18, "{n} captures");
    }
}
