//! Mutations: MAC injection (keeping MACs stable across updates) and the capacity default.

use super::{Denial, Operation, Outcome, Policy, Request, Subject, rules};
use crate::allocator::CLAIM_TOKEN;
use crate::dialect::{self, PatchBuilder, annotations};
use crate::fast_hash::FastSet;
use crate::model::{MAX_CAPACITY, Mac, parse_capacity};

/// What the mutation will write and claim, before the allocator is asked.
#[derive(Clone)]
pub(super) struct Plan {
    /// MACs to write, by index into the new workload's NICs (kept, normalised, then injected).
    pub assigned: Vec<(usize, Mac)>,
    /// NICs that need a new MAC from the range.
    pub inject: Vec<usize>,
    /// MACs given on new NICs, to claim for the object: (NIC index, MAC).
    pub claim: Vec<(usize, Mac)>,
    /// Every MAC the object (new and old) carries: a new one must differ from all of them.
    pub taken: FastSet<Mac>,
    /// A claim token to write into the object (a CREATE without a name).
    pub token: Option<String>,
}

/// Plans the mutation: chooses for every NIC without a MAC its old MAC if the NIC existed
/// before, else (if the NIC is present) a new one; normalises user-given MACs to lower-case `:`
/// form; lists the MACs to claim. Malformed objects are denied; VMIs of a VirtualMachine carry
/// the VM's MACs and are left alone.
pub(super) fn prepare(_p: &Policy, req: &Request<'_>, s: &mut Subject) -> Result<Plan, Outcome> {
    let malformed = rules::syntax_errors(&s.new);
    if !malformed.is_empty() {
        return Err(Outcome::Denied(Denial::from_causes(malformed, Vec::new())));
    }
    if s.inherits_macs {
        return Err(Outcome::allow(Vec::new()));
    }
    let old_nics = s.old.iter().flat_map(|o| o.nics.iter());
    let mut taken = FastSet::with_capacity_and_hasher(
        s.new.nics.len() + s.old.as_ref().map_or(0, |o| o.nics.len()),
        Default::default(),
    );
    taken.extend(
        s.new
            .nics
            .iter()
            .chain(old_nics)
            .filter_map(|n| n.parsed_mac()),
    );
    let mut plan = Plan {
        assigned: Vec::new(),
        inject: Vec::new(),
        claim: rules::new_macs(s),
        taken,
        token: None,
    };
    for (i, nic) in s.new.nics.iter().enumerate() {
        if nic.implicit {
            continue;
        }
        if let Some(raw) = &nic.mac {
            if let Some(m) = nic.parsed_mac()
                && m.text().as_str() != raw
            {
                plan.assigned.push((i, m));
            }
            continue;
        }
        let kept = nic
            .name
            .as_deref()
            .and_then(|n| s.old.as_ref()?.by_name(n))
            .and_then(|o| o.parsed_mac());
        match kept {
            Some(m) => plan.assigned.push((i, m)),
            // A NIC being unplugged gets no new MAC.
            None if !nic.present => {}
            None => plan.inject.push(i),
        }
    }
    let claims = !plan.claim.is_empty() || !plan.inject.is_empty();
    if claims
        && req.operation == Operation::Create
        && s.owner.name.is_none()
        && s.owner.token.is_none()
    {
        let token = format!("{:016x}", rand::random::<u64>());
        s.owner.set_token(token.clone());
        plan.token = Some(token);
    }
    Ok(plan)
}

/// Writes a plan's MACs (`assigned`, its MACs now claimed, by NIC index) and claim `token` as a
/// patch, with the capacity default.
pub(super) fn finish(
    p: &Policy,
    req: &Request<'_>,
    s: &Subject,
    mut assigned: Vec<(usize, Mac)>,
    token: Option<String>,
) -> Outcome {
    let mut patch = PatchBuilder::new(req.object);
    assigned.sort_by_key(|(i, _)| *i);
    dialect::write_macs(req.object, &s.new, &assigned, &mut patch);
    if let Some(token) = token {
        patch.set_annotation(CLAIM_TOKEN, token);
    }
    default_capacity(p, req, s, &mut patch);
    Outcome::Allowed {
        patch: patch.finish(),
        warnings: Vec::new(),
    }
}

/// CREATE: sets the capacity annotation when missing (see [`capacity_default`]). UPDATE: puts
/// back an annotation the update dropped.
fn default_capacity(p: &Policy, req: &Request<'_>, s: &Subject, patch: &mut PatchBuilder) {
    if let Some(value) = capacity_default(p, req, s) {
        patch.set_annotation(annotations::CAPACITY, value);
    }
}

/// The capacity annotation the mutation writes, if any: on CREATE without one, the KubeVirt
/// request if given, else `min(32, max(default, NIC count))`; on UPDATE without one, the old
/// object's.
pub(super) fn capacity_default(p: &Policy, req: &Request<'_>, s: &Subject) -> Option<String> {
    if s.new.capacity.annotation.is_some() {
        return None;
    }
    match req.operation {
        Operation::Create => {
            let from_request = s
                .new
                .capacity
                .request
                .as_ref()
                .and_then(|f| parse_capacity(&f.value).ok());
            let count = s.new.present().count();
            let default = usize::from(p.config.default_capacity);
            Some(
                from_request
                    .unwrap_or_else(|| count.max(default).min(usize::from(MAX_CAPACITY)) as u8)
                    .to_string(),
            )
        }
        _ => s
            .old
            .as_ref()
            .and_then(|o| o.capacity.annotation.as_ref())
            .and_then(|f| f.value.as_str())
            .map(str::to_string),
    }
}
