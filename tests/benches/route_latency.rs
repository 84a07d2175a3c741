//! `make bench` (end to end): the time from creating an HTTPRoute in the real apiserver to the
//! first 200 through a real Envoy programmed by the control plane over ADS, over 50 routes;
//! prints p50/p99 and merges them into `target/bench/results.json`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::netns::TestHost;
use eg_e2e::{LOOPBACK, free_port, shared_cluster};
use eg_operator::control_plane::run::{ControlPlaneSettings, run};
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, bootstrap};
use eg_operator::xds::from_ir::ListenerBinding;
use eg_operator::xds::server::{AdsServer, SnapshotStore};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

const ROUTES: usize = 50;

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
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = shared_cluster().client();
    let ns = "bench-latency";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await;

    let logs = tempfile::tempdir()?;
    let host = TestHost::create()?;
    let backend = SocketAddr::new(IpAddr::V4(host.address), 8080);
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/eg-echo");
    let _echo = host.spawn(
        "echo",
        &echo,
        &["echo".into(), backend.to_string()],
        &logs.path().join("echo.log"),
    )?;
    while tokio::net::TcpStream::connect(backend).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    apply(
        &client,
        Some(ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    apply(&client, Some(ns), json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "labels": {"kubernetes.io/service-name": "echo"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": [host.address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})).await;
    let controller_name = "example.com/bench".to_owned();
    let port = free_port(LOOPBACK)?;
    apply(
        &client,
        None,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "bench"}, "spec": {"controllerName": controller_name}}),
    )
    .await;
    apply(&client, Some(ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public"},
        "spec": {"gatewayClassName": "bench", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}})).await;

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
    let (_leader, leading) = tokio::sync::watch::channel(true);
    tokio::spawn(run(
        client.clone(),
        ControlPlaneSettings {
            controller_name,
            watch_namespaces: vec![ns.to_owned()],
            binding: ListenerBinding {
                ip: LOOPBACK,
                port_offset: 0,
            },
        },
        store,
        events,
        leading,
    ));
    let envoy = EnvoyProcess::start(
        &bootstrap(&BootstrapSpec {
            node_id: "bench-0".into(),
            node_cluster: format!("{ns}/public"),
            admin: SocketAddr::new(LOOPBACK, 0),
            xds_server: xds,
            flavour: AdsFlavour::Delta,
            tls: None,
        })
        .to_string(),
    )
    .await?;

    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(ROUTES);
    for i in 0..ROUTES {
        let host_header = format!("r{i}.bench.test");
        let created = Instant::now();
        apply(
            &client,
            Some(ns),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{i}")},
            "spec": {"parentRefs": [{"name": "public"}], "hostnames": [host_header],
                     "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}),
        )
        .await;
        loop {
            let ok = http
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", &host_header)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            anyhow::ensure!(
                created.elapsed() < Duration::from_secs(30),
                "route {i} never served"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(created.elapsed());
    }
    samples.sort();
    let figures = BTreeMap::from([
        (
            "route_create_to_first_200_p50_ms".to_owned(),
            percentile(&samples, 0.5),
        ),
        (
            "route_create_to_first_200_p99_ms".to_owned(),
            percentile(&samples, 0.99),
        ),
    ]);
    println!("HTTPRoute created in the apiserver -> first 200 through Envoy, {ROUTES} routes");
    for (name, value) in &figures {
        println!("  {name:<42} {value:>10.2}");
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/results.json");
    let mut all: BTreeMap<String, f64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    all.extend(figures);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, serde_json::to_string_pretty(&all)? + "\n")?;
    println!("  written to {}", path.display());
    envoy.stop();
    Ok(())
}
