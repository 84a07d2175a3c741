//! Envoy configuration for the policy features added after the first set (pure): API key
//! authentication, external authorization, OpenID Connect, response compression and local
//! rate limits with client selectors. [`super::policy_config`] places these filters in the connection manager
//! and calls in here for their listener- and route-level configuration.
//!
//! - API keys follow basic auth: one disabled filter in every connection manager, enabled by a
//!   route with its policy's keys, so the first API key policy changes only a route table.
//! - External authorization, like upstream Envoy Gateway, is one filter per SecurityPolicy
//!   (named after it, disabled), because the service, timeout and fail-open switch are
//!   filter-level settings in Envoy; routes under the policy enable it. So the first such
//!   policy on a listener changes the listener, and a keep-alive connection accepted before
//!   that change keeps the old filter chain: [`super::authz_guard`] gives it a route table of
//!   its own in which the newly protected routes answer 503, never unchecked.
//! - OpenID Connect: one oauth2 filter in every connection manager, without configuration of
//!   its own (it then passes requests through); a route under an OIDC policy carries the
//!   policy's configuration, whose two secrets (client secret, cookie-signing key) go to Envoy
//!   over SDS. Always present for the reason jwt_authn is (see [`super::policy_config`]).
//! - Compressors are one filter per algorithm, disabled, present on listeners where a route
//!   asks for one; compression left off is harmless, so they need not always be there.
//! - Local rate limit rules with selectors become descriptor actions and descriptors of the
//!   route's local_ratelimit configuration (see [`local_rate_limit`]).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    BackoffStrategy, GrpcService, HttpUri, RetryPolicy as CoreRetryPolicy,
    RuntimeFractionalPercent, TypedExtensionConfig, grpc_service, http_uri,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RateLimit as RouteRateLimit, header_matcher, rate_limit,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    LocalRateLimitDescriptor, rate_limit_descriptor,
};
use envoy_types::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use envoy_types::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::{
    ApiKeyAuth, ApiKeyAuthPerRoute, Credential, Forwarding, KeySource,
};
use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::{
    Compressor, CompressorOverrides, CompressorPerRoute, compressor_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationResponse, CheckSettings, ExtAuthz, ExtAuthzPerRoute, HttpService, ext_authz,
    ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::oauth2::v3::{
    OAuth2Config, OAuth2Credentials, OAuth2PerRoute, o_auth2_credentials,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    GenericSecret, SdsSecretConfig, Secret, secret,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    AddressMatcher, ListStringMatcher, PathMatcher, RegexMatcher, StringMatcher, path_matcher,
    string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::pb::xds::core::v3::CidrRange as XdsCidrRange;

use super::envoy_config::any;
use super::policy_config::{exact, millis};
use crate::translate::ir::{
    ApiKeyAuthIr, ExtAuthIr, ExtAuthServiceIr, JwtIr, OidcIr, PathMatchIr, RateLimitIr,
    RateLimitSelectorIr, RetryIr, RouteIr, StringMatchIr,
};

pub const API_KEY_AUTH_FILTER: &str = "envoy.filters.http.api_key_auth";
pub const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
pub const COMPRESSOR_FILTER: &str = "envoy.filters.http.compressor";

/// The listener-level API key filter, disabled: Envoy wants a credential and a key source even
/// there. Its one client's key is never accepted, since routes bring their own credentials.
pub fn disabled_api_key_auth() -> Any {
    any(&ApiKeyAuth {
        credentials: vec![Credential {
            key: "eg-operator-disabled-no-key-matches-this".into(),
            client: "eg-operator-disabled".into(),
        }],
        key_sources: vec![KeySource {
            header: "x-eg-operator-disabled".into(),
            ..KeySource::default()
        }],
        ..ApiKeyAuth::default()
    })
}

pub fn api_key_auth_per_route(a: &ApiKeyAuthIr) -> ApiKeyAuthPerRoute {
    let sources = a
        .headers
        .iter()
        .map(|h| KeySource {
            header: h.clone(),
            ..KeySource::default()
        })
        .chain(a.params.iter().map(|q| KeySource {
            query: q.clone(),
            ..KeySource::default()
        }))
        .chain(a.cookies.iter().map(|c| KeySource {
            cookie: c.clone(),
            ..KeySource::default()
        }))
        .collect();
    ApiKeyAuthPerRoute {
        credentials: a
            .credentials
            .iter()
            .map(|(client, key)| Credential {
                key: key.clone(),
                client: client.clone(),
            })
            .collect(),
        key_sources: sources,
        forwarding: (a.forward_client_id_header.is_some() || a.sanitize).then(|| Forwarding {
            header: a.forward_client_id_header.clone().unwrap_or_default(),
            hide_credentials: a.sanitize,
        }),
        ..ApiKeyAuthPerRoute::default()
    }
}

pub const OAUTH2_FILTER: &str = "envoy.filters.http.oauth2";

/// SDS names of an OIDC policy's client secret and cookie-signing secret.
pub fn oidc_secret_names(policy: &str) -> (String, String) {
    (
        format!("oauth2/{policy}/client-secret"),
        format!("oauth2/{policy}/hmac"),
    )
}

/// The SDS secrets an OIDC policy's oauth2 configuration names.
pub fn oidc_secrets(policy: &str, o: &OidcIr) -> [Secret; 2] {
    let (client, hmac) = oidc_secret_names(policy);
    let generic = |name: String, value: &str| Secret {
        name,
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(super::from_ir::inline_source(value)),
            ..GenericSecret::default()
        })),
    };
    [
        generic(client, &o.client_secret),
        generic(hmac, &o.hmac_secret),
    ]
}

/// A route's oauth2 configuration for its OIDC policy. The listener's oauth2 filter has no
/// configuration of its own and passes requests of routes without one.
pub fn oauth2_per_route(policy: &str, o: &OidcIr) -> OAuth2PerRoute {
    let (client, hmac) = oidc_secret_names(policy);
    let sds = |name: String| SdsSecretConfig {
        name,
        sds_config: Some(super::envoy_config::ads_source()),
    };
    let path = |p: &str| PathMatcher {
        rule: Some(path_matcher::Rule::Path(exact(p))),
    };
    OAuth2PerRoute {
        config: Some(OAuth2Config {
            stat_prefix: policy.replace('/', "_"),
            token_endpoint: Some(HttpUri {
                uri: o.token_endpoint.clone(),
                timeout: Some(millis(o.token_timeout_ms.unwrap_or(TOKEN_TIMEOUT_MS))),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                    o.token_cluster.clone(),
                )),
            }),
            authorization_endpoint: o.authorization_endpoint.clone(),
            redirect_uri: o.redirect_url.clone(),
            redirect_path_matcher: Some(path(&o.redirect_path)),
            signout_path: Some(path(&o.logout_path)),
            forward_bearer_token: o.forward_access_token,
            // Upstream keeps the client's own Authorization header unless the access token
            // replaces it.
            preserve_authorization_header: !o.forward_access_token,
            use_refresh_token: Some(BoolValue {
                value: o.refresh_token,
            }),
            auth_scopes: o.scopes.clone(),
            resources: o.resources.clone(),
            credentials: Some(OAuth2Credentials {
                client_id: o.client_id.clone(),
                token_secret: Some(sds(client)),
                token_formation: Some(o_auth2_credentials::TokenFormation::HmacSecret(sds(hmac))),
                cookie_names: (o.access_token_cookie.is_some() || o.id_token_cookie.is_some())
                    .then(|| o_auth2_credentials::CookieNames {
                        bearer_token: o.access_token_cookie.clone().unwrap_or_default(),
                        id_token: o.id_token_cookie.clone().unwrap_or_default(),
                        ..o_auth2_credentials::CookieNames::default()
                    }),
                cookie_domain: o.cookie_domain.clone().unwrap_or_default(),
            }),
            retry_policy: o.token_retry.as_ref().map(service_retry_policy),
            ..OAuth2Config::default()
        }),
    }
}

/// The retry policy of a policy's own requests (JWKS fetches, authorization checks, token
/// requests). Envoy's service-level retry policy has no list of retriable status codes, so
/// retrying on 5xx codes becomes `5xx`; other codes are not retried.
pub(super) fn service_retry_policy(r: &RetryIr) -> CoreRetryPolicy {
    let mut retry_on: Vec<&str> = r
        .retry_on
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "retriable-status-codes")
        .collect();
    if r.status_codes.iter().any(|c| (500..600).contains(c)) && !retry_on.contains(&"5xx") {
        retry_on.push("5xx");
    }
    CoreRetryPolicy {
        retry_back_off: r.backoff_base_ms.map(|base| BackoffStrategy {
            base_interval: Some(millis(base)),
            max_interval: r.backoff_max_ms.map(millis),
        }),
        num_retries: Some(UInt32Value {
            value: r.num_retries,
        }),
        retry_on: retry_on.join(","),
        ..CoreRetryPolicy::default()
    }
}

/// How long Envoy waits for the provider's token endpoint (upstream's default).
const TOKEN_TIMEOUT_MS: u64 = 10_000;

/// The ext_authz filter name of a policy's authorization service.
pub fn ext_authz_filter_name(policy: &str) -> String {
    format!("{EXT_AUTHZ_FILTER}/{policy}")
}

/// A policy's ext_authz filter configuration.
pub fn ext_authz(e: &ExtAuthIr) -> ExtAuthz {
    let list = |names: &[String]| {
        (!names.is_empty()).then(|| ListStringMatcher {
            patterns: names.iter().map(|n| exact(n)).collect(),
        })
    };
    let services = match &e.service {
        ExtAuthServiceIr::Http {
            path,
            path_override,
            headers_to_backend,
        } => ext_authz::Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                // Envoy requires a URI but sends through the cluster; cluster names hold
                // slashes, so the URI names the service generically.
                uri: format!("http://ext-authz{}", path.as_deref().unwrap_or("")),
                timeout: Some(millis(e.timeout_ms)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(e.cluster.clone())),
            }),
            path_prefix: path.clone().unwrap_or_default(),
            path_override: path_override.clone().unwrap_or_default(),
            authorization_response: Some(AuthorizationResponse {
                allowed_upstream_headers: list(headers_to_backend),
                ..AuthorizationResponse::default()
            }),
            retry_policy: e.retry.as_ref().map(service_retry_policy),
            ..HttpService::default()
        }),
        ExtAuthServiceIr::Grpc => ext_authz::Services::GrpcService(GrpcService {
            timeout: Some(millis(e.timeout_ms)),
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: e.cluster.clone(),
                    // Envoy's default authority is the cluster name, whose slashes make it
                    // an invalid `:authority` that gRPC servers refuse.
                    authority: "ext-authz".into(),
                    ..grpc_service::EnvoyGrpc::default()
                },
            )),
            retry_policy: e.retry.as_ref().map(service_retry_policy),
            ..GrpcService::default()
        }),
    };
    ExtAuthz {
        // The v3 check API (the only one Envoy still speaks).
        transport_api_version: 2,
        failure_mode_allow: e.fail_open,
        allowed_headers: list(&e.headers_to_ext_auth),
        services: Some(services),
        ..ExtAuthz::default()
    }
}

/// What enables a policy's (disabled) ext_authz filter on a route.
pub fn ext_authz_per_route() -> ExtAuthzPerRoute {
    ExtAuthzPerRoute {
        r#override: Some(ext_authz_per_route::Override::CheckSettings(
            CheckSettings::default(),
        )),
    }
}

/// The compressor filter name of an algorithm (`gzip`, `brotli`, `zstd`).
pub fn compressor_filter_name(algorithm: &str) -> String {
    format!("{COMPRESSOR_FILTER}/{algorithm}")
}

/// A compressor filter for `algorithm`, with Envoy's defaults for what is compressed (textual
/// content types, 30 bytes and up, when the client's Accept-Encoding allows).
pub fn compressor(algorithm: &str) -> Compressor {
    let library = match algorithm {
        "brotli" => any(&Brotli::default()),
        "zstd" => any(&Zstd::default()),
        _ => any(&Gzip::default()),
    };
    Compressor {
        compressor_library: Some(TypedExtensionConfig {
            name: algorithm.to_owned(),
            typed_config: Some(library),
        }),
        ..Compressor::default()
    }
}

pub fn compressor_per_route() -> CompressorPerRoute {
    CompressorPerRoute {
        r#override: Some(compressor_per_route::Override::Overrides(
            CompressorOverrides::default(),
        )),
    }
}

/// The JWT providers, ext_authz policies, OIDC logins and compression algorithms the routes
/// of one connection manager use: what its HTTP filters and route table names derive from,
/// found in one pass over its route entries (tens of thousands on a large Gateway).
#[derive(Debug, Default)]
pub struct ListenerNeeds<'a> {
    /// By SecurityPolicy (`namespace/name`).
    pub jwt: BTreeMap<String, &'a JwtIr>,
    pub ext_auth: BTreeMap<String, &'a ExtAuthIr>,
    /// By SecurityPolicy: the OpenID Connect logins whose secrets Envoy needs over SDS.
    pub oidc: BTreeMap<String, &'a OidcIr>,
    pub compressors: BTreeSet<&'a str>,
}

impl<'a> ListenerNeeds<'a> {
    pub fn of(routes: impl Iterator<Item = &'a RouteIr>) -> Self {
        let mut needs = Self::default();
        for r in routes {
            if let Some(s) = &r.security {
                if let Some(jwt) = &s.jwt {
                    needs.jwt.insert(s.policy.clone(), jwt);
                }
                if let Some(e) = &s.ext_auth {
                    needs.ext_auth.insert(s.policy.clone(), e);
                }
                if let Some(o) = &s.oidc {
                    needs.oidc.insert(s.policy.clone(), o);
                }
            }
            if let Some(t) = &r.traffic {
                needs
                    .compressors
                    .extend(t.compression.iter().map(String::as_str));
            }
        }
        needs
    }
}

/// Descriptor key of a rule's entries: unique per rule and condition, so rules never share
/// buckets.
fn key(rule: usize, condition: usize) -> String {
    format!("rule-{rule}-{condition}")
}

/// The local_ratelimit configuration of a route with these rules. One rule without selectors
/// is the route's token bucket, as before selectors existed. Otherwise every rule is a
/// descriptor, produced by actions (one entry per condition, in order) that all must hold:
/// constant-valued entries for Exact matches and an empty value (a bucket per distinct value)
/// for Distinct ones. Matched descriptors each take a token; the route's own bucket is not
/// consumed alongside and only limits requests no rule matches, so it is unlimited.
pub fn local_rate_limit(stat_prefix: String, rules: &[RateLimitIr]) -> LocalRateLimit {
    let hundred = || RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    };
    let bucket = |requests: u32, fill_interval_ms: u64| TokenBucket {
        max_tokens: requests,
        tokens_per_fill: Some(UInt32Value { value: requests }),
        fill_interval: Some(millis(fill_interval_ms)),
    };
    let mut config = LocalRateLimit {
        stat_prefix,
        filter_enabled: Some(hundred()),
        filter_enforced: Some(hundred()),
        ..LocalRateLimit::default()
    };
    if let [only] = rules
        && only.selectors.is_empty()
    {
        config.token_bucket = Some(bucket(only.requests, only.fill_interval_ms));
        return config;
    }
    config.token_bucket = Some(bucket(u32::MAX, 1_000));
    config.always_consume_default_token_bucket = Some(BoolValue { value: false });
    for (i, rule) in rules.iter().enumerate() {
        let mut actions = Vec::new();
        let mut entries = Vec::new();
        if rule.selectors.is_empty() {
            actions.push(rate_limit::Action {
                action_specifier: Some(rate_limit::action::ActionSpecifier::GenericKey(
                    rate_limit::action::GenericKey {
                        descriptor_key: key(i, 0),
                        descriptor_value: "1".into(),
                        ..rate_limit::action::GenericKey::default()
                    },
                )),
            });
            entries.push(entry(key(i, 0), "1"));
        }
        for (j, selector) in rule.selectors.iter().enumerate() {
            let k = key(i, j);
            let (mut more_actions, mut more_entries) = selector_actions(&k, selector);
            actions.append(&mut more_actions);
            entries.append(&mut more_entries);
        }
        config.rate_limits.push(RouteRateLimit {
            actions,
            ..RouteRateLimit::default()
        });
        config.descriptors.push(LocalRateLimitDescriptor {
            entries,
            token_bucket: Some(bucket(rule.requests, rule.fill_interval_ms)),
            ..LocalRateLimitDescriptor::default()
        });
    }
    config
}

fn entry(key: String, value: &str) -> rate_limit_descriptor::Entry {
    rate_limit_descriptor::Entry {
        key,
        value: value.to_owned(),
    }
}

/// A header condition producing entry `k` = `1` when it holds.
fn header_match(k: &str, matcher: HeaderMatcher, invert: bool) -> rate_limit::Action {
    rate_limit::Action {
        action_specifier: Some(rate_limit::action::ActionSpecifier::HeaderValueMatch(
            rate_limit::action::HeaderValueMatch {
                descriptor_key: k.to_owned(),
                descriptor_value: "1".into(),
                expect_match: Some(BoolValue { value: !invert }),
                headers: vec![matcher],
                ..rate_limit::action::HeaderValueMatch::default()
            },
        )),
    }
}

fn string_header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..HeaderMatcher::default()
    }
}

fn regex_matcher(pattern: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: pattern,
            ..RegexMatcher::default()
        })),
        ..StringMatcher::default()
    }
}

fn regex_escape(text: &str) -> String {
    regex::escape(text)
}

/// The actions and descriptor entries of one selector condition.
fn selector_actions(
    k: &str,
    selector: &RateLimitSelectorIr,
) -> (Vec<rate_limit::Action>, Vec<rate_limit_descriptor::Entry>) {
    use rate_limit::action::ActionSpecifier;
    let one = |action| (vec![action], vec![entry(k.to_owned(), "1")]);
    match selector {
        RateLimitSelectorIr::Header {
            name,
            value,
            invert,
        } => {
            let m = match value {
                StringMatchIr::Exact(v) => exact(v),
                StringMatchIr::Regex(r) => regex_matcher(r.clone()),
            };
            one(header_match(k, string_header(name, m), *invert))
        }
        RateLimitSelectorIr::HeaderDistinct { name } => (
            vec![rate_limit::Action {
                action_specifier: Some(ActionSpecifier::RequestHeaders(
                    rate_limit::action::RequestHeaders {
                        header_name: name.clone(),
                        descriptor_key: k.to_owned(),
                        ..rate_limit::action::RequestHeaders::default()
                    },
                )),
            }],
            // An empty value: a bucket per distinct header value.
            vec![entry(k.to_owned(), "")],
        ),
        RateLimitSelectorIr::Methods { methods, invert } => {
            let alternatives: Vec<String> = methods.iter().map(|m| regex_escape(m)).collect();
            let m = regex_matcher(format!("^(?:{})$", alternatives.join("|")));
            one(header_match(k, string_header(":method", m), *invert))
        }
        RateLimitSelectorIr::Path { path, invert } => {
            // `:path` carries the query string too; the condition is on the path before it.
            let pattern = match path {
                PathMatchIr::Exact(p) => format!("^{}(?:\\?.*)?$", regex_escape(p)),
                PathMatchIr::Prefix(p) if p == "/" => "^/.*$".to_owned(),
                PathMatchIr::Prefix(p) => format!("^{}(?:[/?].*)?$", regex_escape(p)),
                PathMatchIr::Regex(r) => format!("^(?:{r})(?:\\?.*)?$"),
            };
            one(header_match(
                k,
                string_header(":path", regex_matcher(pattern)),
                *invert,
            ))
        }
        RateLimitSelectorIr::SourceCidr {
            cidr,
            invert,
            distinct,
        } => {
            let (ip, len) = cidr.split_once('/').unwrap_or((cidr.as_str(), "32"));
            let in_range = rate_limit::Action {
                action_specifier: Some(ActionSpecifier::RemoteAddressMatch(
                    rate_limit::action::RemoteAddressMatch {
                        descriptor_key: k.to_owned(),
                        descriptor_value: "1".into(),
                        address_matcher: Some(AddressMatcher {
                            ranges: vec![XdsCidrRange {
                                address_prefix: ip.to_owned(),
                                prefix_len: Some(UInt32Value {
                                    value: len.parse().unwrap_or(32),
                                }),
                            }],
                            invert_match: *invert,
                        }),
                        ..rate_limit::action::RemoteAddressMatch::default()
                    },
                )),
            };
            if *distinct {
                // In the range, then a bucket per client address (`remote_address` = the
                // address, matched by the empty value).
                (
                    vec![
                        in_range,
                        rate_limit::Action {
                            action_specifier: Some(ActionSpecifier::RemoteAddress(
                                rate_limit::action::RemoteAddress {},
                            )),
                        },
                    ],
                    vec![
                        entry(k.to_owned(), "1"),
                        entry("remote_address".to_owned(), ""),
                    ],
                )
            } else {
                one(in_range)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(requests: u32, selectors: Vec<RateLimitSelectorIr>) -> RateLimitIr {
        RateLimitIr {
            requests,
            fill_interval_ms: 60_000,
            selectors,
        }
    }

    fn entries(d: &LocalRateLimitDescriptor) -> Vec<(&str, &str)> {
        d.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn one_plain_rule_is_the_route_bucket() {
        let config = local_rate_limit("s".into(), &[rule(3, Vec::new())]);
        assert_eq!(config.token_bucket.map(|b| b.max_tokens), Some(3));
        assert!(config.descriptors.is_empty() && config.rate_limits.is_empty());
    }

    #[test]
    fn selector_rules_become_descriptors_with_buckets_of_their_own() {
        let rules = [
            rule(
                2,
                vec![RateLimitSelectorIr::HeaderDistinct {
                    name: "x-user".into(),
                }],
            ),
            rule(
                5,
                vec![RateLimitSelectorIr::SourceCidr {
                    cidr: "10.0.0.0/8".into(),
                    invert: false,
                    distinct: true,
                }],
            ),
            rule(7, Vec::new()),
        ];
        let config = local_rate_limit("s".into(), &rules);
        // Requests no rule matches are not limited, and matching a rule takes no token from
        // the route's own bucket.
        assert_eq!(config.token_bucket.map(|b| b.max_tokens), Some(u32::MAX));
        assert_eq!(
            config.always_consume_default_token_bucket,
            Some(BoolValue { value: false })
        );
        assert_eq!(config.rate_limits.len(), 3);
        assert_eq!(config.descriptors.len(), 3);
        let buckets: Vec<u32> = config
            .descriptors
            .iter()
            .filter_map(|d| d.token_bucket.as_ref().map(|b| b.max_tokens))
            .collect();
        assert_eq!(buckets, [2, 5, 7]);
        // Distinct values are wildcards (empty): a bucket per header value, per client address.
        assert_eq!(entries(&config.descriptors[0]), [("rule-0-0", "")]);
        assert_eq!(
            entries(&config.descriptors[1]),
            [("rule-1-0", "1"), ("remote_address", "")]
        );
        assert_eq!(entries(&config.descriptors[2]), [("rule-2-0", "1")]);
        // Each rule's actions produce its descriptor's entries, in order.
        for (limit, descriptor) in config.rate_limits.iter().zip(&config.descriptors) {
            assert_eq!(limit.actions.len(), descriptor.entries.len());
        }
        let Some(rate_limit::action::ActionSpecifier::RequestHeaders(h)) =
            &config.rate_limits[0].actions[0].action_specifier
        else {
            panic!("a header action");
        };
        assert_eq!(
            (h.header_name.as_str(), h.descriptor_key.as_str()),
            ("x-user", "rule-0-0")
        );
    }

    #[test]
    fn path_and_method_conditions_ignore_the_query_string() {
        let pattern = |selector: RateLimitSelectorIr| {
            let (actions, _) = selector_actions("k", &selector);
            let Some(rate_limit::action::ActionSpecifier::HeaderValueMatch(m)) =
                &actions[0].action_specifier
            else {
                panic!("a header value match");
            };
            let Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(re)),
                ..
            })) = &m.headers[0].header_match_specifier
            else {
                panic!("a regex");
            };
            (
                m.headers[0].name.clone(),
                regex::Regex::new(&re.regex).expect("valid regex"),
            )
        };
        let (name, prefix) = pattern(RateLimitSelectorIr::Path {
            path: PathMatchIr::Prefix("/api".into()),
            invert: false,
        });
        assert_eq!(name, ":path");
        for path in ["/api", "/api/v1", "/api?x=1"] {
            assert!(prefix.is_match(path), "{path}");
        }
        for path in ["/apix", "/", "/other/api"] {
            assert!(!prefix.is_match(path), "{path}");
        }
        let (_, exact) = pattern(RateLimitSelectorIr::Path {
            path: PathMatchIr::Exact("/a.b".into()),
            invert: false,
        });
        assert!(exact.is_match("/a.b?q") && !exact.is_match("/axb") && !exact.is_match("/a.b/c"));
        let (name, methods) = pattern(RateLimitSelectorIr::Methods {
            methods: vec!["GET".into(), "POST".into()],
            invert: false,
        });
        assert_eq!(name, ":method");
        assert!(methods.is_match("POST") && !methods.is_match("PUT") && !methods.is_match("GETX"));
    }

    #[test]
    fn ext_authz_speaks_to_the_policy_cluster() {
        let http = ExtAuthIr {
            service: ExtAuthServiceIr::Http {
                path: Some("/check".into()),
                path_override: None,
                headers_to_backend: vec!["x-user".into()],
            },
            cluster: "service/n/auth/80".into(),
            headers_to_ext_auth: vec!["authorization".into()],
            timeout_ms: 2_000,
            fail_open: true,
            retry: Some(RetryIr {
                num_retries: 3,
                retry_on: vec!["connect-failure".into(), "retriable-status-codes".into()],
                status_codes: vec![503],
                per_try_timeout_ms: None,
                backoff_base_ms: Some(100),
                backoff_max_ms: None,
            }),
        };
        let config = ext_authz(&http);
        assert!(config.failure_mode_allow);
        let Some(ext_authz::Services::HttpService(service)) = &config.services else {
            panic!("an HTTP service");
        };
        assert_eq!(service.path_prefix, "/check");
        let uri = service.server_uri.as_ref().expect("uri");
        assert_eq!(
            uri.http_upstream_type,
            Some(http_uri::HttpUpstreamType::Cluster(
                "service/n/auth/80".into()
            ))
        );
        assert_eq!(uri.timeout, Some(millis(2_000)));
        let retry = service
            .retry_policy
            .as_ref()
            .expect("backendSettings.retry");
        assert_eq!(retry.num_retries, Some(UInt32Value { value: 3 }));
        assert_eq!(retry.retry_on, "connect-failure,5xx");
        assert_eq!(
            retry.retry_back_off.as_ref().and_then(|b| b.base_interval),
            Some(millis(100))
        );
        let grpc = ext_authz(&ExtAuthIr {
            service: ExtAuthServiceIr::Grpc,
            fail_open: false,
            ..http
        });
        let Some(ext_authz::Services::GrpcService(service)) = &grpc.services else {
            panic!("a gRPC service");
        };
        let Some(grpc_service::TargetSpecifier::EnvoyGrpc(target)) = &service.target_specifier
        else {
            panic!("Envoy gRPC");
        };
        assert_eq!(target.cluster_name, "service/n/auth/80");
        assert!(!target.authority.contains('/'), "a valid :authority");
        assert!(!grpc.failure_mode_allow);
    }

    #[test]
    fn api_keys_per_route_carry_sources_forwarding_and_sanitizing() {
        let config = api_key_auth_per_route(&ApiKeyAuthIr {
            credentials: vec![("c".into(), "k".into())],
            headers: vec!["x-key".into()],
            params: vec!["key".into()],
            cookies: vec!["session".into()],
            forward_client_id_header: None,
            sanitize: true,
        });
        assert_eq!(config.credentials[0].client, "c");
        let sources: Vec<(&str, &str, &str)> = config
            .key_sources
            .iter()
            .map(|s| (s.header.as_str(), s.query.as_str(), s.cookie.as_str()))
            .collect();
        assert_eq!(
            sources,
            [("x-key", "", ""), ("", "key", ""), ("", "", "session")]
        );
        assert_eq!(
            config.forwarding,
            Some(Forwarding {
                header: String::new(),
                hide_credentials: true
            })
        );
    }
}
