//! GRPCRoute, TLSRoute, TCPRoute and UDPRoute through the whole path (apiserver → control plane
//! → ADS → real Envoy → backends on test hosts): a tonic client reaches the right gRPC backend by
//! method and header match and sees the weighted split; TLS passthrough delivers each backend's
//! own certificate for two SNI names on one port; a TLS listener in Terminate mode hands plain
//! bytes to a TCP backend; TCP and UDP echo through their routes on one port number; the
//! controller writes every route's status.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, gateway_class, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::pki::TestCa;
use eg_e2e::{LOOPBACK, free_port, grpc, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use rustls::pki_types::pem::PemObject;
use serde_json::json;

/// A Service `name` with a UDP port 53 (and TCP 80) in front of `address:8080`.
async fn udp_service(client: &kube::Client, ns: &str, name: &str, address: IpAddr) {
    apply(
        client,
        Some(ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "dns", "port": 53, "targetPort": 8080, "protocol": "UDP"}]}}),
    )
    .await;
    apply(
        client,
        Some(ns),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-udp"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "dns", "port": 8080, "protocol": "UDP"}]}),
    )
    .await;
}

/// The Accepted condition our controller wrote on route `kind/name`, as `(status, reason)`.
async fn accepted(
    client: &kube::Client,
    ns: &str,
    version: &str,
    kind: &str,
    name: &str,
) -> Option<(String, String)> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        version,
        kind,
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let route = api.get(name).await.ok()?;
    let conditions = route
        .data
        .pointer("/status/parents/0/conditions")?
        .as_array()?
        .clone();
    conditions
        .iter()
        .find(|c| c["type"] == "Accepted")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

#[tokio::test]
async fn grpc_tls_tcp_and_udp_routes_carry_traffic_through_envoy() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let ca = TestCa::new("routes-ca")?;
        let certs = tempfile::tempdir()?;
        let tls_mode = |host: &str| -> anyhow::Result<Vec<String>> {
            let pair = ca.server_cert(host, &[host])?;
            let (cert, key) = (certs.path().join(format!("{host}.crt")), certs.path().join(format!("{host}.key")));
            std::fs::write(&cert, pair.cert_pem)?;
            std::fs::write(&key, pair.key_pem)?;
            Ok(vec!["--tls".into(), cert.display().to_string(), key.display().to_string()])
        };
        let (one_mode, two_mode) = (tls_mode("one.test")?, tls_mode("two.test")?);
        let stream = vec!["--stream".to_owned()];
        let grpc_a = EchoHost::start("grpc-a", echo_bin).await?;
        let grpc_b = EchoHost::start("grpc-b", echo_bin).await?;
        let tls_one = EchoHost::start_with("tls-one", echo_bin, &one_mode).await?;
        let tls_two = EchoHost::start_with("tls-two", echo_bin, &two_mode).await?;
        let stream_a = EchoHost::start_with("stream-a", echo_bin, &stream).await?;
        let stream_b = EchoHost::start_with("stream-b", echo_bin, &stream).await?;
        for (name, host) in [("grpc-a", &grpc_a), ("grpc-b", &grpc_b), ("tls-one", &tls_one),
                             ("tls-two", &tls_two), ("stream-a", &stream_a)] {
            service_with_endpoint(&client, &ns, name, host.address()).await;
        }
        udp_service(&client, &ns, "stream-b", stream_b.address()).await;

        let controller_name = format!("example.com/routes-{ns}");
        let class = format!("gc-{ns}");
        let (grpc_port, tls_port, l4_port) = (free_port(LOOPBACK)?, free_port(LOOPBACK)?, free_port(LOOPBACK)?);
        let term_port = free_port(LOOPBACK)?;
        let term_cert = ca.server_cert("term.test", &["term.test"])?;
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "term-cert"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": term_cert.cert_pem, "tls.key": term_cert.key_pem}})).await;
        gateway_class(&client, &class, &controller_name).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge"},
            "spec": {"gatewayClassName": class, "listeners": [
                {"name": "grpc", "protocol": "HTTP", "port": grpc_port},
                {"name": "tls", "protocol": "TLS", "port": tls_port, "tls": {"mode": "Passthrough"}},
                {"name": "tcp", "protocol": "TCP", "port": l4_port},
                {"name": "udp", "protocol": "UDP", "port": l4_port},
                {"name": "tls-terminate", "protocol": "TLS", "port": term_port, "hostname": "term.test",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"name": "term-cert"}]}}
            ]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "echo"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "grpc"}], "rules": [
                {"matches": [{"method": {"service": "echo.v1.Echo", "method": "Ping"}}],
                 "backendRefs": [{"name": "grpc-a", "port": 80}]},
                {"matches": [{"method": {"service": "echo.v1.Echo"}, "headers": [{"name": "x-canary", "value": "yes"}]}],
                 "backendRefs": [{"name": "grpc-b", "port": 80}]},
                {"matches": [{"method": {"service": "echo.v1.Echo"}}],
                 "backendRefs": [{"name": "grpc-a", "port": 80, "weight": 50}, {"name": "grpc-b", "port": 80, "weight": 50}]}
            ]}})).await;
        for (name, host, backend) in [("one", "one.test", "tls-one"), ("two", "two.test", "tls-two")] {
            apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
                "metadata": {"name": name},
                "spec": {"parentRefs": [{"name": "edge", "sectionName": "tls"}], "hostnames": [host],
                         "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}})).await;
        }
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "TLSRoute",
            "metadata": {"name": "terminated"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "tls-terminate"}], "hostnames": ["term.test"],
                     "rules": [{"backendRefs": [{"name": "stream-a", "port": 80}]}]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
            "metadata": {"name": "tcp"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "tcp"}],
                     "rules": [{"backendRefs": [{"name": "stream-a", "port": 80}]}]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "UDPRoute",
            "metadata": {"name": "udp"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "udp"}],
                     "rules": [{"backendRefs": [{"name": "stream-b", "port": 53}]}]}})).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "edge", AdsFlavour::Delta).await;

        // gRPC: exact method to a, header match to b, the rest of the service split 50/50.
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?.connect_lazy();
        let (ping, _) = until!("gRPC Ping served", Duration::from_secs(20),
            grpc::call(channel.clone(), "/echo.v1.Echo/Ping", &[]).await.ok());
        assert_eq!((ping.backend.as_str(), ping.protocol.as_str()), ("grpc-a", "HTTP/2.0"));
        assert_eq!(ping.path, "/echo.v1.Echo/Ping");
        let canary = grpc::call(channel.clone(), "/echo.v1.Echo/Say", &[("x-canary", "yes")]).await?;
        assert_eq!(canary.backend, "grpc-b");
        let mut to_b = 0;
        for _ in 0..200 {
            if grpc::call(channel.clone(), "/echo.v1.Echo/Say", &[]).await?.backend == "grpc-b" {
                to_b += 1;
            }
        }
        eprintln!("gRPC 50/50 split: {to_b}/200 to grpc-b");
        assert!((60..=140).contains(&to_b), "{to_b}/200 calls went to grpc-b");
        let unrouted = grpc::call(channel.clone(), "/other.v1.Other/Call", &[]).await;
        assert_eq!(unrouted.expect_err("no route for another service").code(), tonic::Code::Unimplemented);

        // TLS passthrough: each SNI name reaches its backend, whose own certificate the client
        // verifies (Envoy holds no certificate for these names).
        for (host, backend) in [("one.test", "tls-one"), ("two.test", "tls-two")] {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
                .resolve(host, SocketAddr::new(LOOPBACK, tls_port))
                .build()?;
            let url = format!("https://{host}:{tls_port}/");
            let (echo, _) = until!(format!("TLS passthrough to {host}"), Duration::from_secs(10), async {
                client.get(&url).send().await.ok()?.json::<Echo>().await.ok()
            }.await);
            assert_eq!(echo.backend, backend);
            assert_eq!(echo.sni.as_deref(), Some(host));
        }

        // TLS terminated by Envoy with the listener's certificate, plain bytes to a TCP backend.
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
                roots.add(cert?)?;
            }
            roots
        };
        let tls_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config));
        let terminated = until!("TLS terminated to TCP", Duration::from_secs(10), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect((LOOPBACK, term_port)).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from("term.test").ok()?;
            let mut tls = connector.connect(name, tcp).await.ok()?;
            tls.write_all(b"secret").await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await.ok()?.ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
        }.await).0;
        assert_eq!(terminated, "stream-a:secret");

        // TCP and UDP on one port number, each through its own route.
        let tcp_reply = until!("TCP echo", Duration::from_secs(10), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut conn = tokio::net::TcpStream::connect((LOOPBACK, l4_port)).await.ok()?;
            conn.write_all(b"hello").await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await.ok()?.ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
        }.await).0;
        assert_eq!(tcp_reply, "stream-a:hello");
        let udp = tokio::net::UdpSocket::bind((LOOPBACK, 0)).await?;
        udp.connect((LOOPBACK, l4_port)).await?;
        let udp_reply = until!("UDP echo", Duration::from_secs(10), async {
            udp.send(b"datagram").await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = tokio::time::timeout(Duration::from_millis(300), udp.recv(&mut buf)).await.ok()?.ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }.await).0;
        assert_eq!(udp_reply, "stream-b:datagram");

        // Every route's status is written by the controller.
        for (version, kind, name) in [("v1", "GRPCRoute", "echo"), ("v1", "TLSRoute", "one"),
                                      ("v1alpha2", "TCPRoute", "tcp"), ("v1alpha2", "UDPRoute", "udp")] {
            let (status, _) = until!(format!("{kind} {name} accepted"), Duration::from_secs(10),
                accepted(&client, &ns, version, kind, name).await.filter(|(s, _)| s == "True"));
            assert_eq!(status.1, "Accepted");
        }
        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}

/// The status our controller wrote on BackendTLSPolicy `name`: `(Accepted, ResolvedRefs)`
/// statuses of its first ancestor.
async fn policy_verdict(client: &kube::Client, ns: &str, name: &str) -> Option<(String, String)> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "BackendTLSPolicy",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let policy = api.get(name).await.ok()?;
    let conditions = policy
        .data
        .pointer("/status/ancestors/0/conditions")?
        .as_array()?
        .clone();
    let of = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .and_then(|c| c["status"].as_str())
            .map(str::to_owned)
    };
    Some((of("Accepted")?, of("ResolvedRefs")?))
}

#[tokio::test]
async fn backend_tls_policy_reaches_only_backends_whose_certificate_matches() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let ca = TestCa::new("backend-ca")?;
        let pair = ca.server_cert("backend.internal", &["backend.internal"])?;
        let certs = tempfile::tempdir()?;
        let (cert, key) = (certs.path().join("b.crt"), certs.path().join("b.key"));
        std::fs::write(&cert, &pair.cert_pem)?;
        std::fs::write(&key, &pair.key_pem)?;
        let mode = vec!["--tls".to_owned(), cert.display().to_string(), key.display().to_string()];
        let backend = EchoHost::start_with("tls-backend", echo_bin, &mode).await?;
        // Three Services in front of the same TLS backend, each with its own policy.
        for name in ["good", "wrong-name", "no-ca", "system"] {
            service_with_endpoint(&client, &ns, name, backend.address()).await;
        }
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "backend-ca"},
            "data": {"ca.crt": ca.cert_pem}})).await;
        for (name, hostname, ca_map) in [("good", "backend.internal", "backend-ca"),
                                         ("wrong-name", "other.internal", "backend-ca"),
                                         ("no-ca", "backend.internal", "missing-ca")] {
            apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
                "metadata": {"name": name},
                "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": name}],
                         "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": ca_map}],
                                        "hostname": hostname}}})).await;
        }
        let controller_name = format!("example.com/backend-tls-{ns}");
        let class = format!("gc-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "gw", &class, &controller_name, port).await;
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": "system"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "system"}],
                     "validation": {"wellKnownCACertificates": "System", "hostname": "backend.internal"}}})).await;
        let rules: Vec<serde_json::Value> = ["good", "wrong-name", "no-ca", "system"].iter().map(|name| json!({
            "matches": [{"path": {"type": "PathPrefix", "value": format!("/{name}")}}],
            "backendRefs": [{"name": name, "port": 80}]})).collect();
        apply(&client, Some(&ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}})).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "gw", AdsFlavour::StateOfTheWorld).await;
        let http = reqwest::Client::new();
        let get = |path: &'static str| {
            let http = http.clone();
            async move { http.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok() }
        };
        let (echo, _) = until!("TLS to the backend whose certificate matches", Duration::from_secs(20), async {
            get("/good").await.filter(|r| r.status() == 200)?.json::<Echo>().await.ok()
        }.await);
        assert!(echo.tls, "the backend saw a TLS connection");
        assert_eq!(echo.sni.as_deref(), Some("backend.internal"));
        // Envoy accepted every cluster (a rejected one would also answer 503, but would leave
        // the Gateway unprogrammed): the TLS settings of each policy are valid configuration.
        let clusters = envoy.admin_get("/clusters").await?;
        for name in ["good", "wrong-name", "no-ca", "system"] {
            let cluster = format!("service/{ns}/{name}/80::");
            assert!(clusters.contains(&cluster), "Envoy has no cluster {cluster}");
        }
        // The same backend behind a policy naming another host, trusting nothing readable, or
        // trusting the system store (the backend's CA is a test CA): refused.
        for path in ["/wrong-name", "/no-ca", "/system"] {
            let status = get(path).await.expect("answer").status();
            assert_eq!(status, 503, "{path} must fail the TLS handshake");
        }
        let stats = envoy.admin_get("/stats").await?;
        assert!(stats.lines().any(|l| l.contains(&format!("service/{ns}/wrong-name/80.ssl.fail_verify_san")) && !l.ends_with(": 0")),
            "Envoy counted the SAN mismatch");

        let (good, _) = until!("good policy status", Duration::from_secs(10),
            policy_verdict(&client, &ns, "good").await);
        assert_eq!(good, ("True".to_owned(), "True".to_owned()));
        let (no_ca, _) = until!("no-ca policy status", Duration::from_secs(10),
            policy_verdict(&client, &ns, "no-ca").await);
        assert_eq!(no_ca, ("False".to_owned(), "False".to_owned()));
        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}
