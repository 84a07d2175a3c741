//! Resolves the settings of one Gateway's proxy fleet (pure): the layers of upstream `EnvoyProxy`
//! specs — `EnvoyGateway.spec.proxy` < GatewayClass `parametersRef` < Gateway
//! `infrastructure.parametersRef` — combined as upstream's `mergeType` says, then checked.
//!
//! Errors name the field (`spec.provider.kubernetes.envoyHpa.minReplicas`) and the EnvoyProxy it
//! came from, because they end up in a Gateway condition a user reads.

use eg_crds::upstream::{EnvoyProxySpec, KubernetesHorizontalPodAutoscalerSpec};
use serde_json::Value;

/// Why a Gateway's fleet settings cannot be used. The previous fleet stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A `parametersRef` that does not name an EnvoyProxy, or names one that does not exist.
    #[error("{field}: {message}")]
    Reference { field: String, message: String },
    /// A field of the resolved EnvoyProxy that is not usable.
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// Which EnvoyProxy (or `EnvoyGateway.spec.proxy`) supplied the offending layer.
        source_name: String,
        field: String,
        message: String,
    },
}

impl SettingsError {
    /// Stable category for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            SettingsError::Reference { .. } => "reference",
            SettingsError::Invalid { .. } => "invalid",
        }
    }
}

/// One layer: where it came from (for messages) and its EnvoyProxy `spec` as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub source_name: String,
    pub spec: Value,
}

/// RFC 7386 merge of `patch` over `target`: objects merge key by key, `null` removes, anything
/// else replaces.
fn json_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                json_merge(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Combines `layers`, least specific first. A layer whose `mergeType` is unset or `Replace`
/// replaces everything below it, as upstream does; `JSONMerge` (and `StrategicMerge`, which
/// this project treats as a JSON merge: lists replace rather than merge by key) merges over it.
/// Returns the settings and the name of the most specific layer used.
pub fn resolve(layers: &[Layer]) -> Result<(EnvoyProxySpec, String), SettingsError> {
    let mut merged = Value::Object(serde_json::Map::new());
    let mut top = String::from("defaults");
    for Layer { source_name, spec } in layers {
        let merge = spec
            .get("mergeType")
            .and_then(Value::as_str)
            .unwrap_or("Replace");
        match merge {
            "Replace" => merged = spec.clone(),
            "JSONMerge" | "StrategicMerge" => json_merge(&mut merged, spec),
            other => {
                return Err(SettingsError::Invalid {
                    source_name: source_name.clone(),
                    field: "spec.mergeType".into(),
                    message: format!("{other:?} is not one of Replace, StrategicMerge, JSONMerge"),
                });
            }
        }
        top = source_name.clone();
    }
    let spec: EnvoyProxySpec =
        serde_path_to_error::deserialize(merged).map_err(|e| SettingsError::Invalid {
            source_name: top.clone(),
            field: format!("spec.{}", e.path()),
            message: e.inner().to_string(),
        })?;
    validate(&spec).map_err(|(field, message)| SettingsError::Invalid {
        source_name: top.clone(),
        field,
        message,
    })?;
    Ok((spec, top))
}

const K8S: &str = "spec.provider.kubernetes";

/// Checks what the apiserver would refuse, or what would make a fleet that cannot serve.
fn validate(spec: &EnvoyProxySpec) -> Result<(), (String, String)> {
    let EnvoyProxySpec {
        provider,
        shutdown,
        merge_type: _,
    } = spec;
    if let Some(shutdown) = shutdown {
        for (name, value) in [
            ("drainTimeout", &shutdown.drain_timeout),
            ("minDrainDuration", &shutdown.min_drain_duration),
        ] {
            if let Some(v) = value
                && parse_duration(v).is_none()
            {
                return Err((
                    format!("spec.shutdown.{name}"),
                    format!("{v:?} is not a duration like 30s, 1m30s or 500ms"),
                ));
            }
        }
    }
    let Some(provider) = provider else {
        return Ok(());
    };
    if !provider.type_.is_empty() && provider.type_ != "Kubernetes" {
        return Err((
            "spec.provider.type".into(),
            format!("{:?} is not supported; only Kubernetes", provider.type_),
        ));
    }
    let Some(k) = &provider.kubernetes else {
        return Ok(());
    };
    if let Some(replicas) = k.envoy_deployment.as_ref().and_then(|d| d.replicas)
        && replicas < 0
    {
        return Err((
            format!("{K8S}.envoyDeployment.replicas"),
            format!("{replicas} is negative"),
        ));
    }
    if let Some(hpa) = &k.envoy_hpa {
        if k.envoy_daemon_set.is_some() {
            return Err((
                format!("{K8S}.envoyHpa"),
                "cannot autoscale a DaemonSet (envoyDaemonSet is set)".into(),
            ));
        }
        let KubernetesHorizontalPodAutoscalerSpec {
            min_replicas,
            max_replicas,
            metrics: _,
            behavior: _,
            name: _,
        } = hpa;
        let Some(max) = *max_replicas else {
            return Err((format!("{K8S}.envoyHpa.maxReplicas"), "is required".into()));
        };
        if max < 1 {
            return Err((
                format!("{K8S}.envoyHpa.maxReplicas"),
                format!("{max} must be at least 1"),
            ));
        }
        if let Some(min) = *min_replicas {
            if min < 1 {
                return Err((
                    format!("{K8S}.envoyHpa.minReplicas"),
                    format!("{min} must be at least 1"),
                ));
            }
            if min > max {
                return Err((
                    format!("{K8S}.envoyHpa.minReplicas"),
                    format!("{min} is greater than maxReplicas ({max})"),
                ));
            }
        }
    }
    if let Some(pdb) = &k.envoy_pdb
        && pdb.min_available.is_some()
        && pdb.max_unavailable.is_some()
    {
        return Err((
            format!("{K8S}.envoyPDB"),
            "minAvailable and maxUnavailable cannot both be set".into(),
        ));
    }
    if let Some(service) = &k.envoy_service {
        if let Some(t) = &service.type_
            && !matches!(t.as_str(), "ClusterIP" | "LoadBalancer" | "NodePort")
        {
            return Err((
                format!("{K8S}.envoyService.type"),
                format!("{t:?} is not one of ClusterIP, LoadBalancer, NodePort"),
            ));
        }
        if let Some(p) = &service.external_traffic_policy
            && !matches!(p.as_str(), "Local" | "Cluster")
        {
            return Err((
                format!("{K8S}.envoyService.externalTrafficPolicy"),
                format!("{p:?} is not one of Local, Cluster"),
            ));
        }
    }
    Ok(())
}

/// Parses upstream's duration strings (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`) into seconds, rounding
/// milliseconds up so a drain is never shorter than asked.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut millis: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        millis = millis.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[len..];
    }
    Some(millis.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(name: &str, spec: Value) -> Layer {
        Layer {
            source_name: name.into(),
            spec,
        }
    }

    fn replicas(spec: &EnvoyProxySpec) -> Option<i32> {
        spec.provider
            .as_ref()
            .and_then(|p| p.kubernetes.as_ref())
            .and_then(|k| k.envoy_deployment.as_ref())
            .and_then(|d| d.replicas)
    }

    fn k8s(inner: Value) -> Value {
        json!({"provider": {"type": "Kubernetes", "kubernetes": inner}})
    }

    #[test]
    fn the_most_specific_layer_replaces_by_default_and_merges_when_asked() {
        let class = layer(
            "EnvoyProxy eg/class",
            k8s(json!({"envoyDeployment": {"replicas": 2}, "envoyService": {"type": "ClusterIP"}})),
        );
        let mut gw = k8s(json!({"envoyDeployment": {"replicas": 5}}));
        let (spec, top) =
            resolve(&[class.clone(), layer("EnvoyProxy shop/gw", gw.clone())]).expect("valid");
        assert_eq!(replicas(&spec), Some(5));
        assert_eq!(top, "EnvoyProxy shop/gw");
        let service = |s: &EnvoyProxySpec| {
            s.provider
                .as_ref()
                .and_then(|p| p.kubernetes.as_ref())
                .and_then(|k| k.envoy_service.as_ref())
                .and_then(|s| s.type_.clone())
        };
        assert_eq!(service(&spec), None, "Replace drops the class's service");
        gw["mergeType"] = json!("JSONMerge");
        let (spec, _) = resolve(&[class, layer("EnvoyProxy shop/gw", gw)]).expect("valid");
        assert_eq!(replicas(&spec), Some(5));
        assert_eq!(service(&spec).as_deref(), Some("ClusterIP"));
    }

    #[test]
    fn invalid_settings_name_the_field_and_the_envoy_proxy() {
        let err = resolve(&[layer(
            "EnvoyProxy shop/big",
            k8s(json!({"envoyHpa": {"minReplicas": 5, "maxReplicas": 3}})),
        )])
        .expect_err("min > max");
        assert_eq!(
            err.to_string(),
            "EnvoyProxy shop/big: spec.provider.kubernetes.envoyHpa.minReplicas: 5 is greater than maxReplicas (3)"
        );
        assert_eq!(err.category(), "invalid");

        let err = resolve(&[layer(
            "EnvoyProxy shop/typo",
            k8s(json!({"envoyDeployment": {"replicas": "three"}})),
        )])
        .expect_err("type error");
        assert!(
            err.to_string()
                .contains("spec.provider.kubernetes.envoyDeployment.replicas"),
            "{err}"
        );

        let err = resolve(&[layer(
            "EnvoyProxy shop/pdb",
            k8s(json!({"envoyPDB": {"minAvailable": 1, "maxUnavailable": 1}})),
        )])
        .expect_err("both budgets");
        assert!(err.to_string().contains("envoyPDB"), "{err}");
    }

    #[test]
    fn durations_parse_like_upstream_and_round_up() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("1m30s"), Some(90));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("1500ms"), Some(2));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
