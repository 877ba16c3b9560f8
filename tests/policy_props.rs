//! Property tests: random NIC lists and edits, in every dialect.
mod support;
use hotnic::dialect;
use hotnic::model::{Dialect, Mac, Workload};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use support::objects::*;
use support::*;

const NAMES: &[&str] = &["eth1", "eth2", "eth3", "net-4", "eth0", "bad/name", ""];
const MACS: &[&str] = &[
    "02:00:00:00:00:01",
    "02:00:00:00:00:02",
    "02-00-00-00-00-03",
    "0A:BB:CC:DD:EE:FF",
    "01:00:00:00:00:01",
    "zz",
    "ff:ff:ff:ff:ff:ff",
    "",
];
const NETS: &[&str] = &["net-a", "net-b"];

/// One NIC: indexes into the pools (`None` = field absent).
#[derive(Debug, Clone)]
struct N {
    name: Option<usize>,
    mac: Option<usize>,
    net: usize,
    absent: bool,
}

fn nic() -> impl Strategy<Value = N> {
    (
        prop::option::weighted(0.9, 0..NAMES.len()),
        prop::option::weighted(0.3, 0..MACS.len()),
        0..NETS.len(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(name, mac, net, absent)| N {
            name,
            mac,
            net,
            absent,
        })
}

/// An edit of a NIC list.
#[derive(Debug, Clone)]
enum Edit {
    Add(N),
    Remove(usize),
    SetMac(usize, Option<usize>),
    SetNet(usize, usize),
    Rename(usize, usize),
    Absent(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        nic().prop_map(Edit::Add),
        (0..6usize).prop_map(Edit::Remove),
        (0..6usize, prop::option::of(0..MACS.len())).prop_map(|(i, m)| Edit::SetMac(i, m)),
        (0..6usize, 0..NETS.len()).prop_map(|(i, n)| Edit::SetNet(i, n)),
        (0..6usize, 0..NAMES.len()).prop_map(|(i, n)| Edit::Rename(i, n)),
        (0..6usize).prop_map(Edit::Absent),
    ]
}

fn build(d: Dialect, nics: &[N]) -> Value {
    match d {
        Dialect::Multus => multus(Value::Array(
            nics.iter()
                .map(|n| {
                    let mut e = json!({"name": NETS[n.net]});
                    if let Some(i) = n.name {
                        e["interface"] = json!(NAMES[i]);
                    }
                    if let Some(m) = n.mac {
                        e["mac"] = json!(MACS[m]);
                    }
                    e
                })
                .collect(),
        )),
        Dialect::Arktos => {
            let list: Vec<Value> = nics
                .iter()
                .map(|n| {
                    let mut e = json!({"subnetName": NETS[n.net]});
                    if let Some(i) = n.name {
                        e["name"] = json!(NAMES[i]);
                    }
                    e
                })
                .collect();
            let macs: serde_json::Map<String, Value> = nics
                .iter()
                .filter_map(|n| Some((NAMES[n.name?].to_string(), json!(MACS[n.mac?]))))
                .collect();
            arktos(Value::Array(list), Some(Value::Object(macs)))
        }
        _ => {
            let mut ifaces = Vec::new();
            let mut nets = Vec::new();
            for (k, n) in nics.iter().enumerate() {
                let mut i = json!({"bridge": {}});
                if let Some(x) = n.name {
                    i["name"] = json!(NAMES[x].replace('/', "_"));
                }
                if let Some(m) = n.mac {
                    i["macAddress"] = json!(MACS[m]);
                }
                if n.absent {
                    i["state"] = json!("absent");
                }
                let net = if k == 0 {
                    json!({"pod": {}})
                } else {
                    json!({"multus": {"networkName": NETS[n.net]}})
                };
                let mut net = net;
                if let Some(x) = n.name {
                    net["name"] = json!(NAMES[x].replace('/', "_"));
                }
                ifaces.push(i);
                nets.push(net);
            }
            if d == Dialect::VirtualMachine {
                vm(Value::Array(ifaces), Value::Array(nets))
            } else {
                vmi(Value::Array(ifaces), Value::Array(nets))
            }
        }
    }
}

fn apply_edits(mut nics: Vec<N>, edits: &[Edit]) -> Vec<N> {
    for e in edits {
        let len = nics.len();
        match e.clone() {
            Edit::Add(n) => nics.push(n),
            Edit::Remove(i) if i < len => {
                nics.remove(i);
            }
            Edit::SetMac(i, m) if i < len => nics[i].mac = m,
            Edit::SetNet(i, n) if i < len => nics[i].net = n,
            Edit::Rename(i, n) if i < len => nics[i].name = Some(n),
            Edit::Absent(i) if i < len => nics[i].absent = true,
            _ => {}
        }
    }
    nics
}

fn read(d: Dialect, obj: &Value) -> Workload {
    dialect::read(d, obj, "demo")
}

fn dialect_strategy() -> impl Strategy<Value = Dialect> {
    prop_oneof![
        Just(Dialect::Multus),
        Just(Dialect::Arktos),
        Just(Dialect::VirtualMachine),
        Just(Dialect::VirtualMachineInstance)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn policy_never_breaks_its_promises(d in dialect_strategy(), start in prop::collection::vec(nic(), 0..5), edits in prop::collection::vec(edit(), 0..4)) {
        let p = policy();
        // CREATE
        let create = Req::create(build(d, &start));
        let m = p.mutate(&create.as_request());
        let _ = p.validate(&create.as_request());
        let old = match m.patch() {
            Some(patch) => {
                let mut obj = create.object.clone();
                prop_assert!(json_patch::patch(&mut obj, &patch.0).is_ok(), "create patch does not apply: {patch}");
                obj
            }
            None => create.object.clone(),
        };
        let created_ok = m.is_allowed() && p.validate(&Req { object: old.clone(), ..create.clone() }.as_request()).is_allowed();
        // UPDATE: edit the stored object's NIC list, keeping what mutation wrote where it can.
        let edited_nics = apply_edits(start.clone(), &edits);
        let mut new = build(d, &edited_nics);
        if let Some(c) = old["metadata"]["annotations"].get("hotnic.io/interface-capacity") {
            new = annotate(new, "hotnic.io/interface-capacity", c.as_str().unwrap_or("4"));
        }
        let update = Req::update(old.clone(), new);
        let m = p.mutate(&update.as_request());
        if let Some(patch) = m.patch() {
            let mut obj = update.object.clone();
            prop_assert!(json_patch::patch(&mut obj, &patch.0).is_ok(), "update patch does not apply: {patch}");
            let mutated = Req { object: obj.clone(), ..update.clone() };
            let again = p.mutate(&mutated.as_request());
            prop_assert_eq!(again.patch().map(|p| p.0.len()), Some(0), "not idempotent");
            if p.validate(&mutated.as_request()).is_allowed() {
                let w = read(d, &obj);
                let mut seen = HashSet::new();
                for n in w.nics.iter().filter(|n| !n.implicit) {
                    let mac = n.mac.as_deref().map(|m| m.parse::<Mac>());
                    if n.present {
                        prop_assert!(matches!(mac, Some(Ok(_))), "present NIC {:?} without a valid MAC", n.name);
                    }
                    if let Some(Ok(m)) = mac {
                        prop_assert!(seen.insert(m), "duplicate MAC {} in {}", m, obj);
                    }
                }
                if created_ok {
                    let before = read(d, &old);
                    for n in &w.nics {
                        let (Some(name), false) = (&n.name, n.implicit) else { continue };
                        if let Some(was) = before.by_name(name).and_then(|o| o.parsed_mac()) {
                            prop_assert_eq!(n.parsed_mac(), Some(was), "MAC of {} changed", name);
                        }
                    }
                }
            }
        }
    }
}

/// Arbitrary JSON, biased towards the shapes the dialects expect.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-5i64..40).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "eth1",
            "eth0",
            "02:00:00:00:00:01",
            "absent",
            "4",
            "[",
            "{}",
            "a@b",
            "ns/n@eth2",
            "[{\"name\":\"n\"}]"
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "name",
                        "interface",
                        "mac",
                        "macAddress",
                        "state",
                        "bridge",
                        "masquerade",
                        "pod",
                        "multus",
                        "networkName",
                        "ips",
                        "portId",
                        "portID",
                        "namespace",
                        "default-route"
                    ]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_and_patches_apply(
        d in dialect_strategy(),
        a in any_json(),
        b in any_json(),
        c in any_json(),
        text in ".{0,40}",
        update in any::<bool>(),
    ) {
        let mut obj = build(d, &[]);
        match d {
            Dialect::Multus => {
                obj["metadata"]["annotations"][NETWORKS] = if a.is_string() { a.clone() } else { Value::from(if update { a.to_string() } else { text.clone() }) };
            }
            Dialect::Arktos => {
                obj["spec"]["nics"] = a.clone();
                obj["metadata"]["annotations"] = json!({"hotnic.io/mac-addresses": b.clone(), "hotnic.io/interface-capacity": c.clone()});
            }
            _ => {
                let s = vm_spec(&mut obj);
                s["domain"]["devices"]["interfaces"] = a.clone();
                s["networks"] = b.clone();
                s["domain"]["resources"] = json!({"requests": {"kubevirt.io/interface": c.clone()}});
            }
        }
        let p = policy();
        let req = if update { Req::update(build(d, &[]), obj) } else { Req::create(obj) };
        let m = p.mutate(&req.as_request());
        let v = p.validate(&req.as_request());
        if let Some(patch) = m.patch() {
            let mut o = req.object.clone();
            prop_assert!(json_patch::patch(&mut o, &patch.0).is_ok(), "patch {} does not apply to {}", patch, req.object);
        }
        for out in [m, v] {
            if let Some(d) = out.denial() {
                prop_assert!(!d.causes.is_empty());
                for c in &d.causes {
                    prop_assert!(!c.field.is_empty() && c.message.len() > 5, "{:?}", c);
                }
            }
        }
    }
}
