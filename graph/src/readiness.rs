//! When a live object counts as ready, so that the objects that need it may be applied.
//!
//! The executor applies one wave, then waits until every node of that wave is ready before
//! the next. The rules live here, as pure functions of the live JSON, so they can be tested
//! without a cluster and so the executor's only job is to fetch and ask.

use serde_json::Value;

/// The rule that decides whether a live object is ready.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Readiness {
    /// Ready as soon as it exists.
    Exists,
    /// `status.conditions[]` has an entry with `type` == X and `status` == `"True"`.
    Condition(String),
    /// Same as `Condition("Established")`: a CRD whose API the server now serves.
    CrdEstablished,
    /// The controller has seen the current spec and the rollout is complete:
    /// `status.observedGeneration >= metadata.generation`, `status.updatedReplicas` and
    /// `status.availableReplicas` are both `>= spec.replicas` (absent = 1), and no replica of an
    /// older template is left (`status.replicas <= status.updatedReplicas`: mid-rollout an old
    /// available pod and a new unready one would otherwise pass). With `spec.replicas == 0`
    /// only the generation has to have caught up.
    DeploymentAvailable,
}

impl Readiness {
    /// Whether `live` (the object as read from the API server) satisfies this rule.
    pub fn is_ready(&self, live: &Value) -> bool {
        match self {
            Readiness::Exists => true,
            Readiness::Condition(kind) => has_true_condition(live, kind),
            Readiness::CrdEstablished => has_true_condition(live, "Established"),
            Readiness::DeploymentAvailable => deployment_available(live),
        }
    }

    /// Short human description of what is waited for, for logs and status messages.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Exists => "exists".to_owned(),
            Readiness::Condition(kind) => format!("condition {kind}"),
            Readiness::CrdEstablished => "condition Established".to_owned(),
            Readiness::DeploymentAvailable => "Deployment Available".to_owned(),
        }
    }
}

fn has_true_condition(live: &Value, kind: &str) -> bool {
    live.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn deployment_available(live: &Value) -> bool {
    let int = |pointer: &str| live.pointer(pointer).and_then(Value::as_i64);
    // No observedGeneration means the controller has not looked at this object yet, which is
    // never ready. A missing metadata.generation only happens in hand-written fixtures (the
    // server always sets it), so it does not add a constraint.
    let Some(observed) = int("/status/observedGeneration") else {
        return false;
    };
    if observed < int("/metadata/generation").unwrap_or(0) {
        return false;
    }
    let wanted = int("/spec/replicas").unwrap_or(1);
    if wanted == 0 {
        return true;
    }
    let updated = int("/status/updatedReplicas").unwrap_or(0);
    updated >= wanted
        && int("/status/availableReplicas").unwrap_or(0) >= wanted
        && int("/status/replicas").unwrap_or(0) <= updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        generation: i64,
        replicas: Option<i64>,
        status: serde_json::Value,
    ) -> serde_json::Value {
        let mut spec = json!({});
        if let Some(r) = replicas {
            spec["replicas"] = json!(r);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "generation": generation},
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn deployment_available_when_caught_up() {
        let d = deployment(
            2,
            Some(3),
            json!({"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert!(Readiness::DeploymentAvailable.is_ready(&d));
    }

    #[test]
    fn deployment_not_ready_on_stale_generation() {
        let d = deployment(
            3,
            Some(3),
            json!({"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert!(!Readiness::DeploymentAvailable.is_ready(&d));
    }

    #[test]
    fn deployment_not_ready_while_rolling_out() {
        let not_updated = deployment(
            2,
            Some(3),
            json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 3}),
        );
        assert!(!Readiness::DeploymentAvailable.is_ready(&not_updated));
        let not_available = deployment(
            2,
            Some(3),
            json!({"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert!(!Readiness::DeploymentAvailable.is_ready(&not_available));
        // A new template's pod exists but is not ready; the old one still serves.
        let old_pod_left = deployment(
            2,
            Some(1),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        assert!(!Readiness::DeploymentAvailable.is_ready(&old_pod_left));
    }

    #[test]
    fn deployment_replicas_default_to_one() {
        let none = deployment(1, None, json!({"observedGeneration": 1}));
        assert!(!Readiness::DeploymentAvailable.is_ready(&none));
        let one = deployment(
            1,
            None,
            json!({"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        assert!(Readiness::DeploymentAvailable.is_ready(&one));
    }

    #[test]
    fn deployment_scaled_to_zero_needs_only_generation() {
        let caught_up = deployment(4, Some(0), json!({"observedGeneration": 4}));
        assert!(Readiness::DeploymentAvailable.is_ready(&caught_up));
        let stale = deployment(4, Some(0), json!({"observedGeneration": 3}));
        assert!(!Readiness::DeploymentAvailable.is_ready(&stale));
    }

    #[test]
    fn deployment_without_status_is_not_ready() {
        let d = json!({"metadata": {"generation": 1}, "spec": {"replicas": 0}});
        assert!(!Readiness::DeploymentAvailable.is_ready(&d));
    }

    fn with_conditions(conditions: serde_json::Value) -> serde_json::Value {
        json!({"status": {"conditions": conditions}})
    }

    #[test]
    fn condition_true_false_missing() {
        let rule = Readiness::Condition("Accepted".to_owned());
        assert!(rule.is_ready(&with_conditions(json!([
            {"type": "Programmed", "status": "False"},
            {"type": "Accepted", "status": "True"},
        ]))));
        assert!(!rule.is_ready(&with_conditions(json!([
            {"type": "Accepted", "status": "False"},
        ]))));
        assert!(!rule.is_ready(&with_conditions(json!([
            {"type": "Accepted", "status": "Unknown"},
        ]))));
        assert!(!rule.is_ready(&with_conditions(json!([
            {"type": "Programmed", "status": "True"},
        ]))));
        assert!(!rule.is_ready(&json!({"status": {}})));
        assert!(!rule.is_ready(&json!({})));
    }

    #[test]
    fn crd_established_is_the_established_condition() {
        let established = with_conditions(json!([
            {"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "True"},
        ]));
        let pending = with_conditions(json!([
            {"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "False"},
        ]));
        assert!(Readiness::CrdEstablished.is_ready(&established));
        assert!(!Readiness::CrdEstablished.is_ready(&pending));
        assert_eq!(
            Readiness::CrdEstablished.is_ready(&pending),
            Readiness::Condition("Established".to_owned()).is_ready(&pending)
        );
    }

    #[test]
    fn exists_is_always_ready() {
        assert!(Readiness::Exists.is_ready(&json!({})));
    }

    #[test]
    fn describe_texts() {
        assert_eq!(Readiness::Exists.describe(), "exists");
        assert_eq!(
            Readiness::Condition("Programmed".to_owned()).describe(),
            "condition Programmed"
        );
        assert_eq!(
            Readiness::CrdEstablished.describe(),
            "condition Established"
        );
        assert_eq!(
            Readiness::DeploymentAvailable.describe(),
            "Deployment Available"
        );
    }
}
