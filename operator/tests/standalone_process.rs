//! `eg-operator standalone` as a user runs it: the binary on a copy of `examples/quickstart/`,
//! real Envoy child processes, echo backends on loopback, requests through the Gateway's port,
//! live file edits, a broken file, a killed Envoy and SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use eg_e2e::backend::{Echo, EchoBackend};
use eg_e2e::process::{is_alive, terminate};
use eg_e2e::tools::repo_root;
use eg_e2e::{LOOPBACK, free_port};
use serde_json::Value;

mod common;

use common::standalone::{Error, Standalone, eventually};

impl Standalone {
    /// The quickstart, with its Gateway and Backend ports moved to free ones.
    async fn start() -> Result<Self, Error> {
        let mut backends = Vec::new();
        let mut ports = Vec::new();
        for (name, port) in [("stable", 9001), ("canary", 9002), ("docs", 9003)] {
            let backend = EchoBackend::http(name, LOOPBACK).await?;
            ports.push((port, backend.addr().port()));
            backends.push(backend);
        }
        let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
        let quickstart = repo_root().join("examples/quickstart");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&quickstart)? {
            let path = entry?.path();
            let mut text = std::fs::read_to_string(&path)?;
            text = text.replace("port: 8888", &format!("port: {}", gateway.port()));
            for (from, to) in &ports {
                text = text.replace(&format!("port: {from}"), &format!("port: {to}"));
            }
            let name = path
                .file_name()
                .ok_or("file name")?
                .to_string_lossy()
                .into_owned();
            files.push((name, text));
        }
        Self::launch(files, gateway, backends).await
    }
}

/// The quickstart's docs Backend as a backendRef.
const BACKEND_DOCS: &str = "{group: gateway.envoyproxy.io, kind: Backend, name: docs}";

/// An HTTPRoute on Gateway `eg` with one rule: one path match, one backendRef (flow YAML).
fn route_yaml(name: &str, path_type: &str, path: &str, backend_ref: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: eg}}]\n  rules:\n  - matches: [{{path: {{type: {path_type}, value: {path:?}}}}}]\n    backendRefs: [{backend_ref}]\n"
    )
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test]
async fn quickstart_routes_by_path_header_and_weight() -> Result<(), Error> {
    let s = Standalone::start().await?;
    assert_eq!(s.backend("/docs/intro", &[]).await.as_deref(), Some("docs"));
    assert_eq!(
        s.backend("/", &[("x-canary", "always")]).await.as_deref(),
        Some("canary")
    );

    let total = 500;
    let mut canary = 0;
    for _ in 0..total {
        match s.backend("/", &[]).await.as_deref() {
            Some("canary") => canary += 1,
            Some("stable") => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let share = f64::from(canary) / f64::from(total);
    // 90/10 over 500 requests: the canary share is 0.10 ± 0.013 (one standard deviation).
    assert!((0.05..=0.16).contains(&share), "canary share {share}");

    let status = s.admin_json("/status").await;
    let gateway = &status["gateways"]["default/eg"]["conditions"];
    assert_eq!(
        condition(gateway, "Accepted").map(|c| &c["status"]),
        Some(&"True".into())
    );
    assert_eq!(
        condition(gateway, "Programmed").map(|c| &c["status"]),
        Some(&"True".into()),
        "{status}"
    );
    let route = &status["httpRoutes"]["default/app"]["parents"][0]["conditions"];
    assert_eq!(
        condition(route, "Accepted").map(|c| &c["status"]),
        Some(&"True".into())
    );
    assert_eq!(
        condition(route, "ResolvedRefs").map(|c| &c["status"]),
        Some(&"True".into())
    );

    let metrics = s.metrics().await?;
    assert!(
        metrics.contains("eg_operator_standalone_gateways 1"),
        "{metrics}"
    );
    let dump = s.admin_json("/config_dump").await;
    assert!(dump["default/eg"]["configs"].is_array(), "{dump}");
    Ok(())
}

#[tokio::test]
async fn edits_apply_live_and_a_broken_file_keeps_the_last_good_config() -> Result<(), Error> {
    let s = Standalone::start().await?;
    assert_eq!(s.backend("/docs/a", &[]).await.as_deref(), Some("docs"));

    // A new file with a new route serves within a second.
    s.write(
        "extra.yaml",
        &route_yaml("extra", "PathPrefix", "/extra", BACKEND_DOCS),
    );
    let (_, took) = eventually("the new route serves", Duration::from_secs(5), || async {
        (s.backend("/extra", &[]).await.as_deref() == Some("docs")).then_some(())
    })
    .await;
    assert!(took < Duration::from_secs(1), "new route took {took:?}");

    // Break routes.yaml: the error names file and line; every route keeps serving.
    let good = std::fs::read_to_string(s.config.join("routes.yaml"))?;
    let broken = good.replacen("type: PathPrefix", "type: Prefix", 1);
    let broken_line = broken
        .lines()
        .position(|l| l.contains("type: Prefix"))
        .ok_or("line")?
        + 1;
    s.write("routes.yaml", &broken);
    let (errors, _) = eventually(
        "the broken file is reported",
        Duration::from_secs(5),
        || async {
            let status = s.admin_json("/status").await;
            let errors = status["files"]["errors"].as_array()?.clone();
            (!errors.is_empty()).then_some(errors)
        },
    )
    .await;
    assert_eq!(errors[0]["file"], "routes.yaml");
    assert_eq!(errors[0]["line"], broken_line);
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTPRoute default/docs")
            && message.contains("spec.rules[0].matches[0].path.type"),
        "{message}"
    );
    assert_eq!(s.backend("/docs/a", &[]).await.as_deref(), Some("docs"));
    assert_eq!(
        s.backend("/", &[("x-canary", "always")]).await.as_deref(),
        Some("canary")
    );

    // A route to a Backend that does not exist: ResolvedRefs=False in /status.
    s.write(
        "missing.yaml",
        &route_yaml(
            "missing",
            "PathPrefix",
            "/missing",
            "{group: gateway.envoyproxy.io, kind: Backend, name: nowhere}",
        ),
    );
    let (resolved, _) = eventually(
        "missing Backend reported",
        Duration::from_secs(5),
        || async {
            let status = s.admin_json("/status").await;
            condition(
                &status["httpRoutes"]["default/missing"]["parents"][0]["conditions"],
                "ResolvedRefs",
            )
            .cloned()
        },
    )
    .await;
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");

    // Fixing the file recovers without a restart.
    s.write(
        "routes.yaml",
        &good.replace("value: /docs", "value: /manual"),
    );
    eventually("the fixed file applies", Duration::from_secs(5), || async {
        let status = s.admin_json("/status").await;
        let clean = status["files"]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty);
        (clean && s.backend("/manual/x", &[]).await.as_deref() == Some("docs")).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_killed_envoy_restarts_and_sigterm_leaves_no_child() -> Result<(), Error> {
    let mut s = Standalone::start().await?;
    let envoys = s.children();
    assert_eq!(envoys.len(), 1, "one Envoy per Gateway: {envoys:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &envoys[0].to_string()])
        .status();
    eventually("a new Envoy serves", Duration::from_secs(15), || async {
        let restarted = s.children().iter().any(|p| !envoys.contains(p));
        (restarted && s.backend("/docs", &[]).await.as_deref() == Some("docs")).then_some(())
    })
    .await;
    let metrics = s.metrics().await?;
    assert!(
        metrics.contains("eg_operator_standalone_envoy_restarts_total{gateway=\"default/eg\"} 1"),
        "{metrics}"
    );

    let envoys = s.children();
    terminate(s.process.pid());
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.process.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "standalone did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in envoys {
        assert!(
            !is_alive(pid),
            "Envoy {pid} outlived the standalone process"
        );
    }
    assert!(!Path::new(&s.config).join("../state/xds.sock").exists());
    Ok(())
}

/// The reference architecture's manifests, as written there, with the Secret and the Services
/// behind the canary supplied as files (only the listener port moves off 443).
#[tokio::test]
async fn reference_architecture_manifests_serve_in_standalone() -> Result<(), Error> {
    let ca = eg_e2e::pki::TestCa::new("reference test CA")?;
    let cert = ca.server_cert("*.example.com", &["*.example.com"])?;
    let v1 = EchoBackend::http("api-v1", LOOPBACK).await?;
    let v2 = EchoBackend::http("api-v2", LOOPBACK).await?;
    let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let service = |name: &str, backend: &EchoBackend| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{port: {port}}}]\n",
            port = backend.addr().port()
        )
    };
    let files = vec![
        (
            "class.yaml".to_owned(),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: envoy-gateway}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n".to_owned(),
        ),
        (
            "gateway.yaml".to_owned(),
            format!(
                "# Example: HA Envoy Gateway deployment\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: production-gateway\nspec:\n  gatewayClassName: envoy-gateway\n  listeners:\n  - name: https\n    port: {}\n    protocol: HTTPS\n    hostname: \"*.example.com\"\n    tls:\n      mode: Terminate\n      certificateRefs:\n      - name: example-com-tls\n",
                gateway.port()
            ),
        ),
        (
            "route.yaml".to_owned(),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: app-route\nspec:\n  parentRefs:\n  - name: production-gateway\n  hostnames:\n  - api.example.com\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /v1/\n    backendRefs:\n    - name: api-service-v1\n      port: 80\n      weight: 90\n    - name: api-service-v2\n      port: 80\n      weight: 10  # Canary deployment\n".to_owned(),
        ),
        (
            "security.yaml".to_owned(),
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata:\n  name: api-security\nspec:\n  targetRef:\n    group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: api-route\n  jwt:\n    providers:\n    - name: auth0\n      issuer: \"https://example.auth0.com/\"\n      audiences:\n      - \"api.example.com\"\n".to_owned(),
        ),
        (
            "secret.yaml".to_owned(),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: example-com-tls}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
                indent(&cert.cert_pem),
                indent(&cert.key_pem)
            ),
        ),
        (
            "services.yaml".to_owned(),
            format!("{}---\n{}", service("api-service-v1", &v1), service("api-service-v2", &v2)),
        ),
    ];
    let s = Standalone::launch(files, gateway, vec![v1, v2]).await?;

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
        .resolve("api.example.com", gateway)
        .build()?;
    let url = format!("https://api.example.com:{}/v1/orders", gateway.port());
    let total = 300;
    let mut v2_count = 0;
    for _ in 0..total {
        let echo: Echo = https
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        assert_eq!(
            echo.sni.as_deref(),
            None,
            "plain HTTP behind the TLS listener"
        );
        match echo.backend.as_str() {
            "api-v2" => v2_count += 1,
            "api-v1" => {}
            other => panic!("unexpected backend {other}"),
        }
    }
    let share = f64::from(v2_count) / f64::from(total);
    assert!((0.04..=0.17).contains(&share), "canary share {share}");

    let status = s.admin_json("/status").await;
    let route = &status["httpRoutes"]["default/app-route"]["parents"][0]["conditions"];
    assert_eq!(
        condition(route, "Accepted").map(|c| &c["status"]),
        Some(&"True".into()),
        "{status}"
    );
    // The seed's SecurityPolicy targets `api-route`, while its route is `app-route`: the
    // policy reports the missing target and changes nothing (the route above kept serving).
    let policy = &status["securityPolicies"]["default/api-security"]["ancestors"][0];
    let accepted = condition(&policy["conditions"], "Accepted").expect("Accepted condition");
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"False".into(), &"TargetNotFound".into()),
        "{status}"
    );
    assert_eq!(policy["ancestorRef"]["name"], "api-route", "{policy}");
    Ok(())
}

/// A configuration Envoy rejects (a regular expression RE2 refuses, which the translator's
/// own regex engine accepts) shows as Programmed=False with Envoy's message, while the previous
/// configuration keeps serving.
#[tokio::test]
async fn a_rejected_configuration_is_reported_and_the_last_good_one_serves() -> Result<(), Error> {
    let s = Standalone::start().await?;
    s.write(
        "nack.yaml",
        &route_yaml("nack", "RegularExpression", "/x{1001}", BACKEND_DOCS),
    );
    let (programmed, _) = eventually(
        "the rejection is reported",
        Duration::from_secs(10),
        || async {
            let status = s.admin_json("/status").await;
            // `Pending` (waiting for the proxy's answer) comes first; the answer decides.
            condition(
                &status["gateways"]["default/eg"]["conditions"],
                "Programmed",
            )
            .filter(|c| c["status"] == "False" && c["reason"] != "Pending")
            .cloned()
        },
    )
    .await;
    assert_eq!(programmed["reason"], "Invalid");
    let message = programmed["message"].as_str().unwrap_or_default();
    assert!(message.contains("Envoy rejected"), "{message}");
    assert_eq!(s.backend("/docs/a", &[]).await.as_deref(), Some("docs"));
    assert_eq!(
        s.backend("/", &[("x-canary", "always")]).await.as_deref(),
        Some("canary")
    );

    std::fs::remove_file(s.config.join("nack.yaml"))?;
    eventually(
        "Programmed again once the route is gone",
        Duration::from_secs(10),
        || async {
            let status = s.admin_json("/status").await;
            condition(
                &status["gateways"]["default/eg"]["conditions"],
                "Programmed",
            )
            .filter(|c| c["status"] == "True")
            .map(|_| ())
        },
    )
    .await;
    Ok(())
}

/// A ClientTrafficPolicy file applies to the Gateway's listener (client IP from a header that
/// must be present) and reports its status under `/status`.
#[tokio::test]
async fn a_client_traffic_policy_file_shapes_the_listener_and_reports_status() -> Result<(), Error>
{
    let s = Standalone::start().await?;
    s.write(
        "client.yaml",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy\nmetadata: {name: clients}\nspec:\n  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: eg}\n  clientIPDetection: {customHeader: {name: x-client-ip, failClosed: true}}\n",
    );
    eventually(
        "requests without the client IP header are refused",
        Duration::from_secs(10),
        || async { s.backend("/docs/a", &[]).await.is_none().then_some(()) },
    )
    .await;
    assert_eq!(
        s.backend("/docs/a", &[("x-client-ip", "192.0.2.1")])
            .await
            .as_deref(),
        Some("docs")
    );
    let status = s.admin_json("/status").await;
    let policy = &status["clientTrafficPolicies"]["default/clients"]["ancestors"][0];
    let accepted = condition(&policy["conditions"], "Accepted").expect("Accepted condition");
    assert_eq!(accepted["status"], "True", "{status}");
    assert_eq!(policy["ancestorRef"]["name"], "eg", "{policy}");
    Ok(())
}

/// Even a standalone process killed outright (OOM killer, SIGKILL) leaves no Envoy behind.
#[tokio::test]
async fn envoy_dies_with_a_killed_standalone_process() -> Result<(), Error> {
    let mut s = Standalone::start().await?;
    let envoys = s.children();
    assert_eq!(envoys.len(), 1, "{envoys:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &s.process.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoys.iter().any(|pid| is_alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "Envoy {envoys:?} outlived its killed parent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = s.process.exited();
    Ok(())
}

/// A raw TCP server that accepts one HTTP/1.1 Upgrade per connection (answering 101) and then
/// echoes bytes: enough of WebSocket to prove the upgrade passes through Envoy.
async fn upgrade_echo() -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !text.contains("upgrade: websocket") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// Upstream protocols chosen by appProtocol: h2c for a Service port (`kubernetes.io/h2c`) and a
/// Backend (`gateway.envoyproxy.io/h2c`); WebSocket upgrades for `kubernetes.io/ws`.
#[tokio::test]
async fn app_protocols_select_h2c_and_websocket_upstreams() -> Result<(), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h2c_service = EchoBackend::http("h2c-service", LOOPBACK).await?;
    let h2c_backend = EchoBackend::http("h2c-backend", LOOPBACK).await?;
    let (ws_addr, _ws) = upgrade_echo().await?;
    let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let service = |name: &str, app_protocol: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{name: p, port: 80, targetPort: {port}, appProtocol: {app_protocol}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: p, port: {port}}}]\n---\n"
        )
    };
    let route = |name: &str, prefix: &str, backend_ref: &str| {
        route_yaml(name, "PathPrefix", prefix, backend_ref) + "---\n"
    };
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: eg}}\nspec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: eg}}\nspec:\n  gatewayClassName: eg\n  listeners: [{{name: http, protocol: HTTP, port: {}}}]\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: h2c}}\nspec:\n  appProtocols: [gateway.envoyproxy.io/h2c]\n  endpoints: [{{ip: {{address: 127.0.0.1, port: {}}}}}]\n---\n{}{}{}{}{}",
        gateway.port(),
        h2c_backend.addr().port(),
        service("grpcish", "kubernetes.io/h2c", h2c_service.addr().port()),
        service("ws", "kubernetes.io/ws", ws_addr.port()),
        route("svc", "/svc", "{name: grpcish, port: 80}"),
        route(
            "backend",
            "/backend",
            "{group: gateway.envoyproxy.io, kind: Backend, name: h2c}"
        ),
        route("ws", "/ws", "{name: ws, port: 80}"),
    );
    let s = Standalone::launch(
        vec![("all.yaml".to_owned(), manifests)],
        gateway,
        vec![h2c_service, h2c_backend],
    )
    .await?;

    for (path, backend) in [("/svc", "h2c-service"), ("/backend", "h2c-backend")] {
        let echo: Echo = s
            .http
            .get(format!("http://{gateway}{path}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        assert_eq!(
            (echo.backend.as_str(), echo.protocol.as_str()),
            (backend, "HTTP/2.0"),
            "{path}"
        );
    }

    let mut stream = tokio::net::TcpStream::connect(gateway).await?;
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: ws.test\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
        .write_all(b"ping over the upgraded connection")
        .await?;
    let mut echoed = vec![0u8; 33];
    stream.read_exact(&mut echoed).await?;
    assert_eq!(&echoed[..], b"ping over the upgraded connection");
    Ok(())
}

/// A GatewayClass, an HTTP Gateway on `gateway`, one `Backend` per echo backend (named after
/// it), and `routes` (HTTPRoute YAML documents) as one manifest file.
fn manifests(
    gateway: SocketAddr,
    backends: &[&EchoBackend],
    routes: &str,
) -> Vec<(String, String)> {
    let mut text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: eg}}\nspec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: eg}}\nspec:\n  gatewayClassName: eg\n  listeners: [{{name: http, protocol: HTTP, port: {}}}]\n---\n",
        gateway.port()
    );
    for b in backends {
        text.push_str(&format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {}}}\nspec:\n  endpoints: [{{ip: {{address: {}, port: {}}}}}]\n---\n",
            b.name(),
            b.addr().ip(),
            b.addr().port()
        ));
    }
    text.push_str(routes);
    vec![("all.yaml".to_owned(), text)]
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// HTTPRoute CORS filters through Envoy's CORS filter: an allowed preflight is answered by
/// Envoy with the policy's headers (never reaching the backend), a preflight from another
/// origin gets no CORS headers, and an actual cross-origin request reaches the backend and
/// comes back with the origin echoed, the exposed headers and the credentials flag.
#[tokio::test]
async fn cors_preflights_are_answered_by_envoy_with_the_policy() -> Result<(), Error> {
    let app = EchoBackend::http("app", LOOPBACK).await?;
    let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let routes = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: cors}\nspec:\n  parentRefs: [{name: eg}]\n  rules:\n  \
        - matches: [{path: {type: PathPrefix, value: /api}}]\n    filters:\n    - type: CORS\n      cors:\n        allowOrigins: [\"https://app.example\", \"https://*.shop.example\"]\n        allowMethods: [GET, PUT]\n        allowHeaders: [X-Token]\n        exposeHeaders: [X-Request-Id]\n        maxAge: 600\n        allowCredentials: true\n    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: app}]\n  \
        - matches: [{path: {type: PathPrefix, value: /public}}]\n    filters:\n    - type: CORS\n      cors:\n        allowOrigins: [\"*\"]\n        allowMethods: [\"*\"]\n        allowHeaders: [\"*\"]\n    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: app}]\n";
    let s = Standalone::launch(manifests(gateway, &[&app], routes), gateway, vec![app]).await?;
    eventually("the route serves", Duration::from_secs(10), || async {
        s.backend("/api/x", &[]).await.map(|_| ())
    })
    .await;

    let preflight = |path: &'static str, origin: &'static str, method: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, format!("http://{gateway}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "x-token")
            .send()
    };

    // Allowed origin, through the host wildcard: Envoy answers with the whole policy.
    let r = preflight("/api/items", "https://a.b.shop.example", "PUT").await?;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://a.b.shop.example")
    );
    assert_eq!(header(&r, "access-control-allow-methods"), Some("GET,PUT"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("X-Token"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    let body = r.text().await?;
    assert!(
        serde_json::from_str::<Echo>(&body).is_err(),
        "the preflight reached the backend: {body}"
    );

    // An origin outside the list (or the list's own origin on another port): Envoy answers
    // without `access-control-allow-origin`, so the browser refuses the actual request, and
    // the backend never sees the preflight.
    for origin in ["https://evil.example", "https://app.example:8443"] {
        let r = preflight("/api/items", origin, "PUT").await?;
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{origin}");
        let body = r.text().await?;
        assert!(serde_json::from_str::<Echo>(&body).is_err(), "{body}");
    }
    // A browser's own spelling of the default port is the same origin.
    let r = preflight("/api/items", "https://app.example:443", "GET").await?;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example:443")
    );

    // The actual request: forwarded, answered with the origin and the exposed headers.
    let r = s
        .http
        .get(format!("http://{gateway}/api/items"))
        .header("origin", "https://app.example")
        .send()
        .await?;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("X-Request-Id")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(r.json::<Echo>().await?.backend, "app");

    // Wildcards: any origin is echoed, and Envoy answers `*` methods and headers with the
    // ones the preflight asks for, which Gateway API requires for credentialed requests and
    // allows for others.
    let r = preflight("/public/x", "http://localhost:5173", "PATCH").await?;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(header(&r, "access-control-allow-methods"), Some("PATCH"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("x-token"));
    assert_eq!(
        header(&r, "access-control-max-age"),
        Some("5"),
        "the CRD default"
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    Ok(())
}

/// backendRef-level header filters apply only when their backend is picked, next to the
/// rule's own modifier, which applies whichever backend is.
#[tokio::test]
async fn backend_ref_header_filters_reach_only_their_backend() -> Result<(), Error> {
    let a = EchoBackend::http("a", LOOPBACK).await?;
    let b = EchoBackend::http("b", LOOPBACK).await?;
    let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let routes = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split}\nspec:\n  parentRefs: [{name: eg}]\n  rules:\n  \
        - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: X-Rule, value: split}]}\n    backendRefs:\n    \
        - {group: gateway.envoyproxy.io, kind: Backend, name: a, weight: 50, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Only-A, value: \"yes\"}], remove: [X-Strip-For-A]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Served-By, value: a}]}}]}\n    \
        - {group: gateway.envoyproxy.io, kind: Backend, name: b, weight: 50}\n";
    let s = Standalone::launch(manifests(gateway, &[&a, &b], routes), gateway, vec![a, b]).await?;
    eventually("the route serves", Duration::from_secs(10), || async {
        s.backend("/", &[]).await.map(|_| ())
    })
    .await;

    let (mut seen_a, mut seen_b) = (0, 0);
    for _ in 0..60 {
        let r = s
            .http
            .get(format!("http://{gateway}/"))
            .header("x-strip-for-a", "1")
            .send()
            .await?;
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let served_by = header(&r, "x-served-by").map(str::to_owned);
        let echo: Echo = r.json().await?;
        assert_eq!(
            echo.headers.get("x-rule").map(String::as_str),
            Some("split")
        );
        match echo.backend.as_str() {
            "a" => {
                seen_a += 1;
                assert_eq!(
                    echo.headers.get("x-only-a").map(String::as_str),
                    Some("yes")
                );
                assert_eq!(echo.headers.get("x-strip-for-a"), None);
                assert_eq!(served_by.as_deref(), Some("a"));
            }
            "b" => {
                seen_b += 1;
                assert_eq!(echo.headers.get("x-only-a"), None, "{echo:?}");
                assert_eq!(
                    echo.headers.get("x-strip-for-a").map(String::as_str),
                    Some("1")
                );
                assert_eq!(served_by, None);
            }
            other => panic!("unexpected backend {other}"),
        }
    }
    eprintln!("backendRef filters: {seen_a} requests to a, {seen_b} to b");
    assert!(seen_a > 0 && seen_b > 0, "a {seen_a}, b {seen_b}");
    Ok(())
}

/// A 50/50 split whose second backendRef cannot be resolved: that half of the requests gets
/// HTTP 500 (Gateway API), the other half still reaches the valid backend, and the route
/// reports ResolvedRefs=False.
#[tokio::test]
async fn an_invalid_backend_ref_keeps_its_share_as_http_500() -> Result<(), Error> {
    let good = EchoBackend::http("good", LOOPBACK).await?;
    let gateway = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let routes = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split}\nspec:\n  parentRefs: [{name: eg}]\n  rules:\n  \
        - backendRefs:\n    - {group: gateway.envoyproxy.io, kind: Backend, name: good, weight: 50}\n    - {group: gateway.envoyproxy.io, kind: Backend, name: missing, weight: 50}\n";
    let s = Standalone::launch(manifests(gateway, &[&good], routes), gateway, vec![good]).await?;
    eventually("the route serves", Duration::from_secs(10), || async {
        s.backend("/", &[]).await.map(|_| ())
    })
    .await;

    let total = 600;
    let (mut ok, mut errors) = (0_u32, 0_u32);
    for _ in 0..total {
        let r = s.http.get(format!("http://{gateway}/")).send().await?;
        match r.status().as_u16() {
            200 => {
                assert_eq!(r.json::<Echo>().await?.backend, "good");
                ok += 1;
            }
            500 => errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let share = f64::from(errors) / f64::from(total);
    eprintln!(
        "invalid backendRef: {errors} of {total} requests got 500 (share {share:.3}), {ok} reached the valid backend"
    );
    // 50/50 over 600 requests: one standard deviation is 0.02; ±0.1 is five.
    assert!((0.4..=0.6).contains(&share), "500 share {share}");

    let status = s.admin_json("/status").await;
    let route = &status["httpRoutes"]["default/split"]["parents"][0]["conditions"];
    assert_eq!(
        condition(route, "ResolvedRefs").map(|c| &c["status"]),
        Some(&"False".into()),
        "{status}"
    );
    Ok(())
}
