//! Validation of an `EnvoyGateway` (pure): what the CRD schema cannot express, checked before
//! anything is built. The result, [`Environment`], holds parsed values so later stages never
//! re-parse or re-check. Errors name the field, and an invalid spec waits for the user to change
//! it rather than being retried.

use std::time::Duration;

use eg_crds::EnvoyGateway;
use eg_crds::envoy_gateway::{AntiAffinity, ControlPlaneSpec, PodDisruptionBudgetSpec, ProxySpec};
use k8s_openapi::api::core::v1::ResourceRequirements;

use super::names::Names;

/// Why an EnvoyGateway spec cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("metadata.{field} is missing")]
    MissingMetadata { field: &'static str },
    #[error("{field}: {value:?} is not a duration like 8760h, 90m or 30s: {reason}")]
    InvalidDuration {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field}: must be positive")]
    NonPositiveDuration { field: &'static str },
    #[error(
        "spec.certificates.renewBefore ({renew_before}) must be shorter than spec.certificates.duration ({duration})"
    )]
    RenewBeforeNotShorter {
        renew_before: String,
        duration: String,
    },
    #[error(
        "spec.proxy.autoscaling.minReplicas ({min}) must not exceed spec.proxy.autoscaling.maxReplicas ({max})"
    )]
    AutoscalingBounds { min: i32, max: i32 },
    #[error("{field}: exactly one of minAvailable and maxUnavailable must be set")]
    PodDisruptionBudget { field: &'static str },
}

impl ValidationError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ValidationError::MissingMetadata { .. } => "missing_metadata",
            ValidationError::InvalidDuration { .. } => "invalid_duration",
            ValidationError::NonPositiveDuration { .. } => "non_positive_duration",
            ValidationError::RenewBeforeNotShorter { .. } => "renew_before_not_shorter",
            ValidationError::AutoscalingBounds { .. } => "autoscaling_bounds",
            ValidationError::PodDisruptionBudget { .. } => "pod_disruption_budget",
        }
    }
}

/// A validated environment: the EnvoyGateway's identity and its parsed spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub names: Names,
    pub uid: String,
    pub version: String,
    pub gateway_class_name: String,
    /// Sorted, without duplicates; empty means every namespace.
    pub watch_namespaces: Vec<String>,
    pub control_plane: ControlPlane,
    pub proxy: ProxySpec,
    /// `spec.extensionApis.enableBackend`.
    pub backend_api: bool,
    pub certificates: CertificateLifetimes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlPlane {
    pub replicas: i32,
    pub anti_affinity: AntiAffinity,
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,
    pub resources: Option<ResourceRequirements>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateLifetimes {
    pub duration: Duration,
    pub renew_before: Duration,
}

/// Checks `eg` and returns the environment it describes.
pub fn validate(eg: &EnvoyGateway) -> Result<Environment, ValidationError> {
    let namespace = eg
        .metadata
        .namespace
        .as_deref()
        .ok_or(ValidationError::MissingMetadata { field: "namespace" })?;
    let name = eg
        .metadata
        .name
        .as_deref()
        .ok_or(ValidationError::MissingMetadata { field: "name" })?;
    let uid = eg
        .metadata
        .uid
        .clone()
        .ok_or(ValidationError::MissingMetadata { field: "uid" })?;
    let eg_crds::EnvoyGatewaySpec {
        version,
        gateway_class_name,
        watch_namespaces,
        control_plane,
        proxy,
        certificates,
        extension_apis,
    } = &eg.spec;
    let eg_crds::envoy_gateway::ExtensionApisSpec { enable_backend } = extension_apis;
    let ControlPlaneSpec {
        replicas,
        anti_affinity,
        pod_disruption_budget,
        resources,
    } = control_plane;

    let duration = parse_duration("spec.certificates.duration", &certificates.duration)?;
    let renew_before = parse_duration("spec.certificates.renewBefore", &certificates.renew_before)?;
    if renew_before >= duration {
        return Err(ValidationError::RenewBeforeNotShorter {
            renew_before: certificates.renew_before.clone(),
            duration: certificates.duration.clone(),
        });
    }
    if let Some(a) = &proxy.autoscaling
        && a.min_replicas > a.max_replicas
    {
        return Err(ValidationError::AutoscalingBounds {
            min: a.min_replicas,
            max: a.max_replicas,
        });
    }
    check_pdb(
        "spec.controlPlane.podDisruptionBudget",
        pod_disruption_budget,
    )?;
    check_pdb(
        "spec.proxy.podDisruptionBudget",
        &proxy.pod_disruption_budget,
    )?;

    let mut watch_namespaces = watch_namespaces.clone();
    watch_namespaces.sort();
    watch_namespaces.dedup();

    Ok(Environment {
        names: Names::new(namespace, name),
        uid,
        version: super::versions::normalize(version).to_owned(),
        gateway_class_name: gateway_class_name.clone(),
        watch_namespaces,
        control_plane: ControlPlane {
            replicas: *replicas,
            anti_affinity: *anti_affinity,
            pod_disruption_budget: pod_disruption_budget.clone(),
            resources: resources.clone(),
        },
        proxy: proxy.clone(),
        backend_api: *enable_backend,
        certificates: CertificateLifetimes {
            duration,
            renew_before,
        },
    })
}

fn check_pdb(
    field: &'static str,
    pdb: &Option<PodDisruptionBudgetSpec>,
) -> Result<(), ValidationError> {
    match pdb {
        Some(p) if p.min_available.is_some() == p.max_unavailable.is_some() => {
            Err(ValidationError::PodDisruptionBudget { field })
        }
        _ => Ok(()),
    }
}

/// Parses a Go-style duration of hours, minutes, seconds and milliseconds (`8760h`, `1h30m`,
/// `2.5h`, `500ms`); the units Kubernetes users write in cert-manager and Envoy Gateway.
pub fn parse_duration(field: &'static str, text: &str) -> Result<Duration, ValidationError> {
    let invalid = |reason: &str| ValidationError::InvalidDuration {
        field,
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("a number must be followed by a unit (h, m, s or ms)"))?;
        if number_len == 0 {
            return Err(invalid("expected a number"));
        }
        let value: f64 = rest[..number_len]
            .parse()
            .map_err(|_| invalid("malformed number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            other => return Err(invalid(&format!("unknown unit {other:?}"))),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    let duration = Duration::try_from_secs_f64(total).map_err(|_| invalid("out of range"))?;
    if duration.is_zero() {
        return Err(ValidationError::NonPositiveDuration { field });
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eg_crds::EnvoyGatewaySpec;
    use kube::api::ObjectMeta;

    fn eg(spec: serde_json::Value) -> EnvoyGateway {
        let spec: EnvoyGatewaySpec = serde_json::from_value(spec).expect("spec");
        EnvoyGateway {
            metadata: ObjectMeta {
                name: Some("production".into()),
                namespace: Some("eg-production".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    #[test]
    fn durations_parse_like_go() {
        let p = |s| parse_duration("f", s);
        assert_eq!(p("8760h"), Ok(Duration::from_secs(8760 * 3600)));
        assert_eq!(p("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("2.5h"), Ok(Duration::from_secs(9000)));
        assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
        assert!(matches!(
            p("10"),
            Err(ValidationError::InvalidDuration { .. })
        ));
        assert!(matches!(
            p("10d"),
            Err(ValidationError::InvalidDuration { .. })
        ));
        assert!(matches!(
            p("h"),
            Err(ValidationError::InvalidDuration { .. })
        ));
        assert_eq!(
            p("0s"),
            Err(ValidationError::NonPositiveDuration { field: "f" })
        );
    }

    #[test]
    fn valid_spec_becomes_an_environment() {
        let env = validate(&eg(serde_json::json!({
            "gatewayClassName": "production",
            "version": "v0.1.0",
            "watchNamespaces": ["shop", "payments", "shop"],
            "controlPlane": {"replicas": 3}
        })))
        .expect("valid");
        assert_eq!(env.version, "0.1.0");
        assert_eq!(env.watch_namespaces, ["payments", "shop"]);
        assert_eq!(env.control_plane.replicas, 3);
        assert_eq!(env.certificates.duration, Duration::from_secs(8760 * 3600));
        assert_eq!(env.names.namespace(), "eg-production");
    }

    #[test]
    fn renew_before_must_be_shorter_than_duration() {
        let err = validate(&eg(serde_json::json!({
            "gatewayClassName": "p",
            "certificates": {"duration": "1h", "renewBefore": "2h"}
        })))
        .expect_err("invalid");
        assert_eq!(err.category(), "renew_before_not_shorter");
        assert!(err.to_string().contains("spec.certificates.renewBefore"));
    }

    #[test]
    fn autoscaling_bounds_and_pdb_are_checked() {
        let err = validate(&eg(serde_json::json!({
            "gatewayClassName": "p",
            "proxy": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}
        })))
        .expect_err("invalid");
        assert_eq!(err, ValidationError::AutoscalingBounds { min: 5, max: 2 });
        let err = validate(&eg(serde_json::json!({
            "gatewayClassName": "p",
            "controlPlane": {"podDisruptionBudget": {}}
        })))
        .expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with("spec.controlPlane.podDisruptionBudget")
        );
    }

    #[test]
    fn missing_uid_is_reported() {
        let mut e = eg(serde_json::json!({"gatewayClassName": "p"}));
        e.metadata.uid = None;
        assert_eq!(
            validate(&e),
            Err(ValidationError::MissingMetadata { field: "uid" })
        );
    }
}
