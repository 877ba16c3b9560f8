//! An in-test API server for `MACAddress` claims, for when no kube-apiserver binary is at hand:
//! create (409 `AlreadyExists` when the name is taken), get, list, watch (from a
//! resourceVersion), delete (uid and resourceVersion preconditions) and patch (JSON merge patch
//! with a resourceVersion precondition, JSON Patch with `test`), plus a pod list for the repair
//! pass (the test stores the pods "admitted"); KubeVirt kinds are not served (404). Plain HTTP,
//! no auth, 127.0.0.1.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

pub use crate::kube_cluster::fake::kubeconfig;
use crate::kube_cluster::fake::{serve, status};

#[derive(Default)]
struct Inner {
    rv: u64,
    uid: u64,
    claims: BTreeMap<String, Value>,
    log: Vec<(u64, &'static str, Value)>,
    pods: BTreeMap<(String, String), Value>,
    creates: u64,
    conflicts: u64,
}

/// The fake's state. Clones share it.
#[derive(Clone)]
pub struct FakeClaims {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<(u64, &'static str, Value)>,
}

fn query(raw: &Option<String>, key: &str) -> Option<String> {
    raw.as_deref()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

const PREFIX: &str = "/apis/hotnic.io/v1alpha1/macaddresses";

impl FakeClaims {
    /// Empty.
    pub fn new() -> Self {
        FakeClaims {
            inner: Arc::default(),
            tx: broadcast::channel(65_536).0,
        }
    }

    fn record(&self, inner: &mut Inner, kind: &'static str, obj: &mut Value) {
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.log.push((inner.rv, kind, obj.clone()));
        let _ = self.tx.send((inner.rv, kind, obj.clone()));
    }

    /// Every claim.
    pub fn claims(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .claims
            .values()
            .cloned()
            .collect()
    }

    /// Stores a claim as a create does, but tells no watch: what another replica's create looks
    /// like to a replica whose watch is behind.
    pub fn put_claim_unwatched(&self, mut claim: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.uid += 1;
        inner.rv += 1;
        claim["metadata"]["uid"] = json!(format!("claim-uid-{}", inner.uid));
        claim["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        claim["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let name = claim["metadata"]["name"].as_str().unwrap().to_string();
        inner.claims.insert(name, claim);
    }

    /// (creates answered 201, creates answered 409).
    pub fn creates(&self) -> (u64, u64) {
        let i = self.inner.lock().unwrap();
        (i.creates, i.conflicts)
    }

    /// Stores a pod (what the API server does with an admitted create).
    pub fn put_pod(&self, mut pod: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.uid += 1;
        pod["metadata"]["uid"] = json!(format!("pod-uid-{}", inner.uid));
        pod["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let key = (
            pod["metadata"]["namespace"].as_str().unwrap().to_string(),
            pod["metadata"]["name"].as_str().unwrap().to_string(),
        );
        inner.pods.insert(key, pod);
    }

    /// The stored pods.
    pub fn pods(&self) -> Vec<Value> {
        self.inner.lock().unwrap().pods.values().cloned().collect()
    }

    /// Deletes every pod.
    pub fn delete_pods(&self) {
        self.inner.lock().unwrap().pods.clear();
    }

    /// Serves on 127.0.0.1; returns the base URL.
    pub async fn serve(&self) -> String {
        let app = Router::new()
            .route(PREFIX, get(list_or_watch).post(create))
            .route(
                &format!("{PREFIX}/{{name}}"),
                get(get_one).delete(delete).patch(patch),
            )
            .route("/api/v1/pods", get(list_pods))
            .fallback(|uri: axum::http::Uri| async move {
                status(404, "NotFound", format!("the server could not find {uri}"))
            })
            .with_state(self.clone());
        serve(app).await
    }
}

async fn list_or_watch(State(f): State<FakeClaims>, RawQuery(raw): RawQuery) -> Response {
    if query(&raw, "watch").is_some_and(|w| w == "true" || w == "1") {
        let since: u64 = query(&raw, "resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut rx = f.tx.subscribe();
        let backlog: Vec<_> = f
            .inner
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(rv, _, _)| *rv > since)
            .cloned()
            .collect();
        let mut last = backlog.last().map_or(since, |e| e.0);
        let (tx, mut out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
        tokio::spawn(async move {
            let line = |kind: &str, obj: &Value| {
                Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})))
            };
            for (_, kind, obj) in backlog {
                if tx.send(Ok(line(kind, &obj))).await.is_err() {
                    return;
                }
            }
            while let Ok((rv, kind, obj)) = rx.recv().await {
                if rv <= last {
                    continue;
                }
                last = rv;
                if tx.send(Ok(line(kind, &obj))).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| out.poll_recv(cx));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let inner = f.inner.lock().unwrap();
    let items: Vec<Value> = inner.claims.values().cloned().collect();
    axum::Json(
        json!({"apiVersion": "hotnic.io/v1alpha1", "kind": "MACAddressList",
        "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    )
    .into_response()
}

async fn list_pods(State(f): State<FakeClaims>) -> Response {
    let inner = f.inner.lock().unwrap();
    let items: Vec<Value> = inner.pods.values().cloned().collect();
    axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}))
    .into_response()
}

async fn create(State(f): State<FakeClaims>, body: Bytes) -> Response {
    let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "not JSON".into());
    };
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status(422, "Invalid", "metadata.name: Required value".into());
    };
    let mut inner = f.inner.lock().unwrap();
    if inner.claims.contains_key(&name) {
        inner.conflicts += 1;
        return status(
            409,
            "AlreadyExists",
            format!("macaddresses.hotnic.io \"{name}\" already exists"),
        );
    }
    inner.uid += 1;
    inner.creates += 1;
    obj["metadata"]["uid"] = json!(format!("claim-uid-{}", inner.uid));
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    f.record(&mut inner, "ADDED", &mut obj);
    inner.claims.insert(name, obj.clone());
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

fn not_found(name: &str) -> Response {
    status(
        404,
        "NotFound",
        format!("macaddresses.hotnic.io \"{name}\" not found"),
    )
}

async fn get_one(State(f): State<FakeClaims>, Path(name): Path<String>) -> Response {
    match f.inner.lock().unwrap().claims.get(&name) {
        Some(c) => axum::Json(c.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn delete(State(f): State<FakeClaims>, Path(name): Path<String>, body: Bytes) -> Response {
    let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = f.inner.lock().unwrap();
    let Some(cur) = inner.claims.get(&name).cloned() else {
        return not_found(&name);
    };
    let pre = &opts["preconditions"];
    for (k, field) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(want) = pre[k].as_str()
            && cur["metadata"][field].as_str() != Some(want)
        {
            return status(409, "Conflict", format!("Precondition failed: {k}: {want}"));
        }
    }
    let mut gone = inner.claims.remove(&name).unwrap();
    f.record(&mut inner, "DELETED", &mut gone);
    axum::Json(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})).into_response()
}

async fn patch(
    State(f): State<FakeClaims>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(p) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "patch is not JSON".into());
    };
    let mut inner = f.inner.lock().unwrap();
    let Some(mut cur) = inner.claims.get(&name).cloned() else {
        return not_found(&name);
    };
    match ct.as_str() {
        "application/merge-patch+json" => {
            let mut p = p;
            if let Some(rv) = p["metadata"]["resourceVersion"].as_str() {
                if Some(rv) != cur["metadata"]["resourceVersion"].as_str() {
                    return status(409, "Conflict", "the object has been modified".into());
                }
                p["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("resourceVersion");
            }
            json_patch::merge(&mut cur, &p);
        }
        "application/json-patch+json" => {
            let Ok(ops) = serde_json::from_value::<json_patch::Patch>(p) else {
                return status(400, "BadRequest", "not a JSON Patch".into());
            };
            if let Err(e) = json_patch::patch(&mut cur, &ops) {
                return status(
                    422,
                    "Invalid",
                    format!("the JSON Patch does not apply: {e}"),
                );
            }
        }
        other => {
            return status(415, "UnsupportedMediaType", format!("{other:?}"));
        }
    }
    f.record(&mut inner, "MODIFIED", &mut cur);
    inner.claims.insert(name, cur.clone());
    axum::Json(cur).into_response()
}
