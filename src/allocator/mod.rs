//! MAC allocation: the range hotnic allocates from and the allocator trait.

mod memory;
mod range;

pub use memory::InMemoryAllocator;
pub use range::{MacRange, RangeError};

use crate::model::Mac;
use std::fmt;

/// The object a MAC is held by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `Pod`, `VirtualMachine`, `VirtualMachineInstance`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name; `None` while a pod created with `generateName` has none yet.
    pub name: Option<String>,
    /// `metadata.generateName`, if any.
    pub generate_name: Option<String>,
}

impl Owner {
    /// Whether `other` is the same object, allowing a nameless (generateName) record to match its
    /// later named self.
    pub fn same_object(&self, other: &Owner) -> bool {
        if self.kind != other.kind || self.namespace != other.namespace {
            return false;
        }
        match (&self.name, &other.name) {
            (Some(a), Some(b)) => a == b,
            (None, Some(n)) => self
                .generate_name
                .as_deref()
                .is_some_and(|g| n.starts_with(g)),
            (Some(n), None) => other
                .generate_name
                .as_deref()
                .is_some_and(|g| n.starts_with(g)),
            // Two nameless records of one generateName cannot be told apart: treat them as one.
            (None, None) => {
                self.generate_name.is_some() && self.generate_name == other.generate_name
            }
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.generate_name) {
            (Some(n), _) => write!(f, "{} {}/{}", self.kind, self.namespace, n),
            (None, Some(g)) => write!(f, "{} {}/{}*", self.kind, self.namespace, g),
            (None, None) => write!(f, "{} {}/<unnamed>", self.kind, self.namespace),
        }
    }
}

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every address of the range is in use.
    #[error("no free MAC address left in {0}")]
    Exhausted(MacRange),
    /// The allocator is not ready (e.g. its cluster view is not synced yet).
    #[error("the MAC allocator is not ready yet; retry shortly")]
    NotReady,
}

/// A MAC held by another object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{mac} is already used by {holder}")]
pub struct Conflict {
    /// The MAC.
    pub mac: Mac,
    /// Who holds it.
    pub holder: Owner,
}

/// Hands out MACs that are unique across everything the allocator knows.
///
/// Implementations: [`InMemoryAllocator`] (one process); a cluster-wide one shares its state
/// through the API server. With `dry_run` no method changes any state.
pub trait MacAllocator: Send + Sync {
    /// The range new MACs come from.
    fn range(&self) -> MacRange;

    /// Picks a free MAC from the range that `taken` does not reject, and reserves it for `owner`
    /// unless `dry_run`.
    fn allocate(
        &self,
        owner: &Owner,
        taken: &dyn Fn(Mac) -> bool,
        dry_run: bool,
    ) -> Result<Mac, AllocError>;

    /// Records that `owner` uses `mac` (chosen by the user, or kept from before). Fails if another
    /// object holds it. Records nothing with `dry_run`.
    fn claim(&self, owner: &Owner, mac: Mac, dry_run: bool) -> Result<(), Conflict>;

    /// Frees `mac` if `owner` holds it. Does nothing with `dry_run`.
    fn release(&self, owner: &Owner, mac: Mac, dry_run: bool);

    /// The other object holding `mac`, if any.
    fn held_by_other(&self, owner: &Owner, mac: Mac) -> Option<Owner>;

    /// Whether it can serve requests (a cluster-wide allocator must sync first).
    fn is_ready(&self) -> bool {
        true
    }

    /// How many MACs it holds now.
    fn held(&self) -> usize;
}
