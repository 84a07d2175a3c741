//! The control plane end to end on the real apiserver with a real Envoy: a GatewayClass,
//! Gateway, HTTPRoute, Services and EndpointSlices become Envoy configuration over ADS, requests
//! reach the right echo backend by path and header, route edits reach Envoy, and statuses are
//! written back on the Gateway and the HTTPRoute.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

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

/// The condition `type_` of the Gateway `public`, once it has one.
async fn gateway_condition(
    gateways: &Api<Gateway>,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    gateways
        .get("public")
        .await
        .ok()?
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn http_routes_are_served_by_envoy_and_statuses_written() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let a = EchoHost::start("a", echo_bin).await?;
        let b = EchoHost::start("b", echo_bin).await?;
        service_with_endpoint(&client, &ns, "echo-a", a.address()).await;
        service_with_endpoint(&client, &ns, "echo-b", b.address()).await;

        let controller_name = format!("example.com/e2e-{ns}");
        let class = format!("gc-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "public", &class, &controller_name, port).await;

        // The control plane and its xDS server, and an Envoy for the Gateway.
        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "public", AdsFlavour::Delta).await;
        let listen = SocketAddr::new(LOOPBACK, port);

        let created = Instant::now();
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"name": "x-canary", "value": "true"}]}],
                     "backendRefs": [{"name": "echo-b", "port": 80}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/b"}}],
                     "backendRefs": [{"name": "echo-b", "port": 80}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "backendRefs": [{"name": "echo-a", "port": 80}]}
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
        let (programmed, _) = until!("Gateway Programmed=True", Duration::from_secs(10),
            gateway_condition(&gateways, "Programmed").await.filter(|c| c.status == "True"));
        assert_eq!(programmed.reason, "Programmed");

        // An edit reaches Envoy: everything to b now.
        let edited = Instant::now();
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {"parentRefs": [{"name": "public"}],
                     "rules": [{"backendRefs": [{"name": "echo-b", "port": 80}]}]}
        }))
        .await;
        until!("edit served", Duration::from_secs(10), async {
            get(listen, "/shop", &[]).await.filter(|e| e.backend == "b")
        }.await);
        eprintln!("HTTPRoute edited → served by Envoy after {:?}", edited.elapsed());

        envoy.stop();
        drop(control_plane);
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
        http_gateway(&client, &ns, "public", &class, &controller_name, 8080).await;
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
        let control_plane =
            common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let (resolved, _) = until!(
            "ResolvedRefs condition",
            Duration::from_secs(15),
            async {
                let parents = routes.get("broken").await.ok()?.status?.parents;
                parents
                    .into_iter()
                    .next()?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "ResolvedRefs")
            }
            .await
        );
        assert_eq!(
            (resolved.status.as_str(), resolved.reason.as_str()),
            ("False", "BackendNotFound")
        );
        assert!(resolved.message.contains("nowhere"), "{}", resolved.message);
        // No proxy has taken this Gateway's configuration: it is not Programmed yet.
        let gateways: Api<Gateway> = Api::namespaced(client.clone(), &ns);
        let (pending, _) = until!(
            "Gateway Programmed=False Pending",
            Duration::from_secs(10),
            gateway_condition(&gateways, "Programmed")
                .await
                .filter(|c| c.reason == "Pending")
        );
        assert_eq!(pending.status, "False");
        drop(control_plane);
        Ok(())
    })
    .await;
}
