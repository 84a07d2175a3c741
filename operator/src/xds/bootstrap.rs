//! Envoy bootstrap for a proxy of this control plane (pure): who the proxy is (node id and
//! cluster, which map it to its Gateway), where its admin listens, and how it reaches the xDS
//! server — ADS over gRPC, state-of-the-world or delta, with mutual TLS when certificates are
//! given. Everything else arrives over xDS.
//!
//! [`proxy_bootstrap`] is the bootstrap of a proxy in a fleet (a pod): on top of the above, the
//! client certificate and trust bundle come through SDS files (so a rotated Secret is picked up
//! without a restart), a readiness endpoint and Prometheus stats are served on their own
//! listeners, and the admin interface stays on loopback.

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
    /// A DNS name (a fleet proxy reaching the control-plane Service), resolved by Envoy.
    Dns {
        host: String,
        port: u16,
    },
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
        XdsAddress::Dns { host, port } => json!({"socket_address": {
            "address": host,
            "port_value": port
        }}),
    };
    // Every control-plane replica serves xDS, so a name resolving to several is fine.
    let cluster_type = match &spec.xds_server {
        XdsAddress::Dns { .. } => "STRICT_DNS",
        XdsAddress::Tcp(_) | XdsAddress::Unix(_) => "STATIC",
    };
    let mut xds_cluster = json!({
        "name": XDS_CLUSTER,
        "type": cluster_type,
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

/// Name of the SDS secret holding the proxy's xDS client certificate.
pub const SDS_CERTIFICATE: &str = "xds_client_certificate";
/// Name of the SDS secret holding the CA bundle the xDS server certificate is checked against.
pub const SDS_TRUSTED_CA: &str = "xds_trusted_ca";
/// File names of the SDS resources inside [`SdsTls::sds_dir`].
pub const SDS_CERTIFICATE_FILE: &str = "xds-certificate.json";
pub const SDS_TRUSTED_CA_FILE: &str = "xds-trusted-ca.json";
/// Path of the readiness endpoint.
pub const READY_PATH: &str = "/ready";
/// Path prefix of the Prometheus stats.
pub const STATS_PATH: &str = "/stats/prometheus";

/// mTLS to the xDS server through SDS files. `cert_dir` holds `tls.crt`, `tls.key` and `ca.crt`
/// (a mounted Secret); Kubernetes swaps the whole directory on an update (a rename of its
/// `..data` link), so Envoy watches the directory for moves, not the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsTls {
    /// Directory of the two SDS resource files ([`sds_files`]).
    pub sds_dir: String,
    pub cert_dir: String,
    /// Name the server certificate must carry (SNI and SAN check).
    pub server_name: String,
}

/// A fleet proxy's bootstrap. `base.tls` is ignored: `sds` replaces it.
#[derive(Debug, Clone)]
pub struct ProxyBootstrapSpec {
    pub base: BootstrapSpec,
    pub sds: Option<SdsTls>,
    /// Serves `GET /ready`: 200 while the proxy is live, 503 once it drains.
    pub readiness: SocketAddr,
    /// Serves `GET /stats/prometheus`, proxied to the loopback-only admin.
    pub stats: SocketAddr,
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn hcm(stat_prefix: &str, routes: Value, http_filters: Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"name": stat_prefix, "virtual_hosts": [{
                "name": stat_prefix, "domains": ["*"], "routes": routes
            }]},
            "http_filters": http_filters
        }
    })
}

const ROUTER: &str = "envoy.filters.http.router";

fn router() -> Value {
    json!({"name": ROUTER, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    }})
}

/// Name of the static cluster pointing at the admin interface (for the stats listener).
const ADMIN_CLUSTER: &str = "admin_loopback";

/// The bootstrap of a fleet proxy (see the module docs).
pub fn proxy_bootstrap(spec: &ProxyBootstrapSpec) -> Value {
    let ProxyBootstrapSpec {
        base,
        sds,
        readiness,
        stats,
    } = spec;
    let mut base = base.clone();
    base.tls = None;
    let mut b = bootstrap(&base);
    if let Some(sds) = sds {
        let source = |file: &str| {
            json!({
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": format!("{}/{file}", sds.sds_dir),
                }
            })
        };
        b["static_resources"]["clusters"][0]["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sds.server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificate_sds_secret_configs": [{
                        "name": SDS_CERTIFICATE,
                        "sds_config": source(SDS_CERTIFICATE_FILE)
                    }],
                    "combined_validation_context": {
                        "default_validation_context": {
                            "match_typed_subject_alt_names": [{
                                "san_type": "DNS",
                                "matcher": {"exact": sds.server_name}
                            }]
                        },
                        "validation_context_sds_secret_config": {
                            "name": SDS_TRUSTED_CA,
                            "sds_config": source(SDS_TRUSTED_CA_FILE)
                        }
                    }
                }
            }
        });
    }
    let ready = json!({
        "name": "ready",
        "address": socket_address(*readiness),
        "filter_chains": [{"filters": [hcm(
            "ready",
            json!([{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]),
            json!([
                {
                    // Answers itself: 200 while live, 503 once draining or failed.
                    "name": "envoy.filters.http.health_check",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                        "pass_through_mode": false,
                        "headers": [{"name": ":path", "string_match": {"exact": READY_PATH}}]
                    }
                },
                router()
            ]),
        )]}]
    });
    let stats_listener = json!({
        "name": "stats",
        "address": socket_address(*stats),
        "filter_chains": [{"filters": [hcm(
            "stats",
            // Only the Prometheus page of the admin is reachable from outside the pod.
            json!([{"match": {"prefix": STATS_PATH}, "route": {"cluster": ADMIN_CLUSTER}}]),
            json!([router()]),
        )]}]
    });
    b["static_resources"]["listeners"] = json!([ready, stats_listener]);
    if let Some(clusters) = b["static_resources"]["clusters"].as_array_mut() {
        clusters.push(json!({
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": ADMIN_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(base.admin)}}]}]
            }
        }));
    }
    b
}

/// The SDS resource files a fleet proxy reads, by file name: its client certificate and the CA
/// bundle, both pointing at the mounted Secret's files with a watch on its directory.
pub fn sds_files(sds: &SdsTls) -> Vec<(&'static str, Value)> {
    let secret_type = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    let file = |name: &str| json!({"filename": format!("{}/{name}", sds.cert_dir)});
    let watched = json!({"path": sds.cert_dir});
    vec![
        (
            SDS_CERTIFICATE_FILE,
            json!({"resources": [{
                "@type": secret_type,
                "name": SDS_CERTIFICATE,
                "tls_certificate": {
                    "certificate_chain": file("tls.crt"),
                    "private_key": file("tls.key"),
                    "watched_directory": watched
                }
            }]}),
        ),
        (
            SDS_TRUSTED_CA_FILE,
            json!({"resources": [{
                "@type": secret_type,
                "name": SDS_TRUSTED_CA,
                "validation_context": {
                    "trusted_ca": file("ca.crt"),
                    "watched_directory": watched
                }
            }]}),
        ),
    ]
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

    fn proxy_spec() -> ProxyBootstrapSpec {
        ProxyBootstrapSpec {
            base: spec(AdsFlavour::Delta, true),
            sds: Some(SdsTls {
                sds_dir: "/sds".into(),
                cert_dir: "/certs".into(),
                server_name: "eg.ns.svc".into(),
            }),
            readiness: "0.0.0.0:19003".parse().expect("addr"),
            stats: "0.0.0.0:19001".parse().expect("addr"),
        }
    }

    #[test]
    fn fleet_proxies_read_their_certificates_through_sds_files() {
        let b = proxy_bootstrap(&proxy_spec());
        let ctx = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"];
        assert!(ctx.get("tls_certificates").is_none(), "no inline files");
        assert_eq!(
            ctx["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"],
            "/sds/xds-certificate.json"
        );
        let files = sds_files(&proxy_spec().sds.expect("sds"));
        let cert = &files[0].1["resources"][0]["tls_certificate"];
        assert_eq!(cert["certificate_chain"]["filename"], "/certs/tls.crt");
        assert_eq!(cert["watched_directory"]["path"], "/certs");
    }

    #[test]
    fn fleet_proxies_serve_readiness_and_stats_and_keep_admin_on_loopback() {
        let b = proxy_bootstrap(&proxy_spec());
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
        let listeners = b["static_resources"]["listeners"]
            .as_array()
            .expect("listeners");
        let ports: Vec<_> = listeners
            .iter()
            .map(|l| l["address"]["socket_address"]["port_value"].clone())
            .collect();
        assert_eq!(ports, [json!(19003), json!(19001)]);
        let admin = &b["static_resources"]["clusters"][1];
        assert_eq!(admin["name"], ADMIN_CLUSTER);
    }
}
