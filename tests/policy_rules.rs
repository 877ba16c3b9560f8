//! Table-driven tests: every rule in every dialect it applies to, both outcomes.
//!
//! Each case runs mutate → apply patch → validate (as the API server would). Allowed cases also
//! check that the patch applies, that mutating again yields an empty patch, and that validation of
//! the result allows it.
mod support;
use serde_json::{Value, json};
use support::objects::*;
use support::*;

enum Expect {
    Allow,
    /// Denied, with a cause on each of these fields (exact field paths).
    Deny(Vec<&'static str>),
}
use Expect::*;

fn run(cases: Vec<(&str, Req, Expect)>) {
    let mut failures = Vec::new();
    for (name, req, expect) in cases {
        let p = policy();
        let got = denials(&p, &req);
        match expect {
            Allow => {
                if got.is_empty() {
                    admit(&p, &req);
                } else {
                    failures.push(format!("{name}: expected allowed, got {got:#?}"));
                }
            }
            Deny(fields) => {
                if got.is_empty() {
                    failures.push(format!(
                        "{name}: expected denied on {fields:?}, was allowed"
                    ));
                }
                for f in fields {
                    if !got.iter().any(|g| g.starts_with(&format!("{f}: "))) {
                        failures.push(format!("{name}: no cause on {f}; got {got:#?}"));
                    }
                }
                for g in &got {
                    let msg = g.split_once(": ").map(|x| x.1).unwrap_or("");
                    if msg.len() < 10 {
                        failures.push(format!("{name}: cause without a useful message: {g}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const N: &str = "metadata.annotations[k8s.v1.cni.cncf.io/networks]";
const VMI: &str = "spec.template.spec.domain.devices.interfaces";

fn el(i: usize, field: &str) -> String {
    format!("{N}[{i}].{field}")
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn arktos2() -> Value {
    arktos(
        json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portId": "p1", "subnetName": "net1"}]),
        None,
    )
}

fn with_vm_iface(mut obj: Value, iface: Value, net: Value) -> Value {
    let s = vm_spec(&mut obj);
    s["domain"]["devices"]["interfaces"]
        .as_array_mut()
        .unwrap()
        .push(iface);
    s["networks"].as_array_mut().unwrap().push(net);
    obj
}

#[test]
fn rule1_names() {
    let e1 = leak(el(1, "interface"));
    let e0 = leak(el(0, "interface"));
    run(vec![
        (
            "multus named",
            Req::create(multus(
                json!([{"name": "a", "interface": "eth1"}, {"name": "b", "interface": "net-2"}]),
            )),
            Allow,
        ),
        (
            "multus unnamed",
            Req::create(multus(
                json!([{"name": "a", "interface": "eth1"}, {"name": "b"}]),
            )),
            Deny(vec![e1]),
        ),
        (
            "multus short form unnamed",
            Req::create(multus_raw("a@eth1,b")),
            Deny(vec![e1]),
        ),
        (
            "multus bad ifname",
            Req::create(multus(json!([{"name": "a", "interface": "eth/1"}]))),
            Deny(vec![e0]),
        ),
        (
            "multus too long",
            Req::create(multus(
                json!([{"name": "a", "interface": "abcdefghijklmnop"}]),
            )),
            Deny(vec![e0]),
        ),
        (
            "multus duplicate",
            Req::create(multus(
                json!([{"name": "a", "interface": "eth1"}, {"name": "b", "interface": "eth1"}]),
            )),
            Deny(vec![e1]),
        ),
        (
            "multus eth0 reserved",
            Req::create(multus(json!([{"name": "a", "interface": "eth0"}]))),
            Deny(vec![e0]),
        ),
        ("arktos named", Req::create(arktos2()), Allow),
        (
            "arktos unnamed",
            Req::create(arktos(json!([{"name": "eth0"}, {"portId": "x"}]), None)),
            Deny(vec!["spec.nics[1].name"]),
        ),
        (
            "arktos bad name",
            Req::create(arktos(json!([{"name": "eth0"}, {"name": "eth 1"}]), None)),
            Deny(vec!["spec.nics[1].name"]),
        ),
        (
            "arktos duplicate",
            Req::create(arktos(json!([{"name": "eth0"}, {"name": "eth0"}]), None)),
            Deny(vec!["spec.nics[1].name"]),
        ),
        ("vm named", Req::create(vm_basic()), Allow),
        (
            "vm bad name",
            Req::create(vm(
                json!([{"name": "a.b", "bridge": {}}]),
                json!([{"name": "a.b", "pod": {}}]),
            )),
            Deny(vec![leak(format!("{VMI}[0].name"))]),
        ),
        (
            "vm unnamed",
            Req::create(vm(json!([{"bridge": {}}]), json!([]))),
            Deny(vec![leak(format!("{VMI}[0].name"))]),
        ),
        (
            "vm duplicate",
            Req::create(vm(
                json!([{"name": "a", "bridge": {}}, {"name": "a", "bridge": {}}]),
                json!([{"name": "a", "pod": {}}]),
            )),
            Deny(vec![leak(format!("{VMI}[1].name"))]),
        ),
        (
            "vm interface without network",
            Req::create(vm(json!([{"name": "a", "bridge": {}}]), json!([]))),
            Deny(vec![leak(format!("{VMI}[0].name"))]),
        ),
        (
            "vmi bad name",
            Req::create(vmi(
                json!([{"name": "x y", "bridge": {}}]),
                json!([{"name": "x y", "pod": {}}]),
            )),
            Deny(vec!["spec.domain.devices.interfaces[0].name"]),
        ),
    ]);
}

#[test]
fn rule2_macs() {
    let m0 = leak(el(0, "mac"));
    let m1 = leak(el(1, "mac"));
    let mac_multus = |m: &str| {
        Req::create(multus(
            json!([{"name": "a", "interface": "eth1", "mac": m}]),
        ))
    };
    let mac_arktos =
        |m: &str| Req::create(arktos(json!([{"name": "eth0"}]), Some(json!({"eth0": m}))));
    let mac_vm = |m: &str| {
        Req::create(vm(
            json!([{"name": "default", "masquerade": {}, "macAddress": m}]),
            json!([{"name": "default", "pod": {}}]),
        ))
    };
    let ak = "metadata.annotations[hotnic.io/mac-addresses].eth0";
    let vk = leak(format!("{VMI}[0].macAddress"));
    run(vec![
        ("multus given", mac_multus("02:aa:bb:cc:dd:01"), Allow),
        ("multus dash form", mac_multus("0A-AA-BB-CC-DD-01"), Allow),
        (
            "multus malformed",
            mac_multus("02:aa:bb:cc:dd"),
            Deny(vec![m0]),
        ),
        (
            "multus multicast",
            mac_multus("01:00:5e:00:00:01"),
            Deny(vec![m0]),
        ),
        (
            "multus zero",
            mac_multus("00:00:00:00:00:00"),
            Deny(vec![m0]),
        ),
        (
            "multus broadcast",
            mac_multus("ff:ff:ff:ff:ff:ff"),
            Deny(vec![m0]),
        ),
        (
            "multus duplicate",
            Req::create(multus(json!([
            {"name": "a", "interface": "eth1", "mac": "02:aa:bb:cc:dd:01"},
            {"name": "a", "interface": "eth2", "mac": "02:AA:BB:CC:DD:01"}]))),
            Deny(vec![m1]),
        ),
        ("arktos given", mac_arktos("02:aa:bb:cc:dd:01"), Allow),
        ("arktos malformed", mac_arktos("nope"), Deny(vec![ak])),
        (
            "arktos multicast",
            mac_arktos("03:aa:bb:cc:dd:01"),
            Deny(vec![ak]),
        ),
        (
            "arktos annotation not JSON",
            Req::create(annotate(
                arktos(json!([{"name": "eth0"}]), None),
                "hotnic.io/mac-addresses",
                "{",
            )),
            Deny(vec!["metadata.annotations[hotnic.io/mac-addresses]"]),
        ),
        ("vm given", mac_vm("02:aa:bb:cc:dd:01"), Allow),
        ("vm malformed", mac_vm("02:aa:bb:cc:dd:0g"), Deny(vec![vk])),
        ("vm broadcast", mac_vm("ff:ff:ff:ff:ff:ff"), Deny(vec![vk])),
        (
            "vm masquerade reserved",
            mac_vm("02:00:00:00:00:00"),
            Deny(vec![vk]),
        ),
    ]);
}

#[test]
fn rule2_mac_used_by_another_object_is_denied() {
    let p = policy();
    let a = Req::create(multus(
        json!([{"name": "a", "interface": "eth1", "mac": "02:aa:bb:cc:dd:01"}]),
    ));
    admit(&p, &a);
    let mut b = a.clone();
    b.object["metadata"]["name"] = json!("other");
    b.name = Some("other".into());
    let got = denials(&p, &b);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!(
            "{}: 02:aa:bb:cc:dd:01 is already used by Pod demo/web",
            el(0, "mac")
        )),
        "{got:?}"
    );
    // The first pod itself may keep it on update.
    let again = Req::update(a.object.clone(), a.object.clone());
    assert!(denials(&p, &again).is_empty());
    // And an injected MAC is never handed to another object.
    let c = Req::create(multus(json!([{"name": "a", "interface": "eth1"}])));
    let mut c2 = c.clone();
    c2.object["metadata"]["name"] = json!("third");
    c2.name = Some("third".into());
    let o1 = admit(&p, &c);
    let o2 = admit(&p, &c2);
    assert_ne!(
        o1["metadata"]["annotations"][NETWORKS],
        o2["metadata"]["annotations"][NETWORKS]
    );
}

#[test]
fn rule2_a_deleted_objects_macs_are_free_again_once_the_deletion_is_observed() {
    use futures::FutureExt;
    let p = policy();
    let a = Req::create(multus(
        json!([{"name": "a", "interface": "eth1", "mac": "02:aa:bb:cc:dd:01"}]),
    ));
    admit(&p, &a);
    let mut b = a.clone();
    b.object["metadata"]["name"] = json!("other");
    b.name = Some("other".into());
    assert_eq!(denials(&p, &b).len(), 1);
    // A DELETE review is allowed and frees nothing, dry-run or not: the deletion may still be
    // refused, or leave the pod terminating with its MAC on the wire.
    let mut delete = Req::new(
        hotnic::policy::Operation::Delete,
        Value::Null,
        Some(a.object.clone()),
    );
    delete.kind = "Pod".into();
    delete.name = Some("web".into());
    assert!(p.validate(&delete.clone().dry().as_request()).is_allowed());
    assert!(p.validate(&delete.as_request()).is_allowed());
    assert_eq!(denials(&p, &b).len(), 1);
    // Released where the deletion is observed (the repair loop): then it is free.
    let owner = hotnic::allocator::Owner {
        kind: "Pod".into(),
        resource: "pods".into(),
        namespace: "demo".into(),
        name: Some("web".into()),
        ..Default::default()
    };
    let mac = "02:aa:bb:cc:dd:01".parse().unwrap();
    let released = p
        .allocator()
        .release(&owner, &hotnic::allocator::Scope::Cluster, mac)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert!(released);
    assert!(denials(&p, &b).is_empty());
}

#[test]
fn rule3_capacity() {
    let cap = "metadata.annotations[hotnic.io/interface-capacity]";
    let req = "spec.template.spec.domain.resources.requests[kubevirt.io/interface]";
    let lim = "spec.template.spec.domain.resources.limits[kubevirt.io/interface]";
    let pod = |c: &str| {
        Req::create(annotate(
            multus(json!([{"name": "a", "interface": "eth1"}])),
            "hotnic.io/interface-capacity",
            c,
        ))
    };
    let vm_req = |v: Value| {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["resources"]["requests"]["kubevirt.io/interface"] = v;
        Req::create(o)
    };
    let vm_lim = {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["resources"]["limits"] = json!({"kubevirt.io/interface": "4"});
        Req::create(o)
    };
    // Updates of a workload created with capacity 2 (primary + one NIC).
    let base = annotate(
        multus(json!([{"name": "a", "interface": "eth1"}])),
        "hotnic.io/interface-capacity",
        "2",
    );
    let plus = |n: usize| {
        let nets: Vec<Value> = (1..=n)
            .map(|i| json!({"name": "a", "interface": format!("eth{i}")}))
            .collect();
        annotate(
            multus(Value::Array(nets)),
            "hotnic.io/interface-capacity",
            "2",
        )
    };
    let mut removed = base.clone();
    removed["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("hotnic.io/interface-capacity");
    let vm_base = {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["resources"]["requests"]["kubevirt.io/interface"] = json!("2");
        o
    };
    let vm_more = with_vm_iface(
        vm_base.clone(),
        json!({"name": "hot1", "bridge": {}}),
        json!({"name": "hot1", "multus": {"networkName": "bridge-conf"}}),
    );
    let vm_changed = {
        let mut o = vm_base.clone();
        vm_spec(&mut o)["domain"]["resources"]["requests"]["kubevirt.io/interface"] = json!("3");
        o
    };
    run(vec![
        ("string 4", pod("4"), Allow),
        ("zero", pod("0"), Allow),
        ("32", pod("32"), Allow),
        ("-1", pod("-1"), Deny(vec![cap])),
        ("33", pod("33"), Deny(vec![cap])),
        ("4k", pod("4k"), Deny(vec![cap])),
        ("abc", pod("abc"), Deny(vec![cap])),
        ("vm request integer", vm_req(json!(4)), Allow),
        ("vm request string", vm_req(json!("5")), Allow),
        ("vm request 33", vm_req(json!(33)), Deny(vec![req])),
        ("vm request quantity", vm_req(json!("4k")), Deny(vec![req])),
        ("vm limit", vm_lim, Deny(vec![lim])),
        (
            "annotation differs from request",
            Req::create(annotate(
                vm_req(json!(5)).object,
                "hotnic.io/interface-capacity",
                "6",
            )),
            Deny(vec![cap]),
        ),
        (
            "create over capacity is allowed",
            Req::create(annotate(plus(3), "hotnic.io/interface-capacity", "2")),
            Allow,
        ),
        (
            "update within capacity",
            Req::update(
                annotate(multus(json!([])), "hotnic.io/interface-capacity", "2"),
                base.clone(),
            ),
            Allow,
        ),
        (
            "update over capacity",
            Req::update(base.clone(), plus(2)),
            Deny(vec![leak(format!("{N}[1]"))]),
        ),
        (
            "update keeps an over-capacity count",
            Req::update(plus(3), plus(3)),
            Allow,
        ),
        (
            "update changes capacity",
            Req::update(
                base.clone(),
                annotate(base.clone(), "hotnic.io/interface-capacity", "8"),
            ),
            Deny(vec![cap]),
        ),
        (
            "update adds capacity",
            Req::update(removed.clone(), base.clone()),
            Deny(vec![cap]),
        ),
        (
            "vm update over request capacity",
            Req::update(vm_base.clone(), vm_more),
            Deny(vec![leak(format!("{VMI}[2]"))]),
        ),
        (
            "vm update changes request",
            Req::update(vm_base.clone(), vm_changed),
            Deny(vec![req]),
        ),
    ]);
}

#[test]
fn rule3_removed_capacity_is_denied_by_validation_and_restored_by_mutation() {
    let p = policy();
    let base = annotate(
        multus(json!([{"name": "a", "interface": "eth1", "mac": "02:00:00:00:01:01"}])),
        "hotnic.io/interface-capacity",
        "2",
    );
    let mut removed = base.clone();
    removed["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("hotnic.io/interface-capacity");
    let req = Req::update(base, removed);
    let v = p.validate(&req.as_request());
    let d = v.denial().expect("removal denied by validation");
    assert_eq!(
        d.causes[0].field,
        "metadata.annotations[hotnic.io/interface-capacity]"
    );
    let out = admit(&p, &req);
    assert_eq!(
        out["metadata"]["annotations"]["hotnic.io/interface-capacity"],
        "2"
    );
}

#[test]
fn rule4_binding_is_immutable() {
    let ark = |nics: Value| {
        arktos(
            nics,
            Some(json!({"eth0": "02:00:00:00:00:10", "eth1": "02:00:00:00:00:11"})),
        )
    };
    let a_old = ark(json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portId": "p1"}]));
    let a_new_port =
        ark(json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portId": "p9"}]));
    let a_empty = ark(json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1"}]));
    let a_upper = ark(json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portID": "p1"}]));
    let a_both = ark(
        json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portId": "p1", "portID": "p2"}]),
    );
    let a_mac = arktos(
        json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1", "portId": "p1"}]),
        Some(json!({"eth0": "02:00:00:00:00:10", "eth1": "02:00:00:00:00:99"})),
    );
    let mm = |net: &str, ns: Option<&str>, ips: Option<Value>, mac: &str| {
        let mut e = json!({"name": net, "interface": "eth1", "mac": mac});
        if let Some(ns) = ns {
            e["namespace"] = json!(ns);
        }
        if let Some(ips) = ips {
            e["ips"] = ips;
        }
        multus(json!([e]))
    };
    let m_old = mm(
        "net-a",
        None,
        Some(json!(["10.1.1.5/24"])),
        "02:00:00:00:00:21",
    );
    let vm_old = {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["devices"]["interfaces"][1]["macAddress"] =
            json!("02:00:00:00:00:31");
        vm_spec(&mut o)["domain"]["devices"]["interfaces"][0]["macAddress"] =
            json!("02:00:00:00:00:30");
        o
    };
    let vm_edit = |f: &dyn Fn(&mut Value)| {
        let mut o = vm_old.clone();
        f(vm_spec(&mut o));
        o
    };
    run(vec![
        (
            "arktos portId changed",
            Req::update(a_old.clone(), a_new_port),
            Deny(vec!["spec.nics[1].portId"]),
        ),
        (
            "arktos portId set once from empty",
            Req::update(a_empty.clone(), a_old.clone()),
            Allow,
        ),
        (
            "arktos portID spelling accepted",
            Req::update(a_old.clone(), a_upper),
            Allow,
        ),
        (
            "arktos both spellings differ",
            Req::create(a_both),
            Deny(vec!["spec.nics[1].portID"]),
        ),
        (
            "arktos MAC changed",
            Req::update(a_old.clone(), a_mac),
            Deny(vec!["metadata.annotations[hotnic.io/mac-addresses].eth1"]),
        ),
        (
            "multus unchanged",
            Req::update(m_old.clone(), m_old.clone()),
            Allow,
        ),
        (
            "multus explicit same namespace",
            Req::update(
                m_old.clone(),
                mm(
                    "net-a",
                    Some("demo"),
                    Some(json!(["10.1.1.5/24"])),
                    "02:00:00:00:00:21",
                ),
            ),
            Allow,
        ),
        (
            "multus network changed",
            Req::update(
                m_old.clone(),
                mm(
                    "net-b",
                    None,
                    Some(json!(["10.1.1.5/24"])),
                    "02:00:00:00:00:21",
                ),
            ),
            Deny(vec![leak(el(0, "name"))]),
        ),
        (
            "multus namespace changed",
            Req::update(
                m_old.clone(),
                mm(
                    "net-a",
                    Some("other"),
                    Some(json!(["10.1.1.5/24"])),
                    "02:00:00:00:00:21",
                ),
            ),
            Deny(vec![leak(el(0, "namespace"))]),
        ),
        (
            "multus ips changed",
            Req::update(
                m_old.clone(),
                mm(
                    "net-a",
                    None,
                    Some(json!(["10.1.1.6/24"])),
                    "02:00:00:00:00:21",
                ),
            ),
            Deny(vec![leak(el(0, "ips"))]),
        ),
        (
            "multus MAC changed",
            Req::update(
                m_old.clone(),
                mm(
                    "net-a",
                    None,
                    Some(json!(["10.1.1.5/24"])),
                    "02:00:00:00:00:22",
                ),
            ),
            Deny(vec![leak(el(0, "mac"))]),
        ),
        (
            "vm binding method changed",
            Req::update(
                vm_old.clone(),
                vm_edit(&|s| {
                    s["domain"]["devices"]["interfaces"][1] = json!({"name": "secondary", "sriov": {}, "macAddress": "02:00:00:00:00:31"});
                }),
            ),
            // Both sides' keys: the new one set, the old one (only on the old object) unset.
            Deny(vec![
                leak(format!("{VMI}[1].sriov")),
                leak(format!("{VMI}[1].bridge")),
            ]),
        ),
        (
            "vm model changed",
            Req::update(
                vm_old.clone(),
                vm_edit(&|s| {
                    s["domain"]["devices"]["interfaces"][1]["model"] = json!("e1000");
                }),
            ),
            Deny(vec![leak(format!("{VMI}[1].model"))]),
        ),
        (
            "vm network source changed",
            Req::update(
                vm_old.clone(),
                vm_edit(&|s| {
                    s["networks"][1]["multus"]["networkName"] = json!("other-nad");
                }),
            ),
            Deny(vec!["spec.template.spec.networks[1].multus"]),
        ),
        (
            "vm MAC changed",
            Req::update(
                vm_old.clone(),
                vm_edit(&|s| {
                    s["domain"]["devices"]["interfaces"][1]["macAddress"] =
                        json!("02:00:00:00:00:32");
                }),
            ),
            Deny(vec![leak(format!("{VMI}[1].macAddress"))]),
        ),
        (
            "vm state change is not a binding change",
            Req::update(
                vm_old.clone(),
                vm_edit(&|s| {
                    s["domain"]["devices"]["interfaces"][1]["state"] = json!("absent");
                }),
            ),
            Allow,
        ),
    ]);
}

#[test]
fn rule5_primary() {
    let a = arktos(
        json!([{"name": "eth0", "portId": "p0"}, {"name": "eth1"}]),
        None,
    );
    let a_no_eth0 = arktos(json!([{"name": "eth1"}]), None);
    let a_first = arktos(json!([{"name": "ens3"}, {"name": "eth1"}]), None);
    let a_first_gone = arktos(json!([{"name": "eth1"}]), None);
    let m = multus(json!([{"name": "a", "interface": "eth1"}]));
    let m_def = annotate(
        m.clone(),
        "v1.multus-cni.io/default-network",
        "kube-system/calico",
    );
    let vm_abs = {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["devices"]["interfaces"][0]["state"] = json!("absent");
        o
    };
    let vm_gone = {
        let mut o = vm_basic();
        vm_spec(&mut o)["domain"]["devices"]["interfaces"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        vm_spec(&mut o)["networks"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        o
    };
    run(vec![
        (
            "arktos unplug secondary",
            Req::update(
                a.clone(),
                arktos(json!([{"name": "eth0", "portId": "p0"}]), None),
            ),
            Allow,
        ),
        (
            "arktos unplug eth0",
            Req::update(a.clone(), a_no_eth0),
            Deny(vec!["spec.nics"]),
        ),
        (
            "arktos unplug first NIC",
            Req::update(a_first, a_first_gone),
            Deny(vec!["spec.nics"]),
        ),
        (
            "multus default network added",
            Req::update(m.clone(), m_def.clone()),
            Deny(vec![
                "metadata.annotations[v1.multus-cni.io/default-network]",
            ]),
        ),
        (
            "multus default network removed",
            Req::update(m_def.clone(), m.clone()),
            Deny(vec![
                "metadata.annotations[v1.multus-cni.io/default-network]",
            ]),
        ),
        (
            "multus default network kept",
            Req::update(m_def.clone(), m_def.clone()),
            Allow,
        ),
        (
            "multus default network on create",
            Req::create(m_def),
            Allow,
        ),
        (
            "vm primary absent",
            Req::update(vm_basic(), vm_abs.clone()),
            Deny(vec![leak(format!("{VMI}[0].state"))]),
        ),
        (
            "vm primary absent at create",
            Req::create(vm_abs),
            Deny(vec![leak(format!("{VMI}[0].state"))]),
        ),
        (
            "vm primary removed",
            Req::update(vm_basic(), vm_gone),
            Deny(vec![VMI]),
        ),
    ]);
}

#[test]
fn rule6_kubevirt_unplug_and_hotplug() {
    let base = vm_basic();
    let plugged = |binding: Value| {
        let mut iface = json!({"name": "hot1"});
        iface
            .as_object_mut()
            .unwrap()
            .extend(binding.as_object().unwrap().clone());
        with_vm_iface(
            base.clone(),
            iface,
            json!({"name": "hot1", "multus": {"networkName": "bridge-conf"}}),
        )
    };
    let with_state = |obj: &Value, i: usize, state: &str| {
        let mut o = obj.clone();
        vm_spec(&mut o)["domain"]["devices"]["interfaces"][i]["state"] = json!(state);
        o
    };
    let removed = {
        let mut o = base.clone();
        vm_spec(&mut o)["domain"]["devices"]["interfaces"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        vm_spec(&mut o)["networks"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        o
    };
    let sriov = plugged(json!({"sriov": {}}));
    let absent = with_state(&base, 1, "absent");
    run(vec![
        (
            "hot-plug bridge",
            Req::update(base.clone(), plugged(json!({"bridge": {}}))),
            Allow,
        ),
        (
            "hot-plug sriov",
            Req::update(base.clone(), sriov.clone()),
            Allow,
        ),
        (
            "hot-plug masquerade",
            Req::update(base.clone(), plugged(json!({"masquerade": {}}))),
            Deny(vec![leak(format!("{VMI}[2]"))]),
        ),
        (
            "unplug bridge with absent",
            Req::update(base.clone(), absent.clone()),
            Allow,
        ),
        (
            "unplug sriov with absent",
            Req::update(sriov.clone(), with_state(&sriov, 2, "absent")),
            Deny(vec![leak(format!("{VMI}[2].state"))]),
        ),
        (
            "unplug by removal",
            Req::update(base.clone(), removed.clone()),
            Deny(vec![VMI]),
        ),
        ("remove after absent", Req::update(absent, removed), Allow),
        (
            "state down is not an unplug",
            Req::update(base.clone(), with_state(&base, 1, "down")),
            Allow,
        ),
    ]);
}

#[test]
fn rule7_multus_well_formed() {
    run(vec![
        (
            "bad JSON",
            Req::create(multus_raw("[{\"name\": ")),
            Deny(vec![N]),
        ),
        (
            "not an object",
            Req::create(multus_raw("[\"net\"]")),
            Deny(vec![leak(format!("{N}[0]"))]),
        ),
        (
            "no name",
            Req::create(multus(json!([{"interface": "eth1"}]))),
            Deny(vec![leak(el(0, "name"))]),
        ),
        (
            "wrong type",
            Req::create(multus(json!([{"name": 5, "interface": "eth1"}]))),
            Deny(vec![leak(el(0, "name"))]),
        ),
        (
            "two default routes",
            Req::create(multus(json!([
            {"name": "a", "interface": "eth1", "default-route": ["10.0.0.1"]},
            {"name": "b", "interface": "eth2", "default-route": ["10.0.1.1"]}]))),
            Deny(vec![leak(el(1, "default-route"))]),
        ),
        (
            "one default route",
            Req::create(multus(
                json!([{"name": "a", "interface": "eth1", "default-route": ["10.0.0.1"]}]),
            )),
            Allow,
        ),
        (
            "ips with claim",
            Req::create(multus(
                json!([{"name": "a", "interface": "eth1", "ips": ["10.0.0.5/24"], "ipam-claim-reference": "c"}]),
            )),
            Deny(vec![leak(el(0, "ips"))]),
        ),
        ("empty annotation", Req::create(multus_raw("")), Allow),
        (
            "bad short form",
            Req::create(multus_raw("a@b@c")),
            Deny(vec![leak(format!("{N}[0]"))]),
        ),
    ]);
}

#[test]
fn malformed_objects_get_422_from_both_phases() {
    let p = policy();
    let req = Req::create(multus_raw("[{"));
    for out in [p.mutate(&req.as_request()), p.validate(&req.as_request())] {
        let d = out.denial().expect("denied");
        assert_eq!((d.code, d.reason()), (422, "Invalid"));
    }
}

#[test]
fn every_cause_is_listed_not_just_the_first() {
    let p = policy();
    let req = Req::create(multus(json!([
        {"name": "a"},
        {"name": "b", "interface": "eth0"},
        {"name": "c", "interface": "eth3", "mac": "01:00:00:00:00:01"}
    ])));
    let d = p.validate(&req.as_request());
    let d = d.denial().expect("denied");
    assert_eq!(d.code, 403);
    let fields: Vec<_> = d.causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [el(0, "interface"), el(1, "interface"), el(2, "mac")]
    );
    assert_eq!(
        d.causes[0].to_string(),
        format!(
            "{}: missing; hot-plug needs every NIC named, e.g. \"eth1\"",
            el(0, "interface")
        )
    );
    assert!(d.message().contains(&el(2, "mac")));
}

/// Every rule is decided in `src/policy/` only: readers record findings, nothing else makes a
/// cause. The compiler enforces most of it (`Cause` has a private field and its constructor is
/// visible in `src/policy/` only); this scan keeps it that way: outside `src/policy/`, a `Rule`
/// variant may only be matched or compared (labels, status reasons), never handed to anything,
/// `Cause` is never built, and `src/dialect/` does not name `Rule` at all. Every variant is
/// produced somewhere in `src/policy/`.
#[test]
fn every_rule_is_produced_only_in_the_policy() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    /// The code of a file, comment lines dropped.
    fn code(p: &std::path::Path) -> Vec<(usize, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with("//"))
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect()
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let policy = src.join("policy");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "sources under {}", src.display());

    let variant = regex_lite::Regex::new(r"Rule::([A-Za-z]+)").unwrap();
    let matched = regex_lite::Regex::new(r"^\s*(=>|\|)").unwrap();
    let compared = regex_lite::Regex::new(r"(==|!=)\s*$").unwrap();
    let built = regex_lite::Regex::new(r"\bCause\s*(::|\{)").unwrap();
    let mut offences = Vec::new();
    let mut produced = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        for (n, line) in code(f) {
            if f.starts_with(&policy) {
                produced.extend(variant.captures_iter(&line).map(|c| c[1].to_string()));
                continue;
            }
            if f.starts_with(src.join("dialect")) && line.contains("Rule") {
                offences.push(format!("{rel}:{n}: a reader names Rule: {line}"));
            }
            if built.is_match(&line) {
                offences.push(format!("{rel}:{n}: builds a Cause: {line}"));
            }
            for m in variant.find_iter(&line) {
                let (before, after) = (&line[..m.start()], &line[m.end()..]);
                if !matched.is_match(after) && !compared.is_match(before) {
                    offences.push(format!(
                        "{rel}:{n}: uses {} beyond matching: {line}",
                        m.as_str()
                    ));
                }
            }
        }
    }
    assert!(offences.is_empty(), "\n{}", offences.join("\n"));

    // Every variant of Rule is produced in src/policy/.
    let model = std::fs::read_to_string(src.join("model/cause.rs")).unwrap();
    let body = &model[model.find("pub enum Rule {").unwrap()..];
    let body = &body[..body.find('}').unwrap()];
    let variants: std::collections::BTreeSet<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with("pub enum") && l.ends_with(','))
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    assert_eq!(variants.len(), 9, "{variants:?}");
    let missing: Vec<_> = variants.difference(&produced).collect();
    assert!(
        missing.is_empty(),
        "never produced in src/policy/: {missing:?}"
    );
}

/// An update whose new object is not a JSON object at all (its old one carried NICs): denied as
/// malformed (422) in both phases, with a field and what to send instead; never a patch that
/// cannot apply.
#[test]
fn an_object_that_is_not_an_object_is_malformed() {
    let p = policy();
    let old = multus(json!([{"name": "net1", "interface": "eth1", "mac": "02:00:00:00:00:01"}]));
    for (new, kind) in [
        (json!([1, 2]), "Pod"),
        (json!("text"), "Pod"),
        (json!(null), "Pod"),
        (json!(7), "VirtualMachine"),
    ] {
        let old = if kind == "Pod" {
            old.clone()
        } else {
            vm_basic()
        };
        let mut req = Req::update(old, new.clone());
        req.kind = kind.into();
        req.group = if kind == "Pod" { "" } else { "kubevirt.io" }.into();
        for out in [p.mutate(&req.as_request()), p.validate(&req.as_request())] {
            let d = out
                .denial()
                .unwrap_or_else(|| panic!("{new}: allowed: {out:?}"));
            assert_eq!(d.code, 422, "{new}: {d:?}");
            // Validation lists every cause; the object's own comes first.
            assert_eq!(d.causes[0].field, "object", "{new}: {d:?}");
            assert!(
                d.causes[0]
                    .message
                    .starts_with(&format!("must be a {kind} as a JSON object")),
                "{}",
                d.causes[0].message
            );
        }
    }
}
