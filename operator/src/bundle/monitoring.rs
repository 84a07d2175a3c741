//! Monitoring shipped in the bundle (pure): the operator's metrics Service, the ServiceMonitor
//! that scrapes it, and the PrometheusRule with the alerts an on-call engineer needs.
//!
//! Alert expressions use the metrics the code exports (`eg_operator_*`, see
//! [`crate::metrics`]) and Envoy's own request-time histogram for the data-plane latency alert.

use serde_json::{Value, json};

use super::{BundleError, File, METRICS_PORT, OPERATOR_NAME, yaml_file};

const SERVICE_NAME: &str = "eg-operator-metrics";

fn selector() -> Value {
    json!({"app.kubernetes.io/name": OPERATOR_NAME})
}

/// The Service in front of the operator's `/metrics`.
pub fn service() -> Result<File, BundleError> {
    yaml_file(
        "bundle/manifests/eg-operator-metrics_v1_service.yaml",
        &[json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "labels": selector()},
            "spec": {
                "selector": selector(),
                "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
            },
        })],
    )
}

/// The ServiceMonitor for Prometheus Operator.
pub fn service_monitor() -> Result<File, BundleError> {
    yaml_file(
        "bundle/manifests/eg-operator-metrics_monitoring.coreos.com_v1_servicemonitor.yaml",
        &[json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": SERVICE_NAME, "labels": selector()},
            "spec": {
                "selector": {"matchLabels": selector()},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
        })],
    )
}

/// One alert: name, expression, how long it must hold, severity, summary.
struct Alert {
    name: &'static str,
    expr: &'static str,
    for_: &'static str,
    severity: &'static str,
    summary: &'static str,
    description: &'static str,
}

const ALERTS: &[Alert] = &[
    Alert {
        name: "EnvoyGatewayOperatorDown",
        expr: "absent(up{job=\"eg-operator-metrics\"} == 1)",
        for_: "10m",
        severity: "critical",
        summary: "The Envoy Gateway operator is not running.",
        description: "No eg-operator replica has been scraped for 10 minutes: environments are not reconciled, certificates are not rotated and upgrades do not progress.",
    },
    Alert {
        name: "EnvoyGatewayReconcileErrors",
        expr: "sum by (category) (rate(eg_operator_reconcile_failures_total[10m])) > 0",
        for_: "15m",
        severity: "warning",
        summary: "EnvoyGateway reconciles keep failing ({{ $labels.category }}).",
        description: "Reconciles have failed with category {{ $labels.category }} for 15 minutes. The operator's Events on the EnvoyGateway name the cause.",
    },
    Alert {
        name: "EnvoyGatewayEnvironmentDegraded",
        expr: "sum by (verdict) (rate(eg_operator_reconciles_total{verdict=~\"invalid_spec|conflict\"}[10m])) > 0",
        for_: "15m",
        severity: "warning",
        summary: "An EnvoyGateway environment is Degraded ({{ $labels.verdict }}).",
        description: "An EnvoyGateway has an invalid spec or conflicts with objects it does not own; what runs is left untouched until it is fixed.",
    },
    Alert {
        name: "EnvoyGatewaySlowReconcile",
        expr: "histogram_quantile(0.99, sum by (le) (rate(eg_operator_reconcile_duration_seconds_bucket[10m]))) > 10",
        for_: "15m",
        severity: "warning",
        summary: "EnvoyGateway reconciles are slow.",
        description: "The 99th percentile of a reconcile pass has exceeded 10 seconds for 15 minutes; the apiserver may be overloaded.",
    },
    Alert {
        name: "EnvoyGatewayHighLatency",
        expr: "histogram_quantile(0.99, sum by (le, namespace) (rate(envoy_http_downstream_rq_time_bucket[5m]))) > 1000",
        for_: "10m",
        severity: "warning",
        summary: "Envoy proxies answer slowly in {{ $labels.namespace }}.",
        description: "The 99th percentile of request time through the Envoy proxies of namespace {{ $labels.namespace }} has exceeded 1 second for 10 minutes.",
    },
];

/// The operator's alerts.
pub fn prometheus_rule() -> Result<File, BundleError> {
    let rules: Vec<Value> = ALERTS
        .iter()
        .map(|a| {
            let Alert {
                name,
                expr,
                for_,
                severity,
                summary,
                description,
            } = a;
            json!({
                "alert": name,
                "expr": expr,
                "for": for_,
                "labels": {"severity": severity},
                "annotations": {"summary": summary, "description": description},
            })
        })
        .collect();
    yaml_file(
        "bundle/manifests/eg-operator-alerts_monitoring.coreos.com_v1_prometheusrule.yaml",
        &[json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "eg-operator-alerts", "labels": selector()},
            "spec": {"groups": [{"name": "eg-operator", "rules": rules}]},
        })],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_use_exported_metrics_and_include_high_latency() {
        let metrics = crate::metrics::Metrics::new();
        // Families without samples are not exposed: record one failed pass.
        metrics.observe("error", Some("apply"), std::time::Duration::from_millis(5));
        let text = metrics.encode();
        for alert in ALERTS {
            if let Some(metric) = alert
                .expr
                .split(['(', '{', '['])
                .find(|s| s.starts_with("eg_operator_"))
            {
                let family = metric
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_total");
                assert!(
                    text.contains(family),
                    "{} uses {metric}, not exported",
                    alert.name
                );
            }
        }
        assert!(ALERTS.iter().any(|a| a.name == "EnvoyGatewayHighLatency"));
    }
}
