//! Standalone mode: pods and networks from manifest files in a directory, status into
//! `DIR/status/{namespace}_{name}.json`. The directory is polled with a `stat` of each file; only
//! the pods of files that changed are reported (see [`manifests::Dir`]).

use super::desired::{DesiredPod, NetworkError};
use super::engine::{self, Backend, PodEvent, Timing};
use super::manifests;
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler, nic_status_json};
use super::status::merge_network_status;
use crate::dialect::annotations;
use crate::model::{Dialect, NetworkRef};
use crate::runtime::Chain;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Why standalone mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pods directory is missing or not a directory.
    #[error("pods dir {} is not a directory", dir.display())]
    NotADirectory {
        /// The directory given.
        dir: PathBuf,
    },
    /// `DIR/status` could not be created.
    #[error("creating {}", path.display())]
    StatusDir {
        /// `DIR/status`.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a pod's status file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatusFileError {
    /// Writing or renaming the file failed.
    #[error("writing {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The status would not encode as JSON.
    #[error("encoding the status of {pod}")]
    Json {
        /// The pod.
        pod: PodRef,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// The manifests directory as a [`Backend`].
pub struct DirBackend {
    dir: PathBuf,
    status_dir: PathBuf,
    poll: Duration,
    once: bool,
    nads: Mutex<BTreeMap<NetworkRef, Result<String, NetworkError>>>,
    written: Mutex<HashMap<String, Value>>,
}

impl DirBackend {
    /// A backend over `dir` (creates `dir/status`), re-read every `poll`; with `once`, read once.
    pub async fn new(dir: PathBuf, poll: Duration, once: bool) -> Result<Self, StartError> {
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Err(StartError::NotADirectory { dir });
        }
        let status_dir = dir.join("status");
        if let Err(source) = tokio::fs::create_dir_all(&status_dir).await {
            return Err(StartError::StatusDir {
                path: status_dir,
                source,
            });
        }
        Ok(Self {
            dir,
            status_dir,
            poll,
            once,
            nads: Mutex::default(),
            written: Mutex::default(),
        })
    }

    /// One scan as events: networks that changed, pods that changed or went, and after the first
    /// scan (and the first complete one, when the first was not) the listing.
    async fn scan(
        &self,
        dir: &mut manifests::Dir,
        first: bool,
        listed: &mut bool,
    ) -> Vec<PodEvent> {
        let ch = match dir.rescan(&self.dir).await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "reading the pods dir failed");
                return Vec::new();
            }
        };
        for (f, e) in &ch.newly_bad {
            tracing::warn!(file = %f.display(), error = %Chain(e), "unreadable manifest (pod deletions wait until it is fixed)");
        }
        if first || !ch.networks.is_empty() {
            *self.nads.lock().unwrap_or_else(|p| p.into_inner()) = dir.nads().clone();
        }
        let mut events = Vec::new();
        if !first {
            events.extend(ch.networks.into_iter().map(PodEvent::NetworkChanged));
        }
        events.extend(ch.applied.into_iter().map(PodEvent::Applied));
        events.extend(ch.deleted.into_iter().map(PodEvent::Deleted));
        let complete = dir.complete();
        if first || (complete && !*listed) {
            events.push(PodEvent::Synced {
                uids: dir.pod_uids(),
                complete,
            });
            *listed = complete;
        }
        events
    }
}

impl Backend for DirBackend {
    type Error = StatusFileError;

    fn events(&self) -> impl Stream<Item = PodEvent> + Send + '_ {
        let start = (manifests::Dir::default(), true, false);
        futures::stream::unfold(start, move |(mut dir, first, mut listed)| async move {
            if !first {
                if self.once {
                    return None;
                }
                tokio::time::sleep(self.poll).await;
            }
            let events = self.scan(&mut dir, first, &mut listed).await;
            Some((futures::stream::iter(events), (dir, false, listed)))
        })
        .flatten()
    }

    async fn network_config(&self, net: &NetworkRef) -> Result<String, NetworkError> {
        manifests::config(&self.nads.lock().unwrap_or_else(|p| p.into_inner()), net)
    }

    async fn publish(
        &self,
        pod: &Value,
        d: &DesiredPod,
        rep: &PodReport,
    ) -> Result<Option<Value>, StatusFileError> {
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
        // The pod object itself (the manifest) is not written.
        Ok(None)
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

/// Runs standalone mode until `stop` resolves (with `once`: one scan, its work done, then return).
pub async fn run(
    rec: &Reconciler,
    dir: PathBuf,
    timing: &Timing,
    once: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let backend = DirBackend::new(dir, timing.poll, once).await?;
    engine::run(rec, &backend, timing, stop).await;
    Ok(())
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
        doc["errors"] = json!(rep.error_messages());
    }
    doc
}

/// `DIR/status/{namespace}_{name}.json`.
pub fn status_path(status_dir: &Path, pod: &PodRef) -> PathBuf {
    status_dir.join(format!("{}_{}.json", pod.namespace, pod.name))
}

async fn write_status(status_dir: &Path, pod: &PodRef, doc: &Value) -> Result<(), StatusFileError> {
    let path = status_path(status_dir, pod);
    let tmp = status_dir.join(format!(".{}_{}.tmp", pod.namespace, pod.name));
    let bytes = serde_json::to_vec_pretty(doc).map_err(|source| StatusFileError::Json {
        pod: pod.clone(),
        source,
    })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StatusFileError::Io { path, source }
    };
    tokio::fs::write(&tmp, &bytes).await.map_err(io(&tmp))?;
    tokio::fs::rename(&tmp, &path).await.map_err(io(&path))
}
