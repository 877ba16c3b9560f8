//! What a reader found in an object: syntax errors and facts, each with the field path it is
//! about, in reading order.
//!
//! Readers (`src/dialect/`) only record findings. Judging them is the policy's (`src/policy/`):
//! it alone decides which findings deny, under which rule, with which message and hint.

use serde_json::Value;

/// One finding, at a field path.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The field it is about, e.g. `metadata.annotations[k8s.v1.cni.cncf.io/networks][1].name`.
    pub path: String,
    /// What was found there.
    pub fact: Fact,
}

impl Finding {
    /// A finding at `path`.
    pub fn new(path: impl Into<String>, fact: impl Into<Fact>) -> Self {
        Finding {
            path: path.into(),
            fact: fact.into(),
        }
    }

    /// A syntax error (the object cannot be read there).
    pub fn is_syntax(&self) -> bool {
        matches!(self.fact, Fact::Syntax(_))
    }
}

/// What a reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A value that cannot be read as what it must be.
    Syntax(Syntax),
    /// Multus: a network-selection element names no NetworkAttachmentDefinition (`name` missing,
    /// empty or not a string).
    NoNetworkName,
    /// Multus: an element sets both `ips` and `ipam-claim-reference`.
    IpsWithClaim,
    /// Multus: an element sets `default-route`.
    DefaultRoute,
    /// KubeVirt: a network without a (string) name.
    UnnamedNetwork,
    /// KubeVirt: a network whose name no interface has.
    NetworkWithoutInterface {
        /// The network's name.
        name: String,
        /// Field path of the interface list.
        interfaces: String,
    },
    /// KubeVirt: a named interface without a network of that name.
    InterfaceWithoutNetwork {
        /// The interface's name.
        name: String,
        /// Field path of the network list.
        networks: String,
    },
}

impl From<Syntax> for Fact {
    fn from(s: Syntax) -> Self {
        Fact::Syntax(s)
    }
}

/// A syntax error: what a value is instead of what it must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Syntax {
    /// A field that must be a string holds this value.
    NotAString(Value),
    /// The list of NICs (Arktos `spec.nics`, KubeVirt `interfaces` or `networks`) is this value.
    NotAList(Value),
    /// An element of the list of NICs is not an object.
    NotAnObject,
    /// The object under review is not a JSON object at all (this value instead).
    NotAWorkload(Value),
    /// A list of strings (Multus `ips`) holds something else.
    NotAListOfStrings,
    /// The annotation the dialect keeps JSON in (Multus networks, Arktos MACs) is this value,
    /// not a string.
    AnnotationNotAString(Value),
    /// That annotation is not valid JSON (the parser's message).
    NotJson(String),
    /// The Arktos MAC annotation is JSON, but this value instead of an object.
    NotAJsonObject(Value),
    /// The Arktos MAC annotation maps this NIC to `found`, not to a string.
    MacNotAString {
        /// The NIC name (the key).
        nic: String,
        /// Its value.
        found: Value,
    },
    /// A Multus short-form entry (`ns/net@ifname`) that cannot be read.
    ShortForm {
        /// The entry, trimmed.
        entry: String,
        /// What is wrong with it.
        problem: ShortForm,
    },
    /// Arktos: `portId` and `portID` are both set, to different values.
    PortIdSpellings {
        /// `portId`.
        lower: String,
        /// `portID`.
        upper: String,
    },
}

/// What is wrong with a Multus short-form entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortForm {
    /// Nothing between two commas.
    Empty,
    /// More than one `@`.
    TwoAts,
    /// More than one `/`.
    TwoSlashes,
    /// A part around `/` or `@` is empty.
    EmptyPart,
}
