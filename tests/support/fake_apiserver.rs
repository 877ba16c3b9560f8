//! A small API server speaking the Kubernetes wire protocol over plain HTTP, enough for the agent:
//! list/watch pods (field selector `spec.nodeName`), get/patch pods and pods/status (JSON merge
//! patch, resourceVersion-guarded, 409 Conflict `Status` on mismatch), get/list/watch
//! NetworkAttachmentDefinitions, create Events. Tests drive it directly (add/modify/delete pods)
//! and can inject conflicts.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

pub use crate::kube_cluster::fake::kubeconfig;
use crate::kube_cluster::fake::{serve, status};

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<(String, String), Value>,
    nads: BTreeMap<(String, String), Value>,
    events: Vec<Value>,
    log: Vec<(u64, String, Value)>,
    patches: Vec<(String, Value)>,
    accepted: Vec<(String, Value)>,
    conflicts_to_inject: usize,
    conflicts_served: usize,
}

/// Shared state of the fake.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<(u64, String, Value)>,
}

const NAD_KIND: &str = "NetworkAttachmentDefinition";

fn is_nad(o: &Value) -> bool {
    o["kind"] == NAD_KIND
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn parse_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn selector_node(q: &HashMap<String, String>) -> Option<String> {
    q.get("fieldSelector")
        .and_then(|s| s.strip_prefix("spec.nodeName=").map(str::to_string))
}

impl Fake {
    /// A fake with no objects.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            inner: Arc::default(),
            tx,
        }
    }

    fn bump(&self, inner: &mut Inner, kind: &str, obj: &mut Value) {
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.log.push((inner.rv, kind.to_string(), obj.clone()));
        let _ = self.tx.send((inner.rv, kind.to_string(), obj.clone()));
    }

    /// Creates or replaces a pod (ADDED / MODIFIED).
    pub fn put_pod(&self, mut pod: Value) {
        let mut inner = self.inner.lock().unwrap();
        let key = (
            pod["metadata"]["namespace"].as_str().unwrap().to_string(),
            pod["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let kind = if inner.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if let Some(old) = inner.pods.get(&key) {
            // Keep what the agent wrote (annotations it owns) like a real update would not; tests
            // pass whole objects, so carry over the current annotations they did not set.
            let old_ann = old["metadata"]["annotations"].clone();
            if let (Some(new), Some(old)) = (
                pod["metadata"]["annotations"].as_object_mut(),
                old_ann.as_object(),
            ) {
                for (k, v) in old {
                    if k.starts_with("hotnic.io/nic-status")
                        || k == "k8s.v1.cni.cncf.io/network-status"
                    {
                        new.entry(k.clone()).or_insert(v.clone());
                    }
                }
            }
        }
        self.bump(&mut inner, kind, &mut pod);
        inner.pods.insert(key, pod);
    }

    /// Deletes a pod (DELETED).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(mut p) = inner.pods.remove(&(ns.into(), name.into())) {
            self.bump(&mut inner, "DELETED", &mut p);
        }
    }

    /// Creates or replaces a NetworkAttachmentDefinition (ADDED / MODIFIED on its watch).
    pub fn put_nad(&self, mut nad: Value) {
        let mut inner = self.inner.lock().unwrap();
        let key = (
            nad["metadata"]["namespace"].as_str().unwrap().to_string(),
            nad["metadata"]["name"].as_str().unwrap().to_string(),
        );
        nad["kind"] = json!(NAD_KIND);
        let kind = if inner.nads.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.bump(&mut inner, kind, &mut nad);
        inner.nads.insert(key, nad);
    }

    /// The stored pod.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .pods
            .get(&(ns.into(), name.into()))
            .cloned()
    }

    /// Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().unwrap().events.clone()
    }

    /// Patches received (path, body), conflicting ones included.
    pub fn patches(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().patches.clone()
    }

    /// Patches applied (path, body): those received, less the ones answered with an error.
    pub fn accepted_patches(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// Makes the next `n` pod patches fail with 409 after another writer's change.
    pub fn inject_conflicts(&self, n: usize) {
        self.inner.lock().unwrap().conflicts_to_inject = n;
    }

    /// 409s served so far.
    pub fn conflicts_served(&self) -> usize {
        self.inner.lock().unwrap().conflicts_served
    }

    /// Serves on 127.0.0.1 (random port); returns the base URL.
    pub async fn serve(&self) -> String {
        let app = Router::new()
            .route("/api/v1/pods", get(list_or_watch))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).patch(patch_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/status",
                get(get_pod).patch(patch_pod_status),
            )
            .route(
                "/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}",
                get(get_nad),
            )
            .route(
                "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
                get(list_or_watch_nads),
            )
            .route(
                "/api/v1/namespaces/{ns}/events",
                axum::routing::post(create_event),
            )
            .fallback(|uri: axum::http::Uri| async move {
                status(
                    404,
                    "NotFound",
                    format!("fake apiserver: no route for {uri}"),
                )
            })
            .with_state(self.clone());
        serve(app).await
    }
}

async fn list_or_watch(State(f): State<Fake>, RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref().unwrap_or(""));
    let node = selector_node(&q);
    let matches = move |p: &Value| !is_nad(p) && node.as_deref().is_none_or(|n| node_of(p) == n);
    list_or_watch_matching(
        f,
        q,
        matches,
        |inner| inner.pods.values().cloned().collect(),
        "PodList",
    )
}

async fn list_or_watch_nads(State(f): State<Fake>, RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref().unwrap_or(""));
    list_or_watch_matching(
        f,
        q,
        is_nad,
        |inner| inner.nads.values().cloned().collect(),
        "NetworkAttachmentDefinitionList",
    )
}

fn list_or_watch_matching(
    f: Fake,
    q: HashMap<String, String>,
    matches: impl Fn(&Value) -> bool + Send + 'static,
    all: impl Fn(&Inner) -> Vec<Value>,
    list_kind: &str,
) -> Response {
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the backlog: nothing falls between the two.
        let rx = f.tx.subscribe();
        let backlog: Vec<_> = f
            .inner
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(rv, _, _)| *rv > since)
            .cloned()
            .collect();
        let last = backlog.last().map(|e| e.0).unwrap_or(since);
        let stream = watch_stream(backlog, last, matches, rx);
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let inner = f.inner.lock().unwrap();
    let items: Vec<Value> = all(&inner).into_iter().filter(|p| matches(p)).collect();
    axum::Json(json!({"apiVersion": "v1", "kind": list_kind,
        "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}))
    .into_response()
}

fn watch_stream(
    backlog: Vec<(u64, String, Value)>,
    mut last: u64,
    matches: impl Fn(&Value) -> bool + Send + 'static,
    mut rx: broadcast::Receiver<(u64, String, Value)>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |kind: &str, obj: &Value| {
            Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})))
        };
        for (_, kind, obj) in backlog {
            if matches(&obj) && tx.send(Ok(line(&kind, &obj))).await.is_err() {
                return;
            }
        }
        while let Ok((rv, kind, obj)) = rx.recv().await {
            if rv <= last {
                continue;
            }
            last = rv;
            if matches(&obj) && tx.send(Ok(line(&kind, &obj))).await.is_err() {
                return;
            }
        }
    });
    let mut out = out;
    futures::stream::poll_fn(move |cx| out.poll_recv(cx))
}

async fn get_pod(State(f): State<Fake>, Path((ns, name)): Path<(String, String)>) -> Response {
    match f.pod(&ns, &name) {
        Some(p) => axum::Json(p).into_response(),
        None => status(404, "NotFound", format!("pods \"{name}\" not found")),
    }
}

fn patch(
    f: &Fake,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    path: String,
) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/merge-patch+json" {
        return status(
            415,
            "UnsupportedMediaType",
            format!("fake apiserver only takes merge patches, got {ct:?}"),
        );
    }
    let Ok(mut p) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "patch is not JSON".into());
    };
    let mut inner = f.inner.lock().unwrap();
    inner.patches.push((path.clone(), p.clone()));
    let key = (ns.to_string(), name.to_string());
    let Some(mut cur) = inner.pods.get(&key).cloned() else {
        return status(404, "NotFound", format!("pods \"{name}\" not found"));
    };
    if inner.conflicts_to_inject > 0 {
        // Another writer got there first.
        inner.conflicts_to_inject -= 1;
        inner.conflicts_served += 1;
        cur["metadata"]["labels"]["other-writer"] = json!(inner.rv.to_string());
        f.bump(&mut inner, "MODIFIED", &mut cur);
        inner.pods.insert(key, cur);
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    if let Some(rv) = p["metadata"]["resourceVersion"].as_str() {
        if rv != cur["metadata"]["resourceVersion"].as_str().unwrap_or("") {
            inner.conflicts_served += 1;
            return status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods \"{name}\": the object has been modified"
                ),
            );
        }
        p["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
    }
    inner.accepted.push((path, p.clone()));
    json_patch::merge(&mut cur, &p);
    f.bump(&mut inner, "MODIFIED", &mut cur);
    inner.pods.insert(key, cur.clone());
    axum::Json(cur).into_response()
}

async fn patch_pod(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("pods/{ns}/{name}");
    patch(&f, &ns, &name, &h, &body, path)
}

async fn patch_pod_status(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("pods/{ns}/{name}/status");
    patch(&f, &ns, &name, &h, &body, path)
}

async fn get_nad(State(f): State<Fake>, Path((ns, name)): Path<(String, String)>) -> Response {
    match f
        .inner
        .lock()
        .unwrap()
        .nads
        .get(&(ns, name.clone()))
        .cloned()
    {
        Some(n) => axum::Json(n).into_response(),
        None => status(
            404,
            "NotFound",
            format!("network-attachment-definitions.k8s.cni.cncf.io \"{name}\" not found"),
        ),
    }
}

async fn create_event(State(f): State<Fake>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut ev) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "event is not JSON".into());
    };
    let mut inner = f.inner.lock().unwrap();
    let n = inner.events.len();
    let prefix = ev["metadata"]["generateName"]
        .as_str()
        .unwrap_or("ev.")
        .to_string();
    ev["metadata"]["name"] = json!(format!("{prefix}{n}"));
    ev["metadata"]["namespace"] = json!(ns);
    inner.events.push(ev.clone());
    (StatusCode::CREATED, axum::Json(ev)).into_response()
}
