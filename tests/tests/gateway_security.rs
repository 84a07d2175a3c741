//! The SecurityPolicy and BackendTrafficPolicy features that talk to services of their own,
//! through the whole path (apiserver → control plane → ADS → real Envoy): API keys from a
//! Secret, external authorization over HTTP and gRPC (verdicts from servers in this test),
//! JWT against a remote JWKS served here, an OIDC login redirect, local rate limits with distinct-client selectors,
//! gzip compression and PROXY protocol to a backend; the seed architecture's `api-security`
//! policy; and a policy with a missing Secret reported on its status with the field named.

mod common;

use common::jwt::SigningKey;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::pki::{CertPair, TestCa};
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http_body_util::Full;
use hyper::{Request, Response};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token both authorization servers let in.
const GOOD_TOKEN: &str = "let-me-in";

/// What a test server answers to each request.
type Answer = Arc<dyn Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP server on 127.0.0.1 answering with `answer`, until the test ends.
async fn http_server(
    answer: impl Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve(Arc::new(answer), None).await
}

/// [`http_server`] over TLS with `cert`.
async fn https_server(
    answer: impl Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    cert: &CertPair,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    serve(
        Arc::new(answer),
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
}

async fn serve(
    answer: Answer,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (answer, tls) = (answer.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, answer).await;
                        }
                    }
                    None => serve_connection(stream, answer).await,
                }
            });
        }
    });
    Ok((addr, task))
}

async fn serve_connection(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    answer: Answer,
) {
    let service = hyper::service::service_fn(move |req| {
        let response = answer(&req);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// The JWKS at `/jwks.json`; at `/flaky-jwks.json` too, after two 503s (counted in
/// `flaky_fetches`); an OpenID discovery document for the issuer `https://{its address}`; at
/// `/check/…` an HTTP authorization service that allows requests
/// carrying `x-token: let-me-in` (naming the user in `x-user`) and refuses others with 403.
fn jwks_and_auth(
    jwks: String,
    flaky_fetches: Arc<AtomicUsize>,
) -> impl Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    move |req| {
        let path = req.uri().path();
        let builder = Response::builder();
        let response =
            if path == "/flaky-jwks.json" && flaky_fetches.fetch_add(1, Ordering::SeqCst) < 2 {
                builder.status(503).body(Full::new(Bytes::from("not yet")))
            } else if path == "/.well-known/openid-configuration" {
                // An OpenID provider whose issuer is the address it is reached at.
                let host = req
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                let document = json!({"issuer": format!("https://{host}"),
                "authorization_endpoint": format!("https://{host}/authorize-discovered"),
                "token_endpoint": format!("https://{host}/token"),
                "jwks_uri": format!("https://{host}/jwks.json")});
                builder
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(document.to_string())))
            } else if path == "/jwks.json" || path == "/flaky-jwks.json" {
                builder
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(jwks.clone())))
            } else if path.starts_with("/check/") {
                let token = req.headers().get("x-token").and_then(|v| v.to_str().ok());
                if token == Some(GOOD_TOKEN) {
                    builder
                        .header("x-user", "http-alice")
                        .body(Full::new(Bytes::new()))
                } else {
                    builder
                        .status(403)
                        .body(Full::new(Bytes::from("denied by http ext auth")))
                }
            } else {
                builder.status(404).body(Full::new(Bytes::new()))
            };
        response.unwrap_or_default()
    }
}

/// A gRPC authorization service with the HTTP one's verdicts (user `grpc-alice`).
struct GrpcAuth;

#[tonic::async_trait]
impl Authorization for GrpcAuth {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let headers = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .map(|h| h.headers)
            .unwrap_or_default();
        let allowed = headers.get("x-token").map(String::as_str) == Some(GOOD_TOKEN);
        let response = if allowed {
            CheckResponse {
                status: Some(RpcStatus::default()),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![HeaderValueOption {
                        header: Some(HeaderValue {
                            key: "x-user".into(),
                            value: "grpc-alice".into(),
                            ..HeaderValue::default()
                        }),
                        ..HeaderValueOption::default()
                    }],
                    ..OkHttpResponse::default()
                })),
                ..CheckResponse::default()
            }
        } else {
            CheckResponse {
                // PERMISSION_DENIED.
                status: Some(RpcStatus {
                    code: 7,
                    ..RpcStatus::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(HttpStatus { code: 403 }),
                        ..DeniedHttpResponse::default()
                    },
                )),
                ..CheckResponse::default()
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// A backend speaking PROXY protocol v1: it answers every request with the PROXY line it was
/// sent, and with 400 when the connection did not start with one.
async fn proxy_protocol_backend() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                // The PROXY line and the request head arrive before any answer is due.
                while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&received);
                let first = text.lines().next().unwrap_or_default().to_owned();
                let (status, body) = if first.starts_with("PROXY ") {
                    ("200 OK", first)
                } else {
                    ("400 Bad Request", "no PROXY line".to_owned())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((addr, task))
}

fn route(name: &str, host: &str, backend: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
                 "rules": [{"backendRefs": [backend]}]}})
}

fn app() -> Value {
    json!({"name": "app", "port": 80})
}

fn backend_ref(name: &str) -> Value {
    json!({"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name})
}

fn loopback_backend(name: &str, addr: SocketAddr) -> Value {
    json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend", "metadata": {"name": name},
        "spec": {"endpoints": [{"ip": {"address": addr.ip().to_string(), "port": addr.port()}}]}})
}

fn policy(kind: &str, name: &str, route: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["targetRefs"] =
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}]);
    json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// `(status, reason, message)` of the Accepted condition our controller wrote on a policy.
async fn accepted(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<(String, String, String)> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.envoyproxy.io",
        "v1alpha1",
        kind,
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let object = api.get(name).await.ok()?;
    let conditions = object
        .data
        .pointer("/status/ancestors/0/conditions")?
        .as_array()?;
    let c = conditions.iter().find(|c| c["type"] == "Accepted")?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

#[tokio::test]
async fn security_services_and_traffic_selectors_through_envoy() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let app_host = EchoHost::start("app", echo_bin).await?;
        service_with_endpoint(&client, &ns, "app", app_host.address()).await;
        let key = SigningKey::new();
        let flaky_fetches = Arc::new(AtomicUsize::new(0));
        let (auth_addr, _auth) = http_server(jwks_and_auth(key.jwks(), flaky_fetches.clone())).await?;
        let grpc_listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let _grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(GrpcAuth))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener)),
        );
        let (proxied_addr, _proxied) = proxy_protocol_backend().await?;
        // An OpenID provider over HTTPS (issuers must be https) from a CA the control plane
        // is told to trust.
        let idp_ca = TestCa::new("idp-ca")?;
        let (idp_addr, _idp) = https_server(
            jwks_and_auth(String::new(), Arc::new(AtomicUsize::new(0))),
            &idp_ca.server_cert("idp", &["127.0.0.1"])?,
        )
        .await?;

        let controller_name = format!("example.com/security-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "gw", &format!("gc-{ns}"), &controller_name, port).await;
        // An authorization service that is down: nothing listens on its port.
        let down_addr = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
        for (name, addr) in [("auth-http", auth_addr), ("auth-grpc", grpc_addr), ("proxied", proxied_addr),
                             ("auth-down", down_addr)] {
            apply(&client, Some(&ns), loopback_backend(name, addr)).await;
        }
        for (name, host) in [("plain", "plain.test"), ("keys", "keys.test"), ("ext-http", "ext-http.test"),
                             ("ext-grpc", "ext-grpc.test"), ("jwks", "jwks.test"), ("limited", "limited.test"),
                             ("per-ip", "per-ip.test"), ("gzip", "gzip.test"), ("broken", "broken.test"),
                             ("login", "login.test"), ("fail-open", "fail-open.test"),
                             ("fail-closed", "fail-closed.test"), ("jwks-retry", "jwks-retry.test"),
                             ("login-discovered", "login-discovered.test")] {
            apply(&client, Some(&ns), route(name, host, app())).await;
        }
        apply(&client, Some(&ns), route("proxied", "proxied.test", backend_ref("proxied"))).await;

        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-keys"},
            "stringData": {"client-a": "key-a-secret", "client-b": "key-b-secret"}})).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "keys", "keys", json!({"apiKeyAuth": {
            "credentialRefs": [{"name": "api-keys"}], "extractFrom": [{"headers": ["x-api-key"]}, {"params": ["key"]}],
            "forwardClientIDHeader": "x-client-id", "sanitize": true}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "ext-http", "ext-http", json!({"extAuth": {
            "http": {"backendRefs": [backend_ref("auth-http")], "path": "/check", "headersToBackend": ["x-user"]},
            "headersToExtAuth": ["x-token"]}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "ext-grpc", "ext-grpc", json!({"extAuth": {
            "grpc": {"backendRefs": [backend_ref("auth-grpc")]}}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "jwks", "jwks", json!({"jwt": {"providers": [{
            "name": "remote", "issuer": "https://issuer.test",
            "remoteJWKS": {"uri": format!("http://{auth_addr}/jwks.json")},
            "claimToHeaders": [{"claim": "sub", "header": "x-jwt-sub"}]}]}}))).await;
        // A JWKS endpoint that fails twice, fetched through a backend whose settings retry.
        apply(&client, Some(&ns), policy("SecurityPolicy", "jwks-retry", "jwks-retry", json!({"jwt": {"providers": [{
            "name": "flaky", "issuer": "https://issuer.test",
            "remoteJWKS": {"uri": format!("http://{auth_addr}/flaky-jwks.json"),
                           "backendRefs": [backend_ref("auth-http")],
                           "backendSettings": {
                               "retry": {"numRetries": 3,
                                         "perRetry": {"backOff": {"baseInterval": "20ms"}}},
                               "circuitBreaker": {"maxConnections": 4}}},
            "claimToHeaders": [{"claim": "sub", "header": "x-jwt-sub"}]}]}}))).await;
        for (name, open) in [("fail-open", true), ("fail-closed", false)] {
            apply(&client, Some(&ns), policy("SecurityPolicy", name, name, json!({"extAuth": {
                "http": {"backendRefs": [backend_ref("auth-down")]}, "failOpen": open, "timeout": "1s"}}))).await;
        }
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oidc-client"},
            "stringData": {"client-secret": "oidc-secret"}})).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "login", "login", json!({"oidc": {
            "provider": {"issuer": "https://idp.test",
                         "authorizationEndpoint": format!("http://{auth_addr}/authorize"),
                         "tokenEndpoint": format!("http://{auth_addr}/token")},
            "clientID": "web-app", "clientSecret": {"name": "oidc-client"},
            "redirectURL": "http://login.test/oauth2/callback"}}))).await;
        // Only the issuer, as upstream's examples: the endpoints come from its discovery document.
        apply(&client, Some(&ns), policy("SecurityPolicy", "login-discovered", "login-discovered", json!({"oidc": {
            "provider": {"issuer": format!("https://{idp_addr}")},
            "clientID": "web-app", "clientSecret": {"name": "oidc-client"},
            "redirectURL": "http://login-discovered.test/oauth2/callback"}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "broken", "broken", json!({"apiKeyAuth": {
            "credentialRefs": [{"name": "no-such-secret"}], "extractFrom": [{"headers": ["x-api-key"]}]}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "limited", "limited", json!({"rateLimit": {"type": "Local",
            "local": {"rules": [{"clientSelectors": [{"headers": [{"name": "x-user", "type": "Distinct"}]}],
                                 "limit": {"requests": 2, "unit": "Minute"}}]}}}))).await;
        // What `eg-operator migrate` emits for ingress-nginx's per-client limits.
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "per-ip", "per-ip", json!({"rateLimit": {"type": "Local",
            "local": {"rules": [{"clientSelectors": [{"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}],
                                 "limit": {"requests": 2, "unit": "Minute"}}]}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "gzip", "gzip",
            json!({"compression": [{"type": "Gzip"}, {"type": "Brotli"}, {"type": "Zstd"}]}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "proxied", "proxied",
            json!({"proxyProtocol": {"version": "V1"}}))).await;

        let control_plane = common::start_control_plane_trusting(
            client.clone(), &controller_name, vec![ns.clone()], true, Some(idp_ca.cert_pem.clone())).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "gw", AdsFlavour::StateOfTheWorld).await;
        // Listener-level filters (ext_authz, compressors) arrive with listener updates, which
        // only new connections see: no pooling.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let url = format!("http://127.0.0.1:{port}/");
        let get = |host: &'static str| http.get(&url).header("host", host);
        until!("routes served", Duration::from_secs(20),
            get("plain.test").send().await.ok().filter(|r| r.status() == 200));

        // API keys: none or a wrong one → 401; a good one from a header or the query → 200,
        // the client named to the backend and the key itself removed.
        let (_, _) = until!("API key route enforced", Duration::from_secs(10),
            get("keys.test").send().await.ok().filter(|r| r.status() == 401));
        assert_eq!(get("keys.test").header("x-api-key", "wrong").send().await?.status(), 401);
        let echo: Echo = get("keys.test").header("x-api-key", "key-b-secret").send().await?
            .error_for_status()?.json().await?;
        assert_eq!(echo.headers.get("x-client-id").map(String::as_str), Some("client-b"));
        assert!(!echo.headers.contains_key("x-api-key"), "sanitize removes the key: {:?}", echo.headers);
        let by_query = http.get(format!("{url}?key=key-a-secret")).header("host", "keys.test").send().await?;
        assert_eq!(by_query.status(), 200);

        // External authorization over HTTP and gRPC: the service's verdict holds, and an
        // allowing answer's header reaches the backend.
        for (host, user) in [("ext-http.test", "http-alice"), ("ext-grpc.test", "grpc-alice")] {
            let (echo, _) = until!(format!("{host} allows the good token"), Duration::from_secs(15), async {
                let echo = get(host).header("x-token", GOOD_TOKEN).send().await.ok()?.error_for_status().ok()?
                    .json::<Echo>().await.ok()?;
                // Before the policy reaches Envoy the request passes unchecked, without a user.
                echo.headers.contains_key("x-user").then_some(echo)
            }.await);
            assert_eq!(echo.headers.get("x-user").map(String::as_str), Some(user), "{host}");
            assert_eq!(get(host).header("x-token", "nope").send().await?.status(), 403, "{host}");
            assert_eq!(get(host).send().await?.status(), 403, "{host}");
        }

        // An unreachable service: failOpen lets requests through, otherwise they are refused.
        until!("fail-open passes", Duration::from_secs(15),
            get("fail-open.test").send().await.ok().filter(|r| r.status() == 200));
        let (refused, _) = until!("fail-closed refuses", Duration::from_secs(15), async {
            let status = get("fail-closed.test").send().await.ok()?.status();
            (status != 200).then_some(status)
        }.await);
        assert_eq!(refused, 403);

        // Remote JWKS: a token signed by the served key passes, one signed by another 401s.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({"iss": "https://issuer.test", "sub": "remote-user", "exp": now + 600});
        let (echo, _) = until!("remote JWKS token accepted", Duration::from_secs(15), async {
            let echo = get("jwks.test").bearer_auth(key.token(&claims)).send().await.ok()?.error_for_status().ok()?
                .json::<Echo>().await.ok()?;
            echo.headers.contains_key("x-jwt-sub").then_some(echo)
        }.await);
        assert_eq!(echo.headers.get("x-jwt-sub").map(String::as_str), Some("remote-user"));
        assert_eq!(get("jwks.test").bearer_auth(SigningKey::new().token(&claims)).send().await?.status(), 401);
        assert_eq!(get("jwks.test").send().await?.status(), 401);

        // backendSettings.retry: the first token checked through the flaky JWKS endpoint is
        // accepted, Envoy having fetched three times (two 503s, then the keys). Without the
        // retry that request would get 401. Until the policy reaches Envoy the route answers
        // without checking (no x-jwt-sub).
        let (flaky, _) = until!("flaky JWKS policy applied", Duration::from_secs(15), async {
            let response = get("jwks-retry.test").bearer_auth(key.token(&claims)).send().await.ok()?;
            if response.status() == 401 {
                return Some(Err(response.status()));
            }
            let echo = response.json::<Echo>().await.ok()?;
            echo.headers.contains_key("x-jwt-sub").then_some(Ok(echo))
        }.await);
        let flaky = match flaky {
            Ok(echo) => echo,
            Err(status) => panic!("the first checked request got {status}: the JWKS fetch was not retried"),
        };
        assert_eq!(flaky.headers.get("x-jwt-sub").map(String::as_str), Some("remote-user"));
        assert_eq!(flaky_fetches.load(Ordering::SeqCst), 3, "two failed fetches, then one that served the keys");

        // Rate limit per distinct x-user: a user's third request in the minute is refused while
        // another user, in a bucket of their own, still passes. Each attempt uses fresh users,
        // so an attempt made before the policy reached Envoy leaves no trace in the buckets.
        let mut attempt = 0;
        let (burst, _) = until!("per-user rate limit", Duration::from_secs(15), async {
            attempt += 1;
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let r = get("limited.test").header("x-user", format!("alice-{attempt}")).send().await.ok()?;
                statuses.push(r.status().as_u16());
            }
            (statuses.contains(&429)).then_some(statuses)
        }.await);
        assert_eq!(burst, [200, 200, 429]);
        let other = get("limited.test").header("x-user", format!("bob-{attempt}")).send().await?;
        assert_eq!(other.status(), 200, "a bucket per user");
        // Per client address (the form `eg-operator migrate` writes): each attempt comes from a
        // fresh loopback address; its third request is refused, another address still passes.
        let from = |octet: u8| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, octet]))
                .pool_max_idle_per_host(0)
                .build()
        };
        let mut octet = 10u8;
        let (burst, _) = until!("per-address rate limit", Duration::from_secs(15), async {
            octet += 1;
            let client = from(octet).ok()?;
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let r = client.get(&url).header("host", "per-ip.test").send().await.ok()?;
                statuses.push(r.status().as_u16());
            }
            (statuses.contains(&429)).then_some(statuses)
        }.await);
        assert_eq!(burst, [200, 200, 429]);
        let neighbour = from(octet + 100)?.get(&url).header("host", "per-ip.test").send().await?;
        assert_eq!(neighbour.status(), 200, "a bucket per client address");

        // Compression: the encoding the client accepts (gzip, brotli, zstd), plain otherwise.
        let (zipped, _) = until!("gzip response", Duration::from_secs(10), async {
            let r = get("gzip.test").header("accept-encoding", "gzip").send().await.ok()?;
            (r.headers().get("content-encoding").and_then(|v| v.to_str().ok()) == Some("gzip"))
                .then_some(r)
        }.await);
        let body = zipped.bytes().await?;
        assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
        for (accept, encoding) in [("br", "br"), ("zstd", "zstd")] {
            let r = get("gzip.test").header("accept-encoding", accept).send().await?;
            assert_eq!(r.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some(encoding));
        }
        let plain = get("gzip.test").send().await?;
        assert!(plain.headers().get("content-encoding").is_none());
        assert!(plain.json::<Echo>().await.is_ok());

        // PROXY protocol v1 ahead of the upstream request, naming the client.
        let (answer, _) = until!("PROXY line received", Duration::from_secs(10),
            get("proxied.test").send().await.ok().filter(|r| r.status() == 200));
        let line = answer.text().await?;
        assert!(line.starts_with("PROXY TCP4 127.0.0.1 "), "{line}");

        // OIDC: a browser without a session is sent to the provider's authorization endpoint,
        // as this client, with the callback to come back to.
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()?;
        let (redirect, _) = until!("OIDC redirect", Duration::from_secs(15), async {
            let r = browser.get(format!("{url}orders")).header("host", "login.test")
                .header("accept", "text/html").send().await.ok()?;
            (r.status() == 302).then_some(r)
        }.await);
        let location = redirect.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(location.starts_with(&format!("http://{auth_addr}/authorize?")), "{location}");
        assert!(location.contains("client_id=web-app"), "{location}");
        assert!(location.contains("redirect_uri=http%3A%2F%2Flogin.test%2Foauth2%2Fcallback"), "{location}");
        assert!(location.contains("scope=openid"), "{location}");
        let (redirect, _) = until!("OIDC redirect to the discovered endpoint", Duration::from_secs(15), async {
            let r = browser.get(format!("{url}orders")).header("host", "login-discovered.test")
                .header("accept", "text/html").send().await.ok()?;
            (r.status() == 302).then_some(r)
        }.await);
        let location = redirect.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(location.starts_with(&format!("https://{idp_addr}/authorize-discovered?")), "{location}");

        // Statuses: accepted, and the broken policy names its field; its route is untouched.
        for (kind, name) in [("SecurityPolicy", "keys"), ("SecurityPolicy", "ext-grpc"), ("SecurityPolicy", "jwks"),
                             ("SecurityPolicy", "jwks-retry"), ("SecurityPolicy", "login-discovered"),
                             ("SecurityPolicy", "login"),
                             ("BackendTrafficPolicy", "per-ip"), ("BackendTrafficPolicy", "gzip")] {
            // A status written before the controller saw every referenced object (a Backend)
            // is replaced by the next translation's.
            let (status, _) = until!(format!("{kind} {name} accepted"), Duration::from_secs(10),
                accepted(&client, &ns, kind, name).await.filter(|s| s.0 == "True"));
            assert_eq!(status.1, "Accepted", "{kind} {name}: {}", status.2);
        }
        let (broken, _) = until!("broken status", Duration::from_secs(10),
            accepted(&client, &ns, "SecurityPolicy", "broken").await);
        assert_eq!((broken.0.as_str(), broken.1.as_str()), ("False", "Invalid"));
        assert!(broken.2.contains("spec.apiKeyAuth.credentialRefs[0]") && broken.2.contains("no-such-secret"), "{}", broken.2);
        assert_eq!(get("broken.test").send().await?.status(), 200);

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}

/// The seed architecture's `api-security` SecurityPolicy, applied as written with one addition
/// (a JWKS source, which upstream requires of every provider), protects the route it targets.
/// The seed's policy targets `api-route` while the seed's route is named `app-route`; the route
/// here is the seed's, under the name the policy targets, on a plain HTTP Gateway.
#[tokio::test]
async fn seed_api_security_policy_protects_its_route() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let v1 = EchoHost::start("v1", echo_bin).await?;
        let v2 = EchoHost::start("v2", echo_bin).await?;
        service_with_endpoint(&client, &ns, "api-service-v1", v1.address()).await;
        service_with_endpoint(&client, &ns, "api-service-v2", v2.address()).await;
        let key = SigningKey::new();
        let (jwks_addr, _jwks) =
            http_server(jwks_and_auth(key.jwks(), Arc::new(AtomicUsize::new(0)))).await?;
        let controller_name = format!("example.com/seed-security-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "production-gateway", &format!("gc-{ns}"), &controller_name, port).await;
        apply(&client, Some(&ns), json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "api-route"},
            "spec": {"parentRefs": [{"name": "production-gateway"}], "hostnames": ["api.example.com"],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1/"}}],
                                "backendRefs": [{"name": "api-service-v1", "port": 80, "weight": 90},
                                                {"name": "api-service-v2", "port": 80, "weight": 10}]}]}})).await;
        let seed_policy = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata:
  name: api-security
spec:
  targetRef:
    group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: api-route
  jwt:
    providers:
    - name: auth0
      issuer: "https://example.auth0.com/"
      audiences:
      - "api.example.com"
  cors:
    allowOrigins:
    - "https://app.example.com"
    allowMethods:
    - GET
    - POST
    - PUT
    - DELETE
"#;
        let mut policy: Value = serde_yaml_ng::from_str(seed_policy)?;
        policy["spec"]["jwt"]["providers"][0]["remoteJWKS"] =
            json!({"uri": format!("http://{jwks_addr}/jwks.json")});
        apply(&client, Some(&ns), policy).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "production-gateway", AdsFlavour::StateOfTheWorld).await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let url = format!("http://127.0.0.1:{port}/v1/orders");
        let get = || http.get(&url).header("host", "api.example.com");
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let token = |aud: &str| key.token(&json!({"iss": "https://example.auth0.com/", "aud": aud, "sub": "u1", "exp": now + 600}));

        until!("the API refuses requests without a token", Duration::from_secs(20),
            get().send().await.ok().filter(|r| r.status() == 401));
        let (echo, _) = until!("a valid token reaches the API", Duration::from_secs(20), async {
            get().bearer_auth(token("api.example.com")).send().await.ok()?.error_for_status().ok()?
                .json::<Echo>().await.ok()
        }.await);
        assert!(echo.backend == "v1" || echo.backend == "v2", "{}", echo.backend);
        assert_eq!(get().bearer_auth(SigningKey::new().token(&json!({"iss": "https://example.auth0.com/",
            "aud": "api.example.com", "exp": now + 600}))).send().await?.status(), 401, "foreign key");
        let other_audience = get().bearer_auth(token("other.example.com")).send().await?.status();
        assert!(other_audience == 401 || other_audience == 403, "wrong audience: {other_audience}");

        let preflight = http.request(reqwest::Method::OPTIONS, &url).header("host", "api.example.com")
            .header("origin", "https://app.example.com").header("access-control-request-method", "PUT")
            .send().await?;
        assert_eq!(preflight.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
            Some("https://app.example.com"));

        let (status, _) = until!("api-security status", Duration::from_secs(10),
            accepted(&client, &ns, "SecurityPolicy", "api-security").await);
        assert_eq!((status.0.as_str(), status.1.as_str()), ("True", "Accepted"), "{}", status.2);

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}

/// One HTTP/1.1 request on a kept-alive connection: the response's status, or `None` when
/// Envoy closed the connection instead of answering.
async fn request_on(stream: &mut tokio::net::TcpStream, host: &str) -> Option<u16> {
    let head = format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text.split_whitespace().nth(1)?.parse().ok();
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The first external authorization policy on a listener adds a filter to it. Connections
/// Envoy accepted before keep the listener's old filters; they must not serve the newly
/// protected route unchecked (`xds::authz_guard`). The fleet runs Envoy with an immediate drain
/// strategy, as here.
#[tokio::test]
async fn ext_auth_added_later_covers_connections_opened_before() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let app_host = EchoHost::start("app", echo_bin).await?;
        service_with_endpoint(&client, &ns, "app", app_host.address()).await;
        let (auth_addr, _auth) =
            http_server(jwks_and_auth(String::new(), Arc::new(AtomicUsize::new(0)))).await?;
        let controller_name = format!("example.com/later-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(
            &client,
            &ns,
            "gw",
            &format!("gc-{ns}"),
            &controller_name,
            port,
        )
        .await;
        apply(&client, Some(&ns), loopback_backend("auth-http", auth_addr)).await;
        apply(&client, Some(&ns), route("later", "later.test", app())).await;
        let control_plane = common::start_control_plane_with(
            client.clone(),
            &controller_name,
            vec![ns.clone()],
            true,
        )
        .await;
        let bootstrap =
            eg_operator::xds::bootstrap::bootstrap(&eg_operator::xds::bootstrap::BootstrapSpec {
                node_id: "gw-proxy-0".into(),
                node_cluster: format!("{ns}/gw"),
                admin: SocketAddr::new(LOOPBACK, 0),
                xds_server: control_plane.xds.into(),
                flavour: AdsFlavour::Delta,
                tls: None,
            });
        let envoy = eg_e2e::envoy::EnvoyProcess::start_with_args(
            &bootstrap.to_string(),
            &["--drain-time-s", "30", "--drain-strategy", "immediate"],
        )
        .await?;
        let envoy_addr = SocketAddr::new(LOOPBACK, port);
        let (mut before, _) = until!(
            "route served",
            Duration::from_secs(20),
            async {
                let mut stream = tokio::net::TcpStream::connect(envoy_addr).await.ok()?;
                (request_on(&mut stream, "later.test").await == Some(200)).then_some(stream)
            }
            .await
        );

        apply(
            &client,
            Some(&ns),
            policy(
                "SecurityPolicy",
                "later",
                "later",
                json!({"extAuth": {
            "http": {"backendRefs": [backend_ref("auth-http")], "path": "/check"},
            "headersToExtAuth": ["x-token"]}}),
            ),
        )
        .await;
        until!(
            "policy enforced on new connections",
            Duration::from_secs(20),
            async {
                let mut stream = tokio::net::TcpStream::connect(envoy_addr).await.ok()?;
                (request_on(&mut stream, "later.test").await == Some(403)).then_some(())
            }
            .await
        );
        let answer = request_on(&mut before, "later.test").await;
        // The guard route table of the old filter chain answers 503 (or the connection is
        // already closed by its drain); without it the answer was 200, unchecked.
        assert!(
            matches!(answer, None | Some(503)),
            "a connection opened before the policy got {answer:?} from the newly protected route"
        );

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}
