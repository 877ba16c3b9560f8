//! The policy's one effect: claiming MACs through the allocator (mutating phase), looking up who
//! holds a MAC (validating phase) and binding the claims of an object created with
//! `generateName` to the name it got. Never a release.

use super::mutate::Plan;
use super::{Cause, Denial, Operation, Outcome, Policy, Request, Subject, rules};
use crate::allocator::{AllocError, ClaimError, ClaimRequest, Owner, Scope};
use crate::dialect::annotations;
use crate::fast_hash::FastSet;
use crate::model::{Field, Mac, Rule};
use crate::runtime::Chain;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many rounds of candidates a review may find already claimed (by another replica, before
/// the cache showed it) before the NICs still without a MAC are denied.
pub const MAX_CONFLICTS: u32 = 16;

/// What claiming took for one review.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimStats {
    /// Claims asked for (each a write with a cluster-wide allocator, unless dry-run).
    pub claims: u32,
    /// Candidates found claimed by another object and retried.
    pub conflicts: u32,
    /// Time spent in the allocator.
    pub elapsed: Duration,
}

fn deny(causes: Vec<Cause>, stats: ClaimStats) -> Result<ClaimStats, (Denial, ClaimStats)> {
    Err((Denial::from_causes(causes, Vec::new()), stats))
}

/// The cause for an allocator failure at a NIC's MAC.
fn failed(path: impl Into<String>, e: &AllocError, hint: &str) -> Cause {
    Cause::new(Rule::Allocation, path, format!("{}; {hint}", Chain(e)))
}

/// The first round of new MACs, and the answer the mutation gives with them, judged by the
/// validating phase's rules before anything is claimed.
pub(super) struct Proposal {
    /// A candidate for each NIC of `plan.inject`, in that order.
    macs: Vec<(usize, Mac)>,
    /// The mutation's answer once they are claimed.
    outcome: Outcome,
}

impl Proposal {
    /// The answer, for when every proposed MAC was claimed.
    pub(super) fn into_outcome(self) -> Outcome {
        self.outcome
    }
}

/// Picks the first round of candidates (once: the claims use the same ones) and judges the
/// request as mutated with them. `Err`: the validating phase would deny it; the answer (with
/// free-looking MACs) claims nothing. `Ok(None)`: nothing to claim, or no candidate to judge
/// with (then claiming says why). The mutated object is judged on the model ([`judge_mutated`]).
pub(super) fn propose(
    p: &Policy,
    req: &Request<'_>,
    s: &mut Subject,
    plan: &Plan,
) -> Result<Option<Proposal>, Outcome> {
    if plan.claim.is_empty() && plan.inject.is_empty() {
        return Ok(None);
    }
    let mode = p.allocator.scope_mode();
    let mut macs = Vec::with_capacity(plan.inject.len());
    for &i in &plan.inject {
        let taken = |m: Mac| plan.taken.contains(&m) || macs.iter().any(|&(_, n)| n == m);
        let nic = &s.new.nics[i];
        let scope = mode.scope_of(nic);
        // The MAC this NIC of this object already holds, if the allocator knows it, else a new one.
        let held = nic
            .name
            .as_deref()
            .and_then(|name| p.allocator.held_for(&s.owner, name, &scope))
            .filter(|&m| !taken(m));
        let Some(mac) = held.or_else(|| p.allocator.candidate(&scope, &taken).ok()) else {
            return Ok(None);
        };
        macs.push((i, mac));
    }
    // The plan's MACs and the proposed ones (the plan itself is kept for claiming).
    let assigned = [plan.assigned.as_slice(), &macs].concat();
    let outcome = super::mutate::finish(p, req, s, assigned, plan.token.clone());
    if outcome.patch().is_none() {
        return Ok(None);
    }
    let causes = judge_mutated(p, req, s, plan, &macs);
    #[cfg(debug_assertions)]
    if let Some(patch) = outcome.patch() {
        let patched = judge_patched(req, s, patch);
        assert_eq!(
            causes.is_empty(),
            patched.is_empty(),
            "judged from the model: {causes:?}; from the patched object: {patched:?}"
        );
    }
    if causes.is_empty() {
        Ok(Some(Proposal { macs, outcome }))
    } else {
        Err(outcome)
    }
}

/// The validating phase's causes for the object as mutated by `plan` with the proposed `macs`,
/// judged on the workload already read: what the patch changes in it is exactly the MACs it
/// writes and the capacity default (the claim token is no NIC's business), so those are set in
/// place, judged, and put back. Debug builds (every test) check that it denies exactly when
/// [`judge_patched`] (the object patched and read again) does. The causes themselves may differ
/// where only a denial is possible anyway: MACs kept in a map keyed by NIC name
/// (`hotnic.io/mac-addresses`) are written once per name, so NICs sharing a name (denied by the
/// names rule) read back sharing a MAC as well.
fn judge_mutated(
    p: &Policy,
    req: &Request<'_>,
    s: &mut Subject,
    plan: &Plan,
    macs: &[(usize, Mac)],
) -> Vec<Cause> {
    let capacity = super::mutate::capacity_default(p, req, s).map(|v| Field {
        path: annotations::path(annotations::CAPACITY),
        value: serde_json::Value::String(v),
    });
    let mut saved = Vec::with_capacity(plan.assigned.len() + macs.len());
    for &(i, mac) in plan.assigned.iter().chain(macs) {
        if let Some(nic) = s.new.nics.get_mut(i) {
            let before = nic.mac.replace(mac.text().as_str().to_string());
            let parsed_before = nic.mac_parsed.replace(mac);
            saved.push((i, before, parsed_before));
        }
    }
    let saved_capacity = match capacity {
        Some(c) => Some(s.new.capacity.annotation.replace(c)),
        None => None,
    };
    let causes = rules::check(req, s, &HashMap::new());
    // Put back in reverse, so a NIC listed twice ends with its first value.
    for (i, before, parsed_before) in saved.into_iter().rev() {
        s.new.nics[i].mac = before;
        s.new.nics[i].mac_parsed = parsed_before;
    }
    if let Some(before) = saved_capacity {
        s.new.capacity.annotation = before;
    }
    causes
}

/// [`judge_mutated`] the long way: the object patched, read again and judged.
#[cfg(debug_assertions)]
fn judge_patched(req: &Request<'_>, s: &mut Subject, patch: &json_patch::Patch) -> Vec<Cause> {
    let mut object = req.object.clone();
    if let Err(e) = json_patch::patch(&mut object, &patch.0) {
        panic!("the mutation's own patch does not apply: {e}");
    }
    let after = crate::dialect::read(s.new.dialect, &object, req.namespace);
    let before = std::mem::replace(&mut s.new, after);
    let causes = rules::check(req, s, &HashMap::new());
    s.new = before;
    causes
}

/// Claims every MAC of the plan: the given ones on new NICs (another holder: denied at that NIC),
/// then a new one for each NIC that needs one, the proposal's first (a candidate claimed
/// meanwhile by another object is skipped and the next one tried). The claims of one round go
/// out together ([`MacAllocator::claim_many`](crate::allocator::MacAllocator::claim_many)), so a
/// review with several NICs waits for one round trip, not one per NIC. Injected MACs go into
/// `plan.assigned`.
pub(super) async fn claim_all(
    p: &Policy,
    req: &Request<'_>,
    s: &Subject,
    plan: &mut Plan,
    proposal: Option<&Proposal>,
) -> Result<ClaimStats, (Denial, ClaimStats)> {
    let mut stats = ClaimStats::default();
    if plan.claim.is_empty() && plan.inject.is_empty() {
        return Ok(stats);
    }
    let start = Instant::now();
    let alloc = &p.allocator;
    let mode = alloc.scope_mode();
    let nics = &s.new.nics;
    let finish = |mut stats: ClaimStats, causes: Vec<Cause>| {
        stats.elapsed = start.elapsed();
        deny(causes, stats)
    };
    if !alloc.is_ready() {
        let first = plan
            .claim
            .first()
            .map(|c| c.0)
            .or(plan.inject.first().copied());
        let path = first.map_or_else(|| "metadata".into(), |i| nics[i].mac_path.to_string());
        return finish(
            stats,
            vec![failed(
                path,
                &AllocError::NotReady,
                "retry in a few seconds",
            )],
        );
    }
    // One round of claims (NIC, MAC, scope), sent together; each with its answer.
    let claim = |round: Vec<(usize, Mac, Scope)>| async move {
        let reqs: Vec<ClaimRequest<'_>> = round
            .iter()
            .map(|(i, mac, scope)| ClaimRequest {
                owner: &s.owner,
                scope,
                mac: *mac,
                nic: nics[*i].name.as_deref().unwrap_or(""),
                dry_run: req.dry_run,
            })
            .collect();
        let mut answers = alloc.claim_many(&reqs).await.into_iter();
        drop(reqs);
        round
            .into_iter()
            .map(|(i, mac, scope)| {
                // An allocator that answers fewer claims than asked: those are not made.
                let r = answers.next().unwrap_or_else(|| {
                    Err(ClaimError::Alloc(AllocError::Store {
                        action: "answered",
                        source: "the allocator gave fewer answers than claims".into(),
                    }))
                });
                (i, mac, scope, r)
            })
            .collect::<Vec<_>>()
    };

    // The MACs given on new NICs.
    let given = plan
        .claim
        .iter()
        .map(|&(i, mac)| (i, mac, mode.scope_of(&nics[i])))
        .collect();
    stats.claims += plan.claim.len() as u32;
    let mut causes = Vec::new();
    for (i, mac, scope, r) in claim(given).await {
        match r {
            Ok(()) => {}
            Err(ClaimError::Conflict { holder, .. }) => {
                causes.push(conflict(&nics[i].mac_path, mac, &holder, &scope));
            }
            Err(ClaimError::Alloc(e)) => {
                causes.push(failed(
                    &nics[i].mac_path,
                    &e,
                    "retry, the MAC is still yours to ask for",
                ));
            }
        }
    }
    if !causes.is_empty() {
        return finish(stats, causes);
    }

    // New MACs, in rounds: candidates for every NIC still without one, claimed together.
    let mut avoid: FastSet<Mac> = FastSet::default();
    let mut pending: Vec<usize> = plan.inject.clone();
    let mut rounds = 0;
    // The first round claims the proposal's candidates.
    if let Some(first) = proposal.filter(|p| !p.macs.is_empty()) {
        stats.claims += first.macs.len() as u32;
        let round = first
            .macs
            .iter()
            .map(|&(i, mac)| (i, mac, mode.scope_of(&nics[i])))
            .collect();
        let mut retry = Vec::new();
        for (i, mac, _, r) in claim(round).await {
            match r {
                Ok(()) => {
                    plan.taken.insert(mac);
                    plan.assigned.push((i, mac));
                }
                Err(ClaimError::Conflict { .. }) => {
                    stats.conflicts += 1;
                    retry.push(i);
                }
                Err(ClaimError::Alloc(e)) => {
                    causes.push(failed(
                        &nics[i].mac_path,
                        &e,
                        "retry, or set a MAC yourself",
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return finish(stats, causes);
        }
        rounds += 1;
        pending = retry;
    }
    while !pending.is_empty() {
        let mut round = Vec::with_capacity(pending.len());
        for &i in &pending {
            let scope = mode.scope_of(&nics[i]);
            let taken = |m: Mac| plan.taken.contains(&m) || avoid.contains(&m);
            match alloc.candidate(&scope, &taken) {
                Ok(mac) => {
                    // Not offered to another NIC of this round.
                    avoid.insert(mac);
                    round.push((i, mac, scope));
                }
                Err(e) => {
                    let hint = "set a MAC yourself, or widen --mac-range";
                    return finish(stats, vec![failed(&nics[i].mac_path, &e, hint)]);
                }
            }
        }
        stats.claims += round.len() as u32;
        let mut retry = Vec::new();
        for (i, mac, _, r) in claim(round).await {
            match r {
                Ok(()) => {
                    avoid.remove(&mac);
                    plan.taken.insert(mac);
                    plan.assigned.push((i, mac));
                }
                Err(ClaimError::Conflict { .. }) => {
                    stats.conflicts += 1;
                    retry.push(i);
                }
                Err(ClaimError::Alloc(e)) => {
                    causes.push(failed(
                        &nics[i].mac_path,
                        &e,
                        "retry, or set a MAC yourself",
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return finish(stats, causes);
        }
        rounds += 1;
        if !retry.is_empty() && rounds >= MAX_CONFLICTS {
            let causes = retry
                .iter()
                .map(|&i| {
                    Cause::new(
                        Rule::Allocation,
                        nics[i].mac_path.clone(),
                        format!(
                            "{MAX_CONFLICTS} free-looking MACs in a row were just claimed by other objects; retry, or set a MAC yourself"
                        ),
                    )
                })
                .collect();
            return finish(stats, causes);
        }
        pending = retry;
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// The rule-2 cause for a MAC another object holds.
fn conflict(path: impl Into<String>, mac: Mac, holder: &Owner, scope: &Scope) -> Cause {
    let on = match scope {
        Scope::Cluster => String::new(),
        Scope::Network(n) => format!(" on network {n}"),
    };
    Cause::new(
        Rule::Macs,
        path,
        format!(
            "{mac} is already used by {holder}{on}; choose another MAC, or leave it out and hotnic assigns one"
        ),
    )
}

/// Who else holds the MACs of new NICs, by NIC index (the validating phase's rule 2). The cache
/// answers; the store is asked only about the MACs the cache says are held.
pub(super) async fn held_by_others(p: &Policy, s: &Subject) -> HashMap<usize, Owner> {
    let mut held = HashMap::new();
    let mode = p.allocator.scope_mode();
    for (i, mac) in rules::new_macs(s) {
        let scope = mode.scope_of(&s.new.nics[i]);
        if !p.allocator.held_by_other(&s.owner, &scope, mac) {
            continue;
        }
        match p.allocator.holder(&scope, mac).await {
            Ok(Some(h)) if !h.same_object(&s.owner) => {
                held.insert(i, h);
            }
            Ok(_) => {}
            // The mutating phase's claim is what decides; the lookup only words the message.
            Err(e) => tracing::warn!(%mac, error = %Chain(&e), "cannot tell who holds a MAC"),
        }
    }
    held
}

/// After an allowed CREATE of an object that got a claim token (created without a name), binds
/// its claims to the name and uid it now has, so that the claims name it (messages, the repair
/// loop) and no other object is ever taken for it. Not on dry-run; a failure is left to the
/// repair loop, which finds the object by its token.
pub(super) async fn bind_generated(p: &Policy, req: &Request<'_>, s: &Subject) {
    let o = s.owner.owner();
    if req.dry_run
        || req.operation != Operation::Create
        || o.token.is_none()
        || o.name.is_none()
        || o.uid.is_none()
    {
        return;
    }
    let mode = p.allocator.scope_mode();
    let keys: Vec<(Scope, Mac)> = s
        .new
        .nics
        .iter()
        .filter(|n| !n.implicit)
        .filter_map(|n| Some((mode.scope_of(n), n.parsed_mac()?)))
        .collect();
    if let Err(e) = p.allocator.bind(o, &keys).await {
        tracing::warn!(owner = %o, error = %Chain(&e), "binding the claims of a generated name failed; the repair loop will");
    }
}

/// The answer of the synchronous entry points when the allocator would have to wait.
pub(super) fn would_block() -> Outcome {
    Outcome::Denied(Denial::from_causes(
        vec![Cause::new(
            Rule::Allocation,
            "metadata",
            "this MAC allocator answers asynchronously and cannot serve a synchronous check; use the async policy entry points",
        )],
        Vec::new(),
    ))
}
