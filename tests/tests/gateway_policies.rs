//! Envoy Gateway policies through the whole path (apiserver → control plane → ADS → real Envoy
//! → a backend on a test host): BackendTrafficPolicy retries, local rate limit and circuit
//! breaker; SecurityPolicy basic auth, authorization by client CIDR, JWT from a local JWKS and
//! CORS; and the statuses upstream users read (Accepted, Overridden, TargetNotFound, Invalid).

mod common;

use common::jwt::SigningKey;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eg_e2e::backend::Echo;
use eg_e2e::manifests::{apply, http_gateway, service_with_endpoint};
use eg_e2e::netns::EchoHost;
use eg_e2e::{LOOPBACK, free_port, with_temp_namespace};
use eg_operator::xds::bootstrap::AdsFlavour;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

fn route(name: &str, host: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
                 "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]}})
}

fn policy(kind: &str, name: &str, target: Value, spec: Value) -> Value {
    let mut spec = spec;
    spec["targetRefs"] = json!([target]);
    json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn route_target(name: &str) -> Value {
    json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name})
}

/// The conditions of the first ancestor our controller wrote on policy `kind/name`.
async fn policy_conditions(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<Vec<Value>> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.envoyproxy.io",
        "v1alpha1",
        kind,
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let object = api.get(name).await.ok()?;
    object
        .data
        .pointer("/status/ancestors/0/conditions")?
        .as_array()
        .cloned()
}

fn condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| c["type"] == type_)
}

#[tokio::test]
async fn policies_shape_traffic_through_envoy_and_report_status() {
    with_temp_namespace(|client, ns| async move {
        let echo_bin = Path::new(env!("CARGO_BIN_EXE_eg-echo"));
        let app = EchoHost::start("app", echo_bin).await?;
        let spare = EchoHost::start("spare", echo_bin).await?;
        service_with_endpoint(&client, &ns, "app", app.address()).await;
        // `pool`: two endpoints, one of which goes away during the test.
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pool"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})).await;
        apply(&client, Some(&ns), json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "pool-1", "labels": {"kubernetes.io/service-name": "pool"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [app.address().to_string()]}, {"addresses": [spare.address().to_string()]}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})).await;
        let controller_name = format!("example.com/policies-{ns}");
        let class = format!("gc-{ns}");
        let port = free_port(LOOPBACK)?;
        http_gateway(&client, &ns, "gw", &class, &controller_name, port).await;
        for (name, host) in [("retry", "retry.test"), ("plain", "plain.test"), ("limited", "limited.test"),
                             ("breaker", "breaker.test"), ("basic", "basic.test"), ("denied", "denied.test"),
                             ("allowed", "allowed.test"), ("jwt", "jwt.test"), ("cors", "cors.test")] {
            apply(&client, Some(&ns), route(name, host)).await;
        }
        for (name, host) in [("faulty", "faulty.test"), ("pool", "pool.test")] {
            let mut r = route(name, host);
            r["spec"]["rules"][0]["backendRefs"][0]["name"] = json!(if name == "pool" { "pool" } else { "app" });
            apply(&client, Some(&ns), r).await;
        }

        // BackendTrafficPolicies.
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "gateway-default", json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}),
            json!({"timeout": {"http": {"requestTimeout": "10s"}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "retry", route_target("retry"),
            json!({"retry": {"numRetries": 3, "retryOn": {"httpStatusCodes": [503]},
                             "perRetry": {"backOff": {"baseInterval": "10ms", "maxInterval": "50ms"}}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "limited", route_target("limited"),
            json!({"rateLimit": {"type": "Local", "local": {"rules": [{"limit": {"requests": 3, "unit": "Minute"}}]}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "breaker", route_target("breaker"),
            json!({"circuitBreaker": {"maxConnections": 1, "maxPendingRequests": 1, "maxParallelRequests": 1}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "faulty", route_target("faulty"),
            json!({"faultInjection": {"abort": {"httpStatus": 418, "percentage": 100}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "pool-health", route_target("pool"),
            json!({"healthCheck": {"active": {"type": "HTTP", "http": {"path": "/healthz"},
                   "interval": "200ms", "timeout": "100ms", "unhealthyThreshold": 1, "healthyThreshold": 1}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "global-limit", route_target("plain"),
            json!({"rateLimit": {"type": "Global", "global": {"rules": [{"limit": {"requests": 1, "unit": "Second"}}]}}}))).await;
        apply(&client, Some(&ns), policy("BackendTrafficPolicy", "orphan", route_target("no-such-route"),
            json!({"timeout": {"http": {"requestTimeout": "1s"}}}))).await;

        // SecurityPolicies.
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"wonderland");
        let htpasswd = format!("alice:{{SHA}}{}\n", STANDARD.encode(sha1.as_ref()));
        apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users"},
            "stringData": {".htpasswd": htpasswd}})).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "basic", route_target("basic"),
            json!({"basicAuth": {"users": {"name": "users"}}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "denied", route_target("denied"),
            json!({"authorization": {"defaultAction": "Allow",
                   "rules": [{"action": "Deny", "principal": {"clientCIDRs": ["127.0.0.0/8"]}}]}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "allowed", route_target("allowed"),
            json!({"authorization": {"defaultAction": "Deny",
                   "rules": [{"action": "Allow", "principal": {"clientCIDRs": ["127.0.0.1/32"]}}]}}))).await;
        let key = SigningKey::new();
        apply(&client, Some(&ns), policy("SecurityPolicy", "jwt", route_target("jwt"),
            json!({"jwt": {"providers": [{"name": "local", "issuer": "https://issuer.test", "audiences": ["api.test"],
                   "localJWKS": {"type": "Inline", "inline": key.jwks()},
                   "claimToHeaders": [{"claim": "sub", "header": "x-jwt-sub"}]}]}}))).await;
        apply(&client, Some(&ns), policy("SecurityPolicy", "cors", route_target("cors"),
            json!({"cors": {"allowOrigins": ["https://app.example.com"], "allowMethods": ["GET", "POST"], "maxAge": "10m"}}))).await;

        let control_plane = common::start_control_plane(client.clone(), &controller_name, vec![ns.clone()]).await;
        let envoy = common::envoy_for(control_plane.xds, &ns, "gw", AdsFlavour::StateOfTheWorld).await;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/");
        let get = |host: &'static str| http.get(&url).header("host", host);
        until!("routes served", Duration::from_secs(20),
            get("plain.test").send().await.ok().filter(|r| r.status() == 200));

        // Retries: a backend failing twice answers the third attempt; without a policy, 503.
        let retried = get("retry.test").header("x-echo-fail-times", "2").header("x-echo-key", "r1").send().await?;
        assert_eq!(retried.status(), 200, "3 retries outlast 2 failures");
        let plain = get("plain.test").header("x-echo-fail-times", "2").header("x-echo-key", "p1").send().await?;
        assert_eq!(plain.status(), 503, "no retry policy, no retry");

        // Local rate limit: 3 per minute, the 4th is refused.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(get("limited.test").send().await?.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429]);

        // Circuit breaker: one request at a time to the backend; a burst overflows to 503.
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let request = get("breaker.test").header("x-echo-delay-ms", "400");
            burst.spawn(async move {
                let r = request.send().await.ok()?;
                Some((r.status().as_u16(), r.headers().get("x-envoy-overloaded").is_some()))
            });
        }
        let answers: Vec<(u16, bool)> = burst.join_all().await.into_iter().flatten().collect();
        let overflowed = answers.iter().filter(|(status, flagged)| *status == 503 && *flagged).count();
        let served = answers.iter().filter(|(status, _)| *status == 200).count();
        eprintln!("circuit breaker: {served} served, {overflowed} overflowed of 8");
        assert!(overflowed >= 1 && served >= 1, "{served} served, {overflowed} overflowed");

        // Fault injection: every request aborted with the policy's status.
        assert_eq!(get("faulty.test").send().await?.status(), 418);

        // Active health checks: both endpoints serve; one goes away and is ejected, after
        // which every request reaches the other.
        let (_, _) = until!("both pool endpoints serve", Duration::from_secs(10), async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20 {
                let echo: Echo = get("pool.test").send().await.ok()?.json().await.ok()?;
                seen.insert(echo.backend);
            }
            (seen.len() == 2).then_some(())
        }.await);
        drop(spare);
        let (_, ejected_after) = until!("the gone endpoint is ejected", Duration::from_secs(10), async {
            let clusters = envoy.admin_get("/clusters").await.ok()?;
            clusters.lines().any(|l| l.contains("pool/80/btp-") && l.contains("failed_active_hc")).then_some(())
        }.await);
        eprintln!("active health check ejected the endpoint in {ejected_after:?}");
        for _ in 0..30 {
            let answer = get("pool.test").send().await?;
            assert_eq!(answer.status(), 200, "no request reaches the ejected endpoint");
        }

        // Basic auth.
        assert_eq!(get("basic.test").send().await?.status(), 401);
        assert_eq!(get("basic.test").basic_auth("alice", Some("wrong")).send().await?.status(), 401);
        assert_eq!(get("basic.test").basic_auth("alice", Some("wonderland")).send().await?.status(), 200);

        // Authorization by client CIDR (the client is 127.0.0.1).
        assert_eq!(get("denied.test").send().await?.status(), 403);
        assert_eq!(get("allowed.test").send().await?.status(), 200);

        // JWT: valid → 200 with the claim forwarded; missing, expired or foreign-signed → 401.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = |exp: u64| json!({"iss": "https://issuer.test", "aud": "api.test", "sub": "user-1", "exp": exp});
        let valid = key.token(&claims(now + 600));
        // The JWT providers live on the listener: wait until it carries them, on connections of
        // their own (a connection accepted by an earlier listener keeps that listener's filters).
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let get = |host: &'static str| fresh.get(&url).header("host", host);
        let (echo, _) = until!("JWT route accepts a valid token", Duration::from_secs(10), async {
            get("jwt.test").bearer_auth(&valid).send().await.ok()?.error_for_status().ok()?.json::<Echo>().await.ok()
        }.await);
        assert_eq!(echo.headers.get("x-jwt-sub").map(String::as_str), Some("user-1"));
        assert_eq!(get("jwt.test").send().await?.status(), 401);
        assert_eq!(get("jwt.test").bearer_auth(key.token(&claims(now - 600))).send().await?.status(), 401);
        assert_eq!(get("jwt.test").bearer_auth(SigningKey::new().token(&claims(now + 600))).send().await?.status(), 401);

        // CORS preflight per the policy.
        let preflight = |origin: &'static str| http.request(reqwest::Method::OPTIONS, &url).header("host", "cors.test")
            .header("origin", origin).header("access-control-request-method", "GET").send();
        let allowed = preflight("https://app.example.com").await?;
        assert_eq!(allowed.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("https://app.example.com"));
        assert_eq!(allowed.headers().get("access-control-max-age").and_then(|v| v.to_str().ok()), Some("600"));
        let refused = preflight("https://evil.example").await?;
        assert!(refused.headers().get("access-control-allow-origin").is_none());

        // Statuses.
        let accepted = |conditions: &[Value]| condition(conditions, "Accepted").map(|c| (c["status"].clone(), c["reason"].clone()));
        for (kind, name) in [("BackendTrafficPolicy", "retry"), ("SecurityPolicy", "jwt")] {
            let (conditions, _) = until!(format!("{kind} {name} status"), Duration::from_secs(10),
                policy_conditions(&client, &ns, kind, name).await);
            assert_eq!(accepted(&conditions), Some((json!("True"), json!("Accepted"))), "{kind} {name}");
        }
        let (gateway_default, _) = until!("Overridden on the Gateway-level policy", Duration::from_secs(10),
            policy_conditions(&client, &ns, "BackendTrafficPolicy", "gateway-default").await
                .filter(|c| condition(c, "Overridden").is_some()));
        let overridden = condition(&gateway_default, "Overridden").expect("Overridden");
        assert!(overridden["message"].as_str().is_some_and(|m| m.contains(&format!("HTTPRoute {ns}/retry"))), "{overridden}");
        let (orphan, _) = until!("orphan status", Duration::from_secs(10),
            policy_conditions(&client, &ns, "BackendTrafficPolicy", "orphan").await);
        assert_eq!(accepted(&orphan), Some((json!("False"), json!("TargetNotFound"))));
        let (global, _) = until!("global-limit status", Duration::from_secs(10),
            policy_conditions(&client, &ns, "BackendTrafficPolicy", "global-limit").await);
        let global = condition(&global, "Accepted").expect("Accepted");
        assert_eq!((&global["status"], &global["reason"]), (&json!("False"), &json!("Invalid")));
        assert!(global["message"].as_str().is_some_and(|m| m.contains("Global")), "{global}");

        envoy.stop();
        drop(control_plane);
        Ok(())
    })
    .await;
}
