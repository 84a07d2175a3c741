//! Reading a [`Snapshot`] from a multi-document YAML stream (`kubectl get -o yaml` output,
//! hand-written fixtures), for golden tests and the CLI.
//!
//! Documents are dispatched on `apiVersion` + `kind`; a `v1` `List` is unwrapped. Anything the
//! translator does not consume is an error naming the document, because silently skipping a
//! document would make a fixture test something other than what its author wrote.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::Snapshot;

/// Why a YAML stream cannot become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("document {index}: invalid YAML: {source}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("document {index}: missing {field}")]
    MissingField { index: usize, field: &'static str },
    #[error("document {index}: unsupported kind {kind} (apiVersion {api_version})")]
    UnknownKind {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {index}: invalid {kind}: {source}")]
    Decode {
        index: usize,
        kind: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

impl LoadError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Yaml { .. } => "yaml",
            Self::MissingField { .. } => "missing_field",
            Self::UnknownKind { .. } => "unknown_kind",
            Self::Decode { .. } => "decode",
        }
    }
}

/// Parses every document of `text` into a snapshot for `controller_name`. Documents are
/// numbered from 0 in stream order; empty documents are skipped but still counted.
///
/// # Errors
///
/// [`LoadError`] for invalid YAML, a document without `apiVersion`/`kind`, a kind the
/// translator does not consume, or an object that does not decode as its kind.
pub fn snapshot_from_yaml(controller_name: &str, text: &str) -> Result<Snapshot, LoadError> {
    let mut snapshot = Snapshot {
        controller_name: controller_name.to_owned(),
        ..Snapshot::default()
    };
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(document).map_err(|source| LoadError::Yaml { index, source })?;
        add(&mut snapshot, index, value)?;
    }
    Ok(snapshot)
}

fn add(snapshot: &mut Snapshot, index: usize, value: Value) -> Result<(), LoadError> {
    if value.is_null() {
        return Ok(());
    }
    let field = |name: &'static str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(LoadError::MissingField { index, field: name })
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind.as_str()) {
        // v1 and v1beta1 Gateway API objects share these shapes.
        ("gateway.networking.k8s.io", "GatewayClass") => {
            snapshot.gateway_classes.push(decode(index, &kind, value)?);
        }
        ("gateway.networking.k8s.io", "Gateway") => {
            snapshot.gateways.push(decode(index, &kind, value)?);
        }
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            snapshot.http_routes.push(decode(index, &kind, value)?);
        }
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            snapshot.reference_grants.push(decode(index, &kind, value)?);
        }
        ("", "Service") if api_version == "v1" => {
            snapshot.services.push(decode(index, &kind, value)?);
        }
        ("", "Secret") if api_version == "v1" => {
            snapshot.secrets.push(decode(index, &kind, value)?);
        }
        ("", "Namespace") if api_version == "v1" => {
            snapshot.namespaces.push(decode(index, &kind, value)?);
        }
        ("discovery.k8s.io", "EndpointSlice") if api_version == "discovery.k8s.io/v1" => {
            snapshot.endpoint_slices.push(decode(index, &kind, value)?);
        }
        ("", "List") if api_version == "v1" => {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for item in items {
                add(snapshot, index, item)?;
            }
        }
        _ => {
            return Err(LoadError::UnknownKind {
                index,
                api_version,
                kind,
            });
        }
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(
    index: usize,
    kind: &str,
    value: Value,
) -> Result<T, LoadError> {
    serde_yaml_ng::from_value(value).map_err(|source| LoadError::Decode {
        index,
        kind: kind.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_known_kinds_and_skips_empty_documents() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: GatewayClass
  metadata: {name: eg}
  spec: {controllerName: example.com/c}
";
        let snapshot = snapshot_from_yaml("example.com/c", text).expect("loads");
        assert_eq!(snapshot.namespaces.len(), 1);
        assert_eq!(snapshot.gateway_classes.len(), 1);
        assert_eq!(snapshot.controller_name, "example.com/c");
    }

    #[test]
    fn unknown_kinds_name_the_document() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
        let err = snapshot_from_yaml("c", text).expect_err("ConfigMap is not consumed");
        assert_eq!(err.category(), "unknown_kind");
        assert_eq!(
            err.to_string(),
            "document 1: unsupported kind ConfigMap (apiVersion v1)"
        );
    }

    #[test]
    fn malformed_objects_are_decode_errors() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {listeners: 3}\n";
        let err = snapshot_from_yaml("c", text).expect_err("bad spec");
        assert_eq!(err.category(), "decode");
        let err = snapshot_from_yaml("c", "kind: Gateway\n").expect_err("no apiVersion");
        assert_eq!(err.category(), "missing_field");
    }
}
