//! Backend references: from a route's `backendRef` (or mirror target) to an upstream cluster,
//! enforcing kind, ReferenceGrant, port and existence rules, and reading ready endpoints from
//! EndpointSlices — or, for Envoy Gateway's `Backend` kind, from the Backend's own spec.
//!
//! The cluster name is derived from the backend's identity alone
//! (`service/{namespace}/{name}/{port}`) — never from the route or rule that references it — so
//! all references to one Service port share one cluster, and editing a route does not churn
//! clusters in Envoy.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::conditions::reason;
use eg_crds::upstream::Backend;

use super::index::Index;
use super::ir::{ClusterIr, ClusterSourceIr, EndpointIr, UpstreamProtocol};
use super::refs::{GATEWAY_GROUP, Referent, Referrer, reference_allowed};
use super::route_kind::RouteKind;

/// Envoy Gateway's own API group, home of its `Backend` kind.
const ENVOY_GATEWAY_GROUP: &str = "gateway.envoyproxy.io";

/// Why a backendRef is invalid. Each maps to a `ResolvedRefs=False` reason on the route.
#[derive(Debug, thiserror::Error)]
pub(super) enum BackendError {
    #[error(
        "backendRef kind {group}/{kind} is invalid: core Service and gateway.envoyproxy.io Backend are supported"
    )]
    UnsupportedKind { group: String, kind: String },
    #[error("backend ref to Service {namespace}/{name} not permitted by any ReferenceGrant")]
    NotPermitted { namespace: String, name: String },
    #[error("a port must be specified for Service {namespace}/{name}")]
    PortNotSpecified { namespace: String, name: String },
    #[error("Service {namespace}/{name} not found")]
    ServiceNotFound { namespace: String, name: String },
    #[error(
        "backendRef to Backend {namespace}/{name}: the Backend API is not enabled for this environment"
    )]
    BackendApiDisabled { namespace: String, name: String },
    #[error("Backend {namespace}/{name} not found")]
    BackendNotFound { namespace: String, name: String },
    #[error("Backend {namespace}/{name}: {problem}")]
    InvalidBackend {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("{protocol} port {port} not found on Service {namespace}/{name}")]
    PortNotFound {
        namespace: String,
        name: String,
        port: i32,
        protocol: &'static str,
    },
}

impl BackendError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedKind { .. } | Self::BackendApiDisabled { .. } => "invalid_kind",
            Self::NotPermitted { .. } => "not_permitted",
            Self::PortNotSpecified { .. } | Self::PortNotFound { .. } => "invalid_port",
            Self::ServiceNotFound { .. } | Self::BackendNotFound { .. } => "not_found",
            Self::InvalidBackend { .. } => "invalid_backend",
        }
    }

    /// The route `ResolvedRefs` reason: Gateway API's where it defines one, Envoy Gateway's
    /// (`PortNotSpecified`, `PortNotFound`) otherwise.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedKind { .. } | Self::BackendApiDisabled { .. } => reason::INVALID_KIND,
            Self::NotPermitted { .. } => reason::REF_NOT_PERMITTED,
            Self::PortNotSpecified { .. } => reason::PORT_NOT_SPECIFIED,
            Self::ServiceNotFound { .. } | Self::BackendNotFound { .. } => {
                reason::BACKEND_NOT_FOUND
            }
            // Upstream reports unusable Backends as not found: there is nothing to send to.
            Self::InvalidBackend { .. } => reason::BACKEND_NOT_FOUND,
            Self::PortNotFound { .. } => reason::PORT_NOT_FOUND,
        }
    }
}

/// The fields every kind of backend reference (HTTPBackendRef, mirror backendRef) shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct BackendTarget<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// Resolves a backend referenced from a route of `kind` in `route_namespace`. Kinds that
/// speak one protocol to every backend (gRPC, TCP, UDP) get it on the cluster; when that is
/// not the protocol the Service port declares, the cluster name says so (`…/h2c`, `…/tcp`,
/// `…/udp`), so an HTTPRoute and a TCPRoute sending to one port never share a cluster.
pub(super) fn resolve(
    index: &Index<'_>,
    kind: RouteKind,
    route_namespace: &str,
    target: BackendTarget<'_>,
) -> Result<ClusterIr, BackendError> {
    resolve_shared(
        index,
        &mut ServiceClusters::default(),
        kind,
        route_namespace,
        target,
    )
    .map(|c| Arc::unwrap_or_clone(c.cluster))
}

/// The cluster of each Service port one worker has resolved in a translation, by the port's
/// address in the snapshot (which outlives the translation). A large Gateway references a few
/// Services tens of thousands of times. Each worker keeps its own rather than sharing one
/// table: a shared table's lock, and the reference counts of `Arc`s every worker clones,
/// bounced one cache line between the cores on every reference (a tenth of a translation
/// of 1000 routes, in profiles); a few clusters built twice cost far less.
#[derive(Debug, Default)]
pub(super) struct ServiceClusters(
    std::collections::HashMap<usize, SharedCluster, foldhash::fast::RandomState>,
);

/// One [`ServiceClusters`] per thread of the worker pool, for a parallel translation. A job
/// takes its thread's: a Gateway then sees one copy of each cluster per thread rather than
/// one per job (rayon splits a thousand routes into a dozen or more jobs, and every copy
/// costs the Gateway a lookup by name).
#[derive(Debug)]
pub(super) struct WorkerClusters(Vec<std::sync::Mutex<ServiceClusters>>);

impl WorkerClusters {
    pub fn new() -> Self {
        // A slot per worker, and one for a caller outside the pool.
        Self(
            (0..=rayon::current_num_threads())
                .map(|_| std::sync::Mutex::default())
                .collect(),
        )
    }

    /// The calling thread's memo. A thread runs one job at a time, so it is free, unless a
    /// job is nested in another; then the nested one gets a memo of its own.
    pub fn take(&self) -> WorkerMemo<'_> {
        let outside = self.0.len() - 1;
        let slot = rayon::current_thread_index().map_or(outside, |i| i.min(outside));
        match self.0[slot].try_lock() {
            Ok(memo) => WorkerMemo::Thread(memo),
            Err(_) => WorkerMemo::Own(ServiceClusters::default()),
        }
    }
}

/// A job's [`ServiceClusters`]: its thread's, or its own.
#[derive(Debug)]
pub(super) enum WorkerMemo<'w> {
    Thread(std::sync::MutexGuard<'w, ServiceClusters>),
    Own(ServiceClusters),
}

impl WorkerMemo<'_> {
    pub fn get(&mut self) -> &mut ServiceClusters {
        match self {
            Self::Thread(memo) => memo,
            Self::Own(memo) => memo,
        }
    }
}

/// A backend's cluster as the references to it share it within one translation: the name
/// route entries point at, and the cluster (endpoints not yet filled in).
#[derive(Debug, Clone)]
pub(super) struct SharedCluster {
    pub name: Arc<str>,
    pub cluster: Arc<ClusterIr>,
}

impl SharedCluster {
    fn new(cluster: ClusterIr) -> Self {
        Self {
            name: Arc::from(cluster.name.as_str()),
            cluster: Arc::new(cluster),
        }
    }
}

/// [`resolve`], sharing the cluster of a Service port with every other reference to it in
/// the translation: a large Gateway references a few Services tens of thousands of times.
pub(super) fn resolve_shared(
    index: &Index<'_>,
    clusters: &mut ServiceClusters,
    kind: RouteKind,
    route_namespace: &str,
    target: BackendTarget<'_>,
) -> Result<SharedCluster, BackendError> {
    let natural = resolve_natural(index, clusters, kind, route_namespace, target)?;
    let Some(forced) = kind
        .forced_protocol()
        .filter(|p| *p != natural.cluster.protocol)
    else {
        return Ok(natural);
    };
    let mut cluster = Arc::unwrap_or_clone(natural.cluster);
    cluster.protocol = forced;
    cluster.name.push('/');
    cluster.name.push_str(match forced {
        UpstreamProtocol::H2c => "h2c",
        UpstreamProtocol::Tcp => "tcp",
        UpstreamProtocol::Udp => "udp",
        UpstreamProtocol::Http1 => "http1",
        UpstreamProtocol::WebSocket => "ws",
    });
    Ok(SharedCluster::new(cluster))
}

/// The cluster of a backend with the protocol its Service port or Backend declares.
fn resolve_natural(
    index: &Index<'_>,
    clusters: &mut ServiceClusters,
    kind: RouteKind,
    route_namespace: &str,
    target: BackendTarget<'_>,
) -> Result<SharedCluster, BackendError> {
    let group = target.group.unwrap_or("");
    let target_kind = target.kind.unwrap_or("Service");
    match (group, target_kind) {
        ("", "Service") => {}
        (ENVOY_GATEWAY_GROUP, "Backend") => {
            return resolve_backend(index, kind, route_namespace, target).map(SharedCluster::new);
        }
        _ => {
            return Err(BackendError::UnsupportedKind {
                group: if group.is_empty() { "core" } else { group }.to_owned(),
                kind: target_kind.to_owned(),
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
            kind: kind.name(),
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
        .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == kind.port_protocol());
    let (Some(service_port), Ok(port_u16)) = (service_port, u16::try_from(port)) else {
        let (namespace, name) = ids();
        return Err(BackendError::PortNotFound {
            namespace,
            name,
            port,
            protocol: kind.port_protocol(),
        });
    };
    let cluster = clusters
        .0
        .entry(std::ptr::from_ref(service_port) as usize)
        .or_insert_with(|| {
            SharedCluster::new(ClusterIr {
                name: cluster_name(namespace, target.name, port_u16),
                source: ClusterSourceIr::Service {
                    namespace: namespace.to_owned(),
                    name: target.name.to_owned(),
                    port: port_u16,
                },
                protocol: upstream_protocol(service_port.app_protocol.as_deref()),
                // Filled in by `fill_endpoints`, once per cluster of a Gateway.
                endpoints: Vec::new(),
                tls: None,
                settings: None,
            })
        });
    Ok(cluster.clone())
}

/// Sets the ready endpoints of a cluster [`resolve`] returned. Endpoints are the only part of
/// a cluster that depends on EndpointSlices, so keeping them apart lets route entries stay
/// valid while only endpoints change.
pub(super) fn fill_endpoints(index: &Index<'_>, cluster: &mut ClusterIr) {
    let (namespace, name, port) = match &cluster.source {
        ClusterSourceIr::Service {
            namespace,
            name,
            port,
        } => (namespace, name, port),
        ClusterSourceIr::Backend { namespace, name } => {
            cluster.endpoints = index
                .backend(namespace, name)
                .and_then(|b| backend_endpoints(b).ok())
                .unwrap_or_default();
            return;
        }
        ClusterSourceIr::Uri { .. } => return,
    };
    let port_protocol = if cluster.protocol == UpstreamProtocol::Udp {
        "UDP"
    } else {
        "TCP"
    };
    let service_port = index
        .service(namespace, name)
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| {
            p.port == i32::from(*port) && p.protocol.as_deref().unwrap_or("TCP") == port_protocol
        });
    cluster.endpoints = service_port
        .map(|p| endpoints(index, namespace, name, p))
        .unwrap_or_default();
}

/// Resolves a backendRef to an Envoy Gateway `Backend`. The ref's port is not used: every
/// endpoint of a Backend carries its own.
fn resolve_backend(
    index: &Index<'_>,
    kind: RouteKind,
    route_namespace: &str,
    target: BackendTarget<'_>,
) -> Result<ClusterIr, BackendError> {
    let namespace = target
        .namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or(route_namespace);
    let ids = || (namespace.to_owned(), target.name.to_owned());
    if !index.backend_api {
        let (namespace, name) = ids();
        return Err(BackendError::BackendApiDisabled { namespace, name });
    }
    let allowed = reference_allowed(
        &index.grants,
        Referrer {
            group: GATEWAY_GROUP,
            kind: kind.name(),
            namespace: route_namespace,
        },
        Referent {
            group: ENVOY_GATEWAY_GROUP,
            kind: "Backend",
            namespace,
            name: target.name,
        },
    );
    if !allowed {
        let (namespace, name) = ids();
        return Err(BackendError::NotPermitted { namespace, name });
    }
    let Some(backend) = index.backend(namespace, target.name) else {
        let (namespace, name) = ids();
        return Err(BackendError::BackendNotFound { namespace, name });
    };
    if let Err(problem) = backend_endpoints(backend) {
        let (namespace, name) = ids();
        return Err(BackendError::InvalidBackend {
            namespace,
            name,
            problem,
        });
    }
    let protocol = if backend
        .spec
        .app_protocols
        .iter()
        .any(|p| p == "gateway.envoyproxy.io/h2c")
    {
        UpstreamProtocol::H2c
    } else if backend
        .spec
        .app_protocols
        .iter()
        .any(|p| p == "gateway.envoyproxy.io/ws" || p == "gateway.envoyproxy.io/wss")
    {
        UpstreamProtocol::WebSocket
    } else {
        UpstreamProtocol::Http1
    };
    Ok(ClusterIr {
        name: format!("backend/{namespace}/{}", target.name),
        source: ClusterSourceIr::Backend {
            namespace: namespace.to_owned(),
            name: target.name.to_owned(),
        },
        protocol,
        // Filled in by `fill_endpoints`, like a Service's.
        endpoints: Vec::new(),
        tls: None,
        settings: None,
    })
}

/// A Backend's endpoints, or what is wrong with its spec.
fn backend_endpoints(backend: &Backend) -> Result<Vec<EndpointIr>, String> {
    if backend.spec.endpoints.is_empty() {
        return Err("spec.endpoints is empty".into());
    }
    let mut endpoints = Vec::with_capacity(backend.spec.endpoints.len());
    for (i, e) in backend.spec.endpoints.iter().enumerate() {
        let port = |p: i32| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("spec.endpoints[{i}]: port {p} is out of range"))
        };
        let endpoint = match (&e.ip, &e.fqdn, &e.unix) {
            (Some(ip), None, None) => {
                if ip.address.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!(
                        "spec.endpoints[{i}].ip.address {:?} is not an IP address",
                        ip.address
                    ));
                }
                EndpointIr::Ip {
                    ip: ip.address.clone(),
                    port: port(ip.port)?,
                }
            }
            (None, Some(fqdn), None) => EndpointIr::Hostname {
                hostname: fqdn.hostname.clone(),
                port: port(fqdn.port)?,
            },
            (None, None, Some(unix)) => EndpointIr::Unix {
                path: unix.path.clone(),
            },
            _ => {
                return Err(format!(
                    "spec.endpoints[{i}] must set exactly one of ip, fqdn, unix"
                ));
            }
        };
        endpoints.push(endpoint);
    }
    endpoints.sort();
    endpoints.dedup();
    Ok(endpoints)
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
                out.push(EndpointIr::Ip {
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

#[cfg(test)]
mod tests {
    use super::super::ir::{ClusterSourceIr, EndpointIr, UpstreamProtocol};
    use super::super::{snapshot_from_yaml, translate};

    const BASE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: c}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g, namespace: apps, generation: 1}
spec:
  gatewayClassName: eg
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps, generation: 1}
spec:
  parentRefs: [{name: g}]
  rules:
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: b}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b, namespace: apps}
spec:
";

    fn resolved_refs(yaml: &str, backend_api: bool) -> (String, String, Vec<super::ClusterIr>) {
        let mut snapshot = snapshot_from_yaml("c", yaml).expect("loads");
        snapshot.backend_api = backend_api;
        let t = translate(&snapshot);
        let parent = &t.status.http_routes["apps/r"].parents[0];
        let c = parent
            .conditions
            .iter()
            .find(|c| c.type_ == "ResolvedRefs")
            .expect("ResolvedRefs");
        let clusters = t.gateways[0].clusters.values().cloned().collect();
        (c.status.clone(), c.reason.clone(), clusters)
    }

    #[test]
    fn backend_endpoints_of_every_kind_become_one_cluster() {
        let yaml = format!(
            "{BASE}  appProtocols: [gateway.envoyproxy.io/h2c]\n  endpoints:\n  - ip: {{address: 127.0.0.1, port: 3000}}\n  - fqdn: {{hostname: api.example.com, port: 443}}\n  - unix: {{path: /run/app.sock}}\n"
        );
        let (status, _, clusters) = resolved_refs(&yaml, true);
        assert_eq!(status, "True");
        assert_eq!(clusters.len(), 1);
        let c = &clusters[0];
        assert_eq!(c.name, "backend/apps/b");
        assert_eq!(
            c.source,
            ClusterSourceIr::Backend {
                namespace: "apps".into(),
                name: "b".into()
            }
        );
        assert_eq!(c.protocol, UpstreamProtocol::H2c);
        assert!(c.endpoints.contains(&EndpointIr::Ip {
            ip: "127.0.0.1".into(),
            port: 3000
        }));
        assert!(c.endpoints.contains(&EndpointIr::Hostname {
            hostname: "api.example.com".into(),
            port: 443
        }));
        assert!(c.endpoints.contains(&EndpointIr::Unix {
            path: "/run/app.sock".into()
        }));
    }

    #[test]
    fn backends_need_the_api_enabled() {
        let yaml = format!("{BASE}  endpoints: [{{ip: {{address: 127.0.0.1, port: 3000}}}}]\n");
        let (status, reason, clusters) = resolved_refs(&yaml, false);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidKind"));
        assert!(clusters.is_empty());
    }

    #[test]
    fn invalid_and_missing_backends_are_unresolved() {
        for spec in [
            "  endpoints: []\n",
            "  endpoints: [{ip: {address: not-an-ip, port: 3000}}]\n",
            "  endpoints: [{ip: {address: 127.0.0.1, port: 70000}}]\n",
            "  endpoints: [{ip: {address: 127.0.0.1, port: 1}, unix: {path: /x}}]\n",
        ] {
            let (status, reason, _) = resolved_refs(&format!("{BASE}{spec}"), true);
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "BackendNotFound"),
                "{spec}"
            );
        }
        let missing = BASE.replace(
            "metadata: {name: b, namespace: apps}",
            "metadata: {name: other, namespace: apps}",
        );
        let (status, reason, _) = resolved_refs(&format!("{missing}  endpoints: []\n"), true);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "BackendNotFound")
        );
    }
}
