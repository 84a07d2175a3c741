//! The translator's IR to Envoy resources (pure): one [`Snapshot`] per Gateway.
//!
//! - One Envoy listener per port. HTTP ports get one filter chain whose routes come from RDS
//!   (`{gateway}/{port}`); HTTPS ports get one filter chain per Gateway listener, chosen by SNI,
//!   with certificates delivered by SDS and their own route table (`{gateway}/{port}/{listener}`),
//!   so the routes of one hostname can never answer for another.
//! - Clusters keep the IR's names, which derive from backend identity: reordering rules or
//!   adding a route never renames, and so never drains, a live cluster.
//! - Not yet converted (left for their issue): CORS, backendRef-level header filters, and the
//!   500 share for `invalid_weight` (invalid backends are dropped from the split instead).
//!
//! Route tables dominate the cost: a Gateway with thousands of hostnames has one route table of
//! megabytes, in which a route with five hostnames appears five times. So [`SnapshotBuilder`]
//! encodes each distinct route entry and each virtual host once and splices the route table
//! from those encodings (a protobuf message is the concatenation of its encoded fields), and it
//! keeps them from one snapshot to the next for the entries and virtual hosts the translator
//! handed over unchanged (same `Arc`). The bytes are exactly those of encoding the whole table
//! in one go, so versions do not depend on what was cached.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Http2ProtocolOptions, RuntimeFractionalPercent,
    TransportSocket, header_value_option, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::envoy_config::{
    ads_source, any, eds_cluster, encoded, hostname_address, load_assignment_of, pipe_address,
    resource, socket_address,
};
use super::protocol::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Resource, SECRET, Snapshot};
use crate::translate::ir::{
    ClusterIr, EndpointIr, ForwardIr, GatewayIr, HeaderModifierIr, ListenerIr, ListenerProtocol,
    PathMatchIr, PathModifierIr, RedirectIr, RouteActionIr, RouteIr, StringMatchIr,
    UpstreamProtocol, VirtualHostIr,
};

/// Where the proxies bind their listeners.
#[derive(Debug, Clone, Copy)]
pub struct ListenerBinding {
    /// `0.0.0.0` in a pod; a loopback address in tests and standalone mode.
    pub ip: IpAddr,
    /// Added to every Gateway port, so unprivileged processes can serve ports below 1024
    /// (0 in a pod).
    pub port_offset: u16,
}

/// Envoy's snapshot for one Gateway, versioned by `version`.
pub fn snapshot(gateway: &GatewayIr, binding: ListenerBinding, version: &str) -> Snapshot {
    SnapshotBuilder::default().build(gateway, binding, version)
}

/// Builds Envoy snapshots, remembering the encodings of route entries, virtual hosts and route
/// tables between calls (see the module docs). Entries unused by a build are dropped at its
/// end, so the memory held is that of the latest snapshots' route tables.
///
/// `build` returns exactly what [`snapshot`] returns. Encodings are found by the address of
/// the IR's `Arc`s, which the builder keeps alive, so an address cannot be reused for other
/// content while it is cached.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    routes: Generations<RouteIr>,
    virtual_hosts: Generations<VirtualHostIr>,
    /// Route tables by name, with the virtual hosts they were spliced from.
    tables: HashMap<String, (Vec<Arc<VirtualHostIr>>, Resource)>,
}

/// Encodings keyed by the address of the IR they encode, kept while builds use them.
#[derive(Debug)]
struct Generations<T> {
    previous: HashMap<usize, (Arc<T>, Arc<[u8]>)>,
    current: HashMap<usize, (Arc<T>, Arc<[u8]>)>,
}

impl<T> Default for Generations<T> {
    fn default() -> Self {
        Self {
            previous: HashMap::new(),
            current: HashMap::new(),
        }
    }
}

impl<T> Generations<T> {
    fn get_or_encode(&mut self, item: &Arc<T>, encode: impl FnOnce(&T) -> Vec<u8>) -> Arc<[u8]> {
        // The address is only a lookup key; the stored `Arc` keeps it from being reused.
        let key = Arc::as_ptr(item) as usize;
        if let Some((_, bytes)) = self.current.get(&key) {
            return bytes.clone();
        }
        let bytes = match self.previous.remove(&key) {
            Some((_, bytes)) => bytes,
            None => Arc::from(encode(item)),
        };
        self.current.insert(key, (item.clone(), bytes.clone()));
        bytes
    }

    /// Ends a build: what it did not use is dropped.
    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Envoy's snapshot for one Gateway, versioned by `version`; equal to [`snapshot`]'s.
    pub fn build(
        &mut self,
        gateway: &GatewayIr,
        binding: ListenerBinding,
        version: &str,
    ) -> Snapshot {
        let mut snap = Snapshot::new(version);
        for (port, listeners) in gateway.ports() {
            let bind = SocketAddr::new(binding.ip, port.saturating_add(binding.port_offset));
            let listener_name = format!("{}/{port}", gateway.name);
            match listeners.first().map(|l| l.protocol) {
                Some(ListenerProtocol::Http) | None => {
                    let route_name = listener_name.clone();
                    let vhosts: Vec<&Arc<VirtualHostIr>> = listeners
                        .iter()
                        .flat_map(|l| l.virtual_hosts.iter())
                        .collect();
                    snap.insert(ROUTE, self.route_table(&route_name, &vhosts));
                    let chain = FilterChain {
                        filters: vec![hcm_filter(&listener_name, &route_name)],
                        ..FilterChain::default()
                    };
                    snap.insert(
                        LISTENER,
                        resource(
                            &listener_name,
                            &listener(&listener_name, bind, vec![chain], false),
                        ),
                    );
                }
                Some(ListenerProtocol::Https) => {
                    let mut chains = Vec::new();
                    for l in &listeners {
                        let route_name = format!("{listener_name}/{}", l.name);
                        let vhosts: Vec<&Arc<VirtualHostIr>> = l.virtual_hosts.iter().collect();
                        snap.insert(ROUTE, self.route_table(&route_name, &vhosts));
                        chains.push(https_chain(&mut snap, &route_name, l));
                    }
                    snap.insert(
                        LISTENER,
                        resource(
                            &listener_name,
                            &listener(&listener_name, bind, chains, true),
                        ),
                    );
                }
            }
        }
        add_clusters(&mut snap, gateway);
        snap
    }

    /// Ends a round of builds (one per Gateway): encodings no build of the round used are
    /// dropped. Without it the builder only grows.
    pub fn finish_round(&mut self) {
        self.routes.rotate();
        self.virtual_hosts.rotate();
        let live: std::collections::HashSet<usize> =
            self.virtual_hosts.previous.keys().copied().collect();
        self.tables.retain(|_, (vhosts, _)| {
            vhosts
                .iter()
                .all(|v| live.contains(&(Arc::as_ptr(v) as usize)))
        });
    }

    /// The route table `name` serving `vhosts`: `route_table(name, vhosts)` encoded, spliced
    /// from per-virtual-host encodings (fields 1 and 14 around the repeated field 2).
    fn route_table(&mut self, name: &str, vhosts: &[&Arc<VirtualHostIr>]) -> Resource {
        if let Some((built_from, resource)) = self.tables.get(name)
            && built_from.len() == vhosts.len()
            && built_from
                .iter()
                .zip(vhosts)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            let resource = resource.clone();
            // Keep the encodings of its virtual hosts (and their routes) current.
            for v in vhosts {
                self.virtual_host_bytes(v);
            }
            return resource;
        }
        let encodings: Vec<Arc<[u8]>> = vhosts.iter().map(|v| self.virtual_host_bytes(v)).collect();
        let head = route_table(name, Vec::new()).encode_to_vec();
        let tail = RouteConfiguration {
            ignore_port_in_host_matching: true,
            ..RouteConfiguration::default()
        }
        .encode_to_vec();
        let name_only = RouteConfiguration {
            name: name.to_owned(),
            ..RouteConfiguration::default()
        }
        .encode_to_vec();
        debug_assert_eq!(head, [name_only.as_slice(), tail.as_slice()].concat());
        let size = head.len() + encodings.iter().map(|e| e.len() + 10).sum::<usize>();
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(&name_only);
        for e in &encodings {
            put_message(&mut body, ROUTE_CONFIGURATION_VIRTUAL_HOSTS, e);
        }
        body.extend_from_slice(&tail);
        let resource = encoded(name, body);
        self.tables.insert(
            name.to_owned(),
            (
                vhosts.iter().map(|v| Arc::clone(v)).collect(),
                resource.clone(),
            ),
        );
        resource
    }

    /// `virtual_host(v)` encoded: name and domains, then each route's encoding (field 3).
    fn virtual_host_bytes(&mut self, v: &Arc<VirtualHostIr>) -> Arc<[u8]> {
        let routes = &mut self.routes;
        if let Some((_, bytes)) = self.virtual_hosts.current.get(&(Arc::as_ptr(v) as usize)) {
            return bytes.clone();
        }
        self.virtual_hosts.get_or_encode(v, |v| {
            let mut body = VirtualHost {
                name: v.name.clone(),
                domains: v.domains.clone(),
                ..VirtualHost::default()
            }
            .encode_to_vec();
            for r in &v.routes {
                let bytes = routes.get_or_encode(r, |r| route_of(r).encode_to_vec());
                put_message(&mut body, VIRTUAL_HOST_ROUTES, &bytes);
            }
            body
        })
    }
}

/// `RouteConfiguration.virtual_hosts`.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
/// `VirtualHost.routes`.
const VIRTUAL_HOST_ROUTES: u32 = 3;

/// Appends an embedded message field, as prost encodes one.
fn put_message(out: &mut Vec<u8>, tag: u32, encoded: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(encoded.len() as u64, out);
    out.extend_from_slice(encoded);
}

/// Every cluster of the Gateway, with its endpoints: over EDS, or inline for DNS clusters.
fn add_clusters(snap: &mut Snapshot, gateway: &GatewayIr) {
    for (name, cluster) in &gateway.clusters {
        let addresses: Vec<Address> = cluster.endpoints.iter().filter_map(address_of).collect();
        let mut envoy = envoy_cluster(cluster);
        if cluster
            .endpoints
            .iter()
            .any(|e| matches!(e, EndpointIr::Hostname { .. }))
        {
            // Hostnames are resolved by Envoy: a DNS cluster carries its endpoints inline.
            envoy.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
            envoy.eds_cluster_config = None;
            envoy.load_assignment = Some(load_assignment_of(name, addresses));
            snap.insert(CLUSTER, resource(name, &envoy));
        } else {
            snap.insert(CLUSTER, resource(name, &envoy));
            snap.insert(
                ENDPOINT,
                resource(name, &load_assignment_of(name, addresses)),
            );
        }
    }
}

fn address_of(e: &EndpointIr) -> Option<Address> {
    match e {
        EndpointIr::Ip { ip, port } => ip
            .parse::<IpAddr>()
            .ok()
            .map(|ip| socket_address(SocketAddr::new(ip, *port))),
        EndpointIr::Hostname { hostname, port } => Some(hostname_address(hostname, *port)),
        EndpointIr::Unix { path } => Some(pipe_address(path)),
    }
}

fn listener(name: &str, bind: SocketAddr, filter_chains: Vec<FilterChain>, tls: bool) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(bind)),
        filter_chains,
        listener_filters: if tls {
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &TlsInspector::default(),
                ))),
                ..ListenerFilter::default()
            }]
        } else {
            Vec::new()
        },
        ..Listener::default()
    }
}

fn hcm_filter(stat_prefix: &str, route_name: &str) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..HttpFilter::default()
        }],
        // Backends with appProtocol kubernetes.io/ws(s) need upgrades; others never ask.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..http_connection_manager::UpgradeConfig::default()
        }],
        ..HttpConnectionManager::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

fn https_chain(snap: &mut Snapshot, route_name: &str, l: &ListenerIr) -> FilterChain {
    let certificates = l
        .tls
        .as_ref()
        .map(|t| t.certificates.as_slice())
        .unwrap_or(&[]);
    let mut sds = Vec::new();
    for cert in certificates {
        let secret = Secret {
            name: cert.secret.clone(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&cert.cert_pem)),
                private_key: Some(inline(&cert.key_pem)),
                ..TlsCertificate::default()
            })),
        };
        snap.insert(SECRET, resource(&cert.secret, &secret));
        sds.push(SdsSecretConfig {
            name: cert.secret.clone(),
            sds_config: Some(ads_source()),
        });
    }
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: sds,
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..CommonTlsContext::default()
        }),
        ..DownstreamTlsContext::default()
    };
    FilterChain {
        filter_chain_match: l.hostname.as_ref().map(|h| FilterChainMatch {
            server_names: vec![h.clone()],
            ..FilterChainMatch::default()
        }),
        filters: vec![hcm_filter(route_name, route_name)],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
        }),
        ..FilterChain::default()
    }
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.to_owned())),
        ..DataSource::default()
    }
}

fn route_table(name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts,
        // Gateway API: a request on the wrong listener must not be served by another's routes.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..RegexMatcher::default()
    }
}

fn string_match(m: &StringMatchIr) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match m {
            StringMatchIr::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
            StringMatchIr::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
        }),
        ..StringMatcher::default()
    }
}

fn header_matcher(name: &str, m: &StringMatchIr) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_match(m),
        )),
        ..HeaderMatcher::default()
    }
}

fn route_match_of(r: &RouteIr) -> RouteMatch {
    let path = match &r.path {
        PathMatchIr::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatchIr::Prefix(p) if p == "/" => route_match::PathSpecifier::Prefix(p.clone()),
        PathMatchIr::Prefix(p) => route_match::PathSpecifier::PathSeparatedPrefix(p.clone()),
        PathMatchIr::Regex(p) => route_match::PathSpecifier::SafeRegex(regex(p)),
    };
    let mut headers: Vec<HeaderMatcher> = r
        .headers
        .iter()
        .map(|h| header_matcher(&h.name, &h.value))
        .collect();
    if let Some(method) = &r.method {
        headers.push(header_matcher(
            ":method",
            &StringMatchIr::Exact(method.clone()),
        ));
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: r
            .query
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_match(&q.value),
                    ),
                ),
            })
            .collect(),
        ..RouteMatch::default()
    }
}

fn header_options(m: &HeaderModifierIr) -> (Vec<HeaderValueOption>, Vec<String>) {
    let option = |name: &str, value: &str, action: header_value_option::HeaderAppendAction| {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: name.to_owned(),
                value: value.to_owned(),
                ..HeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        }
    };
    let mut add: Vec<HeaderValueOption> = m
        .set
        .iter()
        .map(|h| {
            option(
                &h.name,
                &h.value,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .collect();
    add.extend(m.add.iter().map(|h| {
        option(
            &h.name,
            &h.value,
            header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
        )
    }));
    (add, m.remove.clone())
}

fn millis(ms: u64) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn forward(f: &ForwardIr, r: &RouteIr) -> RouteAction {
    let cluster_specifier = match f.backends.as_slice() {
        [single] => route_action::ClusterSpecifier::Cluster(single.cluster.clone()),
        many => route_action::ClusterSpecifier::WeightedClusters(
            envoy_types::pb::envoy::config::route::v3::WeightedCluster {
                clusters: many
                    .iter()
                    .map(|b| {
                        envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight {
                            name: b.cluster.clone(),
                            weight: Some(UInt32Value { value: b.weight }),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            },
        ),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        ..RouteAction::default()
    };
    if let Some(rewrite) = &r.filters.url_rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
            );
        }
        match &rewrite.path {
            Some(PathModifierIr::ReplacePrefixMatch(p)) => action.prefix_rewrite = p.clone(),
            Some(PathModifierIr::ReplaceFullPath(p)) => {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("^/.*$")),
                    substitution: p.clone(),
                });
            }
            None => {}
        }
    }
    action.request_mirror_policies = r
        .filters
        .mirrors
        .iter()
        .map(|m| route_action::RequestMirrorPolicy {
            cluster: m.cluster.clone(),
            runtime_fraction: (m.numerator != m.denominator).then(|| RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: m.numerator.saturating_mul(1_000_000 / m.denominator.max(1)),
                    denominator: fractional_percent::DenominatorType::Million as i32,
                }),
                ..RuntimeFractionalPercent::default()
            }),
            ..route_action::RequestMirrorPolicy::default()
        })
        .collect();
    if let Some(t) = &r.filters.timeouts {
        if let Some(ms) = t.request_ms {
            action.timeout = Some(millis(ms));
        }
        if let Some(ms) = t.backend_request_ms {
            action.retry_policy = Some(RetryPolicy {
                per_try_timeout: Some(millis(ms)),
                num_retries: Some(UInt32Value { value: 0 }),
                ..RetryPolicy::default()
            });
        }
    }
    action
}

fn redirect(r: &RedirectIr) -> RedirectAction {
    let default_port = match r.scheme.as_deref() {
        Some("https") => 443,
        _ => 80,
    };
    RedirectAction {
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: if r.port == default_port {
            0
        } else {
            u32::from(r.port)
        },
        response_code: match r.status_code {
            301 => redirect_action::RedirectResponseCode::MovedPermanently,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::Found,
        } as i32,
        scheme_rewrite_specifier: r
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r.path.as_ref().map(|p| match p {
            PathModifierIr::ReplaceFullPath(p) => {
                redirect_action::PathRewriteSpecifier::PathRedirect(p.clone())
            }
            PathModifierIr::ReplacePrefixMatch(p) => {
                redirect_action::PathRewriteSpecifier::PrefixRewrite(p.clone())
            }
        }),
        ..RedirectAction::default()
    }
}

fn route_of(r: &RouteIr) -> Route {
    let action = match &r.action {
        RouteActionIr::Forward(f) => route::Action::Route(forward(f, r)),
        RouteActionIr::Redirect(rd) => route::Action::Redirect(redirect(rd)),
        RouteActionIr::DirectResponse(d) => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(d.status),
            ..DirectResponseAction::default()
        }),
    };
    let (request_headers_to_add, request_headers_to_remove) = r
        .filters
        .request_headers
        .as_ref()
        .map(header_options)
        .unwrap_or_default();
    let (response_headers_to_add, response_headers_to_remove) = r
        .filters
        .response_headers
        .as_ref()
        .map(header_options)
        .unwrap_or_default();
    Route {
        name: r.name.clone(),
        r#match: Some(route_match_of(r)),
        action: Some(action),
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        ..Route::default()
    }
}

fn envoy_cluster(c: &ClusterIr) -> Cluster {
    let mut cluster = eds_cluster(&c.name);
    if c.protocol == UpstreamProtocol::H2c {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..HttpProtocolOptions::default()
        };
        cluster.typed_extension_protocol_options = BTreeMap::from([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&options),
        )])
        .into_iter()
        .collect();
    }
    cluster
}
