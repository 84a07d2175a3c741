//! HTTPRoute rules → route entries: matches, filters, timeouts and backends, compiled once per
//! HTTPRoute (they do not depend on the parent it attaches to; only redirect ports and
//! hostnames do, and `routes` fills those in per listener).
//!
//! Invalid rules follow GEP-1364 as upstream Envoy Gateway implements it: a rule with an
//! unsupported or malformed value (bad regex, malformed timeout, conflicting filters, …) is
//! *dropped*; the route stays `Accepted=True` with `PartiallyInvalid=True` ("Dropped Rule(s)
//! …") while other rules remain, and becomes `Accepted=False` reason `UnsupportedValue` when
//! every rule is dropped. Unresolvable references are not rule errors: they become
//! `ResolvedRefs=False` and a 500 for the traffic they would have carried.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesBackendRefsFiltersType,
    HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};

use super::backends::{self, BackendTarget, ServiceClusters, SharedCluster};
use super::conditions::{Problem, reason};
use super::index::Index;
use super::ir::{
    ClusterIr, CorsIr, DirectResponseIr, ForwardIr, HeaderMatchIr, HeaderModifierIr, HeaderValueIr,
    MirrorIr, PathMatchIr, PathModifierIr, QueryMatchIr, RedirectIr, RouteActionIr, RouteFiltersIr,
    RouteIr, StringMatchIr, TimeoutsIr, UrlRewriteIr, WeightedBackendIr,
};
use super::route_kind::RouteKind;

/// Why a rule is dropped. All map to `UnsupportedValue`.
#[derive(Debug, thiserror::Error)]
pub(super) enum RuleError {
    #[error("invalid {field} regular expression {pattern:?}: {problem}")]
    InvalidRegex {
        field: String,
        pattern: String,
        problem: String,
    },
    #[error("path {0:?} must start with '/'")]
    InvalidPath(String),
    #[error("invalid {field} timeout {value:?}: {problem}")]
    InvalidTimeout {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("backendRequest timeout {backend_request} must not exceed request timeout {request}")]
    BackendTimeoutTooLong {
        backend_request: String,
        request: String,
    },
    #[error("filter {0} has no configuration for its type")]
    MissingFilterConfig(&'static str),
    #[error("filter {0} may appear at most once per rule")]
    DuplicateFilter(&'static str),
    #[error("RequestRedirect and URLRewrite filters cannot be combined in one rule")]
    RedirectWithRewrite,
    #[error("ReplacePrefixMatch requires every match of the rule to be a PathPrefix match")]
    PrefixReplaceWithoutPrefixMatch,
    #[error("header {name:?} cannot be modified: {problem}")]
    InvalidHeaderModifier { name: String, problem: &'static str },
    #[error("invalid RequestRedirect: {0}")]
    InvalidRedirect(String),
    #[error("invalid RequestMirror: {0}")]
    InvalidMirror(String),
    #[error(
        "backendRef filter {0} is not supported, only RequestHeaderModifier and ResponseHeaderModifier are"
    )]
    UnsupportedBackendFilter(&'static str),
}

impl RuleError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidRegex { .. } => "invalid_regex",
            Self::InvalidPath(_) => "invalid_path",
            Self::InvalidTimeout { .. } | Self::BackendTimeoutTooLong { .. } => "invalid_timeout",
            Self::MissingFilterConfig(_)
            | Self::DuplicateFilter(_)
            | Self::RedirectWithRewrite
            | Self::PrefixReplaceWithoutPrefixMatch
            | Self::InvalidHeaderModifier { .. }
            | Self::InvalidRedirect(_)
            | Self::InvalidMirror(_) => "invalid_filter",
            Self::UnsupportedBackendFilter(_) => "unsupported_filter",
        }
    }

    /// The route condition reason for a dropped rule.
    pub fn reason(&self) -> &'static str {
        reason::UNSUPPORTED_VALUE
    }
}

/// One route entry: a (rule, match) pair ready to be placed on listeners.
#[derive(Debug, Clone)]
pub(super) struct CompiledEntry {
    pub rule: usize,
    pub match_index: usize,
    /// Shared by every listener and hostname the route is placed under (redirects excepted:
    /// their port depends on the listener).
    pub route: Arc<RouteIr>,
    /// The port a RequestRedirect names explicitly; the final port depends on the listener.
    pub redirect_port: Option<u16>,
}

/// Everything an HTTPRoute contributes, independent of its parents.
#[derive(Debug, Default)]
pub(super) struct CompiledRoute {
    /// Entries of the kept rules, in rule then match order.
    pub entries: Vec<CompiledEntry>,
    /// Clusters the entries send or mirror traffic to, endpoints not yet filled in.
    pub clusters: BTreeMap<Arc<str>, Arc<ClusterIr>>,
    /// `ResolvedRefs=False` problems, in rule/backend order.
    pub unresolved: Vec<Problem>,
    /// Dropped rules by index.
    pub dropped: Vec<(usize, RuleError)>,
    pub rule_count: usize,
    /// `(category, message)` of every error, in rule order.
    pub diagnostics: Vec<(&'static str, String)>,
}

impl CompiledRoute {
    /// Whether the route has rules and every one was dropped.
    pub fn all_rules_dropped(&self) -> bool {
        self.rule_count > 0 && self.dropped.len() == self.rule_count
    }

    /// The condition reason reporting dropped rules: the first dropped rule's.
    pub fn dropped_reason(&self) -> &'static str {
        self.dropped
            .first()
            .map_or(reason::UNSUPPORTED_VALUE, |(_, e)| e.reason())
    }
}

/// Compiles every rule of `route`.
/// `key` is the route's `"{namespace}/{name}"`, which its entries share as their `source`.
/// `service_clusters` is the calling worker's memo.
pub(super) fn compile(
    route: &HttpRoute,
    kind: RouteKind,
    key: &Arc<str>,
    index: &Index<'_>,
    service_clusters: &mut ServiceClusters,
) -> CompiledRoute {
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    let mut out = CompiledRoute {
        rule_count: rules.len(),
        ..CompiledRoute::default()
    };
    let mut shared = Shared {
        clusters: Vec::new(),
        no_filters: None,
        service_clusters,
    };
    let route = RouteRef {
        index,
        kind,
        namespace,
        key,
    };
    for (i, rule) in rules.iter().enumerate() {
        if let Err(e) = compile_rule(route, i, rule, &mut shared, &mut out) {
            out.diagnostics
                .push((e.category(), format!("rule {i} dropped: {e}")));
            out.dropped.push((i, e));
        }
    }
    out
}

/// The rule-level filters of one rule, validated.
#[derive(Debug, Default)]
struct Filters {
    request_headers: Option<HeaderModifierIr>,
    response_headers: Option<HeaderModifierIr>,
    redirect: Option<RedirectSpec>,
    rewrite: Option<UrlRewriteIr>,
    mirrors: Vec<MirrorSpec>,
    cors: Option<CorsIr>,
    /// Messages for ExtensionRef filters, none of which can be resolved yet.
    unresolved_extensions: Vec<String>,
}

#[derive(Debug)]
struct RedirectSpec {
    ir: RedirectIr,
    explicit_port: Option<u16>,
}

#[derive(Debug)]
struct MirrorSpec {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<i32>,
    numerator: u32,
    denominator: u32,
}

/// The route a rule belongs to, and what its references resolve against.
#[derive(Clone, Copy)]
struct RouteRef<'a> {
    index: &'a Index<'a>,
    kind: RouteKind,
    namespace: &'a str,
    key: &'a Arc<str>,
}

/// What the rules of one route share: the backendRefs resolved so far (rules of a route
/// often send to the same Services, so each further reference is one comparison rather than
/// a lookup), one empty filter set for every entry without filters, and the worker's
/// Service port clusters.
struct Shared<'r, 'w> {
    clusters: Vec<(BackendTarget<'r>, SharedCluster)>,
    no_filters: Option<Arc<RouteFiltersIr>>,
    service_clusters: &'w mut ServiceClusters,
}

impl<'r> Shared<'r, '_> {
    fn filters(&mut self, filters: RouteFiltersIr) -> Arc<RouteFiltersIr> {
        if filters.is_empty() {
            self.no_filters.get_or_insert_default().clone()
        } else {
            Arc::new(filters)
        }
    }

    fn resolve(
        &mut self,
        route: RouteRef<'_>,
        target: BackendTarget<'r>,
    ) -> Result<&SharedCluster, backends::BackendError> {
        let known = self.clusters.iter().position(|(t, _)| *t == target);
        let at = match known {
            Some(at) => at,
            None => {
                let cluster = backends::resolve_shared(
                    route.index,
                    self.service_clusters,
                    route.kind,
                    route.namespace,
                    target,
                )?;
                self.clusters.push((target, cluster));
                self.clusters.len() - 1
            }
        };
        Ok(&self.clusters[at].1)
    }
}

fn compile_rule<'r>(
    route: RouteRef<'_>,
    rule_index: usize,
    rule: &'r HttpRouteRules,
    shared: &mut Shared<'r, '_>,
    out: &mut CompiledRoute,
) -> Result<(), RuleError> {
    let RouteRef {
        index,
        kind,
        namespace,
        key,
    } = route;
    let filters = parse_filters(rule.filters.as_deref().unwrap_or_default())?;
    let default_match = [HttpRouteRulesMatches::default()];
    let matches = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => &default_match,
    };
    let compiled: Vec<Matched> = matches
        .iter()
        .map(compile_match)
        .collect::<Result<_, _>>()?;
    let replaces_prefix = matches!(
        filters.redirect.as_ref().and_then(|r| r.ir.path.as_ref()),
        Some(PathModifierIr::ReplacePrefixMatch(_))
    ) || matches!(
        filters.rewrite.as_ref().and_then(|r| r.path.as_ref()),
        Some(PathModifierIr::ReplacePrefixMatch(_))
    );
    if replaces_prefix
        && compiled
            .iter()
            .any(|m| !matches!(m.path, PathMatchIr::Prefix(_)))
    {
        return Err(RuleError::PrefixReplaceWithoutPrefixMatch);
    }
    let timeouts = parse_timeouts(rule)?;
    // Most backendRefs have no filters: then no list of empty ones is made.
    let backend_filters = if rule
        .backend_refs
        .iter()
        .flatten()
        .any(|b| b.filters.as_ref().is_some_and(|f| !f.is_empty()))
    {
        rule.backend_refs
            .iter()
            .flatten()
            .map(parse_backend_filters)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };

    // From here on nothing drops the rule: problems are unresolved references.
    let mut clusters: Vec<SharedCluster> = Vec::new();
    let mut use_cluster = |out: &CompiledRoute, cluster: &SharedCluster| {
        if !out.clusters.contains_key(&cluster.name)
            && !clusters.iter().any(|c| c.name == cluster.name)
        {
            clusters.push(cluster.clone());
        }
    };
    let mut backends = Vec::with_capacity(rule.backend_refs.as_ref().map_or(0, Vec::len));
    let mut invalid_weight: u32 = 0;
    for (backend, (request_headers, response_headers)) in rule.backend_refs.iter().flatten().zip(
        backend_filters
            .into_iter()
            .chain(std::iter::repeat_with(BackendHeaders::default)),
    ) {
        let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0);
        match shared.resolve(route, target_of(backend)) {
            Ok(cluster) => {
                if weight > 0 {
                    use_cluster(out, cluster);
                    backends.push(WeightedBackendIr {
                        cluster: cluster.name.clone(),
                        weight,
                        request_headers: request_headers.map(Box::new),
                        response_headers: response_headers.map(Box::new),
                    });
                }
            }
            Err(e) => {
                out.diagnostics
                    .push((e.category(), format!("rule {rule_index}: {e}")));
                out.unresolved.push(Problem::new(e.reason(), e.to_string()));
                invalid_weight = invalid_weight.saturating_add(weight);
            }
        }
    }
    let mut mirrors = Vec::new();
    for m in &filters.mirrors {
        let target = BackendTarget {
            group: m.group.as_deref(),
            kind: m.kind.as_deref(),
            name: &m.name,
            namespace: m.namespace.as_deref(),
            port: m.port,
        };
        match backends::resolve_shared(index, shared.service_clusters, kind, namespace, target) {
            Ok(cluster) => {
                mirrors.push(MirrorIr {
                    cluster: cluster.name.clone(),
                    numerator: m.numerator,
                    denominator: m.denominator,
                });
                use_cluster(out, &cluster);
            }
            // Gateway API: an unresolvable mirror backend is dropped, the rule still serves.
            Err(e) => {
                out.diagnostics
                    .push((e.category(), format!("rule {rule_index} mirror: {e}")));
                out.unresolved
                    .push(Problem::new(e.reason(), format!("mirror: {e}")));
            }
        }
    }
    for message in &filters.unresolved_extensions {
        out.diagnostics
            .push(("unresolved_filter", format!("rule {rule_index}: {message}")));
        out.unresolved
            .push(Problem::new(reason::INVALID_KIND, message.clone()));
    }

    let valid_weight = backends
        .iter()
        .fold(0_u32, |sum, b| sum.saturating_add(b.weight));
    let mut route_filters = RouteFiltersIr {
        request_headers: filters.request_headers,
        response_headers: filters.response_headers,
        cors: filters.cors,
        ..RouteFiltersIr::default()
    };
    let (action, redirect_port) = if !filters.unresolved_extensions.is_empty() {
        // "If a reference to a custom filter type cannot be resolved, the filter MUST NOT be
        // skipped. Instead, requests that would have been processed by that filter MUST
        // receive a HTTP error response."
        (error_response(), None)
    } else if let Some(redirect) = filters.redirect {
        (RouteActionIr::Redirect(redirect.ir), redirect.explicit_port)
    } else if valid_weight > 0 {
        // Only forwarding routes rewrite, mirror and time out upstream requests, so only they
        // carry those filters and reference clusters.
        route_filters.url_rewrite = filters.rewrite;
        route_filters.mirrors = mirrors;
        route_filters.timeouts = timeouts;
        // Inserting beats `append`, which rebuilds the whole map for each rule.
        out.clusters
            .extend(clusters.into_iter().map(|c| (c.name, c.cluster)));
        (
            RouteActionIr::Forward(ForwardIr {
                backends,
                invalid_weight,
            }),
            None,
        )
    } else {
        // No backendRefs, all invalid, or all weight 0: Gateway API answers 500.
        (error_response(), None)
    };

    let route_filters = shared.filters(route_filters);
    let count = compiled.len();
    let mut action = action;
    // Entries go straight into the route's list: no list per rule.
    out.entries
        .extend(compiled.into_iter().enumerate().map(|(match_index, m)| {
            // The last (usually the only) match takes the action; the others copy it.
            let action = if match_index + 1 < count {
                action.clone()
            } else {
                std::mem::replace(&mut action, error_response())
            };
            CompiledEntry {
                rule: rule_index,
                match_index,
                route: Arc::new(RouteIr {
                    name: entry_name(kind.prefix(), key, rule_index, match_index),
                    source: key.clone(),
                    rule_name: rule.name.clone(),
                    path: m.path,
                    headers: m.headers,
                    query: m.query,
                    method: m.method,
                    action,
                    filters: route_filters.clone(),
                    traffic: None,
                    security: None,
                }),
                redirect_port,
            }
        }));
    Ok(())
}

/// `"{prefix}/{key}/rule/{rule}/match/{match_index}"`, a route entry's name, written without
/// the formatting machinery, which was a tenth of compiling a large Gateway's routes.
fn entry_name(prefix: &str, key: &str, rule: usize, match_index: usize) -> String {
    fn push_decimal(out: &mut String, n: usize) {
        if n >= 10 {
            push_decimal(out, n / 10);
        }
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    let mut name = String::with_capacity(prefix.len() + key.len() + 24);
    name.push_str(prefix);
    name.push('/');
    name.push_str(key);
    name.push_str("/rule/");
    push_decimal(&mut name, rule);
    name.push_str("/match/");
    push_decimal(&mut name, match_index);
    name
}

fn error_response() -> RouteActionIr {
    RouteActionIr::DirectResponse(DirectResponseIr { status: 500 })
}

fn target_of(backend: &HttpRouteRulesBackendRefs) -> BackendTarget<'_> {
    BackendTarget {
        group: backend.group.as_deref(),
        kind: backend.kind.as_deref(),
        name: &backend.name,
        namespace: backend.namespace.as_deref(),
        port: backend.port,
    }
}

/// The match part of a route entry.
#[derive(Debug)]
struct Matched {
    path: PathMatchIr,
    headers: Vec<HeaderMatchIr>,
    query: Vec<QueryMatchIr>,
    method: Option<String>,
}

fn compile_match(m: &HttpRouteRulesMatches) -> Result<Matched, RuleError> {
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.r#type.clone())
        .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix);
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.as_deref())
        .unwrap_or("/");
    let path = match path_type {
        HttpRouteRulesMatchesPathType::RegularExpression => {
            check_regex("path", value)?;
            PathMatchIr::Regex(value.to_owned())
        }
        _ if !value.starts_with('/') => return Err(RuleError::InvalidPath(value.to_owned())),
        HttpRouteRulesMatchesPathType::Exact => PathMatchIr::Exact(value.to_owned()),
        HttpRouteRulesMatchesPathType::PathPrefix => {
            // "/foo/" and "/foo" select the same requests (prefixes match whole segments).
            let trimmed = value.trim_end_matches('/');
            PathMatchIr::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
        }
    };

    // "If multiple entries specify equivalent header names, only the first entry with an
    // equivalent name MUST be considered" (names case-insensitive); same for query params,
    // whose names are case-sensitive.
    let mut headers: Vec<HeaderMatchIr> =
        Vec::with_capacity(m.headers.as_ref().map_or(0, Vec::len));
    for h in m.headers.iter().flatten() {
        let name = h.name.to_ascii_lowercase();
        if headers.iter().any(|x| x.name == name) {
            continue;
        }
        let value = match h.r#type {
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                check_regex(&format!("header {name}"), &h.value)?;
                StringMatchIr::Regex(h.value.clone())
            }
            _ => StringMatchIr::Exact(h.value.clone()),
        };
        headers.push(HeaderMatchIr { name, value });
    }
    let mut query: Vec<QueryMatchIr> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query.iter().any(|x| x.name == q.name) {
            continue;
        }
        let value = match q.r#type {
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                check_regex(&format!("query param {}", q.name), &q.value)?;
                StringMatchIr::Regex(q.value.clone())
            }
            _ => StringMatchIr::Exact(q.value.clone()),
        };
        query.push(QueryMatchIr {
            name: q.name.clone(),
            value,
        });
    }
    Ok(Matched {
        path,
        headers,
        query,
        method: m.method.as_ref().map(|x| method_name(x).to_owned()),
    })
}

/// Envoy evaluates regexes with RE2; the `regex` crate accepts nearly the same language (no
/// backreferences or lookaround in either), so what it rejects Envoy would NACK.
fn check_regex(field: &str, pattern: &str) -> Result<(), RuleError> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| RuleError::InvalidRegex {
            field: field.to_owned(),
            pattern: pattern.to_owned(),
            problem: e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
}

fn method_name(method: &HttpRouteRulesMatchesMethod) -> &'static str {
    match method {
        HttpRouteRulesMatchesMethod::Get => "GET",
        HttpRouteRulesMatchesMethod::Head => "HEAD",
        HttpRouteRulesMatchesMethod::Post => "POST",
        HttpRouteRulesMatchesMethod::Put => "PUT",
        HttpRouteRulesMatchesMethod::Delete => "DELETE",
        HttpRouteRulesMatchesMethod::Connect => "CONNECT",
        HttpRouteRulesMatchesMethod::Options => "OPTIONS",
        HttpRouteRulesMatchesMethod::Trace => "TRACE",
        HttpRouteRulesMatchesMethod::Patch => "PATCH",
    }
}

fn filter_name(t: &HttpRouteRulesFiltersType) -> &'static str {
    match t {
        HttpRouteRulesFiltersType::RequestHeaderModifier => "RequestHeaderModifier",
        HttpRouteRulesFiltersType::ResponseHeaderModifier => "ResponseHeaderModifier",
        HttpRouteRulesFiltersType::RequestMirror => "RequestMirror",
        HttpRouteRulesFiltersType::RequestRedirect => "RequestRedirect",
        HttpRouteRulesFiltersType::UrlRewrite => "URLRewrite",
        HttpRouteRulesFiltersType::ExtensionRef => "ExtensionRef",
        HttpRouteRulesFiltersType::Cors => "CORS",
    }
}

/// Sets a single-use filter slot, rejecting a second occurrence.
fn once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), RuleError> {
    if slot.replace(value).is_some() {
        return Err(RuleError::DuplicateFilter(name));
    }
    Ok(())
}

fn parse_filters(filters: &[HttpRouteRulesFilters]) -> Result<Filters, RuleError> {
    let mut out = Filters::default();
    for f in filters {
        let name = filter_name(&f.r#type);
        let missing = || RuleError::MissingFilterConfig(name);
        match f.r#type {
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                let m = f.request_header_modifier.as_ref().ok_or_else(missing)?;
                let ir = header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.as_deref().unwrap_or_default(),
                    true,
                )?;
                once(&mut out.request_headers, ir, name)?;
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                let m = f.response_header_modifier.as_ref().ok_or_else(missing)?;
                let ir = header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.as_deref().unwrap_or_default(),
                    false,
                )?;
                once(&mut out.response_headers, ir, name)?;
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                let r = f.request_redirect.as_ref().ok_or_else(missing)?;
                once(&mut out.redirect, redirect(r)?, name)?;
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                let r = f.url_rewrite.as_ref().ok_or_else(missing)?;
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(match p.r#type {
                        HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath => {
                            PathModifierIr::ReplaceFullPath(
                                p.replace_full_path.clone().ok_or_else(missing)?,
                            )
                        }
                        HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => {
                            PathModifierIr::ReplacePrefixMatch(
                                p.replace_prefix_match.clone().ok_or_else(missing)?,
                            )
                        }
                    }),
                };
                let ir = UrlRewriteIr {
                    hostname: r.hostname.clone(),
                    path,
                };
                once(&mut out.rewrite, ir, name)?;
            }
            HttpRouteRulesFiltersType::RequestMirror => {
                let m = f.request_mirror.as_ref().ok_or_else(missing)?;
                let (numerator, denominator) = match (m.percent, m.fraction.as_ref()) {
                    (Some(_), Some(_)) => {
                        return Err(RuleError::InvalidMirror(
                            "percent and fraction are mutually exclusive".into(),
                        ));
                    }
                    (Some(p), None) => (p, 100),
                    (None, Some(f)) => (f.numerator, f.denominator.unwrap_or(100)),
                    (None, None) => (100, 100),
                };
                let (Ok(numerator), Ok(denominator)) =
                    (u32::try_from(numerator), u32::try_from(denominator))
                else {
                    return Err(RuleError::InvalidMirror(
                        "fraction must not be negative".into(),
                    ));
                };
                if denominator == 0 || numerator > denominator {
                    return Err(RuleError::InvalidMirror(format!(
                        "fraction {numerator}/{denominator} must be between 0 and 1"
                    )));
                }
                let b = &m.backend_ref;
                out.mirrors.push(MirrorSpec {
                    group: b.group.clone(),
                    kind: b.kind.clone(),
                    name: b.name.clone(),
                    namespace: b.namespace.clone(),
                    port: b.port,
                    numerator,
                    denominator,
                });
            }
            HttpRouteRulesFiltersType::Cors => {
                let c = f.cors.as_ref().ok_or_else(missing)?;
                let ir = CorsIr {
                    allow_origins: c.allow_origins.clone().unwrap_or_default(),
                    allow_methods: c.allow_methods.clone().unwrap_or_default(),
                    allow_headers: c.allow_headers.clone().unwrap_or_default(),
                    expose_headers: c.expose_headers.clone().unwrap_or_default(),
                    // The CRD defaults maxAge to 5; manifests read from files skip the
                    // apiserver's defaulting, so the default is applied here too.
                    max_age_seconds: u32::try_from(c.max_age.unwrap_or(5)).ok(),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                };
                once(&mut out.cors, ir, name)?;
            }
            HttpRouteRulesFiltersType::ExtensionRef => {
                let e = f.extension_ref.as_ref().ok_or_else(missing)?;
                out.unresolved_extensions.push(format!(
                    "ExtensionRef filter {}/{} {} cannot be resolved: no extension filter kinds are supported",
                    e.group, e.kind, e.name
                ));
            }
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        return Err(RuleError::RedirectWithRewrite);
    }
    Ok(out)
}

fn redirect(r: &HttpRouteRulesFiltersRequestRedirect) -> Result<RedirectSpec, RuleError> {
    let status_code = match r.status_code.unwrap_or(302) {
        301 => 301,
        302 => 302,
        303 => 303,
        307 => 307,
        308 => 308,
        other => {
            return Err(RuleError::InvalidRedirect(format!(
                "status code {other} is not one of 301, 302, 303, 307, 308"
            )));
        }
    };
    let explicit_port = match r.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| RuleError::InvalidRedirect(format!("port {p} is out of range")))?,
        ),
    };
    let path = match &r.path {
        None => None,
        Some(p) => {
            let missing = || RuleError::MissingFilterConfig("RequestRedirect");
            Some(match p.r#type {
                HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath => {
                    PathModifierIr::ReplaceFullPath(
                        p.replace_full_path.clone().ok_or_else(missing)?,
                    )
                }
                HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch => {
                    PathModifierIr::ReplacePrefixMatch(
                        p.replace_prefix_match.clone().ok_or_else(missing)?,
                    )
                }
            })
        }
    };
    Ok(RedirectSpec {
        ir: RedirectIr {
            scheme: r.scheme.as_ref().map(|s| {
                match s {
                    HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                    HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
                }
                .to_owned()
            }),
            hostname: r.hostname.clone(),
            path,
            // Filled in per listener by `routes`.
            port: 0,
            status_code,
        },
        explicit_port,
    })
}

/// The redirect port per Gateway API: the explicit port, else the well-known port of an
/// explicit scheme, else the listener's port.
pub(super) fn redirect_port(
    explicit: Option<u16>,
    scheme: Option<&str>,
    listener_port: u16,
) -> u16 {
    explicit.unwrap_or(match scheme {
        Some("http") => 80,
        Some("https") => 443,
        _ => listener_port,
    })
}

fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: &[String],
    request: bool,
) -> Result<HeaderModifierIr, RuleError> {
    let check = |name: &str| -> Result<(), RuleError> {
        let problem = if name.is_empty() {
            Some("the name is empty")
        } else if name.starts_with(':') {
            Some("pseudo-headers cannot be modified")
        } else if request && name.eq_ignore_ascii_case("host") {
            Some("the Host header is set with a URLRewrite filter instead")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(RuleError::InvalidHeaderModifier {
                name: name.to_owned(),
                problem,
            }),
            None => Ok(()),
        }
    };
    let values = |it: &mut dyn Iterator<Item = (&'a String, &'a String)>| {
        it.map(|(name, value)| {
            check(name)?;
            Ok(HeaderValueIr {
                name: name.clone(),
                value: value.clone(),
            })
        })
        .collect::<Result<Vec<_>, RuleError>>()
    };
    let mut set = set;
    let mut add = add;
    let set = values(&mut set)?;
    let add = values(&mut add)?;
    for name in remove {
        check(name)?;
    }
    Ok(HeaderModifierIr {
        set,
        add,
        remove: remove.to_vec(),
    })
}

/// BackendRef-level filters: header modifiers only (Implementation-specific support).
type BackendHeaders = (Option<HeaderModifierIr>, Option<HeaderModifierIr>);

fn parse_backend_filters(backend: &HttpRouteRulesBackendRefs) -> Result<BackendHeaders, RuleError> {
    let mut request = None;
    let mut response = None;
    for f in backend.filters.iter().flatten() {
        match f.r#type {
            HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier => {
                let name = "RequestHeaderModifier";
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or(RuleError::MissingFilterConfig(name))?;
                let ir = header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.as_deref().unwrap_or_default(),
                    true,
                )?;
                once(&mut request, ir, name)?;
            }
            HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier => {
                let name = "ResponseHeaderModifier";
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or(RuleError::MissingFilterConfig(name))?;
                let ir = header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.as_deref().unwrap_or_default(),
                    false,
                )?;
                once(&mut response, ir, name)?;
            }
            HttpRouteRulesBackendRefsFiltersType::RequestMirror => {
                return Err(RuleError::UnsupportedBackendFilter("RequestMirror"));
            }
            HttpRouteRulesBackendRefsFiltersType::RequestRedirect => {
                return Err(RuleError::UnsupportedBackendFilter("RequestRedirect"));
            }
            HttpRouteRulesBackendRefsFiltersType::UrlRewrite => {
                return Err(RuleError::UnsupportedBackendFilter("URLRewrite"));
            }
            HttpRouteRulesBackendRefsFiltersType::ExtensionRef => {
                return Err(RuleError::UnsupportedBackendFilter("ExtensionRef"));
            }
            HttpRouteRulesBackendRefsFiltersType::Cors => {
                return Err(RuleError::UnsupportedBackendFilter("CORS"));
            }
        }
    }
    Ok((request, response))
}

/// GEP-1742 timeouts; GEP-2257 duration syntax.
fn parse_timeouts(rule: &HttpRouteRules) -> Result<Option<TimeoutsIr>, RuleError> {
    let Some(t) = rule.timeouts.as_ref() else {
        return Ok(None);
    };
    let parse = |field: &'static str, value: Option<&String>| -> Result<Option<u64>, RuleError> {
        value
            .map(|v| {
                gateway_api::Duration::from_str(v)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .map_err(|problem| RuleError::InvalidTimeout {
                        field,
                        value: v.clone(),
                        problem,
                    })
            })
            .transpose()
    };
    let request_ms = parse("request", t.request.as_ref())?;
    let backend_request_ms = parse("backendRequest", t.backend_request.as_ref())?;
    if let (Some(request), Some(backend)) = (request_ms, backend_request_ms) {
        // The CRD's own rule: a zero request timeout is disabled, so anything fits under it.
        if request != 0 && backend > request {
            return Err(RuleError::BackendTimeoutTooLong {
                backend_request: t.backend_request.clone().unwrap_or_default(),
                request: t.request.clone().unwrap_or_default(),
            });
        }
    }
    if request_ms.is_none() && backend_request_ms.is_none() {
        return Ok(None);
    }
    Ok(Some(TimeoutsIr {
        request_ms,
        backend_request_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_port_follows_the_spec() {
        assert_eq!(redirect_port(Some(8443), Some("https"), 80), 8443);
        assert_eq!(redirect_port(None, Some("https"), 8080), 443);
        assert_eq!(redirect_port(None, Some("http"), 8443), 80);
        assert_eq!(redirect_port(None, None, 8080), 8080);
    }

    #[test]
    fn rule_errors_categorize() {
        let e = check_regex("path", "/(unclosed").expect_err("bad regex");
        assert_eq!(e.category(), "invalid_regex");
        assert_eq!(e.reason(), "UnsupportedValue");
        assert!(check_regex("path", "/api/v[0-9]+/.*").is_ok());
    }

    #[test]
    fn entry_names_read_as_formatted() {
        for (rule, match_index) in [(0, 0), (9, 10), (10, 9), (1234, 56789), (usize::MAX, 7)] {
            assert_eq!(
                entry_name("httproute", "apps/r", rule, match_index),
                format!("httproute/apps/r/rule/{rule}/match/{match_index}")
            );
        }
    }
}
