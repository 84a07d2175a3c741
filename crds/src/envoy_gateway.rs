//! `EnvoyGateway` (`operator.gateway.envoyproxy.io/v1alpha1`): one environment of Envoy Gateway.
//!
//! The field names are a public contract (DESIGN §2): fields may be added, never renamed. Every
//! field carries a description, and every constraint the apiserver can check without the operator
//! (enums, minimums, defaults, cross-field rules as CEL) lives in the schema, so a bad manifest is
//! refused at `kubectl apply` time with a message naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operand version an EnvoyGateway runs when `spec.version` is not set: the operator's own.
pub const DEFAULT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Desired state of one Envoy Gateway environment. The namespace of the resource is the
/// environment's control-plane namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "operator.gateway.envoyproxy.io",
    version = "v1alpha1",
    kind = "EnvoyGateway",
    plural = "envoygateways",
    singular = "envoygateway",
    shortname = "eg",
    category = "envoy-gateway",
    namespaced,
    status = "EnvoyGatewayStatus",
    derive = "PartialEq",
    doc = "EnvoyGateway declares one environment of Envoy Gateway: its control plane, the defaults of its Envoy proxy fleets and its certificates. The operator creates and runs everything behind it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the environment is ready"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Operand version actually running"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyGatewaySpec {
    /// Operand version of Envoy Gateway to run. Defaults to the operator's own version.
    #[serde(default = "default_version")]
    #[schemars(regex(pattern = r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"))]
    pub version: String,

    /// Name of the GatewayClass this environment creates and owns. Gateways of this class are
    /// served by this environment's control plane.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub gateway_class_name: String,

    /// Namespaces whose Gateway API resources this environment serves. Empty means all
    /// namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub watch_namespaces: Vec<String>,

    /// The control plane (`eg-operator controller`) of this environment.
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,

    /// Defaults for the Envoy proxy fleet of every Gateway of the class. A Gateway's or its
    /// GatewayClass's EnvoyProxy overrides them.
    #[serde(default)]
    pub proxy: ProxySpec,

    /// Lifetimes of the certificates the operator issues (control-plane CA, xDS server and client
    /// certificates).
    #[serde(default)]
    pub certificates: CertificatesSpec,

    /// Envoy Gateway extension APIs that are off unless enabled, as in upstream's EnvoyGateway
    /// configuration.
    #[serde(default)]
    pub extension_apis: ExtensionApisSpec,
}

/// Upstream's `extensionApis`: APIs that can route traffic where a route author should not be
/// able to without the platform team's consent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionApisSpec {
    /// Let routes send traffic to `Backend` resources (`gateway.envoyproxy.io`): IP, hostname
    /// or Unix-socket endpoints outside Services. Off by default: a Backend can point at
    /// addresses no Service exposes, including the proxies' own loopback.
    #[serde(default)]
    pub enable_backend: bool,
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

/// Replicas, placement and resources of the control plane.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// Number of control-plane replicas. Every replica serves xDS; more than one turns on leader
    /// election for status and infrastructure writes.
    #[serde(default = "default_control_plane_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// How strictly replicas are spread over nodes (hostname) and zones.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,

    /// PodDisruptionBudget of the control plane. Absent means the operator's default of
    /// `maxUnavailable: 1` when there is more than one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// Compute resources of the control-plane container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_control_plane_replicas() -> i32 {
    1
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            replicas: default_control_plane_replicas(),
            anti_affinity: AntiAffinity::default(),
            pod_disruption_budget: None,
            resources: None,
        }
    }
}

/// Defaults of every Envoy proxy fleet of the environment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Number of Envoy replicas per Gateway, used when `autoscaling` is absent.
    #[serde(default = "default_proxy_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Horizontal autoscaling of each fleet on CPU. When set, the operator leaves the
    /// Deployment's replica count to the HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// How strictly Envoy replicas are spread over nodes (hostname) and zones.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,

    /// Topology spread constraint applied to every fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread: Option<TopologySpreadSpec>,

    /// PodDisruptionBudget of each fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// The Service in front of each fleet.
    #[serde(default)]
    pub service: ProxyServiceSpec,

    /// Compute resources of the Envoy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_proxy_replicas() -> i32 {
    2
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            replicas: default_proxy_replicas(),
            autoscaling: None,
            anti_affinity: AntiAffinity::default(),
            topology_spread: None,
            pod_disruption_budget: None,
            service: ProxyServiceSpec::default(),
            resources: None,
        }
    }
}

/// Pod anti-affinity over hostname and zone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AntiAffinity {
    /// Spread when possible (preferredDuringSchedulingIgnoredDuringExecution).
    #[default]
    Preferred,
    /// Never co-locate two replicas (requiredDuringSchedulingIgnoredDuringExecution).
    Required,
}

/// CPU-based horizontal autoscaling (autoscaling/v2).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
pub struct AutoscalingSpec {
    /// Lower bound of the replica count.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// Upper bound of the replica count.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Average CPU utilization, in percent of the requested CPU, that the autoscaler aims for.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_target_cpu() -> i32 {
    80
}

/// One topology spread constraint over the fleet's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpreadSpec {
    /// Largest allowed difference in replica count between two topology domains.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 1))]
    pub max_skew: i32,

    /// Node label that defines a topology domain.
    #[serde(default = "default_topology_key")]
    #[schemars(length(min = 1))]
    pub topology_key: String,
}

fn default_max_skew() -> i32 {
    1
}

fn default_topology_key() -> String {
    "topology.kubernetes.io/zone".to_owned()
}

/// A PodDisruptionBudget: exactly one of `minAvailable` and `maxUnavailable`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minAvailable) != has(self.maxUnavailable)").message("exactly one of minAvailable and maxUnavailable must be set"))]
pub struct PodDisruptionBudgetSpec {
    /// Pods that must stay available during a voluntary disruption (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,

    /// Pods that may be unavailable during a voluntary disruption (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// The Service in front of a proxy fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations added to the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type of a proxy fleet.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// Exposed on a port of every node.
    NodePort,
    /// Exposed through the platform's load balancer.
    #[default]
    LoadBalancer,
}

/// Lifetimes of issued certificates, as Go-style durations in hours, minutes and seconds
/// (e.g. `8760h`, `90m`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesSpec {
    /// Lifetime of the CA and of leaf certificates.
    #[serde(default = "default_cert_duration")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub duration: String,

    /// Rotate a certificate this long before it expires, without downtime.
    #[serde(default = "default_renew_before")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub renew_before: String,
}

fn default_cert_duration() -> String {
    "8760h".to_owned()
}

fn default_renew_before() -> String {
    "720h".to_owned()
}

impl Default for CertificatesSpec {
    fn default() -> Self {
        Self {
            duration: default_cert_duration(),
            renew_before: default_renew_before(),
        }
    }
}

/// Observed state of the environment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Operand version actually running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Operand version being rolled out while an upgrade or rollback is in progress; unset once
    /// `version` reaches `spec.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,

    /// The latest operand upgrade or rollback: from which version to which, its phase and how far
    /// it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,

    /// `Ready`, `Progressing` and `Degraded`, per Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One operand upgrade or rollback.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Version the environment ran (or was rolling out) when this upgrade started.
    pub from: String,
    /// Version this upgrade rolls out.
    pub to: String,
    /// Where the upgrade is.
    pub phase: UpgradePhase,
    /// When this upgrade started; the health gate's deadline counts from here.
    pub started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Progress in words: what the upgrade waits for, or why it halted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The proxy fleets this upgrade moved, in rollout order (Gateways by namespace and name),
    /// each with the version its fleet may run. A Gateway not listed runs `status.version`.
    /// The control plane renders every fleet at the version given here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["gateway".into()]))]
    pub proxies: Vec<ProxyRollout>,
}

/// One Gateway's proxy fleet in an upgrade.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRollout {
    /// The Gateway, as `namespace/name`.
    pub gateway: String,
    /// Operand version its fleet may run.
    pub version: String,
    /// When its fleet was allowed `version`; its health gate's deadline counts from here.
    pub started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Whether its fleet runs `version`, is Available, and its Gateway is Programmed.
    #[serde(default)]
    pub ready: bool,
}

/// Phases of an operand upgrade.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradePhase {
    /// The control plane rolls to the new version and must become Available.
    ControlPlane,
    /// Proxy fleets roll one Gateway at a time, each gated on its fleet being Available and its
    /// Gateway Programmed (its proxies ACKed their configuration).
    Proxies,
    /// Every step passed its health gate.
    Complete,
    /// A health gate failed: nothing further changes until `spec.version` changes.
    Halted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_deserializes_with_defaults() {
        let spec: EnvoyGatewaySpec =
            serde_json::from_value(serde_json::json!({"gatewayClassName": "production"}))
                .expect("minimal spec");
        assert_eq!(spec.version, DEFAULT_VERSION);
        assert_eq!(spec.control_plane.replicas, 1);
        assert_eq!(spec.control_plane.anti_affinity, AntiAffinity::Preferred);
        assert_eq!(spec.proxy.replicas, 2);
        assert_eq!(spec.proxy.service.type_, ServiceType::LoadBalancer);
        assert_eq!(spec.certificates.duration, "8760h");
        assert_eq!(spec.certificates.renew_before, "720h");
    }

    #[test]
    fn autoscaling_field_keeps_upstream_spelling() {
        let a = AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization_percentage: 70,
        };
        let v = serde_json::to_value(&a).expect("serialize");
        assert_eq!(v["targetCPUUtilizationPercentage"], 70);
    }
}
