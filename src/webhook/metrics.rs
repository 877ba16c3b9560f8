//! Webhook metrics, in the Prometheus text format (prometheus-client).

use crate::runtime::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::atomic::AtomicU64;

/// Labels of one review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// Object kind (`Pod`, `VirtualMachine`, …; `invalid` for unreadable bodies).
    pub kind: &'static str,
    /// CREATE, UPDATE, …
    pub operation: &'static str,
    /// `allowed`, `denied` or `error`.
    pub verdict: &'static str,
}

/// Labels of a denial cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule (`names`, `macs`, …).
    pub rule: &'static str,
}

/// Labels of the review latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
}

/// Labels of the repair counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// `bound`, `released_owner_gone`, `released_unplugged`, `released_never_appeared`,
    /// `adopted`, `duplicate`.
    pub kind: &'static str,
}

/// Every webhook metric.
#[derive(Debug)]
pub struct Metrics {
    /// The registry they are in.
    pub registry: MetricsRegistry,
    /// Reviews by endpoint, kind, operation and verdict.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Review handling latency, seconds.
    pub latency: Family<EndpointLabels, Histogram>,
    /// Denial causes by rule.
    pub denials: Family<RuleLabels, Counter>,
    /// Reviews being handled.
    pub in_flight: Gauge,
    /// Serving certificate expiry (Unix seconds).
    pub cert_not_after: Gauge,
    /// Certificate reloads.
    pub cert_reloads: Counter,
    /// MAC claims the allocator knows of (its cache).
    pub macs_held: Gauge<u64, AtomicU64>,
    /// Time a review spent claiming MACs (API writes with `--allocator kubernetes`), seconds.
    pub allocation: Histogram,
    /// Claims asked for by reviews.
    pub claims: Counter,
    /// Candidates found claimed by another object (another replica) and retried.
    pub conflicts: Counter,
    /// Repairs done by the repair loop, by kind.
    pub repairs: Family<RepairLabels, Counter>,
    /// MACs carried by more than one object, as of the last repair pass.
    pub duplicates: Gauge<u64, AtomicU64>,
    /// Claims of MACs inside `--mac-range`, as a percentage of its usable addresses.
    pub range_used: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Registers every metric under the `hotnic_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = MetricsRegistry::new("hotnic_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.5, 12))
        });
        let denials = Family::<RuleLabels, Counter>::default();
        let in_flight = Gauge::default();
        let cert_not_after = Gauge::default();
        let cert_reloads = Counter::default();
        let macs_held = Gauge::<u64, AtomicU64>::default();
        let allocation = Histogram::new(exponential_buckets(0.000_05, 2.5, 12));
        let claims = Counter::default();
        let conflicts = Counter::default();
        let repairs = Family::<RepairLabels, Counter>::default();
        let duplicates = Gauge::<u64, AtomicU64>::default();
        let range_used = Gauge::<f64, AtomicU64>::default();
        registry.register("reviews", "Admission reviews answered", reviews.clone());
        registry.register(
            "review_duration_seconds",
            "Time to answer a review",
            latency.clone(),
        );
        registry.register("denial_causes", "Denial causes by rule", denials.clone());
        registry.register(
            "in_flight_reviews",
            "Reviews being answered",
            in_flight.clone(),
        );
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the serving certificate (Unix time)",
            cert_not_after.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads",
            cert_reloads.clone(),
        );
        registry.register(
            "macs_allocated",
            "MAC claims the allocator knows of (the claims cache with --allocator kubernetes)",
            macs_held.clone(),
        );
        registry.register(
            "mac_allocation_duration_seconds",
            "Time a review spent claiming MACs",
            allocation.clone(),
        );
        registry.register(
            "mac_claims",
            "MAC claims asked for by reviews",
            claims.clone(),
        );
        registry.register(
            "mac_claim_conflicts",
            "MAC candidates found claimed by another object and retried",
            conflicts.clone(),
        );
        registry.register(
            "mac_repairs",
            "MAC claim repairs done by the repair loop, by kind",
            repairs.clone(),
        );
        registry.register(
            "mac_duplicates",
            "MACs used by more than one object (last repair pass)",
            duplicates.clone(),
        );
        registry.register(
            "mac_range_used_percent",
            "Claims of MACs inside --mac-range, percent of its usable addresses",
            range_used.clone(),
        );
        Metrics {
            registry,
            reviews,
            latency,
            denials,
            in_flight,
            cert_not_after,
            cert_reloads,
            macs_held,
            allocation,
            claims,
            conflicts,
            repairs,
            duplicates,
            range_used,
        }
    }

    /// Sets the claim gauges from the allocator.
    pub fn observe_allocator(&self, a: &dyn crate::allocator::MacAllocator) {
        self.macs_held.set(a.held() as u64);
        let usable = a.range().usable_len().max(1) as f64;
        self.range_used
            .set(a.held_in_range() as f64 * 100.0 / usable);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.registry.encode()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
