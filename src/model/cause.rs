//! Why something is denied: a field path, a message that says what to do instead, and the rule.

use std::fmt;

/// The rule a cause comes from (also the `rule` label of the denial metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The object cannot be read at all (bad JSON in an annotation, wrong types).
    Malformed,
    /// Rule 1: every NIC named, uniquely and validly.
    Names,
    /// Rule 2: MAC addresses well-formed, unicast, unique.
    Macs,
    /// Rule 3: interface capacity valid, immutable, respected.
    Capacity,
    /// Rule 4: an existing NIC keeps its binding and MAC.
    Binding,
    /// Rule 5: the primary NIC stays.
    Primary,
    /// Rule 6: KubeVirt unplug and hot-plug forms.
    Unplug,
    /// Rule 7: Multus network-selection elements well-formed.
    Multus,
    /// The MAC allocator could not serve the request.
    Allocation,
}

impl Rule {
    /// Stable lower-case name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::Malformed => "malformed",
            Rule::Names => "names",
            Rule::Macs => "macs",
            Rule::Capacity => "capacity",
            Rule::Binding => "binding",
            Rule::Primary => "primary",
            Rule::Unplug => "unplug",
            Rule::Multus => "multus",
            Rule::Allocation => "allocation",
        }
    }
}

/// One reason for a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The field it is about, e.g. `spec.nics[1].portId`.
    pub field: String,
    /// What is wrong and what to do instead.
    pub message: String,
    /// The rule that found it.
    pub rule: Rule,
}

impl Cause {
    /// Builds a cause.
    pub fn new(rule: Rule, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            message: message.into(),
            rule,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
