//! Route entries of the common shape — matches and a forward to weighted clusters, nothing
//! else — written straight to protobuf wire format.
//!
//! Route tables are the bulk of a large Gateway's configuration (ten thousand entries for a
//! thousand HTTPRoutes), and building each entry as a prost `Route` to encode it allocated
//! every name, path and matcher a second time only to drop them again: in `make bench`
//! profiles that was most of the encoding time. For the shape almost every entry has, this
//! module writes the bytes prost would, from the IR, without building the message.
//!
//! Byte-identical to prost's encoding of `from_ir::route_of` (fields in ascending tag order,
//! proto3 defaults omitted, oneof members always present), which the tests check on every
//! shape this accepts; anything else returns `None` and takes the general path.

use std::sync::Arc;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::translate::ir::{
    ForwardIr, HeaderMatchIr, PathMatchIr, QueryMatchIr, RouteActionIr, RouteIr, StringMatchIr,
    WeightedBackendIr,
};

use super::from_ir::INVALID_BACKEND_CLUSTER;

// Field numbers (envoy.config.route.v3 and envoy.type.matcher.v3).
const ROUTE_MATCH: u32 = 1;
const ROUTE_ROUTE: u32 = 2;
const ROUTE_NAME: u32 = 14;
const MATCH_PREFIX: u32 = 1;
const MATCH_PATH: u32 = 2;
const MATCH_SAFE_REGEX: u32 = 10;
const MATCH_PATH_SEPARATED_PREFIX: u32 = 14;
const MATCH_HEADERS: u32 = 6;
const MATCH_QUERY_PARAMETERS: u32 = 7;
const HEADER_NAME: u32 = 1;
const HEADER_STRING_MATCH: u32 = 13;
const QUERY_NAME: u32 = 1;
const QUERY_STRING_MATCH: u32 = 5;
const STRING_EXACT: u32 = 1;
const STRING_SAFE_REGEX: u32 = 5;
const REGEX_REGEX: u32 = 2;
const ACTION_CLUSTER: u32 = 1;
const ACTION_WEIGHTED_CLUSTERS: u32 = 3;
const ACTION_CLUSTER_NOT_FOUND_RESPONSE_CODE: u32 = 20;
const WEIGHTED_CLUSTERS: u32 = 1;
const CLUSTER_WEIGHT_NAME: u32 = 1;
const CLUSTER_WEIGHT_WEIGHT: u32 = 2;
const UINT32_VALUE: u32 = 1;
/// `RouteAction.ClusterNotFoundResponseCode.INTERNAL_SERVER_ERROR`.
const INTERNAL_SERVER_ERROR: u64 = 2;

// envoy.config.route.v3.VirtualHost.
const VIRTUAL_HOST_NAME: u32 = 1;
const VIRTUAL_HOST_DOMAINS: u32 = 2;

/// Appends a `VirtualHost` with only its name and domains set: the head of every virtual host
/// of a route table, its routes (field 3) following.
pub(super) fn put_virtual_host_head(out: &mut Vec<u8>, name: &str, domains: &[Arc<str>]) {
    out.reserve(
        string_len(VIRTUAL_HOST_NAME, name)
            + domains
                .iter()
                .map(|d| oneof_string_len(VIRTUAL_HOST_DOMAINS, d))
                .sum::<usize>(),
    );
    put_string(out, VIRTUAL_HOST_NAME, name);
    for domain in domains {
        // Elements of a repeated field are written even when empty.
        put_oneof_string(out, VIRTUAL_HOST_DOMAINS, domain);
    }
}

/// Appends the encoding of `r` to `out` when it has the common shape, and says whether it did.
pub(super) fn encode_simple_route(r: &RouteIr, out: &mut Vec<u8>) -> bool {
    let RouteIr {
        name,
        source: _,
        rule_name: _,
        path,
        headers,
        query,
        method,
        action,
        filters,
        traffic,
        security,
    } = r;
    let RouteActionIr::Forward(forward) = action else {
        return false;
    };
    let per_backend_headers = forward
        .backends
        .iter()
        .any(|b| b.request_headers.is_some() || b.response_headers.is_some());
    if !filters.is_empty() || traffic.is_some() || security.is_some() || per_backend_headers {
        return false;
    }
    let route_match = RouteMatchWire {
        path,
        headers,
        method: method.as_deref(),
        query,
    };
    let match_len = route_match.len();
    let action_len = action_len(forward);
    out.reserve(
        field_len(ROUTE_MATCH, match_len)
            + field_len(ROUTE_ROUTE, action_len)
            + string_len(ROUTE_NAME, name),
    );
    put_header(out, ROUTE_MATCH, match_len);
    route_match.put(out);
    put_header(out, ROUTE_ROUTE, action_len);
    put_action(out, forward);
    put_string(out, ROUTE_NAME, name);
    true
}

struct RouteMatchWire<'a> {
    path: &'a PathMatchIr,
    headers: &'a [HeaderMatchIr],
    method: Option<&'a str>,
    query: &'a [QueryMatchIr],
}

/// A `StringMatcher`, borrowed.
#[derive(Clone, Copy)]
enum Matcher<'a> {
    Exact(&'a str),
    Regex(&'a str),
}

impl<'a> From<&'a StringMatchIr> for Matcher<'a> {
    fn from(m: &'a StringMatchIr) -> Self {
        match m {
            StringMatchIr::Exact(v) => Self::Exact(v),
            StringMatchIr::Regex(p) => Self::Regex(p),
        }
    }
}

impl RouteMatchWire<'_> {
    /// The header conditions, then the method as the `:method` header.
    fn header_matchers(&self) -> impl Iterator<Item = (&str, Matcher<'_>)> {
        self.headers
            .iter()
            .map(|h| (h.name.as_str(), Matcher::from(&h.value)))
            .chain(self.method.map(|m| (":method", Matcher::Exact(m))))
    }

    fn query_matchers(&self) -> impl Iterator<Item = (&str, Matcher<'_>)> {
        self.query
            .iter()
            .map(|q| (q.name.as_str(), Matcher::from(&q.value)))
    }

    fn len(&self) -> usize {
        let path = match self.path {
            PathMatchIr::Exact(p) => oneof_string_len(MATCH_PATH, p),
            PathMatchIr::Prefix(p) if p == "/" => oneof_string_len(MATCH_PREFIX, p),
            PathMatchIr::Prefix(p) => oneof_string_len(MATCH_PATH_SEPARATED_PREFIX, p),
            PathMatchIr::Regex(p) => field_len(MATCH_SAFE_REGEX, regex_len(p)),
        };
        let headers: usize = self
            .header_matchers()
            .map(|(name, m)| field_len(MATCH_HEADERS, named_matcher_len(HEADER_NAMES, name, m)))
            .sum();
        let query: usize = self
            .query_matchers()
            .map(|(name, m)| {
                field_len(
                    MATCH_QUERY_PARAMETERS,
                    named_matcher_len(QUERY_NAMES, name, m),
                )
            })
            .sum();
        path + headers + query
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self.path {
            PathMatchIr::Exact(p) => put_oneof_string(out, MATCH_PATH, p),
            PathMatchIr::Prefix(p) if p == "/" => put_oneof_string(out, MATCH_PREFIX, p),
            PathMatchIr::Prefix(p) => put_oneof_string(out, MATCH_PATH_SEPARATED_PREFIX, p),
            PathMatchIr::Regex(p) => {
                put_header(out, MATCH_SAFE_REGEX, regex_len(p));
                put_string(out, REGEX_REGEX, p);
            }
        }
        for (name, m) in self.header_matchers() {
            put_named_matcher(out, MATCH_HEADERS, HEADER_NAMES, name, m);
        }
        for (name, m) in self.query_matchers() {
            put_named_matcher(out, MATCH_QUERY_PARAMETERS, QUERY_NAMES, name, m);
        }
    }
}

/// The field numbers of a `HeaderMatcher`'s or `QueryParameterMatcher`'s name and
/// `StringMatcher`.
type NamedMatcherTags = (u32, u32);
const HEADER_NAMES: NamedMatcherTags = (HEADER_NAME, HEADER_STRING_MATCH);
const QUERY_NAMES: NamedMatcherTags = (QUERY_NAME, QUERY_STRING_MATCH);

fn named_matcher_len(
    (name_tag, matcher_tag): NamedMatcherTags,
    name: &str,
    m: Matcher<'_>,
) -> usize {
    string_len(name_tag, name) + field_len(matcher_tag, string_matcher_len(m))
}

fn put_named_matcher(
    out: &mut Vec<u8>,
    tag: u32,
    tags: NamedMatcherTags,
    name: &str,
    m: Matcher<'_>,
) {
    put_header(out, tag, named_matcher_len(tags, name, m));
    put_string(out, tags.0, name);
    put_header(out, tags.1, string_matcher_len(m));
    match m {
        Matcher::Exact(v) => put_oneof_string(out, STRING_EXACT, v),
        Matcher::Regex(p) => {
            put_header(out, STRING_SAFE_REGEX, regex_len(p));
            put_string(out, REGEX_REGEX, p);
        }
    }
}

fn string_matcher_len(m: Matcher<'_>) -> usize {
    match m {
        Matcher::Exact(v) => oneof_string_len(STRING_EXACT, v),
        Matcher::Regex(p) => field_len(STRING_SAFE_REGEX, regex_len(p)),
    }
}

fn regex_len(pattern: &str) -> usize {
    string_len(REGEX_REGEX, pattern)
}

/// A single backend without an invalid share is named directly; anything else is a split,
/// whose invalid share goes to the cluster that does not exist, answered with a 500.
fn single(forward: &ForwardIr) -> Option<&WeightedBackendIr> {
    match forward.backends.as_slice() {
        [one] if forward.invalid_weight == 0 => Some(one),
        _ => None,
    }
}

fn action_len(forward: &ForwardIr) -> usize {
    let specifier = match single(forward) {
        Some(one) => oneof_string_len(ACTION_CLUSTER, &one.cluster),
        None => field_len(ACTION_WEIGHTED_CLUSTERS, weighted_len(forward)),
    };
    specifier + not_found_len(forward)
}

fn not_found_len(forward: &ForwardIr) -> usize {
    if forward.invalid_weight > 0 {
        key_len(ACTION_CLUSTER_NOT_FOUND_RESPONSE_CODE) + encoded_len_varint(INTERNAL_SERVER_ERROR)
    } else {
        0
    }
}

fn weights(forward: &ForwardIr) -> impl Iterator<Item = (&str, u32)> {
    forward
        .backends
        .iter()
        .map(|b| (&*b.cluster, b.weight))
        .chain(
            (forward.invalid_weight > 0)
                .then_some((INVALID_BACKEND_CLUSTER, forward.invalid_weight)),
        )
}

fn cluster_weight_len(name: &str, weight: u32) -> usize {
    string_len(CLUSTER_WEIGHT_NAME, name) + field_len(CLUSTER_WEIGHT_WEIGHT, uint32_len(weight))
}

fn uint32_len(value: u32) -> usize {
    if value == 0 {
        0
    } else {
        key_len(UINT32_VALUE) + encoded_len_varint(u64::from(value))
    }
}

fn weighted_len(forward: &ForwardIr) -> usize {
    weights(forward)
        .map(|(name, weight)| field_len(WEIGHTED_CLUSTERS, cluster_weight_len(name, weight)))
        .sum()
}

fn put_action(out: &mut Vec<u8>, forward: &ForwardIr) {
    match single(forward) {
        Some(one) => put_oneof_string(out, ACTION_CLUSTER, &one.cluster),
        None => {
            put_header(out, ACTION_WEIGHTED_CLUSTERS, weighted_len(forward));
            for (name, weight) in weights(forward) {
                put_header(out, WEIGHTED_CLUSTERS, cluster_weight_len(name, weight));
                put_string(out, CLUSTER_WEIGHT_NAME, name);
                put_header(out, CLUSTER_WEIGHT_WEIGHT, uint32_len(weight));
                if weight != 0 {
                    encode_key(UINT32_VALUE, WireType::Varint, out);
                    encode_varint(u64::from(weight), out);
                }
            }
        }
    }
    if forward.invalid_weight > 0 {
        encode_key(
            ACTION_CLUSTER_NOT_FOUND_RESPONSE_CODE,
            WireType::Varint,
            out,
        );
        encode_varint(INTERNAL_SERVER_ERROR, out);
    }
}

/// A length-delimited field holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A proto3 string field: omitted when empty.
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(tag, s.len())
    }
}

/// A string member of a oneof: present even when empty.
fn oneof_string_len(tag: u32, s: &str) -> usize {
    field_len(tag, s.len())
}

fn put_header(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_string(out: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_oneof_string(out, tag, s);
    }
}

fn put_oneof_string(out: &mut Vec<u8>, tag: u32, s: &str) {
    put_header(out, tag, s.len());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::translate::ir::{
        DirectResponseIr, HeaderModifierIr, HeaderValueIr, RouteFiltersIr, TimeoutsIr,
    };
    use crate::xds::from_ir::route_of;

    /// What prost writes for the entry, which the fast path must equal byte for byte.
    fn general(r: &RouteIr) -> Vec<u8> {
        let route = route_of(r);
        assert!(route.typed_per_filter_config.is_empty());
        route.encode_to_vec()
    }

    fn fast(r: &RouteIr) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode_simple_route(r, &mut out).then_some(out)
    }

    fn route(path: PathMatchIr, backends: Vec<(&str, u32)>, invalid_weight: u32) -> RouteIr {
        RouteIr {
            name: "httproute/apps/r/rule/0/match/0".to_owned(),
            source: Arc::from("apps/r"),
            rule_name: None,
            path,
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
            action: RouteActionIr::Forward(ForwardIr {
                backends: backends
                    .into_iter()
                    .map(|(cluster, weight)| WeightedBackendIr {
                        cluster: Arc::from(cluster),
                        weight,
                        request_headers: None,
                        response_headers: None,
                    })
                    .collect(),
                invalid_weight,
            }),
            filters: Arc::default(),
            traffic: None,
            security: None,
        }
    }

    #[test]
    fn a_split_with_matches_encodes_as_prost_does() {
        let mut r = route(
            PathMatchIr::Prefix("/svc0/v0".to_owned()),
            vec![("service/apps/a/8080", 90), ("service/apps/b/8080", 10)],
            0,
        );
        r.headers.push(HeaderMatchIr {
            name: "x-tenant".to_owned(),
            value: StringMatchIr::Exact("t0".to_owned()),
        });
        r.query.push(QueryMatchIr {
            name: "v".to_owned(),
            value: StringMatchIr::Regex("^[0-9]+$".to_owned()),
        });
        r.method = Some("GET".to_owned());
        assert_eq!(fast(&r), Some(general(&r)));
    }

    #[test]
    fn single_backends_invalid_shares_and_every_path_kind_encode_as_prost_does() {
        for path in [
            PathMatchIr::Prefix("/".to_owned()),
            PathMatchIr::Prefix("/a".to_owned()),
            PathMatchIr::Exact("/exact".to_owned()),
            PathMatchIr::Regex("/re/[a-z]+".to_owned()),
            PathMatchIr::Exact(String::new()),
        ] {
            for (backends, invalid) in [
                (vec![("service/apps/a/8080", 1)], 0),
                (vec![("service/apps/a/8080", 1)], 3),
                (vec![], 1),
                (vec![("", 0), ("b", 7)], 0),
            ] {
                let r = route(path.clone(), backends, invalid);
                assert_eq!(fast(&r), Some(general(&r)), "{r:?}");
            }
        }
    }

    #[test]
    fn anything_else_takes_the_general_path() {
        let plain = || route(PathMatchIr::Prefix("/".to_owned()), vec![("a", 1)], 0);
        let mut filtered = plain();
        filtered.filters = Arc::new(RouteFiltersIr {
            timeouts: Some(TimeoutsIr {
                request_ms: Some(1000),
                backend_request_ms: None,
            }),
            ..RouteFiltersIr::default()
        });
        let mut direct = plain();
        direct.action = RouteActionIr::DirectResponse(DirectResponseIr { status: 500 });
        let mut per_backend = plain();
        if let RouteActionIr::Forward(f) = &mut per_backend.action {
            f.backends[0].request_headers = Some(Box::new(HeaderModifierIr {
                set: vec![HeaderValueIr {
                    name: "x".to_owned(),
                    value: "y".to_owned(),
                }],
                ..HeaderModifierIr::default()
            }));
        }
        for r in [filtered, direct, per_backend] {
            assert_eq!(fast(&r), None, "{r:?}");
        }
        assert!(fast(&plain()).is_some());
    }

    fn text() -> impl Strategy<Value = String> {
        // Long enough for two-byte lengths.
        "[a-z0-9/._:-]{0,160}"
    }

    fn matcher() -> impl Strategy<Value = StringMatchIr> {
        prop_oneof![
            text().prop_map(StringMatchIr::Exact),
            text().prop_map(StringMatchIr::Regex),
        ]
    }

    fn path() -> impl Strategy<Value = PathMatchIr> {
        prop_oneof![
            text().prop_map(PathMatchIr::Exact),
            text().prop_map(PathMatchIr::Prefix),
            Just(PathMatchIr::Prefix("/".to_owned())),
            text().prop_map(PathMatchIr::Regex),
        ]
    }

    proptest! {
        #[test]
        fn virtual_host_heads_encode_as_prost_does(
            name in text(),
            domains in prop::collection::vec(text(), 0..6),
        ) {
            let mut out = Vec::new();
            let shared: Vec<Arc<str>> = domains.iter().map(|d| Arc::from(d.as_str())).collect();
            put_virtual_host_head(&mut out, &name, &shared);
            let prost = envoy_types::pb::envoy::config::route::v3::VirtualHost {
                name,
                domains,
                ..Default::default()
            };
            prop_assert_eq!(out, prost.encode_to_vec());
        }

        #[test]
        fn every_simple_entry_encodes_as_prost_does(
            name in text(),
            path in path(),
            headers in prop::collection::vec((text(), matcher()), 0..4),
            query in prop::collection::vec((text(), matcher()), 0..3),
            method in prop::option::of("[A-Z]{0,7}"),
            backends in prop::collection::vec((text(), 0u32..300_000), 0..4),
            invalid_weight in prop_oneof![Just(0u32), 0u32..300_000],
        ) {
            let splits = backends.iter().map(|(c, w)| (c.as_str(), *w)).collect();
            let mut r = route(path, splits, invalid_weight);
            r.name = name;
            r.headers = headers
                .into_iter()
                .map(|(name, value)| HeaderMatchIr { name, value })
                .collect();
            r.query = query
                .into_iter()
                .map(|(name, value)| QueryMatchIr { name, value })
                .collect();
            r.method = method;
            prop_assert_eq!(fast(&r), Some(general(&r)));
        }
    }
}
