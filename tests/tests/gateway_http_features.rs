//! Gateway API HTTP features through the whole path (apiserver → control plane → ADS → real
//! Envoy → backends on test hosts): a 90/10 weighted split checked over many requests,
//! redirects, prefix rewrites with request and response header modifiers, mirroring, HTTPS
//! termination chosen by SNI, an EndpointSlice change reaching Envoy, and a cross-namespace
//! backend denied until a ReferenceGrant allows it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, endpoint_slice, gateway_class, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::pki::TestCa;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

fn route(name: &str, host: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": [host], "rules": rules}})
}

#[tokio::test]
async fn http_features_behave_as_specified_through_envoy() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let a = EchoHost::start("a", echo_bin).await?;
        let b = EchoHost::start("b", echo_bin).await?;
        service_with_endpoint(&client, &ns, "echo-a", a.address()).await;
        service_with_endpoint(&client, &ns, "echo-b", b.address()).await;
        service_with_endpoint(&client, &ns, "moving", a.address()).await;
        let other = format!("{ns}-other");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": other}}))?).await?;
        service_with_endpoint(&client, &other, "remote", a.address()).await;

        let controller_name = format!("example.com/features-{ns}");
        let class = format!("gc-{ns}");
        let http_port = free_port(LOOPBACK)?;
        let https_port = free_port(LOOPBACK)?;
        let ca = TestCa::new("features-ca")?;
        let cert = ca.server_cert("secure.test", &["secure.test"])?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        secrets
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": "secure-cert"}, "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": cert.cert_pem, "tls.key": cert.key_pem}}))?)
            .await?;
        gateway_class(&client, &class, &controller_name).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public"},
            "spec": {"gatewayClassName": class, "listeners": [
                {"name": "http", "protocol": "HTTP", "port": http_port},
                {"name": "https", "protocol": "HTTPS", "port": https_port, "hostname": "secure.test",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"name": "secure-cert"}]}}
            ]}})).await;

        apply(&client, Some(&ns), route("split", "split.test", json!([{"backendRefs": [
            {"name": "echo-a", "port": 80, "weight": 90}, {"name": "echo-b", "port": 80, "weight": 10}]}]))).await;
        apply(&client, Some(&ns), route("redirect", "redirect.test", json!([{"filters": [
            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]))).await;
        apply(&client, Some(&ns), route("rewrite", "rewrite.test", json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "filters": [
                {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}},
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-env", "value": "prod"}], "remove": ["x-drop"]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "gateway"}]}}],
            "backendRefs": [{"name": "echo-a", "port": 80}]}]))).await;
        apply(&client, Some(&ns), route("mirror", "mirror.test", json!([{
            "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "echo-b", "port": 80}}}],
            "backendRefs": [{"name": "echo-a", "port": 80}]}]))).await;
        apply(&client, Some(&ns), route("moving", "moving.test", json!([{"backendRefs": [{"name": "moving", "port": 80}]}]))).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "secure"},
            "spec": {"parentRefs": [{"name": "public", "sectionName": "https"}], "rules": [{"backendRefs": [{"name": "echo-b", "port": 80}]}]}})).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone(), other.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "public", AdsFlavour::StateOfTheWorld).await;

        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let base = format!("http://127.0.0.1:{http_port}");
        let get = |host: &'static str, path: &'static str| {
            let (http, base) = (http.clone(), base.clone());
            async move { http.get(format!("{base}{path}")).header("host", host).header("x-drop", "1").send().await.ok() }
        };
        until!("split route served", Duration::from_secs(20),
            get("split.test", "/").await.filter(|r| r.status() == 200));

        // 90/10 split: b's share over 400 requests lies well inside 4%..18% (p < 1e-4 either side).
        let mut to_b = 0;
        for _ in 0..400 {
            let echo: Echo = get("split.test", "/").await.expect("response").json().await?;
            if echo.backend == "b" {
                to_b += 1;
            }
        }
        eprintln!("weighted split: {to_b}/400 to the 10% backend");
        assert!((16..=72).contains(&to_b), "{to_b}/400 requests went to the 10% backend");

        let redirect = get("redirect.test", "/path?q=1").await.expect("redirect");
        assert_eq!(redirect.status(), 301);
        let location = redirect.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(location, "https://redirect.test/path?q=1");

        let rewritten = get("rewrite.test", "/old/item").await.expect("rewrite");
        assert_eq!(rewritten.headers().get("x-served-by").and_then(|v| v.to_str().ok()), Some("gateway"));
        let echo: Echo = rewritten.json().await?;
        assert_eq!(echo.path, "/new/item");
        assert_eq!(echo.headers.get("x-env").map(String::as_str), Some("prod"));
        assert!(!echo.headers.contains_key("x-drop"));

        // Mirroring: a answers, b receives a copy (Envoy's upstream counter for b's cluster).
        let mirror_cluster = format!("service/{ns}/echo-b/80");
        let stat = format!("cluster.{mirror_cluster}.upstream_rq_total");
        let count = |text: String| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{stat}: ")).and_then(|v| v.trim().parse::<u64>().ok())).unwrap_or(0)
        };
        let before = count(envoy.admin_get("/stats").await?);
        for _ in 0..5 {
            let echo: Echo = get("mirror.test", "/m").await.expect("mirror").json().await?;
            assert_eq!(echo.backend, "a");
        }
        until!("mirrored requests counted", Duration::from_secs(5),
            Some(count(envoy.admin_get("/stats").await?)).filter(|c| *c >= before + 5));

        // HTTPS on the listener for secure.test, certificate chosen by SNI.
        let tls = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
            .resolve("secure.test", SocketAddr::new(LOOPBACK, https_port))
            .build()?;
        let (echo, _): (Echo, _) = until!("HTTPS served", Duration::from_secs(10), async {
            tls.get(format!("https://secure.test:{https_port}/s")).send().await.ok()?.json::<Echo>().await.ok()
        }.await);
        assert_eq!(echo.backend, "b");

        // An EndpointSlice change reaches Envoy: the moving Service now points at b.
        assert_eq!(get("moving.test", "/").await.expect("moving").json::<Echo>().await?.backend, "a");
        endpoint_slice(&client, &ns, "moving", b.address()).await;
        until!("endpoint change served", Duration::from_secs(10), async {
            get("moving.test", "/").await?.json::<Echo>().await.ok().filter(|e| e.backend == "b")
        }.await);

        // Cross-namespace backend: refused (500) until a ReferenceGrant allows it.
        apply(&client, Some(&ns), route("cross", "cross.test", json!([{"backendRefs": [{"name": "remote", "namespace": other, "port": 80}]}]))).await;
        until!("denied cross-namespace backend answers 500", Duration::from_secs(10),
            get("cross.test", "/").await.filter(|r| r.status() == 500));
        apply(&client, Some(&other), json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "allow-routes"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns}],
                     "to": [{"group": "", "kind": "Service"}]}})).await;
        until!("allowed cross-namespace backend served", Duration::from_secs(10), async {
            get("cross.test", "/").await.filter(|r| r.status() == 200)?.json::<Echo>().await.ok()
        }.await);
        let _ = namespaces.delete(&other, &DeleteParams::background()).await;

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}

/// The Programmed condition of Gateway `ns/name`, as `(status, reason, message)`.
async fn programmed(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<(String, String, String)> {
    let gateways: Api<gateway_api::apis::standard::gateways::Gateway> =
        Api::namespaced(client.clone(), ns);
    let gateway = gateways.get(name).await.ok()?;
    let c = gateway
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Programmed")?;
    Some((c.status, c.reason, c.message))
}

/// A route Envoy rejects (a regular expression RE2 refuses, which the translator's regex
/// engine accepts) makes the Gateway `Programmed=False` with Envoy's message while the previous
/// configuration keeps serving; removing the route makes it Programmed again.
#[tokio::test]
async fn a_rejected_configuration_shows_on_the_gateway_and_the_last_good_one_serves() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let a = EchoHost::start("a", echo_bin).await?;
        service_with_endpoint(&client, &ns, "echo-a", a.address()).await;
        let controller_name = format!("example.com/nack-{ns}");
        let port = free_port(LOOPBACK)?;
        eg_e2e::manifests::http_gateway(
            &client,
            &ns,
            "public",
            &format!("gc-{ns}"),
            &controller_name,
            port,
        )
        .await;
        apply(
            &client,
            Some(&ns),
            route(
                "good",
                "good.test",
                json!([{"backendRefs": [{"name": "echo-a", "port": 80}]}]),
            ),
        )
        .await;

        let control_plane =
            common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let _envoy = common::envoy_for(control_plane.xds, &ns, "public", AdsFlavour::Delta).await;
        let http = reqwest::Client::new();
        let get = |host: &'static str| {
            let http = http.clone();
            async move {
                http.get(format!("http://127.0.0.1:{port}/"))
                    .header("host", host)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            }
        };
        until!(
            "good route served",
            Duration::from_secs(20),
            get("good.test").await
        );
        until!(
            "Programmed",
            Duration::from_secs(10),
            programmed(&client, &ns, "public")
                .await
                .filter(|(s, _, _)| s == "True")
        );

        apply(
            &client,
            Some(&ns),
            route(
                "bad",
                "bad.test",
                json!([{
            "matches": [{"path": {"type": "RegularExpression", "value": "/x{1001}"}}],
            "backendRefs": [{"name": "echo-a", "port": 80}]}]),
            ),
        )
        .await;
        let ((status, reason, message), _) = until!(
            "the rejection on the Gateway",
            Duration::from_secs(15),
            programmed(&client, &ns, "public")
                .await
                .filter(|(_, r, _)| r == "Invalid")
        );
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
        assert!(message.contains("Envoy rejected"), "{message}");
        assert!(
            get("good.test").await.is_some(),
            "the last good configuration keeps serving"
        );

        let routes: Api<gateway_api::apis::standard::httproutes::HttpRoute> =
            Api::namespaced(client.clone(), &ns);
        routes.delete("bad", &DeleteParams::default()).await?;
        until!(
            "Programmed again",
            Duration::from_secs(15),
            programmed(&client, &ns, "public")
                .await
                .filter(|(s, _, _)| s == "True")
        );
        assert!(get("good.test").await.is_some());
        Ok(())
    })
    .await;
}

/// With the Backend API on (`extensionApis.enableBackend`), a route reaches an Envoy Gateway
/// `Backend` created in the apiserver; with it off, the same route reports `InvalidKind`.
#[tokio::test]
async fn backends_are_served_only_when_the_backend_api_is_enabled() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let a = EchoHost::start("a", echo_bin).await?;
        let controller_name = format!("example.com/backend-{ns}");
        let port = free_port(LOOPBACK)?;
        eg_e2e::manifests::http_gateway(
            &client,
            &ns,
            "public",
            &format!("gc-{ns}"),
            &controller_name,
            port,
        )
        .await;
        apply(
            &client,
            Some(&ns),
            json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
            "metadata": {"name": "external"},
            "spec": {"endpoints": [{"ip": {"address": a.address().to_string(), "port": 8080}}]}}),
        )
        .await;
        apply(
            &client,
            Some(&ns),
            route(
                "to-backend",
                "backend.test",
                json!([{"backendRefs": [
            {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "external"}]}]),
            ),
        )
        .await;
        let resolved = |client: kube::Client, ns: String| async move {
            let routes: Api<gateway_api::apis::standard::httproutes::HttpRoute> =
                Api::namespaced(client, &ns);
            let route = routes.get("to-backend").await.ok()?;
            let c = route
                .status?
                .parents
                .first()?
                .conditions
                .iter()
                .find(|c| c.type_ == "ResolvedRefs")?
                .clone();
            Some((c.status, c.reason))
        };

        {
            let _off = common::start_control_plane_with(
                client.clone(),
                &controller_name,
                vec![ns.clone()],
                false,
            )
            .await;
            let ((status, reason), _) = until!(
                "InvalidKind with the API off",
                Duration::from_secs(15),
                resolved(client.clone(), ns.clone())
                    .await
                    .filter(|(s, _)| s == "False")
            );
            assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidKind"));
        }

        let on = common::start_control_plane_with(
            client.clone(),
            &controller_name,
            vec![ns.clone()],
            true,
        )
        .await;
        let _envoy = common::envoy_for(on.xds, &ns, "public", AdsFlavour::Delta).await;
        until!(
            "resolved with the API on",
            Duration::from_secs(15),
            resolved(client.clone(), ns.clone())
                .await
                .filter(|(s, _)| s == "True")
        );
        let http = reqwest::Client::new();
        let (echo, _) = until!(
            "the Backend answers through Envoy",
            Duration::from_secs(20),
            async {
                let r = http
                    .get(format!("http://127.0.0.1:{port}/"))
                    .header("host", "backend.test")
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                r.json::<Echo>().await.ok()
            }
            .await
        );
        assert_eq!(echo.backend, "a");
        Ok(())
    })
    .await;
}
