//! Webhook metrics, in the Prometheus text format (prometheus-client).

use crate::admission::Phase;
use crate::dialect::Kind;
use crate::policy::Operation;
use crate::runtime::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::OnceLock;
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
    /// The series [`Metrics::answered`] counts in, by index (see [`Answered`]).
    answered: Answered,
}

/// What an answer is counted as in `reviews` (its `verdict` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `allowed`.
    Allowed,
    /// `denied`.
    Denied,
    /// `error`: no answer could be written.
    Error,
}

impl Verdict {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        }
    }
}

/// The label sets of answered reviews: endpoint × kind (the kinds hotnic reads, else `other`) ×
/// operation × verdict.
const ANSWERED: usize = 2 * (Kind::ALL.len() + 1) * 4 * 3;

/// The series of answered reviews, each taken from its family once: a family hashes the labels
/// (SipHash) and takes a lock on every lookup, where a review here indexes an array. The label
/// sets are bounded ([`ANSWERED`]); a series is made (and exported) when first counted, as the
/// family would make it.
#[derive(Debug)]
struct Answered {
    /// `reviews`, by [`Answered::index`].
    reviews: [OnceLock<Counter>; ANSWERED],
    /// `review_duration_seconds`, by endpoint (made up front: two series).
    latency: [Histogram; 2],
}

impl Answered {
    /// An endpoint's index (`latency`'s, and the first factor of [`Answered::index`]).
    fn endpoint(phase: Phase) -> usize {
        match phase {
            Phase::Mutate => 0,
            Phase::Validate => 1,
        }
    }

    fn index(phase: Phase, kind: Option<Kind>, operation: Operation, verdict: Verdict) -> usize {
        let phase = Self::endpoint(phase);
        let kind = kind.map_or(0, |k| 1 + k as usize);
        let operation = match operation {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        };
        ((phase * (Kind::ALL.len() + 1) + kind) * 4 + operation) * 3 + verdict as usize
    }
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
        let answered = Answered {
            reviews: std::array::from_fn(|_| OnceLock::new()),
            latency: [Phase::Mutate, Phase::Validate].map(|p| {
                let endpoint = p.as_str();
                latency.get_or_create(&EndpointLabels { endpoint }).clone()
            }),
        };
        Metrics {
            answered,
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

    /// Counts an answered review in `reviews` and observes its latency, as
    /// `reviews.get_or_create(…).inc()` and `latency.get_or_create(…).observe(…)` do, without
    /// looking the series up in the families (see [`Answered`]).
    pub fn answered(
        &self,
        phase: Phase,
        kind: Option<Kind>,
        operation: Operation,
        verdict: Verdict,
        seconds: f64,
    ) {
        let counter = self.answered.reviews[Answered::index(phase, kind, operation, verdict)]
            .get_or_init(|| {
                let labels = ReviewLabels {
                    endpoint: phase.as_str(),
                    kind: kind.map_or("other", |k| k.as_str()),
                    operation: operation.as_str(),
                    verdict: verdict.as_str(),
                };
                self.reviews.get_or_create(&labels).clone()
            });
        counter.inc();
        self.answered.latency[Answered::endpoint(phase)].observe(seconds);
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

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATIONS: [Operation; 4] = [
        Operation::Create,
        Operation::Update,
        Operation::Delete,
        Operation::Connect,
    ];
    const VERDICTS: [Verdict; 3] = [Verdict::Allowed, Verdict::Denied, Verdict::Error];

    /// Every label set of an answered review.
    fn every() -> Vec<(Phase, Option<Kind>, Operation, Verdict)> {
        let kinds = std::iter::once(None).chain(Kind::ALL.map(Some));
        let mut out = Vec::new();
        for phase in [Phase::Mutate, Phase::Validate] {
            for kind in kinds.clone() {
                for operation in OPERATIONS {
                    for verdict in VERDICTS {
                        out.push((phase, kind, operation, verdict));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn each_label_set_has_a_series_of_its_own() {
        let mut seen = [false; ANSWERED];
        for (p, k, o, v) in every() {
            let i = Answered::index(p, k, o, v);
            assert!(!seen[i], "{p:?} {k:?} {o:?} {v:?} shares series {i}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "every series is used");
    }

    /// `answered` counts in the family's series of its labels, as a lookup in the family does,
    /// and observes the endpoint's latency.
    #[test]
    fn answered_counts_in_the_series_of_its_labels() {
        let m = Metrics::new();
        for (n, (p, k, o, v)) in every().into_iter().enumerate() {
            for _ in 0..=n % 3 {
                m.answered(p, k, o, v, 0.001);
            }
        }
        for (n, (p, k, o, v)) in every().into_iter().enumerate() {
            let labels = ReviewLabels {
                endpoint: p.as_str(),
                kind: k.map_or("other", |k| k.as_str()),
                operation: o.as_str(),
                verdict: v.as_str(),
            };
            assert_eq!(m.reviews.get_or_create(&labels).get(), (n % 3 + 1) as u64);
        }
        let text = m.encode();
        for phase in [Phase::Mutate, Phase::Validate] {
            let observed: usize = (every().into_iter().enumerate())
                .filter(|(_, (p, ..))| *p == phase)
                .map(|(n, _)| n % 3 + 1)
                .sum();
            let endpoint = phase.as_str();
            let line = format!(
                "hotnic_webhook_review_duration_seconds_count{{endpoint=\"{endpoint}\"}} {observed}"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }
}
