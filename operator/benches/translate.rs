//! `make bench` (translation): builds a synthetic cluster of 1000 HTTPRoutes (5 hostnames, 10
//! rules each) on one Gateway, then measures full translation to Envoy snapshots, the
//! re-translation after one route changes, and the resident memory of holding it all (and, apart,
//! of the input objects alone, which that includes). Prints the figures and merges them into
//! `target/bench/results.json`.
//!
//! Full translation is cold (the free functions, no caches). Re-translation is what the control
//! plane does: an incremental `Translator` and `SnapshotBuilder` that translated the previous
//! snapshot.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use eg_operator::translate::{Snapshot, Translator, translate};
use eg_operator::xds::from_ir::{ListenerBinding, SnapshotBuilder, snapshot};
use serde_json::json;

/// The allocator the `eg-operator` binary runs with, so the figures are the controller's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUTES: usize = 1000;
const HOSTNAMES: usize = 5;
const RULES: usize = 10;
const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("synthetic object")
}

fn route(i: usize, variant: usize) -> gateway_api::apis::standard::httproutes::HttpRoute {
    let hostnames: Vec<String> = (0..HOSTNAMES)
        .map(|h| format!("r{i}-h{h}.example.com"))
        .collect();
    let rules: Vec<serde_json::Value> = (0..RULES)
        .map(|r| {
            json!({
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/svc{r}/v{variant}")},
                             "headers": [{"name": "x-tenant", "value": format!("t{r}")}]}],
                "backendRefs": [
                    {"name": format!("svc-{}", (i + r) % 50), "port": 8080, "weight": 90},
                    {"name": format!("svc-{}", (i + r + 1) % 50), "port": 8080, "weight": 10}
                ]
            })
        })
        .collect();
    from(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("route-{i}"), "namespace": "apps", "generation": 1,
                     "uid": format!("00000000-0000-0000-0000-{i:012}"),
                     // As the apiserver sets it: a new one on every write.
                     "resourceVersion": format!("{}", 1000 + i * 100 + variant),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": hostnames, "rules": rules}
    }))
}

fn cluster() -> Snapshot {
    let services = (0..50)
        .map(|s| {
            from(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{s}"), "namespace": "apps"},
                "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
            }))
        })
        .collect();
    let endpoint_slices = (0..50)
        .map(|s| from(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{s}-1"), "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
            "addressType": "IPv4",
            "endpoints": (0..3).map(|e| json!({"addresses": [format!("10.1.{s}.{e}")], "conditions": {"ready": true}})).collect::<Vec<_>>(),
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        })))
        .collect();
    Snapshot {
        controller_name: CONTROLLER.into(),
        gateway_classes: vec![from(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "eg"}, "spec": {"controllerName": CONTROLLER}
        }))],
        gateways: vec![from(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public", "namespace": "apps", "generation": 1},
            "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}
        }))],
        http_routes: (0..ROUTES).map(|i| route(i, 0)).collect(),
        services,
        endpoint_slices,
        namespaces: vec![from(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
        )],
        ..Snapshot::default()
    }
}

const BINDING: ListenerBinding = ListenerBinding {
    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    port_offset: 0,
};

/// Incremental translation to Envoy, as the control plane loop does it.
fn retranslate_to_envoy(
    s: &Snapshot,
    translator: &mut Translator,
    builder: &mut SnapshotBuilder,
) -> usize {
    let t = translator.translate(s);
    let total = t
        .gateways
        .iter()
        .map(|g| {
            builder
                .build(g, BINDING, "1")
                .resources
                .values()
                .map(|r| r.len())
                .sum::<usize>()
        })
        .sum();
    builder.finish_round();
    total
}

fn translate_to_envoy(s: &Snapshot) -> usize {
    let binding = BINDING;
    let t = translate(s);
    t.gateways
        .iter()
        .map(|g| {
            snapshot(g, binding, "1")
                .resources
                .values()
                .map(|r| r.len())
                .sum::<usize>()
        })
        .sum()
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rss_before = rss_kib();
    let mut snap = cluster();
    // For profilers: `EG_BENCH_PROFILE=ir|full|retranslate` repeats one figure's work for a
    // few seconds and prints nothing else, so a profile is not diluted by building the input;
    // `once` does the memory figure's work once, for heap profilers.
    if let Ok(which) = std::env::var("EG_BENCH_PROFILE") {
        profile_loop(&which, &mut snap);
        return;
    }
    let rss_snapshot = rss_kib();
    let resources = translate_to_envoy(&snap);
    let t = translate(&snap);
    let rss_holding = rss_kib();
    let domains: usize = t.gateways[0].listeners[0]
        .virtual_hosts
        .iter()
        .map(|v| v.domains.len())
        .sum();
    assert_eq!(domains, ROUTES * HOSTNAMES);

    let runs = 15;
    let translate_only: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(translate(black_box(&snap)));
            start.elapsed()
        })
        .collect();
    let full: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(translate_to_envoy(black_box(&snap)));
            start.elapsed()
        })
        .collect();
    let rss_before_incremental = rss_kib();
    let mut translator = Translator::new();
    let mut builder = SnapshotBuilder::new();
    retranslate_to_envoy(&snap, &mut translator, &mut builder);
    let one_change: Vec<Duration> = (0..runs)
        .map(|v| {
            snap.http_routes[ROUTES / 2] = route(ROUTES / 2, v + 1);
            let start = Instant::now();
            black_box(retranslate_to_envoy(
                black_box(&snap),
                &mut translator,
                &mut builder,
            ));
            start.elapsed()
        })
        .collect();
    let rss_incremental = rss_kib();

    let figures = BTreeMap::from([
        ("translate_1000_routes_ms".to_owned(), median_ms(full)),
        (
            "translate_1000_routes_ir_only_ms".to_owned(),
            median_ms(translate_only),
        ),
        (
            "retranslate_after_one_route_change_ms".to_owned(),
            median_ms(one_change),
        ),
        (
            "controller_memory_1000_routes_mib".to_owned(),
            (rss_holding.saturating_sub(rss_before)) as f64 / 1024.0,
        ),
        (
            "snapshot_memory_1000_routes_mib".to_owned(),
            (rss_snapshot.saturating_sub(rss_before)) as f64 / 1024.0,
        ),
        (
            "incremental_state_memory_1000_routes_mib".to_owned(),
            (rss_incremental.saturating_sub(rss_before_incremental)) as f64 / 1024.0,
        ),
        (
            "process_rss_1000_routes_mib".to_owned(),
            rss_holding as f64 / 1024.0,
        ),
    ]);
    println!(
        "translation of {ROUTES} HTTPRoutes ({HOSTNAMES} hostnames, {RULES} rules each) -> {resources} Envoy resources"
    );
    for (name, value) in &figures {
        println!("  {name:<42} {value:>10.2}");
    }
    write_results(&figures);
}

fn profile_loop(which: &str, snap: &mut Snapshot) {
    if which == "once" {
        // For heap profilers: the memory figure's work, once, with the resident memory after
        // each step.
        let step = |what: &str| println!("  {what:<32} {:>8.2} MiB", rss_kib() as f64 / 1024.0);
        step("input objects");
        let t = translate(snap);
        step("IR and statuses");
        let envoy = snapshot(&t.gateways[0], BINDING, "1");
        step("Envoy snapshot");
        drop(black_box(envoy));
        step("Envoy snapshot dropped");
        drop(black_box(t));
        step("IR dropped");
        let held = translate(snap);
        step("IR again");
        drop(black_box(held));
        return;
    }
    let mut translator = Translator::new();
    let mut builder = SnapshotBuilder::new();
    retranslate_to_envoy(snap, &mut translator, &mut builder);
    let start = Instant::now();
    let mut rounds = 0usize;
    while start.elapsed() < Duration::from_secs(5) {
        match which {
            "ir" => drop(black_box(translate(snap))),
            "retranslate" => {
                snap.http_routes[ROUTES / 2] = route(ROUTES / 2, rounds + 1);
                black_box(retranslate_to_envoy(snap, &mut translator, &mut builder));
            }
            _ => drop(black_box(translate_to_envoy(snap))),
        }
        rounds += 1;
    }
    println!(
        "{which}: {rounds} rounds, {:.2} ms each",
        start.elapsed().as_secs_f64() * 1000.0 / rounds as f64
    );
}

fn write_results(figures: &BTreeMap<String, f64>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let path = dir.join("results.json");
    let mut all: BTreeMap<String, f64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    all.extend(figures.iter().map(|(k, v)| (k.clone(), *v)));
    let _ = std::fs::create_dir_all(&dir);
    match serde_json::to_string_pretty(&all) {
        Ok(text) => {
            let _ = std::fs::write(&path, text + "\n");
            println!("  written to {}", path.display());
        }
        Err(e) => eprintln!("results.json: {e}"),
    }
}
