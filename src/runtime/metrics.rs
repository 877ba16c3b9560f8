//! The Prometheus registry a subcommand registers its metrics in, and its text exposition.

use prometheus_client::registry::{Metric, Registry};

/// The `Content-Type` of [`MetricsRegistry::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one subcommand, under one prefix (`hotnic_webhook`, `hotnic_agent`).
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry whose metric names start with `prefix_`.
    pub fn new(prefix: &str) -> Self {
        MetricsRegistry {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// Registers `metric` (a clone of it: counters, gauges and families share their value).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The OpenMetrics text exposition (what `/metrics` serves).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
