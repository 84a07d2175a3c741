//! Route match precedence: the order Envoy must try routes in so that the first match is the
//! one Gateway API says wins.
//!
//! `HTTPRouteRule.matches` (Gateway API v1.5) orders matches across all routes of a hostname by,
//! continuing on ties:
//!
//! 1. "Exact" path match;
//! 2. "Prefix" path match with the largest number of characters;
//! 3. method match;
//! 4. largest number of header matches;
//! 5. largest number of query param matches;
//! 6. the oldest Route by creation timestamp;
//! 7. the Route first in alphabetical `{namespace}/{name}` order;
//! 8. within a Route, the first rule (and then the first match) in list order.
//!
//! The precedence of RegularExpression path matches is implementation-specific; like upstream
//! Envoy Gateway we put them between Exact and Prefix matches, longest pattern first. A route
//! without a creation timestamp sorts as the oldest (Go's zero time does the same upstream).

use std::cmp::Reverse;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ir::{PathMatchIr, RouteIr};

/// Sort key of one route entry; smaller sorts first. Field order is the precedence order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PrecedenceKey {
    path_kind: u8,
    path_len: Reverse<usize>,
    has_method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: Option<Time>,
    route: Arc<str>,
    rule: usize,
    match_index: usize,
}

impl PrecedenceKey {
    /// The key of `route`, match `match_index` of rule `rule` of the HTTPRoute `route_key`
    /// (`"{ns}/{name}"`) created at `created`.
    pub fn new(
        route: &RouteIr,
        created: Option<&Time>,
        route_key: &Arc<str>,
        rule: usize,
        match_index: usize,
    ) -> Self {
        let (path_kind, path_len) = match &route.path {
            PathMatchIr::Exact(v) => (0, v.len()),
            PathMatchIr::Regex(v) => (1, v.len()),
            PathMatchIr::Prefix(v) => (2, v.len()),
        };
        Self {
            path_kind,
            path_len: Reverse(path_len),
            has_method: Reverse(route.method.is_some()),
            headers: Reverse(route.headers.len()),
            query: Reverse(route.query.len()),
            created: created.cloned(),
            route: route_key.clone(),
            rule,
            match_index,
        }
    }
}

/// Sorts entries into precedence order. Keys are unique per (route, rule, match), so the order
/// is total and an unstable sort is deterministic.
pub(super) fn sort<T>(entries: &mut [T], key: impl Fn(&T) -> &PrecedenceKey) {
    entries.sort_unstable_by(|a, b| key(a).cmp(key(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::{
        DirectResponseIr, HeaderMatchIr, QueryMatchIr, RouteActionIr, StringMatchIr,
    };
    use k8s_openapi::jiff::Timestamp;

    fn route(name: &str, path: PathMatchIr) -> RouteIr {
        RouteIr {
            name: name.to_owned(),
            source: Arc::from("ns/r"),
            rule_name: None,
            path,
            headers: vec![],
            query: vec![],
            method: None,
            action: RouteActionIr::DirectResponse(DirectResponseIr { status: 500 }),
            filters: Arc::default(),
            traffic: None,
            security: None,
        }
    }

    fn header(name: &str) -> HeaderMatchIr {
        HeaderMatchIr {
            name: name.to_owned(),
            value: StringMatchIr::Exact("v".to_owned()),
        }
    }

    fn names(mut routes: Vec<(PrecedenceKey, RouteIr)>) -> Vec<String> {
        sort(&mut routes, |(k, _)| k);
        routes.into_iter().map(|(_, r)| r.name).collect()
    }

    fn keyed(r: RouteIr, created: Option<i64>, key: &str, rule: usize) -> (PrecedenceKey, RouteIr) {
        let time = created.map(|s| Time(Timestamp::from_second(s).expect("valid time")));
        (
            PrecedenceKey::new(&r, time.as_ref(), &key.into(), rule, 0),
            r,
        )
    }

    #[test]
    fn path_kind_then_length() {
        let routes = vec![
            keyed(
                route("prefix-short", PathMatchIr::Prefix("/".into())),
                None,
                "a/r",
                0,
            ),
            keyed(
                route("prefix-long", PathMatchIr::Prefix("/api/v1".into())),
                None,
                "a/r",
                1,
            ),
            keyed(
                route("regex", PathMatchIr::Regex("/x/.*".into())),
                None,
                "a/r",
                2,
            ),
            keyed(
                route("exact", PathMatchIr::Exact("/a".into())),
                None,
                "a/r",
                3,
            ),
            keyed(
                route("exact-long", PathMatchIr::Exact("/abc".into())),
                None,
                "a/r",
                4,
            ),
        ];
        assert_eq!(
            names(routes),
            [
                "exact-long",
                "exact",
                "regex",
                "prefix-long",
                "prefix-short"
            ]
        );
    }

    #[test]
    fn method_then_headers_then_query() {
        let p = || PathMatchIr::Prefix("/".into());
        let mut with_method = route("method", p());
        with_method.method = Some("GET".into());
        let mut two_headers = route("two-headers", p());
        two_headers.headers = vec![header("a"), header("b")];
        let mut one_header = route("one-header", p());
        one_header.headers = vec![header("a")];
        let mut query = route("query", p());
        query.query = vec![QueryMatchIr {
            name: "q".into(),
            value: StringMatchIr::Exact("1".into()),
        }];
        let routes = vec![
            keyed(route("plain", p()), None, "a/r", 0),
            keyed(query, None, "a/r", 1),
            keyed(one_header, None, "a/r", 2),
            keyed(two_headers, None, "a/r", 3),
            keyed(with_method, None, "a/r", 4),
        ];
        assert_eq!(
            names(routes),
            ["method", "two-headers", "one-header", "query", "plain"]
        );
    }

    #[test]
    fn ties_break_by_age_then_name_then_rule_order() {
        let p = || PathMatchIr::Prefix("/same".into());
        let routes = vec![
            keyed(route("young", p()), Some(2_000), "a/young", 0),
            keyed(route("old-b", p()), Some(1_000), "b/old", 0),
            keyed(route("old-a-rule1", p()), Some(1_000), "a/old", 1),
            keyed(route("old-a-rule0", p()), Some(1_000), "a/old", 0),
            keyed(route("no-timestamp", p()), None, "z/none", 0),
        ];
        assert_eq!(
            names(routes),
            [
                "no-timestamp",
                "old-a-rule0",
                "old-a-rule1",
                "old-b",
                "young"
            ]
        );
    }
}
