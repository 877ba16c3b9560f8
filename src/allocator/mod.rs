//! MAC allocation: the range hotnic allocates from, what a MAC is unique in ([`Scope`]), who holds
//! one ([`Owner`]), and the allocator trait with its in-process implementation.
//!
//! A MAC is **claimed** for an owner: the claim is the lock. [`InMemoryAllocator`] keeps claims in
//! one process (`hotnic check`, `kubectl hotnic`, `hotnic webhook --dev`, tests);
//! [`crate::claims::KubeAllocator`] keeps them as `MACAddress` objects in the API server, where
//! create-if-absent on the object's name makes them cluster-wide. The policy only ever claims;
//! claims are released where the owner's deletion or the NIC's unplug is observed (the repair loop
//! in [`crate::claims`]), never while admitting a request that a later phase may still deny.

pub mod index;
mod memory;
mod range;

pub use index::ClaimIndex;
pub use memory::InMemoryAllocator;
pub use range::{MacRange, RangeError};

use crate::model::{Mac, NetworkRef, Nic};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Where a MAC must be unique: in the whole cluster, or on one network (an L2 domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Unique in the cluster.
    Cluster,
    /// Unique among the NICs attached to this network.
    Network(NetworkRef),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("the cluster"),
            Scope::Network(n) => write!(f, "network {n}"),
        }
    }
}

/// How NICs map to [`Scope`]s (`--mac-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ScopeMode {
    /// One scope: every MAC is unique in the cluster.
    #[default]
    Cluster,
    /// A NIC's MAC is unique on its network (Multus network, KubeVirt `multus.networkName`,
    /// Arktos subnet); NICs that name no network share the cluster scope.
    Network,
}

impl ScopeMode {
    /// The scope of a NIC.
    pub fn scope_of(&self, nic: &Nic) -> Scope {
        match (self, &nic.network) {
            (ScopeMode::Network, Some(n)) => Scope::Network(n.clone()),
            _ => Scope::Cluster,
        }
    }

    /// `cluster` or `network`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScopeMode::Cluster => "cluster",
            ScopeMode::Network => "network",
        }
    }
}

/// The object a MAC is held by.
///
/// A CREATE's mutating phase does not know the object's uid, and with `generateName` not its name
/// either; such a claim carries a random `token` that the mutation also writes into the object
/// (annotation [`CLAIM_TOKEN`]), so the object is recognised later (reinvocation, the validating
/// phase, the repair loop) and no other object of the same prefix is mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Owner {
    /// API group (`""` for core, `kubevirt.io`).
    pub group: String,
    /// Kind (`Pod`, `VirtualMachine`, `VirtualMachineInstance`).
    pub kind: String,
    /// Resource (`pods`, `virtualmachines`, `virtualmachineinstances`).
    pub resource: String,
    /// Namespace.
    pub namespace: String,
    /// Name; `None` while an object created with `generateName` has none yet.
    pub name: Option<String>,
    /// `metadata.generateName`, if any (for messages).
    pub generate_name: Option<String>,
    /// `metadata.uid`, once known.
    pub uid: Option<String>,
    /// The claim token of a nameless create (see above).
    pub token: Option<String>,
}

/// The annotation carrying the claim token of an object created without a name.
pub const CLAIM_TOKEN: &str = "hotnic.io/claim-token";

impl Owner {
    /// Whether `other` is the same object: the same claim token (one create request), or the
    /// same group, resource, namespace and name. A uid that differs under the same name is an
    /// older incarnation of the object, which the allocator takes over.
    pub fn same_object(&self, other: &Owner) -> bool {
        if self.group != other.group
            || self.resource != other.resource
            || self.namespace != other.namespace
        {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.token, &other.token)
            && a == b
        {
            return true;
        }
        matches!((&self.name, &other.name), (Some(a), Some(b)) if a == b)
    }

    /// The identities this owner is known by, as 64-bit fingerprints (by name, by token): a claim
    /// is this owner's when its [`Owner::fingerprint`] is one of them.
    pub fn identities(&self) -> [Option<u64>; 2] {
        [
            self.name.as_deref().map(|n| self.fp("name", n)),
            self.token.as_deref().map(|t| self.fp("token", t)),
        ]
    }

    /// The identity a claim of this owner is stored under: its name once known, else its token.
    pub fn fingerprint(&self) -> u64 {
        match (&self.name, &self.token) {
            (Some(n), _) => self.fp("name", n),
            (None, Some(t)) => self.fp("token", t),
            (None, None) => self.fp("none", ""),
        }
    }

    fn fp(&self, what: &str, id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (
            what,
            self.group.as_str(),
            self.resource.as_str(),
            self.namespace.as_str(),
            id,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// An owner with its fingerprints ([`Owner::identities`], [`Owner::fingerprint`]) worked out
/// once: a review asks for them on every lookup and claim of each of its NICs, and each is a
/// SipHash over the owner's strings. Read as the [`Owner`] it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOwner {
    owner: Owner,
    identities: [Option<u64>; 2],
    fingerprint: u64,
}

impl KnownOwner {
    /// `owner`, with its fingerprints.
    pub fn new(owner: Owner) -> Self {
        let identities = owner.identities();
        // As `Owner::fingerprint` picks it (name, else token), each hashed once.
        let fingerprint = match identities {
            [Some(fp), _] | [None, Some(fp)] => fp,
            [None, None] => owner.fingerprint(),
        };
        KnownOwner {
            identities,
            fingerprint,
            owner,
        }
    }

    /// The owner.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Sets the claim token (fingerprints worked out again).
    pub fn set_token(&mut self, token: String) {
        self.owner.token = Some(token);
        *self = KnownOwner::new(std::mem::take(&mut self.owner));
    }

    /// [`Owner::identities`], as worked out once.
    pub fn identities(&self) -> [Option<u64>; 2] {
        self.identities
    }

    /// [`Owner::fingerprint`], as worked out once.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

impl std::ops::Deref for KnownOwner {
    type Target = Owner;
    fn deref(&self) -> &Owner {
        &self.owner
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.generate_name) {
            (Some(n), _) => write!(f, "{} {}/{}", self.kind, self.namespace, n),
            (None, Some(g)) => write!(f, "{} {}/{}… (being created)", self.kind, self.namespace, g),
            (None, None) => write!(f, "{} {}/<being created>", self.kind, self.namespace),
        }
    }
}

/// Why no MAC could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Every address of the range is in use (in the scope asked for).
    #[error("no free MAC address left in {0}")]
    Exhausted(MacRange),
    /// The allocator is not ready (its view of the claims is not synced yet).
    #[error("the MAC allocator is not ready yet (its claims are not synced); retry shortly")]
    NotReady,
    /// Too many networks for network-scoped claims (65,535 at most).
    #[error("more than 65,535 networks hold network-scoped MAC claims")]
    TooManyScopes,
    /// The claim store (the API server) failed or did not answer in time.
    #[error("the MAC claims could not be {action}")]
    Store {
        /// What was being done (`written`, `read`).
        action: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a claim was not made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another object holds the MAC in this scope.
    #[error("{mac} is already used by {holder}")]
    Conflict {
        /// The MAC.
        mac: Mac,
        /// Who holds it.
        holder: Box<Owner>,
    },
    /// The allocator failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

/// One claim to make: `mac` in `scope` for `owner`'s NIC `nic`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Who will hold it.
    pub owner: &'a KnownOwner,
    /// Where it must be unique.
    pub scope: &'a Scope,
    /// The MAC.
    pub mac: Mac,
    /// The NIC's name (for the record).
    pub nic: &'a str,
    /// Decide as for real, write nothing.
    pub dry_run: bool,
}

/// A boxed future the allocator returns (object-safe async).
pub type AllocFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hands out MACs and keeps claims on them.
///
/// Implementations: [`InMemoryAllocator`] (one process; its futures are ready at once) and
/// [`crate::claims::KubeAllocator`] (`MACAddress` objects; the futures do API calls). With
/// `dry_run` no method changes any claim (only [`MacAllocator::candidate`] moves the cursor).
pub trait MacAllocator: Send + Sync {
    /// The range new MACs come from.
    fn range(&self) -> MacRange;

    /// How NICs map to scopes.
    fn scope_mode(&self) -> ScopeMode {
        ScopeMode::Cluster
    }

    /// A candidate for a new MAC in `scope`: the next address after the cursor (next-fit from a
    /// random start) that the allocator does not know to be claimed and `taken` does not reject.
    /// The cursor moves past it, so concurrent requests get distinct candidates; a dry-run's too,
    /// so the MAC a dry-run proposes (and its validating call checks) is not handed to the next
    /// real request meanwhile. Only a [`MacAllocator::claim`] makes it the requester's.
    fn candidate(&self, scope: &Scope, taken: &dyn Fn(Mac) -> bool) -> Result<Mac, AllocError>;

    /// The MAC `owner`'s NIC `nic` already holds in `scope`, if the allocator keeps track (the
    /// in-memory one does; the default says none). A repeated create of the same object, or a
    /// NIC plugged again under its name, then gets that MAC back rather than a new one, so an
    /// allocator that never sees deletions does not fill up with one object's MACs.
    fn held_for(&self, owner: &KnownOwner, nic: &str, scope: &Scope) -> Option<Mac> {
        let _ = (owner, nic, scope);
        None
    }

    /// Whether, as far as the allocator knows now (its cache), an object other than `owner` holds
    /// `mac` in `scope`. Cheap; [`MacAllocator::holder`] tells who.
    fn held_by_other(&self, owner: &Owner, scope: &Scope, mac: Mac) -> bool;

    /// Who holds `mac` in `scope`, if anyone (asks the store when the cache is not enough).
    fn holder<'a>(
        &'a self,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<Option<Owner>, AllocError>>;

    /// Claims `req.mac` in `req.scope` for `req.owner` (create-if-absent). Succeeds when it was
    /// free or is already this owner's; fails with [`ClaimError::Conflict`] when another object
    /// holds it. With `dry_run` it only checks.
    fn claim<'a>(&'a self, req: ClaimRequest<'a>) -> AllocFuture<'a, Result<(), ClaimError>>;

    /// [`MacAllocator::claim`] for each of `reqs`, sent together (one round trip, not one per
    /// claim); the answers in the order of `reqs`.
    fn claim_many<'a>(
        &'a self,
        reqs: &'a [ClaimRequest<'a>],
    ) -> AllocFuture<'a, Vec<Result<(), ClaimError>>> {
        Box::pin(futures::future::join_all(
            reqs.iter().map(|&r| self.claim(r)),
        ))
    }

    /// Binds the claims `keys` made for a nameless owner (by its token) to the name and uid it
    /// now has (`owner` carries all three).
    fn bind<'a>(
        &'a self,
        owner: &'a Owner,
        keys: &'a [(Scope, Mac)],
    ) -> AllocFuture<'a, Result<(), AllocError>>;

    /// Frees `mac` in `scope` if `owner` holds it; whether it did. The admission policy never
    /// calls this (see the module docs).
    fn release<'a>(
        &'a self,
        owner: &'a Owner,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<bool, AllocError>>;

    /// Whether it can serve requests (a cluster-wide allocator must sync first).
    fn is_ready(&self) -> bool {
        true
    }

    /// How many claims it knows of.
    fn held(&self) -> usize;

    /// How many of them lie in [`MacRange`] (for the usage metric).
    fn held_in_range(&self) -> usize {
        self.held()
    }
}

/// A named Pod in namespace `demo`: the owner the allocator unit tests claim for.
#[cfg(test)]
pub(crate) fn test_pod(name: &str) -> Owner {
    Owner {
        kind: "Pod".into(),
        resource: "pods".into(),
        namespace: "demo".into(),
        name: Some(name.into()),
        ..Owner::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: Option<&str>, token: Option<&str>) -> Owner {
        Owner {
            group: String::new(),
            kind: "Pod".into(),
            resource: "pods".into(),
            namespace: "demo".into(),
            name: name.map(str::to_string),
            generate_name: Some("web-".into()),
            uid: None,
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn same_object_by_token_or_name_never_by_prefix() {
        let pending = pod(None, Some("t1"));
        let bound = pod(Some("web-x7k2p"), Some("t1"));
        assert!(pending.same_object(&bound) && bound.same_object(&pending));
        // Another pod of the same prefix, named or being created, is another object.
        assert!(!pending.same_object(&pod(Some("web-server"), None)));
        assert!(!pending.same_object(&pod(None, Some("t2"))));
        assert!(!pending.same_object(&pod(None, None)));
        assert!(bound.same_object(&pod(Some("web-x7k2p"), None)));
        let mut vm = bound.clone();
        vm.group = "kubevirt.io".into();
        vm.resource = "virtualmachines".into();
        assert!(!vm.same_object(&bound));
    }

    #[test]
    fn fingerprints_follow_same_object() {
        let pending = pod(None, Some("t1"));
        let bound = pod(Some("web-x7k2p"), Some("t1"));
        let named = pod(Some("web-x7k2p"), None);
        // A claim stored under the token is found by the object once it has a name.
        assert!(bound.identities().contains(&Some(pending.fingerprint())));
        assert!(named.identities().contains(&Some(bound.fingerprint())));
        assert!(
            !pod(Some("web-server"), None)
                .identities()
                .contains(&Some(pending.fingerprint()))
        );
    }

    #[test]
    fn a_known_owner_keeps_the_owners_fingerprints_and_a_new_token_renews_them() {
        let mut known = KnownOwner::new(pod(None, None));
        assert_eq!(known.owner(), &pod(None, None));
        assert_eq!(known.identities(), pod(None, None).identities());
        assert_eq!(known.fingerprint(), pod(None, None).fingerprint());
        known.set_token("t1".into());
        let pending = pod(None, Some("t1"));
        assert_eq!(known.owner(), &pending);
        assert_eq!(known.identities(), pending.identities());
        assert_eq!(known.fingerprint(), pending.fingerprint());
        assert_ne!(known.fingerprint(), pod(None, None).fingerprint());
        for owner in [pod(Some("a"), None), pod(Some("a"), Some("t1"))] {
            let known = KnownOwner::new(owner.clone());
            assert_eq!(known.identities(), owner.identities());
            assert_eq!(known.fingerprint(), owner.fingerprint());
        }
    }
}
