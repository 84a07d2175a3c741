//! Envoy configuration for Envoy Gateway policies (pure): what a route entry's
//! [`TrafficIr`] and [`SecurityIr`] become, the HTTP filters every connection manager carries
//! for them, and cluster settings.
//!
//! - Every HTTP connection manager carries basic_auth, api_key_auth, RBAC and local rate limit
//!   filters, disabled, before the router; a route under a policy enables them through its
//!   `typed_per_filter_config` (`FilterConfig`). So the first policy on a listener changes a
//!   route table, never the listener (a listener update drains its connections).
//! - JWT providers are the exception: Envoy's jwt_authn filter holds them at the listener (one
//!   requirement per policy, named after it, which the routes select), so the first JWT policy
//!   on a listener does change it. The filter is there even without providers, so connections
//!   still on the previous listener refuse JWT routes instead of skipping the check.
//! - API keys, external authorization, OpenID Connect, compression and rate limit selectors:
//!   see [`super::policy_filters`].
//! - Authorization: upstream's ordered rules become one RBAC ALLOW policy (see [`rbac_rules`]).
//!   Protobuf maps are avoided or encoded in sorted order: prost encodes `HashMap`s in iteration order, and the bytes must not
//!   change from one build to the next.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions, circuit_breakers,
};
use envoy_types::pb::envoy::config::core::v3::{
    CidrRange, HttpProtocolOptions as CommonHttpProtocolOptions, RoutingPriority,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck, RequestMethod, TcpKeepalive, health_check,
};
use envoy_types::pb::envoy::config::core::v3::{
    HttpUri, ProxyProtocolConfig, TransportSocket, http_uri, proxy_protocol_config,
    transport_socket,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, HeaderMatcher, RetryPolicy, RouteAction, header_matcher, retry_policy,
    route_action,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::basic_auth::v3::{
    BasicAuth, BasicAuthPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, PerRouteConfig, RemoteJwks, jwt_provider, jwt_requirement,
    per_route_config,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::oauth2::v3::OAuth2;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, Empty, UInt32Value};
use prost::{Message, Name};

use super::envoy_config::any;
use super::policy_filters::{self, ListenerNeeds};
use crate::translate::ir::{
    ActiveHealthCheckIr, AuthorizationIr, AuthzRuleIr, ClusterSettingsIr, FaultIr, HashPolicyIr,
    HealthCheckKindIr, JwtIr, RouteIr, TrafficIr,
};

pub const BASIC_AUTH_FILTER: &str = "envoy.filters.http.basic_auth";
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
pub const LOCAL_RATE_LIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// How long Envoy waits for a remote JWKS (upstream Envoy Gateway's value).
const JWKS_FETCH_TIMEOUT_MS: u64 = 10_000;

/// The users of the listener-level basic_auth filter, which is disabled (routes enable it with
/// their policy's users): one whose SHA-1 no password has (all zero bytes), so even enabled
/// by mistake it lets nobody in.
const NO_USERS: &str = "eg-operator-disabled:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA=";

pub(super) fn millis(ms: u64) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub(super) fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
        ..StringMatcher::default()
    }
}

/// The policy filters of every HTTP connection manager, in order, for the router to follow.
/// `jwt` is the listener's JWT configuration, when any of its routes has one; `needs` the
/// per-policy and per-algorithm filters its routes use.
pub fn policy_filters(jwt: Option<Any>, needs: &ListenerNeeds<'_>) -> Vec<HttpFilter> {
    let typed = |name: &str, config: Any, disabled: bool| HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        disabled,
        ..HttpFilter::default()
    };
    let mut filters = vec![
        // Faults come first: an injected abort answers before any other work.
        typed(FAULT_FILTER, any(&HttpFault::default()), true),
        typed(
            policy_filters::OAUTH2_FILTER,
            any(&OAuth2::default()),
            false,
        ),
        // Always present, even without providers: a connection accepted before a listener
        // update keeps its old filter chain while the routes it reads are new, and a route
        // naming a requirement its jwt_authn filter does not know is refused (403) rather than
        // let through unchecked, as it would be with no jwt_authn filter at all.
        typed(
            JWT_FILTER,
            jwt.unwrap_or_else(|| any(&JwtAuthentication::default())),
            false,
        ),
        typed(
            policy_filters::API_KEY_AUTH_FILTER,
            policy_filters::disabled_api_key_auth(),
            true,
        ),
        // Envoy requires users even on a disabled filter; routes bring their own.
        typed(
            BASIC_AUTH_FILTER,
            any(&BasicAuth {
                users: Some(super::from_ir::inline_source(NO_USERS)),
                ..BasicAuth::default()
            }),
            true,
        ),
    ];
    for (policy, ext) in &needs.ext_auth {
        filters.push(typed(
            &policy_filters::ext_authz_filter_name(policy),
            any(&policy_filters::ext_authz(ext)),
            true,
        ));
    }
    filters.push(typed(RBAC_FILTER, any(&Rbac::default()), true));
    filters.push(typed(
        LOCAL_RATE_LIMIT_FILTER,
        any(&LocalRateLimit {
            stat_prefix: "local_rate_limit".into(),
            ..LocalRateLimit::default()
        }),
        true,
    ));
    for algorithm in &needs.compressors {
        filters.push(typed(
            &policy_filters::compressor_filter_name(algorithm),
            any(&policy_filters::compressor(algorithm)),
            true,
        ));
    }
    filters
}

/// The per-route configuration of the policy filters, by filter name (sorted).
pub fn per_filter_configs(r: &RouteIr) -> BTreeMap<String, Any> {
    let mut out = BTreeMap::new();
    let enable = |config: Any| {
        any(&FilterConfig {
            config: Some(config),
            ..FilterConfig::default()
        })
    };
    if let Some(t) = &r.traffic {
        if !t.rate_limits.is_empty() {
            let config = policy_filters::local_rate_limit(
                format!("local_rate_limit/{}", r.source),
                &t.rate_limits,
            );
            out.insert(LOCAL_RATE_LIMIT_FILTER.to_owned(), enable(any(&config)));
        }
        for algorithm in &t.compression {
            out.insert(
                policy_filters::compressor_filter_name(algorithm),
                enable(any(&policy_filters::compressor_per_route())),
            );
        }
    }
    if let Some(fault) = r.traffic.as_ref().and_then(|t| t.fault.as_ref()) {
        out.insert(FAULT_FILTER.to_owned(), enable(any(&http_fault(fault))));
    }
    if let Some(security) = &r.security {
        if let Some(basic) = &security.basic_auth {
            let config = BasicAuthPerRoute {
                users: Some(super::from_ir::inline_source(&basic.htpasswd)),
            };
            out.insert(BASIC_AUTH_FILTER.to_owned(), enable(any(&config)));
        }
        if let Some(oidc) = &security.oidc {
            out.insert(
                policy_filters::OAUTH2_FILTER.to_owned(),
                any(&policy_filters::oauth2_per_route(&security.policy, oidc)),
            );
        }
        if let Some(keys) = &security.api_key_auth {
            out.insert(
                policy_filters::API_KEY_AUTH_FILTER.to_owned(),
                enable(any(&policy_filters::api_key_auth_per_route(keys))),
            );
        }
        if security.ext_auth.is_some() {
            out.insert(
                policy_filters::ext_authz_filter_name(&security.policy),
                enable(any(&policy_filters::ext_authz_per_route())),
            );
        }
        if let Some(authz) = &security.authorization {
            let config = RbacPerRoute {
                rbac: Some(Rbac {
                    rules: Some(rbac_rules(authz)),
                    ..Rbac::default()
                }),
            };
            out.insert(RBAC_FILTER.to_owned(), enable(any(&config)));
        }
        if security.jwt.is_some() {
            let config = PerRouteConfig {
                requirement_specifier: Some(
                    per_route_config::RequirementSpecifier::RequirementName(
                        security.policy.clone(),
                    ),
                ),
            };
            out.insert(JWT_FILTER.to_owned(), any(&config));
        }
    }
    out
}

fn per_million(numerator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn http_fault(f: &FaultIr) -> HttpFault {
    HttpFault {
        delay: f.delay_ms.map(|ms| FaultDelay {
            percentage: Some(per_million(f.delay_per_million)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(millis(ms))),
        }),
        abort: f
            .abort_http_status
            .map(fault_abort::ErrorType::HttpStatus)
            .or(f.abort_grpc_status.map(fault_abort::ErrorType::GrpcStatus))
            .map(|error| FaultAbort {
                error_type: Some(error),
                percentage: Some(per_million(f.abort_per_million)),
                ..FaultAbort::default()
            }),
        ..HttpFault::default()
    }
}

/// RBAC rules for an authorization. Upstream's rules are ordered (the first rule matching a
/// request decides; none matching means the default action), which one RBAC ALLOW policy
/// expresses exactly: a request is allowed when some Allow rule matches and no earlier rule
/// does, or, under `defaultAction: Allow`, when no rule matches at all.
fn rbac_rules(a: &AuthorizationIr) -> RbacRules {
    let matches: Vec<Principal> = a.rules.iter().map(rule_principal).collect();
    let not = |p: &Principal| Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(p.clone()))),
    };
    let all = |ids: Vec<Principal>| match ids.len() {
        0 => Principal {
            identifier: Some(principal::Identifier::Any(true)),
        },
        1 => ids.into_iter().next().unwrap_or_default(),
        _ => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
        },
    };
    let mut allowed: Vec<Principal> = Vec::new();
    for (i, rule) in a.rules.iter().enumerate() {
        if rule.allow {
            let mut ids = vec![matches[i].clone()];
            ids.extend(matches[..i].iter().map(not));
            allowed.push(all(ids));
        }
    }
    if a.default_allow {
        allowed.push(all(matches.iter().map(not).collect()));
    }
    RbacRules {
        action: rbac::Action::Allow as i32,
        // One entry at most: a one-entry map encodes the same whatever the map type. No entry
        // (nothing can be allowed) denies every request.
        policies: (!allowed.is_empty())
            .then(|| {
                (
                    "authorization".to_owned(),
                    Policy {
                        permissions: vec![Permission {
                            rule: Some(permission::Rule::Any(true)),
                        }],
                        principals: allowed,
                        ..Policy::default()
                    },
                )
            })
            .into_iter()
            .collect(),
        ..RbacRules::default()
    }
}

/// The requests a rule matches: any of its CIDRs, each of its headers with any of its values,
/// and any of its methods.
fn rule_principal(rule: &AuthzRuleIr) -> Principal {
    let header = |name: &str, value: &str| HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
            value,
        ))),
        ..HeaderMatcher::default()
    };
    let or = |ids: Vec<Principal>| Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    };
    let mut and = Vec::new();
    if !rule.client_cidrs.is_empty() {
        and.push(or(rule
            .client_cidrs
            .iter()
            .filter_map(|c| crate::translate::parse_cidr(c).ok())
            .map(|(ip, len)| Principal {
                identifier: Some(principal::Identifier::RemoteIp(CidrRange {
                    address_prefix: ip.to_string(),
                    prefix_len: Some(UInt32Value { value: len }),
                })),
            })
            .collect()));
    }
    for (name, values) in &rule.headers {
        and.push(or(values
            .iter()
            .map(|v| Principal {
                identifier: Some(principal::Identifier::Header(header(name, v))),
            })
            .collect()));
    }
    if !rule.methods.is_empty() {
        and.push(or(rule
            .methods
            .iter()
            .map(|m| Principal {
                identifier: Some(principal::Identifier::Header(header(":method", m))),
            })
            .collect()));
    }
    if and.is_empty() {
        Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }
    } else {
        Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids: and })),
        }
    }
}

/// The jwt_authn configuration of a listener whose routes carry these JWT policies (by policy
/// key), encoded with its maps in sorted order.
pub fn jwt_authentication(policies: &BTreeMap<String, &JwtIr>) -> Option<Any> {
    if policies.is_empty() {
        return None;
    }
    let mut providers: BTreeMap<String, JwtProvider> = BTreeMap::new();
    let mut requirements: BTreeMap<String, JwtRequirement> = BTreeMap::new();
    for (policy, jwt) in policies {
        let mut any_of = Vec::new();
        for p in &jwt.providers {
            let name = format!("{policy}/{}", p.name);
            let provider = JwtProvider {
                issuer: p.issuer.clone().unwrap_or_default(),
                audiences: p.audiences.clone(),
                forward: true,
                from_headers: p
                    .from_headers
                    .iter()
                    .map(|(name, prefix)| JwtHeader {
                        name: name.clone(),
                        value_prefix: prefix.clone().unwrap_or_default(),
                    })
                    .collect(),
                from_cookies: p.from_cookies.clone(),
                from_params: p.from_params.clone(),
                claim_to_headers: p
                    .claim_to_headers
                    .iter()
                    .map(|(claim, header)| JwtClaimToHeader {
                        claim_name: claim.clone(),
                        header_name: header.clone(),
                        ..JwtClaimToHeader::default()
                    })
                    .collect(),
                jwks_source_specifier: Some(match &p.jwks {
                    crate::translate::ir::JwksIr::Local(jwks) => {
                        jwt_provider::JwksSourceSpecifier::LocalJwks(super::from_ir::inline_source(
                            jwks,
                        ))
                    }
                    crate::translate::ir::JwksIr::Remote {
                        uri,
                        cluster,
                        cache_duration_ms,
                        retry,
                        timeout_ms,
                    } => jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
                        http_uri: Some(HttpUri {
                            uri: uri.clone(),
                            timeout: Some(millis(timeout_ms.unwrap_or(JWKS_FETCH_TIMEOUT_MS))),
                            http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                                cluster.clone(),
                            )),
                        }),
                        cache_duration: cache_duration_ms.map(millis),
                        retry_policy: retry
                            .as_ref()
                            .map(super::policy_filters::service_retry_policy),
                        ..RemoteJwks::default()
                    }),
                }),
                ..JwtProvider::default()
            };
            providers.insert(name.clone(), provider);
            any_of.push(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::ProviderName(name)),
            });
        }
        if jwt.optional {
            any_of.push(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
            });
        }
        let requirement = match any_of.len() {
            1 => any_of.remove(0),
            _ => JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                    JwtRequirementOrList {
                        requirements: any_of,
                    },
                )),
            },
        };
        requirements.insert(policy.clone(), requirement);
    }
    // JwtAuthentication: providers = 1, requirement_map = 5 (map entries: key = 1, value = 2).
    let mut value = Vec::new();
    put_map(&mut value, 1, &providers);
    put_map(&mut value, 5, &requirements);
    Some(Any {
        type_url: JwtAuthentication::type_url(),
        value,
    })
}

/// A protobuf `map<string, M>` field `tag` in key order (map entries: key = 1, value = 2), for
/// messages whose bytes must not depend on a `HashMap`'s iteration order.
pub(super) fn put_map<M: Message>(out: &mut Vec<u8>, tag: u32, entries: &BTreeMap<String, M>) {
    for (key, message) in entries {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        prost::encoding::message::encode(2, message, &mut entry);
        super::from_ir::put_message(out, tag, &entry);
    }
}

/// Route-level traffic settings: retries, the policy's request timeout (an HTTPRoute's own
/// `timeouts.request` wins) and consistent-hash keys.
pub fn apply_traffic(action: &mut RouteAction, t: &TrafficIr, route_sets_timeout: bool) {
    if let Some(retry) = &t.retry {
        let mut policy = RetryPolicy {
            retry_on: retry.retry_on.join(","),
            num_retries: Some(UInt32Value {
                value: retry.num_retries,
            }),
            retriable_status_codes: retry.status_codes.clone(),
            per_try_timeout: retry.per_try_timeout_ms.map(millis),
            ..RetryPolicy::default()
        };
        if let Some(base) = retry.backoff_base_ms {
            policy.retry_back_off = Some(retry_policy::RetryBackOff {
                base_interval: Some(millis(base)),
                max_interval: retry.backoff_max_ms.map(millis),
            });
        }
        // A backendRequest timeout from the route already made a policy: keep its per-try.
        if let Some(existing) = &action.retry_policy {
            policy.per_try_timeout = policy.per_try_timeout.or(existing.per_try_timeout);
        }
        action.retry_policy = Some(policy);
    }
    if let (Some(ms), false) = (t.request_timeout_ms, route_sets_timeout) {
        action.timeout = Some(millis(ms));
    }
    if let Some(hash) = &t.hash_policy {
        let specifier = match hash {
            HashPolicyIr::SourceIp => {
                route_action::hash_policy::PolicySpecifier::ConnectionProperties(
                    route_action::hash_policy::ConnectionProperties { source_ip: true },
                )
            }
            HashPolicyIr::Header(name) => route_action::hash_policy::PolicySpecifier::Header(
                route_action::hash_policy::Header {
                    header_name: name.clone(),
                    ..route_action::hash_policy::Header::default()
                },
            ),
            HashPolicyIr::Cookie { name, ttl_ms } => {
                route_action::hash_policy::PolicySpecifier::Cookie(
                    route_action::hash_policy::Cookie {
                        name: name.clone(),
                        ttl: ttl_ms.map(millis),
                        ..route_action::hash_policy::Cookie::default()
                    },
                )
            }
        };
        action.hash_policy = vec![route_action::HashPolicy {
            policy_specifier: Some(specifier),
            ..route_action::HashPolicy::default()
        }];
    }
}

/// Cluster settings from a BackendTrafficPolicy.
pub fn apply_cluster_settings(
    cluster: &mut Cluster,
    s: &ClusterSettingsIr,
) -> CommonHttpProtocolOptions {
    if let Some(ms) = s.connect_timeout_ms {
        cluster.connect_timeout = Some(millis(ms));
    }
    let limits = [
        s.max_connections,
        s.max_pending_requests,
        s.max_parallel_requests,
        s.max_parallel_retries,
    ];
    if limits.iter().any(Option::is_some) {
        let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: value(s.max_connections),
                max_pending_requests: value(s.max_pending_requests),
                max_requests: value(s.max_parallel_requests),
                max_retries: value(s.max_parallel_retries),
                ..circuit_breakers::Thresholds::default()
            }],
            ..CircuitBreakers::default()
        });
    }
    if let Some(lb) = &s.load_balancing {
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            LbConfig, LbPolicy, LeastRequestLbConfig, RoundRobinLbConfig, SlowStartConfig,
        };
        let slow_start = lb.slow_start_ms.map(|ms| SlowStartConfig {
            slow_start_window: Some(millis(ms)),
            ..SlowStartConfig::default()
        });
        let (policy, config) = match lb.policy.as_str() {
            "least_request" => (
                LbPolicy::LeastRequest,
                slow_start.map(|s| {
                    LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                        slow_start_config: Some(s),
                        ..LeastRequestLbConfig::default()
                    })
                }),
            ),
            "random" => (LbPolicy::Random, None),
            "ring_hash" => (LbPolicy::RingHash, None),
            _ => (
                LbPolicy::RoundRobin,
                slow_start.map(|s| {
                    LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                        slow_start_config: Some(s),
                    })
                }),
            ),
        };
        cluster.lb_policy = policy as i32;
        cluster.lb_config = config;
    }
    if let Some(check) = &s.active_health_check {
        cluster.health_checks = vec![health_check(check)];
    }
    if let Some(o) = &s.outlier_detection {
        let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
        cluster.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: value(o.consecutive_5xx),
            consecutive_gateway_failure: value(o.consecutive_gateway_errors),
            consecutive_local_origin_failure: value(o.consecutive_local_origin_failures),
            split_external_local_origin_errors: o.split_external_local_origin_errors,
            interval: o.interval_ms.map(millis),
            base_ejection_time: o.base_ejection_time_ms.map(millis),
            max_ejection_percent: value(o.max_ejection_percent),
            ..OutlierDetection::default()
        });
    }
    if let Some(k) = &s.tcp_keepalive {
        let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: value(k.probes),
                keepalive_time: value(k.idle_time_s),
                keepalive_interval: value(k.interval_s),
            }),
            ..UpstreamConnectionOptions::default()
        });
    }
    if let Some(version) = s.proxy_protocol {
        // The PROXY header goes first on the connection, ahead of TLS when there is any.
        let inner = cluster
            .transport_socket
            .take()
            .unwrap_or_else(|| TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                    &RawBuffer::default(),
                ))),
            });
        let version = if version == 1 {
            proxy_protocol_config::Version::V1
        } else {
            proxy_protocol_config::Version::V2
        };
        cluster.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.upstream_proxy_protocol".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                &ProxyProtocolUpstreamTransport {
                    config: Some(ProxyProtocolConfig {
                        version: version as i32,
                        ..ProxyProtocolConfig::default()
                    }),
                    transport_socket: Some(inner),
                    ..ProxyProtocolUpstreamTransport::default()
                },
            ))),
        });
    }
    CommonHttpProtocolOptions {
        idle_timeout: s.idle_timeout_ms.map(millis),
        max_connection_duration: s.max_connection_duration_ms.map(millis),
        max_requests_per_connection: s
            .max_requests_per_connection
            .map(|value| UInt32Value { value }),
        ..CommonHttpProtocolOptions::default()
    }
}

fn health_check(c: &ActiveHealthCheckIr) -> HealthCheck {
    let checker = match &c.check {
        HealthCheckKindIr::Http {
            path,
            method,
            host,
            expected_statuses,
        } => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: path.clone(),
            host: host.clone().unwrap_or_default(),
            method: method
                .as_deref()
                .and_then(RequestMethod::from_str_name)
                .unwrap_or(RequestMethod::MethodUnspecified) as i32,
            expected_statuses: expected_statuses
                .iter()
                .map(|s| Int64Range {
                    start: i64::from(*s),
                    end: i64::from(*s) + 1,
                })
                .collect(),
            ..health_check::HttpHealthCheck::default()
        }),
        HealthCheckKindIr::Tcp => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
        }
        HealthCheckKindIr::Grpc { service } => {
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: service.clone().unwrap_or_default(),
                ..health_check::GrpcHealthCheck::default()
            })
        }
    };
    HealthCheck {
        timeout: Some(millis(c.timeout_ms)),
        interval: Some(millis(c.interval_ms)),
        // The policy's interval holds whether or not the cluster has seen traffic (Envoy's own
        // default checks idle clusters once a minute, which would leave a dead endpoint in
        // rotation until the first requests fail).
        no_traffic_interval: Some(millis(c.interval_ms)),
        healthy_threshold: Some(UInt32Value {
            value: c.healthy_threshold,
        }),
        unhealthy_threshold: Some(UInt32Value {
            value: c.unhealthy_threshold,
        }),
        health_checker: Some(checker),
        ..HealthCheck::default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// Whether `p` matches a request from `ip` (the identifiers `rbac_rules` uses for CIDRs).
    fn matches(p: &Principal, ip: IpAddr) -> bool {
        match p.identifier.as_ref().expect("identifier") {
            principal::Identifier::Any(any) => *any,
            principal::Identifier::AndIds(set) => set.ids.iter().all(|p| matches(p, ip)),
            principal::Identifier::OrIds(set) => set.ids.iter().any(|p| matches(p, ip)),
            principal::Identifier::NotId(inner) => !matches(inner, ip),
            principal::Identifier::RemoteIp(range) => {
                let prefix: IpAddr = range.address_prefix.parse().expect("prefix");
                let len = range.prefix_len.as_ref().map_or(32, |l| l.value);
                match (prefix, ip) {
                    (IpAddr::V4(p), IpAddr::V4(i)) => {
                        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                        u32::from(p) & mask == u32::from(i) & mask
                    }
                    _ => false,
                }
            }
            other => panic!("unexpected identifier {other:?}"),
        }
    }

    fn allowed(a: &AuthorizationIr, ip: &str) -> bool {
        let rules = rbac_rules(a);
        assert_eq!(rules.action, rbac::Action::Allow as i32);
        let ip: IpAddr = ip.parse().expect("ip");
        rules
            .policies
            .values()
            .any(|p| p.principals.iter().any(|pr| matches(pr, ip)))
    }

    fn rule(allow: bool, cidrs: &[&str]) -> AuthzRuleIr {
        AuthzRuleIr {
            allow,
            client_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            headers: Vec::new(),
            methods: Vec::new(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides_then_the_default() {
        let both = AuthorizationIr {
            default_allow: false,
            rules: vec![rule(false, &["10.1.0.0/16"]), rule(true, &["10.0.0.0/8"])],
        };
        assert!(!allowed(&both, "10.1.2.3"), "the earlier deny wins");
        assert!(allowed(&both, "10.2.3.4"));
        assert!(!allowed(&both, "192.168.1.1"), "default deny");

        let deny_list = AuthorizationIr {
            default_allow: true,
            rules: vec![rule(false, &["10.0.0.0/8"])],
        };
        assert!(!allowed(&deny_list, "10.9.9.9"));
        assert!(allowed(&deny_list, "8.8.8.8"));

        let allow_first = AuthorizationIr {
            default_allow: true,
            rules: vec![rule(true, &["10.1.0.0/16"]), rule(false, &["10.0.0.0/8"])],
        };
        assert!(allowed(&allow_first, "10.1.0.1"), "the earlier allow wins");
        assert!(!allowed(&allow_first, "10.2.0.1"));
        assert!(allowed(&allow_first, "1.1.1.1"));

        let nothing = AuthorizationIr {
            default_allow: false,
            rules: Vec::new(),
        };
        assert!(rbac_rules(&nothing).policies.is_empty(), "deny everything");
    }
}
