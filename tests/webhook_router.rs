//! The admission router driven directly with tower `oneshot` (no sockets): dry-run, draining,
//! the response shape rules that do not need TLS.

mod webhook_support;

use axum::body::Body;
use hotnic::allocator::{
    AllocError, AllocFuture, ClaimError, ClaimRequest, InMemoryAllocator, MacAllocator, MacRange,
    Owner, Scope,
};
use hotnic::model::Mac;
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
async fn dry_run_gets_the_same_operations_and_holds_nothing() {
    let s = state();
    let dry = fixture("005");
    assert_eq!(
        dry["request"]["dryRun"], true,
        "fixture 005 is a server-side dry run"
    );
    let held = s.policy.allocator().held();
    let (status, _, first) = call(&s, "/mutate", &dry).await;
    assert_eq!(status, 200);
    let (_, dry_patch) = check_answer("005", "/mutate", &dry, &first);
    let dry_patch = dry_patch.expect("the dry run still shows the MACs it would inject");
    assert_eq!(
        s.policy.allocator().held(),
        held,
        "a dry run reserves nothing"
    );

    // The same review for real: the same operations at the same paths, now held. Its MACs are
    // not the dry run's: a dry run's candidates are not offered again (its validating call checks
    // them after a real request may have come in between).
    let mut real = dry.clone();
    real["request"]["dryRun"] = false.into();
    let (_, _, second) = call(&s, "/mutate", &real).await;
    let (_, real_patch) = check_answer("005 for real", "/mutate", &real, &second);
    let real_patch = real_patch.expect("the real request gets its MACs");
    let paths = |p: &json_patch::Patch| -> Vec<String> {
        p.0.iter().map(|op| op.path().to_string()).collect()
    };
    assert_eq!(paths(&real_patch), paths(&dry_patch));
    assert_ne!(real_patch, dry_patch);
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

/// An in-memory allocator whose readiness the test controls (a cluster-wide allocator is not
/// ready until it has synced).
struct Gated {
    inner: InMemoryAllocator,
    ready: std::sync::atomic::AtomicBool,
    /// Answer one claim fewer than asked for in each round (a broken allocator).
    short: std::sync::atomic::AtomicBool,
    /// Panic on a round of claims (a bug).
    panic: std::sync::atomic::AtomicBool,
}

impl MacAllocator for Gated {
    fn range(&self) -> MacRange {
        self.inner.range()
    }
    fn candidate(&self, scope: &Scope, taken: &dyn Fn(Mac) -> bool) -> Result<Mac, AllocError> {
        self.inner.candidate(scope, taken)
    }
    fn held_by_other(&self, owner: &Owner, scope: &Scope, mac: Mac) -> bool {
        self.inner.held_by_other(owner, scope, mac)
    }
    fn holder<'a>(
        &'a self,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<Option<Owner>, AllocError>> {
        self.inner.holder(scope, mac)
    }
    fn claim<'a>(&'a self, req: ClaimRequest<'a>) -> AllocFuture<'a, Result<(), ClaimError>> {
        self.inner.claim(req)
    }
    fn claim_many<'a>(
        &'a self,
        reqs: &'a [ClaimRequest<'a>],
    ) -> AllocFuture<'a, Vec<Result<(), ClaimError>>> {
        assert!(
            !self.panic.load(Ordering::SeqCst),
            "a bug in the allocator (test)"
        );
        let n = match self.short.load(Ordering::SeqCst) {
            true => reqs.len().saturating_sub(1),
            false => reqs.len(),
        };
        self.inner.claim_many(&reqs[..n])
    }
    fn bind<'a>(
        &'a self,
        owner: &'a Owner,
        keys: &'a [(Scope, Mac)],
    ) -> AllocFuture<'a, Result<(), AllocError>> {
        self.inner.bind(owner, keys)
    }
    fn release<'a>(
        &'a self,
        owner: &'a Owner,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<bool, AllocError>> {
        self.inner.release(owner, scope, mac)
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    fn held(&self) -> usize {
        self.inner.held()
    }
}

/// Routes over a [`Gated`] allocator, ready or not, answering short or not.
fn gated_state(ready: bool, short: bool) -> (Arc<Gated>, Arc<AppState>) {
    let gated = Arc::new(Gated {
        inner: InMemoryAllocator::new(MacRange::default_range()),
        ready: ready.into(),
        short: short.into(),
        panic: false.into(),
    });
    let policy = Policy::new(PolicyConfig::default(), gated.clone());
    (gated, AppState::new(policy, Arc::new(Metrics::new())))
}

#[tokio::test]
async fn readyz_needs_certificates_a_ready_allocator_and_no_shutdown() {
    let (gated, s) = gated_state(false, false);
    let dir = tempfile::tempdir().unwrap();
    hotnic::certs::write(dir.path(), &generate()).unwrap();
    let store = Arc::new(
        hotnic::webhook::tls::CertStore::open(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
        )
        .unwrap(),
    );
    let readyz = async |certs: Option<Arc<hotnic::webhook::tls::CertStore>>| {
        let resp = hotnic::webhook::admin::router(s.clone(), certs)
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    };
    let (code, text) = readyz(None).await;
    assert_eq!(code, 503);
    assert!(
        text.contains("certificates not loaded") && text.contains("allocator"),
        "{text}"
    );
    let (code, text) = readyz(Some(store.clone())).await;
    assert_eq!((code, text.contains("allocator")), (503, true), "{text}");
    gated.ready.store(true, Ordering::SeqCst);
    assert_eq!(readyz(Some(store.clone())).await.0, 200);
    s.stopping.store(true, Ordering::SeqCst);
    let (code, text) = readyz(Some(store.clone())).await;
    assert_eq!(
        (code, text.contains("shutting down")),
        (503, true),
        "{text}"
    );
    // /livez stays up through all of it.
    let live = hotnic::webhook::admin::router(s.clone(), Some(store))
        .oneshot(Request::get("/livez").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn an_allocator_that_answers_fewer_claims_than_asked_gets_a_denial_not_a_patch() {
    let (gated, s) = gated_state(true, true);
    let review = fixture("001");
    let (status, _, answer) = call(&s, "/mutate", &review).await;
    assert_eq!(status, 200);
    let resp = &answer["response"];
    assert_eq!(resp["allowed"], false, "{answer}");
    assert!(resp.get("patch").is_none(), "{answer}");
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(message.contains("fewer answers"), "{message}");
    // Answered in full, the same review gets its MACs.
    gated.short.store(false, Ordering::SeqCst);
    let (_, _, answer) = call(&s, "/mutate", &review).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_panic_while_answering_is_a_500_counted_and_the_next_review_is_served() {
    let (gated, s) = gated_state(true, false);
    gated.panic.store(true, Ordering::SeqCst);
    let review = fixture("001");
    let (status, _, answer) = call(&s, "/mutate", &review).await;
    assert_eq!(status, 500);
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("failurePolicy"), "{message}");
    let text = s.metrics.encode();
    assert!(
        text.contains(r#"kind="panic",operation="",verdict="error"} 1"#),
        "{text}"
    );
    assert!(text.contains("in_flight_reviews 0"), "{text}");
    // Nothing left half-done: the same review, once claims work, gets its MACs.
    gated.panic.store(false, Ordering::SeqCst);
    let (status, _, answer) = call(&s, "/mutate", &review).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
}

#[tokio::test]
async fn unknown_kinds_share_one_metric_label() {
    let s = state();
    for (i, kind) in ["Zebra", "Yak", "Pod"].iter().enumerate() {
        let mut r = fixture("002");
        r["request"]["uid"] = format!("k{i}").into();
        r["request"]["kind"]["kind"] = (*kind).into();
        let (status, _, answer) = call(&s, "/validate", &r).await;
        assert_eq!(status, 200);
        assert_eq!(answer["response"]["uid"], format!("k{i}"));
    }
    let text = s.metrics.encode();
    assert!(
        text.contains(r#"kind="other",operation="CREATE",verdict="allowed"} 2"#),
        "{text}"
    );
    assert!(!text.contains("Zebra") && !text.contains("Yak"), "{text}");
}
