//! Webhook metrics, in the Prometheus text format (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of one review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// Object kind (`Pod`, `VirtualMachine`, …; `invalid` for unreadable bodies).
    pub kind: String,
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

/// Every webhook metric.
#[derive(Debug)]
pub struct Metrics {
    /// The registry they are in.
    pub registry: Registry,
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
    /// MACs the allocator holds.
    pub macs_held: Gauge<u64, AtomicU64>,
}

impl Metrics {
    /// Registers every metric under the `hotnic_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hotnic_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.5, 12))
        });
        let denials = Family::<RuleLabels, Counter>::default();
        let in_flight = Gauge::default();
        let cert_not_after = Gauge::default();
        let cert_reloads = Counter::default();
        let macs_held = Gauge::<u64, AtomicU64>::default();
        registry.register("reviews", "Admission reviews answered", reviews.clone());
        registry.register("review_duration_seconds", "Time to answer a review", latency.clone());
        registry.register("denial_causes", "Denial causes by rule", denials.clone());
        registry.register("in_flight_reviews", "Reviews being answered", in_flight.clone());
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the serving certificate (Unix time)",
            cert_not_after.clone(),
        );
        registry.register("certificate_reloads", "Serving certificate reloads", cert_reloads.clone());
        registry.register("macs_allocated", "MAC addresses the allocator holds", macs_held.clone());
        Metrics {
            registry,
            reviews,
            latency,
            denials,
            in_flight,
            cert_not_after,
            cert_reloads,
            macs_held,
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
