//! The admission router driven directly with tower `oneshot` (no sockets): dry-run, draining,
//! the response shape rules that do not need TLS.

mod webhook_support;

use axum::body::Body;
use hotnic::allocator::{InMemoryAllocator, MacRange};
use hotnic::policy::{Policy, PolicyConfig};
use hotnic::webhook::metrics::Metrics;
use hotnic::webhook::routes::{AppState, router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tower::ServiceExt;
use webhook_support::*;

fn state() -> Arc<AppState> {
    let policy = Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::new(MacRange::default_range())),
    );
    AppState::new(policy, Arc::new(Metrics::new()))
}

async fn call(
    state: &Arc<AppState>,
    path: &str,
    body: &Value,
) -> (StatusCode, http::HeaderMap, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = router(state.clone(), 8 << 20).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn dry_run_gets_the_same_answer_and_holds_nothing() {
    let s = state();
    let dry = fixture("005");
    assert_eq!(
        dry["request"]["dryRun"], true,
        "fixture 005 is a server-side dry run"
    );
    let held = s.policy.allocator().held();
    let (status, _, first) = call(&s, "/mutate", &dry).await;
    assert_eq!(status, 200);
    let (_, patch) = check_answer("005", "/mutate", &dry, &first);
    assert!(
        patch.is_some(),
        "the dry run still shows the MACs it would inject: {first}"
    );
    assert_eq!(
        s.policy.allocator().held(),
        held,
        "a dry run reserves nothing"
    );

    // The same review for real: same patch (the dry run did not move the allocator), now held.
    let mut real = dry.clone();
    real["request"]["dryRun"] = false.into();
    let (_, _, second) = call(&s, "/mutate", &real).await;
    assert_eq!(second["response"]["patch"], first["response"]["patch"]);
    assert!(
        s.policy.allocator().held() > held,
        "the real request holds its MACs"
    );
}

#[tokio::test]
async fn validate_never_patches_even_what_mutate_would() {
    let s = state();
    let mut review = fixture("001");
    let (_, _, mutated) = call(&s, "/mutate", &review).await;
    assert!(mutated["response"]["patch"].is_string(), "{mutated}");
    review["request"]["uid"] = "another".into();
    let (status, _, validated) = call(&s, "/validate", &review).await;
    assert_eq!(status, 200);
    let (resp, patch) = check_answer("001 on /validate", "/validate", &review, &validated);
    assert!(
        patch.is_none() && resp.get("patchType").is_none(),
        "{validated}"
    );
}

#[tokio::test]
async fn a_denial_has_the_kubernetes_status_shape() {
    let s = state();
    let review = unnamed_multus_review();
    let (status, _, answer) = call(&s, "/validate", &review).await;
    assert_eq!(status, 200);
    let (resp, _) = check_answer("denial", "/validate", &review, &answer);
    assert_eq!(resp["allowed"], false, "{answer}");
    let st = &resp["status"];
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["code"], 403);
    assert_eq!(st["reason"], "Forbidden");
    let causes = st["details"]["causes"].as_array().unwrap();
    for c in causes {
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .contains(c["message"].as_str().unwrap()),
            "the one-line message lists every cause: {st}"
        );
    }
}

#[tokio::test]
async fn while_draining_reviews_get_503_with_retry_after() {
    let s = state();
    s.draining.store(true, Ordering::SeqCst);
    let (status, headers, body) = call(&s, "/mutate", &fixture("001")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(body["error"].is_string());
    s.draining.store(false, Ordering::SeqCst);
    let (status, _, _) = call(&s, "/mutate", &fixture("001")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn operations_hotnic_does_not_judge_are_allowed_untouched() {
    let s = state();
    let mut review = fixture("002");
    review["request"]["operation"] = "DELETE".into();
    review["request"]["oldObject"] = review["request"]["object"].take();
    for path in ["/mutate", "/validate"] {
        let (status, _, answer) = call(&s, path, &review).await;
        assert_eq!(status, 200);
        let (resp, patch) = check_answer("delete", path, &review, &answer);
        assert_eq!(resp["allowed"], true);
        assert!(patch.is_none());
    }
}
