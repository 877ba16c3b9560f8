//! Kubernetes mode: pods of one node from a kube-rs watcher (field selector `spec.nodeName`), each
//! watch event turned into a [`PodEvent`] for that pod only; NetworkAttachmentDefinitions fetched
//! on demand (kept for a few seconds) and watched for changes; status written as
//! resourceVersion-guarded merge patches (retried on conflict), Arktos `status.nicStatuses`
//! through `pods/status`, and Events.

use super::desired::{DesiredPod, NetworkError};
use super::engine::{self, Backend, PodEvent, Timing};
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler};
use super::standalone::status_annotations;
use crate::dialect::annotations;
use crate::model::{Dialect, NetworkRef};
use crate::runtime::Chain;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Error as KubeError};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times a status write is retried after a conflict.
const CONFLICT_RETRIES: usize = 8;

/// A kube-rs error as the cause of one of ours. kube-rs writes an error's source into its message
/// (`ApiError: {0}`, `Failed to infer configuration: {0}`), at most levels but not all (hyper's
/// errors keep theirs apart): this shows kube-rs' message followed by each deeper cause its text
/// does not hold yet, and so has no source of its own. The error itself is kept, typed.
#[derive(Debug)]
pub struct KubeCause(pub Box<KubeError>);

impl From<KubeError> for KubeCause {
    fn from(e: KubeError) -> Self {
        Self(Box::new(e))
    }
}

impl fmt::Display for KubeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        KubeChain(&*self.0).fmt(f)
    }
}

impl std::error::Error for KubeCause {}

/// A kube-rs error (or a kube-runtime one, written the same way) and its causes, each cause shown
/// only when the text before it does not hold it yet (see [`KubeCause`]): for log fields.
pub struct KubeChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for KubeChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&shown)
    }
}

/// Why Kubernetes mode could not start.
#[derive(Debug, thiserror::Error)]
#[error("Kubernetes client (in-cluster or KUBECONFIG)")]
pub struct ClientError(#[source] pub KubeCause);

/// Why a pod's status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatusWriteError {
    /// The API server refused or could not be reached.
    #[error("writing the status of {pod}")]
    Api {
        /// The pod.
        pod: PodRef,
        /// kube-rs' error.
        #[source]
        source: KubeCause,
    },
    /// A status or an object would not convert to or from JSON.
    #[error("status of {pod}: JSON")]
    Json {
        /// The pod.
        pod: PodRef,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// Other writers kept changing the pod.
    #[error("writing the status of {pod}: still conflicting after {tries} tries")]
    Conflicts {
        /// The pod.
        pod: PodRef,
        /// How many writes were tried.
        tries: usize,
    },
}

/// The API server as a [`Backend`].
pub struct KubeBackend {
    client: Client,
    node: String,
    nad: ApiResource,
    nad_cache: NadCache,
}

/// Recent NetworkAttachmentDefinition lookups: when, and the config or why there is none.
type NadCache = Mutex<HashMap<NetworkRef, (Instant, Result<String, NetworkError>)>>;

/// How long a NetworkAttachmentDefinition lookup is reused (every run of a pod resolves its
/// networks to hash them; this keeps a burst of events from becoming a GET per NIC per event).
const NAD_TTL: Duration = Duration::from_secs(5);

/// The NetworkAttachmentDefinition resource.
pub fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
}

fn is_conflict(e: &KubeError) -> bool {
    matches!(e, KubeError::Api(s) if s.code == 409)
}

/// One watch event as pod events: the object it is about, converted alone. `listing` collects the
/// pods of a (re)list between `Init` and `InitDone`, which becomes [`PodEvent::Synced`].
fn pod_events(
    ev: watcher::Event<DynamicObject>,
    listing: &mut Option<HashSet<String>>,
) -> Option<PodEvent> {
    let value = |o: DynamicObject| match serde_json::to_value(o) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "pod from the watch is not JSON; skipped");
            None
        }
    };
    match ev {
        watcher::Event::Init => {
            *listing = Some(HashSet::new());
            None
        }
        watcher::Event::InitApply(o) => {
            // Listed even if it does not convert: a listed pod is never taken for deleted. The
            // key is `desired::pod_ref`'s (the uid; `{namespace}_{name}` without one).
            let m = &o.metadata;
            let key = match (&m.uid, &m.name) {
                (Some(uid), _) if !uid.is_empty() => Some(uid.clone()),
                (_, Some(name)) => Some(format!(
                    "{}_{name}",
                    m.namespace.as_deref().unwrap_or("default")
                )),
                _ => None,
            };
            listing.get_or_insert_default().extend(key);
            value(o).map(PodEvent::Applied)
        }
        watcher::Event::InitDone => Some(PodEvent::Synced {
            uids: listing.take().unwrap_or_default(),
            complete: true,
        }),
        watcher::Event::Apply(o) => value(o).map(PodEvent::Applied),
        watcher::Event::Delete(o) => value(o).map(PodEvent::Deleted),
    }
}

impl KubeBackend {
    /// A backend for the pods of `node`.
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_string(),
            nad: nad_resource(),
            nad_cache: Mutex::default(),
        }
    }

    async fn fetch_network_config(&self, net: &NetworkRef) -> Result<String, NetworkError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &net.namespace, &self.nad);
        match api.get_opt(&net.name).await {
            Ok(Some(o)) => match o.data.get("spec").and_then(|s| s.get("config")) {
                Some(Value::String(c)) => Ok(c.clone()),
                None | Some(Value::Null) => Err(NetworkError::NoConfig(net.clone())),
                Some(other) => Err(NetworkError::ConfigNotAString {
                    net: net.clone(),
                    value: other.to_string(),
                }),
            },
            Ok(None) => Err(NetworkError::NotFound(net.clone())),
            Err(e) => Err(NetworkError::Lookup {
                net: net.clone(),
                source: Arc::new(KubeCause::from(e)),
            }),
        }
    }

    /// Writes what `build` makes of the pod as last seen (`first`, then re-read after each
    /// conflict) as a merge patch guarded by that object's resourceVersion. Returns the pod as the
    /// API server has it after the write, or `None` when nothing needed writing (or the pod is
    /// gone or was replaced).
    async fn patch_guarded(
        &self,
        d: &DesiredPod,
        first: &Value,
        status_subresource: bool,
        build: impl Fn(&Value) -> Option<Value> + Send + Sync,
    ) -> Result<Option<Value>, StatusWriteError> {
        // Dynamic objects: what comes back keeps every field (Arktos `status.nicStatuses`).
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &d.pod.namespace,
            &ApiResource::erase::<Pod>(&()),
        );
        let api_err = |source: KubeError| StatusWriteError::Api {
            pod: d.pod.clone(),
            source: source.into(),
        };
        let json = |o: DynamicObject| {
            serde_json::to_value(o).map_err(|source| StatusWriteError::Json {
                pod: d.pod.clone(),
                source,
            })
        };
        let mut current = first.clone();
        for _ in 0..CONFLICT_RETRIES {
            if meta_str(&current, "uid").is_some_and(|u| u != d.pod.uid) {
                return Ok(None); // replaced by a new pod of the same name: not ours to write
            }
            let Some(mut patch) = build(&current) else {
                return Ok(None);
            };
            let rv = meta_str(&current, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            patch["metadata"]["resourceVersion"] = json!(rv);
            let pp = PatchParams::default();
            let r = if status_subresource {
                api.patch_status(&d.pod.name, &pp, &Patch::Merge(&patch))
                    .await
            } else {
                api.patch(&d.pod.name, &pp, &Patch::Merge(&patch)).await
            };
            match r {
                Ok(after) => return json(after).map(Some),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(pod = %d.pod, "status write conflicted; re-reading the pod");
                    match api.get_opt(&d.pod.name).await.map_err(api_err)? {
                        Some(p) => current = json(p)?,
                        None => return Ok(None),
                    }
                }
                Err(KubeError::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(api_err(e)),
            }
        }
        Err(StatusWriteError::Conflicts {
            pod: d.pod.clone(),
            tries: CONFLICT_RETRIES,
        })
    }

    async fn events(&self, pod: &PodRef, rep: &PodReport) {
        if pod.name.is_empty() {
            return;
        }
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &pod.namespace);
        for e in &rep.events {
            let now = k8s_openapi::jiff::Timestamp::now();
            let ev = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": format!("{}.", pod.name), "namespace": pod.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                                   "name": pod.name, "uid": pod.uid,
                                   "fieldPath": format!("interface({})", e.ifname)},
                "reason": e.reason,
                "message": e.message,
                "type": if e.warning { "Warning" } else { "Normal" },
                "source": {"component": "hotnic-agent", "host": self.node},
                "reportingComponent": "hotnic-agent",
                "reportingInstance": self.node,
                "firstTimestamp": now.to_string(),
                "lastTimestamp": now.to_string(),
                "count": 1,
            });
            let ev = match serde_json::from_value(ev) {
                Ok(ev) => ev,
                Err(err) => {
                    tracing::warn!(error = %Chain(&err), "building event");
                    continue;
                }
            };
            if let Err(err) = api.create(&PostParams::default(), &ev).await {
                tracing::warn!(pod = %pod, reason = e.reason, error = %KubeChain(&err), "creating event failed");
            }
        }
    }
}

impl Backend for KubeBackend {
    type Error = StatusWriteError;

    fn events(&self) -> impl Stream<Item = PodEvent> + Send + '_ {
        // Dynamic objects keep fields the typed Pod does not know (Arktos `spec.nics`).
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &ApiResource::erase::<Pod>(&()));
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let mut listing = None;
        let pods = watcher(api, cfg).default_backoff().filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => pod_events(ev, &mut listing),
                Err(e) => {
                    tracing::warn!(error = %KubeChain(&e), "pod watch error (retrying)");
                    None
                }
            };
            std::future::ready(out)
        });
        // NetworkAttachmentDefinitions are only watched for changes (lookups stay GETs): a changed
        // one is dropped from the lookup cache and its pods are looked at again, so a pod waiting
        // to retry a NIC on a missing or broken network is plugged as soon as it is fixed.
        let nads: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.nad);
        let mut first_listing = true;
        let nads = watcher(nads, watcher::Config::default())
            .default_backoff()
            .filter_map(move |ev| {
                let changed = match ev {
                    Ok(watcher::Event::InitDone) => {
                        first_listing = false;
                        None
                    }
                    // At start nothing has been looked up yet; after a relist, anything may have
                    // changed meanwhile.
                    Ok(watcher::Event::InitApply(o)) if !first_listing => Some(o),
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => Some(o),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(error = %KubeChain(&e), "NetworkAttachmentDefinition watch error (retrying)");
                        None
                    }
                };
                let net = changed.and_then(|o| {
                    Some(NetworkRef {
                        namespace: o.metadata.namespace?,
                        name: o.metadata.name?,
                    })
                });
                if let Some(net) = &net {
                    self.nad_cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(net);
                }
                std::future::ready(net.map(PodEvent::NetworkChanged))
            });
        futures::stream::select(pods, nads)
    }

    async fn network_config(&self, net: &NetworkRef) -> Result<String, NetworkError> {
        if let Some((at, r)) = self
            .nad_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(net)
            && at.elapsed() < NAD_TTL
        {
            return r.clone();
        }
        let r = self.fetch_network_config(net).await;
        self.nad_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net.clone(), (Instant::now(), r.clone()));
        r
    }

    async fn publish(
        &self,
        pod: &Value,
        d: &DesiredPod,
        rep: &PodReport,
    ) -> Result<Option<Value>, StatusWriteError> {
        let ours =
            !rep.managed.is_empty() || annotations::get(pod, annotations::NIC_STATUS).is_some();
        if !ours {
            return Ok(None);
        }
        let mut latest = self
            .patch_guarded(d, pod, false, |cur| {
                let existing =
                    annotations::get(cur, annotations::NETWORK_STATUS).and_then(Value::as_str);
                let ann = status_annotations(d, rep, existing);
                let same = ann.iter().all(|(k, v)| annotations::get(cur, k) == Some(v));
                (!same).then(|| json!({"metadata": {"annotations": ann}}))
            })
            .await?;
        if d.dialect == Some(Dialect::Arktos) {
            let want =
                serde_json::to_value(&rep.nics).map_err(|source| StatusWriteError::Json {
                    pod: d.pod.clone(),
                    source,
                })?;
            // From the object the first write left, so its resourceVersion is current.
            let cur = latest.as_ref().unwrap_or(pod);
            let after = self
                .patch_guarded(d, cur, true, |cur| {
                    let have = cur.get("status").and_then(|s| s.get("nicStatuses"));
                    (have != Some(&want)).then(|| json!({"status": {"nicStatuses": want}}))
                })
                .await?;
            latest = after.or(latest);
        }
        self.events(&d.pod, rep).await;
        Ok(latest)
    }

    async fn forget(&self, pod: &PodRef, rep: &PodReport) {
        self.events(pod, rep).await;
    }
}

/// Runs Kubernetes mode for `node` until `stop` resolves (API server from in-cluster config or
/// `KUBECONFIG`).
pub async fn run(
    rec: &Reconciler,
    node: &str,
    timing: &Timing,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ClientError> {
    let client = Client::try_default()
        .await
        .map_err(|e| ClientError(e.into()))?;
    run_with_client(rec, client, node, timing, stop).await;
    Ok(())
}

/// Runs Kubernetes mode for `node` with `client` until `stop` resolves.
pub async fn run_with_client(
    rec: &Reconciler,
    client: Client,
    node: &str,
    timing: &Timing,
    stop: impl std::future::Future<Output = ()>,
) {
    tracing::info!(node, "watching the node's pods");
    engine::run(rec, &KubeBackend::new(client, node), timing, stop).await;
}
