//! Reading a [`Snapshot`] from a multi-document YAML (or JSON) stream: `kubectl get -o yaml`
//! output, hand-written fixtures, the files of standalone mode.
//!
//! Documents are dispatched on `apiVersion` + `kind`; a `v1` `List` is unwrapped. Every error
//! names the line where the failing document starts (or where YAML broke), the object
//! (`Kind namespace/name`) and, for objects that do not decode, the field path — a user fixing
//! a file needs all three. Kinds this project knows but does not translate yet
//! (EnvoyProxy, …) are returned as [`Skipped`] so callers can say so;
//! anything else is an error, because silently dropping a document would make a fixture test
//! something other than what its author wrote.

use eg_crds::upstream::Backend;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::Snapshot;

/// Why a YAML stream cannot become a snapshot. `line` is 1-based, in the whole stream.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("line {line}: invalid YAML: {message}")]
    Yaml { line: usize, message: String },
    #[error("line {line}: document has no {field}")]
    MissingField { line: usize, field: &'static str },
    #[error("line {line}: {object}: unsupported kind (apiVersion {api_version})")]
    UnknownKind {
        line: usize,
        object: String,
        api_version: String,
    },
    #[error("line {line}: {object}: field {field}: {message}")]
    Decode {
        line: usize,
        object: String,
        field: String,
        message: String,
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

    /// The 1-based line the error points at.
    pub fn line(&self) -> usize {
        match self {
            Self::Yaml { line, .. }
            | Self::MissingField { line, .. }
            | Self::UnknownKind { line, .. }
            | Self::Decode { line, .. } => *line,
        }
    }
}

/// A document of a kind the project recognises but the translator does not consume yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    /// `Kind namespace/name`.
    pub object: String,
}

/// Parses every document of `text` into a snapshot for `controller_name`.
///
/// # Errors
///
/// The first [`LoadError`] of the stream: invalid YAML, a document without
/// `apiVersion`/`kind`, an unknown kind, or an object that does not decode as its kind.
pub fn snapshot_from_yaml(controller_name: &str, text: &str) -> Result<Snapshot, LoadError> {
    load_yaml(controller_name, text).map(|(snapshot, _)| snapshot)
}

/// [`snapshot_from_yaml`], also returning the documents recognised but not translated.
///
/// # Errors
///
/// As [`snapshot_from_yaml`].
pub fn load_yaml(controller_name: &str, text: &str) -> Result<(Snapshot, Vec<Skipped>), LoadError> {
    let mut snapshot = Snapshot {
        controller_name: controller_name.to_owned(),
        ..Snapshot::default()
    };
    let mut skipped = Vec::new();
    for_each_document(text, |document| add(&mut snapshot, &mut skipped, document))?;
    Ok((snapshot, skipped))
}

/// Calls `visit` with every object of a YAML/JSON stream, in order: empty documents are
/// skipped and the items of a `v1` `List` are visited one by one. Other loaders (the Ingress
/// migration) share this walk, and with it the line numbers and field paths of its errors.
///
/// # Errors
///
/// Invalid YAML, a document without `apiVersion`/`kind`, or the first error of `visit`.
pub fn for_each_document(
    text: &str,
    mut visit: impl FnMut(Document<'_>) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    for (start, document) in documents(text) {
        let value =
            Value::deserialize(serde_yaml_ng::Deserializer::from_str(document)).map_err(|e| {
                LoadError::Yaml {
                    line: start + e.location().map_or(0, |l| l.line().saturating_sub(1)),
                    message: strip_location(&e.to_string()),
                }
            })?;
        let source = Source::Text { start, document };
        walk(start, source, value, &mut visit)?;
    }
    Ok(())
}

/// Splits a stream at `---` lines: each document with the 1-based line it starts on. A
/// document parsed alone reports positions relative to itself; the start line makes them
/// positions in the file.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            out.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = number + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start_byte..]));
    out
}

/// Where a document's typed decode reads from: its own text (positions available) or, for
/// items of a `List`, the already-parsed value.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Text { start: usize, document: &'a str },
    Item,
}

fn walk(
    line: usize,
    source: Source<'_>,
    value: Value,
    visit: &mut impl FnMut(Document<'_>) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    if value.is_null() {
        return Ok(());
    }
    let field = |name: &'static str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(LoadError::MissingField { line, field: name })
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    if api_version == "v1" && kind == "List" {
        let items = value
            .get("items")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for item in items {
            walk(line, Source::Item, item, visit)?;
        }
        return Ok(());
    }
    let meta = |f: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(f))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let object = match (meta("namespace"), meta("name")) {
        (ns, name) if ns.is_empty() => format!("{kind} {name}"),
        (ns, name) => format!("{kind} {ns}/{name}"),
    };
    visit(Document {
        line,
        api_version,
        kind,
        object,
        source,
        value,
    })
}

/// One object of a stream, ready to be decoded as the type its `apiVersion` and `kind` name.
#[derive(Debug)]
pub struct Document<'a> {
    /// 1-based line the document starts on.
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    /// `Kind namespace/name`, for messages.
    pub object: String,
    source: Source<'a>,
    value: Value,
}

impl Document<'_> {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Decodes the object as `T`; errors carry the line, the object and the field path.
    ///
    /// # Errors
    ///
    /// [`LoadError::Decode`] when the object does not decode as `T`.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, LoadError> {
        Ctx {
            line: self.line,
            source: self.source,
            object: &self.object,
        }
        .decode(self.value)
    }

    /// The error for a kind the caller does not consume.
    pub fn unknown_kind(self) -> LoadError {
        LoadError::UnknownKind {
            line: self.line,
            object: self.object,
            api_version: self.api_version,
        }
    }
}

fn add(
    snapshot: &mut Snapshot,
    skipped: &mut Vec<Skipped>,
    document: Document<'_>,
) -> Result<(), LoadError> {
    let line = document.line;
    let group = document.group().to_owned();
    let kind = document.kind.clone();
    let core_v1 = document.api_version == "v1";
    match (group.as_str(), kind.as_str()) {
        // v1 and v1beta1 Gateway API objects share these shapes.
        ("gateway.networking.k8s.io", "GatewayClass") => {
            snapshot.gateway_classes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "Gateway") => snapshot.gateways.push(document.decode()?),
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            snapshot.http_routes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "GRPCRoute") => {
            snapshot.grpc_routes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "TLSRoute") => {
            snapshot.tls_routes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "TCPRoute") => {
            snapshot.tcp_routes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "UDPRoute") => {
            snapshot.udp_routes.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            snapshot.reference_grants.push(document.decode()?);
        }
        ("gateway.envoyproxy.io", "Backend") => {
            snapshot.backends.push(document.decode::<Backend>()?);
        }
        ("", "Service") if core_v1 => snapshot.services.push(document.decode()?),
        ("", "Secret") if core_v1 => snapshot.secrets.push(document.decode()?),
        ("", "Namespace") if core_v1 => snapshot.namespaces.push(document.decode()?),
        ("discovery.k8s.io", "EndpointSlice") if document.api_version == "discovery.k8s.io/v1" => {
            snapshot.endpoint_slices.push(document.decode()?);
        }
        ("gateway.networking.k8s.io", "BackendTLSPolicy") => {
            snapshot.backend_tls_policies.push(document.decode()?);
        }
        ("", "ConfigMap") if core_v1 => snapshot.config_maps.push(document.decode()?),
        ("gateway.envoyproxy.io", "BackendTrafficPolicy") => {
            snapshot.backend_traffic_policies.push(document.decode()?);
        }
        ("gateway.envoyproxy.io", "SecurityPolicy") => {
            snapshot.security_policies.push(document.decode()?);
        }
        ("gateway.envoyproxy.io", "ClientTrafficPolicy") => {
            snapshot.client_traffic_policies.push(document.decode()?);
        }
        ("gateway.envoyproxy.io", _) => skipped.push(Skipped {
            line,
            object: document.object,
        }),
        _ => return Err(document.unknown_kind()),
    }
    Ok(())
}

struct Ctx<'a> {
    line: usize,
    source: Source<'a>,
    object: &'a str,
}

impl Ctx<'_> {
    /// Decodes the document as `T`, keeping the path of the field that failed and, when the
    /// document's text is at hand, the line of that field.
    fn decode<T: DeserializeOwned>(&self, value: Value) -> Result<T, LoadError> {
        let error = |field: String, line: usize, e: &serde_yaml_ng::Error| {
            let message = strip_location(&e.to_string());
            // serde_yaml_ng prefixes its own path; the field is reported on its own.
            let message = message
                .strip_prefix(&format!("{field}: "))
                .map_or(message.clone(), str::to_owned);
            LoadError::Decode {
                line,
                object: self.object.to_owned(),
                field: if field == "." || field.is_empty() {
                    "(document)".to_owned()
                } else {
                    field
                },
                message,
            }
        };
        match self.source {
            Source::Text { start, document } => {
                serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(document))
                    .map_err(|e| {
                        let line = start
                            + e.inner()
                                .location()
                                .map_or(0, |l| l.line().saturating_sub(1));
                        error(e.path().to_string(), line, e.inner())
                    })
            }
            Source::Item => serde_path_to_error::deserialize(value)
                .map_err(|e| error(e.path().to_string(), self.line, e.inner())),
        }
    }
}

/// serde_yaml_ng appends "at line L column C" relative to the document; the error carries the
/// absolute line instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
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
    fn unknown_kinds_name_the_line_and_object() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: n}\n";
        let err = snapshot_from_yaml("c", text).expect_err("Deployment is not consumed");
        assert_eq!(err.category(), "unknown_kind");
        assert_eq!(
            err.to_string(),
            "line 5: Deployment n/b: unsupported kind (apiVersion apps/v1)"
        );
    }

    #[test]
    fn recognised_but_untranslated_kinds_are_reported_as_skipped() {
        let text = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy\nmetadata: {name: p, namespace: n}\n---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata: {name: c, namespace: n}\n";
        let (snapshot, skipped) = load_yaml("c", text).expect("loads");
        assert_eq!(snapshot.client_traffic_policies.len(), 1);
        assert_eq!(
            skipped,
            vec![Skipped {
                line: 5,
                object: "EnvoyProxy n/c".into()
            }]
        );
    }

    #[test]
    fn decode_errors_carry_line_object_and_field_path() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: apps
spec:
  rules:
  - matches:
    - path:
        type: Prefixx
        value: /
";
        let err = snapshot_from_yaml("c", text).expect_err("bad path type");
        assert_eq!(err.category(), "decode");
        assert_eq!(err.line(), 14, "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("line 14: HTTPRoute apps/r: field spec.rules[0].matches[0].path.type: unknown variant `Prefixx`"),
            "{message}"
        );
        let err = snapshot_from_yaml("c", "kind: Gateway\n").expect_err("no apiVersion");
        assert_eq!(err.category(), "missing_field");
    }

    #[test]
    fn yaml_syntax_errors_point_at_the_line_in_the_file() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [b\n";
        let err = snapshot_from_yaml("c", text).expect_err("broken flow sequence");
        assert_eq!(err.category(), "yaml");
        assert!(err.line() >= 7, "{err}");
    }

    #[test]
    fn backends_are_loaded() {
        let text = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: n}\nspec:\n  endpoints: [{ip: {address: 127.0.0.1, port: 9000}}]\n";
        let s = snapshot_from_yaml("c", text).expect("loads");
        assert_eq!(s.backends.len(), 1);
    }
}
