//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/*`) of one Ingress: each is parsed,
//! mapped to the Gateway API field or Envoy Gateway policy field with the same effect, and
//! reported. The route-shaping ones (paths, redirects, canary, CORS) are returned as settings
//! the route builder applies; the rest become the `spec` of the Ingress's SecurityPolicy and
//! BackendTrafficPolicy (upstream's field names, `gateway.envoyproxy.io/v1alpha1`), plus the
//! objects they need (an htpasswd Secret, an ext-auth Backend, ReferenceGrants).
//!
//! Values ingress-nginx would reject are reported as not translated with the reason; nothing
//! here fails or panics on bad input.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value, json};

use super::report::{Item, Status};

/// The annotation prefix of ingress-nginx.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// A redirect of every request of the Ingress (`permanent-redirect` / `temporal-redirect`).
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub filter: Value,
}

/// `canary-*`: how requests choose the canary Ingress's backend over the main one's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Canary {
    /// Weight of the canary and the total (`canary-weight-total`, default 100).
    pub weight: Option<(u32, u32)>,
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub header_pattern: Option<String>,
    pub cookie: Option<String>,
}

/// Upstream protocols of `backend-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    Grpcs,
}

/// What the annotations of one Ingress ask for.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub items: Vec<Item>,
    /// `use-regex` (or `rewrite-target`, which implies it).
    pub regex: bool,
    pub rewrite_target: Option<String>,
    /// `ssl-redirect` (default true): HTTP requests to a TLS host are redirected.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirected even without TLS on the Ingress.
    pub force_ssl_redirect: bool,
    pub redirect: Option<Redirect>,
    pub app_root: Option<String>,
    pub canary: Option<Canary>,
    /// The HTTPRoute CORS filter's `cors` object.
    pub cors: Option<Value>,
    pub protocol: Protocol,
    /// SecurityPolicy `spec` fields (without targetRefs).
    pub security: Map<String, Value>,
    /// BackendTrafficPolicy `spec` fields (without targetRefs).
    pub traffic: Map<String, Value>,
    /// Objects the policies need.
    pub extra: Vec<Value>,
}

/// Annotations ingress-nginx still applies to a canary Ingress.
const CANARY_OWN: &[&str] = &[
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
];

/// Parses every ingress-nginx annotation of Ingress `namespace/name`. `secrets` are the
/// Secrets of the input (for `auth-secret`).
pub fn parse(
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
    secrets: &[Secret],
) -> Parsed {
    let get = |key: &str| annotations.get(&format!("{PREFIX}{key}")).map(|v| v.trim());
    let mut p = Parsed {
        items: Vec::new(),
        regex: false,
        rewrite_target: None,
        ssl_redirect: true,
        force_ssl_redirect: false,
        redirect: None,
        app_root: None,
        canary: None,
        cors: None,
        protocol: Protocol::Http,
        security: Map::new(),
        traffic: Map::new(),
        extra: Vec::new(),
    };
    let is_canary = get("canary") == Some("true");
    let ctx = Ctx {
        namespace,
        name,
        get: &get,
        secrets,
    };
    let ok = |p: &mut Parsed, key: &str, status: Status, detail: String| {
        p.items
            .push(Item::new(format!("{PREFIX}{key}"), status, detail));
    };
    for (full, value) in annotations {
        let Some(key) = full.strip_prefix(PREFIX) else {
            continue;
        };
        let value = value.trim();
        if is_canary && !CANARY_OWN.contains(&key) {
            let (status, detail) = match key {
                "upstream-hash-by" | "load-balance" | "affinity" => (
                    Status::NotTranslated,
                    "applies to the canary's own upstream in ingress-nginx; here the canary shares the main Ingress's route and policies".to_owned(),
                ),
                _ => (
                    Status::Translated,
                    "ignored on a canary Ingress, as ingress-nginx does (the main Ingress's settings apply)".to_owned(),
                ),
            };
            ok(&mut p, key, status, detail);
            continue;
        }
        let (status, detail) = match one(&ctx, &mut p, key, value) {
            Ok(v) => v,
            Err(reason) => (Status::NotTranslated, reason),
        };
        ok(&mut p, key, status, detail);
    }
    p
}

struct Ctx<'a> {
    namespace: &'a str,
    name: &'a str,
    get: &'a dyn Fn(&str) -> Option<&'a str>,
    secrets: &'a [Secret],
}

type Outcome = Result<(Status, String), String>;

fn translated(detail: impl Into<String>) -> Outcome {
    Ok((Status::Translated, detail.into()))
}

fn partial(detail: impl Into<String>) -> Outcome {
    Ok((Status::Partial, detail.into()))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "invalid value {other:?}: expected \"true\" or \"false\""
        )),
    }
}

fn number(value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value:?}: expected a non-negative integer"))
}

/// Entry in `spec.<section>` of a policy, creating the section.
fn section<'m>(spec: &'m mut Map<String, Value>, path: &[&str]) -> &'m mut Map<String, Value> {
    let mut at = spec;
    for key in path {
        let entry = at
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            unreachable!("just made an object")
        };
        at = next;
    }
    at
}

#[allow(clippy::too_many_lines)] // one arm per annotation reads best as one table
fn one(ctx: &Ctx<'_>, p: &mut Parsed, key: &str, value: &str) -> Outcome {
    let get = ctx.get;
    match key {
        "use-regex" => {
            p.regex |= boolean(value)?;
            translated("paths of the host are regular expressions (see each path)")
        }
        "rewrite-target" => {
            p.regex = true;
            p.rewrite_target = Some(value.to_owned());
            translated("URL rewrite on each path (see each path)")
        }
        "ssl-redirect" => {
            p.ssl_redirect = boolean(value)?;
            translated(if p.ssl_redirect {
                "HTTP requests to TLS hosts redirected to HTTPS (308) by a RequestRedirect route"
            } else {
                "TLS hosts also served over HTTP"
            })
        }
        "force-ssl-redirect" => {
            p.force_ssl_redirect = boolean(value)?;
            translated("HTTP requests redirected to HTTPS (308) by a RequestRedirect route")
        }
        "permanent-redirect" | "temporal-redirect" => {
            let permanent = key == "permanent-redirect";
            let code_key = if permanent {
                "permanent-redirect-code"
            } else {
                "temporal-redirect-code"
            };
            let code = match get(code_key) {
                Some(c) => number(c)?,
                None if permanent => 301,
                None => 302,
            };
            if ![301, 302, 303, 307, 308].contains(&code) {
                return Err(format!(
                    "redirect code {code} is not one Gateway API allows (301, 302, 303, 307, 308)"
                ));
            }
            let uri: hyper::Uri = value
                .parse()
                .map_err(|e| format!("invalid redirect URL {value:?}: {e}"))?;
            let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
                return Err(format!("redirect URL {value:?} has no scheme or host"));
            };
            let mut filter = json!({
                "scheme": scheme,
                "hostname": host,
                "statusCode": code,
                "path": {"type": "ReplaceFullPath", "replaceFullPath": uri.path()},
            });
            if let Some(port) = uri.port_u16() {
                filter["port"] = json!(port);
            }
            p.redirect = Some(Redirect { filter });
            if uri.query().is_some() {
                partial(format!(
                    "RequestRedirect {code} to {scheme}://{host}{}: Gateway API redirects cannot set a query, the request's own query is kept",
                    uri.path()
                ))
            } else {
                translated(format!("RequestRedirect {code} to {value}"))
            }
        }
        "permanent-redirect-code" => modifier(ctx, "permanent-redirect", None),
        "temporal-redirect-code" => modifier(ctx, "temporal-redirect", None),
        "app-root" => {
            if !value.starts_with('/') {
                return Err(format!("app-root {value:?} does not start with /"));
            }
            p.app_root = Some(value.to_owned());
            translated(format!(
                "rule Exact / with RequestRedirect 302 to {value} on every host of the Ingress"
            ))
        }
        "canary" => {
            if boolean(value)? {
                p.canary.get_or_insert_with(Canary::default);
            }
            translated("backends merged into the main Ingress's HTTPRoute rules for the same host and path")
        }
        "canary-weight" | "canary-weight-total" => {
            let weight = number(get("canary-weight").unwrap_or("0"))?;
            let total = number(get("canary-weight-total").unwrap_or("100"))?;
            if weight > total || total == 0 {
                return Err(format!(
                    "canary weight {weight} of total {total} is out of range"
                ));
            }
            p.canary.get_or_insert_with(Canary::default).weight = Some((weight, total));
            translated(format!(
                "weighted backendRefs: canary {weight}, main {}",
                total - weight
            ))
        }
        "canary-by-header" => {
            p.canary.get_or_insert_with(Canary::default).header = Some(value.to_owned());
            translated(match (get("canary-by-header-value"), get("canary-by-header-pattern")) {
                (Some(_), _) | (_, Some(_)) => format!("header match on {value}"),
                _ => format!(
                    "rules matching header {value}: \"always\" to the canary, \"never\" to the main backend"
                ),
            })
        }
        "canary-by-header-value" => {
            p.canary.get_or_insert_with(Canary::default).header_value = Some(value.to_owned());
            translated(format!("Exact header match on value {value:?}"))
        }
        "canary-by-header-pattern" => {
            regex::Regex::new(value).map_err(|e| format!("invalid pattern: {e}"))?;
            if get("canary-by-header-value").is_some() {
                return translated("ignored: canary-by-header-value takes precedence, as in ingress-nginx");
            }
            p.canary.get_or_insert_with(Canary::default).header_pattern = Some(value.to_owned());
            translated(format!("RegularExpression header match {value}"))
        }
        "canary-by-cookie" => {
            p.canary.get_or_insert_with(Canary::default).cookie = Some(value.to_owned());
            translated(format!(
                "rules matching the Cookie header: {value}=always to the canary, {value}=never to the main backend"
            ))
        }
        "enable-cors" => {
            if !boolean(value)? {
                return translated("CORS off");
            }
            let list = |k: &str, default: &str| -> Vec<String> {
                get(k)
                    .unwrap_or(default)
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            };
            let mut cors = json!({
                "allowOrigins": list("cors-allow-origin", "*"),
                "allowMethods": list("cors-allow-methods", "GET, PUT, POST, DELETE, PATCH, OPTIONS")
                    .into_iter().map(|m| m.to_uppercase()).collect::<Vec<_>>(),
                "allowHeaders": list("cors-allow-headers", "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"),
                "allowCredentials": boolean(get("cors-allow-credentials").unwrap_or("true"))?,
                "maxAge": number(get("cors-max-age").unwrap_or("1728000"))?,
            });
            let expose = list("cors-expose-headers", "");
            if !expose.is_empty() {
                cors["exposeHeaders"] = json!(expose);
            }
            p.cors = Some(cors);
            translated("HTTPRoute CORS filter, with ingress-nginx's defaults for unset cors-* annotations")
        }
        "cors-allow-origin" | "cors-allow-methods" | "cors-allow-headers"
        | "cors-expose-headers" | "cors-allow-credentials" | "cors-max-age" => {
            modifier(ctx, "enable-cors", Some("true"))
        }
        "limit-rps" | "limit-rpm" => {
            let n = number(value)?;
            let unit = if key == "limit-rps" { "Second" } else { "Minute" };
            let rules = section(&mut p.traffic, &["rateLimit", "local"])
                .entry("rules")
                .or_insert_with(|| json!([]));
            if let Value::Array(rules) = rules {
                rules.push(json!({
                    "clientSelectors": [{"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}],
                    "limit": {"requests": n, "unit": unit},
                }));
            }
            p.traffic
                .get_mut("rateLimit")
                .and_then(Value::as_object_mut)
                .map(|r| r.insert("type".into(), json!("Local")));
            let burst = get("limit-burst-multiplier").unwrap_or("5");
            partial(format!(
                "BackendTrafficPolicy local rate limit of {n} per {} per client IP; nginx also admits bursts of {burst}x the rate (limit-burst-multiplier)",
                unit.to_lowercase()
            ))
        }
        "limit-burst-multiplier" => partial("Envoy's token bucket has no burst beyond the rate"),
        "limit-connections" => Err(
            "Envoy Gateway has no per-client concurrent connection limit (ClientTrafficPolicy connectionLimit caps all connections of a listener)".to_owned(),
        ),
        "auth-type" => match value {
            "basic" => basic_auth(ctx, p),
            other => Err(format!(
                "auth-type {other}: Envoy Gateway supports basic authentication only"
            )),
        },
        "auth-secret" | "auth-secret-type" => modifier(ctx, "auth-type", Some("basic")),
        "auth-realm" => partial("Envoy's basic authentication does not send a realm"),
        "auth-url" => ext_auth(ctx, p, value),
        "auth-response-headers" => modifier(ctx, "auth-url", None),
        "whitelist-source-range" | "allowlist-source-range" | "denylist-source-range" => {
            let cidrs = cidrs(value)?;
            let allow = key != "denylist-source-range";
            let authorization = section(&mut p.security, &["authorization"]);
            let rules = authorization.entry("rules").or_insert_with(|| json!([]));
            let rule = json!({
                "action": if allow { "Allow" } else { "Deny" },
                "principal": {"clientCIDRs": cidrs},
            });
            if let Value::Array(rules) = rules {
                // Deny rules first: nginx checks `deny` before `allow`.
                if allow {
                    rules.push(rule);
                } else {
                    rules.insert(0, rule);
                }
            }
            let default = if allow || authorization.get("defaultAction") == Some(&json!("Deny")) {
                "Deny"
            } else {
                "Allow"
            };
            authorization.insert("defaultAction".into(), json!(default));
            translated(format!(
                "SecurityPolicy authorization: {} {}",
                if allow { "allow only" } else { "deny" },
                cidrs.join(", ")
            ))
        }
        "proxy-connect-timeout" => {
            let s = number(value)?;
            section(&mut p.traffic, &["timeout", "tcp"])
                .insert("connectTimeout".into(), json!(duration(s)));
            translated(format!("BackendTrafficPolicy timeout.tcp.connectTimeout {}", duration(s)))
        }
        "proxy-read-timeout" | "proxy-send-timeout" => {
            // One Envoy timer covers both directions: the read timeout (waiting for the
            // backend) when set, else the send timeout, never below nginx's 60s default read.
            let read = get("proxy-read-timeout").map(number).transpose()?;
            let send = get("proxy-send-timeout").map(number).transpose()?;
            let idle = read.unwrap_or_else(|| send.unwrap_or(60).max(60));
            section(&mut p.traffic, &["timeout", "http"])
                .insert("streamIdleTimeout".into(), json!(duration(idle)));
            partial(format!(
                "BackendTrafficPolicy timeout.http.streamIdleTimeout {}: one idle timer for both directions, where nginx times reads and sends separately",
                duration(idle)
            ))
        }
        "proxy-body-size" => {
            let limit = body_size(value)?;
            match limit {
                None => translated("no limit (0), Envoy Gateway's default"),
                Some(limit) => {
                    section(&mut p.traffic, &["requestBuffer"])
                        .insert("limit".into(), json!(limit));
                    translated(format!(
                        "BackendTrafficPolicy requestBuffer.limit {limit}: larger requests get 413, as with nginx"
                    ))
                }
            }
        }
        "backend-protocol" => match value.to_uppercase().as_str() {
            "HTTP" => translated("HTTP/1.1 to the backend, the default"),
            "HTTPS" => {
                p.protocol = Protocol::Https;
                partial("BackendTLSPolicy per backend Service: Envoy verifies the backend's certificate against the system CAs for <service>.<namespace>.svc; nginx does not verify by default")
            }
            "GRPC" => {
                p.protocol = Protocol::Grpc;
                partial("routed as HTTP; set appProtocol: kubernetes.io/h2c on the backend Service's port so Envoy speaks HTTP/2 to it")
            }
            "GRPCS" => {
                p.protocol = Protocol::Grpcs;
                partial("BackendTLSPolicy per backend Service (verified against the system CAs); set appProtocol: kubernetes.io/h2c on the Service port for HTTP/2")
            }
            other => Err(format!("backend protocol {other} has no Envoy Gateway equivalent")),
        },
        "upstream-hash-by" => {
            if get("affinity") == Some("cookie") {
                return Err("affinity cookie takes precedence, as in ingress-nginx".to_owned());
            }
            let hash = hash_by(value)?;
            let detail = format!("BackendTrafficPolicy loadBalancer ConsistentHash {hash}");
            section(&mut p.traffic, &["loadBalancer"]).extend([
                ("type".to_owned(), json!("ConsistentHash")),
                ("consistentHash".to_owned(), hash),
            ]);
            translated(detail)
        }
        "affinity" => {
            if value != "cookie" {
                return Err(format!("affinity {value}: only cookie exists"));
            }
            let name = get("session-cookie-name").unwrap_or("INGRESSCOOKIE");
            let ttl = duration(number(get("session-cookie-max-age").unwrap_or("172800"))?);
            section(&mut p.traffic, &["loadBalancer"]).extend([
                ("type".to_owned(), json!("ConsistentHash")),
                (
                    "consistentHash".to_owned(),
                    json!({"type": "Cookie", "cookie": {"name": name, "ttl": ttl}}),
                ),
            ]);
            partial(format!(
                "BackendTrafficPolicy ConsistentHash on cookie {name} (ttl {ttl}, set by Envoy when absent): sticky while the set of endpoints is unchanged, where nginx pins the endpoint"
            ))
        }
        "session-cookie-name" | "session-cookie-max-age" => {
            modifier(ctx, "affinity", Some("cookie"))
        }
        "auth-signin" => Err(
            "Envoy Gateway's extAuth cannot send unauthenticated users to a sign-in page; its oidc SecurityPolicy does the whole login flow".to_owned(),
        ),
        "custom-http-errors" => Err(
            "nginx sends these responses to the default backend; Envoy Gateway's BackendTrafficPolicy responseOverride can only return a fixed body or redirect".to_owned(),
        ),
        "configuration-snippet" | "server-snippet" => Err(
            "raw nginx configuration is never translated: review it and express it with Gateway API or Envoy Gateway policies".to_owned(),
        ),
        _ => Err(format!(
            "no Gateway API or Envoy Gateway equivalent known to this tool (Ingress {}/{})",
            ctx.namespace, ctx.name
        )),
    }
}

/// An annotation that only refines `parent` (set to `value`, when given): carried over with it,
/// and ignored without it, as ingress-nginx ignores it.
fn modifier(ctx: &Ctx<'_>, parent: &str, value: Option<&str>) -> Outcome {
    let parent_set = (ctx.get)(parent).is_some_and(|v| value.is_none_or(|w| v == w));
    let parent = match value {
        Some(v) => format!("{parent}: {v}"),
        None => parent.to_owned(),
    };
    translated(if parent_set {
        format!("carried over with {parent}")
    } else {
        format!("ignored without {parent}, as ingress-nginx does")
    })
}

fn basic_auth(ctx: &Ctx<'_>, p: &mut Parsed) -> Outcome {
    let reference = (ctx.get)("auth-secret").ok_or("auth-type basic without auth-secret")?;
    let (secret_ns, secret_name) = reference
        .split_once('/')
        .unwrap_or((ctx.namespace, reference));
    let htpasswd_name = format!("{secret_name}-htpasswd");
    section(&mut p.security, &["basicAuth"]).insert(
        "users".into(),
        json!({"group": "", "kind": "Secret", "name": htpasswd_name}),
    );
    let secret = ctx.secrets.iter().find(|s| {
        s.metadata.name.as_deref() == Some(secret_name)
            && s.metadata.namespace.as_deref().unwrap_or("default") == secret_ns
    });
    let Some(secret) = secret else {
        return partial(format!(
            "SecurityPolicy basicAuth reading Secret {}/{htpasswd_name} (key .htpasswd, {{SHA}} hashes): Secret {secret_ns}/{secret_name} was not in the input, create it from that",
            ctx.namespace
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |b: &k8s_openapi::ByteString| String::from_utf8_lossy(&b.0).into_owned();
    let lines: Vec<String> = if (ctx.get)("auth-secret-type") == Some("auth-map") {
        data.iter()
            .map(|(user, hash)| format!("{user}:{}", text(hash).trim()))
            .collect()
    } else {
        let Some(file) = data.get("auth") else {
            return Err(format!(
                "Secret {secret_ns}/{secret_name} has no key auth (the htpasswd file)"
            ));
        };
        text(file)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let unsupported: Vec<&str> = lines
        .iter()
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(_, h)| h.starts_with("{SHA}"))
        })
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    let htpasswd = lines.join("\n") + "\n";
    p.extra.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": htpasswd_name, "namespace": ctx.namespace},
        "type": "Opaque",
        "data": {".htpasswd": base64::engine::general_purpose::STANDARD.encode(htpasswd)},
    }));
    if unsupported.is_empty() {
        translated(format!(
            "SecurityPolicy basicAuth with Secret {}/{htpasswd_name} (.htpasswd from {secret_ns}/{secret_name})",
            ctx.namespace
        ))
    } else {
        partial(format!(
            "SecurityPolicy basicAuth with Secret {}/{htpasswd_name}; Envoy accepts only {{SHA}} hashes, re-hash the passwords of: {}",
            ctx.namespace,
            unsupported.join(", ")
        ))
    }
}

fn ext_auth(ctx: &Ctx<'_>, p: &mut Parsed, url: &str) -> Outcome {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid auth-url {url:?}: {e}"))?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(format!("auth-url {url:?} has no scheme or host"));
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let labels: Vec<&str> = host.split('.').collect();
    let mut notes = Vec::new();
    let backend = match labels.as_slice() {
        [svc, ns, "svc", rest @ ..] if rest.is_empty() || rest.join(".") == "cluster.local" => {
            if *ns != ctx.namespace {
                p.extra.push(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1beta1",
                    "kind": "ReferenceGrant",
                    "metadata": {"name": format!("{}-{}-ext-auth", ctx.namespace, ctx.name), "namespace": ns},
                    "spec": {
                        "from": [{"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": ctx.namespace}],
                        "to": [{"group": "", "kind": "Service", "name": svc}],
                    },
                }));
            }
            json!({"name": svc, "namespace": ns, "port": port})
        }
        _ => {
            let name = format!("{}-ext-auth", ctx.name);
            p.extra.push(json!({
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "Backend",
                "metadata": {"name": name, "namespace": ctx.namespace},
                "spec": {"endpoints": [{"fqdn": {"hostname": host, "port": port}}]},
            }));
            notes.push("through a Backend (needs the Backend API enabled)".to_owned());
            json!({"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name, "port": port})
        }
    };
    let mut http = json!({"backendRefs": [backend]});
    if uri.path() != "/" {
        http["pathOverride"] = json!(uri.path());
    }
    if let Some(headers) = (ctx.get)("auth-response-headers") {
        let headers: Vec<&str> = headers.split(',').map(str::trim).collect();
        http["headersToBackend"] = json!(headers);
    }
    section(&mut p.security, &["extAuth"]).insert("http".into(), http);
    if scheme == "https" {
        notes.push("HTTPS to the auth service needs a BackendTLSPolicy for it".to_owned());
    }
    if uri.query().is_some() {
        notes.push("the auth-url's query is dropped".to_owned());
    }
    let detail = format!("SecurityPolicy extAuth.http to {host}:{port}{}", uri.path());
    if notes.is_empty() {
        translated(detail)
    } else {
        partial(format!("{detail}; {}", notes.join("; ")))
    }
}

/// Seconds as an Envoy Gateway duration (`48h`, `1h30m5s`): at most five digits per unit.
fn duration(seconds: u32) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}

/// `10.0.0.0/8, 1.2.3.4` as CIDRs (single addresses get /32 or /128).
fn cidrs(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (ip, len) = s.split_once('/').unwrap_or((s, ""));
            let ip: IpAddr = ip.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = if len.is_empty() {
                max
            } else {
                len.parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("invalid CIDR {s:?}"))?
            };
            Ok(format!("{ip}/{len}"))
        })
        .collect()
}

/// nginx sizes (`8m`, `512k`, `1g`, bytes) as Kubernetes quantities; `0` is no limit.
fn body_size(value: &str) -> Result<Option<String>, String> {
    let bad = || format!("invalid size {value:?}");
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Ok(None);
    }
    let suffix = match unit {
        'b' => "",
        'k' => "Ki",
        'm' => "Mi",
        'g' => "Gi",
        _ => return Err(bad()),
    };
    Ok(Some(format!("{n}{suffix}")))
}

/// `upstream-hash-by` variables as a ConsistentHash.
fn hash_by(value: &str) -> Result<Value, String> {
    let header = |name: &str| name.replace('_', "-");
    match value {
        "$remote_addr" | "$binary_remote_addr" => Ok(json!({"type": "SourceIP"})),
        v if v.starts_with("$http_") => {
            Ok(json!({"type": "Header", "header": {"name": header(&v["$http_".len()..])}}))
        }
        v if v.starts_with("$cookie_") => {
            Ok(json!({"type": "Cookie", "cookie": {"name": &v["$cookie_".len()..]}}))
        }
        v if v.starts_with("$arg_") => {
            Ok(json!({"type": "QueryParams", "queryParams": [{"name": &v["$arg_".len()..]}]}))
        }
        other => Err(format!(
            "hashing on {other:?}: Envoy Gateway hashes on the client IP, a header, a cookie or query parameters only"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cidrs_and_hashes() {
        assert_eq!(duration(172_800), "48h");
        assert_eq!(duration(5_405), "1h30m5s");
        assert_eq!(duration(30), "30s");
        assert_eq!(body_size("8m"), Ok(Some("8Mi".into())));
        assert_eq!(body_size("100"), Ok(Some("100".into())));
        assert_eq!(body_size("0"), Ok(None));
        assert!(body_size("8x").is_err());
        assert_eq!(
            cidrs("10.0.0.0/8, 1.2.3.4,::1"),
            Ok(vec![
                "10.0.0.0/8".into(),
                "1.2.3.4/32".into(),
                "::1/128".into()
            ])
        );
        assert!(cidrs("10.0.0.0/33").is_err());
        assert_eq!(
            hash_by("$http_x_user"),
            Ok(json!({"type": "Header", "header": {"name": "x-user"}}))
        );
        assert!(hash_by("$request_uri").is_err());
    }

    #[test]
    fn invalid_values_are_reported_not_fatal() {
        let annotations = BTreeMap::from([
            (format!("{PREFIX}limit-rps"), "many".to_owned()),
            (format!("{PREFIX}server-snippet"), "return 200;".to_owned()),
        ]);
        let p = parse("ns", "ing", &annotations, &[]);
        assert_eq!(p.items.len(), 2);
        assert!(p.items.iter().all(|i| i.status == Status::NotTranslated));
        assert!(p.traffic.is_empty());
    }
}
