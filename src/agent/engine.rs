//! The reconcile loop shared by standalone and Kubernetes mode: a [`Backend`] supplies pods and
//! networks and publishes status; the engine decides which pods are due (input changed, retry
//! time reached, resync), reconciles them, backs off per pod on failure, and tears down pods that
//! are gone (from the backend and from the cache).

use super::backoff::Backoff;
use super::desired::{self, DesiredPod};
use super::netns::PodRef;
use super::reconcile::{PodReport, Reconciler};
use crate::model::NetworkRef;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where pods come from and where status goes.
pub trait Backend: Sync {
    /// The current pods, and whether the list is complete (pod deletions are only acted on then).
    fn pods(&self) -> impl Future<Output = anyhow::Result<(Vec<Value>, bool)>> + Send;
    /// A network's CNI config text, or why there is none.
    fn network_config(
        &self,
        net: &NetworkRef,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// Publishes a pod's status (and events).
    fn publish(
        &self,
        pod: &Value,
        d: &DesiredPod,
        rep: &PodReport,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// A pod is gone and torn down (events, status file removal).
    fn forget(&self, pod: &PodRef, rep: &PodReport) -> impl Future<Output = ()> + Send;
}

/// Loop timing.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Longest wait between passes.
    pub poll: Duration,
    /// Reconcile every pod at least this often.
    pub resync: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// How many pods are reconciled at once.
    pub parallel: usize,
}

#[derive(Debug)]
struct PodState {
    pod: PodRef,
    input_hash: u64,
    last_pass: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    /// Whether hotnic has NICs to manage in it (for the `pods_managed` gauge).
    managed: bool,
}

/// The engine's memory across passes.
#[derive(Debug, Default)]
pub struct Engine {
    pods: HashMap<String, PodState>,
}

impl Engine {
    /// Runs passes until `stop` resolves (or after one pass when `once`). `wake` cuts a wait short.
    pub async fn run<B: Backend>(
        &mut self,
        rec: &Reconciler,
        backend: &B,
        timing: &Timing,
        once: bool,
        wake: Option<Arc<Notify>>,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let wake = wake.unwrap_or_default();
        loop {
            if let Err(e) = self.pass(rec, backend, timing).await {
                rec.metrics.reconcile_errors.inc();
                tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed");
            } else {
                rec.metrics.ready.store(true, Ordering::Relaxed);
            }
            if once {
                return Ok(());
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(timing.poll) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// One pass over every pod.
    pub async fn pass<B: Backend>(
        &mut self,
        rec: &Reconciler,
        backend: &B,
        timing: &Timing,
    ) -> anyhow::Result<()> {
        let (objs, complete) = backend.pods().await?;
        let now = Instant::now();
        let mut seen = Vec::new();
        let mut work = Vec::new();
        for obj in &objs {
            let Some(mut d) = desired::read_pod(obj) else {
                continue;
            };
            // A pod being deleted (or finished) gets no new NICs; the teardown follows its removal.
            let terminating = obj
                .get("metadata")
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some_and(|t| !t.is_null());
            for n in &mut d.nics {
                n.config = match &n.network {
                    Some(net) => backend.network_config(net).await,
                    None => Err(format!("{} names no network", n.ifname)),
                };
            }
            seen.push(d.pod.uid.clone());
            if terminating {
                continue;
            }
            let hash = {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                format!("{:?}", d.nics).hash(&mut h);
                h.finish()
            };
            let st = self
                .pods
                .entry(d.pod.uid.clone())
                .or_insert_with(|| PodState {
                    pod: d.pod.clone(),
                    input_hash: hash.wrapping_add(1),
                    last_pass: now,
                    retry_at: None,
                    failures: 0,
                    managed: false,
                });
            let due = st.input_hash != hash
                || st.retry_at.is_some_and(|t| t <= now)
                || now.duration_since(st.last_pass) >= timing.resync;
            if due {
                work.push((obj, d, hash));
            }
        }
        // Pods are independent: reconcile a few at once (NICs within a pod stay in order).
        let done: Vec<_> = futures::stream::iter(work)
            .map(|(obj, d, hash)| async move {
                // Show InProgress first when this pass will plug something, and the pod has
                // a network namespace to plug into.
                if rec.resolver.netns(&d.pod).await.is_ok_and(|n| n.is_some_and(|n| !n.closed))
                    && let Some(pre) = rec.preview(&d.pod, &d.nics).await
                    && let Err(e) = backend.publish(obj, &d, &pre).await
                {
                    tracing::debug!(pod = %d.pod, error = %format!("{e:#}"), "publishing InProgress failed");
                }
                let rep = rec.reconcile(&d.pod, &d.nics).await;
                log_events(&d.pod, &rep);
                let published = backend.publish(obj, &d, &rep).await;
                (d, hash, rep, published)
            })
            .buffer_unordered(timing.parallel.max(1))
            .collect()
            .await;
        for (d, hash, rep, published) in done {
            let Some(st) = self.pods.get_mut(&d.pod.uid) else {
                continue;
            };
            st.input_hash = hash;
            st.last_pass = Instant::now();
            st.managed = !rep.managed.is_empty();
            let mut failed = rep.needs_retry();
            if let Err(e) = published {
                tracing::warn!(pod = %d.pod, error = %format!("{e:#}"), "publishing status failed");
                failed = true;
            }
            if !rep.errors.is_empty() {
                rec.metrics.reconcile_errors.inc();
            }
            if failed {
                st.failures += 1;
                st.retry_at = Some(Instant::now() + timing.backoff.delay(st.failures));
            } else {
                st.failures = 0;
                st.retry_at = None;
            }
        }
        if complete {
            self.teardown_gone(rec, backend, timing, &seen, now).await;
        }
        let managed = self.pods.values().filter(|p| p.managed).count();
        rec.metrics.pods_managed.set(managed as i64);
        Ok(())
    }

    async fn teardown_gone<B: Backend>(
        &mut self,
        rec: &Reconciler,
        backend: &B,
        timing: &Timing,
        seen: &[String],
        now: Instant,
    ) {
        let mut gone: Vec<String> = self
            .pods
            .keys()
            .filter(|u| !seen.contains(u))
            .cloned()
            .collect();
        for uid in rec.cache.pods().await.unwrap_or_default() {
            if !seen.contains(&uid) && !gone.contains(&uid) {
                gone.push(uid);
            }
        }
        for uid in gone {
            let due = self
                .pods
                .get(&uid)
                .and_then(|p| p.retry_at)
                .is_none_or(|t| t <= now);
            if !due {
                continue;
            }
            let entries = rec.cache.list(&uid).await.unwrap_or_default();
            let pod = self
                .pods
                .get(&uid)
                .map(|p| p.pod.clone())
                .or_else(|| entries.first().map(|e| e.pod()))
                .unwrap_or(PodRef {
                    uid: uid.clone(),
                    namespace: String::new(),
                    name: String::new(),
                });
            let rep = rec.teardown(&uid).await;
            log_events(&pod, &rep);
            if rep.errors.is_empty() {
                self.pods.remove(&uid);
                backend.forget(&pod, &rep).await;
            } else {
                rec.metrics.reconcile_errors.inc();
                tracing::warn!(pod = %pod, errors = ?rep.errors, "teardown failed; retrying");
                let st = self.pods.entry(uid).or_insert_with(|| PodState {
                    pod,
                    input_hash: 0,
                    last_pass: now,
                    retry_at: None,
                    failures: 0,
                    managed: true,
                });
                st.failures += 1;
                st.retry_at = Some(Instant::now() + timing.backoff.delay(st.failures));
            }
        }
    }
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
