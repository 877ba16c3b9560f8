//! An allocator that lives in one process's memory: `hotnic check`, `kubectl hotnic`,
//! `hotnic webhook --allocator memory` (the `--dev` default) and tests. Nothing is shared between
//! processes and nothing survives a restart; nothing is released unless [`MacAllocator::release`]
//! is called (the webhook does not observe deletions in this mode).

use super::{
    AllocError, AllocFuture, ClaimError, ClaimRequest, KnownOwner, MacAllocator, MacRange, Owner,
    Scope, ScopeMode,
};
use crate::fast_hash::FastMap;
use crate::model::Mac;
use std::sync::Mutex;

/// In-memory MAC allocator: a random start, then next-fit, so a released MAC is not handed out
/// again until the cursor has gone round the whole range.
#[derive(Debug)]
pub struct InMemoryAllocator {
    range: MacRange,
    mode: ScopeMode,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    cursor: u64,
    held: FastMap<(Scope, Mac), Owner>,
    /// The MAC each named NIC of an owner (by [`Owner::fingerprint`]) last claimed, per scope:
    /// a short list per owner, so a lookup builds no key.
    by_nic: FastMap<u64, Vec<NicClaim>>,
    in_range: usize,
}

/// The MAC one named NIC claimed in one scope.
#[derive(Debug)]
struct NicClaim {
    nic: String,
    scope: Scope,
    mac: Mac,
}

impl State {
    /// The MAC `nic` of the owner known by `fp` last claimed in `scope`.
    fn nic_mac(&self, fp: u64, nic: &str, scope: &Scope) -> Option<Mac> {
        self.by_nic
            .get(&fp)?
            .iter()
            .find(|c| c.nic == nic && c.scope == *scope)
            .map(|c| c.mac)
    }
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
            mode: ScopeMode::Cluster,
            state: Mutex::new(State {
                cursor: start,
                held: FastMap::default(),
                by_nic: FastMap::default(),
                in_range: 0,
            }),
        }
    }

    /// The same allocator with NICs scoped by `mode`.
    pub fn with_scope_mode(mut self, mode: ScopeMode) -> Self {
        self.mode = mode;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`MacAllocator::claim`] with the state locked.
    fn claim_in(&self, st: &mut State, req: ClaimRequest<'_>) -> Result<(), ClaimError> {
        let key = (req.scope.clone(), req.mac);
        let result = match st.held.get_mut(&key) {
            Some(holder) if !holder.same_object(req.owner) => Err(ClaimError::Conflict {
                mac: req.mac,
                holder: Box::new(holder.clone()),
            }),
            Some(holder) => {
                // Rewritten only when the request knows the object better; a repeated create
                // of the same object changes nothing. Every field is named, so a new one has to
                // be considered here (`same_object` has compared group, resource and namespace;
                // the holder keeps its token).
                let Owner {
                    group: _,
                    resource: _,
                    namespace: _,
                    kind,
                    name,
                    generate_name,
                    uid,
                    token,
                } = req.owner.owner();
                let unchanged = (holder.token.is_some() || token.is_none())
                    && holder.name == *name
                    && holder.uid == *uid
                    && holder.kind == *kind
                    && holder.generate_name == *generate_name;
                if !req.dry_run && !unchanged {
                    // The same object, now known better (a name, a new incarnation's uid).
                    let token = holder.token.take().or_else(|| req.owner.token.clone());
                    *holder = Owner {
                        token,
                        ..req.owner.owner().clone()
                    };
                }
                Ok(())
            }
            None => {
                if !req.dry_run {
                    st.held.insert(key, req.owner.owner().clone());
                    if self.range.contains(req.mac) {
                        st.in_range += 1;
                    }
                }
                Ok(())
            }
        };
        if result.is_ok() && !req.dry_run && !req.nic.is_empty() {
            let claims = st.by_nic.entry(req.owner.fingerprint()).or_default();
            match claims
                .iter_mut()
                .find(|c| c.nic == req.nic && c.scope == *req.scope)
            {
                Some(c) => c.mac = req.mac,
                None => claims.push(NicClaim {
                    nic: req.nic.to_string(),
                    scope: req.scope.clone(),
                    mac: req.mac,
                }),
            }
        }
        result
    }
}

impl MacAllocator for InMemoryAllocator {
    fn range(&self) -> MacRange {
        self.range
    }

    fn scope_mode(&self) -> ScopeMode {
        self.mode
    }

    fn candidate(&self, scope: &Scope, taken: &dyn Fn(Mac) -> bool) -> Result<Mac, AllocError> {
        let mut st = self.lock();
        let v = self
            .range
            .next_fit(st.cursor, |v| {
                let mac = Mac::from_u64(v);
                st.held.contains_key(&(scope.clone(), mac)) || taken(mac)
            })
            .ok_or(AllocError::Exhausted(self.range))?;
        st.cursor = v + 1;
        Ok(Mac::from_u64(v))
    }

    fn held_for(&self, owner: &KnownOwner, nic: &str, scope: &Scope) -> Option<Mac> {
        if nic.is_empty() {
            return None;
        }
        let st = self.lock();
        owner.identities().into_iter().flatten().find_map(|fp| {
            let mac = st.nic_mac(fp, nic, scope)?;
            // Still this owner's (not released, not taken over).
            st.held
                .get(&(scope.clone(), mac))
                .is_some_and(|h| h.same_object(owner))
                .then_some(mac)
        })
    }

    fn held_by_other(&self, owner: &Owner, scope: &Scope, mac: Mac) -> bool {
        self.lock()
            .held
            .get(&(scope.clone(), mac))
            .is_some_and(|h| !h.same_object(owner))
    }

    fn holder<'a>(
        &'a self,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<Option<Owner>, AllocError>> {
        let found = self.lock().held.get(&(scope.clone(), mac)).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn claim<'a>(&'a self, req: ClaimRequest<'a>) -> AllocFuture<'a, Result<(), ClaimError>> {
        let result = self.claim_in(&mut self.lock(), req);
        Box::pin(std::future::ready(result))
    }

    /// Each in turn, under one lock: every answer is at hand, there is nothing to wait for.
    fn claim_many<'a>(
        &'a self,
        reqs: &'a [ClaimRequest<'a>],
    ) -> AllocFuture<'a, Vec<Result<(), ClaimError>>> {
        let mut st = self.lock();
        let results = reqs.iter().map(|&r| self.claim_in(&mut st, r)).collect();
        Box::pin(std::future::ready(results))
    }

    fn bind<'a>(
        &'a self,
        owner: &'a Owner,
        keys: &'a [(Scope, Mac)],
    ) -> AllocFuture<'a, Result<(), AllocError>> {
        let mut st = self.lock();
        for key in keys {
            if let Some(h) = st.held.get_mut(key)
                && h.token.is_some()
                && h.token == owner.token
            {
                h.name = owner.name.clone();
                h.uid = owner.uid.clone();
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn release<'a>(
        &'a self,
        owner: &'a Owner,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<bool, AllocError>> {
        let mut st = self.lock();
        let key = (scope.clone(), mac);
        let gone = st.held.get(&key).is_some_and(|h| h.same_object(owner));
        if gone {
            st.held.remove(&key);
            st.by_nic.retain(|_, claims| {
                claims.retain(|c| !(c.mac == mac && c.scope == *scope));
                !claims.is_empty()
            });
            if self.range.contains(mac) {
                st.in_range -= 1;
            }
        }
        Box::pin(std::future::ready(Ok(gone)))
    }

    fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn held_in_range(&self) -> usize {
        self.lock().in_range
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    use crate::allocator::test_pod as pod;

    fn small() -> MacRange {
        "02:00:00:00:00:01-02:00:00:00:00:04".parse().unwrap()
    }

    fn claim(a: &InMemoryAllocator, owner: &Owner, mac: Mac) -> Result<(), ClaimError> {
        a.claim(ClaimRequest {
            owner: &KnownOwner::new(owner.clone()),
            scope: &Scope::Cluster,
            mac,
            nic: "eth1",
            dry_run: false,
        })
        .now_or_never()
        .unwrap()
    }

    fn allocate(a: &InMemoryAllocator, owner: &Owner) -> Result<Mac, AllocError> {
        let m = a.candidate(&Scope::Cluster, &|_| false)?;
        claim(a, owner, m).unwrap();
        Ok(m)
    }

    #[test]
    fn next_fit_does_not_reuse_a_released_mac_at_once() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let m1 = allocate(&a, &pod("a")).unwrap();
        assert_eq!(m1.to_string(), "02:00:00:00:00:01");
        assert!(
            a.release(&pod("a"), &Scope::Cluster, m1)
                .now_or_never()
                .unwrap()
                .unwrap()
        );
        let m2 = allocate(&a, &pod("b")).unwrap();
        assert_eq!(m2.to_string(), "02:00:00:00:00:02");
    }

    #[test]
    fn a_candidate_reserves_nothing_but_is_not_offered_again() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let d = a.candidate(&Scope::Cluster, &|_| false).unwrap();
        assert_eq!(a.held(), 0);
        let r = allocate(&a, &pod("a")).unwrap();
        assert_ne!(d, r);
        assert_eq!(a.held(), 1);
    }

    #[test]
    fn exhausts_and_wraps() {
        let a = InMemoryAllocator::with_cursor(small(), 0x0200_0000_0003);
        let got: Vec<_> = (0..4)
            .map(|_| allocate(&a, &pod("a")).unwrap().to_string())
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
            a.candidate(&Scope::Cluster, &|_| false),
            Err(AllocError::Exhausted(_))
        ));
    }

    #[test]
    fn claims_conflict_with_other_objects_only() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let first: Mac = "02:00:00:00:00:01".parse().unwrap();
        let m = a.candidate(&Scope::Cluster, &|m| m == first).unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:02");
        claim(&a, &pod("a"), m).unwrap();
        assert!(matches!(
            claim(&a, &pod("b"), m),
            Err(ClaimError::Conflict { holder, .. }) if *holder == pod("a")
        ));
        claim(&a, &pod("a"), m).unwrap();
        assert!(a.held_by_other(&pod("b"), &Scope::Cluster, m));
        assert!(!a.held_by_other(&pod("a"), &Scope::Cluster, m));
        // Releasing someone else's claim does nothing.
        assert!(
            !a.release(&pod("b"), &Scope::Cluster, m)
                .now_or_never()
                .unwrap()
                .unwrap()
        );
    }

    #[test]
    fn each_named_nic_gets_back_its_own_mac_and_a_new_uid_is_recorded() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let owner = pod("a");
        let claim_nic = |owner: &Owner, nic: &str, mac: Mac| {
            a.claim(ClaimRequest {
                owner: &KnownOwner::new(owner.clone()),
                scope: &Scope::Cluster,
                mac,
                nic,
                dry_run: false,
            })
            .now_or_never()
            .unwrap()
        };
        let m1 = a.candidate(&Scope::Cluster, &|_| false).unwrap();
        claim_nic(&owner, "eth1", m1).unwrap();
        let m2 = a.candidate(&Scope::Cluster, &|_| false).unwrap();
        claim_nic(&owner, "eth2", m2).unwrap();
        assert_ne!(m1, m2);
        assert_eq!(
            a.held_for(&KnownOwner::new(owner.clone()), "eth1", &Scope::Cluster),
            Some(m1)
        );
        assert_eq!(
            a.held_for(&KnownOwner::new(owner.clone()), "eth2", &Scope::Cluster),
            Some(m2)
        );
        assert_eq!(
            a.held_for(&KnownOwner::new(owner.clone()), "eth3", &Scope::Cluster),
            None
        );
        // The same claim again changes nothing; a new incarnation's uid is recorded.
        claim_nic(&owner, "eth1", m1).unwrap();
        let reborn = Owner {
            uid: Some("u2".into()),
            ..owner.clone()
        };
        claim_nic(&reborn, "eth1", m1).unwrap();
        let holder = a
            .holder(&Scope::Cluster, m1)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(holder.unwrap().uid.as_deref(), Some("u2"));
        assert_eq!(a.held(), 2);
        // Released: that NIC's MAC is forgotten, the other one kept.
        assert!(
            a.release(&owner, &Scope::Cluster, m1)
                .now_or_never()
                .unwrap()
                .unwrap()
        );
        assert_eq!(
            a.held_for(&KnownOwner::new(owner.clone()), "eth1", &Scope::Cluster),
            None
        );
        assert_eq!(
            a.held_for(&KnownOwner::new(owner.clone()), "eth2", &Scope::Cluster),
            Some(m2)
        );
    }

    #[test]
    fn a_nameless_claim_is_bound_by_its_token_not_by_a_prefix() {
        let a = InMemoryAllocator::with_cursor(small(), 0);
        let pending = Owner {
            name: None,
            generate_name: Some("web-".into()),
            token: Some("t1".into()),
            ..pod("x")
        };
        let m = allocate(&a, &pending).unwrap();
        assert!(a.held_by_other(&pod("web-server"), &Scope::Cluster, m));
        let named = Owner {
            name: Some("web-k4sks".into()),
            uid: Some("u1".into()),
            ..pending.clone()
        };
        assert!(!a.held_by_other(&named, &Scope::Cluster, m));
        a.bind(&named, &[(Scope::Cluster, m)])
            .now_or_never()
            .unwrap()
            .unwrap();
        let holder = a
            .holder(&Scope::Cluster, m)
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(holder.name.as_deref(), Some("web-k4sks"));
        assert!(a.held_by_other(&pod("web-zzzzz"), &Scope::Cluster, m));
        assert!(!a.held_by_other(&pod("web-k4sks"), &Scope::Cluster, m));
    }

    #[test]
    fn claims_together_answer_as_claims_one_by_one() {
        let (a, b) = (KnownOwner::new(pod("a")), KnownOwner::new(pod("b")));
        let cluster = Scope::Cluster;
        let mac = |n: u64| Mac::from_u64(small().start().to_u64() + n);
        let req = |owner, n, nic, dry_run| ClaimRequest {
            owner,
            scope: &cluster,
            mac: mac(n),
            nic,
            dry_run,
        };
        let (a, b) = (&a, &b);
        // Free, taken by another, a dry run, the same again (already this owner's), one taken
        // earlier in the same batch.
        let batch = [
            req(a, 0, "eth1", false),
            req(a, 1, "eth2", false),
            req(a, 2, "eth3", true),
            req(a, 0, "eth1", false),
            req(b, 0, "eth1", false),
        ];
        let answers = |together: bool| {
            let alloc = InMemoryAllocator::with_cursor(small(), 0);
            alloc
                .claim(req(b, 1, "eth9", false))
                .now_or_never()
                .unwrap()
                .unwrap();
            let got = if together {
                alloc.claim_many(&batch).now_or_never().unwrap()
            } else {
                let one = |&r| alloc.claim(r).now_or_never().unwrap();
                batch.iter().map(one).collect()
            };
            let shape: Vec<_> = got
                .iter()
                .map(|r| match r {
                    Ok(()) => "ok",
                    Err(ClaimError::Conflict { .. }) => "conflict",
                    Err(ClaimError::Alloc(_)) => "alloc",
                })
                .collect();
            (shape, alloc.held())
        };
        let (together, one_by_one) = (answers(true), answers(false));
        assert_eq!(together, one_by_one);
        assert_eq!(
            together,
            (vec!["ok", "conflict", "ok", "ok", "conflict"], 2)
        );
    }
}
