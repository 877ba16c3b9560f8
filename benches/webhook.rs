//! Review handling through the whole admission router (body → AdmissionReview parse → policy →
//! response JSON with base64 patch), per captured fixture, via tower `oneshot` (no sockets, no
//! TLS: that is what `examples/loadgen.rs` adds). Reviews are sent with `dryRun: true` so the
//! allocator's state does not grow with the iteration count; the policy does the same work.
use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use hotnic::allocator::{InMemoryAllocator, MacRange};
use hotnic::policy::{Policy, PolicyConfig};
use hotnic::webhook::metrics::Metrics;
use hotnic::webhook::routes::{AppState, router};
use http_body_util::BodyExt;
use serde_json::Value;
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;

fn fixtures() -> Vec<(String, bytes::Bytes)> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/apiserver-v1.32"
    );
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures in tests/fixtures/apiserver-v1.32")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v["request"]["dryRun"] = true.into();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, serde_json::to_vec(&v).unwrap().into())
        })
        .collect();
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::new(MacRange::default_range())),
    );
    let app = router(AppState::new(policy, Arc::new(Metrics::new())), 8 << 20);
    let mut group = c.benchmark_group("router");
    for (name, body) in fixtures() {
        let path = if name.split('-').nth(1) == Some("mutate") {
            "/mutate"
        } else {
            "/validate"
        };
        group.throughput(criterion::Throughput::Bytes(body.len() as u64));
        group.bench_function(&name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = http::Request::post(path)
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap();
                    let resp = app.clone().oneshot(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    black_box(resp.into_body().collect().await.unwrap().to_bytes())
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
