//! The controller both modes share. A [`Backend`] reports what happens to the node's pods
//! ([`PodEvent`]s: a kube-rs watch, or changed files in the pods directory), supplies networks'
//! configs and publishes status; [`run`] turns those events into per-pod work.
//!
//! # Shape
//!
//! This is a per-pod work queue with requeue-after and exponential backoff, the shape of
//! client-go's workqueue and of kubert's and kube-runtime's controllers, written here rather than
//! taken from `kube::runtime::Controller` because:
//! - standalone mode has no API server: both modes must feed one queue from a [`Backend`], and
//!   `Controller` is built on an `Api` watch;
//! - a pod's deletion is work here (its NICs are unplugged and their leases released), and
//!   `Controller` only reconciles objects still in its store, leaving deletions to finalizers,
//!   which an agent must not put on every pod of the node;
//! - "nothing changed, nothing to do" is decided from the pod's desired NICs and its network
//!   namespace, not only from the object, so the skip is ours in any case.
//!
//! # Rules
//!
//! - **Work per pod, from events and timers only.** An event about a pod enqueues that pod and no
//!   other; nothing runs over every pod. A pod is in the queue at most once (enqueueing a queued
//!   pod does nothing), is never reconciled twice at once (an event for a running pod marks it
//!   dirty; it is enqueued again when the run ends), and at most [`Timing::parallel`] pods run at
//!   once (NICs within a pod are plugged in order).
//! - **Timers.** A pod whose reconcile failed (or is still waiting, e.g. for its sandbox) is
//!   retried after its backoff ([`Timing::backoff`], doubling per failure, at most
//!   [`Timing::resync`]); one that converged is reconciled in full again after [`Timing::resync`]
//!   (less up to 10 % jitter, so the pods of a node do not all resync at the same moment): that
//!   run catches what no event reports (an interface removed from the pod by hand, a status
//!   annotation overwritten). Timer runs always reconcile.
//! - **No change, no work.** A run caused by an event computes the pod's input hash
//!   ([`DesiredPod::input_hash`]: its desired NICs with their networks' config text). When the
//!   hash equals that of the last run and that run converged and the pod's network namespace is
//!   still the one it used (a `stat`, see [`NetnsCache`]), or the last run failed and its retry is
//!   still pending, the run ends there: no CRI call, no CNI call, no status write.
//! - **One namespace lookup per sandbox.** [`NetnsCache`] keeps each pod's network namespace while
//!   its path leads to the same namespace, so a run asks the CRI runtime at most once, and
//!   usually not at all. A pod with no NICs wanted and none plugged needs no namespace.
//! - **Deletions** come as [`PodEvent::Deleted`], and from [`PodEvent::Synced`] with a complete
//!   listing: known pods missing from it were deleted while nobody watched, and result-cache
//!   entries of pods missing from it are orphans (a pod deleted while the agent was down). Their
//!   teardown (DEL of everything plugged) is queued work like any other, retried with backoff.
//! - A pod being deleted (`deletionTimestamp`) gets no new NICs: it is not reconciled until it is
//!   gone, then torn down.
//! - The agent is synced (`/readyz`) once the backend's first listing has been received and every
//!   pod it named has been reconciled once.
//!
//! [`NetnsCache`]: super::netns::NetnsCache

use super::backoff::Backoff;
use super::desired::{self, DesiredPod, NetworkConfig, NetworkError};
use super::netns::{NetnsCache, PodRef};
use super::reconcile::{PodReport, Reconciler};
use crate::model::NetworkRef;
use crate::runtime::Chain;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a backend reports about the node's pods, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum PodEvent {
    /// A pod was added or changed: the whole object.
    Applied(Value),
    /// A pod was deleted: its last known object.
    Deleted(Value),
    /// Every pod the backend knows of has been reported (the initial listing, a relist): their
    /// keys ([`desired::pod_ref`]'s uid). With `complete`, pods not among them are gone: known
    /// ones are torn down, and so are result-cache entries of pods not among them. Without it
    /// (some manifest unreadable), nothing is deleted.
    Synced {
        /// The keys of every pod listed.
        uids: HashSet<String>,
        /// Whether the listing is complete (deletions are acted on only then).
        complete: bool,
    },
    /// A network's config changed: the pods whose NICs name it are looked at again (those
    /// waiting to retry a failed plug run at once when their input changed).
    NetworkChanged(NetworkRef),
}

/// Where pods come from and where status goes.
pub trait Backend: Sync {
    /// Why publishing failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The pod events. The stream ends only in one-shot mode (`--once`), after the first listing;
    /// the engine then finishes the work it has and returns.
    fn events(&self) -> impl Stream<Item = PodEvent> + Send + '_;
    /// A network's CNI config text, or why there is none.
    fn network_config(
        &self,
        net: &NetworkRef,
    ) -> impl Future<Output = Result<String, NetworkError>> + Send;
    /// Publishes a pod's status (and events), computed against `pod`, the object as last seen.
    /// Returns the object as it is after the write when the backend wrote it (a later publish in
    /// the same run starts from it, so its resourceVersion guard does not meet our own write), or
    /// `None`.
    fn publish(
        &self,
        pod: &Value,
        d: &DesiredPod,
        rep: &PodReport,
    ) -> impl Future<Output = Result<Option<Value>, Self::Error>> + Send;
    /// A pod is gone and torn down (events, status file removal).
    fn forget(&self, pod: &PodRef, rep: &PodReport) -> impl Future<Output = ()> + Send;
}

/// Loop timing.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often standalone mode re-reads the pods directory.
    pub poll: Duration,
    /// Reconcile every pod at least this often.
    pub resync: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// How many pods are reconciled at once.
    pub parallel: usize,
}

/// Runs the controller until `stop` resolves (then lets the runs in flight finish), or, when the
/// backend's event stream ends (`--once`), until the work it caused is done (retries and resyncs
/// are not waited for).
pub async fn run<B: Backend>(
    rec: &Reconciler,
    backend: &B,
    timing: &Timing,
    stop: impl Future<Output = ()>,
) {
    let ctx = Ctx {
        rec,
        backend,
        timing,
        netns: NetnsCache::new(rec.resolver.clone()),
    };
    let mut st = State::default();
    let mut events = std::pin::pin!(backend.events());
    let mut stop = std::pin::pin!(stop);
    let mut inflight = FuturesUnordered::new();
    let (mut events_open, mut stopping) = (true, false);
    loop {
        while !stopping
            && inflight.len() < timing.parallel.max(1)
            && let Some(job) = st.next_job()
        {
            inflight.push(work(&ctx, job));
        }
        let idle = st.queue.is_empty() && inflight.is_empty();
        if idle && st.synced {
            rec.synced.set();
        }
        if inflight.is_empty() && (stopping || (idle && !events_open)) {
            return;
        }
        let next_timer = st.next_timer();
        let timer_at = next_timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = &mut stop, if !stopping => stopping = true,
            ev = events.next(), if events_open && !stopping => match ev {
                Some(ev) => st.on_event(&ctx, ev).await,
                None => events_open = false,
            },
            Some(done) = inflight.next() => st.on_done(&ctx, done),
            () = tokio::time::sleep_until(timer_at.into()),
                if next_timer.is_some() && events_open && !stopping => st.fire_timers(),
        }
    }
}

/// What every run shares.
struct Ctx<'a, B> {
    rec: &'a Reconciler,
    backend: &'a B,
    timing: &'a Timing,
    netns: NetnsCache,
}

/// The engine's memory of one pod.
#[derive(Debug)]
struct Pod {
    pod: PodRef,
    /// The latest object; `None` once the pod is gone (its teardown is due).
    obj: Option<Arc<Value>>,
    /// Being deleted: no new NICs, nothing to do until it is gone.
    terminating: bool,
    /// The networks its NICs named at the last run (for [`PodEvent::NetworkChanged`]).
    networks: Vec<NetworkRef>,
    /// The input hash of the last run that reconciled.
    last: Option<u64>,
    /// That run succeeded and left nothing pending.
    converged: bool,
    /// Failed runs in a row (for the backoff).
    failures: u32,
    /// Whether hotnic has NICs to manage in it (the `pods_managed` gauge).
    managed: bool,
    queued: bool,
    running: bool,
    /// An event arrived while it ran: enqueue it again when the run ends.
    dirty: bool,
    /// When its timer (retry or resync) fires; stale heap entries are skipped.
    wake_at: Option<Instant>,
    /// Its timer fired: the next run reconciles whatever the hash says.
    force: bool,
}

impl Pod {
    fn new(pod: PodRef) -> Self {
        Self {
            pod,
            obj: None,
            terminating: false,
            networks: Vec::new(),
            last: None,
            converged: false,
            failures: 0,
            managed: false,
            queued: false,
            running: false,
            dirty: false,
            wake_at: None,
            force: false,
        }
    }
}

/// One unit of work, with what it needs of the pod's state at the time it starts.
enum Job {
    Reconcile {
        uid: String,
        obj: Arc<Value>,
        /// A timer's run: reconcile even if the input did not change.
        force: bool,
        last: Option<u64>,
        converged: bool,
        /// The last run failed and its retry is pending.
        waiting: bool,
    },
    Teardown {
        uid: String,
        pod: PodRef,
    },
}

/// What a job did.
enum Done {
    /// Nothing changed: nothing done.
    Skipped {
        uid: String,
    },
    Reconciled {
        uid: String,
        hash: u64,
        networks: Vec<NetworkRef>,
        /// Nothing failed, nothing pending, status published.
        ok: bool,
        errors: bool,
        managed: bool,
    },
    TornDown {
        uid: String,
        ok: bool,
    },
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Pod>,
    queue: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// The backend's first listing has arrived.
    synced: bool,
    managed: i64,
}

impl State {
    fn enqueue(&mut self, uid: &str) {
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        if p.running {
            p.dirty = true;
        } else if !p.queued {
            p.queued = true;
            self.queue.push_back(uid.to_string());
        }
    }

    fn schedule(&mut self, uid: &str, at: Instant) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.wake_at = Some(at);
            self.timers.push(Reverse((at, uid.to_string())));
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
        // Drop stale entries so the loop does not wake for them.
        while let Some(Reverse((at, uid))) = self.timers.peek() {
            if self.pods.get(uid).is_some_and(|p| p.wake_at == Some(*at)) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, uid))) = self.timers.pop() else {
                break;
            };
            if let Some(p) = self.pods.get_mut(&uid)
                && p.wake_at == Some(at)
            {
                p.wake_at = None;
                p.force = true;
                self.enqueue(&uid);
            }
        }
    }

    fn next_job(&mut self) -> Option<Job> {
        while let Some(uid) = self.queue.pop_front() {
            let Some(p) = self.pods.get_mut(&uid) else {
                continue;
            };
            p.queued = false;
            let force = std::mem::take(&mut p.force);
            let job = match &p.obj {
                None => Job::Teardown {
                    uid: uid.clone(),
                    pod: p.pod.clone(),
                },
                Some(_) if p.terminating => continue,
                Some(obj) => Job::Reconcile {
                    uid: uid.clone(),
                    obj: obj.clone(),
                    force,
                    last: p.last,
                    converged: p.converged,
                    waiting: !p.converged && p.last.is_some() && p.wake_at.is_some(),
                },
            };
            p.running = true;
            return Some(job);
        }
        None
    }

    fn set_managed<B>(&mut self, ctx: &Ctx<'_, B>, uid: &str, managed: bool) {
        if let Some(p) = self.pods.get_mut(uid)
            && p.managed != managed
        {
            p.managed = managed;
            self.managed += if managed { 1 } else { -1 };
            ctx.rec.metrics.pods_managed.set(self.managed);
        }
    }

    async fn on_event<B: Backend>(&mut self, ctx: &Ctx<'_, B>, ev: PodEvent) {
        match ev {
            PodEvent::Applied(obj) => {
                let Some(pod) = desired::pod_ref(&obj) else {
                    return;
                };
                let uid = pod.uid.clone();
                let terminating = desired::is_terminating(&obj);
                let p = self
                    .pods
                    .entry(uid.clone())
                    .or_insert_with(|| Pod::new(pod.clone()));
                p.pod = pod;
                p.obj = Some(Arc::new(obj));
                p.terminating = terminating;
                if terminating {
                    p.wake_at = None;
                } else {
                    self.enqueue(&uid);
                }
            }
            PodEvent::Deleted(obj) => {
                let Some(pod) = desired::pod_ref(&obj) else {
                    return;
                };
                self.gone(pod);
            }
            PodEvent::Synced { uids, complete } => {
                tracing::info!(pods = uids.len(), complete, "pods listed");
                if complete {
                    let gone: Vec<PodRef> = self
                        .pods
                        .iter()
                        .filter(|(uid, p)| p.obj.is_some() && !uids.contains(*uid))
                        .map(|(_, p)| p.pod.clone())
                        .collect();
                    for pod in gone {
                        self.gone(pod);
                    }
                    // Pods hotnic plugged NICs into that no longer exist (deleted while the agent
                    // was not running): their teardown names them from the cache.
                    match ctx.rec.cache.pods().await {
                        Ok(cached) => {
                            for uid in cached {
                                if !uids.contains(&uid) && !self.pods.contains_key(&uid) {
                                    self.gone(PodRef {
                                        uid,
                                        namespace: String::new(),
                                        name: String::new(),
                                    });
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %Chain(&e), "listing the result cache for orphans failed")
                        }
                    }
                }
                self.synced = true;
            }
            PodEvent::NetworkChanged(net) => {
                let using: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(_, p)| p.networks.contains(&net))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in using {
                    self.enqueue(&uid);
                }
            }
        }
    }

    /// The pod is gone: its teardown is due.
    fn gone(&mut self, pod: PodRef) {
        let uid = pod.uid.clone();
        let p = self
            .pods
            .entry(uid.clone())
            .or_insert_with(|| Pod::new(pod));
        p.obj = None;
        p.terminating = false;
        p.wake_at = None;
        p.force = false;
        // What was learnt about it no longer holds (a manifest restored under the same key
        // starts afresh).
        p.last = None;
        p.converged = false;
        self.enqueue(&uid);
    }

    fn on_done<B: Backend>(&mut self, ctx: &Ctx<'_, B>, done: Done) {
        let timing = ctx.timing;
        let uid = match done {
            Done::Skipped { uid } => uid,
            Done::Reconciled {
                uid,
                hash,
                networks,
                ok,
                errors,
                managed,
            } => {
                if errors {
                    ctx.rec.metrics.reconcile_errors.inc();
                }
                self.set_managed(ctx, &uid, managed);
                let Some(p) = self.pods.get_mut(&uid) else {
                    return;
                };
                p.last = Some(hash);
                p.networks = networks;
                p.converged = ok;
                let delay = if ok {
                    p.failures = 0;
                    timing.resync.mul_f64(rand::random_range(0.9..=1.0))
                } else {
                    p.failures += 1;
                    // Every pod is looked at least once per resync, failing ones too.
                    timing.backoff.delay(p.failures).min(timing.resync)
                };
                if p.obj.is_some() && !p.terminating {
                    self.schedule(&uid, Instant::now() + delay);
                }
                uid
            }
            Done::TornDown { uid, ok } => {
                let Some(p) = self.pods.get_mut(&uid) else {
                    return;
                };
                if ok {
                    if p.obj.is_none() {
                        self.set_managed(ctx, &uid, false);
                        self.pods.remove(&uid);
                        return;
                    }
                    // Back again (a manifest restored under the same key): start afresh.
                    p.last = None;
                    p.converged = false;
                    p.failures = 0;
                    p.dirty = true;
                } else {
                    p.failures += 1;
                    let at = Instant::now() + timing.backoff.delay(p.failures);
                    self.set_managed(ctx, &uid, true);
                    self.schedule(&uid, at);
                }
                uid
            }
        };
        if let Some(p) = self.pods.get_mut(&uid) {
            p.running = false;
            if std::mem::take(&mut p.dirty) {
                self.enqueue(&uid);
            }
        }
    }
}

async fn work<B: Backend>(ctx: &Ctx<'_, B>, job: Job) -> Done {
    match job {
        Job::Reconcile {
            uid,
            obj,
            force,
            last,
            converged,
            waiting,
        } => reconcile(ctx, uid, obj, force, last, converged, waiting).await,
        Job::Teardown { uid, pod } => teardown(ctx, uid, pod).await,
    }
}

async fn reconcile<B: Backend>(
    ctx: &Ctx<'_, B>,
    uid: String,
    obj: Arc<Value>,
    force: bool,
    last: Option<u64>,
    converged: bool,
    waiting: bool,
) -> Done {
    let Some(mut d) = desired::read_pod(&obj) else {
        return Done::Skipped { uid };
    };
    for n in &mut d.nics {
        // A NIC that names no network stays unresolved (the reconciler says so in its status).
        if let Some(net) = &n.network {
            n.config = NetworkConfig::from(ctx.backend.network_config(net).await);
        }
    }
    let hash = d.input_hash();
    if !force && last == Some(hash) && (waiting || (converged && ctx.netns.unchanged(&uid))) {
        tracing::trace!(pod = %d.pod, "unchanged");
        return Done::Skipped { uid };
    }
    let mut current = obj.clone();
    let nothing_plugged = || async { ctx.rec.cache.list(&uid).await.is_ok_and(|c| c.is_empty()) };
    let rep = if d.nics.is_empty() && nothing_plugged().await {
        // No NICs wanted, none to unplug: no namespace to look at.
        PodReport::default()
    } else {
        let netns = ctx.netns.resolve(&d.pod).await;
        // Show InProgress first when this run will plug something into an open namespace.
        if matches!(&netns, Ok(Some(n)) if !n.closed)
            && let Some(pre) = ctx.rec.preview(&d.pod, &d.nics).await
        {
            match ctx.backend.publish(&obj, &d, &pre).await {
                Ok(Some(after)) => current = Arc::new(after),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(pod = %d.pod, error = %Chain(&e), "publishing InProgress failed")
                }
            }
        }
        ctx.rec.reconcile_pod(&d, netns).await
    };
    log_events(&d.pod, &rep);
    let published = ctx.backend.publish(&current, &d, &rep).await;
    if let Err(e) = &published {
        tracing::warn!(pod = %d.pod, error = %Chain(e), "publishing status failed");
    }
    Done::Reconciled {
        uid,
        hash,
        networks: d.networks().cloned().collect(),
        ok: !rep.needs_retry() && published.is_ok(),
        errors: !rep.errors.is_empty(),
        managed: !rep.managed.is_empty(),
    }
}

async fn teardown<B: Backend>(ctx: &Ctx<'_, B>, uid: String, pod: PodRef) -> Done {
    let pod = if pod.name.is_empty() {
        // Known only from the cache: its entries name it.
        let entries = ctx.rec.cache.list(&uid).await.unwrap_or_default();
        entries.first().map(|e| e.pod()).unwrap_or(pod)
    } else {
        pod
    };
    let rep = ctx.rec.teardown(&uid).await;
    log_events(&pod, &rep);
    if rep.errors.is_empty() {
        ctx.netns.forget(&uid);
        ctx.backend.forget(&pod, &rep).await;
        Done::TornDown { uid, ok: true }
    } else {
        ctx.rec.metrics.reconcile_errors.inc();
        tracing::warn!(pod = %pod, errors = ?rep.error_messages(), "teardown failed; retrying");
        Done::TornDown { uid, ok: false }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cni::{Invoker, ResultCache};
    use crate::agent::metrics::Metrics;
    use crate::agent::netns::TemplateResolver;
    use serde_json::json;
    use std::sync::Mutex;

    /// A backend fed by a list of events (then silent), whose `network_config` takes a while and
    /// records how many runs of each pod (one network per pod) and in total are in it at once.
    #[derive(Default)]
    struct Recorder {
        events: Vec<PodEvent>,
        active: Mutex<(HashMap<String, usize>, usize)>,
        max_per_pod: Mutex<usize>,
        max_total: Mutex<usize>,
        runs: Mutex<HashMap<String, usize>>,
        published: Mutex<Vec<String>>,
        forgotten: Mutex<Vec<String>>,
    }

    impl Backend for Recorder {
        type Error = std::io::Error;

        fn events(&self) -> impl Stream<Item = PodEvent> + Send + '_ {
            futures::stream::iter(self.events.clone()).chain(futures::stream::pending())
        }

        async fn network_config(&self, net: &NetworkRef) -> Result<String, NetworkError> {
            {
                let mut a = self.active.lock().unwrap();
                let n = a.0.entry(net.name.clone()).or_default();
                *n += 1;
                let per_pod = *n;
                a.1 += 1;
                let mut m = self.max_per_pod.lock().unwrap();
                *m = (*m).max(per_pod);
                let mut t = self.max_total.lock().unwrap();
                *t = (*t).max(a.1);
                *self
                    .runs
                    .lock()
                    .unwrap()
                    .entry(net.name.clone())
                    .or_default() += 1;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut a = self.active.lock().unwrap();
            *a.0.get_mut(&net.name).unwrap() -= 1;
            a.1 -= 1;
            Ok("{}".into())
        }

        async fn publish(
            &self,
            _pod: &Value,
            d: &DesiredPod,
            _rep: &PodReport,
        ) -> Result<Option<Value>, std::io::Error> {
            self.published.lock().unwrap().push(d.pod.name.clone());
            Ok(None)
        }

        async fn forget(&self, pod: &PodRef, _rep: &PodReport) {
            self.forgotten.lock().unwrap().push(pod.name.clone());
        }
    }

    fn pod(i: usize, label: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}"),
                "labels": {"l": label},
                "annotations": {"k8s.v1.cni.cncf.io/networks":
                    json!([{"name": format!("net{i}"), "interface": "eth1"}]).to_string()}},
            "spec": {}})
    }

    #[tokio::test]
    async fn pods_run_one_at_a_time_each_at_most_parallel_at_once_and_deletions_tear_down() {
        let state = tempfile::tempdir().unwrap();
        let rec = Reconciler::new(
            Invoker::new("/nonexistent", Duration::from_secs(1)),
            ResultCache::new(state.path()),
            // No namespace exists: every pod waits (pending), nothing is plugged.
            Arc::new(TemplateResolver::new(format!(
                "{}/no-netns/{{uid}}",
                state.path().display()
            ))),
            Arc::new(Metrics::new()),
        );
        let mut events: Vec<PodEvent> = (0..10).map(|i| PodEvent::Applied(pod(i, "a"))).collect();
        events.push(PodEvent::Synced {
            uids: (0..10).map(|i| format!("u{i}")).collect(),
            complete: true,
        });
        // A burst of events for one pod: it is never run twice at once.
        events.extend((0..20).map(|i| PodEvent::Applied(pod(0, &i.to_string()))));
        events.push(PodEvent::Deleted(pod(9, "a")));
        let backend = Recorder {
            events,
            ..Recorder::default()
        };
        let timing = Timing {
            poll: Duration::from_millis(100),
            resync: Duration::from_secs(3600),
            backoff: Backoff {
                base: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
            },
            parallel: 3,
        };
        run(
            &rec,
            &backend,
            &timing,
            tokio::time::sleep(Duration::from_millis(600)),
        )
        .await;
        assert_eq!(*backend.max_per_pod.lock().unwrap(), 1);
        assert_eq!(*backend.max_total.lock().unwrap(), 3);
        let runs = backend.runs.lock().unwrap().clone();
        // Pod 9 was deleted before its turn came: it is only torn down, never reconciled.
        assert_eq!(runs.len(), 9, "{runs:?}");
        assert!(!runs.contains_key("net9"));
        // Pod 0 ran once, then (its events coalesced while it ran) at most once more, which found
        // nothing changed that its pending retry would not cover.
        assert!(runs["net0"] <= 2, "{runs:?}");
        let published = backend.published.lock().unwrap().clone();
        assert_eq!(
            published.iter().filter(|p| *p == "p0").count(),
            1,
            "{published:?}"
        );
        assert_eq!(*backend.forgotten.lock().unwrap(), ["p9"]);
        assert!(rec.synced.is_set());
    }
}
