//! The pinned Envoy carries real requests to the harness's echo backends, and the backends answer
//! HTTPS (with SNI and ALPN) and gRPC as a proxy would see them.

use std::net::{IpAddr, SocketAddr};

use eg_e2e::backend::{Echo, EchoBackend, decode_grpc_echo};
use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::pki::TestCa;
use eg_e2e::{LOOPBACK, free_port};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

/// A static bootstrap: one HTTP listener routing everything to one upstream.
fn static_bootstrap(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: {lip}, port_value: {lport}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: echo}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {uip}, port_value: {uport}}}}}}}
"#,
        lip = listen.ip(),
        lport = listen.port(),
        uip = upstream.ip(),
        uport = upstream.port(),
    )
}

#[tokio::test]
async fn envoy_from_static_bootstrap_proxies_to_the_echo_backend() {
    let backend = EchoBackend::http("echo-a", ip("127.0.0.2"))
        .await
        .expect("backend");
    let listen = SocketAddr::new(LOOPBACK, free_port(LOOPBACK).expect("port"));
    let envoy = EnvoyProcess::start(&static_bootstrap(listen, backend.addr()))
        .await
        .expect("envoy starts");

    let resp = reqwest::Client::new()
        .get(format!("http://{listen}/hello?x=1"))
        .header("x-test", "yes")
        .send()
        .await
        .expect("request through envoy");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("server").and_then(|v| v.to_str().ok()),
        Some("envoy"),
        "answer did not come through Envoy"
    );
    let echo: Echo = resp.json().await.expect("echo JSON");
    assert_eq!(echo.backend, "echo-a");
    assert_eq!(echo.path, "/hello");
    assert_eq!(echo.query.as_deref(), Some("x=1"));
    assert_eq!(echo.headers.get("x-test").map(String::as_str), Some("yes"));
    assert!(
        echo.headers.contains_key("x-request-id"),
        "Envoy adds x-request-id: {echo:?}"
    );
    assert_eq!(
        echo.headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );

    let dump = envoy.config_dump().await.expect("config_dump");
    assert!(
        dump.to_string()
            .contains(&backend.addr().port().to_string())
    );
    let stats = envoy
        .admin_get("/stats?filter=^cluster.echo.upstream_rq_total$")
        .await
        .expect("stats");
    assert_eq!(stats.trim(), "cluster.echo.upstream_rq_total: 1");
    envoy.stop();
}

#[tokio::test]
async fn https_backend_reports_sni_and_negotiates_h2() {
    let ca = TestCa::new("e2e-ca").expect("ca");
    let cert = ca.server_cert("echo.test", &["echo.test"]).expect("cert");
    let backend = EchoBackend::https("secure", ip("127.0.0.3"), &cert)
        .await
        .expect("backend");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).expect("ca pem"),
        )
        .resolve("echo.test", backend.addr())
        .build()
        .expect("client");
    let echo: Echo = client
        .get(format!("https://echo.test:{}/tls", backend.addr().port()))
        .send()
        .await
        .expect("https request")
        .json()
        .await
        .expect("echo JSON");
    assert!(echo.tls);
    assert_eq!(echo.sni.as_deref(), Some("echo.test"));
    assert_eq!(echo.protocol, "HTTP/2.0");
    assert_eq!(echo.backend, "secure");
}

#[tokio::test]
async fn grpc_backend_answers_a_framed_message_and_ok_trailers() {
    let backend = EchoBackend::http("grpc", ip("127.0.0.4"))
        .await
        .expect("backend");
    let stream = tokio::net::TcpStream::connect(backend.addr())
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{}/echo.v1.Echo/Say", backend.addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let resp = sender.send_request(req).await.expect("grpc call");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let echo = decode_grpc_echo(&collected.to_bytes()).expect("framed echo");
    assert_eq!(echo.path, "/echo.v1.Echo/Say");
    assert_eq!(echo.protocol, "HTTP/2.0");
    assert_eq!(echo.body_len, 5);
}
