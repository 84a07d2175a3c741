//! ClientTrafficPolicy through the whole path (apiserver → control plane → ADS → real Envoy →
//! a backend on a test host): mutual TLS with TLS 1.3 only on an HTTPS listener (clients
//! without a certificate, with one from another CA, or limited to TLS 1.2 are refused; the
//! client's subject reaches the backend in `x-forwarded-client-cert`), and on the HTTP
//! listener client IP detection from a custom header (fail closed), path normalisation and
//! request IDs turned off (with Envoy accepting the connection, keepalive, HTTP/1 and HTTP/2
//! settings beside them); a PROXY protocol listener whose client address reaches
//! `x-forwarded-for`; optional client certificates and HTTP/3 over QUIC (a quinn + h3
//! client) on a second HTTPS listener, advertised by `alt-svc` on its TCP twin; plus the
//! statuses upstream users read (Accepted, Overridden, Conflicted, Invalid).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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

/// One HTTP/3 GET over QUIC to `127.0.0.1:port` (SNI `host`, trusting `ca`): the status and
/// the echoed request.
async fn http3_get(ca: &TestCa, port: u16, host: &str, path: &str) -> anyhow::Result<(u16, Echo)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(LOOPBACK, 0))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = tokio::time::timeout(
        Duration::from_secs(3),
        endpoint.connect(SocketAddr::new(LOOPBACK, port), host)?,
    )
    .await??;
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection)).await?;
    let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let mut stream = sender
        .send_request(http::Request::get(format!("https://{host}{path}")).body(())?)
        .await?;
    stream.finish().await?;
    let response = stream.recv_response().await?;
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    drop(sender);
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    Ok((response.status().as_u16(), serde_json::from_slice(&body)?))
}

/// One HTTP/1.1 request on a fresh connection to `127.0.0.1:port`, after `preamble`; the raw
/// response (`None` when the connection fails).
async fn raw_http(port: u16, preamble: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((LOOPBACK, port))
        .await
        .ok()?;
    let request =
        format!("{preamble}GET /pp HTTP/1.1\r\nHost: proxied.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(response)
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
        let h3_port = free_port(LOOPBACK)?;
        let proxied_port = free_port(LOOPBACK)?;
        let server_ca = TestCa::new("server-ca")?;
        let server = server_ca.server_cert("secure.test", &["secure.test", "h3.test"])?;
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
                 "tls": {"certificateRefs": [{"name": "secure-cert"}]}},
                {"name": "h3", "protocol": "HTTPS", "port": h3_port, "hostname": "h3.test",
                 "tls": {"certificateRefs": [{"name": "secure-cert"}]}},
                {"name": "proxied", "protocol": "HTTP", "port": proxied_port}]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]}})).await;

        // Gateway-wide: the HTTP listener's behaviour. Listener-level on HTTPS: mutual TLS.
        apply(&client, Some(&ns), policy("defaults", None, json!({
            "clientIPDetection": {"customHeader": {"name": "x-client-ip", "failClosed": true}},
            "path": {"escapedSlashesAction": "UnescapeAndForward"},
            "headers": {"requestID": "Disable"},
            "timeout": {"http": {"requestReceivedTimeout": "5s", "idleTimeout": "30s"}},
            "connection": {"connectionLimit": {"value": 100}, "bufferLimit": "64Ki"},
            "tcpKeepalive": {"probes": 3, "idleTime": "60s", "interval": "10s"},
            "http1": {"preserveHeaderCase": true, "http10": {"useDefaultHost": true}},
            "http2": {"initialStreamWindowSize": "64Ki", "initialConnectionWindowSize": "1Mi", "maxConcurrentStreams": 50}}))).await;
        apply(&client, Some(&ns), policy("mtls", Some("https"), json!({
            "tls": {"minVersion": "1.3", "clientValidation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "client-ca"}]},
                    "ecdhCurves": ["X25519", "P-256"], "alpnProtocols": ["h2", "http/1.1"]},
            // No visible effect here, but Envoy must accept the detection extension.
            "clientIPDetection": {"xForwardedFor": {"trustedCIDRs": ["10.0.0.0/8"]}},
            "headers": {"xForwardedClientCert": {"mode": "SanitizeSet", "certDetailsToAdd": ["Subject"]}}}))).await;
        apply(&client, Some(&ns), policy("http3", Some("h3"), json!({"http3": {},
            // Optional client certificates: a client without one (the QUIC client) is served.
            "tls": {"clientValidation": {"optional": true, "caCertificateRefs": [{"kind": "ConfigMap", "name": "client-ca"}]}}}))).await;
        apply(&client, Some(&ns), policy("proxied", Some("proxied"), json!({
            "enableProxyProtocol": true, "clientIPDetection": {"xForwardedFor": {"numTrustedHops": 0}}}))).await;
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
        // Envoy adds x-request-id unless the policy (requestID: Disable) is in effect.
        let (_, ready_after) = until!("HTTP listener served under the policy", Duration::from_secs(20), async {
            http.get(format!("{base}/a")).header("x-client-ip", "203.0.113.7").send().await.ok()?
                .error_for_status().ok()?.json::<Echo>().await.ok()
                .filter(|echo| !echo.headers.contains_key("x-request-id"))
        }.await);
        eprintln!("HTTP listener ready in {ready_after:?}");
        assert_eq!(http.get(format!("{base}/a")).send().await?.status(), 403, "no client IP header");
        // Escaped slashes are unescaped before routing and forwarding.
        let echo: Echo = http.get(format!("{base}/x%2Fy")).header("x-client-ip", "203.0.113.7")
            .send().await?.error_for_status()?.json().await?;
        assert_eq!(echo.path, "/x/y");

        // The first statuses may predate the provider's first list of every kind (a policy
        // whose ConfigMap was not listed yet is Invalid): wait for the settled verdict.
        // Until then the HTTPS listener may serve under the Gateway-level policy (no mTLS).
        let verdict = |name: &'static str, status: &'static str, reason: &'static str| {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                until!(format!("{name} Accepted={status} {reason}"), Duration::from_secs(10),
                    conditions(&client, &ns, name).await
                        .and_then(|c| condition(&c, "Accepted"))
                        .filter(|(s, r, _)| s == status && r == reason)).0 .2
            }
        };
        verdict("mtls", "True", "Accepted").await;

        // Mutual TLS with TLS 1.3 only.
        let alice_client = tls_client(&server_ca, https_port, Some(&alice), false);
        let url = format!("https://secure.test:{https_port}/s");
        // The client's subject in x-forwarded-client-cert shows the listener runs the policy.
        let (xfcc, _) = until!("HTTPS served to a client with a valid certificate, XFCC set", Duration::from_secs(20), async {
            let echo = alice_client.get(&url).send().await.ok()?.error_for_status().ok()?.json::<Echo>().await.ok()?;
            echo.headers.get("x-forwarded-client-cert").cloned()
        }.await);
        assert!(xfcc.contains("Subject=\"CN=alice\""), "x-forwarded-client-cert: {xfcc:?}");
        let anonymous = tls_client(&server_ca, https_port, None, false).get(&url).send().await;
        assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
        let foreign = tls_client(&server_ca, https_port, Some(&mallory), false).get(&url).send().await;
        assert!(foreign.is_err(), "certificate from another CA: {foreign:?}");
        let old = tls_client(&server_ca, https_port, Some(&alice), true).get(&url).send().await;
        assert!(old.is_err(), "TLS 1.2 client against minVersion 1.3: {old:?}");

        // PROXY protocol: the address in the header is the client's (appended to XFF, as Envoy
        // is the edge); a connection without the header is closed unanswered.
        let (echo, _) = until!("PROXY protocol listener served", Duration::from_secs(20),
            raw_http(proxied_port, "PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n").await
                .and_then(|r| serde_json::from_str::<Echo>(r.split_once("\r\n\r\n")?.1).ok()));
        assert_eq!(echo.headers.get("x-forwarded-for").map(String::as_str), Some("198.51.100.9"));
        let bare = raw_http(proxied_port, "").await.unwrap_or_default();
        assert!(!bare.starts_with("HTTP/1.1 200"), "no PROXY header: {bare:?}");

        // HTTP/3: the TCP listener advertises it, and a QUIC client is served on the same port.
        let h3_tcp = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(server_ca.cert_pem.as_bytes())?)
            .resolve("h3.test", SocketAddr::new(LOOPBACK, h3_port))
            .build()?;
        let (alt_svc, _) = until!("alt-svc on the TCP listener", Duration::from_secs(20), async {
            let r = h3_tcp.get(format!("https://h3.test:{h3_port}/")).send().await.ok()?;
            r.headers().get("alt-svc")?.to_str().ok().map(str::to_owned)
        }.await);
        assert_eq!(alt_svc, format!("h3=\":{h3_port}\"; ma=86400"));
        let ((status, echo), quic_after) = until!("HTTP/3 request served over QUIC", Duration::from_secs(20),
            http3_get(&server_ca, h3_port, "h3.test", "/over-quic").await.ok());
        eprintln!("HTTP/3 served in {quic_after:?}");
        assert_eq!(status, 200);
        assert_eq!((echo.path.as_str(), echo.backend.as_str()), ("/over-quic", "app"));

        // Statuses.
        verdict("http3", "True", "Accepted").await;
        verdict("defaults", "True", "Accepted").await;
        verdict("proxied", "True", "Accepted").await;
        let (defaults, _) = until!("defaults Overridden for the https listener", Duration::from_secs(10),
            conditions(&client, &ns, "defaults").await.filter(|c| condition(c, "Overridden").is_some()));
        let overridden = condition(&defaults, "Overridden").expect("Overridden");
        assert!(overridden.2.contains("[h3, https, proxied]"), "{overridden:?}");
        verdict("newer", "False", "Conflicted").await;
        let bad_ca = verdict("bad-ca", "False", "Invalid").await;
        assert!(bad_ca.contains("no-such-secret"), "{bad_ca}");
        let bad_cidr = verdict("bad-cidr", "False", "Invalid").await;
        assert!(bad_cidr.contains("trustedCIDRs[0]"), "{bad_cidr}");

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}
