//! The operator's own RBAC, derived from what the code does (pure). The OLM bundle's
//! `clusterPermissions` and `permissions` are rendered from here, and an end-to-end test runs the
//! operator with exactly these rules, so the CSV cannot drift from the code.
//!
//! Sources: the kinds the pipeline reads, applies and prunes ([`ENVIRONMENT_KINDS`]), the
//! `EnvoyGateway` itself (watch, finalizer, status, ownerReferences that block deletion), the
//! Events it publishes, every rule it grants a control plane (Kubernetes refuses to let a
//! subject grant what it does not hold) and, in its own namespace, its leader-election Lease.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::build::control_plane_grantable_rules;
use super::dereference::{ENVIRONMENT_KINDS, api_resource};

/// Read, server-side apply (a patch), prune: what the pipeline does to every kind it owns.
const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
/// The group of the operator's own API.
const OPERATOR_GROUP: &str = "operator.gateway.envoyproxy.io";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Everything the operator does cluster-wide, before merging.
fn cluster_uses() -> Vec<PolicyRule> {
    let mut rules = vec![
        // The controller watches EnvoyGateways; the finalizer is added and removed by patch.
        rule(
            OPERATOR_GROUP,
            &["envoygateways"],
            &["get", "list", "watch", "patch"],
        ),
        // Status is written by server-side apply.
        rule(OPERATOR_GROUP, &["envoygateways/status"], &["patch"]),
        // Owned objects carry ownerReferences with blockOwnerDeletion.
        rule(OPERATOR_GROUP, &["envoygateways/finalizers"], &["update"]),
        // kube's Event recorder creates and then patches (series) events.k8s.io Events.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ];
    for (api_version, kind, _) in ENVIRONMENT_KINDS {
        let resource = api_resource(api_version, kind);
        rules.push(rule(&resource.group, &[&resource.plural], MANAGE));
    }
    rules.extend(control_plane_grantable_rules());
    rules
}

/// Rules without resourceNames, merged: one rule per API group and verb set, every list sorted,
/// so the rendered RBAC is stable and reviewable.
pub fn merge(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut verbs_of: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in rules {
        let PolicyRule {
            api_groups,
            resources,
            verbs,
            resource_names: _,
            non_resource_urls: _,
        } = r;
        for group in api_groups.iter().flatten() {
            for resource in resources.iter().flatten() {
                verbs_of
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    let mut grouped: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
    for ((group, resource), verbs) in verbs_of {
        grouped
            .entry((group, verbs.into_iter().collect()))
            .or_default()
            .push(resource);
    }
    grouped
        .into_iter()
        .map(|((group, verbs), resources)| PolicyRule {
            api_groups: Some(vec![group]),
            resources: Some(resources),
            verbs,
            ..PolicyRule::default()
        })
        .collect()
}

/// What the operator needs across the cluster (a ClusterRole; the CSV's `clusterPermissions`).
pub fn operator_cluster_rules() -> Vec<PolicyRule> {
    merge(&cluster_uses())
}

/// What the operator needs in its own namespace only (a Role; the CSV's `permissions`): the
/// leader-election Lease, read and then created or renewed.
pub fn operator_namespace_rules() -> Vec<PolicyRule> {
    merge(&[rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    #[test]
    fn cluster_rules_cover_every_owned_kind_and_every_grant() {
        let rules = operator_cluster_rules();
        for (api_version, kind, _) in ENVIRONMENT_KINDS {
            let ar = api_resource(api_version, kind);
            for verb in MANAGE {
                assert!(allows(&rules, &ar.group, &ar.plural, verb), "{kind} {verb}");
            }
        }
        for granted in control_plane_grantable_rules() {
            for group in granted.api_groups.iter().flatten() {
                for resource in granted.resources.iter().flatten() {
                    for verb in &granted.verbs {
                        assert!(
                            allows(&rules, group, resource, verb),
                            "{group}/{resource} {verb}"
                        );
                    }
                }
            }
        }
        assert!(allows(
            &rules,
            OPERATOR_GROUP,
            "envoygateways/status",
            "patch"
        ));
        assert!(!allows(&rules, "", "secrets", "update"));
        assert!(
            !rules
                .iter()
                .any(|r| r.verbs.iter().any(|v| v == "*" || v == "escalate"))
        );
    }

    #[test]
    fn merge_groups_by_api_group_and_verbs_and_is_sorted() {
        let merged = merge(&[
            rule("apps", &["deployments"], &["list", "get"]),
            rule("apps", &["deployments"], &["watch"]),
            rule("apps", &["daemonsets"], &["get", "list", "watch"]),
            rule("", &["secrets"], &["get"]),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].api_groups, Some(vec![String::new()]));
        assert_eq!(
            merged[1].resources,
            Some(vec!["daemonsets".to_owned(), "deployments".to_owned()])
        );
        assert_eq!(merged[1].verbs, vec!["get", "list", "watch"]);
    }
}
