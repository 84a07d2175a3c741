//! Upstream Envoy Gateway kinds (`gateway.envoyproxy.io/v1alpha1`) that eg-operator reads but
//! does not own: their CRDs are upstream's, installed as upstream ships them, so these types
//! are never rendered into `eg-crds.yaml`. Field names follow upstream exactly, so users'
//! manifests decode unchanged; fields this project does not act on yet are still accepted
//! (serde ignores unknown fields) rather than rejected.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, DeploymentStrategy};
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// Upstream's API group and version of its extension kinds.
pub const ENVOY_GATEWAY_API_VERSION: &str = "gateway.envoyproxy.io/v1alpha1";

/// `Backend`: endpoints outside Kubernetes Services, referenced from a route's backendRef with
/// `group: gateway.envoyproxy.io, kind: Backend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BackendSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Where traffic goes; upstream allows 1 to 64 entries.
    #[serde(default)]
    pub endpoints: Vec<BackendEndpoint>,
    /// `gateway.envoyproxy.io/h2c`, `gateway.envoyproxy.io/ws`, `gateway.envoyproxy.io/wss`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_protocols: Vec<String>,
}

/// Exactly one of `fqdn`, `ip`, `unix` (upstream validates this with CEL; the translator reports
/// an entry that breaks the rule).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<FqdnEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<UnixSocket>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnEndpoint {
    pub hostname: String,
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpEndpoint {
    pub address: String,
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnixSocket {
    pub path: String,
}

/// `EnvoyProxy`: how the proxies of a Gateway (or of every Gateway of a class) are deployed.
/// Referenced from `GatewayClass.spec.parametersRef` and `Gateway.spec.infrastructure
/// .parametersRef`. Only the parts the fleet builder acts on are typed; the rest of upstream's
/// spec (telemetry, bootstrap patches, ...) is accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyProxy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EnvoyProxySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyProxySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<EnvoyProxyProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownConfig>,
    /// How this EnvoyProxy combines with less specific ones (EnvoyGateway defaults <
    /// GatewayClass < Gateway): `Replace` (the default), `StrategicMerge` or `JSONMerge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyProxyProvider {
    /// Upstream knows only `Kubernetes`.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<EnvoyProxyKubernetesProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyProxyKubernetesProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_deployment: Option<KubernetesDeploymentSpec>,
    /// When set, the fleet is a DaemonSet instead of a Deployment (no HPA then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_daemon_set: Option<KubernetesDaemonSetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_service: Option<KubernetesServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_hpa: Option<KubernetesHorizontalPodAutoscalerSpec>,
    #[serde(rename = "envoyPDB", default, skip_serializing_if = "Option::is_none")]
    pub envoy_pdb: Option<KubernetesPodDisruptionBudgetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_service_account: Option<KubernetesServiceAccountSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesDeploymentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<KubernetesPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KubernetesContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesDaemonSetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DaemonSetUpdateStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<KubernetesPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KubernetesContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesContainerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Repository only; the tag stays the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `ClusterIP`, `LoadBalancer` (upstream's default) or `NodePort`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    /// `Local` (upstream's default) or `Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesHorizontalPodAutoscalerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Required by upstream's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPodDisruptionBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesServiceAccountSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Graceful shutdown of a proxy: durations as upstream writes them (`60s`, `1m30s`, `500ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownConfig {
    /// How long listeners drain before Envoy exits (upstream default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// Least time spent draining, so endpoint removal can propagate (upstream default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_drain_duration: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_backend_manifest_decodes() {
        let b: Backend = serde_yaml_ng::from_str(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: n}\n\
             spec:\n  appProtocols: [gateway.envoyproxy.io/h2c]\n  endpoints:\n  - ip: {address: 127.0.0.1, port: 3000}\n  - fqdn: {hostname: api.example.com, port: 443}\n  - unix: {path: /run/app.sock}\n  fallback: false\n",
        )
        .expect("decodes");
        assert_eq!(b.spec.endpoints.len(), 3);
        assert_eq!(b.spec.endpoints[0].ip.as_ref().map(|i| i.port), Some(3000));
        assert_eq!(
            b.spec.endpoints[1]
                .fqdn
                .as_ref()
                .map(|f| f.hostname.as_str()),
            Some("api.example.com")
        );
        assert_eq!(
            b.spec.endpoints[2].unix.as_ref().map(|u| u.path.as_str()),
            Some("/run/app.sock")
        );
    }

    #[test]
    fn upstream_envoy_proxy_manifest_decodes() {
        let p: EnvoyProxy = serde_yaml_ng::from_str(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata: {name: p, namespace: n}\n\
             spec:\n  mergeType: JSONMerge\n  shutdown: {drainTimeout: 30s}\n  telemetry: {accessLog: {}}\n  provider:\n    type: Kubernetes\n    kubernetes:\n\
             \x20     envoyDeployment: {replicas: 3, container: {image: envoy:x}}\n\
             \x20     envoyService: {type: ClusterIP, loadBalancerIP: 10.0.0.1}\n\
             \x20     envoyHpa: {minReplicas: 2, maxReplicas: 5}\n\
             \x20     envoyPDB: {minAvailable: 50%}\n",
        )
        .expect("decodes");
        let k = p
            .spec
            .provider
            .and_then(|p| p.kubernetes)
            .expect("kubernetes provider");
        assert_eq!(k.envoy_deployment.and_then(|d| d.replicas), Some(3));
        assert_eq!(
            k.envoy_service.and_then(|s| s.load_balancer_ip).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(k.envoy_hpa.and_then(|h| h.max_replicas), Some(5));
        assert_eq!(
            k.envoy_pdb.and_then(|p| p.min_available),
            Some(IntOrString::String("50%".into()))
        );
        assert_eq!(p.spec.merge_type.as_deref(), Some("JSONMerge"));
    }
}
