//! Kubernetes mode: pods of one node from a kube-rs watcher (field selector `spec.nodeName`),
//! NetworkAttachmentDefinitions fetched on demand, status written as resourceVersion-guarded merge
//! patches (retried on conflict), Arktos `status.nicStatuses` through `pods/status`, and Events.

use super::desired::DesiredPod;
use super::engine::{Backend, Engine, Timing};
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler};
use super::standalone::status_annotations;
use crate::dialect::annotations;
use crate::model::{Dialect, NetworkRef};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Error as KubeError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How many times a status write is retried after a conflict.
const CONFLICT_RETRIES: usize = 8;

/// The API server as a [`Backend`].
pub struct KubeBackend {
    client: Client,
    node: String,
    store: Store<DynamicObject>,
    nad: ApiResource,
    nad_cache: NadCache,
}

/// Recent NetworkAttachmentDefinition lookups: when, and the config or why there is none.
type NadCache = Mutex<HashMap<NetworkRef, (Instant, Result<String, String>)>>;

/// How long a NetworkAttachmentDefinition lookup is reused (every pass resolves every pod's
/// networks; this keeps that from becoming a GET per NIC per pass).
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

impl KubeBackend {
    async fn fetch_network_config(&self, net: &NetworkRef) -> Result<String, String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &net.namespace, &self.nad);
        match api.get_opt(&net.name).await {
            Ok(Some(o)) => match o.data.get("spec").and_then(|s| s.get("config")) {
                Some(Value::String(c)) => Ok(c.clone()),
                _ => Err(format!(
                    "NetworkAttachmentDefinition {net} has no spec.config string"
                )),
            },
            Ok(None) => Err(format!("NetworkAttachmentDefinition {net} not found")),
            Err(e) => Err(format!("getting NetworkAttachmentDefinition {net}: {e}")),
        }
    }

    async fn patch_guarded(
        &self,
        d: &DesiredPod,
        first: &Value,
        status_subresource: bool,
        build: impl Fn(&Value) -> Option<Value> + Send + Sync,
    ) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &d.pod.namespace);
        let mut current = first.clone();
        for _ in 0..CONFLICT_RETRIES {
            if meta_str(&current, "uid").is_some_and(|u| u != d.pod.uid) {
                return Ok(()); // replaced by a new pod of the same name: not ours to write
            }
            let Some(mut patch) = build(&current) else {
                return Ok(());
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
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(pod = %d.pod, "status write conflicted; re-reading the pod");
                    match api.get_opt(&d.pod.name).await? {
                        Some(p) => current = serde_json::to_value(p)?,
                        None => return Ok(()),
                    }
                }
                Err(KubeError::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "status write for {}: still conflicting after {CONFLICT_RETRIES} tries",
            d.pod
        )
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
                    tracing::warn!(error = %err, "building event");
                    continue;
                }
            };
            if let Err(err) = api.create(&PostParams::default(), &ev).await {
                tracing::warn!(pod = %pod, reason = e.reason, error = %err, "creating event failed");
            }
        }
    }
}

impl Backend for KubeBackend {
    async fn pods(&self) -> anyhow::Result<(Vec<Value>, bool)> {
        let mut out = Vec::new();
        for p in self.store.state() {
            out.push(serde_json::to_value(p.as_ref())?);
        }
        Ok((out, true))
    }

    async fn network_config(&self, net: &NetworkRef) -> Result<String, String> {
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

    async fn publish(&self, pod: &Value, d: &DesiredPod, rep: &PodReport) -> anyhow::Result<()> {
        let ours =
            !rep.managed.is_empty() || annotations::get(pod, annotations::NIC_STATUS).is_some();
        if !ours {
            return Ok(());
        }
        self.patch_guarded(d, pod, false, |cur| {
            let existing =
                annotations::get(cur, annotations::NETWORK_STATUS).and_then(Value::as_str);
            let ann = status_annotations(d, rep, existing);
            let same = ann.iter().all(|(k, v)| annotations::get(cur, k) == Some(v));
            (!same).then(|| json!({"metadata": {"annotations": ann}}))
        })
        .await?;
        if d.dialect == Some(Dialect::Arktos) {
            let want = serde_json::to_value(&rep.nics)?;
            self.patch_guarded(d, pod, true, |cur| {
                let have = cur.get("status").and_then(|s| s.get("nicStatuses"));
                (have != Some(&want)).then(|| json!({"status": {"nicStatuses": want}}))
            })
            .await?;
        }
        self.events(&d.pod, rep).await;
        Ok(())
    }

    async fn forget(&self, pod: &PodRef, rep: &PodReport) {
        self.events(pod, rep).await;
    }
}

/// Runs Kubernetes mode for `node` until `stop` resolves.
pub async fn run(
    rec: &Reconciler,
    node: &str,
    timing: &Timing,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes client (in-cluster or KUBECONFIG): {e}"))?;
    // Dynamic objects keep fields the typed Pod does not know (Arktos `spec.nics`).
    let pods_resource = ApiResource::erase::<Pod>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &pods_resource);
    let writer = reflector::store::Writer::new(pods_resource.clone());
    let store = writer.as_reader();
    let wake = Arc::new(Notify::new());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
    let w = wake.clone();
    let watch_task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => w.notify_one(),
                Err(e) => tracing::warn!(error = %e, "pod watch error (retrying)"),
            }
        }
    });
    tokio::pin!(stop);
    tokio::select! {
        r = store.wait_until_ready() => r.map_err(|e| anyhow::anyhow!("pod watch: {e}"))?,
        _ = &mut stop => { watch_task.abort(); return Ok(()); }
    }
    tracing::info!(node, "pod watch synced");
    let backend = KubeBackend {
        client,
        node: node.to_string(),
        store,
        nad: nad_resource(),
        nad_cache: Mutex::default(),
    };
    let r = Engine::default()
        .run(rec, &backend, timing, false, Some(wake), stop)
        .await;
    watch_task.abort();
    r
}
