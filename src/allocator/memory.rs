//! An allocator that lives in one process's memory.

use super::{AllocError, Conflict, MacAllocator, MacRange, Owner};
use crate::model::Mac;
use std::collections::HashMap;
use std::sync::Mutex;

/// In-memory MAC allocator: a random start, then next-fit, so a released MAC is not handed out
/// again until the cursor has gone round the whole range.
#[derive(Debug)]
pub struct InMemoryAllocator {
    range: MacRange,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    cursor: u64,
    held: HashMap<Mac, Owner>,
}

impl InMemoryAllocator {
    /// A new allocator over `range`, starting at a random address.
    pub fn new(range: MacRange) -> Self {
        let offset = rand::random_range(0..range.len());
        Self::with_cursor(range, range.start().to_u64() + offset)
    }

    /// A new allocator whose first candidate is `start` (for reproducible tests).
    pub fn with_cursor(range: MacRange, start: u64) -> Self {
        InMemoryAllocator {
            range,
            state: Mutex::new(State {
                cursor: start,
                held: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MacAllocator for InMemoryAllocator {
    fn range(&self) -> MacRange {
        self.range
    }

    fn allocate(
        &self,
        owner: &Owner,
        taken: &dyn Fn(Mac) -> bool,
        dry_run: bool,
    ) -> Result<Mac, AllocError> {
        let mut st = self.lock();
        let start = self.range.start().to_u64();
        let mut candidate = st.cursor;
        let mut wrapped = false;
        loop {
            match self.range.next_usable(candidate) {
                Some(v) => {
                    if wrapped && v >= st.cursor {
                        return Err(AllocError::Exhausted(self.range));
                    }
                    let mac = Mac::from_u64(v);
                    if !st.held.contains_key(&mac) && !taken(mac) {
                        if !dry_run {
                            st.held.insert(mac, owner.clone());
                            st.cursor = v + 1;
                        }
                        return Ok(mac);
                    }
                    candidate = v + 1;
                }
                None if wrapped => return Err(AllocError::Exhausted(self.range)),
                None => {
                    wrapped = true;
                    candidate = start;
                }
            }
        }
    }

    fn claim(&self, owner: &Owner, mac: Mac, dry_run: bool) -> Result<(), Conflict> {
        let mut st = self.lock();
        match st.held.get(&mac) {
            Some(holder) if !holder.same_object(owner) => Err(Conflict {
                mac,
                holder: holder.clone(),
            }),
            Some(holder) => {
                // Adopt a nameless (generateName) record once the object has its name.
                if holder.name.is_none() && owner.name.is_some() && !dry_run {
                    st.held.insert(mac, owner.clone());
                }
                Ok(())
            }
            None => {
                if !dry_run {
                    st.held.insert(mac, owner.clone());
                }
                Ok(())
            }
        }
    }

    fn release(&self, owner: &Owner, mac: Mac, dry_run: bool) {
        if dry_run {
            return;
        }
        let mut st = self.lock();
        if st.held.get(&mac).is_some_and(|h| h.same_object(owner)) {
            st.held.remove(&mac);
        }
    }

    fn held_by_other(&self, owner: &Owner, mac: Mac) -> Option<Owner> {
        self.lock()
            .held
            .get(&mac)
            .filter(|h| !h.same_object(owner))
            .cloned()
    }

    fn held(&self) -> usize {
        self.lock().held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Owner {
        Owner {
            kind: "Pod".into(),
            namespace: "demo".into(),
            name: Some(name.into()),
            generate_name: None,
        }
    }

    fn small() -> MacRange {
        "02:00:00:00:00:01-02:00:00:00:00:04".parse().unwrap()
    }

    #[test]
    fn next_fit_does_not_reuse_a_released_mac_at_once() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let m1 = a.allocate(&pod("a"), &|_| false, false).unwrap();
        assert_eq!(m1.to_string(), "02:00:00:00:00:01");
        a.release(&pod("a"), m1, false);
        let m2 = a.allocate(&pod("b"), &|_| false, false).unwrap();
        assert_eq!(m2.to_string(), "02:00:00:00:00:02");
    }

    #[test]
    fn dry_run_reserves_nothing_and_keeps_the_cursor() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let d = a.allocate(&pod("a"), &|_| false, true).unwrap();
        let r = a.allocate(&pod("a"), &|_| false, false).unwrap();
        assert_eq!(d, r);
        assert_eq!(a.held(), 1);
    }

    #[test]
    fn exhausts_and_wraps() {
        let a = InMemoryAllocator::with_cursor(small(), 0x0200_0000_0003);
        let got: Vec<_> = (0..4)
            .map(|_| {
                a.allocate(&pod("a"), &|_| false, false)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            got,
            [
                "02:00:00:00:00:03",
                "02:00:00:00:00:04",
                "02:00:00:00:00:01",
                "02:00:00:00:00:02"
            ]
        );
        assert!(matches!(
            a.allocate(&pod("a"), &|_| false, false),
            Err(AllocError::Exhausted(_))
        ));
    }

    #[test]
    fn skips_taken_and_claims_conflict() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let first: Mac = "02:00:00:00:00:01".parse().unwrap();
        let m = a.allocate(&pod("a"), &|m| m == first, false).unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:02");
        assert!(a.claim(&pod("b"), m, false).is_err());
        assert!(a.claim(&pod("a"), m, false).is_ok());
        assert_eq!(a.held_by_other(&pod("b"), m), Some(pod("a")));
        assert_eq!(a.held_by_other(&pod("a"), m), None);
    }

    #[test]
    fn generate_name_record_is_adopted_by_the_named_object() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let pending = Owner {
            name: None,
            generate_name: Some("gen-".into()),
            ..pod("x")
        };
        let m = a.allocate(&pending, &|_| false, false).unwrap();
        assert_eq!(a.held_by_other(&pod("gen-k4sks"), m), None);
        assert!(a.held_by_other(&pod("other"), m).is_some());
        a.claim(&pod("gen-k4sks"), m, false).unwrap();
        assert!(a.held_by_other(&pod("gen-zzzzz"), m).is_some());
    }
}
