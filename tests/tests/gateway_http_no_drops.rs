//! No request is dropped while routes are reordered and backends added under continuous load:
//! cluster names derive from backend identity, so a reorder never renames (and so never drains)
//! a live cluster, and new clusters reach Envoy before the routes that use them.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use serde_json::json;

#[tokio::test]
async fn reordering_routes_and_adding_backends_drops_no_request() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let mut hosts = Vec::new();
        for i in 0..4 {
            let host = EchoHost::start(&format!("b{i}"), echo_bin).await?;
            service_with_endpoint(&client, &ns, &format!("svc-{i}"), host.address()).await;
            hosts.push(host);
        }
        let controller_name = format!("example.com/nodrop-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "public", &format!("gc-{ns}"), &controller_name, port).await;
        let rules = |order: &[usize], backends: &[usize]| -> serde_json::Value {
            let mut rules: Vec<serde_json::Value> = order.iter().map(|i| json!({
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/p{i}")}}],
                "backendRefs": [{"name": format!("svc-{i}"), "port": 80}]})).collect();
            rules.push(json!({"backendRefs": backends.iter().map(|b| json!({"name": format!("svc-{b}"), "port": 80})).collect::<Vec<_>>()}));
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "shop"},
                "spec": {"parentRefs": [{"name": "public"}], "rules": rules}})
        };
        apply(&client, Some(&ns), rules(&[0, 1], &[0])).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "public", AdsFlavour::Delta).await;
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
        drop(control_plane);
        drop(hosts);
        Ok(())
    })
    .await;
}
