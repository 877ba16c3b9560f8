//! Shared test helpers: fixtures, building requests, applying patches.
#![allow(dead_code)]

pub mod objects;

use hotnic::allocator::{InMemoryAllocator, MacRange};
use hotnic::policy::{Operation, Outcome, Policy, PolicyConfig, Request};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// The captured API-server reviews.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/apiserver-v1.32"
    ))
}

/// Every fixture: (file name, AdmissionReview).
pub fn fixtures() -> Vec<(String, Value)> {
    let mut out: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures in tests/fixtures/apiserver-v1.32")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 18,
        "expected the 18 fixtures in tests/fixtures/apiserver-v1.32, found {}",
        out.len()
    );
    out
}

/// One fixture by file-name prefix (e.g. "017").
pub fn fixture(prefix: &str) -> Value {
    fixtures()
        .into_iter()
        .find(|(n, _)| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"))
        .1
}

/// A policy with a deterministic in-memory allocator.
pub fn policy() -> Policy {
    Policy::new(
        PolicyConfig::default(),
        Arc::new(InMemoryAllocator::with_cursor(MacRange::default_range(), 0)),
    )
}

/// An owned admission request (what the policy's `Request` borrows from).
#[derive(Clone, Debug)]
pub struct Req {
    pub operation: Operation,
    pub dry_run: bool,
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: Option<String>,
    pub object: Value,
    pub old: Option<Value>,
}

impl Req {
    pub fn create(object: Value) -> Self {
        Self::new(Operation::Create, object, None)
    }

    pub fn update(old: Value, object: Value) -> Self {
        Self::new(Operation::Update, object, Some(old))
    }

    pub fn new(operation: Operation, object: Value, old: Option<Value>) -> Self {
        let (group, _) = object["apiVersion"]
            .as_str()
            .unwrap_or("v1")
            .rsplit_once('/')
            .unwrap_or(("", "v1"));
        Req {
            operation,
            dry_run: false,
            group: group.to_string(),
            kind: object["kind"].as_str().unwrap_or("Pod").to_string(),
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("demo")
                .to_string(),
            name: object["metadata"]["name"].as_str().map(str::to_string),
            object,
            old,
        }
    }

    /// From an AdmissionReview as the API server sends it.
    pub fn from_review(review: &Value) -> Self {
        let r = &review["request"];
        Req {
            operation: Operation::parse(r["operation"].as_str().unwrap()).unwrap(),
            dry_run: r["dryRun"].as_bool().unwrap_or(false),
            group: r["kind"]["group"].as_str().unwrap().to_string(),
            kind: r["kind"]["kind"].as_str().unwrap().to_string(),
            namespace: r["namespace"].as_str().unwrap_or("").to_string(),
            name: r["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            object: r["object"].clone(),
            old: r.get("oldObject").filter(|o| !o.is_null()).cloned(),
        }
    }

    pub fn as_request(&self) -> Request<'_> {
        Request {
            operation: self.operation,
            dry_run: self.dry_run,
            group: &self.group,
            kind: &self.kind,
            namespace: &self.namespace,
            name: self.name.as_deref(),
            object: &self.object,
            old_object: self.old.as_ref(),
        }
    }

    pub fn dry(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// Applies an allowed outcome's patch to the request's object.
pub fn apply(req: &Req, out: &Outcome) -> Value {
    let patch = out
        .patch()
        .unwrap_or_else(|| panic!("expected allowed, got {out:?}"));
    let mut obj = req.object.clone();
    json_patch::patch(&mut obj, &patch.0)
        .unwrap_or_else(|e| panic!("patch {patch} does not apply: {e}"));
    obj
}

/// Mutates, applies the patch, checks that mutating the result again yields an empty patch and
/// that validation allows it; returns the mutated object.
pub fn admit(p: &Policy, req: &Req) -> Value {
    let m = p.mutate(&req.as_request());
    let obj = apply(req, &m);
    let again = Req {
        object: obj.clone(),
        ..req.clone()
    };
    let m2 = p.mutate(&again.as_request());
    assert_eq!(
        m2.patch().map(|p| p.0.len()),
        Some(0),
        "not idempotent: {m2:?}"
    );
    let v = p.validate(&again.as_request());
    assert!(v.is_allowed(), "mutated object denied: {v:?}");
    assert_eq!(
        v.patch().map(|p| p.0.len()),
        Some(0),
        "validate returned a patch"
    );
    obj
}

/// Runs mutate then validate, returning the denial's `field: message` lines (empty when allowed).
pub fn denials(p: &Policy, req: &Req) -> Vec<String> {
    let m = p.mutate(&req.as_request());
    if let Some(d) = m.denial() {
        return d.causes.iter().map(|c| c.to_string()).collect();
    }
    let obj = apply(req, &m);
    let again = Req {
        object: obj,
        ..req.clone()
    };
    match p.validate(&again.as_request()).denial() {
        Some(d) => d.causes.iter().map(|c| c.to_string()).collect(),
        None => Vec::new(),
    }
}
