//! `make bench` (end to end): the time from creating an HTTPRoute in the real apiserver to the
//! first 200 through a real Envoy programmed by the control plane over ADS, over 50 routes;
//! prints p50/p99 and merges them into `target/bench/results.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::{LOOPBACK, free_port, shared_cluster};
use eg_operator::xds::bootstrap::AdsFlavour;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const ROUTES: usize = 50;

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

    // Beside this bench's own binary (`make bench` builds it in release), wherever the cargo
    // target directory is; `$EG_ECHO_BIN` overrides.
    let echo_bin = eg_e2e::tools::cargo_bin("eg-echo", "EG_ECHO_BIN")?;
    let echo = EchoHost::start("echo", &echo_bin).await?;
    service_with_endpoint(&client, ns, "echo", echo.address()).await;
    let controller_name = "example.com/bench".to_owned();
    let port = free_port(LOOPBACK)?;
    http_gateway(&client, ns, "public", "bench", &controller_name, port).await;

    let control_plane =
        common::start_control_plane(client.clone(), &controller_name, vec![ns.to_owned()]).await;
    let envoy = common::envoy_for(control_plane.xds, ns, "public", AdsFlavour::Delta).await;

    let http = reqwest::Client::new();
    // The figure is a route's way to a running proxy, so the proxy first answers (404: no
    // route yet) from the listener of its first snapshot; its own start-up would otherwise
    // be the first sample, and with 50 samples that one is the p99.
    let started = Instant::now();
    while http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the proxy never answered"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "proxy answering {} ms after the control plane started serving it",
        started.elapsed().as_millis()
    );
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
    drop(control_plane);
    Ok(())
}
