//! Backend references: from a route's `backendRef` (or mirror target) to an upstream cluster,
//! enforcing kind, ReferenceGrant, port and existence rules, and reading ready endpoints from
//! EndpointSlices.
//!
//! The cluster name is derived from the backend's identity alone
//! (`service/{namespace}/{name}/{port}`) — never from the route or rule that references it — so
//! all references to one Service port share one cluster, and editing a route does not churn
//! clusters in Envoy.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::conditions::reason;
use super::index::Index;
use super::ir::{ClusterIr, ClusterSourceIr, EndpointIr, UpstreamProtocol};
use super::refs::{GATEWAY_GROUP, Referent, Referrer, reference_allowed};

/// Envoy Gateway's own API group, home of its `Backend` kind.
const ENVOY_GATEWAY_GROUP: &str = "gateway.envoyproxy.io";

/// Why a backendRef is invalid. Each maps to a `ResolvedRefs=False` reason on the route.
#[derive(Debug, thiserror::Error)]
pub(super) enum BackendError {
    #[error("backendRef kind {group}/{kind} is not supported yet, only core Service is")]
    BackendKindNotSupported { group: String, kind: String },
    #[error("backendRef kind {group}/{kind} is invalid, only core Service is supported")]
    UnsupportedKind { group: String, kind: String },
    #[error("backend ref to Service {namespace}/{name} not permitted by any ReferenceGrant")]
    NotPermitted { namespace: String, name: String },
    #[error("a port must be specified for Service {namespace}/{name}")]
    PortNotSpecified { namespace: String, name: String },
    #[error("Service {namespace}/{name} not found")]
    ServiceNotFound { namespace: String, name: String },
    #[error("TCP port {port} not found on Service {namespace}/{name}")]
    PortNotFound {
        namespace: String,
        name: String,
        port: i32,
    },
}

impl BackendError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BackendKindNotSupported { .. } | Self::UnsupportedKind { .. } => "invalid_kind",
            Self::NotPermitted { .. } => "not_permitted",
            Self::PortNotSpecified { .. } | Self::PortNotFound { .. } => "invalid_port",
            Self::ServiceNotFound { .. } => "not_found",
        }
    }

    /// The route `ResolvedRefs` reason: Gateway API's where it defines one, Envoy Gateway's
    /// (`PortNotSpecified`, `PortNotFound`) otherwise.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BackendKindNotSupported { .. } | Self::UnsupportedKind { .. } => {
                reason::INVALID_KIND
            }
            Self::NotPermitted { .. } => reason::REF_NOT_PERMITTED,
            Self::PortNotSpecified { .. } => reason::PORT_NOT_SPECIFIED,
            Self::ServiceNotFound { .. } => reason::BACKEND_NOT_FOUND,
            Self::PortNotFound { .. } => reason::PORT_NOT_FOUND,
        }
    }
}

/// The fields every kind of backend reference (HTTPBackendRef, mirror backendRef) shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct BackendTarget<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// Resolves a backend referenced from an HTTPRoute in `route_namespace`.
pub(super) fn resolve(
    index: &Index<'_>,
    route_namespace: &str,
    target: BackendTarget<'_>,
) -> Result<ClusterIr, BackendError> {
    let group = target.group.unwrap_or("");
    let kind = target.kind.unwrap_or("Service");
    match (group, kind) {
        ("", "Service") => {}
        // Room for Envoy Gateway's Backend kind: resolve it here into another
        // ClusterSourceIr variant once it is supported.
        (ENVOY_GATEWAY_GROUP, "Backend") => {
            return Err(BackendError::BackendKindNotSupported {
                group: group.to_owned(),
                kind: kind.to_owned(),
            });
        }
        _ => {
            return Err(BackendError::UnsupportedKind {
                group: if group.is_empty() { "core" } else { group }.to_owned(),
                kind: kind.to_owned(),
            });
        }
    }
    let namespace = target
        .namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or(route_namespace);
    let ids = || (namespace.to_owned(), target.name.to_owned());
    let allowed = reference_allowed(
        &index.grants,
        Referrer {
            group: GATEWAY_GROUP,
            kind: "HTTPRoute",
            namespace: route_namespace,
        },
        Referent {
            group: "",
            kind: "Service",
            namespace,
            name: target.name,
        },
    );
    if !allowed {
        let (namespace, name) = ids();
        return Err(BackendError::NotPermitted { namespace, name });
    }
    let Some(port) = target.port else {
        let (namespace, name) = ids();
        return Err(BackendError::PortNotSpecified { namespace, name });
    };
    let Some(service) = index.service(namespace, target.name) else {
        let (namespace, name) = ids();
        return Err(BackendError::ServiceNotFound { namespace, name });
    };
    let service_port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == "TCP");
    let (Some(service_port), Ok(port_u16)) = (service_port, u16::try_from(port)) else {
        let (namespace, name) = ids();
        return Err(BackendError::PortNotFound {
            namespace,
            name,
            port,
        });
    };
    Ok(ClusterIr {
        name: cluster_name(namespace, target.name, port_u16),
        source: ClusterSourceIr::Service {
            namespace: namespace.to_owned(),
            name: target.name.to_owned(),
            port: port_u16,
        },
        protocol: upstream_protocol(service_port.app_protocol.as_deref()),
        // Filled in by `fill_endpoints`, once per cluster of a Gateway.
        endpoints: Vec::new(),
    })
}

/// Sets the ready endpoints of a cluster [`resolve`] returned. Endpoints are the only part of
/// a cluster that depends on EndpointSlices, so keeping them apart lets route entries stay
/// valid while only endpoints change.
pub(super) fn fill_endpoints(index: &Index<'_>, cluster: &mut ClusterIr) {
    let ClusterSourceIr::Service {
        namespace,
        name,
        port,
    } = &cluster.source;
    let service_port = index
        .service(namespace, name)
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| p.port == i32::from(*port) && p.protocol.as_deref().unwrap_or("TCP") == "TCP");
    cluster.endpoints = service_port
        .map(|p| endpoints(index, namespace, name, p))
        .unwrap_or_default();
}

/// The cluster name of a Service port.
pub(super) fn cluster_name(namespace: &str, name: &str, port: u16) -> String {
    format!("service/{namespace}/{name}/{port}")
}

fn upstream_protocol(app_protocol: Option<&str>) -> UpstreamProtocol {
    match app_protocol {
        Some("kubernetes.io/h2c") => UpstreamProtocol::H2c,
        Some("kubernetes.io/ws" | "kubernetes.io/wss") => UpstreamProtocol::WebSocket,
        _ => UpstreamProtocol::Http1,
    }
}

/// Ready endpoints of a Service port. An EndpointSlice port corresponds to the Service port of
/// the same name (both unnamed for a single-port Service); slices written without names fall
/// back to the numeric target port. A nil `ready` condition means ready (Kubernetes API
/// convention). FQDN slices are skipped: they need DNS clusters, not static endpoints.
fn endpoints(
    index: &Index<'_>,
    namespace: &str,
    service: &str,
    service_port: &ServicePort,
) -> Vec<EndpointIr> {
    let wanted_name = service_port.name.as_deref().unwrap_or("");
    let wanted_number = match &service_port.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
        None => Some(service_port.port),
    };
    let mut out = Vec::new();
    for slice in index.endpoint_slices(namespace, service) {
        if slice.address_type == "FQDN" {
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let by_name = ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == wanted_name);
        let by_number = || {
            ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("").is_empty() && p.port == wanted_number)
        };
        let Some(port) = by_name
            .or_else(by_number)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            // Addresses of one endpoint are fungible; Kubernetes consumers use the first.
            if let (true, Some(ip)) = (ready, endpoint.addresses.first()) {
                out.push(EndpointIr {
                    ip: ip.clone(),
                    port,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
