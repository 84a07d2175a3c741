//! Identity of a Kubernetes object: group, version, kind, namespace and name.
//!
//! Every other part of the engine (graph nodes, plan steps, the live/desired match) keys on
//! [`ObjectRef`], so its ordering is the one deterministic order the engine uses everywhere and
//! its `Display` is the one human-readable name that appears in errors and rendered plans.

use std::fmt;

use serde_json::Value;

/// Errors from reading an object's identity out of its JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectRefError {
    #[error("object is not a JSON map")]
    NotAnObject,
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("invalid apiVersion {0:?}: expected \"version\" or \"group/version\"")]
    InvalidApiVersion(String),
}

impl ObjectRefError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ObjectRefError::NotAnObject => "not_an_object",
            ObjectRefError::MissingField(_) => "missing_field",
            ObjectRefError::InvalidApiVersion(_) => "invalid_api_version",
        }
    }
}

/// Identity of one Kubernetes object. `namespace` is `None` for cluster-scoped objects.
///
/// The derived ordering (group, version, kind, namespace, name) is what makes waves, plans and
/// error messages deterministic.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference from an `apiVersion` as written in manifests: `"apps/v1"` is group
    /// `apps`, version `v1`; `"v1"` is the core group (`""`).
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        let (group, version) = split_api_version(api_version);
        ObjectRef {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.filter(|ns| !ns.is_empty()).map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// Reads `apiVersion`, `kind`, `metadata.namespace` and `metadata.name` from an object.
    ///
    /// An empty string counts as missing: the API server rejects such objects, so accepting them
    /// here would only defer the failure to the executor.
    pub fn from_object(obj: &Value) -> Result<Self, ObjectRefError> {
        if !obj.is_object() {
            return Err(ObjectRefError::NotAnObject);
        }
        let api_version = required_str(obj, &["apiVersion"], "apiVersion")?;
        let kind = required_str(obj, &["kind"], "kind")?;
        let name = required_str(obj, &["metadata", "name"], "metadata.name")?;
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty());
        let (group, version) = split_api_version(api_version);
        if version.is_empty()
            || version.contains('/')
            || (api_version.contains('/') && group.is_empty())
        {
            return Err(ObjectRefError::InvalidApiVersion(api_version.to_owned()));
        }
        Ok(ObjectRef::new(api_version, kind, namespace, name))
    }

    /// The `apiVersion` string this reference was parsed from (inverse of [`ObjectRef::new`]).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

fn required_str<'a>(
    obj: &'a Value,
    path: &[&str],
    field: &'static str,
) -> Result<&'a str, ObjectRefError> {
    let mut cur = obj;
    for key in path {
        cur = cur.get(key).ok_or(ObjectRefError::MissingField(field))?;
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .ok_or(ObjectRefError::MissingField(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_splits_group_and_version() {
        let apps = ObjectRef::new("apps/v1", "Deployment", Some("ns"), "d");
        assert_eq!(apps.group, "apps");
        assert_eq!(apps.version, "v1");
        assert_eq!(apps.api_version(), "apps/v1");

        let core = ObjectRef::new("v1", "ConfigMap", Some("ns"), "c");
        assert_eq!(core.group, "");
        assert_eq!(core.version, "v1");
        assert_eq!(core.api_version(), "v1");
    }

    #[test]
    fn empty_namespace_is_cluster_scoped() {
        let r = ObjectRef::new("v1", "Namespace", Some(""), "eg");
        assert_eq!(r.namespace, None);
    }

    #[test]
    fn from_object_reads_identity() {
        let obj = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "eg-production-controller"},
        });
        let r = ObjectRef::from_object(&obj).expect("valid object");
        assert_eq!(
            r,
            ObjectRef::new(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                "eg-production-controller"
            )
        );

        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "eg-controller", "namespace": "eg-production"},
        });
        let r = ObjectRef::from_object(&obj).expect("valid object");
        assert_eq!(r.namespace.as_deref(), Some("eg-production"));
    }

    #[test]
    fn from_object_names_the_missing_field() {
        let cases = [
            (
                json!({"kind": "X", "metadata": {"name": "n"}}),
                "apiVersion",
            ),
            (
                json!({"apiVersion": "v1", "metadata": {"name": "n"}}),
                "kind",
            ),
            (json!({"apiVersion": "v1", "kind": "X"}), "metadata.name"),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": {}}),
                "metadata.name",
            ),
            (
                json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": ""}}),
                "metadata.name",
            ),
            (
                json!({"apiVersion": 1, "kind": "X", "metadata": {"name": "n"}}),
                "apiVersion",
            ),
        ];
        for (obj, field) in cases {
            let err = ObjectRef::from_object(&obj).expect_err("field is missing");
            assert_eq!(err, ObjectRefError::MissingField(field), "{obj}");
            assert_eq!(err.category(), "missing_field");
            assert_eq!(err.to_string(), format!("object has no {field}"));
        }
    }

    #[test]
    fn from_object_rejects_bad_input() {
        assert_eq!(
            ObjectRef::from_object(&json!([1])),
            Err(ObjectRefError::NotAnObject)
        );
        for bad in ["a/b/c", "/v1", "apps/"] {
            let obj = json!({"apiVersion": bad, "kind": "X", "metadata": {"name": "n"}});
            let err = ObjectRef::from_object(&obj).expect_err("invalid apiVersion");
            assert_eq!(err, ObjectRefError::InvalidApiVersion(bad.to_owned()));
            assert_eq!(err.category(), "invalid_api_version");
        }
    }

    #[test]
    fn display_is_kind_then_namespace_and_name() {
        assert_eq!(
            ObjectRef::new(
                "apps/v1",
                "Deployment",
                Some("eg-production"),
                "eg-controller"
            )
            .to_string(),
            "Deployment eg-production/eg-controller"
        );
        assert_eq!(
            ObjectRef::new(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                "eg-production-controller"
            )
            .to_string(),
            "ClusterRole eg-production-controller"
        );
    }

    #[test]
    fn ordering_is_total_and_field_wise() {
        let a = ObjectRef::new("v1", "ConfigMap", Some("ns"), "a");
        let b = ObjectRef::new("v1", "Secret", Some("ns"), "b");
        let cluster = ObjectRef::new("v1", "ConfigMap", None, "z");
        assert!(a < b);
        assert!(cluster < a, "None namespace sorts before Some");
    }

    #[test]
    fn serde_round_trip() {
        let r = ObjectRef::new("apps/v1", "Deployment", Some("ns"), "d");
        let text = serde_json::to_string(&r).expect("serializes");
        let back: ObjectRef = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, r);
    }
}
