//! Envoy Gateway policies (BackendTrafficPolicy, SecurityPolicy): which route entries each one
//! governs, what it asks of Envoy (as IR), and its status.
//!
//! Attachment follows upstream Envoy Gateway:
//! - targets come from `targetRef`, `targetRefs` and `targetSelectors` (labels, in the policy's
//!   namespace), and may be a Gateway, one of its listeners (`sectionName`), an HTTPRoute or a
//!   GRPCRoute, or one named rule of a route (`sectionName`);
//! - for one route entry the most specific policy of a kind wins: route rule, then route, then
//!   listener, then Gateway; a policy is not merged with a less specific one;
//! - between policies of one kind on the same target the oldest wins (then `{namespace}/{name}`);
//!   the others are `Accepted=False` reason `Conflicted`;
//! - a Gateway- or listener-level policy that a route-level one displaces for some routes stays
//!   `Accepted=True` and gets `Overridden=True` naming them.
//!
//! A policy with a field this project does not translate yet, an unreadable Secret or
//! ConfigMap, or a bad value (CIDR, duration) is `Accepted=False` reason `Invalid` and changes
//! nothing: half a security policy is worse than none. Global rate limits are refused that way
//! too, until their issue lands.
//!
//! Policy changes are world changes for the incremental translator (every route is recompiled);
//! they are rare next to route and endpoint churn.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use eg_crds::policies::{
    BackendTrafficPolicy, BackendTrafficPolicySpec, ClusterSettings, PolicyTargetReference,
    PolicyTargets, RateLimitRule, SecurityPolicy, unsupported_fields,
};
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::Serialize;

use super::conditions::{Problem, condition, verdict};
use super::index::{Index, secret_value};
use super::ir::{
    ActiveHealthCheckIr, AuthorizationIr, AuthzRuleIr, BasicAuthIr, ClusterSettingsIr, CorsIr,
    FaultIr, HashPolicyIr, HealthCheckKindIr, JwksIr, JwtIr, JwtProviderIr, LoadBalancingIr,
    OutlierDetectionIr, PathMatchIr, RateLimitIr, RateLimitSelectorIr, RetryIr, SecurityIr,
    StringMatchIr, TcpKeepaliveIr, TrafficIr,
};
use super::refs::GATEWAY_GROUP;
use super::route_kind::RouteKind;
use super::security_services;

/// Condition types and reasons of policy status (GEP-713 and upstream Envoy Gateway).
pub(super) mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const OVERRIDDEN: &str = "Overridden";
    pub const CONFLICTED: &str = "Conflicted";
    pub const INVALID: &str = "Invalid";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
}

/// Why a policy cannot be applied.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum PolicyError {
    #[error("{} not supported yet; the policy is not applied", .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("invalid {field} {value:?}: {problem}")]
    InvalidValue {
        field: String,
        value: String,
        problem: String,
    },
    #[error("{field}: {kind} {namespace}/{name} not found")]
    RefNotFound {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} has no key {key:?}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: &'static str,
    },
}

impl PolicyError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported_field",
            Self::InvalidValue { .. } => "invalid_value",
            Self::RefNotFound { .. } | Self::MissingKey { .. } => "not_found",
        }
    }
}

/// What a policy governs, most specific last in the precedence order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    Gateway(String),
    Listener(String, String),
    Route(RouteKind, String),
    Rule(RouteKind, String, String),
}

/// One kind's policies, resolved, by target.
#[derive(Debug)]
pub(super) struct Attachments<T> {
    kind: &'static str,
    /// Target → the winning policy's key.
    pub(super) winners: BTreeMap<Target, String>,
    pub(super) policies: BTreeMap<String, Resolved<T>>,
}

#[derive(Debug)]
pub(super) struct Resolved<T> {
    generation: Option<i64>,
    pub(super) ir: Result<Arc<T>, PolicyError>,
    pub(super) targets: Vec<Target>,
    /// Targets named (by reference) that do not exist.
    missing: Vec<PolicyTargetReference>,
    /// Targets an older policy holds.
    conflicted: bool,
}

/// Every policy of a snapshot, attached. Built once per translation.
#[derive(Debug)]
pub(super) struct Policies {
    traffic: Attachments<TrafficIr>,
    security: Attachments<SecurityIr>,
}

/// The policies governing one route entry on one listener.
#[derive(Debug, Default, Clone)]
pub(super) struct Effective {
    pub traffic: Option<(String, Arc<TrafficIr>)>,
    pub security: Option<(String, Arc<SecurityIr>)>,
}

/// Where routes were attached, for policy status: route → our Gateways it is placed on.
pub(super) type RouteParents = BTreeMap<(RouteKind, String), BTreeSet<String>>;

/// Policy statuses by `"{namespace}/{name}"`, as written (`ancestors` with our entries).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyStatuses {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_traffic_policies: BTreeMap<String, PolicyStatus>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub security_policies: BTreeMap<String, PolicyStatus>,
}

/// GEP-713 policy status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyStatus {
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: AncestorRef,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// The objects a policy may target, for existence checks and label selection.
pub(super) struct Targetable<'a> {
    pub gateways: &'a [Gateway],
    pub routes: &'a [(RouteKind, &'a Arc<str>, &'a HttpRoute)],
}

impl Policies {
    pub fn new(
        index: &Index<'_>,
        targetable: &Targetable<'_>,
        traffic: &[BackendTrafficPolicy],
        security: &[SecurityPolicy],
    ) -> Self {
        Self {
            traffic: attach(
                "BackendTrafficPolicy",
                traffic
                    .iter()
                    .map(|p| (&p.metadata, &p.spec.targets, traffic_ir(p)))
                    .collect(),
                targetable,
            ),
            security: attach(
                "SecurityPolicy",
                security
                    .iter()
                    .map(|p| (&p.metadata, &p.spec.targets, security_ir(index, p)))
                    .collect(),
                targetable,
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traffic.policies.is_empty() && self.security.policies.is_empty()
    }

    /// The policies governing rule `rule` (its name, if any) of route `kind`/`route` placed on
    /// `listener` of `gateway`.
    pub fn effective(
        &self,
        gateway: &str,
        listener: &str,
        kind: RouteKind,
        route: &str,
        rule: Option<&str>,
    ) -> Effective {
        let chain = precedence_chain(gateway, listener, kind, route, rule);
        Effective {
            traffic: self.traffic.winner(&chain),
            security: self.security.winner(&chain),
        }
    }

    /// Statuses of every policy, one ancestor per Gateway of ours it is relative to.
    pub fn statuses(
        &self,
        parents: &RouteParents,
        controller_name: &str,
    ) -> (PolicyStatuses, Vec<super::Diagnostic>) {
        let mut diagnostics = Vec::new();
        let traffic = self
            .traffic
            .statuses(parents, controller_name, &mut diagnostics);
        let security = self
            .security
            .statuses(parents, controller_name, &mut diagnostics);
        (
            PolicyStatuses {
                backend_traffic_policies: traffic,
                security_policies: security,
            },
            diagnostics,
        )
    }
}

/// Most specific first.
fn precedence_chain(
    gateway: &str,
    listener: &str,
    kind: RouteKind,
    route: &str,
    rule: Option<&str>,
) -> Vec<Target> {
    let mut chain = Vec::with_capacity(4);
    if let Some(rule) = rule {
        chain.push(Target::Rule(kind, route.to_owned(), rule.to_owned()));
    }
    chain.push(Target::Route(kind, route.to_owned()));
    chain.push(Target::Listener(gateway.to_owned(), listener.to_owned()));
    chain.push(Target::Gateway(gateway.to_owned()));
    chain
}

pub(super) fn attach<T>(
    kind: &'static str,
    mut policies: Vec<(&ObjectMeta, &PolicyTargets, Result<T, PolicyError>)>,
    targetable: &Targetable<'_>,
) -> Attachments<T> {
    policies.sort_by_key(|(meta, _, _)| (meta.creation_timestamp.clone(), super::object_key(meta)));
    let mut out = Attachments {
        kind,
        winners: BTreeMap::new(),
        policies: BTreeMap::new(),
    };
    for (meta, targets, ir) in policies {
        let key = super::object_key(meta);
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let (resolved_targets, missing) = resolve_targets(namespace, targets, targetable);
        let mut conflicted = false;
        let ir = ir.map(Arc::new);
        if ir.is_ok() {
            for target in &resolved_targets {
                match out.winners.get(target) {
                    Some(holder) if *holder != key => conflicted = true,
                    _ => {
                        out.winners.insert(target.clone(), key.clone());
                    }
                }
            }
        }
        out.policies.insert(
            key,
            Resolved {
                generation: meta.generation,
                ir,
                targets: resolved_targets,
                missing,
                conflicted,
            },
        );
    }
    out
}

/// The existing targets a policy names, and the references to targets that do not exist.
fn resolve_targets(
    namespace: &str,
    targets: &PolicyTargets,
    targetable: &Targetable<'_>,
) -> (Vec<Target>, Vec<PolicyTargetReference>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    // A sectionName must name one of the target's listeners (or rules): a policy for a
    // listener that does not exist has no target, as upstream reports it.
    let gateway_exists = |name: &str, section: Option<&String>| {
        targetable.gateways.iter().any(|g| {
            g.metadata.namespace.as_deref() == Some(namespace)
                && g.metadata.name.as_deref() == Some(name)
                && section.is_none_or(|s| g.spec.listeners.iter().any(|l| &l.name == s))
        })
    };
    let route_exists = |kind: RouteKind, name: &str, section: Option<&String>| {
        targetable.routes.iter().any(|(k, key, route)| {
            *k == kind
                && ***key == *format!("{namespace}/{name}")
                && section.is_none_or(|s| {
                    route
                        .spec
                        .rules
                        .iter()
                        .flatten()
                        .any(|r| r.name.as_ref() == Some(s))
                })
        })
    };
    for r in targets.target_ref.iter().chain(&targets.target_refs) {
        let group = if r.group.is_empty() {
            GATEWAY_GROUP
        } else {
            &r.group
        };
        let target = match (group, r.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") if gateway_exists(&r.name, r.section_name.as_ref()) => {
                let key = format!("{namespace}/{}", r.name);
                Some(match &r.section_name {
                    Some(section) => Target::Listener(key, section.clone()),
                    None => Target::Gateway(key),
                })
            }
            (GATEWAY_GROUP, kind) => match RouteKind::from_name(kind) {
                Some(kind @ (RouteKind::Http | RouteKind::Grpc))
                    if route_exists(kind, &r.name, r.section_name.as_ref()) =>
                {
                    let key = format!("{namespace}/{}", r.name);
                    Some(match &r.section_name {
                        Some(rule) => Target::Rule(kind, key, rule.clone()),
                        None => Target::Route(kind, key),
                    })
                }
                _ => None,
            },
            _ => None,
        };
        match target {
            Some(t) => found.push(t),
            None => missing.push(r.clone()),
        }
    }
    for selector in &targets.target_selectors {
        let selected = |meta: &ObjectMeta| {
            meta.namespace.as_deref() == Some(namespace)
                && selector
                    .match_labels
                    .iter()
                    .all(|(k, v)| meta.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
                && selector.match_expressions.iter().all(|e| {
                    let value = meta.labels.as_ref().and_then(|l| l.get(&e.key));
                    let values = e.values.as_deref().unwrap_or_default();
                    match e.operator.as_str() {
                        "In" => value.is_some_and(|v| values.contains(v)),
                        "NotIn" => value.is_none_or(|v| !values.contains(v)),
                        "Exists" => value.is_some(),
                        "DoesNotExist" => value.is_none(),
                        _ => false,
                    }
                })
        };
        match selector.kind.as_str() {
            "Gateway" => found.extend(
                targetable
                    .gateways
                    .iter()
                    .filter(|g| selected(&g.metadata))
                    .map(|g| Target::Gateway(super::object_key(&g.metadata))),
            ),
            kind => {
                if let Some(kind @ (RouteKind::Http | RouteKind::Grpc)) = RouteKind::from_name(kind)
                {
                    found.extend(
                        targetable
                            .routes
                            .iter()
                            .filter(|(k, _, r)| *k == kind && selected(&r.metadata))
                            .map(|(k, key, _)| Target::Route(*k, key.to_string())),
                    );
                }
            }
        }
    }
    found.sort();
    found.dedup();
    (found, missing)
}

impl<T> Attachments<T> {
    pub(super) fn winner(&self, chain: &[Target]) -> Option<(String, Arc<T>)> {
        chain.iter().find_map(|t| {
            let key = self.winners.get(t)?;
            let ir = self.policies.get(key)?.ir.as_ref().ok()?;
            Some((key.clone(), ir.clone()))
        })
    }

    pub(super) fn statuses(
        &self,
        parents: &RouteParents,
        controller_name: &str,
        diagnostics: &mut Vec<super::Diagnostic>,
    ) -> BTreeMap<String, PolicyStatus> {
        let mut out = BTreeMap::new();
        for (key, policy) in &self.policies {
            let (namespace, _) = key.split_once('/').unwrap_or(("", key));
            let generation = policy.generation;
            let mut ancestors: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
            for target in &policy.targets {
                match target {
                    Target::Gateway(g) => {
                        ancestors.entry((g.clone(), None)).or_default();
                    }
                    Target::Listener(g, l) => {
                        ancestors.entry((g.clone(), Some(l.clone()))).or_default();
                    }
                    Target::Route(kind, route) | Target::Rule(kind, route, _) => {
                        for g in parents.get(&(*kind, route.clone())).into_iter().flatten() {
                            ancestors.entry((g.clone(), None)).or_default();
                        }
                    }
                }
            }
            // Routes of a Gateway-level policy's Gateway that a more specific policy governs.
            for target in &policy.targets {
                let (Target::Gateway(g) | Target::Listener(g, _)) = target else {
                    continue;
                };
                let overriders: Vec<String> = parents
                    .iter()
                    .filter(|(_, gs)| gs.contains(g))
                    .filter(|((kind, route), _)| {
                        self.winners
                            .get(&Target::Route(*kind, route.clone()))
                            .is_some_and(|w| w != key)
                    })
                    .map(|((kind, route), _)| format!("{kind} {route}"))
                    .collect();
                if let Some(list) = ancestors
                    .iter_mut()
                    .find(|((ag, _), _)| ag == g)
                    .map(|(_, l)| l)
                {
                    list.extend(overriders);
                }
            }
            let accepted = match &policy.ir {
                Err(e) => {
                    diagnostics.push(super::Diagnostic {
                        object: format!("{} {key}", self.kind),
                        category: e.category(),
                        message: e.to_string(),
                    });
                    Some(Problem::new(reason::INVALID, e.to_string()))
                }
                Ok(_) if policy.conflicted => Some(Problem::new(
                    reason::CONFLICTED,
                    format!(
                        "An older {} already targets the same object; this one is not applied",
                        self.kind
                    ),
                )),
                Ok(_) => None,
            };
            let mut statuses: Vec<PolicyAncestorStatus> = ancestors
                .into_iter()
                .map(|((gateway, section), overridden)| {
                    let (gns, gname) = gateway.split_once('/').unwrap_or(("", &gateway));
                    let mut conditions = vec![verdict(
                        reason::ACCEPTED,
                        accepted.as_ref(),
                        reason::ACCEPTED,
                        "Policy has been accepted.",
                        generation,
                    )];
                    if !overridden.is_empty() && accepted.is_none() {
                        conditions.push(condition(
                            reason::OVERRIDDEN,
                            true,
                            reason::OVERRIDDEN,
                            format!(
                                "This policy is being overridden by other {}s for these routes: [{}]",
                                self.kind,
                                overridden.join(", ")
                            ),
                            generation,
                        ));
                    }
                    PolicyAncestorStatus {
                        ancestor_ref: AncestorRef {
                            group: GATEWAY_GROUP.to_owned(),
                            kind: "Gateway".to_owned(),
                            name: gname.to_owned(),
                            namespace: gns.to_owned(),
                            section_name: section,
                        },
                        controller_name: controller_name.to_owned(),
                        conditions,
                    }
                })
                .collect();
            for r in &policy.missing {
                let group = if r.group.is_empty() {
                    GATEWAY_GROUP
                } else {
                    &r.group
                };
                let message = match &r.section_name {
                    Some(section) => {
                        let part = if r.kind == "Gateway" {
                            "listener"
                        } else {
                            "rule"
                        };
                        format!(
                            "{} {namespace}/{} has no {part} {section:?} (or does not exist)",
                            r.kind, r.name
                        )
                    }
                    None => format!("{} {namespace}/{} not found", r.kind, r.name),
                };
                diagnostics.push(super::Diagnostic {
                    object: format!("{} {key}", self.kind),
                    category: "target_not_found",
                    message: message.clone(),
                });
                statuses.push(PolicyAncestorStatus {
                    ancestor_ref: AncestorRef {
                        group: group.to_owned(),
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                        namespace: namespace.to_owned(),
                        section_name: r.section_name.clone(),
                    },
                    controller_name: controller_name.to_owned(),
                    conditions: vec![condition(
                        reason::ACCEPTED,
                        false,
                        reason::TARGET_NOT_FOUND,
                        message,
                        generation,
                    )],
                });
            }
            if !statuses.is_empty() {
                out.insert(
                    key.clone(),
                    PolicyStatus {
                        ancestors: statuses,
                    },
                );
            }
        }
        out
    }
}

fn millis(field: &str, value: &str) -> Result<u64, PolicyError> {
    gateway_api::Duration::from_str(value)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|problem| PolicyError::InvalidValue {
            field: field.to_owned(),
            value: value.to_owned(),
            problem,
        })
}

pub(super) fn opt_millis(field: &str, value: Option<&String>) -> Result<Option<u64>, PolicyError> {
    value.map(|v| millis(field, v)).transpose()
}

pub(super) fn refuse_unsupported(found: Vec<String>) -> Result<(), PolicyError> {
    if found.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::Unsupported(found))
    }
}

/// The IR of a BackendTrafficPolicy, or why it cannot be applied.
fn traffic_ir(policy: &BackendTrafficPolicy) -> Result<TrafficIr, PolicyError> {
    traffic_spec_ir(&policy.spec, "spec")
}

/// The settings of a BackendTrafficPolicy spec (or of a policy backend's `backendSettings`,
/// which shares its field names), fields named under `at`.
fn traffic_spec_ir(spec: &BackendTrafficPolicySpec, at: &str) -> Result<TrafficIr, PolicyError> {
    let mut unsupported = unsupported_fields(at, &spec.unsupported);
    if let Some(r) = &spec.retry {
        unsupported.extend(unsupported_fields(&format!("{at}.retry"), &r.unsupported));
    }
    if let Some(t) = spec.timeout.as_ref().and_then(|t| t.http.as_ref()) {
        unsupported.extend(unsupported_fields(
            &format!("{at}.timeout.http"),
            &t.unsupported,
        ));
    }
    if let Some(c) = &spec.circuit_breaker {
        unsupported.extend(unsupported_fields(
            &format!("{at}.circuitBreaker"),
            &c.unsupported,
        ));
    }
    if let Some(lb) = &spec.load_balancer {
        unsupported.extend(unsupported_fields(
            &format!("{at}.loadBalancer"),
            &lb.unsupported,
        ));
    }
    if let Some(hc) = &spec.health_check {
        unsupported.extend(unsupported_fields(
            &format!("{at}.healthCheck"),
            &hc.unsupported,
        ));
        if let Some(a) = &hc.active {
            unsupported.extend(unsupported_fields(
                &format!("{at}.healthCheck.active"),
                &a.unsupported,
            ));
            if let Some(h) = &a.http {
                unsupported.extend(unsupported_fields(
                    &format!("{at}.healthCheck.active.http"),
                    &h.unsupported,
                ));
            }
            if let Some(tcp) = &a.tcp {
                unsupported.extend(unsupported_fields(
                    &format!("{at}.healthCheck.active.tcp"),
                    tcp,
                ));
            }
        }
        if let Some(p) = &hc.passive {
            unsupported.extend(unsupported_fields(
                &format!("{at}.healthCheck.passive"),
                &p.unsupported,
            ));
        }
    }
    if let Some(rl) = &spec.rate_limit {
        if rl.kind.as_deref() != Some("Local") || rl.global.is_some() {
            unsupported.push(format!(
                "{at}.rateLimit (type Global: global rate limits come in a later release)"
            ));
        }
        for (i, rule) in rl.local.iter().flat_map(|l| l.rules.iter()).enumerate() {
            unsupported.extend(unsupported_fields(
                &format!("{at}.rateLimit.local.rules[{i}]"),
                &rule.unsupported,
            ));
            for (j, selector) in rule.client_selectors.iter().enumerate() {
                unsupported.extend(unsupported_fields(
                    &format!("{at}.rateLimit.local.rules[{i}].clientSelectors[{j}]"),
                    &selector.unsupported,
                ));
            }
        }
    }
    for (i, c) in spec.compression.iter().chain(&spec.compressor).enumerate() {
        unsupported.extend(unsupported_fields(
            &format!("{at}.compression[{i}]"),
            &c.unsupported,
        ));
    }
    refuse_unsupported(unsupported)?;

    let retry = spec
        .retry
        .as_ref()
        .map(|r| -> Result<RetryIr, PolicyError> {
            let on = r.retry_on.clone().unwrap_or_default();
            let (triggers, codes) = if on.triggers.is_empty() && on.http_status_codes.is_empty() {
                // Upstream's default when retryOn is left out.
                (
                    vec![
                        "connect-failure".to_owned(),
                        "refused-stream".to_owned(),
                        "unavailable".to_owned(),
                        "cancelled".to_owned(),
                        "retriable-status-codes".to_owned(),
                    ],
                    vec![503],
                )
            } else {
                let mut triggers = on.triggers.clone();
                if !on.http_status_codes.is_empty()
                    && !triggers.iter().any(|t| t == "retriable-status-codes")
                {
                    triggers.push("retriable-status-codes".to_owned());
                }
                (triggers, on.http_status_codes.clone())
            };
            let per_retry = r.per_retry.as_ref();
            Ok(RetryIr {
                num_retries: r.num_retries.unwrap_or(2),
                retry_on: triggers,
                status_codes: codes,
                per_try_timeout_ms: opt_millis(
                    &format!("{at}.retry.perRetry.timeout"),
                    per_retry.and_then(|p| p.timeout.as_ref()),
                )?,
                backoff_base_ms: opt_millis(
                    &format!("{at}.retry.perRetry.backOff.baseInterval"),
                    per_retry
                        .and_then(|p| p.back_off.as_ref())
                        .and_then(|b| b.base_interval.as_ref()),
                )?,
                backoff_max_ms: opt_millis(
                    &format!("{at}.retry.perRetry.backOff.maxInterval"),
                    per_retry
                        .and_then(|p| p.back_off.as_ref())
                        .and_then(|b| b.max_interval.as_ref()),
                )?,
            })
        })
        .transpose()?;
    let http_timeout = spec.timeout.as_ref().and_then(|t| t.http.as_ref());
    let request_timeout_ms = opt_millis(
        &format!("{at}.timeout.http.requestTimeout"),
        http_timeout.and_then(|h| h.request_timeout.as_ref()),
    )?;
    let rate_limits = spec
        .rate_limit
        .iter()
        .flat_map(|r| r.local.iter())
        .flat_map(|l| l.rules.iter())
        .enumerate()
        .map(|(i, rule)| rate_limit_rule(i, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let mut compression: Vec<String> = Vec::new();
    for (i, c) in spec.compression.iter().chain(&spec.compressor).enumerate() {
        let name = match c.kind.as_str() {
            "Gzip" => "gzip",
            "Brotli" => "brotli",
            "Zstd" => "zstd",
            other => {
                return Err(PolicyError::InvalidValue {
                    field: format!("{at}.compression[{i}].type"),
                    value: other.to_owned(),
                    problem: "must be Gzip, Brotli or Zstd".into(),
                });
            }
        };
        if !compression.iter().any(|c| c == name) {
            compression.push(name.to_owned());
        }
    }
    let proxy_protocol = spec
        .proxy_protocol
        .as_ref()
        .map(|p| match p.version.as_str() {
            "V1" => Ok(1),
            "V2" => Ok(2),
            other => Err(PolicyError::InvalidValue {
                field: format!("{at}.proxyProtocol.version"),
                value: other.to_owned(),
                problem: "must be V1 or V2".into(),
            }),
        })
        .transpose()?;

    let cb = spec.circuit_breaker.as_ref();
    let lb = spec
        .load_balancer
        .as_ref()
        .map(
            |lb| -> Result<(LoadBalancingIr, Option<HashPolicyIr>), PolicyError> {
                let slow_start_ms = lb
                    .slow_start
                    .as_ref()
                    .map(|s| millis(&format!("{at}.loadBalancer.slowStart.window"), &s.window))
                    .transpose()?;
                let invalid = |field: &str, value: &str| PolicyError::InvalidValue {
                    field: field.to_owned(),
                    value: value.to_owned(),
                    problem: "not a supported value".into(),
                };
                let (policy, hash) = match lb.kind.as_str() {
                    "RoundRobin" => ("round_robin", None),
                    "LeastRequest" => ("least_request", None),
                    "Random" => ("random", None),
                    "ConsistentHash" => {
                        let ch = lb.consistent_hash.as_ref();
                        let hash = match ch.map(|c| c.kind.as_str()) {
                            Some("SourceIP") => HashPolicyIr::SourceIp,
                            Some("Header") => HashPolicyIr::Header(
                                ch.and_then(|c| c.header.as_ref())
                                    .map(|h| h.name.to_ascii_lowercase())
                                    .ok_or_else(|| {
                                        invalid(
                                            &format!("{at}.loadBalancer.consistentHash.header"),
                                            "",
                                        )
                                    })?,
                            ),
                            Some("Cookie") => {
                                let cookie =
                                    ch.and_then(|c| c.cookie.as_ref()).ok_or_else(|| {
                                        invalid(
                                            &format!("{at}.loadBalancer.consistentHash.cookie"),
                                            "",
                                        )
                                    })?;
                                HashPolicyIr::Cookie {
                                    name: cookie.name.clone(),
                                    ttl_ms: opt_millis(
                                        &format!("{at}.loadBalancer.consistentHash.cookie.ttl"),
                                        cookie.ttl.as_ref(),
                                    )?,
                                }
                            }
                            other => {
                                return Err(invalid(
                                    &format!("{at}.loadBalancer.consistentHash.type"),
                                    other.unwrap_or(""),
                                ));
                            }
                        };
                        ("ring_hash", Some(hash))
                    }
                    other => return Err(invalid(&format!("{at}.loadBalancer.type"), other)),
                };
                Ok((
                    LoadBalancingIr {
                        policy: policy.to_owned(),
                        slow_start_ms,
                    },
                    hash,
                ))
            },
        )
        .transpose()?;
    let active_health_check = spec
        .health_check
        .as_ref()
        .and_then(|h| h.active.as_ref())
        .map(|a| -> Result<ActiveHealthCheckIr, PolicyError> {
            let check = match a.kind.as_str() {
                "HTTP" => {
                    let http = a.http.as_ref().ok_or_else(|| PolicyError::InvalidValue {
                        field: format!("{at}.healthCheck.active.http"),
                        value: String::new(),
                        problem: "required for type HTTP".into(),
                    })?;
                    HealthCheckKindIr::Http {
                        path: http.path.clone(),
                        method: http.method.clone(),
                        host: http.hostname.clone(),
                        expected_statuses: http.expected_statuses.clone(),
                    }
                }
                "TCP" => HealthCheckKindIr::Tcp,
                "GRPC" => HealthCheckKindIr::Grpc {
                    service: a.grpc.as_ref().and_then(|g| g.service.clone()),
                },
                other => {
                    return Err(PolicyError::InvalidValue {
                        field: format!("{at}.healthCheck.active.type"),
                        value: other.to_owned(),
                        problem: "must be HTTP, TCP or GRPC".into(),
                    });
                }
            };
            Ok(ActiveHealthCheckIr {
                check,
                // Upstream's defaults.
                interval_ms: opt_millis(
                    &format!("{at}.healthCheck.active.interval"),
                    a.interval.as_ref(),
                )?
                .unwrap_or(3_000),
                timeout_ms: opt_millis(
                    &format!("{at}.healthCheck.active.timeout"),
                    a.timeout.as_ref(),
                )?
                .unwrap_or(1_000),
                healthy_threshold: a.healthy_threshold.unwrap_or(1),
                unhealthy_threshold: a.unhealthy_threshold.unwrap_or(3),
            })
        })
        .transpose()?;
    let outlier_detection = spec
        .health_check
        .as_ref()
        .and_then(|h| h.passive.as_ref())
        .map(|p| -> Result<OutlierDetectionIr, PolicyError> {
            Ok(OutlierDetectionIr {
                consecutive_5xx: p.consecutive5_xx_errors,
                consecutive_gateway_errors: p.consecutive_gateway_errors,
                consecutive_local_origin_failures: p.consecutive_local_origin_failures,
                split_external_local_origin_errors: p
                    .split_external_local_origin_errors
                    .unwrap_or(false),
                interval_ms: opt_millis(
                    &format!("{at}.healthCheck.passive.interval"),
                    p.interval.as_ref(),
                )?,
                base_ejection_time_ms: opt_millis(
                    &format!("{at}.healthCheck.passive.baseEjectionTime"),
                    p.base_ejection_time.as_ref(),
                )?,
                max_ejection_percent: p.max_ejection_percent,
            })
        })
        .transpose()?;
    let seconds = |field: &str, value: Option<&String>| -> Result<Option<u32>, PolicyError> {
        Ok(opt_millis(field, value)?.map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)))
    };
    let tcp_keepalive = spec
        .tcp_keepalive
        .as_ref()
        .map(|k| -> Result<TcpKeepaliveIr, PolicyError> {
            Ok(TcpKeepaliveIr {
                probes: k.probes,
                idle_time_s: seconds(&format!("{at}.tcpKeepalive.idleTime"), k.idle_time.as_ref())?,
                interval_s: seconds(&format!("{at}.tcpKeepalive.interval"), k.interval.as_ref())?,
            })
        })
        .transpose()?;
    let per_million = |field: &str, percentage: Option<f64>| -> Result<u32, PolicyError> {
        let p = percentage.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&p) {
            return Err(PolicyError::InvalidValue {
                field: field.to_owned(),
                value: p.to_string(),
                problem: "must be between 0 and 100".into(),
            });
        }
        // In range, so the cast cannot truncate meaningfully.
        Ok((p * 10_000.0).round() as u32)
    };
    let fault = spec
        .fault_injection
        .as_ref()
        .map(|f| -> Result<FaultIr, PolicyError> {
            Ok(FaultIr {
                delay_ms: f
                    .delay
                    .as_ref()
                    .map(|d| {
                        millis(
                            &format!("{at}.faultInjection.delay.fixedDelay"),
                            &d.fixed_delay,
                        )
                    })
                    .transpose()?,
                delay_per_million: per_million(
                    &format!("{at}.faultInjection.delay.percentage"),
                    f.delay.as_ref().and_then(|d| d.percentage),
                )?,
                abort_http_status: f.abort.as_ref().and_then(|a| a.http_status),
                abort_grpc_status: f.abort.as_ref().and_then(|a| a.grpc_status),
                abort_per_million: per_million(
                    &format!("{at}.faultInjection.abort.percentage"),
                    f.abort.as_ref().and_then(|a| a.percentage),
                )?,
            })
        })
        .transpose()?;
    let (load_balancing, hash_policy) = match lb {
        Some((l, h)) => (Some(l), h),
        None => (None, None),
    };
    let cluster = ClusterSettingsIr {
        connect_timeout_ms: opt_millis(
            &format!("{at}.timeout.tcp.connectTimeout"),
            spec.timeout
                .as_ref()
                .and_then(|t| t.tcp.as_ref())
                .and_then(|t| t.connect_timeout.as_ref()),
        )?,
        idle_timeout_ms: opt_millis(
            &format!("{at}.timeout.http.connectionIdleTimeout"),
            http_timeout.and_then(|h| h.connection_idle_timeout.as_ref()),
        )?,
        max_connection_duration_ms: opt_millis(
            &format!("{at}.timeout.http.maxConnectionDuration"),
            http_timeout.and_then(|h| h.max_connection_duration.as_ref()),
        )?,
        max_connections: cb.and_then(|c| c.max_connections),
        max_pending_requests: cb.and_then(|c| c.max_pending_requests),
        max_parallel_requests: cb.and_then(|c| c.max_parallel_requests),
        max_parallel_retries: cb.and_then(|c| c.max_parallel_retries),
        max_requests_per_connection: cb.and_then(|c| c.max_requests_per_connection),
        load_balancing,
        active_health_check,
        outlier_detection,
        tcp_keepalive,
        proxy_protocol,
    };
    Ok(TrafficIr {
        retry,
        request_timeout_ms,
        rate_limits,
        compression,
        hash_policy,
        fault,
        cluster: (cluster != ClusterSettingsIr::default()).then_some(cluster),
    })
}

/// The `backendSettings` of a policy's own backend (the field at `at`): the settings of its
/// cluster, and the retry and request timeout of the policy's requests to it. A consistent hash
/// has no request attributes to hash here, so it balances like Random.
pub(super) fn backend_settings_ir(
    settings: &ClusterSettings,
    at: &str,
) -> Result<TrafficIr, PolicyError> {
    let ClusterSettings {
        retry,
        timeout,
        circuit_breaker,
        load_balancer,
        health_check,
        tcp_keepalive,
        proxy_protocol,
        unsupported,
    } = settings.clone();
    let spec = BackendTrafficPolicySpec {
        retry,
        timeout,
        circuit_breaker,
        load_balancer,
        health_check,
        tcp_keepalive,
        proxy_protocol,
        unsupported,
        ..BackendTrafficPolicySpec::default()
    };
    traffic_spec_ir(&spec, at)
}

/// One local rate limit rule: its bucket and the requests that count against it.
fn rate_limit_rule(i: usize, rule: &RateLimitRule) -> Result<RateLimitIr, PolicyError> {
    let at = format!("spec.rateLimit.local.rules[{i}]");
    let fill_interval_ms = match rule.limit.unit.as_str() {
        "Second" => 1_000,
        "Minute" => 60_000,
        "Hour" => 3_600_000,
        "Day" => 86_400_000,
        other => {
            return Err(PolicyError::InvalidValue {
                field: format!("{at}.limit.unit"),
                value: other.to_owned(),
                problem: "local rate limits support Second, Minute, Hour and Day".into(),
            });
        }
    };
    let invalid = |field: String, value: &str, problem: &str| PolicyError::InvalidValue {
        field,
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    let mut selectors = Vec::new();
    for (j, s) in rule.client_selectors.iter().enumerate() {
        let at = format!("{at}.clientSelectors[{j}]");
        for (k, h) in s.headers.iter().enumerate() {
            let field = format!("{at}.headers[{k}]");
            let invert = h.invert.unwrap_or(false);
            let name = h.name.to_ascii_lowercase();
            let value = || {
                h.value
                    .clone()
                    .ok_or_else(|| invalid(format!("{field}.value"), "", "required for this type"))
            };
            selectors.push(match h.kind.as_deref().unwrap_or("Exact") {
                "Exact" => RateLimitSelectorIr::Header {
                    name,
                    value: StringMatchIr::Exact(value()?),
                    invert,
                },
                "RegularExpression" => {
                    let re = value()?;
                    regex::Regex::new(&re)
                        .map_err(|e| invalid(format!("{field}.value"), &re, &e.to_string()))?;
                    RateLimitSelectorIr::Header {
                        name,
                        value: StringMatchIr::Regex(re),
                        invert,
                    }
                }
                "Distinct" if invert => {
                    return Err(invalid(
                        format!("{field}.invert"),
                        "true",
                        "a Distinct header cannot be inverted",
                    ));
                }
                "Distinct" => RateLimitSelectorIr::HeaderDistinct { name },
                other => {
                    return Err(invalid(
                        format!("{field}.type"),
                        other,
                        "must be Exact, RegularExpression or Distinct",
                    ));
                }
            });
        }
        if !s.methods.is_empty() {
            let invert = s.methods.iter().any(|m| m.invert.unwrap_or(false));
            if s.methods
                .iter()
                .any(|m| m.invert.unwrap_or(false) != invert)
            {
                return Err(invalid(
                    format!("{at}.methods"),
                    "",
                    "invert must be the same for every method",
                ));
            }
            selectors.push(RateLimitSelectorIr::Methods {
                methods: s
                    .methods
                    .iter()
                    .map(|m| m.value.to_ascii_uppercase())
                    .collect(),
                invert,
            });
        }
        if let Some(p) = &s.path {
            let field = format!("{at}.path");
            let path = match p.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatchIr::Exact(p.value.clone()),
                // Stored as route path matches are: no trailing slash, except `/` itself.
                "PathPrefix" => PathMatchIr::Prefix(match p.value.trim_end_matches('/') {
                    "" => "/".to_owned(),
                    trimmed => trimmed.to_owned(),
                }),
                "RegularExpression" => {
                    regex::Regex::new(&p.value)
                        .map_err(|e| invalid(format!("{field}.value"), &p.value, &e.to_string()))?;
                    PathMatchIr::Regex(p.value.clone())
                }
                other => {
                    return Err(invalid(
                        format!("{field}.type"),
                        other,
                        "must be Exact, PathPrefix or RegularExpression",
                    ));
                }
            };
            if !p.value.starts_with('/') && !matches!(path, PathMatchIr::Regex(_)) {
                return Err(invalid(
                    format!("{field}.value"),
                    &p.value,
                    "must start with /",
                ));
            }
            selectors.push(RateLimitSelectorIr::Path {
                path,
                invert: p.invert.unwrap_or(false),
            });
        }
        if let Some(c) = &s.source_cidr {
            let field = format!("{at}.sourceCIDR");
            let (ip, len) = parse_cidr(&c.value)
                .map_err(|problem| invalid(format!("{field}.value"), &c.value, &problem))?;
            let distinct = match c.kind.as_deref().unwrap_or("Exact") {
                "Exact" => false,
                "Distinct" => true,
                other => {
                    return Err(invalid(
                        format!("{field}.type"),
                        other,
                        "must be Exact or Distinct",
                    ));
                }
            };
            selectors.push(RateLimitSelectorIr::SourceCidr {
                cidr: format!("{}/{len}", network(ip, len)),
                invert: c.invert.unwrap_or(false),
                distinct,
            });
        }
    }
    Ok(RateLimitIr {
        requests: rule.limit.requests,
        fill_interval_ms,
        selectors,
    })
}

/// `ip` with the bits past the prefix cleared.
fn network(ip: std::net::IpAddr, len: u32) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// The IR of a SecurityPolicy, or why it cannot be applied.
fn security_ir(index: &Index<'_>, policy: &SecurityPolicy) -> Result<SecurityIr, PolicyError> {
    let spec = &policy.spec;
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let mut unsupported = unsupported_fields("spec", &spec.unsupported);
    if let Some(a) = &spec.authorization {
        for (i, rule) in a.rules.iter().enumerate() {
            let at = format!("spec.authorization.rules[{i}]");
            unsupported.extend(unsupported_fields(&at, &rule.unsupported));
            unsupported.extend(unsupported_fields(
                &format!("{at}.principal"),
                &rule.principal.unsupported,
            ));
            if let Some(op) = &rule.operation {
                unsupported.extend(unsupported_fields(
                    &format!("{at}.operation"),
                    &op.unsupported,
                ));
            }
        }
    }
    if let Some(jwt) = &spec.jwt {
        unsupported.extend(unsupported_fields("spec.jwt", &jwt.unsupported));
        for (i, p) in jwt.providers.iter().enumerate() {
            let at = format!("spec.jwt.providers[{i}]");
            unsupported.extend(unsupported_fields(&at, &p.unsupported));
            if let Some(remote) = &p.remote_jwks {
                unsupported.extend(unsupported_fields(
                    &format!("{at}.remoteJWKS"),
                    &remote.unsupported,
                ));
            }
        }
    }
    if let Some(a) = &spec.api_key_auth {
        unsupported.extend(unsupported_fields("spec.apiKeyAuth", &a.unsupported));
    }
    if let Some(o) = &spec.oidc {
        unsupported.extend(unsupported_fields("spec.oidc", &o.unsupported));
        unsupported.extend(unsupported_fields(
            "spec.oidc.provider",
            &o.provider.unsupported,
        ));
    }
    if let Some(e) = &spec.ext_auth {
        unsupported.extend(unsupported_fields("spec.extAuth", &e.unsupported));
        if let Some(h) = &e.http {
            unsupported.extend(unsupported_fields("spec.extAuth.http", &h.unsupported));
        }
        if let Some(g) = &e.grpc {
            unsupported.extend(unsupported_fields("spec.extAuth.grpc", &g.unsupported));
        }
    }
    refuse_unsupported(unsupported)?;
    let key = super::object_key(&policy.metadata);
    let mut clusters = Vec::new();

    let cors = spec.cors.as_ref().map(|c| -> Result<CorsIr, PolicyError> {
        Ok(CorsIr {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_seconds: opt_millis("spec.cors.maxAge", c.max_age.as_ref())?
                .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)),
            allow_credentials: c.allow_credentials.unwrap_or(false),
        })
    });
    let cors = cors.transpose()?;

    let basic_auth = spec
        .basic_auth
        .as_ref()
        .map(|b| -> Result<BasicAuthIr, PolicyError> {
            let ns = b.users.namespace.as_deref().unwrap_or(namespace);
            let secret =
                index
                    .secret(ns, &b.users.name)
                    .ok_or_else(|| PolicyError::RefNotFound {
                        field: "spec.basicAuth.users".into(),
                        kind: "Secret",
                        namespace: ns.to_owned(),
                        name: b.users.name.clone(),
                    })?;
            let htpasswd =
                secret_value(secret, ".htpasswd").ok_or_else(|| PolicyError::MissingKey {
                    kind: "Secret",
                    namespace: ns.to_owned(),
                    name: b.users.name.clone(),
                    key: ".htpasswd",
                })?;
            // Envoy reads SHA-1 entries only; anything else would make it refuse the whole
            // route table, so it is refused here, with the line that is wrong.
            for (i, line) in htpasswd
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let valid = line
                    .split_once(':')
                    .is_some_and(|(user, hash)| !user.is_empty() && hash.starts_with("{SHA}"));
                if !valid {
                    return Err(PolicyError::InvalidValue {
                        field: format!("Secret {ns}/{} .htpasswd line {}", b.users.name, i + 1),
                        value: line.split(':').next().unwrap_or_default().to_owned(),
                        problem: "only user:{SHA}<base64 SHA-1> entries are supported".into(),
                    });
                }
            }
            Ok(BasicAuthIr {
                htpasswd,
                forward_username_header: b.forward_username_header.clone(),
            })
        })
        .transpose()?;

    let authorization = spec
        .authorization
        .as_ref()
        .map(|a| -> Result<AuthorizationIr, PolicyError> {
            let mut rules = Vec::with_capacity(a.rules.len());
            for (i, rule) in a.rules.iter().enumerate() {
                for (j, cidr) in rule.principal.client_cidrs.iter().enumerate() {
                    parse_cidr(cidr).map_err(|problem| PolicyError::InvalidValue {
                        field: format!("spec.authorization.rules[{i}].principal.clientCIDRs[{j}]"),
                        value: cidr.clone(),
                        problem,
                    })?;
                }
                rules.push(AuthzRuleIr {
                    allow: rule.action == "Allow",
                    client_cidrs: rule.principal.client_cidrs.clone(),
                    headers: rule
                        .principal
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.values.clone()))
                        .collect(),
                    methods: rule
                        .operation
                        .as_ref()
                        .map(|o| o.methods.clone())
                        .unwrap_or_default(),
                });
            }
            Ok(AuthorizationIr {
                default_allow: a.default_action.as_deref() == Some("Allow"),
                rules,
            })
        })
        .transpose()?;

    let jwt = spec
        .jwt
        .as_ref()
        .map(|j| -> Result<JwtIr, PolicyError> {
            let mut providers = Vec::with_capacity(j.providers.len());
            for (i, p) in j.providers.iter().enumerate() {
                let jwks = match (&p.local_jwks, &p.remote_jwks) {
                    (Some(local), None) => JwksIr::Local(local_jwks(
                        index,
                        namespace,
                        &format!("spec.jwt.providers[{i}]"),
                        local,
                    )?),
                    (None, Some(remote)) => {
                        let at = format!("spec.jwt.providers[{i}]");
                        let cache = opt_millis(
                            &format!("{at}.remoteJWKS.cacheDuration"),
                            remote.cache_duration.as_ref(),
                        )?;
                        security_services::remote_jwks(
                            index,
                            namespace,
                            &at,
                            &key,
                            remote,
                            cache,
                            &mut clusters,
                        )?
                    }
                    _ => {
                        return Err(PolicyError::InvalidValue {
                            field: format!("spec.jwt.providers[{i}]"),
                            value: p.name.clone(),
                            problem: "exactly one of localJWKS and remoteJWKS must be set".into(),
                        });
                    }
                };
                let from = p.extract_from.clone().unwrap_or_default();
                providers.push(JwtProviderIr {
                    name: p.name.clone(),
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    jwks,
                    claim_to_headers: p
                        .claim_to_headers
                        .iter()
                        .map(|c| (c.claim.clone(), c.header.clone()))
                        .collect(),
                    from_headers: from
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value_prefix.clone()))
                        .collect(),
                    from_cookies: from.cookies.clone(),
                    from_params: from.params.clone(),
                });
            }
            Ok(JwtIr {
                optional: j.optional.unwrap_or(false),
                providers,
            })
        })
        .transpose()?;

    let api_key_auth = spec
        .api_key_auth
        .as_ref()
        .map(|a| security_services::api_key_auth(index, namespace, a))
        .transpose()?;
    let ext_auth = spec
        .ext_auth
        .as_ref()
        .map(|e| {
            let timeout = opt_millis("spec.extAuth.timeout", e.timeout.as_ref())?;
            security_services::ext_auth(index, namespace, e, timeout, &mut clusters)
        })
        .transpose()?;
    let oidc = spec
        .oidc
        .as_ref()
        .map(|o| security_services::oidc(index, namespace, &key, o, &mut clusters))
        .transpose()?;

    Ok(SecurityIr {
        policy: key,
        cors,
        basic_auth,
        authorization,
        jwt,
        api_key_auth,
        ext_auth,
        oidc,
        clusters,
    })
}

fn local_jwks(
    index: &Index<'_>,
    namespace: &str,
    at: &str,
    local: &eg_crds::policies::LocalJwks,
) -> Result<String, PolicyError> {
    if let Some(inline) = &local.inline {
        return Ok(inline.clone());
    }
    let Some(r) = &local.value_ref else {
        return Err(PolicyError::InvalidValue {
            field: format!("{at}.localJWKS"),
            value: String::new(),
            problem: "inline or valueRef must be set".into(),
        });
    };
    let map = index
        .config_map(namespace, &r.name)
        .ok_or_else(|| PolicyError::RefNotFound {
            field: format!("{at}.localJWKS.valueRef"),
            kind: "ConfigMap",
            namespace: namespace.to_owned(),
            name: r.name.clone(),
        })?;
    map.data
        .as_ref()
        .and_then(|d| d.get("jwks"))
        .cloned()
        .ok_or_else(|| PolicyError::MissingKey {
            kind: "ConfigMap",
            namespace: namespace.to_owned(),
            name: r.name.clone(),
            key: "jwks",
        })
}

/// `(address, prefix length)` of an IPv4 or IPv6 CIDR.
pub(crate) fn parse_cidr(cidr: &str) -> Result<(std::net::IpAddr, u32), String> {
    let (ip, len) = cidr
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX".to_owned())?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{e}"))?;
    let len: u32 = len.parse().map_err(|e| format!("prefix length: {e}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} is longer than {max}"));
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            parse_cidr("10.0.0.0/8").expect("valid"),
            ("10.0.0.0".parse().expect("ip"), 8)
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("::1/128").is_ok());
    }

    fn btp(spec: serde_json::Value) -> BackendTrafficPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"}, "spec": spec
        }))
        .expect("decodes")
    }

    #[test]
    fn migrated_per_client_rate_limits_are_accepted() {
        // What `eg-operator migrate ingress-nginx` writes for limit-rps / limit-rpm.
        let text = include_str!("../../tests/migrate/golden/limit-rps/output.yaml");
        let mut seen = 0;
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("yaml");
            if value.get("kind").and_then(|k| k.as_str()) != Some("BackendTrafficPolicy") {
                continue;
            }
            let policy: BackendTrafficPolicy = serde_yaml_ng::from_value(value).expect("decodes");
            let ir = traffic_ir(&policy).expect("accepted");
            assert_eq!(ir.rate_limits.len(), 2);
            for rule in &ir.rate_limits {
                assert_eq!(
                    rule.selectors,
                    [RateLimitSelectorIr::SourceCidr {
                        cidr: "0.0.0.0/0".into(),
                        invert: false,
                        distinct: true
                    }]
                );
            }
            seen += 1;
        }
        assert_eq!(seen, 1);
    }

    #[test]
    fn migrated_external_auth_is_accepted_through_its_reference_grant() {
        // What `eg-operator migrate ingress-nginx` writes for auth-url, plus the Service it
        // points at: pathOverride, headersToBackend, a Backend, another namespace's Service.
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: oauth2-proxy, namespace: auth}\nspec:\n  ports: [{port: 4180}]\n";
        let text = format!(
            "{}---\n{service}",
            include_str!("../../tests/migrate/golden/auth-url/output.yaml")
        );
        let mut snapshot = super::super::snapshot_from_yaml("c", &text).expect("loads");
        snapshot.backend_api = true;
        let index = Index::new(&snapshot);
        assert_eq!(snapshot.security_policies.len(), 2);
        for policy in &snapshot.security_policies {
            let ir = security_ir(&index, policy).expect("accepted");
            let ext = ir.ext_auth.expect("ext auth");
            assert!(
                matches!(&ext.service, crate::translate::ir::ExtAuthServiceIr::Http { path_override: Some(p), .. } if p.starts_with('/')),
                "{ext:?}"
            );
        }
        // Without the grant, the other namespace's Service is refused, naming the field.
        snapshot.reference_grants.clear();
        let index = Index::new(&snapshot);
        let refused: Vec<String> = snapshot
            .security_policies
            .iter()
            .filter_map(|p| security_ir(&index, p).err())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("spec.extAuth.http.backendRefs[0]")
                && refused[0].contains("ReferenceGrant"),
            "{refused:?}"
        );
    }

    #[test]
    fn rate_limit_selectors_are_checked_and_named() {
        let rule = |selector: serde_json::Value| {
            btp(
                serde_json::json!({"rateLimit": {"type": "Local", "local": {"rules": [
                {"limit": {"requests": 1, "unit": "Second"}},
                {"clientSelectors": [selector], "limit": {"requests": 1, "unit": "Second"}}]}}}),
            )
        };
        let error = |selector| {
            traffic_ir(&rule(selector))
                .expect_err("refused")
                .to_string()
        };
        let at = "spec.rateLimit.local.rules[1].clientSelectors[0]";
        assert!(
            error(serde_json::json!({"headers": [{"name": "x", "type": "RegularExpression", "value": "("}]}))
                .contains(&format!("{at}.headers[0].value"))
        );
        assert!(
            error(
                serde_json::json!({"headers": [{"name": "x", "type": "Distinct", "invert": true}]})
            )
            .contains(&format!("{at}.headers[0].invert"))
        );
        assert!(
            error(serde_json::json!({"headers": [{"name": "x"}]}))
                .contains(&format!("{at}.headers[0].value"))
        );
        assert!(
            error(serde_json::json!({"sourceCIDR": {"value": "10.0.0.0/33"}}))
                .contains(&format!("{at}.sourceCIDR.value"))
        );
        assert!(
            error(serde_json::json!({"queryParams": [{"name": "q"}]}))
                .contains(&format!("{at}.queryParams"))
        );
        // Host bits are cleared; header names lowercased; prefix trailing slashes dropped.
        let ir = traffic_ir(&rule(serde_json::json!({
            "sourceCIDR": {"value": "10.1.2.3/16"},
            "headers": [{"name": "X-Plan", "value": "free"}],
            "path": {"value": "/api/"}
        })))
        .expect("accepted");
        assert_eq!(ir.rate_limits[0].selectors, []);
        assert_eq!(
            ir.rate_limits[1].selectors,
            [
                RateLimitSelectorIr::Header {
                    name: "x-plan".into(),
                    value: StringMatchIr::Exact("free".into()),
                    invert: false
                },
                RateLimitSelectorIr::Path {
                    path: PathMatchIr::Prefix("/api".into()),
                    invert: false
                },
                RateLimitSelectorIr::SourceCidr {
                    cidr: "10.1.0.0/16".into(),
                    invert: false,
                    distinct: false
                },
            ]
        );
    }

    #[test]
    fn compression_and_proxy_protocol_are_translated() {
        let ir = traffic_ir(&btp(serde_json::json!({
            "compression": [{"type": "Gzip"}, {"type": "Brotli"}],
            "compressor": [{"type": "Gzip"}, {"type": "Zstd"}],
            "proxyProtocol": {"version": "V1"}
        })))
        .expect("accepted");
        assert_eq!(ir.compression, ["gzip", "brotli", "zstd"]);
        assert_eq!(ir.cluster.and_then(|c| c.proxy_protocol), Some(1));
        let bad = traffic_ir(&btp(serde_json::json!({"compression": [{"type": "Lz4"}]})));
        assert!(
            bad.expect_err("refused")
                .to_string()
                .contains("spec.compression[0].type")
        );
        let bad = traffic_ir(&btp(
            serde_json::json!({"proxyProtocol": {"version": "V3"}}),
        ));
        assert!(
            bad.expect_err("refused")
                .to_string()
                .contains("spec.proxyProtocol.version")
        );
    }

    #[test]
    fn unmodelled_fields_are_kept_for_refusal() {
        let policy: SecurityPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                     "extProc": {"backendRefs": []}, "cors": {"allowOrigins": ["*"]}}
        }))
        .expect("decodes");
        assert_eq!(policy.spec.targets.target_refs.len(), 1);
        assert_eq!(
            unsupported_fields("spec", &policy.spec.unsupported),
            vec!["spec.extProc".to_owned()]
        );
    }
}
