//! Envoy configuration for ClientTrafficPolicy (pure): what a listener's [`ClientTrafficIr`]
//! changes in its HTTP connection manager, its TLS context, its filter chains and the Envoy
//! listener itself.
//!
//! - The client CA of mutual TLS is served over SDS (`{policy}/client-ca`), so rotating a CA
//!   updates a secret and does not drain the listener.
//! - Settings Envoy holds per bound port (socket options, listener filters, buffer limits,
//!   the connection limit) come from the first listener of the port with a policy; the
//!   converter ([`super::from_ir`]) picks it.
//! - Client IP detection through trusted CIDRs or a custom header is an original IP detection
//!   extension, which Envoy does not combine with `use_remote_address` or a hop count; a hop
//!   count alone is the connection manager's own `xff_num_trusted_hops`.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    HeaderMutation as HeaderMutationRule, header_mutation,
};
use envoy_types::pb::envoy::config::core::v3::{
    CidrRange, HeaderValue, HeaderValueOption, Http1ProtocolOptions, Http2ProtocolOptions,
    Http3ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions, SocketOption,
    TransportSocket, UdpSocketConfig, address, header_value_option, http_protocol_options,
    http1_protocol_options, socket_address, socket_option, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener, ListenerFilter, QuicProtocolOptions, UdpListenerConfig, filter,
    listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::http::header_formatters::preserve_case::v3::PreserveCaseFormatterConfig;
use envoy_types::pb::envoy::extensions::http::original_ip_detection::custom_header::v3::CustomHeaderConfig;
use envoy_types::pb::envoy::extensions::http::original_ip_detection::xff::v3::{
    XffConfig, XffTrustedCidrs,
};
use envoy_types::pb::envoy::extensions::transport_sockets::quic::v3::QuicDownstreamTransport;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsParameters,
    common_tls_context, secret, tls_parameters,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value, UInt64Value};

use super::envoy_config::{ads_source, any, resource, socket_address};
use super::from_ir::inline_source;
use super::policy_config::millis;
use super::protocol::{SECRET, Snapshot};
use crate::translate::ir::{ClientIpIr, ClientTlsIr, ClientTrafficIr};

type TypedExtensionConfig = envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;

// Linux socket option numbers (the proxies run on Linux).
const SOL_SOCKET: i64 = 1;
const SO_KEEPALIVE: i64 = 9;
const IPPROTO_TCP: i64 = 6;
const TCP_KEEPIDLE: i64 = 4;
const TCP_KEEPINTVL: i64 = 5;
const TCP_KEEPCNT: i64 = 6;

/// The SDS name of a policy's client CA bundle.
pub fn client_ca_secret_name(policy: &str) -> String {
    format!("clienttrafficpolicy/{policy}/client-ca")
}

/// Applies the policy's HTTP settings to a connection manager.
pub fn apply_hcm(hcm: &mut HttpConnectionManager, c: &ClientTrafficIr) {
    hcm.request_timeout = c.request_received_timeout_ms.map(millis);
    if c.http_idle_timeout_ms.is_some() || c.with_underscores_action.is_some() {
        let common = hcm
            .common_http_protocol_options
            .get_or_insert_with(CommonHttpProtocolOptions::default);
        common.idle_timeout = c.http_idle_timeout_ms.map(millis);
        common.headers_with_underscores_action = match c.with_underscores_action.as_deref() {
            Some("RejectRequest") => {
                http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32
            }
            Some("DropHeader") => {
                http_protocol_options::HeadersWithUnderscoresAction::DropHeader as i32
            }
            _ => http_protocol_options::HeadersWithUnderscoresAction::Allow as i32,
        };
    }
    if let Some(h) = &c.http1 {
        hcm.http_protocol_options = Some(Http1ProtocolOptions {
            accept_http_10: h.accept_http_10,
            default_host_for_http_10: h.default_host_for_http_10.clone().unwrap_or_default(),
            enable_trailers: h.enable_trailers,
            header_key_format: h.preserve_header_case.then(|| {
                http1_protocol_options::HeaderKeyFormat {
                    header_format: Some(
                        http1_protocol_options::header_key_format::HeaderFormat::StatefulFormatter(
                            TypedExtensionConfig {
                                name: "preserve_case".into(),
                                typed_config: Some(any(&PreserveCaseFormatterConfig::default())),
                            },
                        ),
                    ),
                }
            }),
            ..Http1ProtocolOptions::default()
        });
    }
    if let Some(h) = &c.http2 {
        let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
        hcm.http2_protocol_options = Some(Http2ProtocolOptions {
            max_concurrent_streams: value(h.max_concurrent_streams),
            initial_stream_window_size: value(h.initial_stream_window_size),
            initial_connection_window_size: value(h.initial_connection_window_size),
            ..Http2ProtocolOptions::default()
        });
    }
    if let Some(x) = &c.xfcc {
        use http_connection_manager::ForwardClientCertDetails as Mode;
        let mode = match x.mode.as_str() {
            "ForwardOnly" => Mode::ForwardOnly,
            "AppendForward" => Mode::AppendForward,
            "SanitizeSet" => Mode::SanitizeSet,
            "AlwaysForwardOnly" => Mode::AlwaysForwardOnly,
            _ => Mode::Sanitize,
        };
        hcm.forward_client_cert_details = mode as i32;
        if matches!(mode, Mode::AppendForward | Mode::SanitizeSet) {
            let has = |d: &str| x.details.iter().any(|v| v == d);
            hcm.set_current_client_cert_details =
                Some(http_connection_manager::SetCurrentClientCertDetails {
                    subject: has("Subject").then_some(BoolValue { value: true }),
                    cert: has("Cert"),
                    chain: has("Chain"),
                    dns: has("DNS"),
                    uri: has("URI"),
                    ..Default::default()
                });
        }
    }
    if let Some(r) = c.request_id {
        hcm.generate_request_id = Some(BoolValue { value: r.generate });
        hcm.preserve_external_request_id = r.preserve;
    }
    if let Some(p) = &c.path {
        use http_connection_manager::PathWithEscapedSlashesAction as Action;
        hcm.normalize_path = Some(BoolValue { value: true });
        hcm.merge_slashes = p.merge_slashes;
        hcm.path_with_escaped_slashes_action = match p.escaped_slashes_action.as_str() {
            "KeepUnchanged" => Action::KeepUnchanged,
            "RejectRequest" => Action::RejectRequest,
            "UnescapeAndForward" => Action::UnescapeAndForward,
            _ => Action::UnescapeAndRedirect,
        } as i32;
    }
    match &c.client_ip {
        None => {}
        Some(ClientIpIr::XffHops { hops }) => {
            hcm.use_remote_address = Some(BoolValue { value: true });
            hcm.xff_num_trusted_hops = *hops;
        }
        Some(ClientIpIr::XffCidrs { cidrs }) => {
            let cidrs = cidrs
                .iter()
                .filter_map(|c| crate::translate::parse_cidr(c).ok())
                .map(|(ip, len)| CidrRange {
                    address_prefix: ip.to_string(),
                    prefix_len: Some(UInt32Value { value: len }),
                })
                .collect();
            hcm.original_ip_detection_extensions = vec![TypedExtensionConfig {
                name: "envoy.extensions.http.original_ip_detection.xff".into(),
                typed_config: Some(any(&XffConfig {
                    xff_trusted_cidrs: Some(XffTrustedCidrs { cidrs }),
                    ..XffConfig::default()
                })),
            }];
        }
        Some(ClientIpIr::CustomHeader { name, fail_closed }) => {
            hcm.original_ip_detection_extensions = vec![TypedExtensionConfig {
                name: "envoy.extensions.http.original_ip_detection.custom_header".into(),
                typed_config: Some(any(&CustomHeaderConfig {
                    header_name: name.clone(),
                    reject_with_status: fail_closed.then_some(HttpStatus { code: 403 }),
                    ..CustomHeaderConfig::default()
                })),
            }];
        }
    }
}

/// Advertises HTTP/3 on `port` to clients of a TCP connection manager: an `alt-svc` response
/// header, added by a header mutation filter just before the router.
pub fn advertise_http3(hcm: &mut HttpConnectionManager, port: u16) {
    let alt_svc = HeaderMutationRule {
        action: Some(header_mutation::Action::Append(HeaderValueOption {
            header: Some(HeaderValue {
                key: "alt-svc".into(),
                value: format!("h3=\":{port}\"; ma=86400"),
                ..HeaderValue::default()
            }),
            append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..HeaderValueOption::default()
        })),
    };
    let filter = HttpFilter {
        name: "envoy.filters.http.header_mutation".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&HeaderMutation {
            mutations: Some(Mutations {
                response_mutations: vec![alt_svc],
                ..Mutations::default()
            }),
            ..HeaderMutation::default()
        }))),
        ..HttpFilter::default()
    };
    // The router is last.
    let at = hcm.http_filters.len().saturating_sub(1);
    hcm.http_filters.insert(at, filter);
}

/// Turns a connection manager into one serving HTTP/3 (for a QUIC listener).
pub fn serve_http3(hcm: &mut HttpConnectionManager) {
    hcm.codec_type = http_connection_manager::CodecType::Http3 as i32;
    hcm.http3_protocol_options = Some(Http3ProtocolOptions::default());
    // WebSocket upgrades are an HTTP/1.1 mechanism.
    hcm.upgrade_configs.clear();
}

/// The QUIC transport socket around a listener's TLS context.
pub fn quic_transport(tls: DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.quic".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &QuicDownstreamTransport {
                downstream_tls_context: Some(tls),
                ..QuicDownstreamTransport::default()
            },
        ))),
    }
}

/// A QUIC (UDP) listener on `bind` with the given filter chains.
pub fn quic_listener(name: &str, bind: SocketAddr, filter_chains: Vec<FilterChain>) -> Listener {
    let mut address = socket_address(bind);
    if let Some(address::Address::SocketAddress(a)) = address.address.as_mut() {
        a.protocol = socket_address::Protocol::Udp as i32;
    }
    Listener {
        name: name.to_owned(),
        address: Some(address),
        udp_listener_config: Some(UdpListenerConfig {
            quic_options: Some(QuicProtocolOptions::default()),
            downstream_socket_config: Some(UdpSocketConfig {
                prefer_gro: Some(BoolValue { value: true }),
                ..UdpSocketConfig::default()
            }),
            ..UdpListenerConfig::default()
        }),
        filter_chains,
        ..Listener::default()
    }
}

/// Network filters the policy puts in front of a chain's own (the connection limit).
pub fn network_filters(c: Option<&ClientTrafficIr>, stat_prefix: &str) -> Vec<Filter> {
    c.and_then(|c| c.connection_limit.as_ref())
        .map(|l| Filter {
            name: "envoy.filters.network.connection_limit".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(&ConnectionLimit {
                stat_prefix: stat_prefix.to_owned(),
                max_connections: Some(UInt64Value {
                    value: l.max_connections,
                }),
                delay: l.close_delay_ms.map(millis),
                ..ConnectionLimit::default()
            }))),
        })
        .into_iter()
        .collect()
}

/// Applies the policy's per-port settings to an Envoy listener: PROXY protocol (first of the
/// listener filters: it must read the header before TLS inspection), buffer limit, accepts per
/// socket event and TCP keepalive socket options.
pub fn apply_listener(listener: &mut Listener, c: &ClientTrafficIr) {
    if c.proxy_protocol {
        listener.listener_filters.insert(
            0,
            ListenerFilter {
                name: "envoy.filters.listener.proxy_protocol".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &ProxyProtocol::default(),
                ))),
                ..ListenerFilter::default()
            },
        );
    }
    listener.per_connection_buffer_limit_bytes =
        c.buffer_limit_bytes.map(|value| UInt32Value { value });
    listener.max_connections_to_accept_per_socket_event = c
        .max_accept_per_socket_event
        .map(|value| UInt32Value { value });
    if let Some(k) = &c.tcp_keepalive {
        let option = |description: &str, level: i64, name: i64, value: i64| SocketOption {
            description: description.to_owned(),
            level,
            name,
            value: Some(socket_option::Value::IntValue(value)),
            state: socket_option::SocketState::StateListening as i32,
            ..SocketOption::default()
        };
        listener
            .socket_options
            .push(option("SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1));
        if let Some(idle) = k.idle_time_s {
            listener.socket_options.push(option(
                "TCP_KEEPIDLE",
                IPPROTO_TCP,
                TCP_KEEPIDLE,
                i64::from(idle),
            ));
        }
        if let Some(interval) = k.interval_s {
            listener.socket_options.push(option(
                "TCP_KEEPINTVL",
                IPPROTO_TCP,
                TCP_KEEPINTVL,
                i64::from(interval),
            ));
        }
        if let Some(probes) = k.probes {
            listener.socket_options.push(option(
                "TCP_KEEPCNT",
                IPPROTO_TCP,
                TCP_KEEPCNT,
                i64::from(probes),
            ));
        }
    }
}

/// Applies the policy's TLS settings to a listener's TLS context; a client CA goes into
/// `snap` as an SDS secret.
pub fn apply_tls(
    snap: &mut Snapshot,
    context: &mut DownstreamTlsContext,
    policy: &str,
    t: &ClientTlsIr,
) {
    let common = context
        .common_tls_context
        .get_or_insert_with(Default::default);
    let version = |v: Option<&str>| {
        use tls_parameters::TlsProtocol as P;
        let protocol = match v {
            Some("TLSv1_0") => P::TlSv10,
            Some("TLSv1_1") => P::TlSv11,
            Some("TLSv1_2") => P::TlSv12,
            Some("TLSv1_3") => P::TlSv13,
            _ => P::TlsAuto,
        };
        protocol as i32
    };
    let params = TlsParameters {
        tls_minimum_protocol_version: version(t.min_version.as_deref()),
        tls_maximum_protocol_version: version(t.max_version.as_deref()),
        cipher_suites: t.ciphers.clone(),
        ecdh_curves: t.ecdh_curves.clone(),
        signature_algorithms: t.signature_algorithms.clone(),
        ..TlsParameters::default()
    };
    if params != TlsParameters::default() {
        common.tls_params = Some(params);
    }
    if let Some(alpn) = &t.alpn_protocols {
        common.alpn_protocols = alpn.clone();
    }
    if let Some(v) = &t.client_validation {
        let name = client_ca_secret_name(policy);
        let ca = Secret {
            name: name.clone(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline_source(&v.ca_pem)),
                    ..CertificateValidationContext::default()
                },
            )),
        };
        snap.insert(SECRET, resource(&name, &ca));
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                SdsSecretConfig {
                    name,
                    sds_config: Some(ads_source()),
                },
            ),
        );
        context.require_client_certificate = Some(BoolValue { value: !v.optional });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::{
        ClientValidationIr, ConnectionLimitIr, PathNormalizationIr, RequestIdIr, TcpKeepaliveIr,
    };

    #[test]
    fn mutual_tls_requires_a_certificate_unless_optional_and_serves_the_ca_over_sds() {
        let mut snap = Snapshot::new("1");
        let mut context = DownstreamTlsContext::default();
        let tls = ClientTlsIr {
            min_version: Some("TLSv1_3".into()),
            client_validation: Some(ClientValidationIr {
                ca_pem: "PEM".into(),
                optional: false,
            }),
            ..ClientTlsIr::default()
        };
        apply_tls(&mut snap, &mut context, "n/p", &tls);
        assert_eq!(
            context.require_client_certificate,
            Some(BoolValue { value: true })
        );
        let common = context.common_tls_context.expect("common");
        assert_eq!(
            common.tls_params.map(|p| p.tls_minimum_protocol_version),
            Some(tls_parameters::TlsProtocol::TlSv13 as i32)
        );
        assert!(matches!(
            common.validation_context_type,
            Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(ref s))
                if s.name == "clienttrafficpolicy/n/p/client-ca"
        ));
        assert!(
            snap.resources
                .get(SECRET)
                .is_some_and(|r| r.contains_key("clienttrafficpolicy/n/p/client-ca"))
        );

        let mut optional = DownstreamTlsContext::default();
        let mut tls = tls;
        if let Some(v) = tls.client_validation.as_mut() {
            v.optional = true;
        }
        apply_tls(&mut snap, &mut optional, "n/p", &tls);
        assert_eq!(
            optional.require_client_certificate,
            Some(BoolValue { value: false })
        );
    }

    #[test]
    fn connection_manager_settings() {
        let c = ClientTrafficIr {
            request_received_timeout_ms: Some(1500),
            request_id: Some(RequestIdIr {
                preserve: false,
                generate: false,
            }),
            path: Some(PathNormalizationIr {
                merge_slashes: true,
                escaped_slashes_action: "RejectRequest".into(),
            }),
            client_ip: Some(ClientIpIr::XffHops { hops: 2 }),
            with_underscores_action: Some("DropHeader".into()),
            ..ClientTrafficIr::default()
        };
        let mut hcm = HttpConnectionManager::default();
        apply_hcm(&mut hcm, &c);
        assert_eq!(hcm.request_timeout, Some(millis(1500)));
        assert_eq!(hcm.generate_request_id, Some(BoolValue { value: false }));
        assert!(hcm.merge_slashes);
        assert_eq!(
            hcm.path_with_escaped_slashes_action,
            http_connection_manager::PathWithEscapedSlashesAction::RejectRequest as i32
        );
        assert_eq!(hcm.use_remote_address, Some(BoolValue { value: true }));
        assert_eq!(hcm.xff_num_trusted_hops, 2);
        assert_eq!(
            hcm.common_http_protocol_options
                .map(|o| o.headers_with_underscores_action),
            Some(http_protocol_options::HeadersWithUnderscoresAction::DropHeader as i32)
        );

        // Detection extensions exclude use_remote_address (Envoy refuses the mix).
        let mut hcm = HttpConnectionManager::default();
        apply_hcm(
            &mut hcm,
            &ClientTrafficIr {
                client_ip: Some(ClientIpIr::XffCidrs {
                    cidrs: vec!["10.0.0.0/8".into()],
                }),
                ..ClientTrafficIr::default()
            },
        );
        assert_eq!(hcm.use_remote_address, None);
        assert_eq!(hcm.original_ip_detection_extensions.len(), 1);
    }

    #[test]
    fn listener_settings() {
        let c = ClientTrafficIr {
            proxy_protocol: true,
            buffer_limit_bytes: Some(32768),
            tcp_keepalive: Some(TcpKeepaliveIr {
                probes: Some(3),
                idle_time_s: Some(60),
                interval_s: None,
            }),
            connection_limit: Some(ConnectionLimitIr {
                max_connections: 10,
                close_delay_ms: None,
            }),
            ..ClientTrafficIr::default()
        };
        let mut listener = Listener {
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                ..ListenerFilter::default()
            }],
            ..Listener::default()
        };
        apply_listener(&mut listener, &c);
        assert_eq!(
            listener.listener_filters[0].name,
            "envoy.filters.listener.proxy_protocol"
        );
        assert_eq!(
            listener.per_connection_buffer_limit_bytes,
            Some(UInt32Value { value: 32768 })
        );
        let names: Vec<&str> = listener
            .socket_options
            .iter()
            .map(|o| o.description.as_str())
            .collect();
        assert_eq!(names, ["SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPCNT"]);
        assert_eq!(network_filters(Some(&c), "l").len(), 1);
        assert!(network_filters(None, "l").is_empty());
    }
}
