//! Hostname algebra of Gateway API: wildcard matching, the listener × route hostname
//! intersection that decides where a route attaches, listener isolation, and specificity order.
//!
//! Kept apart from the translator because these rules are subtle, easy to unit test in
//! isolation, and shared by route attachment (status) and programming (IR).
//!
//! Hostnames are compared lowercase (DNS names are case-insensitive). `"*"` stands for "any
//! host" and only arises when neither the listener nor the route names a hostname.

use std::cmp::Ordering;

/// The "any host" domain.
pub(super) const ANY: &str = "*";

/// Whether `wildcard` (`*.example.com`) matches `host`. A wildcard label matches one or more
/// labels, so `*.example.com` matches `a.example.com` and `a.b.example.com` but not
/// `example.com`. `host` may itself be a narrower wildcard (`*.a.example.com`).
pub(super) fn wildcard_matches(wildcard: &str, host: &str) -> bool {
    let Some(suffix) = wildcard.strip_prefix('*') else {
        return false;
    };
    // "*.example.com" keeps its dot in the suffix so "badexample.com" cannot match.
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// Whether every host `narrow` matches is also matched by `broad` (`broad` covers `narrow`).
/// `None` as the broad side means "no hostname", which covers everything.
pub(super) fn covers(broad: Option<&str>, narrow: &str) -> bool {
    match broad {
        None => true,
        Some(ANY) => true,
        Some(b) => b == narrow || wildcard_matches(b, narrow),
    }
}

/// The hostnames a route serves on a listener (Gateway API `HTTPRoute.spec.hostnames` rules):
///
/// - neither side names hosts: `["*"]`;
/// - only one side does: that side's hostnames;
/// - both do: each route hostname equal to the listener's, or matched by a wildcard listener
///   hostname, is kept as is; a wildcard route hostname matching an exact (or narrower
///   wildcard) listener hostname yields the listener's hostname.
///
/// Empty means "no intersection": the route must not attach (`NoMatchingListenerHostname`).
/// The result is deduplicated and sorted most specific first.
///
/// Both-wildcard cases keep the narrower wildcard (route `*.com` on listener `*.example.com`
/// gives `*.example.com`), which is the set intersection; upstream Envoy Gateway only handles
/// the case where the route's wildcard is the narrower one.
pub(super) fn intersect(listener: Option<&str>, route_hostnames: &[String]) -> Vec<String> {
    let listener = listener.map(str::to_ascii_lowercase);
    let mut hosts: Vec<String> = Vec::new();
    if route_hostnames.is_empty() {
        hosts.push(listener.unwrap_or_else(|| ANY.to_owned()));
        return hosts;
    }
    for route_host in route_hostnames {
        let route_host = route_host.to_ascii_lowercase();
        match listener.as_deref() {
            None => hosts.push(route_host),
            Some(l) if covers(Some(l), &route_host) => hosts.push(route_host),
            Some(l) if wildcard_matches(&route_host, l) => hosts.push(l.to_owned()),
            Some(_) => {}
        }
    }
    sort_by_specificity(&mut hosts);
    hosts.dedup();
    hosts
}

/// Listener isolation (Gateway API "Listener Isolation", `GatewayHTTPListenerIsolation`):
/// a request must be handled by the most specific listener on its port. So a host that a more
/// specific sibling listener (same port) covers is removed from this listener's hosts.
///
/// `siblings` are the hostnames of the *other* valid listeners on the same port. A sibling is
/// more specific than `listener` when the listener's hostname covers it.
pub(super) fn isolate(
    listener: Option<&str>,
    siblings: &[Option<String>],
    hosts: Vec<String>,
) -> Vec<String> {
    hosts
        .into_iter()
        .filter(|host| {
            !siblings.iter().flatten().any(|sibling| {
                Some(sibling.as_str()) != listener
                    && covers(listener, sibling)
                    && covers(Some(sibling), host)
            })
        })
        .collect()
}

/// Specificity order (most specific first): exact names, then wildcards with more labels, then
/// `"*"`; ties by length then alphabetically so the order is total and deterministic.
pub(super) fn specificity(a: &str, b: &str) -> Ordering {
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

type Rank = (u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>);

fn rank(h: &str) -> Rank {
    let class = if h == ANY {
        2
    } else if h.starts_with('*') {
        1
    } else {
        0
    };
    let labels = h.split('.').count();
    (class, std::cmp::Reverse(labels), std::cmp::Reverse(h.len()))
}

/// A hostname's place in [`specificity`] order as a sort key, for sorting many hostnames
/// without recounting their labels at every comparison.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SpecificityKey(Rank, std::sync::Arc<str>);

impl SpecificityKey {
    pub fn new(host: &std::sync::Arc<str>) -> Self {
        Self(rank(host), host.clone())
    }
}

/// Sorts hostnames most specific first.
pub(super) fn sort_by_specificity(hosts: &mut [String]) {
    hosts.sort_by(|a, b| specificity(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wildcard_matches_one_or_more_labels_only() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(wildcard_matches("*.example.com", "*.a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "badexample.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("a.example.com", "a.example.com"));
    }

    #[test]
    fn no_hostnames_anywhere_matches_any_host() {
        assert_eq!(intersect(None, &[]), hosts(&["*"]));
    }

    #[test]
    fn only_one_side_named_uses_that_side() {
        assert_eq!(intersect(Some("foo.com"), &[]), hosts(&["foo.com"]));
        assert_eq!(intersect(Some("*.foo.com"), &[]), hosts(&["*.foo.com"]));
        assert_eq!(
            intersect(None, &hosts(&["b.com", "*.a.com", "a.com"])),
            hosts(&["a.com", "b.com", "*.a.com"])
        );
    }

    #[test]
    fn exact_listener_keeps_equal_or_wildcard_matching_route_hosts() {
        let l = Some("test.example.com");
        assert_eq!(
            intersect(l, &hosts(&["test.example.com"])),
            hosts(&["test.example.com"])
        );
        assert_eq!(
            intersect(l, &hosts(&["*.example.com"])),
            hosts(&["test.example.com"])
        );
        assert!(intersect(l, &hosts(&["other.example.com", "example.com"])).is_empty());
        assert!(intersect(l, &hosts(&["*.test.example.com"])).is_empty());
    }

    #[test]
    fn wildcard_listener_keeps_matching_route_hosts_only() {
        // The spec's own example: test.example.net must not be considered.
        let l = Some("*.example.com");
        assert_eq!(
            intersect(l, &hosts(&["test.example.com", "test.example.net"])),
            hosts(&["test.example.com"])
        );
        assert_eq!(
            intersect(l, &hosts(&["*.example.com", "foo.test.example.com"])),
            hosts(&["foo.test.example.com", "*.example.com"])
        );
        assert!(intersect(l, &hosts(&["example.com"])).is_empty());
    }

    #[test]
    fn both_wildcards_intersect_to_the_narrower() {
        assert_eq!(
            intersect(Some("*.example.com"), &hosts(&["*.com"])),
            hosts(&["*.example.com"])
        );
        assert_eq!(
            intersect(Some("*.com"), &hosts(&["*.example.com"])),
            hosts(&["*.example.com"])
        );
        assert!(intersect(Some("*.example.com"), &hosts(&["*.example.net"])).is_empty());
    }

    #[test]
    fn intersection_is_case_insensitive_and_deduplicated() {
        assert_eq!(
            intersect(
                Some("Foo.Example.com"),
                &hosts(&["*.EXAMPLE.com", "foo.example.COM"])
            ),
            hosts(&["foo.example.com"])
        );
    }

    #[test]
    fn isolation_removes_hosts_owned_by_more_specific_siblings() {
        let siblings = vec![
            Some("foo.example.com".to_owned()),
            Some("*.example.com".to_owned()),
        ];
        // The catch-all listener loses everything a named sibling serves, keeps the rest.
        assert_eq!(
            isolate(
                None,
                &siblings,
                hosts(&["foo.example.com", "bar.example.com", "other.org", "*"])
            ),
            hosts(&["other.org", "*"])
        );
        // The wildcard listener loses only what the exact sibling serves.
        let siblings = vec![Some("foo.example.com".to_owned())];
        assert_eq!(
            isolate(
                Some("*.example.com"),
                &siblings,
                hosts(&["foo.example.com", "bar.example.com", "*.example.com"])
            ),
            hosts(&["bar.example.com", "*.example.com"])
        );
        // A less specific sibling takes nothing away.
        let siblings = vec![Some("*.com".to_owned())];
        assert_eq!(
            isolate(Some("*.example.com"), &siblings, hosts(&["a.example.com"])),
            hosts(&["a.example.com"])
        );
    }

    #[test]
    fn specificity_orders_exact_then_deeper_wildcards_then_any() {
        let mut list = hosts(&[
            "*",
            "*.example.com",
            "a.example.com",
            "*.foo.example.com",
            "b.io",
        ]);
        sort_by_specificity(&mut list);
        assert_eq!(
            list,
            hosts(&[
                "a.example.com",
                "b.io",
                "*.foo.example.com",
                "*.example.com",
                "*"
            ])
        );
    }
}
