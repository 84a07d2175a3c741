//! Traffic equivalence of `eg-operator migrate ingress-nginx`: the binary migrates
//! `tests/migrate/traffic/ingresses.yaml`, `eg-operator standalone` serves the result with a
//! real Envoy, and requests reach the backends (with the paths) that the Ingresses' ingress-nginx
//! semantics say: hosts, Prefix / Exact / ImplementationSpecific paths, rewrite-target with
//! capture groups and without, permanent-redirect, app-root, ssl-redirect to the HTTPS listener
//! (which serves the Ingress's certificate), canary by weight, header and cookie, CORS, basic
//! auth from an htpasswd Secret, CIDR allow-lists, and the default backend of another namespace.
//!
//! The Services of the fixture are given EndpointSlices pointing at echo backends on loopback,
//! as a cluster's endpoint controller would. The rate-limit and external-auth policies migrate
//! writes are not exercised with traffic here (they need a client per source address and an
//! auth service); their acceptance is checked by unit tests of the translator and against the
//! real apiserver (`migrate_apply.rs`).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::standalone::{Error, Standalone, eventually};
use eg_e2e::backend::{Echo, EchoBackend};
use eg_e2e::pki::TestCa;
use eg_e2e::{LOOPBACK, free_port};

const SERVICES: &[(&str, &str)] = &[
    ("shop", "web"),
    ("shop", "health"),
    ("shop", "static"),
    ("shop", "api"),
    ("shop", "stable"),
    ("shop", "next"),
    ("ops", "fallback"),
];

/// What came back: the status, the Location header and, for 2xx, the echo.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    echo: Option<Echo>,
}

async fn send(
    client: &reqwest::Client,
    gateway: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Answer> {
    let mut request = client
        .get(format!("http://{gateway}{path}"))
        .header("host", host);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let echo = if response.status().is_success() {
        response.json::<Echo>().await.ok()
    } else {
        None
    };
    Some(Answer {
        status,
        location,
        echo,
    })
}

/// `(backend, path it saw)` for a request expected to be forwarded.
async fn reached(
    client: &reqwest::Client,
    gateway: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, String)> {
    let echo = send(client, gateway, host, path, headers).await?.echo?;
    Some((echo.backend, echo.path))
}

fn pair(backend: &str, path: &str) -> Option<(String, String)> {
    Some((backend.to_owned(), path.to_owned()))
}

/// The manifests a cluster would add: the GatewayClass the migration targets, the namespaces
/// (with the label the apiserver sets), the TLS Secret and a Service + EndpointSlice per echo
/// backend.
fn cluster_objects(backends: &[EchoBackend], cert: &eg_e2e::pki::CertPair) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n",
    );
    for ns in ["default", "shop", "ops"] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{kubernetes.io/metadata.name: {ns}}}}}\n"
        ));
    }
    text.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secure-tls, namespace: shop}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&cert.cert_pem),
        b64(&cert.key_pem)
    ));
    for ((ns, name), backend) in SERVICES.iter().zip(backends) {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{port: {port}}}]\n",
            port = backend.addr().port()
        ));
    }
    text
}

#[tokio::test]
async fn migrated_ingresses_route_traffic_as_ingress_nginx_did() -> Result<(), Error> {
    let mut backends = Vec::new();
    for (_, name) in SERVICES {
        backends.push(EchoBackend::http(name, LOOPBACK).await?);
    }
    let ca = TestCa::new("migrate-test-ca")?;
    let cert = ca.server_cert("secure.example.com", &["secure.example.com"])?;
    let http = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
    let https = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);

    // The migration, as a user runs it.
    let out = tempfile::tempdir()?;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/migrate/traffic/ingresses.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_eg-operator"))
        .args([
            "migrate",
            "ingress-nginx",
            "--strict",
            "--report-format",
            "json",
        ])
        .arg("-f")
        .arg(&fixture)
        .arg("-o")
        .arg(out.path())
        .args(["--http-port", &http.port().to_string()])
        .args(["--https-port", &https.port().to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "migrate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["summary"]["ingresses"], 15, "{report:#}");
    assert_eq!(report["summary"]["notTranslated"], 0, "{report:#}");

    let mut files = vec![("cluster.yaml".to_owned(), cluster_objects(&backends, &cert))];
    for entry in std::fs::read_dir(out.path())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .ok_or("file name")?
            .to_string_lossy()
            .into_owned();
        files.push((name, std::fs::read_to_string(&path)?));
    }
    let s = Standalone::launch(files, http, backends).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()?;
    let c = &client;
    eventually(
        "the migrated routes serve",
        Duration::from_secs(20),
        || async {
            reached(c, http, "app.example.com", "/", &[])
                .await
                .map(|_| ())
        },
    )
    .await;

    // Hosts and path types.
    assert_eq!(
        reached(c, http, "app.example.com", "/shop/cart", &[]).await,
        pair("web", "/shop/cart")
    );
    assert_eq!(
        reached(c, http, "app.example.com", "/healthz", &[]).await,
        pair("health", "/healthz")
    );
    assert_eq!(
        reached(c, http, "app.example.com", "/healthz/deep", &[]).await,
        pair("web", "/healthz/deep")
    );
    assert_eq!(
        reached(c, http, "app.example.com", "/static/app.css", &[]).await,
        pair("static", "/static/app.css")
    );
    // rewrite-target /$2 with path /api(/|$)(.*).
    assert_eq!(
        reached(c, http, "app.example.com", "/api/users/7", &[]).await,
        pair("api", "/users/7")
    );
    assert_eq!(
        reached(c, http, "app.example.com", "/api", &[]).await,
        pair("api", "/")
    );
    assert_eq!(
        reached(c, http, "app.example.com", "/apis", &[]).await,
        pair("web", "/apis")
    );
    // rewrite-target without groups replaces the whole path.
    assert_eq!(
        reached(c, http, "legacy.example.com", "/old/page", &[]).await,
        pair("web", "/")
    );
    // Hosts no Ingress names go to the default backend of namespace ops.
    assert_eq!(
        reached(c, http, "unknown.example.org", "/x", &[]).await,
        pair("fallback", "/x")
    );

    // permanent-redirect: 301 to the URL, whatever the path.
    let a = send(c, http, "old.example.com", "/anything", &[])
        .await
        .ok_or("no answer")?;
    assert_eq!(
        (a.status, a.location.as_deref()),
        (301, Some("https://new.example.com/landing"))
    );
    // app-root: / (only) is redirected with 302.
    let a = send(c, http, "portal.example.com", "/", &[])
        .await
        .ok_or("no answer")?;
    assert_eq!(a.status, 302);
    assert!(
        a.location
            .as_deref()
            .is_some_and(|l| l.ends_with("/portal")),
        "{a:?}"
    );
    assert_eq!(
        reached(c, http, "portal.example.com", "/portal/home", &[]).await,
        pair("web", "/portal/home")
    );

    // auth-type basic with auth-secret: the SecurityPolicy asks for the htpasswd users.
    let basic = |user: &str, password: &str| {
        let token = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{password}"),
        );
        format!("Basic {token}")
    };
    let status = |a: Option<Answer>| a.map(|a| a.status);
    assert_eq!(
        status(send(c, http, "private.example.com", "/", &[]).await),
        Some(401)
    );
    let wrong = basic("alice", "guess");
    assert_eq!(
        status(
            send(
                c,
                http,
                "private.example.com",
                "/",
                &[("authorization", &wrong)]
            )
            .await
        ),
        Some(401)
    );
    let right = basic("alice", "wonderland");
    assert_eq!(
        reached(
            c,
            http,
            "private.example.com",
            "/in",
            &[("authorization", &right)]
        )
        .await,
        pair("web", "/in")
    );
    // whitelist-source-range: the client (127.0.0.1) is on one list and not on the other.
    assert_eq!(
        reached(c, http, "office.example.com", "/", &[]).await,
        pair("web", "/")
    );
    assert_eq!(
        status(send(c, http, "partners.example.com", "/", &[]).await),
        Some(403)
    );

    // ssl-redirect: 308 to the HTTPS listener, which serves the Ingress's certificate.
    let a = send(c, http, "secure.example.com", "/pay?x=1", &[])
        .await
        .ok_or("no answer")?;
    assert_eq!(a.status, 308, "{a:?}");
    let location = format!("https://secure.example.com:{}/pay?x=1", https.port());
    assert_eq!(a.location.as_deref(), Some(location.as_str()));
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
        .resolve("secure.example.com", https)
        .timeout(Duration::from_secs(5))
        .build()?;
    let echo: Echo = tls
        .get(&location)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!((echo.backend.as_str(), echo.path.as_str()), ("web", "/pay"));

    // Canary by header, then by weight (30 of 100).
    let store = "store.example.com";
    assert_eq!(
        reached(c, http, store, "/", &[("x-canary", "always")]).await,
        pair("next", "/")
    );
    assert_eq!(
        reached(c, http, store, "/", &[("x-canary", "never")]).await,
        pair("stable", "/")
    );
    let total = 400;
    let mut canary = 0;
    for _ in 0..total {
        match reached(c, http, store, "/", &[]).await {
            Some((b, _)) if b == "next" => canary += 1,
            Some((b, _)) if b == "stable" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let share = f64::from(canary) / f64::from(total);
    eprintln!("canary share {share:.3} of {total} requests (weight 30/100)");
    assert!((0.2..=0.4).contains(&share), "canary share {share}");

    // Canary by cookie.
    let beta = "beta.example.com";
    assert_eq!(
        reached(c, http, beta, "/", &[("cookie", "a=1; beta=always")]).await,
        pair("next", "/")
    );
    assert_eq!(
        reached(c, http, beta, "/", &[("cookie", "beta=never")]).await,
        pair("stable", "/")
    );
    assert_eq!(
        reached(c, http, beta, "/", &[("cookie", "xbeta=always")]).await,
        pair("stable", "/")
    );
    assert_eq!(reached(c, http, beta, "/", &[]).await, pair("stable", "/"));

    // CORS: an allowed preflight is answered with the origin; another origin gets nothing.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, format!("http://{http}/x"))
            .header("host", "cors.example.com")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .send()
    };
    let r = preflight("https://app.example.com").await?;
    let allow = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        allow(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(allow(&r, "access-control-allow-methods").is_some_and(|m| m.contains("PUT")));
    let r = preflight("https://evil.example.com").await?;
    assert_eq!(allow(&r, "access-control-allow-origin"), None);
    drop(s);
    Ok(())
}
