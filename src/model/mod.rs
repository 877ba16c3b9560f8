//! The NIC model: one description of "a workload with NICs" that every dialect reads into.

pub mod cause;
pub mod finding;
pub mod ifname;
pub mod mac;
pub mod path;

pub use cause::Rule;
pub use finding::{Fact, Finding, ShortForm, Syntax};
pub use mac::Mac;
pub use path::FieldPath;
use serde_json::Value;

/// Which API a workload's NICs are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Arktos VM pods: `Pod.spec.nics[]`, MACs in the `hotnic.io/mac-addresses` annotation.
    Arktos,
    /// Vanilla pods with the Multus `k8s.v1.cni.cncf.io/networks` annotation.
    Multus,
    /// KubeVirt `VirtualMachine` (`spec.template.spec`).
    VirtualMachine,
    /// KubeVirt `VirtualMachineInstance` (`spec`).
    VirtualMachineInstance,
}

/// How a dialect unplugs a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnplugStyle {
    /// By removing it from the list (pods).
    Remove,
    /// By setting `state: absent` (KubeVirt); removal of a live NIC is not an unplug.
    Absent,
}

/// Which names a dialect allows for NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameStyle {
    /// A Linux interface name (pods: the name is the interface in the pod).
    LinuxIfname,
    /// KubeVirt's `^[A-Za-z0-9_-]+$`.
    KubeVirt,
}

impl Dialect {
    /// Short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dialect::Arktos => "arktos",
            Dialect::Multus => "multus",
            Dialect::VirtualMachine => "kubevirt-vm",
            Dialect::VirtualMachineInstance => "kubevirt-vmi",
        }
    }

    /// How this dialect unplugs a NIC.
    pub fn unplug_style(&self) -> UnplugStyle {
        match self {
            Dialect::Arktos | Dialect::Multus => UnplugStyle::Remove,
            Dialect::VirtualMachine | Dialect::VirtualMachineInstance => UnplugStyle::Absent,
        }
    }

    /// Which names this dialect allows.
    pub fn name_style(&self) -> NameStyle {
        match self {
            Dialect::Arktos | Dialect::Multus => NameStyle::LinuxIfname,
            Dialect::VirtualMachine | Dialect::VirtualMachineInstance => NameStyle::KubeVirt,
        }
    }

    /// Whether this is one of the KubeVirt kinds.
    pub fn is_kubevirt(&self) -> bool {
        matches!(
            self,
            Dialect::VirtualMachine | Dialect::VirtualMachineInstance
        )
    }
}

/// A value as found in the object, with the field path it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field path, e.g. `metadata.annotations[hotnic.io/interface-capacity]`.
    pub path: String,
    /// The raw JSON value.
    pub value: Value,
}

/// A namespaced network (a Multus NetworkAttachmentDefinition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkRef {
    /// Namespace of the NetworkAttachmentDefinition.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One attribute of a NIC's binding (what it is plugged into). Compared by `key` across updates.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingField {
    /// Identity of the attribute within its NIC, e.g. `portId`, `network.multus` (most are
    /// fixed names, which cost no allocation).
    pub key: std::borrow::Cow<'static, str>,
    /// Field path in this object.
    pub path: FieldPath,
    /// Its value (`Null` when absent).
    pub value: Value,
    /// May go from empty to set once (Arktos `portId`), but never change after.
    pub set_once: bool,
}

/// One network interface of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    /// The NIC's name (Multus `interface`), if it has one.
    pub name: Option<String>,
    /// Field path of the NIC element, e.g. `spec.nics[1]`.
    pub path: FieldPath,
    /// Field path of its name.
    pub name_path: FieldPath,
    /// The MAC as written (not yet validated); `None` when missing or empty.
    pub mac: Option<String>,
    /// `mac` parsed, when it is a valid MAC: read once by the reader, as each rule asks for it
    /// ([`Nic::parsed_mac`]); whoever sets `mac` sets this too ([`Nic::parse_mac`]).
    pub mac_parsed: Option<Mac>,
    /// Field path of its MAC (empty for a NIC written nowhere).
    pub mac_path: FieldPath,
    /// What it is plugged into; immutable once the NIC exists.
    pub binding: Vec<BindingField>,
    /// Binding method (KubeVirt `bridge`, `masquerade`, `sriov`, `binding:<name>`); `None` for pods.
    pub method: Option<String>,
    /// The network it attaches to, when it names one.
    pub network: Option<NetworkRef>,
    /// Requested static IPs (CIDR strings), if any.
    pub ips: Vec<String>,
    /// Arktos port ID, if any.
    pub port_id: Option<String>,
    /// `false` for KubeVirt `state: absent` (being unplugged).
    pub present: bool,
    /// The workload's primary NIC.
    pub primary: bool,
    /// Not written in the object (the Multus cluster-default network); never patched.
    pub implicit: bool,
    /// Position in the list it came from.
    pub index: usize,
}

impl Nic {
    /// The MAC parsed, when it is present and valid.
    pub fn parsed_mac(&self) -> Option<Mac> {
        debug_assert_eq!(
            self.mac_parsed,
            Self::parse_mac(self.mac.as_deref()),
            "mac_parsed out of step with mac"
        );
        self.mac_parsed
    }

    /// What [`Nic::mac_parsed`] holds for a MAC as written.
    pub fn parse_mac(mac: Option<&str>) -> Option<Mac> {
        mac.and_then(|m| m.parse().ok())
    }

    /// Binding attribute by key.
    pub fn binding_field(&self, key: &str) -> Option<&BindingField> {
        self.binding.iter().find(|b| b.key == key)
    }
}

/// The interface-capacity fields as found (not yet validated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityFields {
    /// The canonical `hotnic.io/interface-capacity` annotation.
    pub annotation: Option<Field>,
    /// KubeVirt `resources.requests["kubevirt.io/interface"]`.
    pub request: Option<Field>,
    /// KubeVirt `resources.limits["kubevirt.io/interface"]` (always wrong).
    pub limit: Option<Field>,
}

/// Interface capacity bounds.
pub const MAX_CAPACITY: u8 = 32;

/// Parses a capacity value: an integer 0–32, as a JSON number or a decimal string.
pub fn parse_capacity(v: &Value) -> Result<u8, String> {
    let n = match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| n.to_string())?,
        Value::String(s)
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 3 =>
        {
            s.parse::<i64>().map_err(|_| s.clone())?
        }
        Value::String(s) => return Err(format!("{s:?} is not a whole number")),
        other => return Err(format!("{other} is not a whole number")),
    };
    if (0..=i64::from(MAX_CAPACITY)).contains(&n) {
        Ok(n as u8)
    } else {
        Err(format!("{n} is outside 0–{MAX_CAPACITY}"))
    }
}

impl CapacityFields {
    /// The effective capacity: the annotation if valid, else the request if valid.
    pub fn effective(&self) -> Option<u8> {
        [&self.annotation, &self.request]
            .into_iter()
            .flatten()
            .find_map(|f| parse_capacity(&f.value).ok())
    }
}

/// Where each element of a NIC list kept as JSON text ends in that text, as its reader found
/// it (the Multus annotation in its plain form): the MAC writer splices MACs in there without
/// scanning the text again. Tied to the text it was found in by that text's address, length
/// and hash, so it is only ever used on that very text (not on an equal text elsewhere, nor on
/// another text that came to lie where it was).
#[derive(Debug, Clone)]
pub struct TextSites {
    /// Address of the text.
    at: usize,
    /// Its length.
    len: usize,
    /// Its hash.
    hash: u64,
    /// Each element's end, by element index.
    ends: Vec<ElementEnd>,
}

impl TextSites {
    /// The element ends `ends` found in `text`.
    pub fn new(text: &str, ends: Vec<ElementEnd>) -> Self {
        TextSites {
            at: text.as_ptr() as usize,
            len: text.len(),
            hash: Self::hash(text),
            ends,
        }
    }

    /// The element ends, if `text` is the very text they were found in.
    pub fn of(&self, text: &str) -> Option<&[ElementEnd]> {
        let same = text.as_ptr() as usize == self.at
            && text.len() == self.len
            && Self::hash(text) == self.hash;
        same.then_some(&self.ends)
    }

    fn hash(text: &str) -> u64 {
        use std::hash::BuildHasher as _;
        foldhash::fast::FixedState::default().hash_one(text)
    }
}

/// Always equal: where a text lay in memory is no part of what was read from it, and the ends
/// follow from the text.
impl PartialEq for TextSites {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// How an object in a JSON list ends, for writing a member into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementEnd {
    /// Offset of its closing brace in the text.
    pub close: usize,
    /// Whether it has no members.
    pub empty: bool,
    /// Whether it writes `"key": value` (a quote followed by `: ` in it).
    pub spaced: bool,
    /// Whether a string in it (a key or a value) is `mac`.
    pub has_mac: bool,
}

/// A workload's NICs in one dialect-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The dialect it was read from.
    pub dialect: Dialect,
    /// Its NICs, in order (implicit primary first where there is one).
    pub nics: Vec<Nic>,
    /// Interface capacity fields.
    pub capacity: CapacityFields,
    /// Override of the primary network (Multus `v1.multus-cni.io/default-network`).
    pub primary_network: Option<Field>,
    /// What the reader found for the rules to judge (syntax errors and facts), in reading order.
    /// Readers never judge: the policy turns findings into causes.
    pub findings: Vec<Finding>,
    /// Where the NIC list's elements end in the text they were read from, when the dialect
    /// keeps them in one and the reader found them (see [`TextSites`]).
    pub text_sites: Option<TextSites>,
}

impl Workload {
    /// An empty workload of a dialect.
    pub fn new(dialect: Dialect) -> Self {
        Workload {
            dialect,
            nics: Vec::new(),
            capacity: CapacityFields::default(),
            primary_network: None,
            findings: Vec::new(),
            text_sites: None,
        }
    }

    /// NICs present (not being unplugged).
    pub fn present(&self) -> impl Iterator<Item = &Nic> {
        self.nics.iter().filter(|n| n.present)
    }

    /// The first NIC with this name.
    pub fn by_name(&self, name: &str) -> Option<&Nic> {
        self.nics.iter().find(|n| n.name.as_deref() == Some(name))
    }

    /// Records a finding at `path`.
    pub fn found(&mut self, path: impl Into<String>, fact: impl Into<Fact>) {
        self.findings.push(Finding::new(path, fact));
    }

    /// Whether the workload has any NIC written in the object.
    pub fn has_nics(&self) -> bool {
        self.nics.iter().any(|n| !n.implicit)
    }
}

/// Renders a field path for a map key, e.g. `metadata.annotations[k8s.v1.cni.cncf.io/networks]`.
pub fn key_path(base: &str, key: &str) -> String {
    let mut p = String::with_capacity(base.len() + key.len() + 2);
    p.push_str(base);
    p.push('[');
    p.push_str(key);
    p.push(']');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text sites answer only for the text they were found in: not for an equal text elsewhere,
    /// nor for that text once changed in place.
    #[test]
    fn text_sites_are_tied_to_their_text() {
        let end = ElementEnd {
            close: 7,
            empty: false,
            spaced: false,
            has_mac: false,
        };
        let mut text = String::from(r#"[{"a":"b"}]"#);
        let sites = TextSites::new(&text, vec![end]);
        assert_eq!(sites.of(&text), Some(&[end][..]));
        assert_eq!(sites.of(&text.clone()), None);
        assert_eq!(sites.of(&text[1..]), None);
        text.make_ascii_uppercase();
        assert_eq!(sites.of(&text), None);
    }

    #[test]
    fn key_paths_render_the_key_in_brackets() {
        assert_eq!(
            key_path("metadata.annotations", "hotnic.io/interface-capacity"),
            "metadata.annotations[hotnic.io/interface-capacity]"
        );
    }
}
