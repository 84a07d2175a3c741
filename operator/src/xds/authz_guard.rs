//! Route tables for connections older than their listener's external authorization filters
//! (pure).
//!
//! Each ext_authz policy is a filter of the connection managers whose routes use it (its
//! service and failOpen are filter settings), so the first route under a new policy changes
//! the listener. Envoy keeps the connections it accepted before on the old filter chain until
//! they drain, while every chain reads the route table by name. Had both chains read one table,
//! a kept-alive connection would find the newly protected route there, with a per-route
//! setting for a filter its chain lacks, which Envoy ignores: the route would be served
//! unchecked.
//!
//! So a table is named after the ext_authz filters its connection manager has
//! ([`table_name`]): a change of those filters gives the listener a new table name, and the
//! table under the old name stays (Envoy keeps it subscribed while old connections use it) as
//! a guard: the same routes, except that a route needing a filter the old chain lacks answers
//! 503 ([`guarded_host`]). The snapshot builder remembers a listener's last few filter sets
//! ([`AuthzHistory`]) and keeps their guard tables current. Without history (a fresh builder,
//! `translate -f`) there are none.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::policy_filters::ListenerNeeds;
use crate::translate::ir::{DirectResponseIr, RouteActionIr, RouteIr, VirtualHostIr};

/// The ext_authz policies (`namespace/name`) routes with these needs use.
pub(super) fn required_policies(needs: &ListenerNeeds<'_>) -> BTreeSet<String> {
    needs.ext_auth.keys().cloned().collect()
}

fn ext_auth_policy(r: &RouteIr) -> Option<&str> {
    r.security
        .as_ref()
        .filter(|s| s.ext_auth.is_some())
        .map(|s| s.policy.as_str())
}

/// The route table of connection managers with the ext_authz filters of `policies`: `base`
/// itself without any (so listeners without external authorization keep their names), else
/// `base` tagged with a digest of the set.
pub(super) fn table_name(base: &str, policies: &BTreeSet<String>) -> String {
    if policies.is_empty() {
        return base.to_owned();
    }
    let joined: Vec<&str> = policies.iter().map(String::as_str).collect();
    format!(
        "{base}@authz-{}",
        crate::short_hash::short_sha256_hex(joined.join("\n").as_bytes(), 8)
    )
}

/// `v` as a chain with only the ext_authz filters of `available` must serve it: every route
/// needing another answers 503 instead. `None` when no route needs another.
pub(super) fn guarded_host(
    v: &VirtualHostIr,
    available: &BTreeSet<String>,
) -> Option<VirtualHostIr> {
    let unavailable = |r: &RouteIr| ext_auth_policy(r).is_some_and(|p| !available.contains(p));
    if !v.routes.iter().any(|r| unavailable(r)) {
        return None;
    }
    let routes = v
        .routes
        .iter()
        .map(|r| {
            if unavailable(r) {
                Arc::new(guarded_route(r))
            } else {
                Arc::clone(r)
            }
        })
        .collect();
    Some(VirtualHostIr {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes,
        // Guarded routes carry no policies; the others are the original's.
        policy_free: v.policy_free,
    })
}

/// `r`, matching the same requests, answering 503: the connection predates the filter the
/// route needs. Envoy is draining such connections, so the response closes it and the client's
/// next connection gets the current chain.
fn guarded_route(r: &RouteIr) -> RouteIr {
    RouteIr {
        action: RouteActionIr::DirectResponse(DirectResponseIr { status: 503 }),
        filters: Arc::default(),
        traffic: None,
        security: None,
        ..r.clone()
    }
}

/// How many earlier filter sets of a listener keep guard tables: one covers a single change
/// within a drain period; more cover changes in quick succession.
const REMEMBERED_SETS: usize = 3;

/// The ext_authz filter sets each route table base had recently, newest first.
#[derive(Debug, Default)]
pub(super) struct AuthzHistory {
    sets: HashMap<String, Vec<BTreeSet<String>>>,
}

impl AuthzHistory {
    /// Records that `base` now has `current`; returns the earlier sets still guarded.
    pub(super) fn record(&mut self, base: &str, current: &BTreeSet<String>) -> &[BTreeSet<String>] {
        let sets = self.sets.entry(base.to_owned()).or_default();
        if sets.first() != Some(current) {
            sets.retain(|s| s != current);
            sets.insert(0, current.clone());
            sets.truncate(1 + REMEMBERED_SETS);
        }
        &sets[1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, policy: Option<&str>) -> Arc<RouteIr> {
        let mut r = serde_json::json!({
            "name": name, "source": "n/r",
            "path": {"type": "prefix", "value": format!("/{name}")},
            "action": {"type": "direct_response", "status": 200},
        });
        if let Some(p) = policy {
            r["security"] = serde_json::json!({"policy": p, "ext_auth": {
                "service": {"type": "grpc"}, "cluster": "c", "timeout_ms": 1000}});
        }
        Arc::new(serde_json::from_value(r).expect("route"))
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn tables_are_named_after_their_filters() {
        assert_eq!(table_name("gw/80", &set(&[])), "gw/80");
        let one = table_name("gw/80", &set(&["n/a"]));
        assert!(one.starts_with("gw/80@authz-"), "{one}");
        assert_ne!(one, table_name("gw/80", &set(&["n/a", "n/b"])));
        assert_eq!(one, table_name("gw/80", &set(&["n/a"])));
    }

    #[test]
    fn routes_needing_a_missing_filter_answer_503_and_others_stay_shared() {
        let open = route("open", None);
        let a = route("a", Some("n/a"));
        let b = route("b", Some("n/b"));
        let host = VirtualHostIr {
            name: "h".into(),
            domains: vec!["h.test".into()],
            routes: vec![open.clone(), a.clone(), b.clone()],
            policy_free: false,
        };
        assert_eq!(
            required_policies(&ListenerNeeds::of(host.routes.iter().map(|r| &**r))),
            set(&["n/a", "n/b"])
        );
        assert!(guarded_host(&host, &set(&["n/a", "n/b"])).is_none());
        let guarded = guarded_host(&host, &set(&["n/a"])).expect("b is guarded");
        assert!(Arc::ptr_eq(&guarded.routes[0], &open));
        assert!(Arc::ptr_eq(&guarded.routes[1], &a));
        assert_eq!(
            guarded.routes[2].action,
            RouteActionIr::DirectResponse(DirectResponseIr { status: 503 })
        );
        assert_eq!(
            guarded.routes[2].path, b.path,
            "matches what the route matched"
        );
        assert!(guarded.routes[2].security.is_none());
    }

    #[test]
    fn history_keeps_the_last_few_earlier_sets() {
        let mut history = AuthzHistory::default();
        assert!(history.record("gw/80", &set(&[])).is_empty());
        assert!(history.record("gw/80", &set(&[])).is_empty(), "no change");
        assert_eq!(history.record("gw/80", &set(&["n/a"])), [set(&[])]);
        assert_eq!(
            history.record("gw/80", &set(&["n/a", "n/b"])),
            [set(&["n/a"]), set(&[])]
        );
        // Back to an earlier set: it is current again, not guarded.
        assert_eq!(
            history.record("gw/80", &set(&[])),
            [set(&["n/a", "n/b"]), set(&["n/a"])]
        );
        for i in 0..10 {
            history.record("gw/80", &set(&[&format!("n/{i}")]));
        }
        assert_eq!(
            history.record("gw/80", &set(&["n/9"])).len(),
            REMEMBERED_SETS
        );
        assert!(history.record("gw/443", &set(&["n/a"])).is_empty());
    }
}
