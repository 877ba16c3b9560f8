//! The rules, each written once against the NIC model. Every rule adds all the causes it finds.
//!
//! The readers only record findings (syntax errors and facts); every decision, its field path
//! and its hint are here, including those on the readers' findings ([`findings`]).

use super::{Cause, Operation, Request, Subject};
use crate::allocator::Owner;
use crate::fast_hash::{FastMap, FastSet};
use crate::model::ifname::{kubevirt_name_problem, linux_ifname_problem};
use crate::model::{
    Dialect, Fact, Finding, Mac, NameStyle, Nic, Rule, ShortForm, Syntax, UnplugStyle, Workload,
    parse_capacity,
};
use serde_json::Value;
use std::collections::HashMap;

/// Runs every rule; `held` names the other objects that hold MACs of new NICs (by NIC index).
pub(super) fn check(req: &Request<'_>, s: &Subject, held: &HashMap<usize, Owner>) -> Vec<Cause> {
    let mut causes = Vec::new();
    findings(&s.new, &mut causes);
    names(&s.new, &mut causes);
    macs(s, held, &mut causes);
    capacity(req, s, &mut causes);
    if let Some(old) = &s.old {
        binding(&s.new, old, &mut causes);
    }
    primary(&s.new, s.old.as_ref(), &mut causes);
    if s.new.dialect.unplug_style() == UnplugStyle::Absent {
        kubevirt_unplug(&s.new, s.old.as_ref(), &mut causes);
    }
    causes
}

/// Things worth telling but not denying.
pub(super) fn warnings(s: &Subject) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cap) = s.new.capacity.effective() {
        let count = s.new.present().count();
        if count > usize::from(cap) && s.old.is_none() {
            out.push(format!(
                "interface capacity {cap} is below the {count} NICs of this workload; it has no effect (no NIC can be hot-plugged)"
            ));
        }
    }
    out
}

/// The syntax errors the reader found, as malformed causes (in reading order).
pub(super) fn syntax_errors(w: &Workload) -> Vec<Cause> {
    w.findings
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::Syntax(s) => Some(malformed(w.dialect, &f.path, s)),
            _ => None,
        })
        .collect()
}

/// The readers' findings, judged in reading order: syntax errors are malformed (422), the Multus
/// element facts are rule 7, the KubeVirt interface/network pairing is rule 1.
fn findings(w: &Workload, causes: &mut Vec<Cause>) {
    for f in &w.findings {
        let cause = |rule: Rule, message: String| Cause::new(rule, f.path.clone(), message);
        causes.push(match &f.fact {
            Fact::Syntax(s) => malformed(w.dialect, &f.path, s),
            // Rule 7: every element names its network; ips and a claim exclude each other.
            Fact::NoNetworkName => cause(
                Rule::Multus,
                "missing; every element names its NetworkAttachmentDefinition, e.g. \"name\": \"bridge-net\"".into(),
            ),
            Fact::IpsWithClaim => cause(
                Rule::Multus,
                "ips and ipam-claim-reference exclude each other; keep one of them".into(),
            ),
            // Judged across the elements, below.
            Fact::DefaultRoute => continue,
            // Rule 1 (KubeVirt): interfaces and networks are paired by name.
            Fact::UnnamedNetwork => cause(
                Rule::Names,
                "missing; every network needs the name of its interface".into(),
            ),
            Fact::NetworkWithoutInterface { name, interfaces } => cause(
                Rule::Names,
                format!("no interface named {name:?}; add one to {interfaces} or remove this network"),
            ),
            Fact::InterfaceWithoutNetwork { name, networks } => cause(
                Rule::Names,
                format!("no network named {name:?}; add {{\"name\": {name:?}, \"multus\": {{\"networkName\": \"<nad>\"}}}} to {networks}"),
            ),
        });
    }
    one_default_route(&w.findings, causes);
}

/// Rule 7: at most one Multus element sets `default-route`.
fn one_default_route(findings: &[Finding], causes: &mut Vec<Cause>) {
    let mut routes = findings
        .iter()
        .filter(|f| f.fact == Fact::DefaultRoute)
        .map(|f| f.path.as_str());
    let Some(first) = routes.next() else { return };
    for extra in routes {
        causes.push(Cause::new(
            Rule::Multus,
            extra,
            format!(
                "only one element may set default-route (already set at {first}); remove it here"
            ),
        ));
    }
}

/// A syntax error as a malformed cause, saying what to write instead. The examples are the
/// dialect's: the annotation holding JSON is the networks list for Multus and the MAC map for
/// Arktos; the NIC list is `spec.nics` for Arktos and the interfaces for KubeVirt.
fn malformed(d: Dialect, path: &str, s: &Syntax) -> Cause {
    let mac_map = |why: String| {
        format!(
            "{why}; write a JSON object of NIC name to MAC, e.g. {{\"eth1\":\"02:00:00:00:00:01\"}}"
        )
    };
    let short = "write `net`, `namespace/net` or `namespace/net@ifname`, separated by commas";
    let message = match (s, d) {
        (Syntax::NotAString(v), _) => format!("must be a string, not {v}"),
        (Syntax::NotAList(v), Dialect::Arktos) => format!("must be a list of NICs, not {v}"),
        (Syntax::NotAList(v), _) => format!("must be a list, not {v}"),
        (Syntax::NotAWorkload(v), _) => {
            let kind = match d {
                Dialect::Arktos | Dialect::Multus => "Pod",
                Dialect::VirtualMachine => "VirtualMachine",
                Dialect::VirtualMachineInstance => "VirtualMachineInstance",
            };
            let mut text = v.to_string();
            if text.len() > 40 {
                text = format!("{}…", text.chars().take(40).collect::<String>());
            }
            format!(
                "must be a {kind} as a JSON object (apiVersion, kind, metadata, spec), not {text}"
            )
        }
        (Syntax::NotAnObject, Dialect::Arktos) => {
            "must be an object such as {\"name\": \"eth1\"}".into()
        }
        (Syntax::NotAnObject, Dialect::Multus) => {
            "must be an object such as {\"name\": \"net1\", \"interface\": \"eth1\"}".into()
        }
        (Syntax::NotAnObject, _) => {
            "must be an object such as {\"name\": \"nic1\", \"bridge\": {}}".into()
        }
        (Syntax::NotAListOfStrings, _) => {
            "must be a list of CIDR strings such as [\"10.1.1.5/24\"]".into()
        }
        (Syntax::AnnotationNotAString(_), Dialect::Multus) => {
            "must be a string: a JSON list of network-selection elements".into()
        }
        (Syntax::AnnotationNotAString(v), _) => mac_map(format!("{v} is not a string")),
        (Syntax::NotJson(e), Dialect::Multus) => format!(
            "not valid JSON ({e}); write a JSON list such as [{{\"name\":\"net1\",\"interface\":\"eth1\"}}] or the short form \"net1@eth1,ns2/net2@eth2\""
        ),
        (Syntax::NotJson(e), _) => mac_map(format!("not valid JSON ({e})")),
        (Syntax::NotAJsonObject(v), _) => mac_map(format!("{v} is not a JSON object")),
        (Syntax::MacNotAString { nic, found }, _) => {
            mac_map(format!("the value for {nic:?} is {found}, not a string"))
        }
        (Syntax::ShortForm { entry, problem }, _) => match problem {
            ShortForm::Empty => format!("empty entry; {short}"),
            ShortForm::TwoAts => format!("{entry:?} has more than one '@'; {short}"),
            ShortForm::TwoSlashes => format!("{entry:?} has more than one '/'; {short}"),
            ShortForm::EmptyPart => format!("{entry:?} has an empty part; {short}"),
        },
        (Syntax::PortIdSpellings { lower, upper }, _) => format!(
            "portId {lower:?} and portID {upper:?} differ; set only one of the two spellings"
        ),
    };
    Cause::new(Rule::Malformed, path, message)
}

/// The list a NIC's element path belongs to (`spec.nics[2]` → `spec.nics`), for NICs that are gone.
fn list_path(nic: &Nic) -> String {
    match nic.path.list() {
        Some(list) => list.to_string(),
        None => nic.path.to_string(),
    }
}

/// Renders a JSON value for a message (`unset` for null).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        other => other.to_string(),
    }
}

/// A free `ethN` name to suggest.
fn suggest_name(w: &Workload) -> String {
    (1..)
        .map(|i| format!("eth{i}"))
        .find(|n| w.by_name(n).is_none())
        .unwrap_or_else(|| "eth1".into())
}

/// Rule 1: every NIC named, validly for its dialect, uniquely.
fn names(w: &Workload, causes: &mut Vec<Cause>) {
    // Sized once: growing a map rehashes it.
    let mut seen: FastMap<&str, &Nic> =
        FastMap::with_capacity_and_hasher(w.nics.len(), Default::default());
    for nic in &w.nics {
        let Some(name) = nic.name.as_deref() else {
            causes.push(Cause::new(
                Rule::Names,
                nic.name_path.clone(),
                format!(
                    "missing; hot-plug needs every NIC named, e.g. \"{}\"",
                    suggest_name(w)
                ),
            ));
            continue;
        };
        if !nic.implicit {
            let problem = match w.dialect.name_style() {
                NameStyle::LinuxIfname => linux_ifname_problem(name),
                NameStyle::KubeVirt => kubevirt_name_problem(name),
            };
            if let Some(problem) = problem {
                causes.push(Cause::new(Rule::Names, nic.name_path.clone(), problem));
            }
        }
        match seen.get(name) {
            Some(first) if first.implicit => causes.push(Cause::new(
                Rule::Names,
                nic.name_path.clone(),
                format!(
                    "{name:?} is reserved for the pod's primary interface (the cluster default network); name this NIC e.g. \"{}\"",
                    suggest_name(w)
                ),
            )),
            Some(first) => causes.push(Cause::new(
                Rule::Names,
                nic.name_path.clone(),
                format!(
                    "{name:?} is already the name of {}; NIC names must be unique, e.g. \"{}\"",
                    first.path,
                    suggest_name(w)
                ),
            )),
            None => {
                seen.insert(name, nic);
            }
        }
    }
}

/// The MACs of a request that are new to the object and claimable: written on a NIC, valid
/// unicast, not twice in the object (rule 2 denies those), not already on the old object (those
/// are claimed, or adopted by the repair loop). By NIC index, in NIC order. None for a VMI of a
/// VirtualMachine (the VM holds its MACs).
pub(super) fn new_macs(s: &Subject) -> Vec<(usize, Mac)> {
    if s.inherits_macs {
        return Vec::new();
    }
    let old: FastSet<Mac> = s
        .old
        .iter()
        .flat_map(|o| o.nics.iter())
        .filter_map(Nic::parsed_mac)
        .collect();
    // Each MAC parsed once.
    let mut given: Vec<(usize, Mac)> = s
        .new
        .nics
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.implicit)
        .filter_map(|(i, n)| Some((i, n.parsed_mac()?)))
        .collect();
    let mut count: FastMap<Mac, usize> =
        FastMap::with_capacity_and_hasher(given.len(), Default::default());
    for &(_, m) in &given {
        *count.entry(m).or_default() += 1;
    }
    given.retain(|(_, m)| m.is_usable_unicast() && count[m] == 1 && !old.contains(m));
    given
}

/// Rule 2: MACs well-formed, unicast, unique in the object and not held by another object.
fn macs(s: &Subject, held: &HashMap<usize, Owner>, causes: &mut Vec<Cause>) {
    let w = &s.new;
    let masquerade = w.dialect.is_kubevirt()
        && w.nics
            .iter()
            .any(|n| n.method.as_deref() == Some("masquerade"));
    let mut seen: FastMap<Mac, &Nic> =
        FastMap::with_capacity_and_hasher(w.nics.len(), Default::default());
    let leave_out = "or leave it out and hotnic assigns one";
    for (i, nic) in w.nics.iter().enumerate().filter(|(_, n)| !n.implicit) {
        let Some(raw) = &nic.mac else { continue };
        // Parsed by the reader; parsed again only to say what is wrong with it.
        let mac = match nic.parsed_mac().map_or_else(|| raw.parse::<Mac>(), Ok) {
            Ok(m) => m,
            Err(e) => {
                causes.push(Cause::new(
                    Rule::Macs,
                    nic.mac_path.clone(),
                    format!("{e}, {leave_out}"),
                ));
                continue;
            }
        };
        let problem = if mac == Mac::BROADCAST {
            Some(format!(
                "{mac} is the broadcast address; use a unicast MAC such as 02:00:00:00:00:01, {leave_out}"
            ))
        } else if mac.is_multicast() {
            Some(format!(
                "{mac} is a multicast address (bit 0 of the first octet is set); use a unicast MAC, {leave_out}"
            ))
        } else if mac == Mac::ZERO {
            Some(format!("{mac} is not a usable address; {leave_out}"))
        } else if masquerade && mac == Mac::MASQUERADE {
            Some(format!(
                "{mac} is reserved by KubeVirt's masquerade binding; choose another MAC, {leave_out}"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            causes.push(Cause::new(Rule::Macs, nic.mac_path.clone(), problem));
            continue;
        }
        if let Some(first) = seen.get(&mac) {
            causes.push(Cause::new(
                Rule::Macs,
                nic.mac_path.clone(),
                format!(
                    "{mac} is already the MAC of {}; every NIC needs its own MAC, {leave_out}",
                    first.path
                ),
            ));
            continue;
        }
        seen.insert(mac, nic);
        if let Some(holder) = held.get(&i) {
            causes.push(Cause::new(
                Rule::Macs,
                nic.mac_path.clone(),
                format!("{mac} is already used by {holder}; choose another MAC, {leave_out}"),
            ));
        }
    }
}

/// Rule 3: capacity 0–32, in requests only, consistent, immutable, and respected on UPDATE.
fn capacity(req: &Request<'_>, s: &Subject, causes: &mut Vec<Cause>) {
    let cap = &s.new.capacity;
    let hint = "the interface capacity is a whole number from 0 to 32, e.g. \"4\"";
    for f in [&cap.annotation, &cap.request].into_iter().flatten() {
        if let Err(e) = parse_capacity(&f.value) {
            causes.push(Cause::new(
                Rule::Capacity,
                f.path.clone(),
                format!("{e}; {hint}"),
            ));
        }
    }
    if let Some(limit) = &cap.limit {
        causes.push(Cause::new(
            Rule::Capacity,
            limit.path.clone(),
            "kubevirt.io/interface is a request only; move it to resources.requests",
        ));
    }
    if let (Some(a), Some(r)) = (&cap.annotation, &cap.request)
        && let (Ok(av), Ok(rv)) = (parse_capacity(&a.value), parse_capacity(&r.value))
        && av != rv
    {
        causes.push(Cause::new(
            Rule::Capacity,
            a.path.clone(),
            format!(
                "{av} differs from {} = {rv}; make them equal or drop one",
                r.path
            ),
        ));
    }
    let Some(old) = s
        .old
        .as_ref()
        .filter(|_| req.operation == Operation::Update)
    else {
        return;
    };
    let fixed = "the interface capacity is fixed when the workload is created (it decides the slots a VM reserves at boot); recreate the workload to change it";
    for (new, was) in [
        (&cap.annotation, &old.capacity.annotation),
        (&cap.request, &old.capacity.request),
    ] {
        let same = |a: &Value, b: &Value| match (parse_capacity(a), parse_capacity(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        };
        match (new, was) {
            (Some(n), None) => causes.push(Cause::new(
                Rule::Capacity,
                n.path.clone(),
                format!("added after create; {fixed}"),
            )),
            (None, Some(o)) => causes.push(Cause::new(
                Rule::Capacity,
                o.path.clone(),
                format!("removed (was {}); put it back: {fixed}", show(&o.value)),
            )),
            (Some(n), Some(o)) if !same(&n.value, &o.value) => causes.push(Cause::new(
                Rule::Capacity,
                n.path.clone(),
                format!(
                    "changed from {} to {}; {fixed}",
                    show(&o.value),
                    show(&n.value)
                ),
            )),
            _ => {}
        }
    }
    let Some(limit) = cap.effective().or(old.capacity.effective()) else {
        return;
    };
    let count = s.new.present().count();
    let was = old.present().count();
    if count > usize::from(limit).max(was) {
        let added = s.new.present().filter(|n| !n.implicit).find(|n| {
            n.name
                .as_deref()
                .is_none_or(|name| old.by_name(name).is_none_or(|o| !o.present))
        });
        let path = added.map_or_else(|| "metadata".to_string(), |n| n.path.to_string());
        causes.push(Cause::new(
            Rule::Capacity,
            path,
            format!(
                "interface capacity {limit} reached; the VM reserved {limit} slots at boot ({count} NICs requested) — unplug a NIC first, or recreate the workload with a larger hotnic.io/interface-capacity"
            ),
        ));
    }
}

/// A workload's NICs by name, the first of each (as [`Workload::by_name`]), for the rules that
/// pair every NIC of one object with the other's: one pass instead of a scan per NIC.
fn by_name(w: &Workload) -> FastMap<&str, &Nic> {
    let mut map = FastMap::with_capacity_and_hasher(w.nics.len(), Default::default());
    for nic in &w.nics {
        if let Some(name) = nic.name.as_deref() {
            map.entry(name).or_insert(nic);
        }
    }
    map
}

/// Rule 4: a NIC present in old and new keeps its binding and its MAC.
fn binding(new: &Workload, old: &Workload, causes: &mut Vec<Cause>) {
    let hint = "a plugged NIC keeps what it is plugged into; unplug it and plug a new NIC with another name instead";
    let old_by_name = by_name(old);
    for nic in new.nics.iter().filter(|n| !n.implicit) {
        let Some(name) = nic.name.as_deref() else {
            continue;
        };
        let Some(was) = old_by_name.get(name).copied().filter(|o| !o.implicit) else {
            continue;
        };
        // Every key of either side once, the new side's first (a NIC has a handful).
        let keys = nic
            .binding
            .iter()
            .chain(&was.binding)
            .map(|b| b.key.as_ref());
        for (n, key) in keys.clone().enumerate() {
            if keys.clone().take(n).any(|k| k == key) {
                continue;
            }
            let now = nic.binding_field(key);
            let before = was.binding_field(key);
            let nv = now.map_or(&Value::Null, |b| &b.value);
            let ov = before.map_or(&Value::Null, |b| &b.value);
            if nv == ov {
                continue;
            }
            let set_once = now.or(before).is_some_and(|b| b.set_once);
            if set_once && (ov.is_null() || ov.as_str() == Some("")) {
                continue;
            }
            let path = now.or(before).map(|b| b.path.clone()).unwrap_or_default();
            causes.push(Cause::new(
                Rule::Binding,
                path,
                format!(
                    "changed from {} to {} on existing NIC {name:?}; {hint}",
                    show(ov),
                    show(nv)
                ),
            ));
        }
        if let Some(before) = was.parsed_mac() {
            match nic.mac.as_deref().map(str::parse::<Mac>) {
                None => causes.push(Cause::new(
                    Rule::Binding,
                    nic.mac_path.clone(),
                    format!("removed from existing NIC {name:?}; its MAC never changes: put back {before}"),
                )),
                Some(Ok(m)) if m != before => causes.push(Cause::new(
                    Rule::Binding,
                    nic.mac_path.clone(),
                    format!("changed from {before} to {m} on existing NIC {name:?}; its MAC never changes: put back {before}, or unplug the NIC and plug a new one"),
                )),
                _ => {}
            }
        }
    }
}

/// Rule 5: the primary NIC is never removed, renamed or set absent; Multus' default network fixed.
fn primary(new: &Workload, old: Option<&Workload>, causes: &mut Vec<Cause>) {
    for nic in new
        .nics
        .iter()
        .filter(|n| n.primary && !n.present && !n.implicit)
    {
        causes.push(Cause::new(
            Rule::Primary,
            format!("{}.state", nic.path),
            "the primary interface (on the pod network) cannot be unplugged; remove \"state\": \"absent\" (only secondary NICs can be unplugged)",
        ));
    }
    let Some(old) = old else { return };
    let mut new_by_name = None;
    for was in old
        .nics
        .iter()
        .filter(|n| n.primary && n.present && !n.implicit)
    {
        let Some(name) = was.name.as_deref() else {
            continue;
        };
        if !new_by_name
            .get_or_insert_with(|| by_name(new))
            .contains_key(name)
        {
            causes.push(Cause::new(
                Rule::Primary,
                list_path(was),
                format!("{name:?} (was {}) is the primary NIC and may not be removed or renamed; keep it (only secondary NICs can be unplugged)", was.path),
            ));
        }
    }
    let before = old.primary_network.as_ref().map(|f| &f.value);
    let now = new.primary_network.as_ref().map(|f| &f.value);
    if before != now {
        let path = new
            .primary_network
            .as_ref()
            .or(old.primary_network.as_ref())
            .map(|f| f.path.clone())
            .unwrap_or_default();
        causes.push(Cause::new(
            Rule::Primary,
            path,
            format!(
                "the primary network may not be added, changed or removed on an existing pod (was {}, now {}); recreate the pod to change it",
                before.map_or("unset".into(), show),
                now.map_or("unset".into(), show)
            ),
        ));
    }
}

/// Rule 6 (KubeVirt): unplug with `state: absent` (bridge only), hot-plug with bridge or SR-IOV.
fn kubevirt_unplug(new: &Workload, old: Option<&Workload>, causes: &mut Vec<Cause>) {
    let method = |n: &Nic| n.method.clone().unwrap_or_else(|| "no binding".into());
    let old_by_name = old.map(by_name).unwrap_or_default();
    for nic in new.nics.iter().filter(|n| !n.present && !n.primary) {
        let already = nic
            .name
            .as_deref()
            .and_then(|name| old_by_name.get(name))
            .is_some_and(|o| !o.present);
        if !already && nic.method.as_deref() != Some("bridge") {
            causes.push(Cause::new(
                Rule::Unplug,
                format!("{}.state", nic.path),
                format!(
                    "\"absent\" (hot-unplug) works only with the bridge binding; this interface uses {}: stop the VM to remove it",
                    method(nic)
                ),
            ));
        }
    }
    let Some(old) = old else { return };
    let new_by_name = by_name(new);
    for was in old.nics.iter().filter(|n| n.present && !n.primary) {
        let Some(name) = was.name.as_deref() else {
            continue;
        };
        if !new_by_name.contains_key(name) {
            causes.push(Cause::new(
                Rule::Unplug,
                list_path(was),
                format!("interface {name:?} (was {}) was removed; to unplug it, keep it and its network and set \"state\": \"absent\" on it instead", was.path),
            ));
        }
    }
    for nic in &new.nics {
        let is_new = nic
            .name
            .as_deref()
            .is_none_or(|n| !old_by_name.contains_key(n));
        let ok = matches!(nic.method.as_deref(), Some("bridge") | Some("sriov"));
        if is_new && nic.present && !ok {
            causes.push(Cause::new(
                Rule::Unplug,
                nic.path.clone(),
                format!(
                    "hot-plug supports only the bridge or sriov binding; this interface uses {}: use \"bridge\": {{}}",
                    method(nic)
                ),
            ));
        }
    }
}
