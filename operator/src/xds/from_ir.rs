//! The translator's IR to Envoy resources (pure): one [`Snapshot`] per Gateway.
//!
//! - One Envoy listener per port. HTTP ports get one filter chain whose routes come from RDS
//!   (`{gateway}/{port}`); HTTPS ports get one filter chain per Gateway listener, chosen by SNI,
//!   with certificates delivered by SDS and their own route table (`{gateway}/{port}/{listener}`),
//!   so the routes of one hostname can never answer for another. A table read by connection
//!   managers with ext_authz filters is named after them too (`…@authz-{digest}`, see
//!   [`super::authz_guard`]).
//!   An HTTPS listener whose ClientTrafficPolicy asks for HTTP/3 also gets a QUIC (UDP)
//!   listener on its port (`{gateway}/{port}/quic`) sharing its route table; its TCP chain
//!   advertises it with `alt-svc`. ClientTrafficPolicy settings are applied by
//!   [`client_traffic_config`].
//! - Clusters keep the IR's names, which derive from backend identity: reordering rules or
//!   adding a route never renames, and so never drains, a live cluster.
//! - CORS: every HTTP connection manager carries Envoy's CORS filter before the router, so
//!   the first CORS route changes a route table and never a listener; each CORS route
//!   carries its policy in `typed_per_filter_config`.
//! - Splits: backendRef-level header filters go on their `ClusterWeight`, so they apply only
//!   when that backend is picked. The weight of invalid backendRefs goes to a cluster name
//!   that never exists ([`INVALID_BACKEND_CLUSTER`]) on a route whose
//!   `cluster_not_found_response_code` is 500: that share of requests gets the 500 Gateway
//!   API requires, with no extra listener or cluster.
//! - Not yet converted: nothing the IR carries. One ordering is Envoy's documented default
//!   rather than a Gateway API rule: route-level header changes are applied after a split's
//!   own, so for one header name a rule filter wins over a backendRef filter.
//!
//! Route tables dominate the cost: a Gateway with thousands of hostnames has one route table of
//! megabytes, in which a route with five hostnames appears five times. So [`SnapshotBuilder`]
//! encodes each distinct route entry once and keeps each route table with where each of its
//! virtual hosts lies in it; the next build of the table copies the virtual hosts the
//! translator handed over unchanged (same `Arc`) from there, in runs, and encodes only the
//! others (a protobuf message is the concatenation of its encoded fields). The bytes are
//! exactly those of encoding the whole table in one go. A route table's version is not a hash
//! of those megabytes but of its name and the ordered SHA-256 digests of its virtual hosts'
//! encodings, each computed once when the virtual host is encoded and kept with the table: it
//! still changes exactly when the bytes do, costs a few kilobytes of hashing instead of
//! megabytes when one route changes, and does not depend on what was cached.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions as CommonHttpProtocolOptions, RuntimeFractionalPercent, TransportSocket,
    header_value_option, transport_socket,
};
use envoy_types::pb::envoy::config::core::v3::{Locality, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::UdpListenerConfig;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3::{
    Route as UdpRoute, UdpProxyConfig, udp_proxy_config,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext, common_tls_context, secret,
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::pb::xds::core::v3::TypedExtensionConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{Matcher as XdsMatcher, matcher as xds_matcher};

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::authz_guard::{self, AuthzHistory};
use super::client_traffic_config;
use super::envoy_config::{
    ads_source, any, eds_cluster, hostname_address, load_assignment_of, pipe_address, resource,
    socket_address,
};
use super::policy_config::{self, exact, millis, put_map};
use super::policy_filters::{self, ListenerNeeds};
use super::protocol::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Resource, SECRET, Snapshot};
use super::route_wire;
use crate::short_hash::hex_prefix;
use crate::translate::ir::{
    ClientTrafficIr, ClusterIr, CorsIr, EndpointIr, ForwardIr, GatewayIr, HeaderModifierIr,
    ListenerIr, ListenerProtocol, OidcIr, PathMatchIr, PathModifierIr, RedirectIr, RouteActionIr,
    RouteIr, StringMatchIr, SubjectAltNameIr, TrustIr, UpstreamProtocol, UpstreamTlsIr,
    VirtualHostIr, WeightedBackendIr,
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
    SnapshotBuilder {
        one_shot: true,
        ..SnapshotBuilder::default()
    }
    .build(gateway, binding, version)
}

/// Builds Envoy snapshots, remembering the encodings of route entries and route tables
/// between calls (see the module docs). Entries unused by a build are dropped at its
/// end, so the memory held is that of the latest snapshots' route tables.
///
/// `build` returns exactly what [`snapshot`] returns, plus the guard route tables of
/// listeners whose ext_authz filters changed ([`authz_guard`]), which need a history. Encodings are found by the address of
/// the IR's `Arc`s, which the builder keeps alive, so an address cannot be reused for other
/// content while it is cached.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    routes: Generations<RouteIr, Arc<[u8]>>,
    /// Route tables by name, as last built.
    tables: HashMap<String, SplicedTable>,
    /// The ext_authz filter sets of each route table base, for guard tables.
    authz_history: AuthzHistory,
    /// Guarded variants of virtual hosts, per guard table name.
    guarded: HashMap<String, Generations<VirtualHostIr, Arc<VirtualHostIr>>>,
    clusters: ClusterCache,
    /// Set by [`snapshot`], whose builder is dropped after one build: remembering encodings
    /// would only keep a second copy of every route table alive until then, so each table is
    /// encoded straight through (virtual hosts in parallel) and nothing is kept.
    one_shot: bool,
}

/// The part of a virtual host's SHA-256 digest route table versions derive from.
type HostDigest = [u8; VERSION_DIGEST_BYTES];

fn host_digest(encoded: &[u8]) -> HostDigest {
    let full: [u8; 32] = Sha256::digest(encoded).into();
    let mut digest = [0; VERSION_DIGEST_BYTES];
    digest.copy_from_slice(&full[..VERSION_DIGEST_BYTES]);
    digest
}

/// A route table as last built: the virtual hosts it was spliced from, where each one lies
/// (framed as field 2) in the body, and their digests. The next build of the table copies
/// the unchanged hosts' bytes from here, in runs, rather than looking each one up.
#[derive(Debug)]
struct SplicedTable {
    hosts: Vec<Arc<VirtualHostIr>>,
    /// Host `i` is `resource.body[starts[i]..starts[i + 1]]`; one more entry than hosts.
    starts: Vec<usize>,
    digests: Vec<HostDigest>,
    resource: Resource,
    /// Whether the current build used it; tables a build did not use are dropped.
    used: bool,
}

impl SplicedTable {
    /// A table of no hosts, to splice a first build from.
    fn empty() -> Self {
        Self {
            hosts: Vec::new(),
            starts: vec![0],
            digests: Vec::new(),
            resource: Resource::new("", "", Vec::new()),
            used: false,
        }
    }
}

/// Encodings keyed by the address of the IR they encode, kept while builds use them.
#[derive(Debug)]
struct Generations<T, V> {
    previous: AddressMap<(Arc<T>, V)>,
    current: AddressMap<(Arc<T>, V)>,
}

impl<T, V> Default for Generations<T, V> {
    fn default() -> Self {
        Self {
            previous: AddressMap::default(),
            current: AddressMap::default(),
        }
    }
}

/// A map keyed by addresses. Every build looks up each route entry and virtual host, tens of
/// thousands of times for a large Gateway, so the default SipHash showed up in profiles; its
/// resistance to chosen keys buys nothing when the allocator picks the keys.
type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// Hashes one address with a folded 64×64→128-bit multiplication, which spreads the
/// address's bits over both halves (addresses share their low, alignment bits and their high
/// bits, and the hash table uses both ends of the hash).
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `usize` keys are hashed; this keeps any other use correct, if slow.
        for &b in bytes {
            self.write_usize(usize::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        let product = u128::from(n as u64 ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl<T, V: Clone> Generations<T, V> {
    fn get_or_encode(&mut self, item: &Arc<T>, encode: impl FnOnce(&T) -> V) -> V {
        // The address is only a lookup key; the stored `Arc` keeps it from being reused.
        let key = Arc::as_ptr(item) as usize;
        if let Some((_, bytes)) = self.current.get(&key) {
            return bytes.clone();
        }
        let bytes = match self.previous.remove(&key) {
            Some((_, bytes)) => bytes,
            None => encode(item),
        };
        self.current.insert(key, (item.clone(), bytes.clone()));
        bytes
    }

    /// Ends a build: what it did not use is dropped.
    fn rotate(&mut self) {
        // The next build uses about as many: room for them up front spares regrowing.
        let room = AddressMap::with_capacity_and_hasher(self.current.len(), Default::default());
        self.previous = std::mem::replace(&mut self.current, room);
    }
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Envoy's snapshot for one Gateway, versioned by `version`; equal to [`snapshot`]'s plus
    /// guard route tables (see the type's docs).
    pub fn build(
        &mut self,
        gateway: &GatewayIr,
        binding: ListenerBinding,
        version: &str,
    ) -> Snapshot {
        let mut snap = Snapshot::new(version);
        // The OIDC logins of every connection manager's routes, by policy.
        let mut oidc: BTreeMap<String, &OidcIr> = BTreeMap::new();
        for ((udp, port), listeners) in gateway.ports() {
            let bind = SocketAddr::new(binding.ip, port.saturating_add(binding.port_offset));
            let listener_name = if udp {
                format!("{}/{port}/udp", gateway.name)
            } else {
                format!("{}/{port}", gateway.name)
            };
            match listeners.first().map(|l| l.protocol) {
                Some(ListenerProtocol::Http) | None => {
                    let vhosts: Vec<&Arc<VirtualHostIr>> = listeners
                        .iter()
                        .flat_map(|l| l.virtual_hosts.iter())
                        .collect();
                    let needs = ListenerNeeds::of(routes_of(&vhosts));
                    let route_name = self.route_tables(&mut snap, &listener_name, &vhosts, &needs);
                    let policy_filters = listener_policy_filters(&needs);
                    oidc.extend(needs.oidc.iter().map(|(k, v)| (k.clone(), *v)));
                    let client = port_client(&listeners);
                    let mut filters =
                        client_traffic_config::network_filters(client, &listener_name);
                    filters.push(hcm_filter(
                        &listener_name,
                        &route_name,
                        policy_filters,
                        client,
                    ));
                    let chain = FilterChain {
                        filters,
                        ..FilterChain::default()
                    };
                    let mut envoy = listener(&listener_name, bind, vec![chain], false);
                    if let Some(c) = client {
                        client_traffic_config::apply_listener(&mut envoy, c);
                    }
                    snap.insert(LISTENER, resource(&listener_name, &envoy));
                }
                Some(ListenerProtocol::Https) => {
                    // HTTP/3 binds UDP on the same port, unless a UDP listener has it.
                    let http3 = |l: &ListenerIr| {
                        l.client.as_ref().is_some_and(|c| c.http3)
                            && !gateway.ports().contains_key(&(true, port))
                    };
                    let mut chains = Vec::new();
                    let mut quic_chains = Vec::new();
                    for l in &listeners {
                        let stat_prefix = format!("{listener_name}/{}", l.name);
                        let vhosts: Vec<&Arc<VirtualHostIr>> = l.virtual_hosts.iter().collect();
                        let needs = ListenerNeeds::of(routes_of(&vhosts));
                        let route_name =
                            self.route_tables(&mut snap, &stat_prefix, &vhosts, &needs);
                        oidc.extend(needs.oidc.iter().map(|(k, v)| (k.clone(), *v)));
                        let quic = http3(l);
                        let names = HcmNames {
                            stat_prefix: &stat_prefix,
                            route_table: &route_name,
                            needs: &needs,
                        };
                        chains.push(https_chain(
                            &mut snap,
                            names,
                            l,
                            quic.then_some(bind.port()),
                        ));
                        if quic {
                            quic_chains.push(quic_chain(&mut snap, names, l));
                        }
                    }
                    if !quic_chains.is_empty() {
                        let name = format!("{listener_name}/quic");
                        let quic = client_traffic_config::quic_listener(&name, bind, quic_chains);
                        snap.insert(LISTENER, resource(&name, &quic));
                    }
                    let mut envoy = listener(&listener_name, bind, chains, true);
                    if let Some(c) = port_client(&listeners) {
                        client_traffic_config::apply_listener(&mut envoy, c);
                    }
                    snap.insert(LISTENER, resource(&listener_name, &envoy));
                }
                Some(ListenerProtocol::Tls) => {
                    let chains: Vec<FilterChain> = listeners
                        .iter()
                        .flat_map(|l| tls_chains(&mut snap, &listener_name, l))
                        .collect();
                    // No route, no chain: Envoy then refuses connections, as Gateway API
                    // wants for a listener nothing is attached to.
                    if !chains.is_empty() {
                        let mut envoy = listener(&listener_name, bind, chains, true);
                        if let Some(c) = port_client(&listeners) {
                            client_traffic_config::apply_listener(&mut envoy, c);
                        }
                        snap.insert(LISTENER, resource(&listener_name, &envoy));
                    }
                }
                Some(ListenerProtocol::Tcp) => {
                    if let Some(forward) = listeners.iter().find_map(|l| carrier(l)) {
                        let client = port_client(&listeners);
                        let mut filters =
                            client_traffic_config::network_filters(client, &listener_name);
                        filters.push(tcp_proxy_filter(&listener_name, forward, client));
                        let chain = FilterChain {
                            filters,
                            ..FilterChain::default()
                        };
                        let mut envoy = listener(&listener_name, bind, vec![chain], false);
                        if let Some(c) = client {
                            client_traffic_config::apply_listener(&mut envoy, c);
                        }
                        snap.insert(LISTENER, resource(&listener_name, &envoy));
                    }
                }
                Some(ListenerProtocol::Udp) => {
                    if let Some(forward) = listeners.iter().find_map(|l| carrier(l)) {
                        let (envoy, set) = udp_listener(&listener_name, bind, forward, gateway);
                        snap.insert(LISTENER, resource(&listener_name, &envoy));
                        if let Some(set) = set {
                            snap.insert(CLUSTER, resource(&set.name, &set));
                        }
                    }
                }
            }
        }
        // Entries of TLS, TCP and UDP listeners have no connection manager, yet a policy on
        // the whole Gateway reaches them too; their logins' secrets are served as well.
        for l in gateway.listeners.iter().filter(|l| !l.protocol.is_http()) {
            let vhosts: Vec<&Arc<VirtualHostIr>> = l.virtual_hosts.iter().collect();
            oidc.extend(ListenerNeeds::of(routes_of(&vhosts)).oidc);
        }
        let clusters = if self.one_shot {
            None
        } else {
            Some(&mut self.clusters)
        };
        add_clusters(&mut snap, gateway, clusters);
        add_policy_secrets(&mut snap, &oidc);
        snap
    }

    /// Ends a round of builds (one per Gateway): encodings no build of the round used are
    /// dropped. Without it the builder only grows.
    pub fn finish_round(&mut self) {
        self.routes.rotate();
        self.clusters.rotate();
        for guarded in self.guarded.values_mut() {
            guarded.rotate();
        }
        self.guarded.retain(|_, g| !g.previous.is_empty());
        self.tables
            .retain(|_, table| std::mem::take(&mut table.used));
    }

    /// The route tables of connection managers named after `base` serving `vhosts`, into
    /// `snap`: the current one, named after its ext_authz filters, whose name is returned, and
    /// the guard tables of the filter sets `base` had before (see [`authz_guard`]).
    fn route_tables(
        &mut self,
        snap: &mut Snapshot,
        base: &str,
        vhosts: &[&Arc<VirtualHostIr>],
        needs: &ListenerNeeds<'_>,
    ) -> String {
        let current = authz_guard::required_policies(needs);
        let name = authz_guard::table_name(base, &current);
        snap.insert(ROUTE, self.route_table(&name, vhosts));
        let earlier = self.authz_history.record(base, &current).to_vec();
        for available in earlier {
            let guard_name = authz_guard::table_name(base, &available);
            let guarded = self.guarded.entry(guard_name.clone()).or_default();
            let hosts: Vec<Arc<VirtualHostIr>> = vhosts
                .iter()
                .map(|v| {
                    // Unguarded hosts stay the very same `Arc`: their encodings are shared
                    // with the current table.
                    let original = Arc::clone(v);
                    guarded.get_or_encode(v, |host| {
                        authz_guard::guarded_host(host, &available).map_or(original, Arc::new)
                    })
                })
                .collect();
            let hosts: Vec<&Arc<VirtualHostIr>> = hosts.iter().collect();
            snap.insert(ROUTE, self.route_table(&guard_name, &hosts));
        }
        name
    }

    /// The route table `name` serving `vhosts`: `route_table(name, vhosts)` encoded, spliced
    /// from per-virtual-host encodings (fields 1 and 14 around the repeated field 2). Hosts
    /// of the table's previous build are copied from it: by position while the positions
    /// agree (one host replaced keeps them in step), else by address (hosts inserted or
    /// removed shift the rest). Only hosts new to the table are encoded.
    fn route_table(&mut self, name: &str, vhosts: &[&Arc<VirtualHostIr>]) -> Resource {
        if self.one_shot {
            return one_shot_route_table(name, vhosts);
        }
        if let Some(table) = self.tables.get_mut(name)
            && table.hosts.len() == vhosts.len()
            && table
                .hosts
                .iter()
                .zip(vhosts)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            table.used = true;
            return table.resource.clone();
        }
        let previous = self.tables.remove(name).unwrap_or_else(SplicedTable::empty);
        // Where each host is in the previous table, if it is.
        let at_same_place = |i: usize| {
            vhosts
                .get(i)
                .zip(previous.hosts.get(i))
                .is_some_and(|(now, before)| Arc::ptr_eq(now, before))
        };
        let mut by_address: Option<AddressMap<usize>> = None;
        let mut source: Vec<Option<usize>> = Vec::with_capacity(vhosts.len());
        for (i, v) in vhosts.iter().enumerate() {
            let found = if at_same_place(i) {
                Some(i)
            } else if by_address.is_none()
                && (at_same_place(i + 1)
                    || (i + 1 == vhosts.len() && previous.hosts.len() == vhosts.len()))
            {
                // The positions agree again right after: this host replaced another one.
                None
            } else {
                by_address
                    .get_or_insert_with(|| {
                        previous
                            .hosts
                            .iter()
                            .enumerate()
                            .map(|(j, p)| (Arc::as_ptr(p) as usize, j))
                            .collect()
                    })
                    .get(&(Arc::as_ptr(v) as usize))
                    .copied()
            };
            source.push(found);
        }
        let (copied, copied_bytes) = source.iter().flatten().fold((0, 0), |(n, bytes), &j| {
            (n + 1, bytes + previous.starts[j + 1] - previous.starts[j])
        });
        // New hosts are likely about the size of the others; room to spare, because running
        // out means copying the whole table into a larger buffer.
        let average = copied_bytes / copied.max(1);
        let new_bytes = (vhosts.len() - copied) * (average + average / 4 + 64);
        let mut table = TableWriter::new(name, copied_bytes + new_bytes);
        let mut starts = Vec::with_capacity(vhosts.len() + 1);
        let mut digests = Vec::with_capacity(vhosts.len());
        let mut i = 0;
        while i < vhosts.len() {
            match source[i] {
                Some(first) => {
                    // A run of hosts at consecutive positions of the previous table is one copy.
                    let mut end = i + 1;
                    while end < vhosts.len() && source[end] == Some(first + (end - i)) {
                        end += 1;
                    }
                    let last = first + (end - i);
                    let offset = table.body.len();
                    let from = previous.starts[first];
                    starts.extend(
                        previous.starts[first..last]
                            .iter()
                            .map(|s| s - from + offset),
                    );
                    digests.extend_from_slice(&previous.digests[first..last]);
                    table.push_framed(
                        &previous.resource.body[from..previous.starts[last]],
                        &previous.digests[first..last],
                    );
                    i = end;
                }
                None => {
                    let encoded = self.encode_virtual_host(vhosts[i]);
                    let digest = host_digest(&encoded);
                    starts.push(table.body.len());
                    digests.push(digest);
                    table.push(&encoded, &digest);
                    i += 1;
                }
            }
        }
        starts.push(table.body.len());
        let resource = table.finish();
        self.tables.insert(
            name.to_owned(),
            SplicedTable {
                hosts: vhosts.iter().map(|v| Arc::clone(v)).collect(),
                starts,
                digests,
                resource: resource.clone(),
                used: true,
            },
        );
        resource
    }

    /// `virtual_host(v)` encoded: name and domains, then each route's encoding (field 3),
    /// the routes' encodings cached.
    fn encode_virtual_host(&mut self, v: &VirtualHostIr) -> Vec<u8> {
        let routes = &mut self.routes;
        let mut body = Vec::new();
        encode_virtual_host(v, &mut body, |r, body| {
            let bytes = routes.get_or_encode(r, |r| {
                let mut bytes = Vec::new();
                encode_route(r, &mut bytes);
                bytes.into()
            });
            put_message(body, VIRTUAL_HOST_ROUTES, &bytes);
        });
        body
    }
}

/// Appends `virtual_host(v)` encoded to `body`: name and domains, then each route's encoding
/// (field 3), which `put_route` appends.
fn encode_virtual_host(
    v: &VirtualHostIr,
    body: &mut Vec<u8>,
    mut put_route: impl FnMut(&Arc<RouteIr>, &mut Vec<u8>),
) {
    route_wire::put_virtual_host_head(body, &v.name, &v.domains);
    for r in &v.routes {
        put_route(r, body);
    }
}

/// The route table `name` serving `vhosts`, encoded without any cache. The virtual hosts are
/// split into one run per worker thread; each run is encoded through reused scratch buffers
/// into one buffer of framed virtual hosts (plus their digests), and the runs are spliced in
/// order. Per-virtual-host buffers allocated by workers and freed here stayed resident in the
/// workers' heaps; one large buffer per run is returned to the allocator's arena as a whole.
fn one_shot_route_table(name: &str, vhosts: &[&Arc<VirtualHostIr>]) -> Resource {
    /// Below this, splitting costs more than it saves.
    const MIN_RUN: usize = 64;
    let runs = rayon::current_num_threads().clamp(1, vhosts.len().div_ceil(MIN_RUN).max(1));
    let run_len = vhosts.len().div_ceil(runs).max(1);
    let encoded: Vec<EncodedRun> = if runs > 1 {
        vhosts.par_chunks(run_len).map(encode_run).collect()
    } else {
        vec![encode_run(vhosts)]
    };
    let size = encoded.iter().map(|r| r.framed.len()).sum();
    let mut table = TableWriter::new(name, size);
    for run in &encoded {
        table.push_framed(&run.framed, &run.digests);
    }
    table.finish()
}

/// Consecutive virtual hosts of a route table, encoded and framed as its field 2.
struct EncodedRun {
    framed: Vec<u8>,
    digests: Vec<HostDigest>,
}

fn encode_run(vhosts: &[&Arc<VirtualHostIr>]) -> EncodedRun {
    let mut run = EncodedRun {
        framed: Vec::new(),
        digests: Vec::with_capacity(vhosts.len()),
    };
    let mut vhost = Vec::new();
    let mut route = Vec::new();
    for (i, v) in vhosts.iter().enumerate() {
        vhost.clear();
        encode_virtual_host(v, &mut vhost, |r, out| {
            route.clear();
            encode_route(r, &mut route);
            put_message(out, VIRTUAL_HOST_ROUTES, &route);
        });
        run.digests.push(host_digest(&vhost));
        if i == 0 {
            // Virtual hosts of one table tend to be alike: room for the run at the first
            // one's size (and a quarter) spares the buffer a string of doublings, whose
            // discarded halves the allocator kept resident.
            run.framed
                .reserve((vhost.len() + 8).saturating_mul(vhosts.len()) / 4 * 5);
        }
        put_message(&mut run.framed, ROUTE_CONFIGURATION_VIRTUAL_HOSTS, &vhost);
    }
    run
}

/// `route_table(name, …)` encoded from its virtual hosts' encodings and their digests, in
/// order: fields 1 and 14 around the repeated field 2.
struct TableWriter {
    name: String,
    body: Vec<u8>,
    tail: Vec<u8>,
    version: Sha256,
}

impl TableWriter {
    /// A table with room for `capacity` bytes of virtual hosts.
    fn new(name: &str, capacity: usize) -> Self {
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
        let mut body = Vec::with_capacity(head.len() + capacity);
        body.extend_from_slice(&name_only);
        // The version hashes what determines the body: the name-bearing head, the fixed tail
        // and the virtual hosts' digests in order. The head is length-delimited and digests
        // have one size, so distinct bodies give distinct preimages. A digest goes in by its
        // first `VERSION_DIGEST_BYTES`: the version keeps 8 bytes of the result anyway, and
        // hashing a thousand full digests per table showed in retranslation profiles.
        let mut version = Sha256::new();
        version.update(&name_only);
        version.update(&tail);
        Self {
            name: name.to_owned(),
            body,
            tail,
            version,
        }
    }

    fn push(&mut self, vhost: &[u8], digest: &HostDigest) {
        put_message(&mut self.body, ROUTE_CONFIGURATION_VIRTUAL_HOSTS, vhost);
        self.version.update(digest);
    }

    /// Appends virtual hosts already framed as field 2, with their digests in order.
    fn push_framed(&mut self, framed: &[u8], digests: &[HostDigest]) {
        self.body.extend_from_slice(framed);
        self.version.update(digests.as_flattened());
    }

    fn finish(mut self) -> Resource {
        self.body.extend_from_slice(&self.tail);
        Resource {
            name: self.name,
            version: hex_prefix(&self.version.finalize(), 8),
            body: self.body.into(),
        }
    }
}

/// How much of each virtual host's digest a route table's version hashes.
const VERSION_DIGEST_BYTES: usize = 16;

/// `RouteConfiguration.virtual_hosts`.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
/// `VirtualHost.routes`.
const VIRTUAL_HOST_ROUTES: u32 = 3;

/// Appends an embedded message field, as prost encodes one.
pub(super) fn put_message(out: &mut Vec<u8>, tag: u32, encoded: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(encoded.len() as u64, out);
    out.extend_from_slice(encoded);
}

/// Every cluster of the Gateway, with its endpoints: over EDS, or inline for DNS clusters.
fn add_clusters(snap: &mut Snapshot, gateway: &GatewayIr, mut cache: Option<&mut ClusterCache>) {
    for (name, cluster) in &gateway.clusters {
        let resources = match cache.as_deref_mut() {
            Some(cache) => cache.get_or_build(name, cluster),
            None => cluster_resources(name, cluster),
        };
        let ClusterResources { cluster, endpoints } = resources;
        snap.insert(CLUSTER, cluster);
        if let Some(endpoints) = endpoints {
            snap.insert(ENDPOINT, endpoints);
        }
    }
}

/// Cluster resources by cluster name, with the IR they were built from; what a round of
/// builds did not use is dropped at its end. A Gateway's clusters rarely change between two
/// translations, and encoding (and hashing) each of them again showed in retranslations.
#[derive(Debug, Default)]
struct ClusterCache {
    previous: HashMap<String, (ClusterIr, ClusterResources)>,
    current: HashMap<String, (ClusterIr, ClusterResources)>,
}

impl ClusterCache {
    fn get_or_build(&mut self, name: &str, cluster: &ClusterIr) -> ClusterResources {
        if let Some((built_from, resources)) = self.current.get(name)
            && built_from == cluster
        {
            return resources.clone();
        }
        let entry = match self.previous.remove(name) {
            Some((built_from, resources)) if built_from == *cluster => (built_from, resources),
            _ => (cluster.clone(), cluster_resources(name, cluster)),
        };
        let resources = entry.1.clone();
        self.current.insert(name.to_owned(), entry);
        resources
    }

    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

/// A cluster's resources: the cluster, and its endpoints unless they are inline (DNS).
#[derive(Debug, Clone)]
struct ClusterResources {
    cluster: Resource,
    endpoints: Option<Resource>,
}

fn cluster_resources(name: &str, cluster: &ClusterIr) -> ClusterResources {
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
        ClusterResources {
            cluster: resource(name, &envoy),
            endpoints: None,
        }
    } else {
        ClusterResources {
            cluster: resource(name, &envoy),
            endpoints: Some(resource(name, &load_assignment_of(name, addresses))),
        }
    }
}

/// The secrets the routes' policies hand Envoy over SDS (OIDC client and cookie secrets).
fn add_policy_secrets(snap: &mut Snapshot, oidc: &BTreeMap<String, &OidcIr>) {
    for (policy, o) in oidc {
        for secret in policy_filters::oidc_secrets(policy, o) {
            snap.insert(SECRET, resource(&secret.name, &secret));
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

/// The listener-level policy filters for routes with these needs (see [`policy_config`]).
fn listener_policy_filters(needs: &ListenerNeeds<'_>) -> Vec<HttpFilter> {
    let jwt = policy_config::jwt_authentication(&needs.jwt);
    policy_config::policy_filters(jwt, needs)
}

/// The route entries of `vhosts`, in order.
fn routes_of<'a>(vhosts: &[&'a Arc<VirtualHostIr>]) -> impl Iterator<Item = &'a RouteIr> {
    vhosts
        .iter()
        .filter(|v| !v.policy_free)
        .flat_map(|v| v.routes.iter().map(|r| &**r))
}

/// The ClientTrafficPolicy of a port's listeners, for what Envoy holds once per port: the
/// first listener's (in spec order) that has one.
fn port_client<'a>(listeners: &[&'a ListenerIr]) -> Option<&'a ClientTrafficIr> {
    listeners.iter().find_map(|l| l.client.as_ref())
}

/// The names a connection manager goes by: its statistics and the route table it reads
/// (which differ when the table is named after the listener's ext_authz filters); and what
/// its routes need of its HTTP filters.
#[derive(Debug, Clone, Copy)]
struct HcmNames<'a> {
    stat_prefix: &'a str,
    route_table: &'a str,
    needs: &'a ListenerNeeds<'a>,
}

fn hcm_filter(
    stat_prefix: &str,
    route_name: &str,
    policy_filters: Vec<HttpFilter>,
    client: Option<&ClientTrafficIr>,
) -> Filter {
    hcm_as_filter(&connection_manager(
        stat_prefix,
        route_name,
        policy_filters,
        client,
    ))
}

fn hcm_as_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
    }
}

fn connection_manager(
    stat_prefix: &str,
    route_name: &str,
    policy_filters: Vec<HttpFilter>,
    client: Option<&ClientTrafficIr>,
) -> HttpConnectionManager {
    let mut http_filters = vec![
        // Always present, so the first CORS route changes only its route table and never
        // the listener (a listener update drains its connections). Without a per-route
        // policy the filter passes requests through untouched.
        HttpFilter {
            name: CORS_FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Cors::default()))),
            ..HttpFilter::default()
        },
    ];
    http_filters.extend(policy_filters);
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..HttpFilter::default()
    });
    let mut hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters,
        // Backends with appProtocol kubernetes.io/ws(s) need upgrades; others never ask.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..http_connection_manager::UpgradeConfig::default()
        }],
        ..HttpConnectionManager::default()
    };
    if let Some(c) = client {
        client_traffic_config::apply_hcm(&mut hcm, c);
    }
    hcm
}

/// The filter chain of HTTPS listener `l`; `http3_port` is the port its QUIC twin listens
/// on, advertised in `alt-svc`.
fn https_chain(
    snap: &mut Snapshot,
    names: HcmNames<'_>,
    l: &ListenerIr,
    http3_port: Option<u16>,
) -> FilterChain {
    let mut hcm = connection_manager(
        names.stat_prefix,
        names.route_table,
        listener_policy_filters(names.needs),
        l.client.as_ref(),
    );
    if let Some(port) = http3_port {
        client_traffic_config::advertise_http3(&mut hcm, port);
    }
    FilterChain {
        filter_chain_match: l.hostname.as_ref().map(|h| FilterChainMatch {
            server_names: vec![h.clone()],
            ..FilterChainMatch::default()
        }),
        filters: client_traffic_config::network_filters(l.client.as_ref(), names.stat_prefix)
            .into_iter()
            .chain([hcm_as_filter(&hcm)])
            .collect(),
        transport_socket: Some(downstream_tls(snap, l, &["h2", "http/1.1"])),
        ..FilterChain::default()
    }
}

/// The QUIC filter chain of HTTPS listener `l`: HTTP/3 over the same route table and TLS
/// settings as its TCP chain.
fn quic_chain(snap: &mut Snapshot, names: HcmNames<'_>, l: &ListenerIr) -> FilterChain {
    let mut hcm = connection_manager(
        names.stat_prefix,
        names.route_table,
        listener_policy_filters(names.needs),
        l.client.as_ref(),
    );
    client_traffic_config::serve_http3(&mut hcm);
    FilterChain {
        filter_chain_match: l.hostname.as_ref().map(|h| FilterChainMatch {
            server_names: vec![h.clone()],
            ..FilterChainMatch::default()
        }),
        filters: vec![hcm_as_filter(&hcm)],
        transport_socket: Some(client_traffic_config::quic_transport(
            downstream_tls_context(snap, l, &["h3"]),
        )),
        ..FilterChain::default()
    }
}

/// The route that carries a TCP or UDP listener's connections: the first entry of its only
/// virtual host (see [`ListenerProtocol`]).
fn carrier(l: &ListenerIr) -> Option<Connections<'_>> {
    l.virtual_hosts
        .first()
        .and_then(|v| v.routes.first())
        .map(|r| connections_of(r))
}

/// Where a stream route sends connections.
#[derive(Debug, Clone, Copy)]
enum Connections<'a> {
    /// Weighted clusters, plus the weight of invalid backendRefs whose share is refused.
    Forward(&'a ForwardIr),
    /// No valid backend: every connection is refused.
    Refuse,
}

fn connections_of(r: &RouteIr) -> Connections<'_> {
    match &r.action {
        RouteActionIr::Forward(f) => Connections::Forward(f),
        _ => Connections::Refuse,
    }
}

/// One filter chain per SNI name a TLS listener serves: passed through to the backends as is,
/// or (with `tls` on the listener) terminated with the listener's certificates first.
fn tls_chains(snap: &mut Snapshot, listener_name: &str, l: &ListenerIr) -> Vec<FilterChain> {
    let mut chains = Vec::with_capacity(l.virtual_hosts.len());
    for vhost in &l.virtual_hosts {
        let Some(route) = vhost.routes.first() else {
            continue;
        };
        // A virtual host serving "*" catches every name: its chain matches no SNI in
        // particular (Envoy then prefers the chains naming the client's SNI).
        let server_names: Vec<String> = if vhost.domains.iter().any(|d| &**d == "*") {
            Vec::new()
        } else {
            vhost.domains.iter().map(|d| d.to_string()).collect()
        };
        let stat_prefix = format!("{listener_name}/{}", l.name);
        chains.push(FilterChain {
            filter_chain_match: (!server_names.is_empty()).then(|| FilterChainMatch {
                server_names,
                ..FilterChainMatch::default()
            }),
            filters: client_traffic_config::network_filters(l.client.as_ref(), &stat_prefix)
                .into_iter()
                .chain([tcp_proxy_filter(
                    &stat_prefix,
                    connections_of(route),
                    l.client.as_ref(),
                )])
                .collect(),
            transport_socket: l.tls.is_some().then(|| downstream_tls(snap, l, &[])),
            ..FilterChain::default()
        });
    }
    chains
}

fn tcp_proxy_filter(
    stat_prefix: &str,
    connections: Connections<'_>,
    client: Option<&ClientTrafficIr>,
) -> Filter {
    let mut weights: Vec<(&str, u32)> = Vec::new();
    match connections {
        Connections::Forward(f) => {
            weights.extend(f.backends.iter().map(|b| (&*b.cluster, b.weight)));
            if f.invalid_weight > 0 {
                weights.push((INVALID_BACKEND_CLUSTER, f.invalid_weight));
            }
        }
        // A cluster that never exists: Envoy closes each connection at once.
        Connections::Refuse => weights.push((INVALID_BACKEND_CLUSTER, 1)),
    }
    let cluster_specifier = match weights.as_slice() {
        [(single, _)] => tcp_proxy::ClusterSpecifier::Cluster((*single).to_owned()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: (*name).to_owned(),
                        weight: *weight,
                        ..tcp_proxy::weighted_cluster::ClusterWeight::default()
                    },
                )
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(cluster_specifier),
        idle_timeout: client.and_then(|c| c.tcp_idle_timeout_ms).map(millis),
        ..TcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&proxy))),
    }
}

/// A UDP listener proxying datagrams to the route's backend. `udp_proxy` routes to a single
/// cluster, so a split over several backends goes to a cluster of its own whose localities are
/// the backends, weighted as the route says (named after the split, so it stays put while the
/// split does); it is returned beside the listener.
fn udp_listener(
    name: &str,
    bind: SocketAddr,
    connections: Connections<'_>,
    gateway: &GatewayIr,
) -> (Listener, Option<Cluster>) {
    let (cluster, set) = match connections {
        Connections::Forward(f) if f.backends.len() == 1 && f.invalid_weight == 0 => {
            (f.backends[0].cluster.to_string(), None)
        }
        Connections::Forward(f) => {
            let set = weighted_set_cluster(f, gateway);
            (set.name.clone(), Some(set))
        }
        Connections::Refuse => (INVALID_BACKEND_CLUSTER.to_owned(), None),
    };
    let route = TypedExtensionConfig {
        name: "route".into(),
        typed_config: Some(any(&UdpRoute { cluster })),
    };
    let proxy = UdpProxyConfig {
        stat_prefix: name.to_owned(),
        route_specifier: Some(udp_proxy_config::RouteSpecifier::Matcher(XdsMatcher {
            on_no_match: Some(Box::new(xds_matcher::OnMatch {
                on_match: Some(xds_matcher::on_match::OnMatch::Action(route)),
                ..xds_matcher::OnMatch::default()
            })),
            ..XdsMatcher::default()
        })),
        ..UdpProxyConfig::default()
    };
    let mut address = socket_address(bind);
    if let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(a)) =
        address.address.as_mut()
    {
        a.protocol = socket_address::Protocol::Udp as i32;
    }
    let listener = Listener {
        name: name.to_owned(),
        address: Some(address),
        udp_listener_config: Some(UdpListenerConfig::default()),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.udp_listener.udp_proxy".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(&proxy))),
            ..ListenerFilter::default()
        }],
        ..Listener::default()
    };
    (listener, set)
}

/// A static cluster over every endpoint of a split's clusters, one locality per backend
/// carrying its weight; invalid backendRefs' weight is a locality without endpoints, so that
/// share of datagrams finds no host and is dropped.
fn weighted_set_cluster(f: &ForwardIr, gateway: &GatewayIr) -> Cluster {
    let mut id = String::new();
    for b in &f.backends {
        id.push_str(&format!("{}={};", b.cluster, b.weight));
    }
    id.push_str(&format!("invalid={}", f.invalid_weight));
    let name = format!(
        "udp-split/{}",
        hex_prefix(Sha256::digest(id.as_bytes()).as_slice(), 8)
    );
    let mut localities: Vec<LocalityLbEndpoints> = f
        .backends
        .iter()
        .map(|b| LocalityLbEndpoints {
            locality: Some(Locality {
                sub_zone: b.cluster.to_string(),
                ..Locality::default()
            }),
            lb_endpoints: gateway
                .clusters
                .get(&*b.cluster)
                .into_iter()
                .flat_map(|c| c.endpoints.iter().filter_map(address_of))
                .map(lb_endpoint)
                .collect(),
            load_balancing_weight: Some(UInt32Value { value: b.weight }),
            ..LocalityLbEndpoints::default()
        })
        .collect();
    if f.invalid_weight > 0 {
        localities.push(LocalityLbEndpoints {
            locality: Some(Locality {
                sub_zone: INVALID_BACKEND_CLUSTER.to_owned(),
                ..Locality::default()
            }),
            load_balancing_weight: Some(UInt32Value {
                value: f.invalid_weight,
            }),
            ..LocalityLbEndpoints::default()
        });
    }
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: localities,
            ..ClusterLoadAssignment::default()
        }),
        common_lb_config: Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::common_lb_config::LocalityWeightedLbConfig::default(),
                ),
            ),
            ..cluster::CommonLbConfig::default()
        }),
        ..Cluster::default()
    }
}

fn lb_endpoint(address: Address) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(address),
            ..Endpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

/// The system trust store of the proxy.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A CA certificate whose private key was discarded when it was made: no backend certificate
/// chains to it, which is what a policy whose CA certificates cannot be read must trust.
const UNUSABLE_CA: &str = "-----BEGIN CERTIFICATE-----
MIIB1zCCAX2gAwIBAgIUVxLQ+6nwXQjTOFwAgPfdc1zk4gYwCgYIKoZIzj0EAwIw
QDE+MDwGA1UEAww1ZWctb3BlcmF0b3IgZmFpbC1jbG9zZWQgdHJ1c3QgKHByaXZh
dGUga2V5IGRpc2NhcmRlZCkwIBcNMjYxMTI2MTExNDE5WhgPMjEyNjExMDIxMTE0
MTlaMEAxPjA8BgNVBAMMNWVnLW9wZXJhdG9yIGZhaWwtY2xvc2VkIHRydXN0IChw
cml2YXRlIGtleSBkaXNjYXJkZWQpMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
Nb6mVnGqY/AdAhAgFYgKFx2hFcPFXfa22FhIfTkQwiwXxV1UVweL9C9uu8l5UKro
ElAXBaXHkptqsdXq4yVSRaNTMFEwHQYDVR0OBBYEFCTFWih9001ZtD6WZaM0S/F9
j2+WMB8GA1UdIwQYMBaAFCTFWih9001ZtD6WZaM0S/F9j2+WMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAMXTc/hXPlhrNZnImf4JorweaAranM9s
fo3V75I3CjmJAiAvryUH0esoARbeK90dTC2jg2qHm6caG9kfiZpQQHoaBg==
-----END CERTIFICATE-----\n";

fn file_source(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..DataSource::default()
    }
}

/// A SAN no certificate carries (`.invalid` is reserved, RFC 2606): the only name a backend
/// behind a policy with unreadable CA certificates is checked against, so TLS to it fails.
const UNSATISFIABLE_SAN: &str = "backendtlspolicy-ca-unresolved.invalid";

/// TLS from Envoy to a backend: SNI, the trust the policy names, and the names the backend's
/// certificate must carry (the SNI when the policy lists none). HTTP/2 backends are offered
/// ALPN `h2`.
fn upstream_tls(tls: &UpstreamTlsIr, protocol: UpstreamProtocol) -> TransportSocket {
    let dns = |name: &str| SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Dns as i32,
        matcher: Some(exact(name)),
        ..SubjectAltNameMatcher::default()
    };
    let mut sans: Vec<SubjectAltNameMatcher> = tls
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SubjectAltNameIr::Hostname(h) => dns(h),
            SubjectAltNameIr::Uri(u) => SubjectAltNameMatcher {
                san_type: subject_alt_name_matcher::SanType::Uri as i32,
                matcher: Some(exact(u)),
                ..SubjectAltNameMatcher::default()
            },
        })
        .collect();
    if sans.is_empty() {
        sans.push(dns(&tls.sni));
    }
    let mut validation = CertificateValidationContext::default();
    match &tls.trust {
        TrustIr::Pem(pem) => validation.trusted_ca = Some(inline_source(pem)),
        // Envoy refuses SAN checks without `trusted_ca` (its `system_root_certs` does not
        // count), so the system store is named by the path it has on Debian/Ubuntu-based
        // Envoy images and on this project's hosts.
        TrustIr::System => validation.trusted_ca = Some(file_source(SYSTEM_CA_BUNDLE)),
        TrustIr::Unresolved => {
            validation.trusted_ca = Some(inline_source(UNUSABLE_CA));
            sans = vec![dns(UNSATISFIABLE_SAN)];
        }
    }
    validation.match_typed_subject_alt_names = sans;
    let context = UpstreamTlsContext {
        sni: tls.sni.clone(),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: if protocol == UpstreamProtocol::H2c {
                vec!["h2".into()]
            } else {
                Vec::new()
            },
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            ..CommonTlsContext::default()
        }),
        ..UpstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
    }
}

/// The TLS transport socket of a listener that terminates TLS, its certificates delivered over
/// SDS (added to `snap`), offering `alpn`.
fn downstream_tls(snap: &mut Snapshot, l: &ListenerIr, alpn: &[&str]) -> TransportSocket {
    let tls = downstream_tls_context(snap, l, alpn);
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

/// [`downstream_tls`]'s TLS context.
fn downstream_tls_context(
    snap: &mut Snapshot,
    l: &ListenerIr,
    alpn: &[&str],
) -> DownstreamTlsContext {
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
                certificate_chain: Some(inline_source(&cert.cert_pem)),
                private_key: Some(inline_source(&cert.key_pem)),
                ..TlsCertificate::default()
            })),
        };
        snap.insert(SECRET, resource(&cert.secret, &secret));
        sds.push(SdsSecretConfig {
            name: cert.secret.clone(),
            sds_config: Some(ads_source()),
        });
    }
    let mut tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: sds,
            alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
            ..CommonTlsContext::default()
        }),
        ..DownstreamTlsContext::default()
    };
    if let Some(c) = &l.client
        && let Some(t) = &c.tls
    {
        client_traffic_config::apply_tls(snap, &mut tls, &c.policy, t);
    }
    tls
}

/// A DataSource holding `text` itself.
pub(super) fn inline_source(text: &str) -> DataSource {
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

/// The weighted-cluster entry that takes the share of invalid backendRefs. No cluster of this
/// name ever exists (IR clusters are named `service/…` or `backend/…`), and route tables come
/// over RDS, which Envoy does not check against known clusters, so the router answers requests
/// sent to it with the route's `cluster_not_found_response_code`: 500, as Gateway API asks.
pub const INVALID_BACKEND_CLUSTER: &str = "invalid-backend-ref";

/// URLRewrite ReplacePrefixMatch as Gateway API defines it: element-wise, so neither the
/// replacement's nor the prefix's trailing slash doubles or drops the `/` between the prefix
/// and the rest (`/api` + `/` turns `/api/x` into `/x`, not `//x`; `/` + `/v2` turns `/x`
/// into `/v2/x`, not `/v2x`). Envoy's `prefix_rewrite` replaces characters, so the cases where
/// the two differ use a regex rewrite.
fn prefix_rewrite(action: &mut RouteAction, path: &PathMatchIr, replacement: &str) {
    let replacement = replacement.trim_end_matches('/');
    let prefix = match path {
        PathMatchIr::Prefix(p) => p.trim_end_matches('/'),
        // The translator allows ReplacePrefixMatch only on PathPrefix matches.
        PathMatchIr::Exact(_) | PathMatchIr::Regex(_) => {
            action.prefix_rewrite = replacement.to_owned();
            return;
        }
    };
    if replacement.is_empty() || prefix.is_empty() {
        // `^/api/*` -> `/`, or `^/` -> `/v2/`: the separator survives exactly once.
        action.regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(regex(&format!("^{}/*", regex::escape(prefix)))),
            substitution: format!("{replacement}/"),
        });
    } else {
        action.prefix_rewrite = replacement.to_owned();
    }
}

fn forward(f: &ForwardIr, r: &RouteIr) -> RouteAction {
    let ForwardIr {
        backends,
        invalid_weight,
    } = f;
    let headers_per_backend = backends
        .iter()
        .any(|b| b.request_headers.is_some() || b.response_headers.is_some());
    let cluster_specifier = match backends.as_slice() {
        [single] if *invalid_weight == 0 && !headers_per_backend => {
            route_action::ClusterSpecifier::Cluster(single.cluster.to_string())
        }
        many => {
            let mut clusters: Vec<ClusterWeight> = many.iter().map(cluster_weight).collect();
            if *invalid_weight > 0 {
                clusters.push(ClusterWeight {
                    name: INVALID_BACKEND_CLUSTER.to_owned(),
                    weight: Some(UInt32Value {
                        value: *invalid_weight,
                    }),
                    ..ClusterWeight::default()
                });
            }
            route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..WeightedCluster::default()
            })
        }
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        ..RouteAction::default()
    };
    if *invalid_weight > 0 {
        action.cluster_not_found_response_code =
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32;
    }
    if let Some(rewrite) = &r.filters.url_rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
            );
        }
        match &rewrite.path {
            Some(PathModifierIr::ReplacePrefixMatch(p)) => prefix_rewrite(&mut action, &r.path, p),
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
            cluster: m.cluster.to_string(),
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
    if let Some(traffic) = &r.traffic {
        let route_sets_timeout = r
            .filters
            .timeouts
            .as_ref()
            .is_some_and(|t| t.request_ms.is_some());
        policy_config::apply_traffic(&mut action, traffic, route_sets_timeout);
    }
    action
}

/// One destination of a split, with the header changes of its backendRef-level filters, which
/// Envoy applies only when this destination is picked.
fn cluster_weight(b: &WeightedBackendIr) -> ClusterWeight {
    let WeightedBackendIr {
        cluster,
        weight,
        request_headers,
        response_headers,
    } = b;
    let (request_headers_to_add, request_headers_to_remove) = request_headers
        .as_deref()
        .map(header_options)
        .unwrap_or_default();
    let (response_headers_to_add, response_headers_to_remove) = response_headers
        .as_deref()
        .map(header_options)
        .unwrap_or_default();
    ClusterWeight {
        name: cluster.to_string(),
        weight: Some(UInt32Value { value: *weight }),
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        ..ClusterWeight::default()
    }
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

/// Field number of `Route.typed_per_filter_config`.
const ROUTE_TYPED_PER_FILTER_CONFIG: u32 = 13;

/// `route_of(r)` encoded, its per-filter configuration in sorted order (see
/// [`per_filter_config`]): fields may come in any order and map entries are repeated fields,
/// so appending them after the rest is the same message.
fn encode_route(r: &RouteIr, out: &mut Vec<u8>) {
    if route_wire::encode_simple_route(r, out) {
        return;
    }
    let mut route = route_of(r);
    let configs: BTreeMap<String, Any> = std::mem::take(&mut route.typed_per_filter_config)
        .into_iter()
        .collect();
    out.reserve(route.encoded_len());
    // Appending to a `Vec` cannot run out of room; `encode` only fails on a full buffer.
    let _ = route.encode(out);
    put_map(out, ROUTE_TYPED_PER_FILTER_CONFIG, &configs);
}

pub(super) fn route_of(r: &RouteIr) -> Route {
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
        typed_per_filter_config: per_filter_config(r),
        ..Route::default()
    }
}

/// The HTTP filter answering CORS preflights and decorating CORS responses, configured per
/// route through `typed_per_filter_config` under this name.
const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Gateway API's HTTPCORSFilter as Envoy's per-route CORS policy. Envoy always answers with the
/// request's own `Origin` in `access-control-allow-origin`, which is what Gateway API requires
/// for credentialed requests and allows otherwise.
/// A route's per-filter configuration. Envoy's type is a `HashMap`, which prost encodes in
/// iteration order; route tables are compared by their bytes, so routes with more than one
/// entry are re-encoded in sorted order by [`sorted_filter_configs`].
fn per_filter_config(r: &RouteIr) -> HashMap<String, Any> {
    let mut configs = policy_config::per_filter_configs(r);
    // A SecurityPolicy's CORS replaces the route's own CORS filter.
    let cors = r
        .security
        .as_ref()
        .and_then(|s| s.cors.as_ref())
        .or(r.filters.cors.as_ref());
    if let Some(c) = cors {
        configs.insert(CORS_FILTER.to_owned(), any(&cors_policy(c)));
    }
    configs.into_iter().collect()
}

fn cors_policy(c: &CorsIr) -> CorsPolicy {
    let CorsIr {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age_seconds,
        allow_credentials,
    } = c;
    CorsPolicy {
        allow_origin_string_match: allow_origins
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(
                    &origin_regex(o),
                ))),
                ..StringMatcher::default()
            })
            .collect(),
        allow_methods: allow_methods.join(","),
        allow_headers: allow_headers.join(","),
        expose_headers: expose_headers.join(","),
        max_age: max_age_seconds.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: allow_credentials.then_some(BoolValue { value: true }),
        // Gateway API: a preflight from an origin that is not allowed gets an OK answer
        // without CORS headers (or a 403), never the backend's own OPTIONS handling.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..CorsPolicy::default()
    }
}

/// An HTTPCORSFilter origin (`*`, or `scheme://host[:port]` whose host may hold `*`) as an
/// RE2 pattern over the whole `Origin` header.
///
/// - `*` alone allows every origin.
/// - `*` in the host matches any number of characters up to the port, dots included (Gateway
///   API: "a greedy match to the left, including any number of DNS labels").
/// - Browsers leave the default port out of `Origin`, and Gateway API assumes 80 for http and
///   443 for https when the pattern has none, so `https://a.example` and
///   `https://a.example:443` each match both spellings.
fn origin_regex(origin: &str) -> String {
    if origin == "*" {
        return ".*".to_owned();
    }
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    // A port is digits after the last ':' (hosts never hold ':' except inside IPv6 brackets,
    // which end in ']').
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (rest, None),
    };
    let host = host
        .split('*')
        .map(regex_escape)
        .collect::<Vec<_>>()
        .join("[^/:]*");
    let port = match (port, default_port) {
        (Some(p), Some(d)) if p == d => format!("(:{d})?"),
        (None, Some(d)) => format!("(:{d})?"),
        (Some(p), _) => format!(":{p}"),
        (None, None) => String::new(),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{}://", regex_escape(scheme))
    };
    format!("{scheme}{host}{port}")
}

/// `text` with every RE2 metacharacter escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn envoy_cluster(c: &ClusterIr) -> Cluster {
    let mut cluster = eds_cluster(&c.name);
    if let Some(tls) = &c.tls {
        cluster.transport_socket = Some(upstream_tls(tls, c.protocol));
    }
    let common = c
        .settings
        .as_ref()
        .map(|s| policy_config::apply_cluster_settings(&mut cluster, s))
        .filter(|common| *common != CommonHttpProtocolOptions::default());
    let is_http = !matches!(c.protocol, UpstreamProtocol::Tcp | UpstreamProtocol::Udp);
    if c.protocol == UpstreamProtocol::H2c || (common.is_some() && is_http) {
        use http_protocol_options::explicit_http_config::ProtocolConfig;
        let protocol_config = if c.protocol == UpstreamProtocol::H2c {
            ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
        } else {
            ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
        };
        let options = HttpProtocolOptions {
            common_http_protocol_options: common,
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(protocol_config),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::HeaderValueIr;
    use prost::Name;

    fn forwarding_route(backends: Vec<WeightedBackendIr>, invalid_weight: u32) -> RouteIr {
        RouteIr {
            name: "httproute/apps/r/rule/0/match/0".into(),
            source: "apps/r".into(),
            rule_name: None,
            path: PathMatchIr::Prefix("/".into()),
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
            action: RouteActionIr::Forward(ForwardIr {
                backends,
                invalid_weight,
            }),
            filters: Arc::default(),
            traffic: None,
            security: None,
        }
    }

    fn backend(cluster: &str, weight: u32) -> WeightedBackendIr {
        WeightedBackendIr {
            cluster: cluster.into(),
            weight,
            request_headers: None,
            response_headers: None,
        }
    }

    /// What Envoy's rewrite of `prefix_rewrite` for PathPrefix `prefix` and replacement
    /// `replacement` does to `path` (regex rewrites evaluated with the `regex` crate, which
    /// agrees with RE2 on these patterns).
    fn rewritten(prefix: &str, replacement: &str, path: &str) -> String {
        let mut action = RouteAction::default();
        prefix_rewrite(
            &mut action,
            &PathMatchIr::Prefix(prefix.into()),
            replacement,
        );
        match action.regex_rewrite {
            Some(r) => regex::Regex::new(&r.pattern.expect("pattern").regex)
                .expect("compiles")
                .replace(path, r.substitution.as_str())
                .into_owned(),
            None => {
                let matched = prefix.trim_end_matches('/');
                format!("{}{}", action.prefix_rewrite, &path[matched.len()..])
            }
        }
    }

    /// Gateway API's ReplacePrefixMatch examples (HTTPPathModifier) and conformance cases.
    #[test]
    fn replace_prefix_match_is_element_wise() {
        for (prefix, replacement, path, expected) in [
            ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo", "/xyz"),
            ("/foo", "/", "/foo/bar", "/bar"),
            ("/foo", "/", "/foo", "/"),
            ("/foo/", "/", "/foo/bar", "/bar"),
            ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
            ("/", "/v2", "/x/y", "/v2/x/y"),
        ] {
            assert_eq!(
                rewritten(prefix, replacement, path),
                expected,
                "{prefix} -> {replacement} on {path}"
            );
        }
    }

    /// Whether Envoy's full-match RE2 semantics of `pattern` accept `origin` (the `regex` crate
    /// agrees with RE2 on the constructs `origin_regex` emits).
    fn origin_allowed(pattern: &str, origin: &str) -> bool {
        regex::Regex::new(&format!("^(?:{})$", origin_regex(pattern)))
            .expect("origin pattern compiles")
            .is_match(origin)
    }

    #[test]
    fn origins_match_as_gateway_api_describes() {
        assert!(origin_allowed("*", "https://anything.test:8443"));
        assert!(origin_allowed("https://app.example", "https://app.example"));
        assert!(origin_allowed(
            "https://app.example",
            "https://app.example:443"
        ));
        assert!(origin_allowed(
            "https://app.example:443",
            "https://app.example"
        ));
        assert!(!origin_allowed("https://app.example", "http://app.example"));
        assert!(!origin_allowed(
            "https://app.example",
            "https://app.example:8443"
        ));
        assert!(!origin_allowed(
            "https://app.example",
            "https://appxexample"
        ));
        assert!(!origin_allowed(
            "https://app.example",
            "https://evil.app.example"
        ));
        assert!(origin_allowed(
            "http://localhost:3000",
            "http://localhost:3000"
        ));
        assert!(!origin_allowed("http://localhost:3000", "http://localhost"));
        // The wildcard takes any number of labels to its left, and nothing else.
        assert!(origin_allowed(
            "https://*.example.com",
            "https://a.example.com"
        ));
        assert!(origin_allowed(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_allowed(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!origin_allowed(
            "https://*.example.com",
            "https://a.example.com.evil"
        ));
        assert!(!origin_allowed(
            "https://*.example.com",
            "http://a.example.com"
        ));
        assert!(!origin_allowed(
            "https://*.example.com",
            "https://a.example.com:8443"
        ));
        assert!(origin_allowed("https://*", "https://any.host"));
    }

    #[test]
    fn cors_becomes_a_per_route_policy_and_the_filter_precedes_the_router() {
        let mut route = forwarding_route(vec![backend("service/apps/app/80", 1)], 0);
        Arc::make_mut(&mut route.filters).cors = Some(CorsIr {
            allow_origins: vec!["https://app.example".into()],
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["Authorization".into()],
            expose_headers: vec!["X-Request-Id".into(), "X-Other".into()],
            max_age_seconds: Some(600),
            allow_credentials: true,
        });
        let envoy = route_of(&route);
        let config = envoy
            .typed_per_filter_config
            .get(CORS_FILTER)
            .expect("per-route CORS policy");
        assert_eq!(config.type_url, CorsPolicy::type_url());
        let policy = CorsPolicy::decode(config.value.as_slice()).expect("decodes");
        assert_eq!(policy.allow_methods, "GET,PUT");
        assert_eq!(policy.allow_headers, "Authorization");
        assert_eq!(policy.expose_headers, "X-Request-Id,X-Other");
        assert_eq!(policy.max_age, "600");
        assert_eq!(policy.allow_credentials, Some(BoolValue { value: true }));
        assert_eq!(policy.allow_origin_string_match.len(), 1);

        let without = route_of(&forwarding_route(vec![backend("c", 1)], 0));
        assert!(without.typed_per_filter_config.is_empty());

        let Some(filter::ConfigType::TypedConfig(hcm)) = hcm_filter(
            "l",
            "r",
            listener_policy_filters(&ListenerNeeds::default()),
            None,
        )
        .config_type
        else {
            panic!("HCM has a typed config");
        };
        let hcm = HttpConnectionManager::decode(hcm.value.as_slice()).expect("decodes");
        let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        // CORS first, the router last, the policy filters (disabled until a route enables
        // them) in between.
        assert_eq!(names.first(), Some(&CORS_FILTER));
        assert_eq!(names.last(), Some(&"envoy.filters.http.router"));
        assert!(names.contains(&policy_config::RBAC_FILTER));
    }

    fn weighted(route: &Route) -> Vec<ClusterWeight> {
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("forwarding route");
        };
        match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w.clusters.clone(),
            other => panic!("weighted clusters expected, got {other:?}"),
        }
    }

    #[test]
    fn backend_ref_headers_go_on_their_weighted_cluster_only() {
        let mut with_headers = backend("service/apps/a/80", 1);
        with_headers.request_headers = Some(Box::new(HeaderModifierIr {
            set: vec![HeaderValueIr {
                name: "x-only-a".into(),
                value: "yes".into(),
            }],
            add: Vec::new(),
            remove: vec!["x-debug".into()],
        }));
        with_headers.response_headers = Some(Box::new(HeaderModifierIr {
            set: Vec::new(),
            add: vec![HeaderValueIr {
                name: "x-served-by".into(),
                value: "a".into(),
            }],
            remove: Vec::new(),
        }));
        let two = route_of(&forwarding_route(
            vec![with_headers.clone(), backend("service/apps/b/80", 1)],
            0,
        ));
        let clusters = weighted(&two);
        assert_eq!(clusters.len(), 2);
        let a = &clusters[0];
        assert_eq!(a.request_headers_to_add.len(), 1);
        assert_eq!(
            a.request_headers_to_add[0]
                .header
                .as_ref()
                .map(|h| h.key.as_str()),
            Some("x-only-a")
        );
        assert_eq!(a.request_headers_to_remove, ["x-debug"]);
        assert_eq!(
            a.response_headers_to_add[0]
                .header
                .as_ref()
                .map(|h| h.value.as_str()),
            Some("a")
        );
        let b = &clusters[1];
        assert!(b.request_headers_to_add.is_empty() && b.response_headers_to_add.is_empty());
        assert!(two.request_headers_to_add.is_empty(), "not on the route");

        // A single backendRef with filters keeps them: a one-entry weighted cluster.
        let one = route_of(&forwarding_route(vec![with_headers], 0));
        assert_eq!(weighted(&one).len(), 1);
        // Without filters or invalid weight a single backend stays a plain cluster.
        let plain = route_of(&forwarding_route(vec![backend("c", 1)], 0));
        let Some(route::Action::Route(action)) = &plain.action else {
            panic!("forwarding route");
        };
        assert_eq!(
            action.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster("c".into()))
        );
    }

    #[test]
    fn invalid_weight_becomes_a_500_share_of_the_split() {
        let route = route_of(&forwarding_route(vec![backend("service/apps/a/80", 3)], 1));
        let clusters = weighted(&route);
        let shares: Vec<(&str, u32)> = clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight.as_ref().map_or(0, |w| w.value)))
            .collect();
        assert_eq!(
            shares,
            [("service/apps/a/80", 3), (INVALID_BACKEND_CLUSTER, 1)]
        );
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("forwarding route");
        };
        assert_eq!(
            action.cluster_not_found_response_code,
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32
        );
        // Routes without invalid backends keep Envoy's default (503) for a missing cluster.
        let healthy = route_of(&forwarding_route(vec![backend("a", 1), backend("b", 1)], 0));
        let Some(route::Action::Route(action)) = &healthy.action else {
            panic!("forwarding route");
        };
        assert_eq!(action.cluster_not_found_response_code, 0);
    }
}
