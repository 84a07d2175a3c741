//! The control plane end to end on the real apiserver with a real Envoy: a GatewayClass,
//! Gateway, HTTPRoute, Services and EndpointSlices become Envoy configuration over ADS, requests
//! reach the right echo backend by path and header, route edits reach Envoy, and statuses are
//! written back on the Gateway and the HTTPRoute.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use std::path::Path;

use eg_e2e::backend::Echo;
use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::netns::TestHost;
use eg_e2e::process::ManagedProcess;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::control_plane::run::{ControlPlaneSettings, run};
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, bootstrap};
use eg_operator::xds::from_ir::ListenerBinding;
use eg_operator::xds::server::{AdsServer, SnapshotStore};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

async fn apply(client: &Client, ns: Option<&str>, obj: serde_json::Value) {
    let types: kube::api::TypeMeta = serde_json::from_value(obj.clone()).expect("type meta");
    let gvk = kube::api::GroupVersionKind::try_from(&types).expect("gvk");
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// An echo backend on its own test host (network namespace): EndpointSlices may not point at
/// loopback, so backends behind Services need an address of their own.
struct RemoteEcho {
    _process: ManagedProcess,
    _host: TestHost,
    _logs: tempfile::TempDir,
    addr: SocketAddr,
}

async fn remote_echo(name: &str) -> RemoteEcho {
    let host = TestHost::create().expect("test host (needs root and iproute2)");
    let addr = SocketAddr::new(IpAddr::V4(host.address), 8080);
    let logs = tempfile::tempdir().expect("tempdir");
    let process = host
        .spawn(
            name,
            Path::new(env!("CARGO_BIN_EXE_eg-echo")),
            &[name.to_owned(), addr.to_string()],
            &logs.path().join("echo.log"),
        )
        .expect("start eg-echo");
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} not listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    RemoteEcho {
        _process: process,
        _host: host,
        _logs: logs,
        addr,
    }
}

/// A Service and the EndpointSlice the endpoint controller would make for a backend.
async fn service_for(client: &Client, ns: &str, name: &str, backend: &RemoteEcho) {
    apply(
        client,
        Some(ns),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": backend.addr.port()}]}
        }),
    )
    .await;
    apply(client, Some(ns), json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [backend.addr.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": backend.addr.port(), "protocol": "TCP"}]
    }))
    .await;
}

async fn get(listen: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Echo> {
    let mut req = reqwest::Client::new().get(format!("http://{listen}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<Echo>().await.ok()
}

/// Re-evaluates the async expression `$probe` (an `Option`) until it is `Some`, failing after
/// `$limit`; yields the value and how long it took.
macro_rules! until {
    ($what:expr, $limit:expr, $probe:expr) => {{
        let start = Instant::now();
        loop {
            if let Some(v) = $probe {
                break (v, start.elapsed());
            }
            assert!(
                start.elapsed() < $limit,
                "timed out after {:?}: {}",
                $limit,
                $what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

#[tokio::test]
async fn http_routes_are_served_by_envoy_and_statuses_written() {
    with_temp_namespace(|client, ns| async move {
        let a = remote_echo("a").await;
        let b = remote_echo("b").await;
        service_for(&client, &ns, "echo-a", &a).await;
        service_for(&client, &ns, "echo-b", &b).await;

        let controller_name = format!("example.com/e2e-{ns}");
        let class = format!("gc-{ns}");
        let port = free_port(LOOPBACK)?;
        apply(&client, None, json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": class},
            "spec": {"controllerName": controller_name}
        }))
        .await;
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public"},
            "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}
        }))
        .await;

        // The control plane and its xDS server, and an Envoy for the Gateway.
        let store = SnapshotStore::default();
        let ads = AdsServer::new(store.clone());
        let events = ads.events();
        let xds_listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
        let xds = xds_listener.local_addr()?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(ads))
                .serve_with_incoming(TcpListenerStream::new(xds_listener)),
        );
        let control_plane = tokio::spawn(run(
            client.clone(),
            ControlPlaneSettings {
                controller_name: controller_name.clone(),
                watch_namespaces: vec![ns.clone()],
                binding: ListenerBinding { ip: LOOPBACK, port_offset: 0 },
            },
            store,
            events,
            tokio::sync::watch::channel(true).1,
        ));
        let envoy = EnvoyProcess::start(
            &bootstrap(&BootstrapSpec {
                node_id: "proxy-0".into(),
                node_cluster: format!("{ns}/public"),
                admin: SocketAddr::new(LOOPBACK, 0),
                xds_server: xds,
                flavour: AdsFlavour::Delta,
                tls: None,
            })
            .to_string(),
        )
        .await?;
        let listen = SocketAddr::new(LOOPBACK, port);

        let created = Instant::now();
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"name": "x-canary", "value": "true"}]}],
                     "backendRefs": [{"name": "echo-b", "port": 8080}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/b"}}],
                     "backendRefs": [{"name": "echo-b", "port": 8080}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "backendRefs": [{"name": "echo-a", "port": 8080}]}
                ]
            }
        }))
        .await;
        let (_, first) = until!("first 200 through Envoy", Duration::from_secs(20), async {
            get(listen, "/shop", &[]).await.filter(|e| e.backend == "a")
        }.await);
        eprintln!("HTTPRoute created → first 200 through Envoy: {:?} (probe loop {first:?})", created.elapsed());

        let echo = get(listen, "/b/cart", &[]).await.expect("prefix /b");
        assert_eq!((echo.backend.as_str(), echo.path.as_str()), ("b", "/b/cart"));
        let echo = get(listen, "/bx", &[]).await.expect("/bx is not under the /b segment");
        assert_eq!(echo.backend, "a");
        let echo = get(listen, "/anything", &[("x-canary", "true")]).await.expect("header match");
        assert_eq!(echo.backend, "b");

        // Status written back: the route is accepted by its parent, the Gateway programmed.
        let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns);
        let (parent, _) = until!("HTTPRoute status", Duration::from_secs(10), async {
            routes.get("shop").await.ok()?.status?.parents.into_iter().next()
        }.await);
        assert_eq!(parent.controller_name, controller_name);
        let accepted = parent.conditions.iter().find(|c| c.type_ == "Accepted").expect("Accepted");
        assert_eq!(accepted.status, "True");
        let gateways: Api<Gateway> = Api::namespaced(client.clone(), &ns);
        let (listener_status, _) = until!("Gateway status", Duration::from_secs(10), async {
            gateways.get("public").await.ok()?.status?.listeners?.into_iter().next()
        }.await);
        assert_eq!(listener_status.attached_routes, 1);
        // Programmed only once the proxy has ACKed the current configuration.
        let (programmed, _) = until!("Gateway Programmed=True", Duration::from_secs(10), async {
            gateways
                .get("public")
                .await
                .ok()?
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Programmed" && c.status == "True")
        }
        .await);
        assert_eq!(programmed.reason, "Programmed");

        // An edit reaches Envoy: everything to b now.
        let edited = Instant::now();
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {"parentRefs": [{"name": "public"}],
                     "rules": [{"backendRefs": [{"name": "echo-b", "port": 8080}]}]}
        }))
        .await;
        until!("edit served", Duration::from_secs(10), async {
            get(listen, "/shop", &[]).await.filter(|e| e.backend == "b")
        }.await);
        eprintln!("HTTPRoute edited → served by Envoy after {:?}", edited.elapsed());

        envoy.stop();
        control_plane.abort();
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn route_to_a_missing_service_is_reported_as_backend_not_found() {
    with_temp_namespace(|client, ns| async move {
        let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns);
        let controller_name = format!("example.com/e2e-{ns}");
        let class = format!("gc-{ns}");
        apply(&client, None, json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": class}, "spec": {"controllerName": controller_name}
        }))
        .await;
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public"},
            "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "protocol": "HTTP", "port": 8080}]}
        }))
        .await;
        routes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "broken"},
                    "spec": {"parentRefs": [{"name": "public"}],
                             "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}]}
                }))?,
            )
            .await?;
        let control_plane = tokio::spawn(run(
            client.clone(),
            ControlPlaneSettings {
                controller_name: controller_name.clone(),
                watch_namespaces: vec![ns.clone()],
                binding: ListenerBinding { ip: LOOPBACK, port_offset: 0 },
            },
            SnapshotStore::default(),
            AdsServer::new(SnapshotStore::default()).events(),
            tokio::sync::watch::channel(true).1,
        ));
        let (resolved, _) = until!("ResolvedRefs condition", Duration::from_secs(15), async {
            let parents = routes.get("broken").await.ok()?.status?.parents;
            parents
                .into_iter()
                .next()?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ResolvedRefs")
        }.await);
        assert_eq!((resolved.status.as_str(), resolved.reason.as_str()), ("False", "BackendNotFound"));
        assert!(resolved.message.contains("nowhere"), "{}", resolved.message);
        // No proxy has taken this Gateway's configuration: it is not Programmed yet.
        let gateways: Api<Gateway> = Api::namespaced(client.clone(), &ns);
        let (pending, _) = until!("Gateway Programmed=False Pending", Duration::from_secs(10), async {
            gateways
                .get("public")
                .await
                .ok()?
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Programmed" && c.reason == "Pending")
        }
        .await);
        assert_eq!(pending.status, "False");
        control_plane.abort();
        Ok(())
    })
    .await;
}
