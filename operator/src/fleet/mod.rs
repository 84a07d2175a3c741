//! Proxy fleets: each Gateway of the environment's class is served by its own Envoy fleet —
//! ServiceAccount, bootstrap ConfigMap, xDS client certificate Secret, Deployment (or
//! DaemonSet), Service, HorizontalPodAutoscaler, PodDisruptionBudget — in the Gateway's
//! namespace, owned by the Gateway. The client certificate is the Gateway's own, signed by the
//! environment's proxy issuer ([`certificate`]), so its proxies can be served only its config.
//!
//! The same pipeline shape as [`crate::environment`]: [`settings`] (pure: EnvoyProxy layers →
//! validated settings) → [`build`] (pure: the desired graph) → apply and prune through
//! [`crate::environment::apply`] → [`status`] (pure: addresses and the fleet condition). [`run`]
//! is the I/O shell, a task of the controller that acts only while its replica leads.
//! [`shutdown`] is the proxies' drain-on-termination sidecar.

pub mod build;
pub mod certificate;
pub mod run;
pub mod settings;
pub mod shutdown;
pub mod status;

/// Label holding the UID of the Gateway a fleet object belongs to; pruning goes by it.
pub const FLEET_GATEWAY_UID_LABEL: &str = "operator.gateway.envoyproxy.io/gateway-uid";
/// Gateway API's label naming the Gateway a piece of its infrastructure belongs to (GEP-1762).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Upstream's label naming the namespace of a proxy's Gateway.
pub const OWNING_GATEWAY_NAMESPACE_LABEL: &str = "gateway.envoyproxy.io/owning-gateway-namespace";
/// Annotation on a fleet's workload naming the operand version it was rendered at (its
/// shutdown-manager image); the operator's upgrade gate reads it. On the workload's own metadata,
/// not its pod template, so it never restarts a proxy by itself.
pub const OPERAND_VERSION_ANNOTATION: &str = "operator.gateway.envoyproxy.io/operand-version";
/// `app.kubernetes.io/component` of every fleet object.
pub const FLEET_COMPONENT: &str = "proxy";
/// Every kind a fleet can contain: `(apiVersion, kind, namespaced)`, listed for pruning so an
/// object of a kind that left the fleet (an HPA after autoscaling is turned off) is found.
pub const FLEET_KINDS: &[(&str, &str, bool)] = &[
    ("v1", "ServiceAccount", true),
    ("v1", "Secret", true),
    ("v1", "ConfigMap", true),
    ("v1", "Service", true),
    ("apps/v1", "Deployment", true),
    ("apps/v1", "DaemonSet", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", true),
    ("policy/v1", "PodDisruptionBudget", true),
];
