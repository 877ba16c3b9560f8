//! Standalone mode: pods and networks from manifest files in a directory, status into
//! `DIR/status/{namespace}_{name}.json`, re-read by polling.

use super::desired::DesiredPod;
use super::engine::{Backend, Engine, Timing};
use super::manifests::{self, Scan};
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler, nic_status_json};
use super::status::merge_network_status;
use crate::dialect::annotations;
use crate::model::{Dialect, NetworkRef};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The manifests directory as a [`Backend`].
pub struct DirBackend {
    dir: PathBuf,
    status_dir: PathBuf,
    scan: Mutex<Scan>,
    warned: Mutex<BTreeMap<PathBuf, String>>,
    written: Mutex<HashMap<String, Value>>,
}

impl DirBackend {
    /// A backend over `dir` (creates `dir/status`).
    pub async fn new(dir: PathBuf) -> anyhow::Result<Self> {
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            anyhow::bail!("pods dir {} is not a directory", dir.display());
        }
        let status_dir = dir.join("status");
        tokio::fs::create_dir_all(&status_dir)
            .await
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", status_dir.display()))?;
        Ok(Self {
            dir,
            status_dir,
            scan: Mutex::default(),
            warned: Mutex::default(),
            written: Mutex::default(),
        })
    }
}

impl Backend for DirBackend {
    async fn pods(&self) -> anyhow::Result<(Vec<Value>, bool)> {
        let scan = manifests::scan(&self.dir).await?;
        let bad: BTreeMap<PathBuf, String> = scan.bad_files.iter().cloned().collect();
        {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            for (f, e) in &bad {
                if warned.get(f) != Some(e) {
                    tracing::warn!(file = %f.display(), error = %e, "unreadable manifest (pod deletions wait until it is fixed)");
                }
            }
            *warned = bad;
        }
        let complete = scan.bad_files.is_empty();
        let pods = scan.pods.clone();
        *self.scan.lock().unwrap_or_else(|p| p.into_inner()) = scan;
        Ok((pods, complete))
    }

    async fn network_config(&self, net: &NetworkRef) -> Result<String, String> {
        self.scan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .config(net)
    }

    async fn publish(&self, pod: &Value, d: &DesiredPod, rep: &PodReport) -> anyhow::Result<()> {
        let doc = status_document(pod, d, rep);
        let unchanged = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&d.pod.uid)
            == Some(&doc);
        if !unchanged {
            write_status(&self.status_dir, &d.pod, &doc).await?;
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(d.pod.uid.clone(), doc);
        }
        Ok(())
    }

    async fn forget(&self, pod: &PodRef, _rep: &PodReport) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pod.uid);
        if !pod.name.is_empty() {
            let _ = tokio::fs::remove_file(status_path(&self.status_dir, pod)).await;
        }
    }
}

/// Runs standalone mode until `stop` resolves.
pub async fn run(
    rec: &Reconciler,
    dir: PathBuf,
    timing: &Timing,
    once: bool,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let backend = DirBackend::new(dir).await?;
    Engine::default()
        .run(rec, &backend, timing, once, None, stop)
        .await
}

/// The annotations hotnic writes on a pod: `hotnic.io/nic-status` and, for Multus pods, the
/// merged `network-status` (`existing` = the pod's current value).
pub fn status_annotations(
    d: &DesiredPod,
    rep: &PodReport,
    existing_network_status: Option<&str>,
) -> serde_json::Map<String, Value> {
    let mut ann = serde_json::Map::new();
    ann.insert(
        annotations::NIC_STATUS.into(),
        Value::String(nic_status_json(rep).to_string()),
    );
    if d.dialect == Some(Dialect::Multus) {
        let merged =
            merge_network_status(existing_network_status, &rep.managed, &rep.network_status);
        ann.insert(
            annotations::NETWORK_STATUS.into(),
            Value::String(merged.to_string()),
        );
    }
    ann
}

/// The status document: NIC statuses and the annotations hotnic would write on the pod.
fn status_document(pod: &Value, d: &DesiredPod, rep: &PodReport) -> Value {
    let existing = annotations::get(pod, annotations::NETWORK_STATUS).and_then(Value::as_str);
    let mut doc = json!({
        "namespace": d.pod.namespace,
        "name": d.pod.name,
        "uid": d.pod.uid,
        "nics": rep.nics,
        "annotations": status_annotations(d, rep, existing),
    });
    if d.dialect == Some(Dialect::Arktos) {
        doc["nicStatuses"] = json!(rep.nics);
    }
    if !rep.errors.is_empty() {
        doc["errors"] = json!(rep.errors);
    }
    doc
}

/// `DIR/status/{namespace}_{name}.json`.
pub fn status_path(status_dir: &Path, pod: &PodRef) -> PathBuf {
    status_dir.join(format!("{}_{}.json", pod.namespace, pod.name))
}

async fn write_status(status_dir: &Path, pod: &PodRef, doc: &Value) -> anyhow::Result<()> {
    let path = status_path(status_dir, pod);
    let tmp = status_dir.join(format!(".{}_{}.tmp", pod.namespace, pod.name));
    let bytes = serde_json::to_vec_pretty(doc)?;
    tokio::fs::write(&tmp, &bytes)
        .await
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}
