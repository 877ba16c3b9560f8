//! A compact index of claims: `(scope, MAC) → owner fingerprint`, what the cluster-wide allocator
//! keeps in memory for every claim in the cluster (a reflector's view, without the objects).
//!
//! One entry is two `u64`s (key: the MAC's 48 bits and a 16-bit scope id; value: the owner's
//! [`Owner::fingerprint`]) in a `HashMap`: about 36 bytes per claim with the table's spare room
//! and control bytes (`cargo bench --bench claims_index` measures it for 1,000,000 claims).
//! Networks are interned once each (scope id 0 is the cluster).

use super::{AllocError, MacRange, Owner, Scope};
use crate::fast_hash::FastMap;
use crate::model::{Mac, NetworkRef};

const MAC_BITS: u32 = 48;
const MAC_MASK: u64 = (1 << MAC_BITS) - 1;

/// The claims one allocator knows of, by scope and MAC.
#[derive(Debug, Clone)]
pub struct ClaimIndex {
    range: MacRange,
    claims: FastMap<u64, u64>,
    scopes: FastMap<NetworkRef, u16>,
    in_range: usize,
    /// Claims of addresses [`MacRange::next_fit`] could hand out, by scope id: a full scope is
    /// answered at once, without a walk over the range.
    usable: Vec<u64>,
    /// How many addresses next-fit can hand out in each scope.
    capacity: u64,
}

impl ClaimIndex {
    /// An empty index; `range` is what [`ClaimIndex::in_range`] counts.
    pub fn new(range: MacRange) -> Self {
        ClaimIndex {
            range,
            claims: FastMap::default(),
            scopes: FastMap::default(),
            in_range: 0,
            usable: vec![0],
            capacity: range.usable_len(),
        }
    }

    /// An empty index with room for `n` claims.
    pub fn with_capacity(range: MacRange, n: usize) -> Self {
        ClaimIndex {
            claims: FastMap::with_capacity_and_hasher(n, Default::default()),
            ..Self::new(range)
        }
    }

    fn scope_id(&self, scope: &Scope) -> Option<u16> {
        match scope {
            Scope::Cluster => Some(0),
            Scope::Network(n) => self.scopes.get(n).copied(),
        }
    }

    fn intern(&mut self, scope: &Scope) -> Result<u16, AllocError> {
        if let Some(id) = self.scope_id(scope) {
            return Ok(id);
        }
        let Scope::Network(n) = scope else {
            return Ok(0);
        };
        let id = u16::try_from(self.scopes.len() + 1).map_err(|_| AllocError::TooManyScopes)?;
        self.scopes.insert(n.clone(), id);
        self.usable.push(0);
        Ok(id)
    }

    /// Whether next-fit could hand `mac` out: in the range, locally administered unicast, not
    /// `02:00:00:00:00:00`.
    fn usable(&self, mac: Mac) -> bool {
        let v = mac.to_u64();
        self.range.contains(mac) && (v >> 40) & 0x03 == 0x02 && mac != Mac::MASQUERADE
    }

    fn key(id: u16, mac: Mac) -> u64 {
        (u64::from(id) << MAC_BITS) | (mac.to_u64() & MAC_MASK)
    }

    /// Records that `owner_fp` holds `mac` in `scope` (replacing any other holder).
    pub fn insert(&mut self, scope: &Scope, mac: Mac, owner_fp: u64) -> Result<(), AllocError> {
        let id = self.intern(scope)?;
        if self.claims.insert(Self::key(id, mac), owner_fp).is_none() {
            if self.range.contains(mac) {
                self.in_range += 1;
            }
            if self.usable(mac) {
                self.usable[usize::from(id)] += 1;
            }
        }
        Ok(())
    }

    /// Forgets the claim on `mac` in `scope`; whether there was one.
    pub fn remove(&mut self, scope: &Scope, mac: Mac) -> bool {
        let Some(id) = self.scope_id(scope) else {
            return false;
        };
        let gone = self.claims.remove(&Self::key(id, mac)).is_some();
        if gone && self.range.contains(mac) {
            self.in_range -= 1;
        }
        if gone && self.usable(mac) {
            self.usable[usize::from(id)] -= 1;
        }
        gone
    }

    /// The fingerprint of whoever holds `mac` in `scope`.
    pub fn get(&self, scope: &Scope, mac: Mac) -> Option<u64> {
        let id = self.scope_id(scope)?;
        self.claims.get(&Self::key(id, mac)).copied()
    }

    /// Whether an object other than `owner` holds `mac` in `scope`.
    pub fn held_by_other(&self, owner: &Owner, scope: &Scope, mac: Mac) -> bool {
        self.get(scope, mac)
            .is_some_and(|fp| !owner.identities().contains(&Some(fp)))
    }

    /// Next-fit over the range from `cursor`: the first address not claimed in `scope` and not
    /// rejected by `taken`. Answers "exhausted" at once when every usable address is claimed.
    pub fn next_free(
        &self,
        scope: &Scope,
        cursor: u64,
        taken: &dyn Fn(Mac) -> bool,
    ) -> Option<Mac> {
        let id = self.scope_id(scope);
        if id.is_some_and(|id| self.usable[usize::from(id)] >= self.capacity) {
            return None;
        }
        self.range
            .next_fit(cursor, |v| {
                let mac = Mac::from_u64(v);
                id.is_some_and(|id| self.claims.contains_key(&Self::key(id, mac))) || taken(mac)
            })
            .map(Mac::from_u64)
    }

    /// How many claims it holds.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// How many of them are of MACs inside the range (every scope).
    pub fn in_range(&self) -> usize {
        self.in_range
    }

    /// Forgets everything (a relist replaces the index).
    pub fn clear(&mut self) {
        self.claims.clear();
        self.in_range = 0;
        self.usable.iter_mut().for_each(|n| *n = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    use crate::allocator::test_pod as owner;

    #[test]
    fn scopes_are_separate_and_range_usage_counted() {
        let range: MacRange = "02:00:00:00:00:01-02:00:00:00:00:10".parse().unwrap();
        let mut ix = ClaimIndex::new(range);
        let net = Scope::Network(NetworkRef {
            namespace: "demo".into(),
            name: "blue".into(),
        });
        let a = owner("a");
        ix.insert(&Scope::Cluster, mac("02:00:00:00:00:01"), a.fingerprint())
            .unwrap();
        ix.insert(&net, mac("02:00:00:00:00:01"), owner("b").fingerprint())
            .unwrap();
        ix.insert(&Scope::Cluster, mac("0a:00:00:00:00:01"), a.fingerprint())
            .unwrap();
        assert_eq!((ix.len(), ix.in_range()), (3, 2));
        assert!(!ix.held_by_other(&a, &Scope::Cluster, mac("02:00:00:00:00:01")));
        assert!(ix.held_by_other(&a, &net, mac("02:00:00:00:00:01")));
        assert!(ix.remove(&net, mac("02:00:00:00:00:01")));
        assert!(!ix.remove(&net, mac("02:00:00:00:00:01")));
        assert_eq!((ix.len(), ix.in_range()), (2, 1));
        let other_net = Scope::Network(NetworkRef {
            namespace: "demo".into(),
            name: "red".into(),
        });
        assert_eq!(ix.get(&other_net, mac("02:00:00:00:00:01")), None);
    }

    #[test]
    fn next_free_skips_claims_of_its_scope_only() {
        let range: MacRange = "02:00:00:00:00:01-02:00:00:00:00:03".parse().unwrap();
        let mut ix = ClaimIndex::new(range);
        let fp = owner("a").fingerprint();
        ix.insert(&Scope::Cluster, mac("02:00:00:00:00:01"), fp)
            .unwrap();
        let start = range.start().to_u64();
        assert_eq!(
            ix.next_free(&Scope::Cluster, start, &|_| false),
            Some(mac("02:00:00:00:00:02"))
        );
        let net = Scope::Network(NetworkRef {
            namespace: "demo".into(),
            name: "blue".into(),
        });
        assert_eq!(
            ix.next_free(&net, start, &|_| false),
            Some(mac("02:00:00:00:00:01"))
        );
        for m in ["02:00:00:00:00:02", "02:00:00:00:00:03"] {
            ix.insert(&Scope::Cluster, mac(m), fp).unwrap();
        }
        assert_eq!(ix.next_free(&Scope::Cluster, start, &|_| false), None);
        // A full network scope is answered at once (no walk: `taken` is never asked), and a
        // release opens it again; claims outside the range do not count.
        for m in [
            "02:00:00:00:00:01",
            "02:00:00:00:00:02",
            "02:00:00:00:00:03",
        ] {
            ix.insert(&net, mac(m), fp).unwrap();
        }
        ix.insert(&net, mac("0a:00:00:00:00:01"), fp).unwrap();
        assert_eq!(ix.next_free(&net, start, &|_| panic!("walked")), None);
        assert!(ix.remove(&net, mac("02:00:00:00:00:02")));
        assert_eq!(
            ix.next_free(&net, start, &|_| false),
            Some(mac("02:00:00:00:00:02"))
        );
    }
}
