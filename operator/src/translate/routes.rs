//! HTTPRoute attachment: which parentRefs are ours, which listeners each one selects and is
//! allowed on, which hostnames it serves there, the route's per-parent status, and placing its
//! compiled entries on the listeners' virtual hosts.
//!
//! Decisions, in the order they are checked for each parentRef (the first failure is the
//! `Accepted=False` reason):
//!
//! 1. the parentRef must name a Gateway of an accepted class of ours, or it gets no status
//!    entry at all (another controller may own it);
//! 2. `sectionName`/`port` must select a listener — else `NoMatchingParent`;
//! 3. a selected listener must allow HTTPRoute and the route's namespace — else
//!    `NotAllowedByListeners`;
//! 4. an allowed listener's hostname must intersect the route's — else
//!    `NoMatchingListenerHostname`;
//! 5. at least one rule must survive — else `UnsupportedValue` (see `rules`).
//!
//! `attachedRoutes` counts, per listener, the routes whose parentRef selecting it ended
//! `Accepted=True` with a hostname intersection there; v1.5 says routes with any other
//! Accepted value "MUST NOT be included", and listener validity does not matter. Only valid
//! listeners get the route's entries in the IR.

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteStatus, HttpRouteStatusParents,
    HttpRouteStatusParentsParentRef,
};

use super::backends::ServiceClusters;
use super::conditions::{Problem, condition, kind, reason, verdict};
use super::gateways::{GatewayCtx, PlacedEntry};
use super::hostname;
use super::index::Index;
use super::ir::{ClusterIr, ClusterSettingsIr, RouteActionIr, RouteIr};
use super::policies::Policies;
use super::precedence::PrecedenceKey;
use super::refs::GATEWAY_GROUP;
use super::route_kind::RouteKind;
use super::rules::{self, CompiledRoute};

/// Everything one HTTPRoute contributes to the translation. It depends only on the route and on
/// the Gateways, listeners, Services, grants and Namespaces it was computed against — never on
/// other routes — which is what lets the incremental translator keep it while those are
/// unchanged.
#[derive(Debug)]
pub(super) struct RouteOutcome {
    /// Shared with every translation that reuses the outcome: 1000 routes' statuses copied
    /// on each translation cost more than translating the one route that changed.
    pub status: Arc<HttpRouteStatus>,
    /// `(category, message)` of every problem found.
    pub diagnostics: Vec<(&'static str, String)>,
    /// `(gateway, listener)` indexes the route is attached to (counted in `attachedRoutes`),
    /// each once.
    pub attached: Vec<(usize, usize)>,
    /// The route's entries on each valid listener it is programmed on, each listener once.
    pub placements: Vec<Placement>,
    /// Clusters the entries use (endpoints not filled in: the Gateway does that once per
    /// cluster), shared by every placement.
    pub clusters: Arc<[Arc<ClusterIr>]>,
}

/// The route's entries on one listener, served under each of `hosts`.
#[derive(Debug)]
pub(super) struct Placement {
    pub gateway: usize,
    pub listener: usize,
    pub hosts: Vec<Arc<str>>,
    /// One per (kept rule, match), shared by every host: only redirect ports and policies
    /// depend on the listener, never on the hostname.
    pub entries: Arc<[PlacedEntry]>,
    /// Variants of the route's clusters carrying a BackendTrafficPolicy's settings, which the
    /// entries on this listener send to instead of the plain clusters.
    pub policy_clusters: Vec<ClusterIr>,
}

/// Attaches `route` (of `kind`, seen as an HTTPRoute) to our Gateways, or `None` when no
/// parentRef is ours. `key` is the route's `"{namespace}/{name}"`.
#[allow(clippy::too_many_arguments)]
pub(super) fn process(
    route: &HttpRoute,
    kind: RouteKind,
    key: &Arc<str>,
    gateways: &[GatewayCtx<'_>],
    by_key: &BTreeMap<String, usize>,
    index: &Index<'_>,
    policies: &Policies,
    controller_name: &str,
    service_clusters: &mut ServiceClusters,
) -> Option<RouteOutcome> {
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let relevant: Vec<(&HttpRouteParentRefs, usize)> = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .filter_map(|p| {
            let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || kind != "Gateway" {
                return None;
            }
            let gateway_namespace = p
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(namespace);
            by_key
                .get(&format!("{gateway_namespace}/{}", p.name))
                .map(|&i| (p, i))
        })
        .collect();
    if relevant.is_empty() {
        return None;
    }

    let compiled = rules::compile(route, kind, key, index, service_clusters);
    let ctx = RouteCtx {
        key,
        kind,
        policies,
        namespace,
        route,
        compiled: &compiled,
        index,
    };
    let mut status = HttpRouteStatus {
        parents: Vec::with_capacity(relevant.len()),
    };
    let mut outcome = RouteOutcome {
        status: Arc::default(),
        diagnostics: Vec::new(),
        attached: Vec::new(),
        placements: Vec::new(),
        // Moved out of `compiled` once attaching no longer reads them.
        clusters: Arc::from([]),
    };
    let generation = route.metadata.generation;
    let resolved_refs = compiled.unresolved.first().map(|first| {
        let messages: Vec<&str> = compiled
            .unresolved
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        Problem::new(first.reason, messages.join("; "))
    });
    let dropped_messages = || {
        compiled
            .dropped
            .iter()
            .map(|(i, e)| format!("rule {i}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };

    for (parent, gateway_index) in relevant {
        let accepted = ctx.attach(parent, gateway_index, gateways, &mut outcome);
        let mut conditions = vec![
            verdict(
                kind::ACCEPTED,
                accepted.as_ref().err(),
                reason::ACCEPTED,
                "Route is accepted",
                generation,
            ),
            verdict(
                kind::RESOLVED_REFS,
                resolved_refs.as_ref(),
                reason::RESOLVED_REFS,
                "Resolved all the Object references for the Route",
                generation,
            ),
        ];
        if accepted.is_ok() && !compiled.dropped.is_empty() {
            let indexes: Vec<String> = compiled
                .dropped
                .iter()
                .map(|(i, _)| i.to_string())
                .collect();
            conditions.push(condition(
                kind::PARTIALLY_INVALID,
                true,
                compiled.dropped_reason(),
                format!(
                    "Dropped Rule(s) [{}]: {}",
                    indexes.join(", "),
                    dropped_messages()
                ),
                generation,
            ));
        }
        status.parents.push(HttpRouteStatusParents {
            conditions,
            controller_name: controller_name.to_owned(),
            parent_ref: HttpRouteStatusParentsParentRef {
                group: parent.group.clone(),
                kind: parent.kind.clone(),
                name: parent.name.clone(),
                namespace: parent.namespace.clone(),
                port: parent.port,
                section_name: parent.section_name.clone(),
            },
        });
    }
    outcome.status = Arc::new(status);
    outcome.diagnostics = compiled.diagnostics;
    outcome.clusters = compiled.clusters.into_values().collect();
    Some(outcome)
}

/// One HTTPRoute being attached.
struct RouteCtx<'r> {
    key: &'r Arc<str>,
    kind: RouteKind,
    policies: &'r Policies,
    namespace: &'r str,
    route: &'r HttpRoute,
    compiled: &'r CompiledRoute,
    index: &'r Index<'r>,
}

impl RouteCtx<'_> {
    /// Attaches through one parentRef: `Ok` when accepted, else why not.
    fn attach(
        &self,
        parent: &HttpRouteParentRefs,
        gateway_index: usize,
        gateways: &[GatewayCtx<'_>],
        outcome: &mut RouteOutcome,
    ) -> Result<(), Problem> {
        let gateway = &gateways[gateway_index];
        let selected: Vec<usize> = gateway
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                    && parent.port.is_none_or(|p| p == l.port)
            })
            .map(|(i, _)| i)
            .collect();
        if selected.is_empty() {
            return Err(Problem::new(
                reason::NO_MATCHING_PARENT,
                "No listeners match this parent ref",
            ));
        }
        let route_namespace = self.index.namespace(self.namespace);
        let allowed: Vec<usize> = selected
            .into_iter()
            .filter(|&i| {
                let l = &gateway.listeners[i];
                l.allows(self.kind)
                    && l.namespaces
                        .allows(&gateway.namespace, self.namespace, route_namespace)
            })
            .collect();
        if allowed.is_empty() {
            return Err(Problem::new(
                reason::NOT_ALLOWED_BY_LISTENERS,
                "No listeners included by this parent ref allowed this attachment.",
            ));
        }
        let route_hostnames = self.route.spec.hostnames.as_deref().unwrap_or_default();
        let attachable: Vec<(usize, Vec<String>)> = allowed
            .into_iter()
            .map(|i| {
                let hosts =
                    hostname::intersect(gateway.listeners[i].hostname.as_deref(), route_hostnames);
                (i, hosts)
            })
            .filter(|(_, hosts)| !hosts.is_empty())
            .collect();
        if attachable.is_empty() {
            return Err(Problem::new(
                reason::NO_MATCHING_LISTENER_HOSTNAME,
                format!(
                    "There were no hostname intersections between the {} and this parent ref's Listener(s).",
                    self.kind
                ),
            ));
        }
        if self.compiled.all_rules_dropped() {
            let messages: Vec<String> = self
                .compiled
                .dropped
                .iter()
                .map(|(i, e)| format!("rule {i}: {e}"))
                .collect();
            return Err(Problem::new(
                self.compiled.dropped_reason(),
                format!("All rules are invalid: {}", messages.join("; ")),
            ));
        }
        for (i, hosts) in attachable {
            if !outcome.attached.contains(&(gateway_index, i)) {
                outcome.attached.push((gateway_index, i));
            }
            self.place(gateway, gateway_index, i, hosts, outcome);
        }
        Ok(())
    }

    /// Adds the route's entries to a valid listener, once per listener, under the hostnames
    /// left after listener isolation.
    fn place(
        &self,
        gateway: &GatewayCtx<'_>,
        gateway_index: usize,
        listener_index: usize,
        hosts: Vec<String>,
        outcome: &mut RouteOutcome,
    ) {
        let listener = &gateway.listeners[listener_index];
        let already = outcome
            .placements
            .iter()
            .any(|p| p.gateway == gateway_index && p.listener == listener_index);
        if !listener.is_valid() || already {
            return;
        }
        let siblings: Vec<Option<String>> = gateway
            .listeners
            .iter()
            .enumerate()
            .filter(|(j, l)| *j != listener_index && l.is_valid() && l.port == listener.port)
            .map(|(_, l)| l.hostname.clone())
            .collect();
        let hosts = hostname::isolate(listener.hostname.as_deref(), &siblings, hosts);
        if hosts.is_empty() || self.compiled.entries.is_empty() {
            return;
        }
        let listener_port = u16::try_from(listener.port).unwrap_or_default();
        let created = self.route.metadata.creation_timestamp.as_ref();
        let mut policy_clusters = Vec::new();
        let entries: Arc<[PlacedEntry]> = self
            .compiled
            .entries
            .iter()
            .map(|entry| {
                let route = match &entry.route.action {
                    RouteActionIr::Redirect(redirect) => {
                        let mut route = (*entry.route).clone();
                        let port = rules::redirect_port(
                            entry.redirect_port,
                            redirect.scheme.as_deref(),
                            listener_port,
                        );
                        if let RouteActionIr::Redirect(r) = &mut route.action {
                            r.port = port;
                        }
                        Arc::new(route)
                    }
                    _ => entry.route.clone(),
                };
                let route =
                    self.with_policies(route, &gateway.key, &listener.name, &mut policy_clusters);
                let key =
                    PrecedenceKey::new(&route, created, self.key, entry.rule, entry.match_index);
                PlacedEntry { key, route }
            })
            .collect();
        outcome.placements.push(Placement {
            gateway: gateway_index,
            listener: listener_index,
            hosts: hosts.into_iter().map(Arc::from).collect(),
            entries,
            policy_clusters,
        });
    }

    /// The entry as the policies governing it on this listener shape it. Cluster settings
    /// re-point its backends (and mirrors) to variants of their clusters, added to `clusters`.
    fn with_policies(
        &self,
        route: Arc<RouteIr>,
        gateway: &str,
        listener: &str,
        clusters: &mut Vec<ClusterIr>,
    ) -> Arc<RouteIr> {
        if self.policies.is_empty() {
            return route;
        }
        let effective = self.policies.effective(
            gateway,
            listener,
            self.kind,
            self.key,
            route.rule_name.as_deref(),
        );
        if effective.traffic.is_none() && effective.security.is_none() {
            return route;
        }
        let mut route = (*route).clone();
        if let Some((_, traffic)) = effective.traffic {
            let mut traffic = (*traffic).clone();
            if let Some(settings) = traffic.cluster.take() {
                let variant = |name: &str| settings_variant(name, &settings);
                let mut repoint = |name: &mut Arc<str>| {
                    if let Some(base) = self.compiled.clusters.get(&**name) {
                        let renamed = variant(name);
                        if !clusters.iter().any(|c| c.name == renamed) {
                            clusters.push(ClusterIr {
                                name: renamed.clone(),
                                settings: Some(Box::new(settings.clone())),
                                ..(**base).clone()
                            });
                        }
                        *name = Arc::from(renamed);
                    }
                };
                if let RouteActionIr::Forward(f) = &mut route.action {
                    for b in &mut f.backends {
                        repoint(&mut b.cluster);
                    }
                }
                if !route.filters.mirrors.is_empty() {
                    for m in &mut Arc::make_mut(&mut route.filters).mirrors {
                        repoint(&mut m.cluster);
                    }
                }
            }
            route.traffic = Some(Box::new(traffic));
        }
        if let Some((_, security)) = effective.security {
            let mut security = (*security).clone();
            // The policy's own clusters belong to the Gateway, not to each of its routes.
            for cluster in std::mem::take(&mut security.clusters) {
                if !clusters.iter().any(|c| c.name == cluster.name) {
                    clusters.push(cluster);
                }
            }
            route.security = Some(Box::new(security));
        }
        Arc::new(route)
    }
}

/// A short, stable digest of cluster settings, for the names of cluster variants.
/// The name of the variant of cluster `name` with `settings`: `{name}/btp-{hash}`, so users
/// of different settings never share a cluster, and the name stays put while the settings do.
pub(super) fn settings_variant(name: &str, settings: &ClusterSettingsIr) -> String {
    let text = serde_json::to_string(settings).unwrap_or_default();
    format!(
        "{name}/btp-{}",
        crate::short_hash::short_sha256_hex(text.as_bytes(), 8)
    )
}
