//! The pure translator: Gateway API resources in, per-Gateway Envoy intent ([`ir`]) and the
//! status of every GatewayClass, Gateway, listener and route (HTTPRoute, GRPCRoute, TLSRoute,
//! TCPRoute, UDPRoute) out.
//!
//! Pure means: no I/O, no clock, no async, no Kubernetes client and no Envoy types. The same
//! [`Snapshot`] always yields the same [`Translation`], whatever order its objects are in,
//! which is what lets the shell diff outputs to skip no-op pushes and lets golden tests pin
//! behaviour. [`translate`] is total: malformed input becomes status conditions, never a panic
//! or an error.
//!
//! Behaviour follows Gateway API v1.5.1 and, where the spec leaves a choice, upstream Envoy
//! Gateway; each module documents the rules it owns:
//! - `gateways`: GatewayClass acceptance, listener validation and conflicts, Gateway status;
//! - `tls`: listener certificates;
//! - `routes`: parentRef attachment, `attachedRoutes`, route status;
//! - `route_kind`, `as_http`: what differs between route kinds, and every kind seen as the
//!   HTTPRoute routing the same traffic;
//! - `rules`: matches, filters, timeouts, invalid-rule handling;
//! - `backends`: backendRefs to clusters and endpoints;
//! - `backend_tls`: BackendTLSPolicy, TLS from Envoy to the Services it targets;
//! - `policies`: Envoy Gateway's BackendTrafficPolicy and SecurityPolicy: attachment, IR, status;
//! - `client_traffic`: Envoy Gateway's ClientTrafficPolicy: listener settings, on the same
//!   attachment and status rules;
//! - `security_services`: SecurityPolicy API keys, external authorization and remote JWKS;
//! - `hostname`: hostname intersection and listener isolation;
//! - `precedence`: route ordering;
//! - `refs`: ReferenceGrants and namespace selectors;
//! - `conditions`: condition vocabulary and the `lastTransitionTime` placeholder;
//! - `load`: YAML snapshots for tests and the CLI.

mod as_http;
mod backend_tls;
mod backends;
mod client_traffic;
mod conditions;
mod gateways;
mod hostname;
mod index;
pub mod ir;
mod load;
mod policies;
mod precedence;
mod refs;
mod route_kind;
mod routes;
mod rules;
mod security_services;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_api::apis::experimental::tcproutes::TcpRoute;
use gateway_api::apis::experimental::udproutes::UdpRoute;
use gateway_api::apis::standard::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicyStatus};
use gateway_api::apis::standard::gatewayclasses::{GatewayClass, GatewayClassStatus};
use gateway_api::apis::standard::gateways::{Gateway, GatewayStatus};
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::{HttpRoute, HttpRouteStatus};
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rayon::prelude::*;
use serde::Serialize;

pub use as_http::ConversionError;
pub use ir::GatewayIr;
pub use load::{Document, LoadError, Skipped, for_each_document, load_yaml, snapshot_from_yaml};
pub(crate) use policies::parse_cidr;
pub use policies::{PolicyStatus, PolicyStatuses};
use route_kind::RouteKind;

/// Everything the translator reads: the objects the shell's informers hold, plus the
/// `controllerName` that identifies our GatewayClasses.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub controller_name: String,
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<TlsRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub udp_routes: Vec<UdpRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
    /// Read for BackendTLSPolicy CA certificates (`ca.crt`).
    pub config_maps: Vec<ConfigMap>,
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
    /// Envoy Gateway policies (`gateway.envoyproxy.io`).
    pub backend_traffic_policies: Vec<eg_crds::policies::BackendTrafficPolicy>,
    pub security_policies: Vec<eg_crds::policies::SecurityPolicy>,
    pub client_traffic_policies: Vec<eg_crds::client_traffic::ClientTrafficPolicy>,
    pub namespaces: Vec<Namespace>,
    /// Upstream Envoy Gateway `Backend`s (`gateway.envoyproxy.io`).
    pub backends: Vec<eg_crds::upstream::Backend>,
    /// Whether routes may send to `Backend`s. Off by default, as upstream: a Backend can point
    /// anywhere (the proxy's own loopback, Pods no Service exposes), so a cluster enables it
    /// deliberately; standalone mode, where the files' author is the machine's operator,
    /// enables it.
    pub backend_api: bool,
    /// OpenID providers' endpoints discovered from their issuers (`/.well-known/
    /// openid-configuration`), by issuer; an error says why discovery failed. Fetched by the
    /// control plane for [`oidc_issuers_to_discover`]; an issuer missing here is still pending.
    pub oidc_discovery: BTreeMap<String, Result<OidcEndpoints, String>>,
}

pub use security_services::{
    OidcEndpoints, oidc_discovery_url, oidc_issuers_to_discover, parse_oidc_discovery,
};

impl Snapshot {
    /// Adds every object of `other` (its `controller_name` is ignored).
    pub fn extend(&mut self, other: Snapshot) {
        let Snapshot {
            controller_name: _,
            gateway_classes,
            gateways,
            http_routes,
            grpc_routes,
            tls_routes,
            tcp_routes,
            udp_routes,
            reference_grants,
            services,
            endpoint_slices,
            secrets,
            config_maps,
            backend_tls_policies,
            backend_traffic_policies,
            security_policies,
            client_traffic_policies,
            namespaces,
            backends,
            backend_api,
            oidc_discovery,
        } = other;
        self.oidc_discovery.extend(oidc_discovery);
        self.client_traffic_policies.extend(client_traffic_policies);
        self.backend_traffic_policies
            .extend(backend_traffic_policies);
        self.security_policies.extend(security_policies);
        self.config_maps.extend(config_maps);
        self.backend_tls_policies.extend(backend_tls_policies);
        self.backend_api |= backend_api;
        self.grpc_routes.extend(grpc_routes);
        self.tls_routes.extend(tls_routes);
        self.tcp_routes.extend(tcp_routes);
        self.udp_routes.extend(udp_routes);
        self.gateway_classes.extend(gateway_classes);
        self.gateways.extend(gateways);
        self.http_routes.extend(http_routes);
        self.reference_grants.extend(reference_grants);
        self.services.extend(services);
        self.endpoint_slices.extend(endpoint_slices);
        self.secrets.extend(secrets);
        self.namespaces.extend(namespaces);
        self.backends.extend(backends);
    }
}

/// The translator's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translation {
    /// One per Gateway of an accepted GatewayClass of ours, sorted by `"{ns}/{name}"`.
    pub gateways: Vec<GatewayIr>,
    pub status: Statuses,
    /// Every problem found, machine-readable, for logs and the `category`-labelled error
    /// metrics; the same problems reach users through `status`. Gateways first, then routes,
    /// each in translation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem found during translation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// `"Gateway ns/name"`, `"Gateway ns/name listener l"` or `"{route kind} ns/name"`.
    pub object: String,
    /// The failing error's `category()`: stable and low-cardinality, fit for a metric label.
    pub category: &'static str,
    pub message: String,
}

/// Route statuses by `"{namespace}/{name}"`. The keys are the translator's own route keys,
/// shared rather than copied: a large Gateway's statuses are rebuilt on every translation.
pub type RouteStatuses = BTreeMap<Arc<str>, Arc<HttpRouteStatus>>;

/// Desired status of every object the translator has an opinion on. Objects that are not ours
/// (other controllers' classes, their Gateways, routes attached only to those) are absent, so
/// the status writer leaves them alone. Conditions carry a placeholder `lastTransitionTime`
/// (the UNIX epoch) that the status writer replaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Statuses {
    /// By GatewayClass name.
    pub gateway_classes: BTreeMap<String, GatewayClassStatus>,
    /// By `"{namespace}/{name}"`.
    pub gateways: BTreeMap<String, GatewayStatus>,
    /// By `"{namespace}/{name}"`; only routes with at least one parentRef to one of our
    /// Gateways, with one `parents` entry per such parentRef.
    pub http_routes: RouteStatuses,
    /// The other route kinds, likewise. Their statuses have HTTPRoute's shape (`parents`
    /// with the same fields), which is what is written.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_routes: RouteStatuses,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tls_routes: RouteStatuses,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tcp_routes: RouteStatuses,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub udp_routes: RouteStatuses,
    /// By `"{namespace}/{name}"`; only policies a Gateway of ours uses, one ancestor each.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_tls_policies: BTreeMap<String, BackendTlsPolicyStatus>,
    /// BackendTrafficPolicies and SecurityPolicies, by `"{namespace}/{name}"`.
    #[serde(flatten)]
    pub policies: PolicyStatuses,
    /// ClientTrafficPolicies, by `"{namespace}/{name}"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub client_traffic_policies: BTreeMap<String, PolicyStatus>,
}

impl Statuses {
    /// Route statuses by kind name (`"HTTPRoute"`, `"GRPCRoute"`, …), for writers.
    pub fn routes(&self) -> [(&'static str, &RouteStatuses); 5] {
        RouteKind::ALL.map(|kind| (kind.name(), self.routes_of(kind)))
    }

    fn routes_of(&self, kind: RouteKind) -> &RouteStatuses {
        match kind {
            RouteKind::Http => &self.http_routes,
            RouteKind::Grpc => &self.grpc_routes,
            RouteKind::Tls => &self.tls_routes,
            RouteKind::Tcp => &self.tcp_routes,
            RouteKind::Udp => &self.udp_routes,
        }
    }

    fn routes_mut(&mut self, kind: RouteKind) -> &mut RouteStatuses {
        match kind {
            RouteKind::Http => &mut self.http_routes,
            RouteKind::Grpc => &mut self.grpc_routes,
            RouteKind::Tls => &mut self.tls_routes,
            RouteKind::Tcp => &mut self.tcp_routes,
            RouteKind::Udp => &mut self.udp_routes,
        }
    }
}

/// Translates a snapshot. Total and deterministic; see the module docs.
pub fn translate(snapshot: &Snapshot) -> Translation {
    run(snapshot, None)
}

/// A translator that remembers its previous work, for a control plane translating one snapshot
/// after another that differ in a few objects.
///
/// [`Translator::translate`] returns exactly what [`translate`] returns for the same snapshot;
/// it only skips work whose inputs did not change:
/// - each HTTPRoute's contribution (compiled rules, attachment, status, entries) is kept while
///   the route is unchanged (same `resourceVersion`, or equal when it has none) and nothing it
///   can depend on changed — GatewayClasses, Gateways, Services, ReferenceGrants, Secrets,
///   ConfigMaps, Namespaces, Backends, policies and the controller name. A change to any of
///   those recomputes every route; EndpointSlices are read
///   after routes (cluster endpoints only), so endpoint churn never does;
/// - each virtual host is kept while the very same route contributions make it up.
///
/// Plain data: no I/O, no clock, no interior mutability. Memory is one copy of the HTTPRoutes
/// and of the objects listed above, plus the previous IR.
#[derive(Debug, Default)]
pub struct Translator {
    /// The inputs route contributions depend on besides the route itself, as last seen.
    world: Option<World>,
    /// By kind (`RouteKind as usize`), then key: looked up by the key's text alone.
    routes: [HashMap<Arc<str>, CachedRoute, foldhash::fast::RandomState>; RouteKind::ALL.len()],
    virtual_hosts: gateways::VirtualHostCache,
    /// The keys and sorted order of the previous snapshot's HTTPRoutes.
    http_order: Option<RouteOrder>,
}

/// A snapshot's HTTPRoutes in `"{namespace}/{name}"` order: their keys by position in the
/// snapshot, and the positions sorted by key. The control plane's snapshots list routes in
/// the same order from one translation to the next, so the previous order is checked (the
/// same names at the same positions) rather than rebuilt: a thousand keys formatted and
/// sorted again cost more than translating the one route that changed.
#[derive(Debug)]
struct RouteOrder {
    keys: Vec<Arc<str>>,
    sorted: Vec<usize>,
}

impl RouteOrder {
    fn of(routes: &[HttpRoute], previous: Option<RouteOrder>) -> Self {
        if let Some(previous) = previous
            && previous.keys.len() == routes.len()
            && previous
                .keys
                .iter()
                .zip(routes)
                .all(|(key, r)| is_key_of(key, &r.metadata))
        {
            return previous;
        }
        let keys: Vec<Arc<str>> = routes
            .iter()
            .map(|r| Arc::from(object_key(&r.metadata)))
            .collect();
        let mut sorted: Vec<usize> = (0..routes.len()).collect();
        sorted.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        Self { keys, sorted }
    }
}

/// Whether `key` is `object_key(meta)`, without building the latter.
fn is_key_of(key: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    key.len() == namespace.len() + 1 + name.len()
        && key.starts_with(namespace)
        && key[namespace.len()..].starts_with('/')
        && key.ends_with(name)
}

#[derive(Debug)]
struct CachedRoute {
    route: HttpRoute,
    outcome: Option<Arc<routes::RouteOutcome>>,
}

/// Everything of a [`Snapshot`] but routes, EndpointSlices and BackendTLSPolicies (the last
/// two are read after routes, for clusters only). (Backends carry their own endpoints, so a
/// Backend change is a world change; ConfigMaps hold SecurityPolicy JWKS, which routes carry.)
#[derive(Debug, PartialEq)]
struct World {
    controller_name: String,
    gateway_classes: Vec<GatewayClass>,
    gateways: Vec<Gateway>,
    reference_grants: Vec<ReferenceGrant>,
    services: Vec<Service>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    namespaces: Vec<Namespace>,
    backends: Vec<eg_crds::upstream::Backend>,
    backend_api: bool,
    backend_traffic_policies: Vec<eg_crds::policies::BackendTrafficPolicy>,
    security_policies: Vec<eg_crds::policies::SecurityPolicy>,
    oidc_discovery: BTreeMap<String, Result<OidcEndpoints, String>>,
}

impl World {
    fn matches(&self, s: &Snapshot) -> bool {
        self.controller_name == s.controller_name
            && all_unchanged(&self.gateway_classes, &s.gateway_classes)
            && all_unchanged(&self.gateways, &s.gateways)
            && all_unchanged(&self.reference_grants, &s.reference_grants)
            && all_unchanged(&self.services, &s.services)
            && all_unchanged(&self.secrets, &s.secrets)
            && all_unchanged(&self.config_maps, &s.config_maps)
            && all_unchanged(&self.namespaces, &s.namespaces)
            && self.backends == s.backends
            && self.backend_api == s.backend_api
            && self.backend_traffic_policies == s.backend_traffic_policies
            && self.security_policies == s.security_policies
            && self.oidc_discovery == s.oidc_discovery
    }

    fn of(s: &Snapshot) -> Self {
        Self {
            controller_name: s.controller_name.clone(),
            gateway_classes: s.gateway_classes.clone(),
            gateways: s.gateways.clone(),
            reference_grants: s.reference_grants.clone(),
            services: s.services.clone(),
            secrets: s.secrets.clone(),
            config_maps: s.config_maps.clone(),
            namespaces: s.namespaces.clone(),
            backends: s.backends.clone(),
            backend_api: s.backend_api,
            backend_traffic_policies: s.backend_traffic_policies.clone(),
            security_policies: s.security_policies.clone(),
            oidc_discovery: s.oidc_discovery.clone(),
        }
    }
}

impl Translator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Translates a snapshot, reusing what earlier calls computed from equal inputs. The result
    /// equals `translate(snapshot)`.
    pub fn translate(&mut self, snapshot: &Snapshot) -> Translation {
        if !self.world.as_ref().is_some_and(|w| w.matches(snapshot)) {
            self.routes.iter_mut().for_each(HashMap::clear);
            self.world = Some(World::of(snapshot));
        }
        run(snapshot, Some(self))
    }
}

/// Whether `now` is the object `before` was, unchanged. Objects read from the apiserver carry
/// a `resourceVersion` that changes on every write, so for them equal versions (of the same
/// uid) decide without comparing specs field by field — a thousand large HTTPRoutes compared
/// deeply cost more than translating the one that changed. Objects without one (files in
/// standalone mode and `translate -f`) are compared in full.
fn unchanged<T: kube::Resource + PartialEq>(before: &T, now: &T) -> bool {
    let (b, n) = (before.meta(), now.meta());
    match (&b.resource_version, &n.resource_version) {
        (Some(b_version), Some(n_version)) if b.uid == n.uid => b_version == n_version,
        _ => before == now,
    }
}

fn all_unchanged<T: kube::Resource + PartialEq>(before: &[T], now: &[T]) -> bool {
    before.len() == now.len() && before.iter().zip(now).all(|(b, n)| unchanged(b, n))
}

/// A route to translate: its kind, key, object and, when the memo has it unchanged, its
/// outcome from an earlier translation.
type Planned<'s> = (
    RouteKind,
    &'s Arc<str>,
    &'s HttpRoute,
    Option<Option<Arc<routes::RouteOutcome>>>,
);

/// Fewer routes to compile (or outcomes to free) than this are handled on the calling thread:
/// waking the workers costs more.
const PARALLEL_COMPILE: usize = 32;

/// The translation itself; `memo` holds what an incremental [`Translator`] may reuse, and
/// its `world` has already been checked against `snapshot`.
fn run(snapshot: &Snapshot, mut memo: Option<&mut Translator>) -> Translation {
    let one_shot = memo.is_none();
    let index = index::Index::new(snapshot);
    let mut status = Statuses {
        gateway_classes: gateways::classes(&snapshot.controller_name, &snapshot.gateway_classes),
        ..Statuses::default()
    };

    let mut ours: Vec<&Gateway> = snapshot
        .gateways
        .iter()
        .filter(|g| {
            status
                .gateway_classes
                .get(&g.spec.gateway_class_name)
                .is_some_and(gateways::class_accepted)
        })
        .collect();
    ours.sort_by_key(|g| object_key(&g.metadata));
    let mut contexts: Vec<gateways::GatewayCtx> = ours
        .into_iter()
        .map(|g| gateways::GatewayCtx::new(g, &index))
        .collect();
    let by_key: BTreeMap<String, usize> = contexts
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();

    let mut route_diagnostics = Vec::new();
    // Every other kind as the HTTPRoute routing the same traffic (see `as_http`).
    let mut converted: Vec<(RouteKind, HttpRoute)> = Vec::new();
    let conversions = (snapshot.grpc_routes.iter().map(as_http::grpc))
        .map(|r| (RouteKind::Grpc, r))
        .chain(
            snapshot
                .tls_routes
                .iter()
                .map(|r| (RouteKind::Tls, as_http::tls(r))),
        )
        .chain(
            snapshot
                .tcp_routes
                .iter()
                .map(|r| (RouteKind::Tcp, as_http::tcp(r))),
        )
        .chain(
            snapshot
                .udp_routes
                .iter()
                .map(|r| (RouteKind::Udp, as_http::udp(r))),
        );
    for (kind, result) in conversions {
        match result {
            Ok(route) => converted.push((kind, route)),
            Err(e) => route_diagnostics.push(Diagnostic {
                object: format!("{} {}", e.kind, e.key),
                category: e.category(),
                message: e.to_string(),
            }),
        }
    }
    // Route order does not change the IR (entries are sorted by precedence) but fixing it
    // keeps every intermediate step reproducible: by kind, then key (HTTPRoutes first).
    let http_order = RouteOrder::of(
        &snapshot.http_routes,
        memo.as_deref_mut().and_then(|m| m.http_order.take()),
    );
    let mut others: Vec<(RouteKind, Arc<str>, &HttpRoute)> = converted
        .iter()
        .map(|(kind, r)| (*kind, Arc::from(object_key(&r.metadata)), r))
        .collect();
    others.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let all_routes: Vec<(RouteKind, &Arc<str>, &HttpRoute)> = http_order
        .sorted
        .iter()
        .map(|&i| {
            (
                RouteKind::Http,
                &http_order.keys[i],
                &snapshot.http_routes[i],
            )
        })
        .chain(others.iter().map(|(kind, key, route)| (*kind, key, *route)))
        .collect();
    let policies = policies::Policies::new(
        &index,
        &policies::Targetable {
            gateways: &snapshot.gateways,
            routes: &all_routes,
        },
        &snapshot.backend_traffic_policies,
        &snapshot.security_policies,
    );
    let mut route_parents = policies::RouteParents::new();
    // What an earlier translation computed from the same route is reused; the rest is
    // compiled in parallel (routes are independent), then applied in order. The memo is
    // updated in place: rebuilding it moved every cached HTTPRoute twice per translation.
    let planned: Vec<Planned<'_>> = all_routes
        .iter()
        .map(|&(kind, key, route)| {
            let reused = memo
                .as_deref()
                .and_then(|m| m.routes[kind as usize].get(&**key))
                .filter(|c| unchanged(&c.route, route))
                .map(|c| c.outcome.clone());
            (kind, key, route, reused)
        })
        .collect();
    let outcome_of = |service_clusters: &mut backends::ServiceClusters,
                      (kind, key, route, reused): &Planned<'_>| match reused {
        Some(outcome) => outcome.clone(),
        None => routes::process(
            route,
            *kind,
            key,
            &contexts,
            &by_key,
            &index,
            &policies,
            &snapshot.controller_name,
            service_clusters,
        )
        .map(Arc::new),
    };
    // A re-translation typically compiles one route: waking the other workers for it cost
    // more than the compilation.
    let to_compile = planned.iter().filter(|p| p.3.is_none()).count();
    let outcomes: Vec<Option<Arc<routes::RouteOutcome>>> = if to_compile < PARALLEL_COMPILE {
        let mut service_clusters = backends::ServiceClusters::default();
        planned
            .iter()
            .map(|p| outcome_of(&mut service_clusters, p))
            .collect()
    } else {
        let memos = backends::WorkerClusters::new();
        planned
            .par_iter()
            .with_min_len(32)
            .map_init(|| memos.take(), |memo, p| outcome_of(memo.get(), p))
            .collect()
    };
    if let Some(m) = memo.as_deref_mut() {
        for ((kind, key, route, reused), outcome) in planned.iter().zip(&outcomes) {
            if reused.is_none() {
                let cached = CachedRoute {
                    route: (*route).clone(),
                    outcome: outcome.clone(),
                };
                m.routes[*kind as usize].insert(Arc::clone(key), cached);
            }
        }
        // Routes gone from the snapshot are forgotten.
        if m.routes.iter().map(HashMap::len).sum::<usize>() > planned.len() {
            let present: std::collections::HashSet<(RouteKind, &str)> = planned
                .iter()
                .map(|(kind, key, ..)| (*kind, &***key))
                .collect();
            for kind in RouteKind::ALL {
                m.routes[kind as usize].retain(|key, _| present.contains(&(kind, &**key)));
            }
        }
    }
    gateways::GatewayCtx::reserve(&mut contexts, outcomes.iter().flatten().map(|o| &**o));
    // Routes come in key order, so each kind's statuses are built in bulk from a sorted list.
    let mut route_statuses: Vec<(RouteKind, Arc<str>, Arc<HttpRouteStatus>)> =
        Vec::with_capacity(planned.len());
    for ((kind, key, _, _), outcome) in planned.into_iter().zip(&outcomes) {
        if let Some(outcome) = outcome {
            gateways::GatewayCtx::apply(&mut contexts, outcome);
            if !policies.is_empty() {
                let parents = route_parents.entry((kind, key.to_string())).or_default();
                parents.extend(
                    outcome
                        .attached
                        .iter()
                        .map(|(g, _)| contexts[*g].key.clone()),
                );
            }
            route_diagnostics.extend(outcome.diagnostics.iter().map(|(category, message)| {
                Diagnostic {
                    object: format!("{kind} {key}"),
                    category,
                    message: message.clone(),
                }
            }));
            route_statuses.push((kind, Arc::clone(key), outcome.status.clone()));
        }
    }
    for kind in RouteKind::ALL {
        *status.routes_mut(kind) = route_statuses
            .extract_if(.., |(k, ..)| *k == kind)
            .map(|(_, key, s)| (key, s))
            .collect();
    }
    if let Some(m) = memo.as_deref_mut() {
        m.http_order = Some(http_order);
    }

    let mut fresh = gateways::VirtualHostCache::one_shot();
    let virtual_hosts = match memo {
        Some(m) => &mut m.virtual_hosts,
        None => &mut fresh,
    };
    let mut irs = Vec::with_capacity(contexts.len());
    let mut diagnostics = Vec::new();
    let tls_policies = backend_tls::Policies::new(&index, &snapshot.backend_tls_policies);
    let client_policies = client_traffic::ClientPolicies::new(
        &index,
        &snapshot.gateways,
        &snapshot.client_traffic_policies,
    );
    let mut policy_usage = backend_tls::Usage::default();
    for context in contexts {
        let (mut ir, gateway_status, problems) = context.finish(&index, virtual_hosts);
        tls_policies.apply(&index, &ir.name, &mut ir.clusters, &mut policy_usage);
        client_policies.apply(&mut ir);
        diagnostics.extend(problems);
        status.gateways.insert(ir.name.clone(), gateway_status);
        irs.push(ir);
    }
    virtual_hosts.finish_translation();
    if one_shot && outcomes.len() >= PARALLEL_COMPILE {
        // The last owner of every route's outcome: freed on the workers, which allocated
        // most of it (a sixth of the calling thread's share of a translation of 1000 routes).
        outcomes.into_par_iter().for_each(drop);
    }
    diagnostics.extend(route_diagnostics);
    if !policies.is_empty() {
        let (statuses, problems) = policies.statuses(&route_parents, &snapshot.controller_name);
        status.policies = statuses;
        diagnostics.extend(problems);
    }
    if !client_policies.is_empty() {
        let (statuses, problems) = client_policies.statuses(&snapshot.controller_name);
        status.client_traffic_policies = statuses;
        diagnostics.extend(problems);
    }
    if !policy_usage.is_empty() {
        let (statuses, problems) = tls_policies.statuses(&policy_usage, &snapshot.controller_name);
        status.backend_tls_policies = statuses;
        diagnostics.extend(problems);
    }
    Translation {
        gateways: irs,
        status,
        diagnostics,
    }
}

/// `"{namespace}/{name}"` of a namespaced object (written without the formatting machinery:
/// every route's key is made on every one-shot translation).
fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let mut key = String::with_capacity(namespace.len() + 1 + name.len());
    key.push_str(namespace);
    key.push('/');
    key.push_str(name);
    key
}
