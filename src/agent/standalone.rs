//! Standalone mode: pods and networks from manifest files in a directory, status into
//! `DIR/status/{namespace}_{name}.json`, re-read by polling.

use super::backoff::Backoff;
use super::desired::{self, DesiredPod};
use super::manifests;
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler, nic_status_json};
use super::status::merge_network_status;
use crate::dialect::annotations;
use crate::model::Dialect;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Loop settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The manifests directory.
    pub pods_dir: PathBuf,
    /// How often to re-read it.
    pub poll: Duration,
    /// Reconcile every pod at least this often.
    pub resync: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// Stop after one pass (for scripts).
    pub once: bool,
}

#[derive(Debug)]
struct PodState {
    pod: PodRef,
    input_hash: u64,
    last_pass: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    last_status: Option<Value>,
}

/// Runs the loop until `stop` resolves.
pub async fn run(
    rec: &Reconciler,
    s: &Settings,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let status_dir = s.pods_dir.join("status");
    tokio::fs::create_dir_all(&status_dir)
        .await
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", status_dir.display()))?;
    let mut pods: HashMap<String, PodState> = HashMap::new();
    let mut warned: BTreeMap<PathBuf, String> = BTreeMap::new();
    tokio::pin!(stop);
    loop {
        pass(rec, s, &status_dir, &mut pods, &mut warned).await?;
        rec.metrics.ready.store(true, Ordering::Relaxed);
        if s.once {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(s.poll) => {}
        }
    }
}

async fn pass(
    rec: &Reconciler,
    s: &Settings,
    status_dir: &Path,
    pods: &mut HashMap<String, PodState>,
    warned: &mut BTreeMap<PathBuf, String>,
) -> anyhow::Result<()> {
    let scan = manifests::scan(&s.pods_dir).await?;
    let bad: BTreeMap<PathBuf, String> = scan.bad_files.iter().cloned().collect();
    for (f, e) in &bad {
        if warned.get(f) != Some(e) {
            tracing::warn!(file = %f.display(), error = %e, "unreadable manifest (pod deletions wait until it is fixed)");
        }
    }
    *warned = bad;
    let now = Instant::now();
    let mut seen = Vec::new();
    for obj in &scan.pods {
        let Some(mut d) = desired::read_pod(obj) else {
            continue;
        };
        for n in &mut d.nics {
            n.config = match &n.network {
                Some(net) => scan.config(net),
                None => Err(format!("{} names no network", n.ifname)),
            };
        }
        seen.push(d.pod.uid.clone());
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{:?}", d.nics).hash(&mut h);
            h.finish()
        };
        let st = pods.entry(d.pod.uid.clone()).or_insert_with(|| PodState {
            pod: d.pod.clone(),
            input_hash: hash.wrapping_add(1),
            last_pass: now,
            retry_at: None,
            failures: 0,
            last_status: None,
        });
        let due = st.input_hash != hash
            || st.retry_at.is_some_and(|t| t <= now)
            || now.duration_since(st.last_pass) >= s.resync;
        if !due {
            continue;
        }
        let rep = rec.reconcile(&d.pod, &d.nics).await;
        log_events(&d.pod, &rep);
        st.input_hash = hash;
        st.last_pass = Instant::now();
        if rep.needs_retry() {
            if !rep.errors.is_empty() {
                rec.metrics.reconcile_errors.inc();
            }
            st.failures += 1;
            st.retry_at = Some(Instant::now() + s.backoff.delay(st.failures));
        } else {
            st.failures = 0;
            st.retry_at = None;
        }
        let status = status_document(obj, &d, &rep);
        if st.last_status.as_ref() != Some(&status) {
            write_status(status_dir, &d.pod, &status).await?;
            st.last_status = Some(status);
        }
    }
    // Deleted pods: everything cached or tracked but no longer in the directory.
    if scan.bad_files.is_empty() {
        let mut gone: Vec<String> = pods.keys().filter(|u| !seen.contains(u)).cloned().collect();
        for uid in rec.cache.pods().await.unwrap_or_default() {
            if !seen.contains(&uid) && !gone.contains(&uid) {
                gone.push(uid);
            }
        }
        for uid in gone {
            let due = pods
                .get(&uid)
                .and_then(|p| p.retry_at)
                .is_none_or(|t| t <= now);
            if !due {
                continue;
            }
            let entries = rec.cache.list(&uid).await.unwrap_or_default();
            let pod = pods
                .get(&uid)
                .map(|p| p.pod.clone())
                .or_else(|| entries.first().map(|e| e.pod()));
            let rep = rec.teardown(&uid).await;
            if let Some(pod) = &pod {
                log_events(pod, &rep);
            }
            if rep.errors.is_empty() {
                pods.remove(&uid);
                if let Some(pod) = pod {
                    let _ = tokio::fs::remove_file(status_path(status_dir, &pod)).await;
                }
            } else {
                rec.metrics.reconcile_errors.inc();
                let st = pods.entry(uid.clone()).or_insert_with(|| PodState {
                    pod: pod.clone().unwrap_or(PodRef {
                        uid: uid.clone(),
                        namespace: String::new(),
                        name: String::new(),
                    }),
                    input_hash: 0,
                    last_pass: now,
                    retry_at: None,
                    failures: 0,
                    last_status: None,
                });
                st.failures += 1;
                st.retry_at = Some(Instant::now() + s.backoff.delay(st.failures));
                tracing::warn!(uid, errors = ?rep.errors, "teardown failed; retrying");
            }
        }
    }
    rec.metrics.pods_managed.set(pods.len() as i64);
    Ok(())
}

fn log_events(pod: &PodRef, rep: &PodReport) {
    for e in &rep.events {
        if e.warning {
            tracing::warn!(pod = %pod, reason = e.reason, ifname = %e.ifname, "{}", e.message);
        } else {
            tracing::info!(pod = %pod, reason = e.reason, ifname = %e.ifname, "{}", e.message);
        }
    }
}

/// The status document: NIC statuses and the annotations hotnic would write on the pod.
fn status_document(pod: &Value, d: &DesiredPod, rep: &PodReport) -> Value {
    let mut ann = serde_json::Map::new();
    ann.insert(
        annotations::NIC_STATUS.into(),
        Value::String(nic_status_json(rep).to_string()),
    );
    if d.dialect == Some(Dialect::Multus) {
        let existing = annotations::get(pod, annotations::NETWORK_STATUS).and_then(Value::as_str);
        let merged = merge_network_status(existing, &rep.managed, &rep.network_status);
        ann.insert(
            annotations::NETWORK_STATUS.into(),
            Value::String(merged.to_string()),
        );
    }
    let mut doc = json!({
        "namespace": d.pod.namespace,
        "name": d.pod.name,
        "uid": d.pod.uid,
        "nics": rep.nics,
        "annotations": ann,
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
