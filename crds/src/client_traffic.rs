//! Upstream Envoy Gateway's `ClientTrafficPolicy` (`gateway.envoyproxy.io/v1alpha1`): how a
//! Gateway's listeners treat downstream clients (TLS versions and client certificates, HTTP
//! protocol options, timeouts, connection limits, client IP detection, path normalisation).
//!
//! Upstream's field names, so users' manifests decode unchanged. As with the other policies
//! ([`crate::policies`]), every struct keeps what it does not model in `unsupported` and the
//! translator refuses a policy using any of it, naming the field: a listener that silently
//! skipped, say, client certificate validation would be open to anyone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policies::{PolicyTargets, TcpKeepalive, Unsupported};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `ClientTrafficPolicy`: settings of the listeners it targets (a Gateway or one listener).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ClientTrafficPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicySpec {
    #[serde(flatten)]
    pub targets: PolicyTargets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ClientTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ClientConnection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1: Option<Http1Settings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<Http2Settings>,
    /// Upstream's `http3` is an empty object today: its presence turns HTTP/3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http3: Option<Unsupported>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSettings>,
    #[serde(
        default,
        rename = "clientIPDetection",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ip_detection: Option<ClientIpDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_proxy_protocol: Option<bool>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// `Auto`, `1.0`, `1.1`, `1.2`, `1.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ciphers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature_algorithms: Vec<String>,
    /// `h2`, `http/1.1`, `http/1.0`; absent means upstream's default (`h2`, `http/1.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// Client certificate validation (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientValidation {
    /// When true a client without a certificate is let in; one with a certificate must still
    /// present a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Secrets or ConfigMaps whose `ca.crt` holds trusted CA certificates (PEM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificate_refs: Vec<CaCertificateRef>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

/// Gateway API's `SecretObjectReference` (kind `Secret` by default, or `ConfigMap`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<ClientHttpTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ClientTcpTimeout>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientHttpTimeout {
    /// Time allowed for the whole request to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_received_timeout: Option<String>,
    /// Idle time after which a connection without streams is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTcpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<ConnectionLimit>,
    /// A Kubernetes quantity (`32Ki`, `1Mi`, `1024`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_limit: Option<Value>,
    /// Connections accepted per socket event; 0 means no limit. Upstream's CRD defaults it
    /// to 1 whenever `connection` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_accept_per_socket_event: Option<u32>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimit {
    pub value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_delay: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Http1Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_trailers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_header_case: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http10: Option<Http10Settings>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Http10Settings {
    /// Serve HTTP/1.0 requests without a Host header as if for the listener's hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_host: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Http2Settings {
    /// Quantities, as `bufferLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_stream_window_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connection_window_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_client_cert: Option<XForwardedClientCert>,
    /// `PreserveOrGenerate`, `Preserve`, `Generate`, `Disable`.
    #[serde(default, rename = "requestID", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Older spelling of `requestID: PreserveOrGenerate`.
    #[serde(
        default,
        rename = "preserveXRequestID",
        skip_serializing_if = "Option::is_none"
    )]
    pub preserve_x_request_id: Option<bool>,
    /// `Allow`, `RejectRequest`, `DropHeader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_underscores_action: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XForwardedClientCert {
    /// `Sanitize`, `ForwardOnly`, `AppendForward`, `SanitizeSet`, `AlwaysForwardOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `Subject`, `Cert`, `Chain`, `DNS`, `URI` (for `AppendForward` and `SanitizeSet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_details_to_add: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_merge_slashes: Option<bool>,
    /// `KeepUnchanged`, `RejectRequest`, `UnescapeAndForward`, `UnescapeAndRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_slashes_action: Option<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<XForwardedFor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_header: Option<CustomHeaderIpDetection>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XForwardedFor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trusted_hops: Option<u32>,
    #[serde(
        default,
        rename = "trustedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trusted_cidrs: Vec<String>,
    #[serde(flatten)]
    pub unsupported: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomHeaderIpDetection {
    pub name: String,
    /// Refuse (403) requests whose header is missing or not an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_closed: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::unsupported_fields;

    #[test]
    fn upstream_manifest_decodes_and_keeps_unmodelled_fields() {
        let policy: ClientTrafficPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "https"},
                "tls": {"minVersion": "1.3", "clientValidation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "ca"}], "crl": {}}},
                "clientIPDetection": {"xForwardedFor": {"trustedCIDRs": ["10.0.0.0/8"]}},
                "headers": {"requestID": "Disable", "earlyRequestHeaders": {}},
                "http3": {},
                "healthCheck": {"path": "/ready"}
            }
        }))
        .expect("decodes");
        let spec = &policy.spec;
        assert_eq!(
            spec.targets
                .target_ref
                .as_ref()
                .and_then(|r| r.section_name.as_deref()),
            Some("https")
        );
        let tls = spec.tls.as_ref().expect("tls");
        assert_eq!(tls.min_version.as_deref(), Some("1.3"));
        let validation = tls.client_validation.as_ref().expect("validation");
        assert_eq!(
            validation.ca_certificate_refs[0].kind.as_deref(),
            Some("ConfigMap")
        );
        assert_eq!(
            unsupported_fields("spec.tls.clientValidation", &validation.unsupported),
            vec!["spec.tls.clientValidation.crl".to_owned()]
        );
        assert_eq!(
            spec.client_ip_detection
                .as_ref()
                .and_then(|c| c.x_forwarded_for.as_ref())
                .map(|x| x.trusted_cidrs.clone()),
            Some(vec!["10.0.0.0/8".to_owned()])
        );
        let headers = spec.headers.as_ref().expect("headers");
        assert_eq!(headers.request_id.as_deref(), Some("Disable"));
        assert!(headers.unsupported.contains_key("earlyRequestHeaders"));
        assert!(spec.http3.is_some());
        assert_eq!(
            unsupported_fields("spec", &spec.unsupported),
            vec!["spec.healthCheck".to_owned()]
        );
    }
}
