//! Fuzzes the policy with arbitrary objects in every dialect: it must never panic, and every patch
//! it returns must apply to the object it was computed for.
#![no_main]

use hotnic::allocator::MacRange;
use hotnic::policy::{Operation, Policy, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("kubevirt.io", "VirtualMachine"),
    ("kubevirt.io", "VirtualMachineInstance"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // Two objects separated by a NUL byte: new and (optionally) old.
    let mut parts = rest.splitn(2, |b| *b == 0);
    let Some(Ok(object)) = parts.next().map(serde_json::from_slice::<Value>) else { return };
    let old = parts.next().and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let (group, kind) = KINDS[usize::from(selector) % KINDS.len()];
    let policy = Policy::in_memory(MacRange::default_range());
    let req = Request {
        operation: if old.is_some() { Operation::Update } else { Operation::Create },
        dry_run: selector & 0x80 != 0,
        group,
        kind,
        namespace: "fuzz",
        name: Some("x"),
        object: &object,
        old_object: old.as_ref(),
    };
    let mutated = policy.mutate(&req);
    let _ = policy.validate(&req);
    if let Some(patch) = mutated.patch() {
        let mut o = object.clone();
        json_patch::patch(&mut o, &patch.0).expect("the policy's patch applies");
    }
});
