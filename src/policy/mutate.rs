//! Mutations: MAC injection (keeping MACs stable across updates) and the capacity default.

use super::{Cause, Denial, Operation, Outcome, Policy, Request, Subject, rules};
use crate::dialect::{self, PatchBuilder, annotations};
use crate::model::{MAX_CAPACITY, Mac, Rule, parse_capacity};
use std::collections::HashSet;

pub(super) fn run(p: &Policy, req: &Request<'_>, s: &Subject) -> Outcome {
    let malformed = rules::syntax_errors(&s.new);
    if !malformed.is_empty() {
        return Outcome::Denied(Denial::from_causes(malformed, Vec::new()));
    }
    if s.inherits_macs {
        // A VMI of a VirtualMachine carries the VM's MACs and capacity; nothing to add.
        return Outcome::allow(Vec::new());
    }
    let mut patch = PatchBuilder::new(req.object);
    let mut assigned: Vec<(usize, Mac)> = Vec::new();
    if let Err(cause) = assign_macs(p, req, s, &mut assigned) {
        return Outcome::Denied(Denial::from_causes(vec![cause], Vec::new()));
    }
    account(p, req, s, &assigned);
    dialect::write_macs(req.object, &s.new, &assigned, &mut patch);
    default_capacity(p, req, s, &mut patch);
    Outcome::Allowed {
        patch: patch.finish(),
        warnings: Vec::new(),
    }
}

/// Chooses a MAC for every NIC without one: its old MAC if the NIC existed before, else (if the NIC
/// is present) a new one from the allocator. Also normalises user-given MACs to lower-case `:` form.
fn assign_macs(
    p: &Policy,
    req: &Request<'_>,
    s: &Subject,
    assigned: &mut Vec<(usize, Mac)>,
) -> Result<(), Cause> {
    let old_nics = s.old.iter().flat_map(|o| o.nics.iter());
    let mut taken: HashSet<Mac> = s
        .new
        .nics
        .iter()
        .chain(old_nics)
        .filter_map(|n| n.parsed_mac())
        .collect();
    for (i, nic) in s.new.nics.iter().enumerate() {
        if nic.implicit {
            continue;
        }
        if let Some(raw) = &nic.mac {
            if let Ok(m) = raw.parse::<Mac>()
                && m.to_string() != *raw
            {
                assigned.push((i, m));
            }
            continue;
        }
        let kept = nic
            .name
            .as_deref()
            .and_then(|n| s.old.as_ref()?.by_name(n))
            .and_then(|o| o.parsed_mac());
        let mac = match kept {
            Some(m) => m,
            // A NIC being unplugged gets no new MAC.
            None if !nic.present => continue,
            None => p
                .allocator
                .allocate(&s.owner, &|m| taken.contains(&m), req.dry_run)
                .map_err(|e| {
                    Cause::new(
                        Rule::Allocation,
                        nic.mac_path.clone(),
                        format!("{e}; set a MAC yourself or widen --mac-range"),
                    )
                })?,
        };
        taken.insert(mac);
        assigned.push((i, mac));
    }
    Ok(())
}

/// Tells the allocator which MACs the object now holds and which it gave up (no-op on dry-run).
fn account(p: &Policy, req: &Request<'_>, s: &Subject, assigned: &[(usize, Mac)]) {
    if req.dry_run {
        return;
    }
    let mut now: HashSet<Mac> = assigned.iter().map(|(_, m)| *m).collect();
    now.extend(s.new.nics.iter().filter_map(|n| n.parsed_mac()));
    for mac in &now {
        // A conflict is the validating phase's to report.
        let _ = p.allocator.claim(&s.owner, *mac, false);
    }
    for gone in s
        .old
        .iter()
        .flat_map(|o| o.nics.iter())
        .filter_map(|n| n.parsed_mac())
        .filter(|m| !now.contains(m))
    {
        p.allocator.release(&s.owner, gone, false);
    }
}

/// CREATE: sets the capacity annotation when missing (the KubeVirt request if given, else
/// `min(32, max(default, NIC count))`). UPDATE: puts back an annotation the update dropped.
fn default_capacity(p: &Policy, req: &Request<'_>, s: &Subject, patch: &mut PatchBuilder) {
    if s.new.capacity.annotation.is_some() {
        return;
    }
    let value = match req.operation {
        Operation::Create => {
            let from_request = s
                .new
                .capacity
                .request
                .as_ref()
                .and_then(|f| parse_capacity(&f.value).ok());
            let count = s.new.present().count();
            let default = usize::from(p.config.default_capacity);
            from_request
                .unwrap_or_else(|| count.max(default).min(usize::from(MAX_CAPACITY)) as u8)
                .to_string()
        }
        _ => match s
            .old
            .as_ref()
            .and_then(|o| o.capacity.annotation.as_ref())
            .and_then(|f| f.value.as_str())
        {
            Some(v) => v.to_string(),
            None => return,
        },
    };
    patch.set_annotation(annotations::CAPACITY, value);
}
