//! Building blocks of Envoy configuration (pure): typed xDS messages for listeners, routes,
//! clusters and endpoints, and their packing into protocol [`Resource`]s whose version is a hash
//! of their content, so identical configuration is never re-sent. The translator's output is
//! assembled from these; tests use them to serve hand-made configuration.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address, config_source,
    socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route,
    route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

use super::protocol::Resource;
use crate::short_hash::short_sha256_hex;

/// Packs a message into an `Any`.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A protocol resource named `name` whose version is a hash of its encoding.
pub fn resource<M: Message + Name>(name: &str, message: &M) -> Resource {
    encoded(name, message.encode_to_vec())
}

/// A protocol resource named `name` with an already encoded body, versioned like [`resource`].
pub fn encoded(name: &str, body: Vec<u8>) -> Resource {
    let version = short_sha256_hex(&body, 8);
    Resource {
        name: name.to_owned(),
        version,
        body: body.into(),
    }
}

/// Configuration delivered over the same ADS stream.
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..ConfigSource::default()
    }
}

pub fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..SocketAddress::default()
        })),
    }
}

/// A plaintext HTTP listener whose routes come from RDS (`route_config_name`) over ADS.
pub fn http_listener(name: &str, addr: SocketAddr, route_config_name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// A route on a path prefix to weighted clusters (one cluster: a plain cluster action).
pub fn prefix_route(name: &str, prefix: &str, clusters: &[(&str, u32)]) -> Route {
    let cluster_specifier = match clusters {
        [(single, _)] => route_action::ClusterSpecifier::Cluster((*single).to_owned()),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(c, w)| weighted_cluster::ClusterWeight {
                    name: (*c).to_owned(),
                    weight: Some(UInt32Value { value: *w }),
                    ..weighted_cluster::ClusterWeight::default()
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    Route {
        name: name.to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_owned())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

pub fn route_configuration(name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts,
        ..RouteConfiguration::default()
    }
}

pub fn virtual_host(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
        ..VirtualHost::default()
    }
}

/// A cluster whose endpoints come from EDS over ADS.
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(PbDuration {
            seconds: 5,
            nanos: 0,
        }),
        ..Cluster::default()
    }
}

pub fn load_assignment(cluster_name: &str, endpoints: &[SocketAddr]) -> ClusterLoadAssignment {
    load_assignment_of(
        cluster_name,
        endpoints.iter().map(|a| socket_address(*a)).collect(),
    )
}

/// A load assignment over any kind of address (IP, hostname, pipe).
pub fn load_assignment_of(cluster_name: &str, addresses: Vec<Address>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addresses
                .into_iter()
                .map(|address| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                })
                .collect(),
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// A hostname and port (resolved by a DNS cluster).
pub fn hostname_address(hostname: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: hostname.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

/// A Unix domain socket.
pub fn pipe_address(path: &str) -> Address {
    Address {
        address: Some(address::Address::Pipe(
            envoy_types::pb::envoy::config::core::v3::Pipe {
                path: path.to_owned(),
                mode: 0,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_version_follows_content() {
        let a = resource("c", &eds_cluster("c"));
        let b = resource("c", &eds_cluster("c"));
        let other = resource("c", &eds_cluster("d"));
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, other.version);
        let decoded = Cluster::decode(a.body.as_ref()).expect("decodes");
        assert_eq!(decoded.name, "c");
    }

    #[test]
    fn weighted_routes_carry_their_weights() {
        let r = prefix_route("r", "/", &[("a", 90), ("b", 10)]);
        let Some(route::Action::Route(action)) = r.action else {
            panic!("route action");
        };
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = action.cluster_specifier
        else {
            panic!("weighted clusters");
        };
        let weights: Vec<u32> = w
            .clusters
            .iter()
            .filter_map(|c| c.weight.as_ref().map(|v| v.value))
            .collect();
        assert_eq!(weights, [90, 10]);
    }
}
