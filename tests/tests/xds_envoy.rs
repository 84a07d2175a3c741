//! The ADS server with a real Envoy: Envoy boots from the bootstrap this project generates,
//! receives listeners, routes, clusters and endpoints over state-of-the-world and delta ADS (the
//! latter over mutual TLS with the environment's certificates and the Gateway's own proxy
//! certificate, checked against `node.cluster`), carries requests to the echo
//! backends, follows configuration changes, and a configuration Envoy rejects is reported as a
//! NACK with Envoy's message while the previous configuration keeps serving.

#[path = "common/certs.rs"]
mod certs;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use certs::certificates_for;
use eg_e2e::backend::{Echo, EchoBackend};
use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::{LOOPBACK, free_port};
use eg_operator::environment::names::Names;
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, XdsTlsFiles, bootstrap};
use eg_operator::xds::envoy_config::{
    eds_cluster, http_listener, load_assignment, prefix_route, resource, route_configuration,
    virtual_host,
};
use eg_operator::xds::identity::{EnvironmentIdentity, PeerPolicy};
use eg_operator::xds::protocol::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Resource, Snapshot};
use eg_operator::xds::server::{AdsServer, ProxyEvent, SnapshotStore};
use envoy_types::pb::envoy::config::route::v3::route_match;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use tokio_stream::wrappers::TcpListenerStream;

const GATEWAY: &str = "shop/public";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

fn by_name(items: Vec<Resource>) -> BTreeMap<String, Resource> {
    items.into_iter().map(|r| (r.name.clone(), r)).collect()
}

/// One listener on `listen`, all paths to `split` (cluster name, weight), clusters with endpoints.
fn snapshot(
    version: &str,
    listen: SocketAddr,
    split: &[(&str, u32)],
    backends: &[(&str, SocketAddr)],
) -> Snapshot {
    let routes = route_configuration(
        "public-http",
        vec![virtual_host(
            "all",
            &["*"],
            vec![prefix_route("all", "/", split)],
        )],
    );
    let mut resources = BTreeMap::new();
    resources.insert(
        LISTENER.to_owned(),
        by_name(vec![resource(
            "public-http",
            &http_listener("public-http", listen, "public-http"),
        )]),
    );
    resources.insert(
        ROUTE.to_owned(),
        by_name(vec![resource("public-http", &routes)]),
    );
    resources.insert(
        CLUSTER.to_owned(),
        by_name(
            backends
                .iter()
                .map(|(n, _)| resource(n, &eds_cluster(n)))
                .collect(),
        ),
    );
    resources.insert(
        ENDPOINT.to_owned(),
        by_name(
            backends
                .iter()
                .map(|(n, addr)| resource(n, &load_assignment(n, &[*addr])))
                .collect(),
        ),
    );
    Snapshot {
        version: version.to_owned(),
        resources,
    }
}

async fn start_ads(
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (SocketAddr, SnapshotStore, AdsServer) {
    let store = SnapshotStore::default();
    let peers = if tls.is_some() {
        PeerPolicy::Certificate(EnvironmentIdentity::new("eg-test", "test"))
    } else {
        PeerPolicy::TrustNodeCluster
    };
    let ads = AdsServer::with_peer_policy(store.clone(), peers);
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind xDS");
    let addr = listener.local_addr().expect("addr");
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).expect("server TLS");
    }
    let router = builder.add_service(AggregatedDiscoveryServiceServer::new(ads.clone()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, store, ads)
}

/// Sends requests until one is answered by `backend` (Envoy applies xDS asynchronously).
async fn wait_for_backend(listen: SocketAddr, backend: &str, limit: Duration) -> Duration {
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(format!("http://{listen}/probe")).send().await
            && let Ok(echo) = resp.json::<Echo>().await
            && echo.backend == backend
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{backend} not reached through Envoy within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<ProxyEvent>,
    limit: Duration,
    pred: impl Fn(&ProxyEvent) -> bool,
) -> ProxyEvent {
    tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => continue,
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("event within the limit")
}

async fn run_scenario(flavour: AdsFlavour, mtls: bool) {
    let a = EchoBackend::http("a", ip("127.0.0.11"))
        .await
        .expect("backend a");
    let b = EchoBackend::http("b", ip("127.0.0.12"))
        .await
        .expect("backend b");

    let dir = tempfile::tempdir().expect("tempdir");
    let (server_tls, client_files) = if mtls {
        let names = Names::new("eg-test", "test");
        let (namespace, gateway) = GATEWAY.split_once('/').expect("namespace/name");
        let (certs, proxy) = certificates_for(&names, (namespace, gateway));
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write cert");
            path.display().to_string()
        };
        let files = XdsTlsFiles {
            ca_cert: write("ca.crt", &certs.trust_bundle),
            client_cert: write("tls.crt", &proxy.tls_crt),
            client_key: write("tls.key", &proxy.tls_key),
            server_name: names.xds_dns_names()[0].clone(),
        };
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &certs.xds_server.cert,
                &certs.xds_server.key,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&certs.trust_bundle));
        (Some(tls), Some(files))
    } else {
        (None, None)
    };

    let (xds, store, ads) = start_ads(server_tls).await;
    let mut events = ads.events();
    let listen = SocketAddr::new(LOOPBACK, free_port(LOOPBACK).expect("port"));
    store.set(
        GATEWAY,
        snapshot(
            "1",
            listen,
            &[("a", 1)],
            &[("a", a.addr()), ("b", b.addr())],
        ),
    );

    let spec = BootstrapSpec {
        node_id: "proxy-0".into(),
        node_cluster: GATEWAY.into(),
        admin: SocketAddr::new(LOOPBACK, 0),
        xds_server: xds.into(),
        flavour,
        tls: client_files,
    };
    let envoy = EnvoyProcess::start(&bootstrap(&spec).to_string())
        .await
        .expect("envoy starts");
    let first = wait_for_backend(listen, "a", Duration::from_secs(15)).await;
    eprintln!("{flavour:?} mtls={mtls}: first response through xDS config after {first:?}");
    next_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, ProxyEvent::Ack { type_url, .. } if type_url == ROUTE),
    )
    .await;

    // A change reaches Envoy: everything to b.
    store.set(
        GATEWAY,
        snapshot(
            "2",
            listen,
            &[("b", 1)],
            &[("a", a.addr()), ("b", b.addr())],
        ),
    );
    let switched = wait_for_backend(listen, "b", Duration::from_secs(10)).await;
    eprintln!("{flavour:?}: route change served after {switched:?}");

    // A route Envoy rejects (invalid RE2): NACK with Envoy's message, b keeps serving.
    let mut bad = snapshot(
        "3",
        listen,
        &[("a", 1)],
        &[("a", a.addr()), ("b", b.addr())],
    );
    let mut route = prefix_route("bad", "/", &[("a", 1)]);
    if let Some(m) = route.r#match.as_mut() {
        m.path_specifier = Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "(unclosed".into(),
            ..RegexMatcher::default()
        }));
    }
    let bad_routes = route_configuration(
        "public-http",
        vec![virtual_host("all", &["*"], vec![route])],
    );
    bad.resources.insert(
        ROUTE.to_owned(),
        by_name(vec![resource("public-http", &bad_routes)]),
    );
    store.set(GATEWAY, bad);
    let nack = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ProxyEvent::Nack { .. })
    })
    .await;
    let ProxyEvent::Nack {
        type_url,
        message,
        gateway,
        ..
    } = nack
    else {
        unreachable!("filtered on Nack");
    };
    assert_eq!(type_url, ROUTE);
    assert_eq!(gateway, GATEWAY);
    assert!(
        message.contains("missing )"),
        "Envoy's RE2 error: {message}"
    );
    for _ in 0..20 {
        let echo: Echo = reqwest::get(format!("http://{listen}/after-nack"))
            .await
            .expect("still serving")
            .json()
            .await
            .expect("echo");
        assert_eq!(echo.backend, "b", "the last good config keeps serving");
    }
    envoy.stop();
}

#[tokio::test]
async fn envoy_follows_state_of_the_world_ads_and_reports_nacks() {
    run_scenario(AdsFlavour::StateOfTheWorld, false).await;
}

#[tokio::test]
async fn envoy_follows_delta_ads_over_mutual_tls() {
    run_scenario(AdsFlavour::Delta, true).await;
}
