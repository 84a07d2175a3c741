//! No request is dropped while routes are reordered and backends added under continuous load:
//! cluster names derive from backend identity, so a reorder never renames (and so never drains)
//! a live cluster, and new clusters reach Envoy before the routes that use them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::netns::TestHost;
use eg_e2e::process::ManagedProcess;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::control_plane::run::{ControlPlaneSettings, run};
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, bootstrap};
use eg_operator::xds::from_ir::ListenerBinding;
use eg_operator::xds::server::{AdsServer, SnapshotStore};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

async fn apply(client: &Client, ns: Option<&str>, obj: serde_json::Value) {
    let types: kube::api::TypeMeta = serde_json::from_value(obj.clone()).expect("type meta");
    let ar = kube::api::ApiResource::from_gvk(
        &kube::api::GroupVersionKind::try_from(&types).expect("gvk"),
    );
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

#[tokio::test]
async fn reordering_routes_and_adding_backends_drops_no_request() {
    with_temp_namespace(|client, ns| async move {
        let logs = tempfile::tempdir()?;
        let mut hosts: Vec<(TestHost, ManagedProcess)> = Vec::new();
        for i in 0..4 {
            let host = TestHost::create()?;
            let addr = SocketAddr::new(IpAddr::V4(host.address), 8080);
            let p = host.spawn(&format!("b{i}"), Path::new(env!("CARGO_BIN_EXE_eg-echo")),
                &[format!("b{i}"), addr.to_string()], &logs.path().join(format!("b{i}.log")))?;
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})).await;
            apply(&client, Some(&ns), json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("svc-{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [host.address.to_string()], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})).await;
            hosts.push((host, p));
        }
        let controller_name = format!("example.com/nodrop-{ns}");
        let port = free_port(LOOPBACK)?;
        apply(&client, None, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": format!("gc-{ns}")}, "spec": {"controllerName": controller_name}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public"},
            "spec": {"gatewayClassName": format!("gc-{ns}"), "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}})).await;
        let rules = |order: &[usize], backends: &[usize]| -> serde_json::Value {
            let mut rules: Vec<serde_json::Value> = order.iter().map(|i| json!({
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/p{i}")}}],
                "backendRefs": [{"name": format!("svc-{i}"), "port": 80}]})).collect();
            rules.push(json!({"backendRefs": backends.iter().map(|b| json!({"name": format!("svc-{b}"), "port": 80})).collect::<Vec<_>>()}));
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "shop"},
                "spec": {"parentRefs": [{"name": "public"}], "rules": rules}})
        };
        apply(&client, Some(&ns), rules(&[0, 1], &[0])).await;

        let store = SnapshotStore::default();
        let ads = AdsServer::new(store.clone());
        let events = ads.events();
        let xds_listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
        let xds = xds_listener.local_addr()?;
        tokio::spawn(tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(TcpListenerStream::new(xds_listener)));
        let (_leader, leading) = tokio::sync::watch::channel(true);
        let control_plane = tokio::spawn(run(client.clone(), ControlPlaneSettings {
            controller_name, watch_namespaces: vec![ns.clone()],
            binding: ListenerBinding { ip: LOOPBACK, port_offset: 0 } }, store, events, leading));
        let envoy = EnvoyProcess::start(&bootstrap(&BootstrapSpec {
            node_id: "proxy-0".into(), node_cluster: format!("{ns}/public"),
            admin: SocketAddr::new(LOOPBACK, 0), xds_server: xds, flavour: AdsFlavour::Delta, tls: None,
        }).to_string()).await?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let start = Instant::now();
        while !http.get(format!("{base}/p0")).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(start.elapsed() < Duration::from_secs(20), "route never served");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }

        // Load: two clients over the paths that exist throughout, counting every non-2xx.
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut load = Vec::new();
        for worker in 0..2 {
            let (stop, ok, bad, http, base) = (stop.clone(), ok.clone(), bad.clone(), http.clone(), base.clone());
            load.push(tokio::spawn(async move {
                let paths = ["/p0/x", "/p1/y", "/other"];
                let mut n = worker;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let path = paths[n % paths.len()];
                    match http.get(format!("{base}{path}")).send().await {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            let flags = r.headers().get("x-envoy-response-flags").cloned();
                            eprintln!("{path}: {} {flags:?} {:?}", r.status(), r.text().await.unwrap_or_default());
                            bad.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("{path}: {e}");
                            bad.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
        // Reorder rules and add backends to the default rule, several times.
        let steps: [(&[usize], &[usize]); 5] = [
            (&[1, 0], &[0]),
            (&[1, 0, 2], &[0, 2]),
            (&[2, 0, 1], &[0, 2, 3]),
            (&[0, 1, 2, 3], &[3, 2, 1, 0]),
            (&[3, 1], &[1]),
        ];
        for (order, backends) in steps {
            let mut order = order.to_vec();
            // Paths /p0 and /p1 must keep existing for the load.
            for keep in [0, 1] {
                if !order.contains(&keep) {
                    order.push(keep);
                }
            }
            apply(&client, Some(&ns), rules(&order, backends)).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for l in load {
            l.await?;
        }
        let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
        eprintln!("under 5 route changes: {ok} requests answered 2xx, {bad} not");
        assert!(ok > 100, "too little load to prove anything: {ok}");
        assert_eq!(bad, 0, "{bad} of {} requests failed during route changes", ok + bad);
        envoy.stop();
        control_plane.abort();
        drop(hosts);
        Ok(())
    })
    .await;
}
