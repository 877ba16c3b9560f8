//! Mutations in every dialect: MAC injection, stable MACs, capacity default, minimal patches.
mod support;
use hotnic::allocator::{InMemoryAllocator, MacRange};
use hotnic::dialect;
use hotnic::model::{Dialect, Mac};
use hotnic::policy::{Policy, PolicyConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use support::objects::*;
use support::*;

/// MACs of the mutated object's written NICs, read back through the dialect reader.
fn macs_of(d: Dialect, obj: &Value) -> Vec<(String, Mac)> {
    dialect::read(d, obj, "demo")
        .nics
        .iter()
        .filter(|n| !n.implicit && n.present)
        .map(|n| {
            let mac = n
                .parsed_mac()
                .unwrap_or_else(|| panic!("NIC {:?} has no valid MAC in {obj}", n.name));
            (n.name.clone().unwrap(), mac)
        })
        .collect()
}

fn assert_injected(d: Dialect, obj: &Value, count: usize) {
    let macs = macs_of(d, obj);
    assert_eq!(macs.len(), count, "{macs:?}");
    let range = MacRange::default_range();
    for (name, m) in &macs {
        assert!(
            m.is_local() && !m.is_multicast(),
            "{name}: {m} not locally administered unicast"
        );
        assert!(range.contains(*m), "{name}: {m} outside the range");
        assert_ne!(*m, Mac::MASQUERADE);
    }
    let mut uniq: Vec<_> = macs.iter().map(|x| x.1).collect();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), count, "duplicate MACs: {macs:?}");
}

#[test]
fn injects_macs_in_every_dialect() {
    let p = policy();
    let m = admit(
        &p,
        &Req::create(multus(
            json!([{"name": "a", "interface": "eth1"}, {"name": "b", "interface": "eth2", "mac": "02:aa:00:00:00:01"}]),
        )),
    );
    assert_injected(Dialect::Multus, &m, 2);
    assert_eq!(
        macs_of(Dialect::Multus, &m)[1].1.to_string(),
        "02:aa:00:00:00:01"
    );
    let a = admit(
        &p,
        &Req::create(arktos(json!([{"name": "eth0"}, {"name": "eth1"}]), None)),
    );
    assert_injected(Dialect::Arktos, &a, 2);
    let v = admit(&p, &Req::create(vm_basic()));
    assert_injected(Dialect::VirtualMachine, &v, 2);
    let i = admit(
        &p,
        &Req::create(vmi(
            json!([{"name": "default", "masquerade": {}}]),
            json!([{"name": "default", "pod": {}}]),
        )),
    );
    assert_injected(Dialect::VirtualMachineInstance, &i, 1);
}

#[test]
fn allocates_from_the_configured_range() {
    let range: MacRange = "0a:00:00:00:10:00-0a:00:00:00:10:ff".parse().unwrap();
    let p = Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::new(range)),
    );
    let obj = admit(
        &p,
        &Req::create(multus(
            json!([{"name": "a", "interface": "eth1"}, {"name": "a", "interface": "eth2"}]),
        )),
    );
    for (_, m) in macs_of(Dialect::Multus, &obj) {
        assert!(range.contains(m), "{m}");
    }
    assert_eq!(p.allocator().held(), 2);
}

#[test]
fn keeps_old_macs_when_an_update_drops_them() {
    let p = policy();
    // Multus: `kubectl apply` of a manifest without MACs replaced the annotation.
    let created = admit(
        &p,
        &Req::create(multus(json!([{"name": "a", "interface": "eth1"}]))),
    );
    let replaced = annotate(
        created.clone(),
        NETWORKS,
        &json!([{"name": "a", "interface": "eth1"}, {"name": "a", "interface": "eth2"}])
            .to_string(),
    );
    let updated = admit(&p, &Req::update(created.clone(), replaced));
    let before = macs_of(Dialect::Multus, &created);
    let after = macs_of(Dialect::Multus, &updated);
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1].1, before[0].1);
    // Arktos: the MAC annotation was dropped entirely.
    let created = admit(
        &p,
        &Req::create(arktos(json!([{"name": "eth0"}, {"name": "eth1"}]), None)),
    );
    let mut dropped = created.clone();
    dropped["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("hotnic.io/mac-addresses");
    let updated = admit(&p, &Req::update(created.clone(), dropped));
    assert_eq!(
        macs_of(Dialect::Arktos, &updated),
        macs_of(Dialect::Arktos, &created)
    );
    // KubeVirt: macAddress removed from the template.
    let created = admit(&p, &Req::create(vm_basic()));
    let updated = admit(&p, &Req::update(created.clone(), vm_basic()));
    assert_eq!(
        macs_of(Dialect::VirtualMachine, &updated),
        macs_of(Dialect::VirtualMachine, &created)
    );
}

#[test]
fn an_unplugged_kubevirt_nic_keeps_its_mac_even_when_the_update_dropped_it() {
    let p = policy();
    let created = admit(&p, &Req::create(vm_basic()));
    let mut unplug = vm_basic();
    vm_spec(&mut unplug)["domain"]["devices"]["interfaces"][1]["state"] = json!("absent");
    let after = admit(&p, &Req::update(created.clone(), unplug));
    let was =
        &created["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1]["macAddress"];
    let now =
        &after["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1]["macAddress"];
    assert!(was.is_string());
    assert_eq!(was, now);
}

#[test]
fn arktos_unplug_drops_the_stale_mac_entry() {
    let p = policy();
    let created = admit(
        &p,
        &Req::create(arktos(json!([{"name": "eth0"}, {"name": "eth1"}]), None)),
    );
    let mut unplugged = created.clone();
    unplugged["spec"]["nics"].as_array_mut().unwrap().pop();
    let after = admit(&p, &Req::update(created, unplugged));
    let map: Value = serde_json::from_str(
        after["metadata"]["annotations"]["hotnic.io/mac-addresses"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        map.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["eth0"]
    );
    // The unplugged NIC's MAC stays claimed: admission never releases (the update may still be
    // denied); the repair loop releases it once it sees the stored pod without it.
    assert_eq!(
        p.allocator().held(),
        2,
        "admission released the unplugged NIC's MAC"
    );
}

#[test]
fn capacity_default() {
    let cap = |obj: &Value| obj["metadata"]["annotations"]["hotnic.io/interface-capacity"].clone();
    let p = policy();
    let nets = |n: usize| {
        Value::Array(
            (1..=n)
                .map(|i| json!({"name": "a", "interface": format!("eth{i}")}))
                .collect(),
        )
    };
    assert_eq!(cap(&admit(&p, &Req::create(multus(nets(1))))), "4");
    // primary + 5 secondaries = 6 NICs
    assert_eq!(cap(&admit(&p, &Req::create(multus(nets(5))))), "6");
    assert_eq!(cap(&admit(&p, &Req::create(multus(nets(40))))), "32");
    assert_eq!(
        cap(&admit(
            &p,
            &Req::create(annotate(
                multus(nets(1)),
                "hotnic.io/interface-capacity",
                "2"
            ))
        )),
        "2"
    );
    let mut with_request = vm_basic();
    vm_spec(&mut with_request)["domain"]["resources"]["requests"]["kubevirt.io/interface"] =
        json!(5);
    assert_eq!(cap(&admit(&p, &Req::create(with_request))), "5");
    assert_eq!(
        cap(&admit(
            &p,
            &Req::create(arktos(json!([{"name": "eth0"}]), None))
        )),
        "4"
    );
    let eight = Policy::new(
        PolicyConfig {
            default_capacity: 8,
        },
        Arc::new(InMemoryAllocator::new(MacRange::default_range())),
    );
    assert_eq!(cap(&admit(&eight, &Req::create(multus(nets(1))))), "8");
    // No default on UPDATE of an object created without one.
    let old = multus(json!([{"name": "a", "interface": "eth1", "mac": "02:00:00:00:00:09"}]));
    assert_eq!(cap(&admit(&p, &Req::update(old.clone(), old))), Value::Null);
}

#[test]
fn patches_are_minimal_and_keep_what_hotnic_does_not_own() {
    let p = policy();
    // No annotations at all (Arktos): the map is created once, keys escaped.
    let mut bare = arktos(json!([{"name": "eth0"}]), None);
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let out = p.mutate(&Req::create(bare).as_request());
    let ops = serde_json::to_value(out.patch().unwrap()).unwrap();
    let paths: Vec<_> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/metadata/annotations/hotnic.io~1mac-addresses",
            "/metadata/annotations/hotnic.io~1interface-capacity"
        ]
    );
    // Multus: element order, unknown keys and other annotations are kept; only one key is written.
    let nets = json!([
        {"name": "b", "interface": "eth2", "vendor.example.com/x": {"k": 1}, "cni-args": {"a": "b"}},
        {"name": "a", "namespace": "other", "interface": "eth1", "mac": "02:00:00:00:aa:01"}
    ]);
    let req = Req::create(annotate(
        annotate(multus(nets), "keep", "me"),
        "hotnic.io/interface-capacity",
        "4",
    ));
    let out = p.mutate(&req.as_request());
    assert_eq!(out.patch().unwrap().0.len(), 1);
    let obj = apply(&req, &out);
    assert_eq!(obj["metadata"]["annotations"]["keep"], "me");
    let written: Value =
        serde_json::from_str(obj["metadata"]["annotations"][NETWORKS].as_str().unwrap()).unwrap();
    assert_eq!(written[0]["vendor.example.com/x"], json!({"k": 1}));
    assert_eq!(written[0]["cni-args"], json!({"a": "b"}));
    assert_eq!(written[1]["mac"], "02:00:00:00:aa:01");
    assert_eq!(
        written[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "name",
            "interface",
            "vendor.example.com/x",
            "cni-args",
            "mac"
        ]
    );
    // Short form is rewritten in JSON form, in order.
    let req = Req::create(multus_raw("net1@eth1, ns2/net2@eth2"));
    let obj = admit(&p, &req);
    let written: Value =
        serde_json::from_str(obj["metadata"]["annotations"][NETWORKS].as_str().unwrap()).unwrap();
    assert_eq!(written[0]["name"], "net1");
    assert_eq!(written[1]["namespace"], "ns2");
    assert_eq!(written[1]["interface"], "eth2");
    // User MACs are normalised to lower-case ':' form.
    let obj = admit(
        &p,
        &Req::create(multus(
            json!([{"name": "a", "interface": "eth1", "mac": "02-AB-CD-00-00-01"}]),
        )),
    );
    assert!(
        obj["metadata"]["annotations"][NETWORKS]
            .as_str()
            .unwrap()
            .contains("02:ab:cd:00:00:01")
    );
}

/// The patch with its MACs masked: what a dry-run and a real request must agree on.
fn masked(out: &hotnic::policy::Outcome) -> String {
    let text = serde_json::to_string(out.patch().expect("allowed")).unwrap();
    let mut masked = String::new();
    let mut rest = text.as_str();
    // MACs of the default range: "02:" and five more octets.
    while let Some(at) = rest.find("02:") {
        masked.push_str(&rest[..at]);
        masked.push_str("MAC");
        rest = &rest[at + 17..];
    }
    masked + rest
}

#[test]
fn dry_run_answers_alike_and_reserves_nothing() {
    let p = policy();
    let req = Req::create(multus(json!([{"name": "a", "interface": "eth1"}])));
    let dry = p.mutate(&req.clone().dry().as_request());
    assert_eq!(p.allocator().held(), 0);
    let real = p.mutate(&req.as_request());
    assert_eq!(p.allocator().held(), 1);
    assert!(masked(&dry).contains("MAC"), "{dry:?}");
    assert_eq!(masked(&dry), masked(&real), "dry-run must answer alike");
}

/// A server dry-run's MAC is checked by its validating call, milliseconds after its mutating
/// call proposed it; a real create in between must not be handed that MAC, or the dry-run is
/// denied ("already used by") where the real request would be admitted.
#[test]
fn a_create_between_a_dry_runs_two_calls_does_not_take_its_mac() {
    let p = policy();
    let dry = Req::create(multus(json!([{"name": "a", "interface": "eth1"}]))).dry();
    let proposed = apply(&dry, &p.mutate(&dry.as_request()));
    let mut other = multus(json!([{"name": "a", "interface": "eth1"}]));
    other["metadata"]["name"] = json!("other");
    admit(&p, &Req::create(other));
    assert_eq!(p.allocator().held(), 1);
    let validated = Req {
        object: proposed,
        ..dry
    };
    let v = p.validate(&validated.as_request());
    assert!(v.is_allowed(), "{v:?}");
    assert_eq!(p.allocator().held(), 1);
}

#[test]
fn leaves_alone_what_is_not_ours() {
    let p = policy();
    let mut launcher = multus(json!([{"name": "a", "interface": "eth1"}]));
    launcher["metadata"]["labels"] = json!({"kubevirt.io": "virt-launcher"});
    let mut owned = vmi(
        json!([{"name": "default", "masquerade": {}}]),
        json!([{"name": "default", "pod": {}}]),
    );
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm", "uid": "u"}]);
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "demo"}, "spec": {"containers": []}});
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {}});
    for obj in [launcher, owned, plain, svc] {
        let req = Req::create(obj.clone());
        let out = p.mutate(&req.as_request());
        assert_eq!(out.patch().map(|p| p.0.len()), Some(0), "{obj}");
        assert!(p.validate(&req.as_request()).is_allowed());
    }
    // A VMI owned by a VM is still validated.
    let mut bad = vmi(
        json!([{"name": "default", "masquerade": {}, "macAddress": "ff:ff:ff:ff:ff:ff"}]),
        json!([{"name": "default", "pod": {}}]),
    );
    bad["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm", "uid": "u"}]);
    assert!(!p.validate(&Req::create(bad).as_request()).is_allowed());
    assert_eq!(p.allocator().held(), 0);
}

#[test]
fn every_fixture_gets_the_expected_verdict() {
    // Expected validate verdict after mutation, per capture. The short-form captures name no
    // interface for their second element: hot-plug needs names, so they are denied.
    let denied = ["003", "004"];
    let p = policy();
    for (name, review) in fixtures() {
        let req = Req::from_review(&review);
        let got = denials(&p, &req);
        if denied.iter().any(|d| name.starts_with(d)) {
            assert_eq!(
                got,
                [format!(
                    "{}: missing; hot-plug needs every NIC named, e.g. \"eth2\"",
                    "metadata.annotations[k8s.v1.cni.cncf.io/networks][1].interface"
                )],
                "{name}"
            );
        } else {
            assert!(got.is_empty(), "{name}: {got:?}");
            admit(&p, &req);
        }
    }
}

#[test]
fn generate_name_pod_keeps_its_mac_into_the_validating_phase() {
    let p = policy();
    let m = Req::from_review(&fixture("011"));
    assert_eq!(m.name, None);
    let obj = apply(&m, &p.mutate(&m.as_request()));
    // The validating review carries the generated name.
    let mut v = Req::from_review(&fixture("012"));
    v.object = obj;
    v.object["metadata"]["name"] = json!("gen-k4sks");
    assert!(
        p.validate(&v.as_request()).is_allowed(),
        "{:?}",
        p.validate(&v.as_request())
    );
}

#[test]
fn a_repeated_create_of_one_object_gets_its_macs_back_and_claims_nothing_more() {
    // The in-memory allocator never sees deletions: the same object created again (a retried
    // create, or the load generator's loop) must not pile up claims.
    let p = policy();
    let nics = json!([{"name": "a", "interface": "eth1"}, {"name": "b", "interface": "eth2"}]);
    let first = admit(&p, &Req::create(multus(nics.clone())));
    let held = p.allocator().held();
    assert_eq!(held, 2);
    for _ in 0..3 {
        let again = admit(&p, &Req::create(multus(nics.clone())));
        assert_eq!(
            macs_of(Dialect::Multus, &again),
            macs_of(Dialect::Multus, &first)
        );
        assert_eq!(p.allocator().held(), held);
    }
    // A hot-plug repeated: the plugged NIC gets its MAC back too.
    let plugged = annotate(
        first.clone(),
        NETWORKS,
        &json!([{"name": "a", "interface": "eth1"}, {"name": "b", "interface": "eth2"},
            {"name": "c", "interface": "eth3"}])
        .to_string(),
    );
    let plug = |p: &Policy| {
        macs_of(
            Dialect::Multus,
            &admit(p, &Req::update(first.clone(), plugged.clone())),
        )
    };
    let once = plug(&p);
    assert_eq!(plug(&p), once);
    assert_eq!(p.allocator().held(), held + 1);
    // Another object with the same NICs gets MACs of its own.
    let mut other = Req::create(multus(nics));
    other.object["metadata"]["name"] = json!("other");
    other.name = Some("other".into());
    let o = admit(&p, &other);
    assert!(
        macs_of(Dialect::Multus, &o)
            .iter()
            .all(|(_, m)| macs_of(Dialect::Multus, &first).iter().all(|(_, f)| f != m))
    );
    assert_eq!(p.allocator().held(), held + 3);
}
