//! Annotation names hotnic reads and writes, and patch building shared by the dialects.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::Value;

/// Multus network-selection annotation.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// Multus network-status annotation (written by the agent).
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// Multus override of the cluster default network.
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// Arktos pods: NIC name → MAC, as a JSON object.
pub const MAC_ADDRESSES: &str = "hotnic.io/mac-addresses";
/// Interface capacity, a decimal string (every dialect).
pub const CAPACITY: &str = "hotnic.io/interface-capacity";
/// Per-NIC status written by the agent.
pub const NIC_STATUS: &str = "hotnic.io/nic-status";
/// KubeVirt's interface-capacity resource name.
pub const KUBEVIRT_INTERFACE_RESOURCE: &str = "kubevirt.io/interface";

/// Field path of the [`NETWORKS`] annotation (as [`path`] writes it; fixed, so a NIC's
/// [`FieldPath`](crate::model::FieldPath) borrows it).
pub const NETWORKS_PATH: &str = "metadata.annotations[k8s.v1.cni.cncf.io/networks]";
/// Field path of the [`DEFAULT_NETWORK`] annotation.
pub const DEFAULT_NETWORK_PATH: &str = "metadata.annotations[v1.multus-cni.io/default-network]";
/// Field path of the [`MAC_ADDRESSES`] annotation.
pub const MAC_ADDRESSES_PATH: &str = "metadata.annotations[hotnic.io/mac-addresses]";

/// An annotation's value, if the object has it (any JSON type).
pub fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    super::view::at(obj, &["metadata", "annotations", key])
}

/// Field path of an annotation, e.g. `metadata.annotations[hotnic.io/interface-capacity]`.
pub fn path(key: &str) -> String {
    crate::model::key_path("metadata.annotations", key)
}

/// A label's value, if the object has it.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    super::view::at(obj, &["metadata", "labels", key])?.as_str()
}

/// The JSON Pointer to `tokens` (`~` written `~0`, `/` written `~1`), as
/// `PointerBuf::from_tokens` makes it, in one buffer sized once.
fn pointer(tokens: &[&str]) -> PointerBuf {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 3).sum());
    for token in tokens {
        out.push('/');
        let mut rest = *token;
        while let Some(i) = rest.bytes().position(|b| b == b'~' || b == b'/') {
            out.push_str(&rest[..i]);
            out.push_str(if rest.as_bytes()[i] == b'~' {
                "~0"
            } else {
                "~1"
            });
            rest = &rest[i + 1..];
        }
        out.push_str(rest);
    }
    // Well formed by construction; `from_tokens` only if `parse` ever disagreed.
    PointerBuf::parse(out).unwrap_or_else(|_| PointerBuf::from_tokens(tokens.iter().copied()))
}

/// The annotations a mutation may write on every review.
const WRITTEN_PER_REVIEW: [&str; 4] = [
    NETWORKS,
    CAPACITY,
    crate::allocator::CLAIM_TOKEN,
    MAC_ADDRESSES,
];

/// The JSON Pointer to annotation `key`; those hotnic writes on every review are made once and
/// copied (no encoding, no validation per review).
fn annotation_pointer(key: &str) -> PointerBuf {
    use std::sync::LazyLock;
    static KNOWN: LazyLock<[(&str, PointerBuf); 4]> =
        LazyLock::new(|| WRITTEN_PER_REVIEW.map(|k| (k, pointer(&["metadata", "annotations", k]))));
    match KNOWN.iter().find(|(k, _)| *k == key) {
        Some((_, p)) => p.clone(),
        None => pointer(&["metadata", "annotations", key]),
    }
}

/// Builds a minimal JSON Patch against one object.
#[derive(Debug)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
    has_metadata: bool,
    has_annotations: bool,
}

impl PatchBuilder {
    /// A builder for `obj` (it notes whether `metadata.annotations` exists).
    pub fn new(obj: &Value) -> Self {
        let meta = super::view::member(obj, "metadata").filter(|m| m.is_object());
        PatchBuilder {
            ops: Vec::new(),
            has_metadata: meta.is_some(),
            has_annotations: meta
                .and_then(|m| super::view::member(m, "annotations"))
                .is_some_and(Value::is_object),
        }
    }

    /// Adds (or replaces) the member at `tokens` (unescaped JSON Pointer tokens).
    pub fn add(&mut self, tokens: &[&str], value: Value) {
        self.add_at(pointer(tokens), value);
    }

    fn add_at(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Sets one annotation, creating `metadata.annotations` (and `metadata`) only when missing.
    pub fn set_annotation(&mut self, key: &str, value: String) {
        if !self.has_metadata {
            self.add(&["metadata"], Value::Object(Default::default()));
            self.has_metadata = true;
        }
        if !self.has_annotations {
            self.add(
                &["metadata", "annotations"],
                Value::Object(Default::default()),
            );
            self.has_annotations = true;
        }
        self.add_at(annotation_pointer(key), Value::String(value));
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The finished patch.
    pub fn finish(self) -> json_patch::Patch {
        json_patch::Patch(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_encoded_as_jsonptr_encodes_them() {
        for tokens in [
            &[][..],
            &["metadata"],
            &["metadata", "annotations", NETWORKS],
            &["a~b/c", "~~//", "", "x/~1"],
        ] {
            assert_eq!(
                pointer(tokens),
                PointerBuf::from_tokens(tokens.iter().copied()),
                "{tokens:?}"
            );
        }
    }

    #[test]
    fn annotation_pointers_made_once_are_the_pointers() {
        let others = ["a~b/c", DEFAULT_NETWORK, ""];
        for key in WRITTEN_PER_REVIEW.into_iter().chain(others) {
            let tokens = ["metadata", "annotations", key];
            assert_eq!(
                annotation_pointer(key),
                PointerBuf::from_tokens(tokens),
                "{key}"
            );
        }
    }

    #[test]
    fn fixed_paths_are_the_paths() {
        assert_eq!(NETWORKS_PATH, path(NETWORKS));
        assert_eq!(DEFAULT_NETWORK_PATH, path(DEFAULT_NETWORK));
        assert_eq!(MAC_ADDRESSES_PATH, path(MAC_ADDRESSES));
    }

    #[test]
    fn creates_annotations_once_and_escapes_keys() {
        let mut obj = json!({"metadata": {"name": "p"}});
        let mut b = PatchBuilder::new(&obj);
        b.set_annotation(CAPACITY, "4".into());
        b.set_annotation("a~b/c", "x".into());
        let p = b.finish();
        assert_eq!(p.0.len(), 3);
        assert_eq!(
            serde_json::to_value(&p).unwrap()[1]["path"],
            "/metadata/annotations/hotnic.io~1interface-capacity"
        );
        json_patch::patch(&mut obj, &p.0).unwrap();
        assert_eq!(obj["metadata"]["annotations"]["a~b/c"], "x");
        assert_eq!(obj["metadata"]["annotations"][CAPACITY], "4");
    }

    #[test]
    fn keeps_existing_annotations() {
        let mut obj = json!({"metadata": {"annotations": {"keep": "me"}}});
        let mut b = PatchBuilder::new(&obj);
        b.set_annotation(CAPACITY, "4".into());
        let p = b.finish();
        assert_eq!(p.0.len(), 1);
        json_patch::patch(&mut obj, &p.0).unwrap();
        assert_eq!(obj["metadata"]["annotations"]["keep"], "me");
    }
}
