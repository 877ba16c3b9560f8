//! The allocator contract (`hotnic::allocator::MacAllocator`) on the in-process implementation:
//! a 16-address range exhausted and refilled, and many tasks allocating at once with no MAC
//! handed out twice, directly and through the policy (what the webhook runs per review).

use futures::FutureExt;
use hotnic::allocator::{
    AllocError, ClaimError, ClaimRequest, InMemoryAllocator, MacAllocator, MacRange, Owner, Scope,
};
use hotnic::model::Mac;
use hotnic::policy::{Operation, Policy, PolicyConfig, Request};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

fn pod(name: &str) -> Owner {
    Owner {
        kind: "Pod".into(),
        resource: "pods".into(),
        namespace: "demo".into(),
        name: Some(name.into()),
        ..Owner::default()
    }
}

/// Candidate, then claim; a candidate another owner claimed first is skipped (as the policy does).
async fn allocate(a: &dyn MacAllocator, owner: &Owner) -> Result<Mac, AllocError> {
    let mut avoid = HashSet::new();
    let owner = &hotnic::allocator::KnownOwner::new(owner.clone());
    loop {
        let mac = a.candidate(&Scope::Cluster, &|m| avoid.contains(&m))?;
        let r = a
            .claim(ClaimRequest {
                owner,
                scope: &Scope::Cluster,
                mac,
                nic: "eth1",
                dry_run: false,
            })
            .await;
        match r {
            Ok(()) => return Ok(mac),
            Err(ClaimError::Conflict { .. }) => {
                avoid.insert(mac);
            }
            Err(ClaimError::Alloc(e)) => return Err(e),
        }
    }
}

#[test]
fn a_range_of_16_is_exhausted_and_refilled() {
    let range: MacRange = "02:00:00:00:10:00-02:00:00:00:10:0f".parse().unwrap();
    assert_eq!(range.usable_len(), 16);
    let a = InMemoryAllocator::new(range);
    let owners: Vec<Owner> = (0..16).map(|i| pod(&format!("p{i}"))).collect();
    let mut got = Vec::new();
    for o in &owners {
        got.push(allocate(&a, o).now_or_never().unwrap().unwrap());
    }
    let unique: HashSet<Mac> = got.iter().copied().collect();
    assert_eq!(unique.len(), 16);
    assert!(got.iter().all(|m| range.contains(*m)));
    assert_eq!((a.held(), a.held_in_range()), (16, 16));
    let err = allocate(&a, &pod("one-too-many")).now_or_never().unwrap();
    assert!(
        matches!(err, Err(AllocError::Exhausted(r)) if r == range),
        "{err:?}"
    );
    // A candidate is refused too.
    assert!(matches!(
        a.candidate(&Scope::Cluster, &|_| false),
        Err(AllocError::Exhausted(_))
    ));

    // Releasing 5 (as the repair loop does once their pods are gone) frees exactly those.
    let freed: HashSet<Mac> = (0..5)
        .map(|i| {
            assert!(
                a.release(&owners[i * 3], &Scope::Cluster, got[i * 3])
                    .now_or_never()
                    .unwrap()
                    .unwrap()
            );
            got[i * 3]
        })
        .collect();
    // Releasing someone else's claim frees nothing.
    assert!(
        !a.release(&pod("stranger"), &Scope::Cluster, got[1])
            .now_or_never()
            .unwrap()
            .unwrap()
    );
    assert_eq!(a.held(), 11);
    let refill: HashSet<Mac> = (0..5)
        .map(|i| {
            allocate(&a, &pod(&format!("new{i}")))
                .now_or_never()
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(refill, freed);
    assert!(matches!(
        allocate(&a, &pod("again")).now_or_never().unwrap(),
        Err(AllocError::Exhausted(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_at_once_never_get_one_mac_twice() {
    let range: MacRange = "02:00:00:00:00:00-02:00:00:00:0f:ff".parse().unwrap();
    let a: Arc<dyn MacAllocator> = Arc::new(InMemoryAllocator::new(range));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let owner = pod(&format!("t{t}"));
            let mut out = Vec::new();
            for _ in 0..60 {
                out.push(allocate(a.as_ref(), &owner).await.unwrap());
                tokio::task::yield_now().await;
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<Mac> = all.iter().copied().collect();
    assert_eq!(all.len(), 64 * 60);
    assert_eq!(unique.len(), all.len(), "a MAC was handed out twice");
    assert_eq!(a.held(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_reviews_at_once_through_the_policy_never_share_a_mac() {
    let range: MacRange = "02:00:00:00:00:00-02:00:00:00:0f:ff".parse().unwrap();
    let policy = Arc::new(Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::new(range)),
    ));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let mut macs = Vec::new();
            for i in 0..30 {
                let name = format!("pod-{t}-{i}");
                let object = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "demo", "annotations": {
                        "k8s.v1.cni.cncf.io/networks":
                            r#"[{"name":"a","interface":"eth1"},{"name":"a","interface":"eth2"},{"name":"a","interface":"eth3"}]"#}},
                    "spec": {"containers": []}});
                let req = Request {
                    operation: Operation::Create,
                    dry_run: false,
                    group: "",
                    kind: "Pod",
                    namespace: "demo",
                    name: Some(&name),
                    object: &object,
                    old_object: None,
                };
                let out = policy.mutate_async(&req).await;
                let patch = out.patch().expect("allowed").clone();
                let mut obj = object.clone();
                json_patch::patch(&mut obj, &patch.0).unwrap();
                let nets: Vec<serde_json::Value> = serde_json::from_str(
                    obj["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                macs.extend(nets.iter().map(|e| e["mac"].as_str().unwrap().to_string()));
            }
            macs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 32 * 30 * 3);
    assert_eq!(unique.len(), all.len(), "two NICs got one MAC");
}
