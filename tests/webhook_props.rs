//! Property tests through the admission router: whatever the body, the answer is a 200
//! AdmissionReview for the request's uid or a 400 JSON error, never a panic or another status;
//! a 200 patch always applies.

mod webhook_support;

use axum::body::Body;
use hotnic::allocator::{InMemoryAllocator, MacRange};
use hotnic::policy::{Policy, PolicyConfig};
use hotnic::webhook::metrics::Metrics;
use hotnic::webhook::routes::{AppState, router};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;
use webhook_support::*;

fn app() -> axum::Router {
    let policy = Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::new(MacRange::default_range())),
    );
    router(AppState::new(policy, Arc::new(Metrics::new())), 1 << 20)
}

fn call(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    path: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    rt.block_on(async {
        let req = http::Request::post(path).body(Body::from(body)).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {bytes:?}"));
        (status, v)
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9:./@-]{0,12}".prop_map(Value::from),
        Just(Value::from("[{\"name\":\"n\",\"interface\":\"eth1\"}]")),
        Just(Value::from("02:00:00:00:00:01")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_400(body in prop::collection::vec(any::<u8>(), 0..512), mutate in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, v) = call(&rt, &app(), if mutate { "/mutate" } else { "/validate" }, body);
        prop_assert_eq!(status, 400);
        prop_assert!(v["error"].is_string());
    }

    #[test]
    fn edited_fixtures_get_a_well_formed_answer_or_400(
        which in 0usize..64,
        spot in any::<prop::sample::Index>(),
        value in json_value(),
    ) {
        let all = fixtures();
        let (name, _, mut review) = all[which % all.len()].clone();
        let mut ptrs = Vec::new();
        pointers(&review, String::new(), &mut ptrs);
        let ptr = &ptrs[spot.index(ptrs.len())];
        *review.pointer_mut(ptr).unwrap() = value;
        let endpoint = endpoint_of(&name);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, answer) = call(&rt, &app(), endpoint, serde_json::to_vec(&review).unwrap());
        match status {
            200 => {
                // check_answer asserts (panics) on any malformation.
                check_answer(&format!("{name} with {ptr} replaced"), endpoint, &review, &answer);
            }
            400 => prop_assert!(answer["error"].is_string()),
            other => prop_assert!(false, "status {} for {} with {} replaced: {}", other, name, ptr, answer),
        }
    }
}
