//! Envoy bootstrap for a proxy of this control plane (pure): who the proxy is (node id and
//! cluster, which map it to its Gateway), where its admin listens, and how it reaches the xDS
//! server — ADS over gRPC, state-of-the-world or delta, with mutual TLS when certificates are
//! given. Everything else arrives over xDS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Which ADS flavour the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdsFlavour {
    StateOfTheWorld,
    Delta,
}

/// Files holding the proxy's client certificate and the CA that signs the xDS server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTlsFiles {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    /// Name the server certificate must carry (SNI and SAN check).
    pub server_name: String,
}

/// Where the xDS server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsAddress {
    Tcp(SocketAddr),
    /// A Unix domain socket (standalone mode: reachable only by local processes that may open
    /// the file, so it needs no TLS).
    Unix(PathBuf),
}

impl From<SocketAddr> for XdsAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

/// What a bootstrap needs.
#[derive(Debug, Clone)]
pub struct BootstrapSpec {
    /// Unique per proxy (the pod name in a cluster).
    pub node_id: String,
    /// `namespace/gateway`: the Gateway this proxy serves.
    pub node_cluster: String,
    pub admin: SocketAddr,
    pub xds_server: XdsAddress,
    pub flavour: AdsFlavour,
    pub tls: Option<XdsTlsFiles>,
}

/// Name of the bootstrap's static cluster that points at the xDS server.
pub const XDS_CLUSTER: &str = "xds_cluster";

/// The bootstrap as JSON (Envoy accepts JSON for `--config-path` files ending in .json, and YAML
/// is a superset of JSON).
pub fn bootstrap(spec: &BootstrapSpec) -> Value {
    let api_type = match spec.flavour {
        AdsFlavour::StateOfTheWorld => "GRPC",
        AdsFlavour::Delta => "DELTA_GRPC",
    };
    let xds_address = match &spec.xds_server {
        XdsAddress::Tcp(addr) => json!({"socket_address": {
            "address": addr.ip().to_string(),
            "port_value": addr.port()
        }}),
        XdsAddress::Unix(path) => json!({"pipe": {"path": path.display().to_string()}}),
    };
    let mut xds_cluster = json!({
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    // xDS streams live for hours; keepalives find dead peers.
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                }}
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": xds_address}}]}]
        }
    });
    if let Some(tls) = &spec.tls {
        xds_cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tls.server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": tls.client_cert},
                        "private_key": {"filename": tls.client_key}
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": tls.ca_cert},
                        "match_typed_subject_alt_names": [{
                            "san_type": "DNS",
                            "matcher": {"exact": tls.server_name}
                        }]
                    }
                }
            }
        });
    }
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    json!({
        "node": {"id": spec.node_id, "cluster": spec.node_cluster},
        "admin": {"address": {"socket_address": {
            "address": spec.admin.ip().to_string(),
            "port_value": spec.admin.port()
        }}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
            },
            "cds_config": ads_source,
            "lds_config": ads_source
        },
        "static_resources": {"clusters": [xds_cluster]},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            // Proxies are shared by many tenants' routes; never let one request exhaust memory.
            "overload.global_downstream_max_connections": 50000
        }}]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(flavour: AdsFlavour, tls: bool) -> BootstrapSpec {
        BootstrapSpec {
            node_id: "proxy-0".into(),
            node_cluster: "shop/public".into(),
            admin: "127.0.0.1:0".parse().expect("addr"),
            xds_server: XdsAddress::Tcp("127.0.0.9:18000".parse().expect("addr")),
            flavour,
            tls: tls.then(|| XdsTlsFiles {
                ca_cert: "/certs/ca.crt".into(),
                client_cert: "/certs/tls.crt".into(),
                client_key: "/certs/tls.key".into(),
                server_name: "eg.ns.svc".into(),
            }),
        }
    }

    #[test]
    fn flavour_selects_the_ads_api_type() {
        let sotw = bootstrap(&spec(AdsFlavour::StateOfTheWorld, false));
        let delta = bootstrap(&spec(AdsFlavour::Delta, false));
        assert_eq!(sotw["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        assert_eq!(
            delta["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(sotw["node"]["cluster"], "shop/public");
        let endpoint = &sotw["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
            ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(endpoint["address"], "127.0.0.9");
        assert_eq!(endpoint["port_value"], 18000);
        assert!(
            sotw["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
    }

    #[test]
    fn a_unix_socket_becomes_a_pipe_address() {
        let mut s = spec(AdsFlavour::Delta, false);
        s.xds_server = XdsAddress::Unix("/run/eg/xds.sock".into());
        let b = bootstrap(&s);
        let address = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"];
        assert_eq!(address["pipe"]["path"], "/run/eg/xds.sock");
    }

    #[test]
    fn tls_files_become_an_mtls_transport_socket() {
        let b = bootstrap(&spec(AdsFlavour::Delta, true));
        let ctx = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(ctx["sni"], "eg.ns.svc");
        assert_eq!(
            ctx["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"],
            "/certs/tls.crt"
        );
        assert_eq!(
            ctx["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]
                ["exact"],
            "eg.ns.svc"
        );
    }
}
