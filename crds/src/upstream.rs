//! Upstream Envoy Gateway kinds (`gateway.envoyproxy.io/v1alpha1`) that eg-operator reads but
//! does not own: their CRDs are upstream's, installed as upstream ships them, so these types
//! are never rendered into `eg-crds.yaml`. Field names follow upstream exactly, so users'
//! manifests decode unchanged; fields this project does not act on yet are still accepted
//! (serde ignores unknown fields) rather than rejected.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Upstream's API group and version of its extension kinds.
pub const ENVOY_GATEWAY_API_VERSION: &str = "gateway.envoyproxy.io/v1alpha1";

/// `Backend`: endpoints outside Kubernetes Services, referenced from a route's backendRef with
/// `group: gateway.envoyproxy.io, kind: Backend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BackendSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Where traffic goes; upstream allows 1 to 64 entries.
    #[serde(default)]
    pub endpoints: Vec<BackendEndpoint>,
    /// `gateway.envoyproxy.io/h2c`, `gateway.envoyproxy.io/ws`, `gateway.envoyproxy.io/wss`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_protocols: Vec<String>,
}

/// Exactly one of `fqdn`, `ip`, `unix` (upstream validates this with CEL; the translator reports
/// an entry that breaks the rule).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<FqdnEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<UnixSocket>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnEndpoint {
    pub hostname: String,
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpEndpoint {
    pub address: String,
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnixSocket {
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_backend_manifest_decodes() {
        let b: Backend = serde_yaml_ng::from_str(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: n}\n\
             spec:\n  appProtocols: [gateway.envoyproxy.io/h2c]\n  endpoints:\n  - ip: {address: 127.0.0.1, port: 3000}\n  - fqdn: {hostname: api.example.com, port: 443}\n  - unix: {path: /run/app.sock}\n  fallback: false\n",
        )
        .expect("decodes");
        assert_eq!(b.spec.endpoints.len(), 3);
        assert_eq!(b.spec.endpoints[0].ip.as_ref().map(|i| i.port), Some(3000));
        assert_eq!(
            b.spec.endpoints[1]
                .fqdn
                .as_ref()
                .map(|f| f.hostname.as_str()),
            Some("api.example.com")
        );
        assert_eq!(
            b.spec.endpoints[2].unix.as_ref().map(|u| u.path.as_str()),
            Some("/run/app.sock")
        );
    }
}
