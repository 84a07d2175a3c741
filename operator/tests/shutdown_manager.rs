//! The proxies' shutdown manager against a real Envoy: `/shutdown` starts a graceful drain (an
//! open keep-alive connection is told `connection: close` on its next response), waits for the
//! minimum drain duration and for the connection to go, and only then answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eg_e2e::envoy::EnvoyProcess;
use eg_e2e::{LOOPBACK, free_port};
use eg_operator::fleet::shutdown::{DrainPolicy, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn bootstrap(port: u16) -> String {
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "http",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "http",
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]}
                }
            }]}]
        }]}
    })
    .to_string()
}

/// Sends one request on `stream` and returns the response head (the body is 2 bytes).
async fn request(stream: &mut tokio::net::TcpStream) -> Result<String, Error> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: drain.test\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let mut body = [0u8; 2];
    stream.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

#[tokio::test]
async fn shutdown_drains_envoy_and_answers_once_connections_are_gone() -> Result<(), Error> {
    let port = free_port(LOOPBACK)?;
    let envoy = EnvoyProcess::start_with_args(
        &bootstrap(port),
        &["--drain-time-s", "20", "--drain-strategy", "immediate"],
    )
    .await?;
    let mut client = tokio::net::TcpStream::connect((LOOPBACK, port)).await?;
    let first = request(&mut client).await?;
    assert!(!first.contains("connection: close"), "{first}");

    let listen = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let policy = DrainPolicy {
        min: Duration::from_secs(1),
        timeout: Duration::from_secs(15),
    };
    tokio::spawn(run(listen, envoy.admin_address(), policy));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let shutdown = tokio::spawn({
        let http = http.clone();
        async move {
            loop {
                // The manager may still be binding its port.
                if let Ok(r) = http.get(format!("http://{listen}/shutdown")).send().await {
                    return (
                        r.status(),
                        r.text().await.unwrap_or_default(),
                        started.elapsed(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // Draining: the next response on the open connection asks the client to close it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = request(&mut client).await?;
    assert!(second.contains("connection: close"), "{second}");
    drop(client);

    let (status, body, took) = shutdown.await?;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "drained; 0 connections left");
    assert!(
        took >= policy.min,
        "answered before the minimum drain: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "waited for the timeout instead of the connection: {took:?}"
    );

    // A second call (another container's hook, a retry) does not start another drain.
    let again = http.get(format!("http://{listen}/shutdown")).send().await?;
    assert_eq!(again.status(), 200);
    Ok(())
}
