//! The agent's metrics (prometheus-client), under `hotnic_agent_`. They are served, with the
//! agent's readiness, by the runtime's admin listener (see [`super::admin_router`]).

use crate::runtime::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Label set: `result` = `success` | `failure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: String,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// NIC plugs (CNI ADD) by result.
    pub plugs: Family<ResultLabel, Counter>,
    /// NIC unplugs (CNI DEL) by result.
    pub unplugs: Family<ResultLabel, Counter>,
    /// Seconds from the start of a plug to its result being cached.
    pub plug_latency: Histogram,
    /// Seconds a VM NIC's attach took, until the live domain XML shows it.
    pub vm_attach_latency: Histogram,
    /// Seconds a VM NIC's detach took, until the live domain XML no longer shows it.
    pub vm_detach_latency: Histogram,
    /// Pods the agent manages (with NICs desired or plugged).
    pub pods_managed: Gauge,
    /// Pod reconciles that ended with an error.
    pub reconcile_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        let mut registry = MetricsRegistry::new("hotnic_agent");
        let plugs = Family::<ResultLabel, Counter>::default();
        let unplugs = Family::<ResultLabel, Counter>::default();
        let plug_latency = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let vm_attach_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let vm_detach_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let pods_managed = Gauge::default();
        let reconcile_errors = Counter::default();
        registry.register("plugs", "NIC plugs (CNI ADD) by result", plugs.clone());
        registry.register(
            "unplugs",
            "NIC unplugs (CNI DEL) by result",
            unplugs.clone(),
        );
        registry.register(
            "plug_latency_seconds",
            "Time from starting a plug to its result being cached",
            plug_latency.clone(),
        );
        registry.register(
            "vm_attach_latency_seconds",
            "Time from starting a VM NIC's attach until the live domain XML shows it",
            vm_attach_latency.clone(),
        );
        registry.register(
            "vm_detach_latency_seconds",
            "Time from a VM NIC's detach request until the live domain XML no longer shows it",
            vm_detach_latency.clone(),
        );
        registry.register(
            "pods_managed",
            "Pods with NICs desired or plugged",
            pods_managed.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Pod reconciles that ended with an error",
            reconcile_errors.clone(),
        );
        Self {
            registry,
            plugs,
            unplugs,
            plug_latency,
            vm_attach_latency,
            vm_detach_latency,
            pods_managed,
            reconcile_errors,
        }
    }

    /// Counts a plug.
    pub fn plug(&self, ok: bool) {
        self.plugs.get_or_create(&label(ok)).inc();
    }

    /// Counts an unplug.
    pub fn unplug(&self, ok: bool) {
        self.unplugs.get_or_create(&label(ok)).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.registry.encode()
    }
}

fn label(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "success" } else { "failure" }.into(),
    }
}
