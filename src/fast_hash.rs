//! Hash maps and sets for the admission path: foldhash, seeded at random once per process.
//!
//! Much cheaper than std's SipHash for the short keys hotnic hashes per review (MACs, NIC names,
//! packed claim keys), and still seeded, so a client cannot precompute keys that collide. Only
//! for maps that live in one process: nothing hashed here is stored or compared elsewhere. Owner
//! fingerprints ([`crate::allocator::Owner::fingerprint`]) stay SipHash: they stand for an
//! owner in the claims index, so a collision must be infeasible, not merely improbable.

/// A set hashed with foldhash (see the module docs).
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// A map hashed with foldhash (see the module docs).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
