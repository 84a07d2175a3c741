//! Cross-namespace permission: ReferenceGrants (may an object reference one in another
//! namespace?) and listener `allowedRoutes.namespaces` policies (may a route from a namespace
//! attach?).
//!
//! Both answer "is this namespace boundary crossing allowed", and both must default to "no" —
//! which is why the checks live together and are written as whitelists.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::{
    GatewayListenersAllowedRoutesNamespaces, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector,
};
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::Namespace;

/// The Gateway API group.
pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The referencing side of a cross-namespace reference.
#[derive(Debug, Clone, Copy)]
pub(super) struct Referrer<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// The referenced side of a cross-namespace reference.
#[derive(Debug, Clone, Copy)]
pub(super) struct Referent<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Whether a reference is allowed: same-namespace references always are; others need a
/// ReferenceGrant *in the target namespace* whose `from` and `to` both match (a `to` without a
/// name grants every object of that kind).
pub(super) fn reference_allowed(
    grants: &[&ReferenceGrant],
    from: Referrer<'_>,
    to: Referent<'_>,
) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    grants.iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(to.namespace)
            && grant.spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            })
            && grant.spec.to.iter().any(|t| {
                t.group == to.group
                    && t.kind == to.kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to.name)
            })
    })
}

/// Why a label selector cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub(super) enum SelectorError {
    #[error("allowedRoutes.namespaces.selector must be set when from is Selector")]
    Missing,
    #[error("unknown label selector operator {0:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    #[error("label selector operator {operator} on key {key:?} {problem}")]
    BadValues {
        operator: String,
        key: String,
        problem: &'static str,
    },
}

impl SelectorError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Missing => "selector_missing",
            Self::UnknownOperator(_) | Self::BadValues { .. } => "selector_invalid",
        }
    }
}

/// One `matchExpressions` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A validated Kubernetes label selector (all terms ANDed; empty selects everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct LabelSelector {
    match_labels: BTreeMap<String, String>,
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    fn parse(
        selector: &GatewayListenersAllowedRoutesNamespacesSelector,
    ) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for expr in selector.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let bad = |problem| SelectorError::BadValues {
                operator: expr.operator.clone(),
                key: expr.key.clone(),
                problem,
            };
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => return Err(bad("needs values")),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad("must not have values"));
                }
                "In" => Requirement::In(expr.key.clone(), values),
                "NotIn" => Requirement::NotIn(expr.key.clone(), values),
                "Exists" => Requirement::Exists(expr.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(expr.key.clone()),
                other => return Err(SelectorError::UnknownOperator(other.to_owned())),
            };
            requirements.push(requirement);
        }
        Ok(Self {
            match_labels: selector.match_labels.clone().unwrap_or_default(),
            requirements,
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// Which namespaces a listener accepts routes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NamespacePolicy {
    /// Only the Gateway's namespace (the default).
    Same,
    All,
    Selector(LabelSelector),
    /// The policy is invalid: nothing may attach.
    Nothing,
}

impl NamespacePolicy {
    /// Reads `allowedRoutes.namespaces`. An invalid selector yields [`NamespacePolicy::Nothing`]
    /// together with the error to report on the listener.
    pub fn parse(
        namespaces: Option<&GatewayListenersAllowedRoutesNamespaces>,
    ) -> (Self, Option<SelectorError>) {
        let Some(namespaces) = namespaces else {
            return (Self::Same, None);
        };
        match namespaces.from {
            None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => (Self::Same, None),
            Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => (Self::All, None),
            Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
                match namespaces.selector.as_ref().map(LabelSelector::parse) {
                    None => (Self::Nothing, Some(SelectorError::Missing)),
                    Some(Err(e)) => (Self::Nothing, Some(e)),
                    Some(Ok(selector)) => (Self::Selector(selector), None),
                }
            }
        }
    }

    /// Whether a route in `route_namespace` may attach to a listener of a Gateway in
    /// `gateway_namespace`. Selectors need the Namespace object's labels; a namespace missing
    /// from the snapshot matches no selector (fail closed).
    pub fn allows(
        &self,
        gateway_namespace: &str,
        route_namespace: &str,
        namespace: Option<&Namespace>,
    ) -> bool {
        match self {
            Self::Same => gateway_namespace == route_namespace,
            Self::All => true,
            Self::Nothing => false,
            Self::Selector(selector) => namespace.is_some_and(|ns| {
                let empty = BTreeMap::new();
                selector.matches(ns.metadata.labels.as_ref().unwrap_or(&empty))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::apis::standard::gateways::GatewayListenersAllowedRoutesNamespacesSelectorMatchExpressions as Expr;
    use gateway_api::apis::standard::referencegrants::{
        ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
    };

    fn grant(ns: &str, from_ns: &str, to_name: Option<&str>) -> ReferenceGrant {
        let mut g = ReferenceGrant::new(
            "g",
            ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: GATEWAY_GROUP.into(),
                    kind: "HTTPRoute".into(),
                    namespace: from_ns.into(),
                }],
                to: vec![ReferenceGrantTo {
                    group: String::new(),
                    kind: "Service".into(),
                    name: to_name.map(str::to_owned),
                }],
            },
        );
        g.metadata.namespace = Some(ns.into());
        g
    }

    fn check(grants: &[&ReferenceGrant], from_ns: &str, to_ns: &str, name: &str) -> bool {
        reference_allowed(
            grants,
            Referrer {
                group: GATEWAY_GROUP,
                kind: "HTTPRoute",
                namespace: from_ns,
            },
            Referent {
                group: "",
                kind: "Service",
                namespace: to_ns,
                name,
            },
        )
    }

    #[test]
    fn reference_grants_must_live_in_the_target_namespace_and_match_both_sides() {
        let any_name = grant("backends", "apps", None);
        let one_name = grant("backends", "apps", Some("db"));
        let wrong_home = grant("apps", "apps", None);
        assert!(
            check(&[], "apps", "apps", "svc"),
            "same namespace needs no grant"
        );
        assert!(!check(&[], "apps", "backends", "svc"));
        assert!(check(&[&any_name], "apps", "backends", "svc"));
        assert!(!check(&[&any_name], "other", "backends", "svc"));
        assert!(check(&[&one_name], "apps", "backends", "db"));
        assert!(!check(&[&one_name], "apps", "backends", "svc"));
        assert!(!check(&[&wrong_home], "apps", "backends", "svc"));
    }

    #[test]
    fn selectors_evaluate_labels_and_reject_bad_operators() {
        let selector = GatewayListenersAllowedRoutesNamespacesSelector {
            match_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            match_expressions: Some(vec![Expr {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
        };
        let parsed = LabelSelector::parse(&selector).expect("valid selector");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(parsed.matches(&labels(&[("team", "a")])));
        assert!(parsed.matches(&labels(&[("team", "a"), ("env", "dev")])));
        assert!(!parsed.matches(&labels(&[("team", "a"), ("env", "prod")])));
        assert!(!parsed.matches(&labels(&[("team", "b")])));

        let bad = GatewayListenersAllowedRoutesNamespacesSelector {
            match_labels: None,
            match_expressions: Some(vec![Expr {
                key: "k".into(),
                operator: "Matches".into(),
                values: None,
            }]),
        };
        let err = LabelSelector::parse(&bad).expect_err("unknown operator");
        assert_eq!(err.category(), "selector_invalid");
    }
}
