//! The per-pod reconciler: desired NICs vs what hotnic plugged (the cache) and what is really in
//! the namespace. Plugs missing NICs, unplugs removed ones, adopts an interface already in place
//! with the right name and MAC, rolls back half-done ADDs, tears down deleted pods. It never
//! touches an interface it has no cache entry for (eth0 and every foreign interface).

use super::cni::{
    CacheEntry, CacheState, CniError, Invoker, NetConfList, ResultCache, ResultSummary, RuntimeArgs,
};
use super::desired::WantedNic;
use super::links::{self, Links};
use super::metrics::Metrics;
use super::netns::{NetnsResolver, PodRef, SandboxNetns};
use super::status::{NetworkStatusEntry, NicState, NicStatus, address_only};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Kubernetes Event reasons.
pub mod reasons {
    /// A NIC was plugged.
    pub const PLUGGED: &str = "NICPlugged";
    /// A NIC was unplugged.
    pub const UNPLUGGED: &str = "NICUnplugged";
    /// Plugging a NIC failed.
    pub const PLUG_FAILED: &str = "NICPlugFailed";
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// `NICPlugged` | `NICUnplugged` | `NICPlugFailed`.
    pub reason: &'static str,
    /// Interface name.
    pub ifname: String,
    /// Human message (the plugin's message on failure).
    pub message: String,
    /// Whether it is a warning.
    pub warning: bool,
}

/// What one reconcile of a pod found and did.
#[derive(Debug, Clone, Default)]
pub struct PodReport {
    /// Per wanted NIC, in order.
    pub nics: Vec<NicStatus>,
    /// Multus `network-status` entries for Ready NICs, in order.
    pub network_status: Vec<NetworkStatusEntry>,
    /// Interfaces hotnic managed in this pass (wanted or previously plugged).
    pub managed: Vec<String>,
    /// Events to emit.
    pub events: Vec<AgentEvent>,
    /// Errors (plug failures, DEL failures, lookups): the pod needs a retry with backoff.
    pub errors: Vec<String>,
    /// Nothing failed but the pod is not converged yet (e.g. no network namespace yet).
    pub pending: bool,
}

impl PodReport {
    /// Whether the pod should be retried soon.
    pub fn needs_retry(&self) -> bool {
        !self.errors.is_empty() || self.pending
    }
}

/// A hook for crash tests: called right after an ADD result is cached, before anything is reported.
pub type AfterAddHook = Arc<dyn Fn(&PodRef, &str) + Send + Sync>;

/// Plugs and unplugs NICs of pods.
pub struct Reconciler {
    /// Plugin runner.
    pub invoker: Invoker,
    /// Result cache.
    pub cache: ResultCache,
    /// Network namespace lookup.
    pub resolver: Arc<dyn NetnsResolver>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Test hook (see [`AfterAddHook`]).
    pub after_add: Option<AfterAddHook>,
}

impl Reconciler {
    /// A reconciler.
    pub fn new(
        invoker: Invoker,
        cache: ResultCache,
        resolver: Arc<dyn NetnsResolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            invoker,
            cache,
            resolver,
            metrics,
            after_add: None,
        }
    }

    /// The status to show while a pass runs, when it will plug something: NICs with a finished
    /// cache entry as Ready, the others as InProgress. `None` when nothing needs plugging.
    pub async fn preview(&self, pod: &PodRef, wanted: &[WantedNic]) -> Option<PodReport> {
        let cached = self.cache.list(&pod.uid).await.ok()?;
        let mut rep = PodReport {
            managed: wanted.iter().map(|w| w.ifname.clone()).collect(),
            ..PodReport::default()
        };
        let mut plugging = false;
        for w in wanted {
            let e = cached
                .iter()
                .find(|e| e.ifname == w.ifname && e.state == CacheState::Added);
            let st = match e {
                Some(e) => self.ready(w, e, None, &mut rep),
                None if w.config.is_ok() && w.mac_problem.is_none() => {
                    plugging = true;
                    status(w, NicState::InProgress, "plugging".into())
                }
                None => status(w, NicState::Unknown, String::new()),
            };
            rep.nics.push(st);
        }
        plugging.then_some(rep)
    }

    /// Makes one pass over a pod.
    pub async fn reconcile(&self, pod: &PodRef, wanted: &[WantedNic]) -> PodReport {
        let mut rep = PodReport::default();
        let netns = match self.resolver.netns(pod).await {
            Ok(n) => n,
            Err(e) => {
                rep.errors.push(format!("network namespace lookup: {e:#}"));
                rep.nics = wanted
                    .iter()
                    .map(|w| {
                        status(
                            w,
                            NicState::Unknown,
                            format!("network namespace lookup failed: {e:#}"),
                        )
                    })
                    .collect();
                return rep;
            }
        };
        let cached = match self.cache.list(&pod.uid).await {
            Ok(c) => c,
            Err(e) => {
                rep.errors.push(e.to_string());
                rep.nics = wanted
                    .iter()
                    .map(|w| status(w, NicState::Unknown, e.to_string()))
                    .collect();
                return rep;
            }
        };
        let open = netns.as_ref().filter(|n| !n.closed);
        let mut links: Option<Links> = match open {
            Some(n) => match links::list(&n.path).await {
                Ok(l) => Some(l),
                Err(e) => {
                    rep.errors.push(format!("{e:#}"));
                    rep.nics = wanted
                        .iter()
                        .map(|w| status(w, NicState::Unknown, format!("{e:#}")))
                        .collect();
                    return rep;
                }
            },
            None => None,
        };
        rep.managed = wanted.iter().map(|w| w.ifname.clone()).collect();
        for e in &cached {
            if !rep.managed.contains(&e.ifname) {
                rep.managed.push(e.ifname.clone());
            }
        }

        // 1. Cached attachments that must go: half-done ADDs, NICs no longer wanted (or wanted
        //    differently), and everything whose sandbox is gone, closed, replaced or lost the link.
        let mut kept: Vec<CacheEntry> = Vec::new();
        let mut removed_any = false;
        for e in cached {
            let want = wanted.iter().find(|w| w.ifname == e.ifname);
            let why_remove = if e.state == CacheState::InProgress {
                Some("rolling back an unfinished plug")
            } else if want.is_none() {
                Some("no longer wanted")
            } else if want.is_some_and(|w| {
                w.network_ref_string() != e.network().to_string()
                    || w.mac.map(|m| m.to_string()) != e.mac
            }) {
                Some("its network or MAC changed")
            } else if netns.as_ref().is_none_or(|n| n.closed) {
                Some("the pod sandbox is gone")
            } else if open.is_some_and(|n| n.path.to_string_lossy() != e.netns) {
                Some("the pod sandbox was replaced")
            } else if links.as_ref().is_some_and(|l| !l.contains_key(&e.ifname)) {
                Some("the interface disappeared from the pod")
            } else {
                None
            };
            match why_remove {
                None => kept.push(e),
                Some(why) => {
                    removed_any = true;
                    tracing::info!(pod = %pod, ifname = %e.ifname, why, "unplugging");
                    let unplug = e.state == CacheState::Added && want.is_none();
                    let result = if e.state == CacheState::InProgress {
                        let present = links.as_ref().is_some_and(|l| l.contains_key(&e.ifname));
                        self.rollback(&e, present).await
                    } else {
                        self.unplug(&e).await
                    };
                    match result {
                        Ok(()) => {
                            if unplug {
                                rep.events.push(AgentEvent {
                                    reason: reasons::UNPLUGGED,
                                    ifname: e.ifname.clone(),
                                    message: format!(
                                        "unplugged {} from network {}",
                                        e.ifname,
                                        e.network()
                                    ),
                                    warning: false,
                                });
                            }
                        }
                        Err(err) => {
                            let msg = format!("unplugging {} ({why}): {err}", e.ifname);
                            rep.errors.push(msg.clone());
                            if want.is_some() {
                                // It stays cached; reported below as Failed.
                                kept.push(CacheEntry {
                                    state: CacheState::InProgress,
                                    ..e
                                });
                            }
                        }
                    }
                }
            }
        }

        // What step 1 removed is gone from the namespace too: look again before plugging.
        if let (Some(n), true) = (open, removed_any) {
            match links::list(&n.path).await {
                Ok(l) => links = Some(l),
                Err(e) => {
                    rep.errors.push(format!("{e:#}"));
                    links = None;
                }
            }
        }

        // 2. Wanted NICs (a name asked for twice: only the first is plugged).
        for (i, w) in wanted.iter().enumerate() {
            if wanted[..i].iter().any(|o| o.ifname == w.ifname) {
                let msg = format!(
                    "interface name {} is used by an earlier NIC of this pod",
                    w.ifname
                );
                rep.errors.push(msg.clone());
                rep.nics.push(status(w, NicState::Failed, msg));
                continue;
            }
            let cached = kept.iter().find(|e| e.ifname == w.ifname);
            let st = match (cached, open, &links) {
                (Some(e), _, _) if e.state == CacheState::InProgress => status(
                    w,
                    NicState::Failed,
                    rep.errors.last().cloned().unwrap_or_default(),
                ),
                (Some(e), Some(_), Some(l)) => {
                    self.ready(w, e, l.get(&w.ifname).cloned(), &mut rep)
                }
                (_, None, _) | (_, _, None) => {
                    rep.pending = true;
                    status(
                        w,
                        NicState::Unknown,
                        match &netns {
                            Some(n) if n.closed => "the pod sandbox is stopped".into(),
                            _ => "waiting for the pod's network namespace".into(),
                        },
                    )
                }
                (None, Some(ns), Some(l)) => self.plug(pod, w, ns, l, &mut rep).await,
            };
            rep.nics.push(st);
        }
        rep
    }

    fn ready(
        &self,
        w: &WantedNic,
        e: &CacheEntry,
        link_mac: Option<String>,
        rep: &mut PodReport,
    ) -> NicStatus {
        let summary = e
            .result
            .as_ref()
            .map(|r| ResultSummary::from_result(r, &w.ifname))
            .unwrap_or_default();
        let mac = link_mac
            .filter(|m| !m.is_empty())
            .or(summary.mac.clone())
            .or(e.mac.clone());
        rep.network_status.push(NetworkStatusEntry {
            network: w.network_ref_string(),
            interface: w.ifname.clone(),
            ips: summary.ips.iter().map(|a| address_only(a)).collect(),
            mac: mac.clone(),
            dns: summary.dns.clone(),
            gateway: summary.gateways.clone(),
        });
        NicStatus {
            name: w.ifname.clone(),
            port_id: w.port_id.clone(),
            mac,
            state: NicState::Ready,
            reason: String::new(),
        }
    }

    async fn plug(
        &self,
        pod: &PodRef,
        w: &WantedNic,
        ns: &SandboxNetns,
        links: &Links,
        rep: &mut PodReport,
    ) -> NicStatus {
        let fail = |rep: &mut PodReport, msg: String| {
            rep.errors.push(format!("{}: {msg}", w.ifname));
            rep.events.push(AgentEvent {
                reason: reasons::PLUG_FAILED,
                ifname: w.ifname.clone(),
                message: msg.clone(),
                warning: true,
            });
            status(w, NicState::Failed, msg)
        };
        if let Some(p) = &w.mac_problem {
            return fail(rep, p.clone());
        }
        if w.network.is_none() {
            return fail(rep, format!("{} names no network", w.ifname));
        }
        let config = match &w.config {
            Ok(c) => c.clone(),
            Err(e) => return fail(rep, e.clone()),
        };
        let list = match NetConfList::parse(&config) {
            Ok(l) => l,
            Err(e) => return fail(rep, format!("network {}: {e}", w.network_ref_string())),
        };
        let mut entry = self.entry(pod, w, ns, config);
        if let Some(existing) = links.get(&w.ifname) {
            // Adopt only what is provably ours: the right name and the MAC we asked for.
            if w.mac.is_some_and(|m| m.to_string() == *existing) {
                entry.state = CacheState::Added;
                entry.adopted = true;
                if let Err(e) = self.cache.put(&entry).await {
                    return fail(rep, e.to_string());
                }
                tracing::info!(pod = %pod, ifname = %w.ifname, "adopted existing interface");
                return self.ready(w, &entry, Some(existing.clone()), rep);
            }
            return fail(
                rep,
                format!(
                    "interface {} already exists in the pod and was not plugged by hotnic; not touching it",
                    w.ifname
                ),
            );
        }
        let started = Instant::now();
        if let Err(e) = self.cache.put(&entry).await {
            return fail(rep, e.to_string());
        }
        let rt = runtime_args(&entry);
        match self.invoker.add_list(&list, &rt).await {
            Ok(result) => {
                entry.state = CacheState::Added;
                entry.result = Some(result);
                if let Err(e) = self.cache.put(&entry).await {
                    // Without a durable record the plug must not stand.
                    let _ = self
                        .invoker
                        .del_list(&list, &rt, entry.result.as_ref())
                        .await;
                    let _ = self.cache.remove(&pod.uid, &w.ifname).await;
                    self.metrics.plug(false);
                    return fail(rep, e.to_string());
                }
                self.metrics.plug(true);
                self.metrics
                    .plug_latency
                    .observe(started.elapsed().as_secs_f64());
                if let Some(hook) = &self.after_add {
                    hook(pod, &w.ifname);
                }
                tracing::info!(pod = %pod, ifname = %w.ifname, network = %w.network_ref_string(), "plugged");
                rep.events.push(AgentEvent {
                    reason: reasons::PLUGGED,
                    ifname: w.ifname.clone(),
                    message: format!(
                        "plugged {} into network {}",
                        w.ifname,
                        w.network_ref_string()
                    ),
                    warning: false,
                });
                self.ready(w, &entry, None, rep)
            }
            Err(add_err) => {
                self.metrics.plug(false);
                // Undo whatever part of the chain ran; the entry stays InProgress if that fails too.
                match self.invoker.del_list(&list, &rt, None).await {
                    Ok(()) => {
                        let _ = self.cache.remove(&pod.uid, &w.ifname).await;
                    }
                    Err(del_err) => {
                        tracing::warn!(pod = %pod, ifname = %w.ifname, error = %del_err, "rollback DEL failed; retried later")
                    }
                }
                tracing::warn!(pod = %pod, ifname = %w.ifname, error = %add_err, "plug failed");
                fail(rep, add_err.to_string())
            }
        }
    }

    fn entry(&self, pod: &PodRef, w: &WantedNic, ns: &SandboxNetns, config: String) -> CacheEntry {
        let net = w
            .network
            .clone()
            .unwrap_or_else(|| crate::model::NetworkRef {
                namespace: String::new(),
                name: String::new(),
            });
        let mut caps = Map::new();
        let mut cni_args = vec![
            ("IgnoreUnknown".to_string(), "true".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), pod.namespace.clone()),
            ("K8S_POD_NAME".to_string(), pod.name.clone()),
            ("K8S_POD_UID".to_string(), pod.uid.clone()),
        ];
        if let Some(m) = w.mac {
            caps.insert("mac".into(), json!(m.to_string()));
            cni_args.push(("MAC".into(), m.to_string()));
        }
        if !w.ips.is_empty() {
            caps.insert("ips".into(), json!(w.ips));
        }
        CacheEntry {
            kind: "hotnicCacheV1".into(),
            pod_uid: pod.uid.clone(),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            ifname: w.ifname.clone(),
            container_id: container_id(pod),
            netns: ns.path.to_string_lossy().to_string(),
            network_namespace: net.namespace,
            network_name: net.name,
            config,
            cni_args,
            capability_args: caps,
            mac: w.mac.map(|m| m.to_string()),
            port_id: w.port_id.clone(),
            state: CacheState::InProgress,
            result: None,
            adopted: false,
        }
    }

    /// DEL with exactly what ADD used, then forget the entry. The old namespace path is passed
    /// while it exists, an empty `CNI_NETNS` otherwise (IPAM still releases).
    pub async fn unplug(&self, e: &CacheEntry) -> Result<(), CniError> {
        let list = match NetConfList::parse(&e.config) {
            Ok(l) => l,
            Err(err) => {
                // Never ADDed with this (entries are written after parsing); nothing to undo.
                tracing::warn!(ifname = %e.ifname, error = %err, "cached config unusable; forgetting entry");
                return self.cache.remove(&e.pod_uid, &e.ifname).await;
            }
        };
        let mut rt = runtime_args(e);
        if !e.netns.is_empty() && !Path::new(&e.netns).exists() {
            rt.netns = String::new();
        }
        let r = self.invoker.del_list(&list, &rt, e.result.as_ref()).await;
        if e.state == CacheState::Added {
            self.metrics.unplug(r.is_ok());
        }
        r?;
        self.cache.remove(&e.pod_uid, &e.ifname).await
    }

    /// Rolls back an unfinished ADD: DEL through every plugin (not stopping at a failure). The
    /// entry is forgotten when that worked, or when the DEL failed but the interface is not in the
    /// pod (a plugin that rejected the config on ADD rejects it on DEL as well; retrying could
    /// never succeed). It is kept, for another rollback, while the interface is still there.
    pub async fn rollback(&self, e: &CacheEntry, link_present: bool) -> Result<(), CniError> {
        let Ok(list) = NetConfList::parse(&e.config) else {
            return self.cache.remove(&e.pod_uid, &e.ifname).await;
        };
        let mut rt = runtime_args(e);
        if !e.netns.is_empty() && !Path::new(&e.netns).exists() {
            rt.netns = String::new();
        }
        let errors = self
            .invoker
            .del_list_best_effort(&list, &rt, e.result.as_ref())
            .await;
        match errors.into_iter().next() {
            Some(err) if link_present => Err(err),
            Some(err) => {
                tracing::warn!(pod_uid = %e.pod_uid, ifname = %e.ifname, error = %err, "rollback DEL failed but nothing is left in the pod; forgetting the attempt");
                self.cache.remove(&e.pod_uid, &e.ifname).await
            }
            None => self.cache.remove(&e.pod_uid, &e.ifname).await,
        }
    }

    /// The pod is gone: DEL everything hotnic plugged into it and forget it.
    pub async fn teardown(&self, uid: &str) -> PodReport {
        let mut rep = PodReport::default();
        let entries = match self.cache.list(uid).await {
            Ok(e) => e,
            Err(e) => {
                rep.errors.push(e.to_string());
                return rep;
            }
        };
        for e in entries {
            rep.managed.push(e.ifname.clone());
            let result = if e.state == CacheState::InProgress {
                let present = match links::list(Path::new(&e.netns)).await {
                    Ok(l) => l.contains_key(&e.ifname),
                    Err(_) => Path::new(&e.netns).exists(),
                };
                self.rollback(&e, present).await
            } else {
                self.unplug(&e).await
            };
            match result {
                Ok(()) => {
                    if e.state == CacheState::Added {
                        rep.events.push(AgentEvent {
                            reason: reasons::UNPLUGGED,
                            ifname: e.ifname.clone(),
                            message: format!(
                                "unplugged {} from network {} (pod deleted)",
                                e.ifname,
                                e.network()
                            ),
                            warning: false,
                        });
                    }
                }
                Err(err) => rep.errors.push(format!("unplugging {}: {err}", e.ifname)),
            }
        }
        rep
    }
}

impl WantedNic {
    /// `namespace/name` of its network (empty when it names none).
    pub fn network_ref_string(&self) -> String {
        self.network
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

/// `CNI_CONTAINERID` for a pod: its uid, made safe (`[A-Za-z0-9][A-Za-z0-9_.-]*`).
pub fn container_id(pod: &PodRef) -> String {
    let s: String = pod
        .uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        s
    } else {
        format!("p{s}")
    }
}

fn runtime_args(e: &CacheEntry) -> RuntimeArgs {
    RuntimeArgs {
        container_id: e.container_id.clone(),
        netns: e.netns.clone(),
        ifname: e.ifname.clone(),
        cni_args: e.cni_args.clone(),
        capability_args: e.capability_args.clone(),
    }
}

fn status(w: &WantedNic, state: NicState, reason: String) -> NicStatus {
    NicStatus {
        name: w.ifname.clone(),
        port_id: w.port_id.clone(),
        mac: w.mac.map(|m| m.to_string()),
        state,
        reason,
    }
}

/// The `hotnic.io/nic-status` value for a report.
pub fn nic_status_json(rep: &PodReport) -> Value {
    serde_json::to_value(&rep.nics).unwrap_or(Value::Null)
}
