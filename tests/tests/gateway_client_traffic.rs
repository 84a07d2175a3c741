//! ClientTrafficPolicy through the whole path (apiserver → control plane → ADS → real Envoy →
//! a backend on a test host): mutual TLS with TLS 1.3 only on an HTTPS listener (clients
//! without a certificate, with one from another CA, or limited to TLS 1.2 are refused; the
//! client's subject reaches the backend in `x-forwarded-client-cert`), and on the HTTP
//! listener client IP detection from a custom header (fail closed), path normalisation and
//! request IDs turned off; plus the statuses upstream users read (Accepted, Overridden,
//! Conflicted, Invalid).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, gateway_class, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::pki::{CertPair, TestCa};
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

fn policy(name: &str, section: Option<&str>, spec: Value) -> Value {
    let mut spec = spec;
    let mut target = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"});
    if let Some(section) = section {
        target["sectionName"] = json!(section);
    }
    spec["targetRefs"] = json!([target]);
    json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "ClientTrafficPolicy",
           "metadata": {"name": name}, "spec": spec})
}

/// The conditions of the first ancestor our controller wrote on ClientTrafficPolicy `name`.
async fn conditions(client: &kube::Client, ns: &str, name: &str) -> Option<Vec<Value>> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.envoyproxy.io",
        "v1alpha1",
        "ClientTrafficPolicy",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let object = api.get(name).await.ok()?;
    object
        .data
        .pointer("/status/ancestors/0/conditions")?
        .as_array()
        .cloned()
}

fn condition(conditions: &[Value], type_: &str) -> Option<(String, String, String)> {
    conditions.iter().find(|c| c["type"] == type_).map(|c| {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"), s("message"))
    })
}

/// An HTTPS client for `secure.test` trusting `server_ca`, presenting `identity` if any.
fn tls_client(
    server_ca: &TestCa,
    port: u16,
    identity: Option<&CertPair>,
    tls12_only: bool,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(server_ca.cert_pem.as_bytes()).expect("CA"),
        )
        .resolve("secure.test", SocketAddr::new(LOOPBACK, port))
        // Every request on a connection of its own: a policy change applies to new ones.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5));
    if let Some(pair) = identity {
        let pem = format!("{}{}", pair.cert_pem, pair.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    if tls12_only {
        builder = builder.max_tls_version(reqwest::tls::Version::TLS_1_2);
    }
    builder.build().expect("client")
}

#[tokio::test]
async fn client_traffic_policies_shape_listeners_through_envoy_and_report_status() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let app = EchoHost::start("app", echo_bin).await?;
        service_with_endpoint(&client, &ns, "app", app.address()).await;
        let controller_name = format!("example.com/client-traffic-{ns}");
        let class = format!("gc-{ns}");
        let http_port = free_port(LOOPBACK)?;
        let https_port = free_port(LOOPBACK)?;
        let server_ca = TestCa::new("server-ca")?;
        let server = server_ca.server_cert("secure.test", &["secure.test"])?;
        let client_ca = TestCa::new("client-ca")?;
        let alice = client_ca.client_cert("alice", None)?;
        let mallory = TestCa::new("other-ca")?.client_cert("mallory", None)?;

        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "secure-cert"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": server.cert_pem, "tls.key": server.key_pem}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "client-ca"}, "data": {"ca.crt": client_ca.cert_pem}})).await;
        gateway_class(&client, &class, &controller_name).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {"gatewayClassName": class, "listeners": [
                {"name": "http", "protocol": "HTTP", "port": http_port},
                {"name": "https", "protocol": "HTTPS", "port": https_port, "hostname": "secure.test",
                 "tls": {"certificateRefs": [{"name": "secure-cert"}]}}]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]}})).await;

        // Gateway-wide: the HTTP listener's behaviour. Listener-level on HTTPS: mutual TLS.
        apply(&client, Some(&ns), policy("defaults", None, json!({
            "clientIPDetection": {"customHeader": {"name": "x-client-ip", "failClosed": true}},
            "path": {"escapedSlashesAction": "UnescapeAndForward"},
            "headers": {"requestID": "Disable"},
            "timeout": {"http": {"requestReceivedTimeout": "5s"}}}))).await;
        apply(&client, Some(&ns), policy("mtls", Some("https"), json!({
            "tls": {"minVersion": "1.3", "clientValidation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "client-ca"}]}},
            "headers": {"xForwardedClientCert": {"mode": "SanitizeSet", "certDetailsToAdd": ["Subject"]}}}))).await;
        // Refused, changing nothing: a newer Gateway-wide policy, a CA that does not exist.
        tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has 1 s resolution
        apply(&client, Some(&ns), policy("newer", None, json!({"headers": {"requestID": "Generate"}}))).await;
        apply(&client, Some(&ns), policy("bad-ca", Some("http"), json!({
            "tls": {"clientValidation": {"caCertificateRefs": [{"name": "no-such-secret"}]}}}))).await;
        apply(&client, Some(&ns), policy("bad-cidr", Some("http"), json!({
            "clientIPDetection": {"xForwardedFor": {"trustedCIDRs": ["10.0.0.0/99"]}}}))).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "gw", AdsFlavour::StateOfTheWorld).await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let base = format!("http://127.0.0.1:{http_port}");

        // Client IP from a custom header, fail closed: without it Envoy refuses with 403.
        let (echo, ready_after) = until!("HTTP listener served under the policy", Duration::from_secs(20), async {
            http.get(format!("{base}/a")).header("x-client-ip", "203.0.113.7").send().await.ok()?
                .error_for_status().ok()?.json::<Echo>().await.ok()
        }.await);
        eprintln!("HTTP listener ready in {ready_after:?}");
        assert!(!echo.headers.contains_key("x-request-id"), "requestID Disable: {:?}", echo.headers);
        assert_eq!(http.get(format!("{base}/a")).send().await?.status(), 403, "no client IP header");
        // Escaped slashes are unescaped before routing and forwarding.
        let echo: Echo = http.get(format!("{base}/x%2Fy")).header("x-client-ip", "203.0.113.7")
            .send().await?.error_for_status()?.json().await?;
        assert_eq!(echo.path, "/x/y");

        // Mutual TLS with TLS 1.3 only.
        let alice_client = tls_client(&server_ca, https_port, Some(&alice), false);
        let url = format!("https://secure.test:{https_port}/s");
        let (echo, _) = until!("HTTPS served to a client with a valid certificate", Duration::from_secs(20), async {
            alice_client.get(&url).send().await.ok()?.error_for_status().ok()?.json::<Echo>().await.ok()
        }.await);
        let xfcc = echo.headers.get("x-forwarded-client-cert").cloned().unwrap_or_default();
        assert!(xfcc.contains("Subject=\"CN=alice\""), "x-forwarded-client-cert: {xfcc:?}");
        let anonymous = tls_client(&server_ca, https_port, None, false).get(&url).send().await;
        assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
        let foreign = tls_client(&server_ca, https_port, Some(&mallory), false).get(&url).send().await;
        assert!(foreign.is_err(), "certificate from another CA: {foreign:?}");
        let old = tls_client(&server_ca, https_port, Some(&alice), true).get(&url).send().await;
        assert!(old.is_err(), "TLS 1.2 client against minVersion 1.3: {old:?}");

        // Statuses.
        let wait = |name: &'static str| {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                until!(format!("{name} status"), Duration::from_secs(10), conditions(&client, &ns, name).await).0
            }
        };
        let accepted = condition(&wait("mtls").await, "Accepted").expect("Accepted");
        assert_eq!((accepted.0.as_str(), accepted.1.as_str()), ("True", "Accepted"));
        let (defaults, _) = until!("defaults Overridden for the https listener", Duration::from_secs(10),
            conditions(&client, &ns, "defaults").await.filter(|c| condition(c, "Overridden").is_some()));
        let overridden = condition(&defaults, "Overridden").expect("Overridden");
        assert!(overridden.2.contains("[https]"), "{overridden:?}");
        let newer = condition(&wait("newer").await, "Accepted").expect("Accepted");
        assert_eq!((newer.0.as_str(), newer.1.as_str()), ("False", "Conflicted"));
        let bad_ca = condition(&wait("bad-ca").await, "Accepted").expect("Accepted");
        assert_eq!((bad_ca.0.as_str(), bad_ca.1.as_str()), ("False", "Invalid"));
        assert!(bad_ca.2.contains("no-such-secret"), "{bad_ca:?}");
        let bad_cidr = condition(&wait("bad-cidr").await, "Accepted").expect("Accepted");
        assert_eq!((bad_cidr.0.as_str(), bad_cidr.1.as_str()), ("False", "Invalid"));
        assert!(bad_cidr.2.contains("trustedCIDRs[0]"), "{bad_cidr:?}");

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}
