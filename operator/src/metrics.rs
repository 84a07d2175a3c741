//! Prometheus metrics of the operator (prefix `eg_operator`), with prometheus-client: reconcile
//! passes by verdict, failures by stable error category, and pass duration. Labels use the
//! categories the error types define, so dashboards and alerts do not break when messages change.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: String,
}

/// The operator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<VerdictLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eg_operator");
        let reconciles = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "reconciles",
            "EnvoyGateway reconcile passes by verdict (ready, waiting, conflict, invalid_spec, error)",
            reconciles.clone(),
        );
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed EnvoyGateway reconcile passes by error category",
            failures.clone(),
        );
        // 1 ms .. ~16 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one EnvoyGateway reconcile pass",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records one pass.
    pub fn observe(&self, verdict: &str, error_category: Option<&str>, elapsed: Duration) {
        self.reconciles
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .inc();
        if let Some(category) = error_category {
            self.failures
                .get_or_create(&ErrorLabels {
                    category: category.to_owned(),
                })
                .inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_counted_by_verdict_and_category() {
        let m = Metrics::default();
        m.observe("ready", None, Duration::from_millis(3));
        m.observe("error", Some("apply"), Duration::from_millis(40));
        m.observe("error", Some("apply"), Duration::from_millis(40));
        let text = m.encode();
        assert!(
            text.contains("eg_operator_reconciles_total{verdict=\"ready\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("eg_operator_reconciles_total{verdict=\"error\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("eg_operator_reconcile_failures_total{category=\"apply\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("eg_operator_reconcile_duration_seconds_count 3"),
            "{text}"
        );
    }
}
