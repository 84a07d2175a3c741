//! GRPCRoute, TLSRoute, TCPRoute and UDPRoute, each seen as the HTTPRoute that routes the same
//! traffic, so attachment, ReferenceGrants, backend resolution, precedence, status and the
//! incremental cache are one code path for every kind (upstream Envoy Gateway also lowers
//! gRPC routes into its HTTP route IR).
//!
//! - A GRPCRoute method match becomes a path match on `/{service}/{method}`: Exact with both
//!   names, a PathPrefix `/{service}` for a whole service, a regular expression otherwise.
//!   Header matches, filters, backendRefs and rule names carry over unchanged: GRPCRoute's are
//!   a subset of HTTPRoute's with the same shapes.
//! - TLSRoute, TCPRoute and UDPRoute rules keep only their backendRefs (with weights); their
//!   hostnames (TLSRoute: SNI names) are the route's hostnames. On TLS, TCP and UDP listeners
//!   the IR's virtual hosts are then SNI names (TLS) or the single `*` (TCP, UDP), and the
//!   first entry of each carries the connections.
//!
//! The conversion is structural (JSON to JSON) so a field added to both kinds upstream cannot be
//! silently dropped by a hand-written copy.

use gateway_api::apis::experimental::tcproutes::TcpRoute;
use gateway_api::apis::experimental::udproutes::UdpRoute;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::tlsroutes::TlsRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

/// Why a route cannot be seen as an HTTPRoute. Only a spec the API server would have rejected
/// gets here (a hand-written file, say).
#[derive(Debug, thiserror::Error)]
#[error("{kind} {key}: {problem}")]
pub struct ConversionError {
    pub kind: &'static str,
    pub key: String,
    pub problem: String,
}

impl ConversionError {
    pub fn category(&self) -> &'static str {
        "invalid_route"
    }
}

pub(super) fn grpc(route: &GrpcRoute) -> Result<HttpRoute, ConversionError> {
    let fail = |problem: String| ConversionError {
        kind: "GRPCRoute",
        key: super::object_key(&route.metadata),
        problem,
    };
    let mut spec = serde_json::to_value(&route.spec).map_err(|e| fail(e.to_string()))?;
    for rule in rules_mut(&mut spec) {
        let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) else {
            continue;
        };
        for m in matches {
            let Some(m) = m.as_object_mut() else { continue };
            if let Some(method) = m.remove("method") {
                m.insert("path".into(), method_path(&method));
            }
        }
    }
    http_route(&route.metadata, spec).map_err(fail)
}

pub(super) fn tls(route: &TlsRoute) -> Result<HttpRoute, ConversionError> {
    stream(
        "TLSRoute",
        &route.metadata,
        serde_json::to_value(&route.spec),
    )
}

pub(super) fn tcp(route: &TcpRoute) -> Result<HttpRoute, ConversionError> {
    stream(
        "TCPRoute",
        &route.metadata,
        serde_json::to_value(&route.spec),
    )
}

pub(super) fn udp(route: &UdpRoute) -> Result<HttpRoute, ConversionError> {
    stream(
        "UDPRoute",
        &route.metadata,
        serde_json::to_value(&route.spec),
    )
}

/// A TLS/TCP/UDP route: parentRefs, hostnames and each rule's name and backendRefs.
fn stream(
    kind: &'static str,
    meta: &ObjectMeta,
    spec: Result<Value, serde_json::Error>,
) -> Result<HttpRoute, ConversionError> {
    let fail = |problem: String| ConversionError {
        kind,
        key: super::object_key(meta),
        problem,
    };
    let mut spec = spec.map_err(|e| fail(e.to_string()))?;
    for rule in rules_mut(&mut spec) {
        if let Some(rule) = rule.as_object_mut() {
            rule.retain(|field, _| field == "name" || field == "backendRefs");
        }
    }
    http_route(meta, spec).map_err(fail)
}

fn rules_mut(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    spec.get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn http_route(meta: &ObjectMeta, spec: Value) -> Result<HttpRoute, String> {
    Ok(HttpRoute {
        metadata: meta.clone(),
        spec: serde_json::from_value(spec).map_err(|e| e.to_string())?,
        status: None,
    })
}

/// The HTTPRoute path match equivalent to a GRPCRoute method match.
fn method_path(method: &Value) -> Value {
    let field = |name: &str| {
        method
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (service, name) = (field("service"), field("method"));
    let regex = field("type") == Some("RegularExpression");
    if regex {
        let service = service.unwrap_or("[^/]+");
        let name = name.unwrap_or("[^/]+");
        return json!({"type": "RegularExpression", "value": format!("/{service}/{name}")});
    }
    match (service, name) {
        (Some(service), Some(name)) => {
            json!({"type": "Exact", "value": format!("/{service}/{name}")})
        }
        (Some(service), None) => json!({"type": "PathPrefix", "value": format!("/{service}")}),
        (None, Some(name)) => {
            json!({"type": "RegularExpression", "value": format!("/[^/]+/{}", regex_escape(name))})
        }
        // The CRD requires one of them; matching every method is the only sensible reading.
        (None, None) => json!({"type": "PathPrefix", "value": "/"}),
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_route(yaml: &str) -> GrpcRoute {
        serde_yaml_ng::from_str(yaml).expect("GRPCRoute")
    }

    fn paths(route: &HttpRoute) -> Vec<(String, String)> {
        route
            .spec
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.matches.iter().flatten())
            .filter_map(|m| m.path.as_ref())
            .map(|p| {
                (
                    format!("{:?}", p.r#type.clone().expect("type")),
                    p.value.clone().expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn method_matches_become_the_equivalent_path_matches() {
        let route = grpc_route(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: r, namespace: apps}
spec:
  rules:
  - matches:
    - method: {service: echo.v1.Echo, method: Ping}
    - method: {service: echo.v1.Echo}
    - method: {method: Ping}
    - method: {type: RegularExpression, service: "echo\\..*", method: "P.*"}
    - method: {type: RegularExpression, method: "Get.*"}
      headers: [{name: x-tenant, value: a}]
    backendRefs: [{name: svc, port: 9000, weight: 3}]
"#,
        );
        let http = grpc(&route).expect("converts");
        assert_eq!(
            paths(&http),
            vec![
                ("Exact".to_owned(), "/echo.v1.Echo/Ping".to_owned()),
                ("PathPrefix".to_owned(), "/echo.v1.Echo".to_owned()),
                ("RegularExpression".to_owned(), "/[^/]+/Ping".to_owned()),
                ("RegularExpression".to_owned(), "/echo\\..*/P.*".to_owned()),
                ("RegularExpression".to_owned(), "/[^/]+/Get.*".to_owned()),
            ]
        );
        let rule = &http.spec.rules.as_ref().expect("rules")[0];
        let headers = rule.matches.as_ref().expect("matches")[4]
            .headers
            .as_ref()
            .expect("headers");
        assert_eq!(headers[0].name, "x-tenant");
        assert_eq!(rule.backend_refs.as_ref().expect("refs")[0].weight, Some(3));
    }

    #[test]
    fn stream_routes_keep_hostnames_and_weighted_backends_only() {
        let route: TlsRoute = serde_yaml_ng::from_str(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: t, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [a.example.com]
  rules:
  - backendRefs: [{name: a, port: 443, weight: 9}, {name: b, port: 443}]
"#,
        )
        .expect("TLSRoute");
        let http = tls(&route).expect("converts");
        assert_eq!(http.spec.hostnames, Some(vec!["a.example.com".to_owned()]));
        assert_eq!(
            http.spec.parent_refs.as_ref().expect("parents")[0]
                .section_name
                .as_deref(),
            Some("tls")
        );
        let refs = http.spec.rules.as_ref().expect("rules")[0]
            .backend_refs
            .as_ref()
            .expect("refs");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].weight, Some(9));
        assert_eq!(http.metadata.name.as_deref(), Some("t"));
    }
}
