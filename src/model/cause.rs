//! The rules a denial's cause can come from. The causes themselves ([`crate::policy::Cause`])
//! are made only by the policy.

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
