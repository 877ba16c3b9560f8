//! Policy cost per review (the webhook's CPU share on the API server's critical path):
//! mutate + validate of each captured review, and of a pod with 32 NICs being hot-plugged.
use criterion::{Criterion, criterion_group, criterion_main};
use hotnic::allocator::MacRange;
use hotnic::policy::{Operation, Policy, Request};
use serde_json::{Value, json};
use std::hint::black_box;

fn fixture(prefix: &str) -> Value {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/apiserver-v1.32"
    );
    let entry = std::fs::read_dir(dir)
        .expect("fixtures in tests/fixtures/apiserver-v1.32")
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .expect("fixture");
    serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap()
}

fn review(c: &mut Criterion, name: &str, policy: &Policy, r: &Value) {
    let req = &r["request"];
    let kind = req["kind"]["kind"].as_str().unwrap();
    let group = req["kind"]["group"].as_str().unwrap();
    let request = Request {
        operation: Operation::parse(req["operation"].as_str().unwrap()).unwrap(),
        dry_run: true,
        group,
        kind,
        namespace: req["namespace"].as_str().unwrap_or("demo"),
        name: req["name"].as_str(),
        object: &req["object"],
        old_object: req.get("oldObject").filter(|o| !o.is_null()),
    };
    c.bench_function(&format!("mutate+validate/{name}"), |b| {
        b.iter(|| {
            let m = policy.mutate(black_box(&request));
            let v = policy.validate(black_box(&request));
            black_box((m, v))
        })
    });
}

fn many_nics(n: usize) -> Value {
    let nets: Vec<Value> = (1..=n)
        .map(|i| json!({"name": "bridge-conf", "interface": format!("net{i}"), "mac": format!("02:00:00:00:01:{i:02x}")}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "namespace": "demo",
        "annotations": {"k8s.v1.cni.cncf.io/networks": serde_json::to_string(&nets).unwrap(), "hotnic.io/interface-capacity": "32"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}})
}

fn benches(c: &mut Criterion) {
    let policy = Policy::in_memory(MacRange::default_range());
    for (name, prefix) in [
        ("multus-create", "001"),
        ("multus-hotplug", "007"),
        ("kubevirt-vm-create", "015"),
        ("kubevirt-vm-hotplug", "017"),
        ("no-nics", "013"),
    ] {
        review(c, name, &policy, &fixture(prefix));
    }
    // 31 NICs plugged, one more hot-plugged: the largest update the rules allow.
    let old = many_nics(30);
    let mut new = many_nics(31);
    let nets: Value = serde_json::from_str(
        new["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut nets = nets.as_array().unwrap().clone();
    nets[30].as_object_mut().unwrap().remove("mac");
    new["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] =
        Value::from(serde_json::to_string(&nets).unwrap());
    let r = json!({"request": {"operation": "UPDATE", "kind": {"group": "", "kind": "Pod"}, "namespace": "demo", "name": "big", "object": new, "oldObject": old}});
    review(c, "multus-32-nics-hotplug", &policy, &r);
}

criterion_group!(policy, benches);
criterion_main!(policy);
