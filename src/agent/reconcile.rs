//! The per-pod reconciler: desired NICs vs what hotnic plugged (the cache) and what is really in
//! the namespace. Plugs missing NICs, unplugs removed ones, adopts an interface already in place
//! with the right name and MAC, rolls back half-done ADDs, tears down deleted pods. It never
//! touches an interface it has no cache entry for (eth0 and every foreign interface).

use super::cni::error::{CacheError, ConfigError};
use super::cni::{
    CacheEntry, CacheState, CniError, Invoker, NetConfList, ResultCache, ResultSummary, RuntimeArgs,
};
use super::desired::{DesiredPod, InvalidMac, NetworkConfig, NetworkError, WantedNic};
use super::links::{self, Links, LinksError};
use super::metrics::Metrics;
use super::netns::{NetnsError, NetnsResolver, PodNetns, PodRef};
use super::status::{NetworkStatusEntry, NicState, NicStatus, address_only};
use super::vm::{VmError, VmPlugger, VmPort};
use crate::model::NetworkRef;
use crate::runtime::{Chain, Flag};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
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

/// Why a NIC could not be plugged. Its status `reason` and its `NICPlugFailed` Event show it with
/// every cause ([`Chain`]).
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    /// The MAC written on the NIC is not a MAC address.
    #[error(transparent)]
    Mac(InvalidMac),
    /// The NIC names no network.
    #[error("{ifname} names no network")]
    NoNetwork {
        /// The interface name.
        ifname: String,
    },
    /// Nobody looked the network's config up (the caller left it [`NetworkConfig::Unresolved`]).
    #[error("network {network}: its config was not looked up")]
    Unresolved {
        /// The network.
        network: NetworkRef,
    },
    /// The network has no usable config.
    #[error(transparent)]
    Network(NetworkError),
    /// The network's config is not a usable CNI config.
    #[error("network {network}: invalid CNI network configuration")]
    Config {
        /// The network.
        network: NetworkRef,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
    /// An interface of that name is in the pod and hotnic did not plug it.
    #[error(
        "interface {ifname} already exists in the pod and was not plugged by hotnic; not touching it"
    )]
    Foreign {
        /// The interface name.
        ifname: String,
    },
    /// The plug could not be recorded in the result cache.
    #[error("result cache")]
    Cache(#[source] CacheError),
    /// A plugin failed (ADD).
    #[error(transparent)]
    Cni(CniError),
    /// The NIC is in the pod but could not be put into its VM.
    #[error(transparent)]
    Vm(VmError),
}

/// Why a NIC could not be unplugged.
#[derive(Debug, thiserror::Error)]
pub enum UnplugError {
    /// The VM did not give the NIC back (nothing was torn down).
    #[error(transparent)]
    Vm(VmError),
    /// A plugin failed (DEL).
    #[error(transparent)]
    Cni(#[from] CniError),
}

/// Something that went wrong in a reconcile or a teardown of a pod: the pod is retried with
/// backoff. Shown with every cause ([`Chain`]).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The pod's network namespace could not be looked up.
    #[error("network namespace lookup")]
    Netns(#[source] NetnsError),
    /// The result cache could not be read.
    #[error("result cache")]
    Cache(#[source] CacheError),
    /// The interfaces in the pod's namespace could not be listed.
    #[error(transparent)]
    Links(LinksError),
    /// An interface hotnic plugged could not be unplugged (or a half-done plug rolled back).
    #[error("unplugging {ifname} ({why})")]
    Unplug {
        /// The interface name.
        ifname: String,
        /// Why it was being unplugged.
        why: &'static str,
        /// What failed.
        #[source]
        source: UnplugError,
    },
    /// Two NICs of the pod ask for the same interface name: only the first is plugged.
    #[error("interface name {ifname} is used by an earlier NIC of this pod")]
    DuplicateIfname {
        /// The interface name.
        ifname: String,
    },
    /// A NIC could not be plugged.
    #[error("{ifname}")]
    Plug {
        /// The interface name.
        ifname: String,
        /// Why.
        #[source]
        source: PlugError,
    },
}

/// What one reconcile of a pod found and did.
#[derive(Debug, Default)]
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
    pub errors: Vec<ReconcileError>,
    /// Nothing failed but the pod is not converged yet (e.g. no network namespace yet).
    pub pending: bool,
}

impl PodReport {
    /// Whether the pod should be retried soon.
    pub fn needs_retry(&self) -> bool {
        !self.errors.is_empty() || self.pending
    }

    /// Each error with its causes, as text (status files, logs).
    pub fn error_messages(&self) -> Vec<String> {
        self.errors.iter().map(|e| Chain(e).to_string()).collect()
    }

    /// Appends what one NIC's plug reported on its own (everything but `nics` and `managed`).
    fn absorb(&mut self, other: PodReport) {
        self.network_status.extend(other.network_status);
        self.events.extend(other.events);
        self.errors.extend(other.errors);
        self.pending |= other.pending;
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
    /// Set once the first full reconcile pass is done (a readiness check of the agent's).
    pub synced: Flag,
    /// Test hook (see [`AfterAddHook`]).
    pub after_add: Option<AfterAddHook>,
    /// Plugs VM pods' NICs into their libvirt domains.
    pub vm: Arc<VmPlugger>,
    /// How many CNI ADDs of one pod run at once (1: one after another). The VM half of a plug
    /// stays one NIC at a time (libvirt serialises a domain's jobs anyway).
    pub parallel_plugs: usize,
}

/// Default for [`Reconciler::parallel_plugs`].
pub const DEFAULT_PARALLEL_PLUGS: usize = 8;

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
            synced: Flag::new(),
            after_add: None,
            vm: Arc::new(VmPlugger::default()),
            parallel_plugs: DEFAULT_PARALLEL_PLUGS,
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
                None if matches!(w.config, NetworkConfig::Found(_)) && w.mac_problem.is_none() => {
                    plugging = true;
                    status(w, NicState::InProgress, "plugging".into())
                }
                None => status(w, NicState::Unknown, String::new()),
            };
            rep.nics.push(st);
        }
        plugging.then_some(rep)
    }

    /// Makes one pass over a pod, asking the resolver for its network namespace.
    pub async fn reconcile(&self, pod: &PodRef, wanted: &[WantedNic]) -> PodReport {
        let netns = self.resolver.netns(pod).await;
        self.reconcile_in(pod, wanted, netns).await
    }

    /// Makes one pass over a pod whose network namespace was already looked up (`netns`: what a
    /// [`NetnsResolver`] answered), so a caller that needs the namespace before the pass (to show
    /// `InProgress`) asks only once.
    pub async fn reconcile_in(
        &self,
        pod: &PodRef,
        wanted: &[WantedNic],
        netns: Result<Option<PodNetns>, NetnsError>,
    ) -> PodReport {
        self.pass(pod, wanted, None, netns).await
    }

    /// [`Reconciler::reconcile_in`] for a pod as read: a VM pod's NICs are also put into its
    /// libvirt domain (see [`crate::agent::vm`]).
    pub async fn reconcile_pod(
        &self,
        d: &DesiredPod,
        netns: Result<Option<PodNetns>, NetnsError>,
    ) -> PodReport {
        let domain =
            d.vm.as_ref()
                .map(|t| self.vm.domain_name(&d.pod, t.domain.as_deref()));
        self.pass(&d.pod, &d.nics, domain.as_deref(), netns).await
    }

    async fn pass(
        &self,
        pod: &PodRef,
        wanted: &[WantedNic],
        domain: Option<&str>,
        netns: Result<Option<PodNetns>, NetnsError>,
    ) -> PodReport {
        let mut rep = PodReport::default();
        // Nothing can be done without the namespace, the cache and the pod's links: every NIC is
        // Unknown, with the reason.
        let unknown = |rep: &mut PodReport, reason: String, e: ReconcileError| {
            rep.nics = wanted
                .iter()
                .map(|w| status(w, NicState::Unknown, reason.clone()))
                .collect();
            rep.errors.push(e);
        };
        let netns = match netns {
            Ok(n) => n,
            Err(e) => {
                let reason = format!("network namespace lookup failed: {}", Chain(&e));
                unknown(&mut rep, reason, ReconcileError::Netns(e));
                return rep;
            }
        };
        let cached = match self.cache.list(&pod.uid).await {
            Ok(c) => c,
            Err(e) => {
                let e = ReconcileError::Cache(e);
                unknown(&mut rep, Chain(&e).to_string(), e);
                return rep;
            }
        };
        let open = netns.as_ref().filter(|n| !n.closed);
        let mut links: Option<Links> = match open {
            Some(n) => match links::list(&n.path).await {
                Ok(l) => Some(l),
                Err(e) => {
                    let e = ReconcileError::Links(e);
                    unknown(&mut rep, Chain(&e).to_string(), e);
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
        let mut leaving: Vec<NicStatus> = Vec::new();
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
            } else if e
                .vm
                .as_ref()
                .is_some_and(|p| Some(p.domain.as_str()) != domain)
            {
                Some("its VM domain changed")
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
                    let result = match self.detach_vm(&e).await {
                        Err(err) => Err(UnplugError::Vm(err)),
                        Ok(()) if e.state == CacheState::InProgress => {
                            let present = links.as_ref().is_some_and(|l| l.contains_key(&e.ifname));
                            self.rollback(&e, present).await.map_err(UnplugError::from)
                        }
                        Ok(()) => self.unplug(&e).await.map_err(UnplugError::from),
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
                        Err(source) => {
                            let err = ReconcileError::Unplug {
                                ifname: e.ifname.clone(),
                                why,
                                source,
                            };
                            if want.is_none() {
                                // Still there: shown as Failed until it is gone.
                                leaving.push(NicStatus {
                                    name: e.ifname.clone(),
                                    port_id: e.port_id.clone(),
                                    mac: e.mac.clone(),
                                    state: NicState::Failed,
                                    reason: Chain(&err).to_string(),
                                });
                            }
                            rep.errors.push(err);
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
                    rep.errors.push(ReconcileError::Links(e));
                    links = None;
                }
            }
        }

        // 2a. The NICs that need a CNI ADD are plugged concurrently (up to `parallel_plugs` at
        //     once, each into its own report); the reports are merged in NIC order below, so the
        //     status, `network-status` and Events read as if the plugs ran one after another.
        let repeated = |i: usize| wanted[..i].iter().any(|o| o.ifname == wanted[i].ifname);
        let mut plugged: Vec<Option<(NicStatus, PodReport)>> = Vec::new();
        if let (Some(ns), Some(l)) = (open, &links) {
            plugged.resize_with(wanted.len(), || None);
            let mut todo = (0..wanted.len())
                .filter(|&i| !repeated(i) && !kept.iter().any(|e| e.ifname == wanted[i].ifname));
            let mut running = FuturesUnordered::new();
            loop {
                while running.len() < self.parallel_plugs.max(1) {
                    match todo.next() {
                        Some(i) => running.push(self.plug_alone(pod, i, &wanted[i], ns, l)),
                        None => break,
                    }
                }
                match running.next().await {
                    Some((i, st, own)) => plugged[i] = Some((st, own)),
                    None => break,
                }
            }
        }

        // 2b. Wanted NICs, in order (a name asked for twice: only the first is plugged).
        for (i, w) in wanted.iter().enumerate() {
            if repeated(i) {
                let e = ReconcileError::DuplicateIfname {
                    ifname: w.ifname.clone(),
                };
                rep.nics
                    .push(status(w, NicState::Failed, Chain(&e).to_string()));
                rep.errors.push(e);
                continue;
            }
            let cached = kept.iter().find(|e| e.ifname == w.ifname);
            let st = match (cached, open, &links) {
                (Some(e), _, _) if e.state == CacheState::InProgress => status(
                    w,
                    NicState::Failed,
                    rep.errors
                        .last()
                        .map(|e| Chain(e).to_string())
                        .unwrap_or_default(),
                ),
                (Some(e), Some(ns), Some(l)) => match domain {
                    Some(d) => self.put_into_vm(pod, w, e.clone(), ns, d, &mut rep).await,
                    None => self.ready(w, e, l.get(&w.ifname).cloned(), &mut rep),
                },
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
                (None, Some(ns), Some(l)) => {
                    let (st, own) = match plugged.get_mut(i).and_then(Option::take) {
                        Some(done) => done,
                        // Step 2a plugs every NIC of this arm; this is only a safety net.
                        None => {
                            let mut own = PodReport::default();
                            (self.plug(pod, w, ns, l, &mut own).await, own)
                        }
                    };
                    rep.absorb(own);
                    match (domain, st.state) {
                        (Some(d), NicState::Ready) => {
                            rep.network_status.pop();
                            match self.cache.get(&pod.uid, &w.ifname).await {
                                Ok(Some(e)) => self.put_into_vm(pod, w, e, ns, d, &mut rep).await,
                                Ok(None) => st,
                                Err(err) => {
                                    let err = ReconcileError::Cache(err);
                                    let st = status(w, NicState::Failed, Chain(&err).to_string());
                                    rep.errors.push(err);
                                    st
                                }
                            }
                        }
                        _ => st,
                    }
                }
            };
            rep.nics.push(st);
        }
        rep.nics.extend(leaving);
        rep
    }

    /// The VM half of a plug: the NIC (plugged into the pod, `e`) into the domain, idempotently.
    /// Ready only once the live domain XML shows it; a domain that does not run yet leaves the
    /// NIC Unknown and the pod pending.
    async fn put_into_vm(
        &self,
        pod: &PodRef,
        w: &WantedNic,
        mut e: CacheEntry,
        ns: &PodNetns,
        domain: &str,
        rep: &mut PodReport,
    ) -> NicStatus {
        let fail = |rep: &mut PodReport, e: PlugError| plug_failed(w, rep, e);
        let Some(mac) = e.mac.clone() else {
            let err = VmError::Link {
                op: format!("plugging {} into VM {domain}", w.ifname),
                message: "the NIC has no MAC (the webhook gives every NIC one)".into(),
            };
            return fail(rep, PlugError::Vm(err));
        };
        if e.vm.is_none() {
            // Recorded before anything is made, so an unplug after a crash finds it.
            e.vm = Some(VmPort::new(domain, &pod.uid, &w.ifname));
            if let Err(err) = self.cache.put(&e).await {
                return fail(rep, PlugError::Cache(err));
            }
        }
        let port =
            e.vm.clone()
                .unwrap_or_else(|| VmPort::new(domain, &pod.uid, &w.ifname));
        let started = Instant::now();
        match self.vm.attach(&port, &ns.path, &w.ifname, &mac).await {
            Ok(()) => {
                self.metrics
                    .vm_attach_latency
                    .observe(started.elapsed().as_secs_f64());
                self.ready(w, &e, None, rep)
            }
            Err(err) if err.is_waiting() => {
                rep.pending = true;
                status(w, NicState::Unknown, Chain(&err).to_string())
            }
            Err(err) => {
                tracing::warn!(pod = %pod, ifname = %w.ifname, domain, error = %Chain(&err), "VM attach failed");
                fail(rep, PlugError::Vm(err))
            }
        }
    }

    /// Takes a cached NIC out of its VM, if it went into one (see [`VmPlugger::detach`]).
    async fn detach_vm(&self, e: &CacheEntry) -> Result<(), VmError> {
        let (Some(port), Some(mac)) = (&e.vm, &e.mac) else {
            return Ok(());
        };
        let netns = (!e.netns.is_empty()).then(|| Path::new(&e.netns));
        let started = Instant::now();
        self.vm.detach(port, netns, mac).await?;
        self.metrics
            .vm_detach_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(())
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
        // A VM NIC's MAC is the guest's; the pod-side link has another one.
        let link_mac = if e.vm.is_some() { None } else { link_mac };
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

    /// [`Reconciler::plug`] into a report of its own (step 2a of a pass), tagged with the NIC's
    /// index.
    async fn plug_alone(
        &self,
        pod: &PodRef,
        i: usize,
        w: &WantedNic,
        ns: &PodNetns,
        links: &Links,
    ) -> (usize, NicStatus, PodReport) {
        let mut own = PodReport::default();
        let st = self.plug(pod, w, ns, links, &mut own).await;
        (i, st, own)
    }

    async fn plug(
        &self,
        pod: &PodRef,
        w: &WantedNic,
        ns: &PodNetns,
        links: &Links,
        rep: &mut PodReport,
    ) -> NicStatus {
        let fail = |rep: &mut PodReport, e: PlugError| plug_failed(w, rep, e);
        if let Some(p) = &w.mac_problem {
            return fail(rep, PlugError::Mac(p.clone()));
        }
        let Some(network) = &w.network else {
            return fail(
                rep,
                PlugError::NoNetwork {
                    ifname: w.ifname.clone(),
                },
            );
        };
        let config = match &w.config {
            NetworkConfig::Found(c) => c.clone(),
            NetworkConfig::Unavailable(e) => return fail(rep, PlugError::Network(e.clone())),
            NetworkConfig::Unresolved => {
                let network = network.clone();
                return fail(rep, PlugError::Unresolved { network });
            }
        };
        let list = match NetConfList::parse(&config) {
            Ok(l) => l,
            Err(source) => {
                let network = network.clone();
                return fail(rep, PlugError::Config { network, source });
            }
        };
        let mut entry = self.entry(pod, w, ns, config);
        if let Some(existing) = links.get(&w.ifname) {
            // Adopt only what is provably ours: the right name and the MAC we asked for.
            if w.mac.is_some_and(|m| m.to_string() == *existing) {
                entry.state = CacheState::Added;
                entry.adopted = true;
                if let Err(e) = self.cache.put(&entry).await {
                    return fail(rep, PlugError::Cache(e));
                }
                tracing::info!(pod = %pod, ifname = %w.ifname, "adopted existing interface");
                return self.ready(w, &entry, Some(existing.clone()), rep);
            }
            return fail(
                rep,
                PlugError::Foreign {
                    ifname: w.ifname.clone(),
                },
            );
        }
        let started = Instant::now();
        if let Err(e) = self.cache.put(&entry).await {
            return fail(rep, PlugError::Cache(e));
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
                    return fail(rep, PlugError::Cache(e));
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
                        tracing::warn!(pod = %pod, ifname = %w.ifname, error = %Chain(&del_err), "rollback DEL failed; retried later")
                    }
                }
                tracing::warn!(pod = %pod, ifname = %w.ifname, error = %Chain(&add_err), "plug failed");
                fail(rep, PlugError::Cni(add_err))
            }
        }
    }

    fn entry(&self, pod: &PodRef, w: &WantedNic, ns: &PodNetns, config: String) -> CacheEntry {
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
            vm: None,
        }
    }

    /// DEL with exactly what ADD used, then forget the entry. The old namespace path is passed
    /// while it exists, an empty `CNI_NETNS` otherwise (IPAM still releases).
    pub async fn unplug(&self, e: &CacheEntry) -> Result<(), CniError> {
        let list = match NetConfList::parse(&e.config) {
            Ok(l) => l,
            Err(err) => {
                // Never ADDed with this (entries are written after parsing); nothing to undo.
                tracing::warn!(ifname = %e.ifname, error = %Chain(&err), "cached config unusable; forgetting entry");
                return Ok(self.cache.remove(&e.pod_uid, &e.ifname).await?);
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
        Ok(self.cache.remove(&e.pod_uid, &e.ifname).await?)
    }

    /// Rolls back an unfinished ADD: DEL through every plugin (not stopping at a failure). The
    /// entry is forgotten when that worked, or when the DEL failed but the interface is not in the
    /// pod (a plugin that rejected the config on ADD rejects it on DEL as well; retrying could
    /// never succeed). It is kept, for another rollback, while the interface is still there.
    pub async fn rollback(&self, e: &CacheEntry, link_present: bool) -> Result<(), CniError> {
        let Ok(list) = NetConfList::parse(&e.config) else {
            return Ok(self.cache.remove(&e.pod_uid, &e.ifname).await?);
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
                tracing::warn!(pod_uid = %e.pod_uid, ifname = %e.ifname, error = %Chain(&err), "rollback DEL failed but nothing is left in the pod; forgetting the attempt");
                Ok(self.cache.remove(&e.pod_uid, &e.ifname).await?)
            }
            None => Ok(self.cache.remove(&e.pod_uid, &e.ifname).await?),
        }
    }

    /// The pod is gone: DEL everything hotnic plugged into it and forget it.
    pub async fn teardown(&self, uid: &str) -> PodReport {
        let mut rep = PodReport::default();
        let entries = match self.cache.list(uid).await {
            Ok(e) => e,
            Err(e) => {
                rep.errors.push(ReconcileError::Cache(e));
                return rep;
            }
        };
        for e in entries {
            rep.managed.push(e.ifname.clone());
            let result = match self.detach_vm(&e).await {
                Err(err) => Err(UnplugError::Vm(err)),
                Ok(()) if e.state == CacheState::InProgress => {
                    let present = match links::list(Path::new(&e.netns)).await {
                        Ok(l) => l.contains_key(&e.ifname),
                        Err(_) => Path::new(&e.netns).exists(),
                    };
                    self.rollback(&e, present).await.map_err(UnplugError::from)
                }
                Ok(()) => self.unplug(&e).await.map_err(UnplugError::from),
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
                Err(source) => rep.errors.push(ReconcileError::Unplug {
                    ifname: e.ifname.clone(),
                    why: "the pod was deleted",
                    source,
                }),
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

/// A failed plug: the error kept typed, a `NICPlugFailed` Event and a Failed status, both saying
/// why with every cause.
fn plug_failed(w: &WantedNic, rep: &mut PodReport, e: PlugError) -> NicStatus {
    let msg = Chain(&e).to_string();
    rep.errors.push(ReconcileError::Plug {
        ifname: w.ifname.clone(),
        source: e,
    });
    rep.events.push(AgentEvent {
        reason: reasons::PLUG_FAILED,
        ifname: w.ifname.clone(),
        message: msg.clone(),
        warning: true,
    });
    status(w, NicState::Failed, msg)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cri::CriError;
    use crate::agent::netns::TemplateResolver;

    fn pod() -> PodRef {
        PodRef {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "p".into(),
        }
    }

    fn net() -> NetworkRef {
        NetworkRef {
            namespace: "ns".into(),
            name: "n".into(),
        }
    }

    fn wanted(config: NetworkConfig) -> WantedNic {
        WantedNic {
            ifname: "eth1".into(),
            network: Some(net()),
            mac: None,
            mac_problem: None,
            ips: vec![],
            port_id: None,
            config,
        }
    }

    /// A failed namespace lookup: every NIC Unknown, the reason and the error with every cause,
    /// each cause once (the OS error is the CRI error's source, not part of its message).
    #[tokio::test]
    async fn a_failed_lookup_is_reported_with_every_cause_once() {
        let state = tempfile::tempdir().unwrap();
        let rec = Reconciler::new(
            Invoker::default(),
            ResultCache::new(state.path()),
            Arc::new(TemplateResolver::new("/nonexistent/{uid}")),
            Arc::new(Metrics::new()),
        );
        let err = NetnsError::Cri(CriError::Connect {
            socket: "/run/x.sock".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        let want = [wanted(NetworkConfig::Found("{}".into()))];
        let rep = rec.reconcile_in(&pod(), &want, Err(err)).await;
        assert_eq!(rep.nics[0].state, NicState::Unknown);
        assert_eq!(
            rep.nics[0].reason,
            "network namespace lookup failed: CRI socket /run/x.sock: cannot connect: connection refused"
        );
        assert_eq!(
            rep.error_messages(),
            [
                "network namespace lookup: CRI socket /run/x.sock: cannot connect: connection refused"
            ]
        );
        assert!(matches!(
            &rep.errors[..],
            [ReconcileError::Netns(NetnsError::Cri(
                CriError::Connect { .. }
            ))]
        ));
        assert!(rep.needs_retry());
    }

    /// What a plug failure says: the NIC, then each cause, as before the errors were typed.
    #[test]
    fn plug_errors_read_as_one_sentence() {
        let text = |e: PlugError| {
            Chain(&ReconcileError::Plug {
                ifname: "eth1".into(),
                source: e,
            })
            .to_string()
        };
        let source = NetConfList::parse("{").unwrap_err();
        assert_eq!(
            text(PlugError::Config {
                network: net(),
                source
            }),
            "eth1: network ns/n: invalid CNI network configuration: not valid JSON: \
             EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            text(PlugError::Network(NetworkError::NotFound(net()))),
            "eth1: NetworkAttachmentDefinition ns/n not found"
        );
        let cache = CacheError::Io {
            op: "writing",
            path: "/s/cache/u1/eth1.json".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert_eq!(
            text(PlugError::Cache(cache)),
            "eth1: result cache: writing /s/cache/u1/eth1.json: permission denied"
        );
        assert_eq!(
            text(PlugError::Cni(CniError::Plugin {
                plugin: "host-local".into(),
                command: "ADD".into(),
                code: Some(7),
                msg: "invalid CIDR address: 10.95.0.0/33".into(),
                details: String::new(),
            })),
            "eth1: plugin host-local ADD failed: invalid CIDR address: 10.95.0.0/33 (code 7)"
        );
    }

    /// A NIC whose network was never looked up is not plugged, and says so.
    #[tokio::test]
    async fn an_unresolved_network_is_not_plugged() {
        let state = tempfile::tempdir().unwrap();
        let rec = Reconciler::new(
            Invoker::default(),
            ResultCache::new(state.path()),
            Arc::new(TemplateResolver::new("/nonexistent/{uid}")),
            Arc::new(Metrics::new()),
        );
        let w = wanted(NetworkConfig::Unresolved);
        assert!(
            rec.preview(&pod(), std::slice::from_ref(&w))
                .await
                .is_none()
        );
        let ns = PodNetns {
            path: state.path().into(),
            closed: false,
        };
        let mut rep = PodReport::default();
        let st = rec.plug(&pod(), &w, &ns, &Links::new(), &mut rep).await;
        assert_eq!(st.state, NicState::Failed);
        assert_eq!(st.reason, "network ns/n: its config was not looked up");
        assert_eq!(rep.events[0].message, st.reason);
        assert!(matches!(
            &rep.errors[..],
            [ReconcileError::Plug {
                source: PlugError::Unresolved { .. },
                ..
            }]
        ));
        assert!(state.path().read_dir().unwrap().next().is_none());
    }
}
