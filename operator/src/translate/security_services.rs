//! The SecurityPolicy features that reach beyond the route: API keys read from Secrets,
//! external authorization services, OpenID Connect providers and remote JWKS endpoints reached through clusters of
//! their own. Each resolves its references here, once per policy, into IR and the clusters
//! the policy's own requests need; [`super::policies`] attaches the result to routes.
//!
//! References that cannot be resolved (a missing Secret, a Service without the port, a URI
//! that does not parse) refuse the whole policy with the field named, like every other
//! policy error: an authentication step silently skipped would open the route.

use std::collections::{BTreeMap, BTreeSet};

use eg_crds::policies::{ApiKeyAuth, BackendCluster, ExtAuth, Oidc, RemoteJwks};

use super::backends::{self, BackendTarget};
use super::index::{Index, secret_value};
use super::ir::{
    ApiKeyAuthIr, ClusterIr, ClusterSourceIr, EndpointIr, ExtAuthIr, ExtAuthServiceIr, JwksIr,
    OidcIr, RetryIr, TrustIr, UpstreamProtocol, UpstreamTlsIr,
};
use super::policies::{PolicyError, backend_settings_ir};
use super::refs::{Referent, Referrer, reference_allowed};
use super::route_kind::RouteKind;
use super::routes::settings_variant;

/// Upstream's timeout for an authorization check when the policy sets none.
const DEFAULT_EXT_AUTH_TIMEOUT_MS: u64 = 10_000;

/// API keys by client ID from the policy's credential Secrets (the first Secret naming a
/// client wins, as upstream), and where requests carry them.
pub(super) fn api_key_auth(
    index: &Index<'_>,
    namespace: &str,
    a: &ApiKeyAuth,
) -> Result<ApiKeyAuthIr, PolicyError> {
    let mut credentials: BTreeMap<String, String> = BTreeMap::new();
    if a.credential_refs.is_empty() {
        return Err(invalid(
            "spec.apiKeyAuth.credentialRefs",
            "",
            "at least one Secret is required",
        ));
    }
    for (i, r) in a.credential_refs.iter().enumerate() {
        let ns = r.namespace.as_deref().unwrap_or(namespace);
        let secret = index
            .secret(ns, &r.name)
            .ok_or_else(|| PolicyError::RefNotFound {
                field: format!("spec.apiKeyAuth.credentialRefs[{i}]"),
                kind: "Secret",
                namespace: ns.to_owned(),
                name: r.name.clone(),
            })?;
        let mut clients: Vec<String> = secret
            .data
            .iter()
            .flat_map(|d| d.keys())
            .chain(secret.string_data.iter().flat_map(|d| d.keys()))
            .cloned()
            .collect();
        clients.sort();
        clients.dedup();
        for client in clients {
            let key = secret_value(secret, &client).unwrap_or_default();
            if key.is_empty() {
                return Err(invalid(
                    &format!(
                        "spec.apiKeyAuth.credentialRefs[{i}] (Secret {ns}/{})",
                        r.name
                    ),
                    &client,
                    "the API key of this client is empty",
                ));
            }
            credentials.entry(client).or_insert(key);
        }
    }
    let mut headers = Vec::new();
    let mut params = Vec::new();
    let mut cookies = Vec::new();
    for from in &a.extract_from {
        headers.extend(from.headers.iter().cloned());
        params.extend(from.params.iter().cloned());
        cookies.extend(from.cookies.iter().cloned());
    }
    if headers.is_empty() && params.is_empty() && cookies.is_empty() {
        return Err(invalid(
            "spec.apiKeyAuth.extractFrom",
            "",
            "name at least one header, param or cookie",
        ));
    }
    Ok(ApiKeyAuthIr {
        credentials: credentials.into_iter().collect(),
        headers,
        params,
        cookies,
        forward_client_id_header: a.forward_client_id_header.clone(),
        sanitize: a.sanitize.unwrap_or(false),
    })
}

/// The authorization service of `ext`, its cluster added to `clusters`.
pub(super) fn ext_auth(
    index: &Index<'_>,
    namespace: &str,
    ext: &ExtAuth,
    timeout_ms: Option<u64>,
    clusters: &mut Vec<ClusterIr>,
) -> Result<ExtAuthIr, PolicyError> {
    let (service, (cluster, requests)) = match (&ext.http, &ext.grpc) {
        (Some(http), None) => {
            let at = "spec.extAuth.http";
            let cluster = with_settings(
                at,
                &http.backend,
                policy_backend(index, namespace, at, &http.backend, RouteKind::Http)?,
            )?;
            let path = http.path.clone().filter(|p| !p.is_empty());
            let path_override = http.path_override.clone().filter(|p| !p.is_empty());
            if path.is_some() && path_override.is_some() {
                return Err(invalid(
                    "spec.extAuth.http.pathOverride",
                    path_override.as_deref().unwrap_or_default(),
                    "only one of path and pathOverride may be set",
                ));
            }
            (
                ExtAuthServiceIr::Http {
                    path,
                    path_override,
                    headers_to_backend: lowercase(&http.headers_to_backend),
                },
                cluster,
            )
        }
        (None, Some(grpc)) => {
            let at = "spec.extAuth.grpc";
            let cluster = with_settings(
                at,
                &grpc.backend,
                policy_backend(index, namespace, at, &grpc.backend, RouteKind::Grpc)?,
            )?;
            (ExtAuthServiceIr::Grpc, cluster)
        }
        _ => {
            return Err(invalid(
                "spec.extAuth",
                "",
                "exactly one of http and grpc must be set",
            ));
        }
    };
    let name = cluster.name.clone();
    push_cluster(clusters, cluster);
    Ok(ExtAuthIr {
        service,
        cluster: name,
        headers_to_ext_auth: lowercase(&ext.headers_to_ext_auth),
        timeout_ms: timeout_ms
            .or(requests.timeout_ms)
            .unwrap_or(DEFAULT_EXT_AUTH_TIMEOUT_MS),
        fail_open: ext.fail_open.unwrap_or(false),
        retry: requests.retry,
    })
}

/// A remote JWKS source (see [`uri_cluster`] for how it is reached).
pub(super) fn remote_jwks(
    index: &Index<'_>,
    namespace: &str,
    at: &str,
    policy: &str,
    remote: &RemoteJwks,
    cache_duration_ms: Option<u64>,
    clusters: &mut Vec<ClusterIr>,
) -> Result<JwksIr, PolicyError> {
    let at = format!("{at}.remoteJWKS");
    let (name, requests) = uri_cluster(
        index,
        namespace,
        (&format!("{at}.uri"), &at),
        policy,
        &remote.uri,
        &remote.backend,
        clusters,
    )?;
    let RequestSettings { retry, timeout_ms } = requests;
    Ok(JwksIr::Remote {
        uri: remote.uri.clone(),
        cluster: name,
        cache_duration_ms,
        retry,
        timeout_ms,
    })
}

/// The cluster requests to `uri` go through: the policy's backendRef when it has one, else a
/// cluster to the URI's own host and port; TLS with the system trust store for `https`;
/// `backendSettings` applied. `(uri_at, at)` are the fields holding `uri` and the backend.
fn uri_cluster(
    index: &Index<'_>,
    namespace: &str,
    (uri_at, at): (&str, &str),
    policy: &str,
    uri_text: &str,
    backend: &BackendCluster,
    clusters: &mut Vec<ClusterIr>,
) -> Result<(String, RequestSettings), PolicyError> {
    let uri = Uri::parse(uri_text).map_err(|problem| invalid(uri_at, uri_text, problem))?;
    let cluster = if backend.refs().next().is_some() {
        let mut cluster = policy_backend(index, namespace, at, backend, RouteKind::Http)?;
        if uri.https {
            cluster.name.push_str("/tls");
            cluster.tls = Some(Box::new(system_tls(policy, &uri.host)));
        }
        cluster
    } else {
        let endpoint = match uri.host.parse::<std::net::IpAddr>() {
            Ok(ip) => EndpointIr::Ip {
                ip: ip.to_string(),
                port: uri.port,
            },
            Err(_) => EndpointIr::Hostname {
                hostname: uri.host.clone(),
                port: uri.port,
            },
        };
        let scheme = if uri.https { "https" } else { "http" };
        ClusterIr {
            name: format!("uri/{scheme}/{}/{}", uri.host, uri.port),
            source: ClusterSourceIr::Uri {
                uri: format!("{scheme}://{}:{}", uri.host, uri.port),
            },
            protocol: UpstreamProtocol::Http1,
            endpoints: vec![endpoint],
            tls: uri.https.then(|| Box::new(system_tls(policy, &uri.host))),
            settings: None,
        }
    };
    let (cluster, requests) = with_settings(at, backend, cluster)?;
    let name = cluster.name.clone();
    push_cluster(clusters, cluster);
    Ok((name, requests))
}

/// How a policy's own requests to its backend retry and time out (`backendSettings`).
#[derive(Debug, Default)]
struct RequestSettings {
    retry: Option<RetryIr>,
    timeout_ms: Option<u64>,
}

/// `cluster` with the connection settings of `backend.backendSettings` (a variant of it, named
/// as a BackendTrafficPolicy's would be), and the settings of the requests sent through it.
fn with_settings(
    at: &str,
    backend: &BackendCluster,
    cluster: ClusterIr,
) -> Result<(ClusterIr, RequestSettings), PolicyError> {
    let Some(settings) = &backend.backend_settings else {
        return Ok((cluster, RequestSettings::default()));
    };
    let traffic = backend_settings_ir(settings, &format!("{at}.backendSettings"))?;
    let requests = RequestSettings {
        retry: traffic.retry,
        timeout_ms: traffic.request_timeout_ms,
    };
    let cluster = match traffic.cluster {
        Some(settings) => ClusterIr {
            name: settings_variant(&cluster.name, &settings),
            settings: Some(Box::new(settings)),
            ..cluster
        },
        None => cluster,
    };
    Ok((cluster, requests))
}

/// Upstream's redirect URL when the policy sets none: the callback path on the host and scheme
/// the request came with.
const DEFAULT_REDIRECT_URL: &str = "%REQ(x-forwarded-proto)%://%REQ(:authority)%/oauth2/callback";

/// An OpenID provider's endpoints, as its discovery document lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcEndpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// The issuers whose endpoints the SecurityPolicies of `snapshot` leave to discovery: an
/// OIDC provider without `authorizationEndpoint` or `tokenEndpoint`.
pub fn oidc_issuers_to_discover(snapshot: &super::Snapshot) -> BTreeSet<String> {
    snapshot
        .security_policies
        .iter()
        .filter_map(|p| p.spec.oidc.as_ref())
        .map(|o| &o.provider)
        .filter(|p| {
            let missing = |e: &Option<String>| e.as_deref().is_none_or(str::is_empty);
            !p.issuer.is_empty()
                && (missing(&p.authorization_endpoint) || missing(&p.token_endpoint))
        })
        .map(|p| p.issuer.clone())
        .collect()
}

/// Where the discovery document of `issuer` is (OpenID Connect Discovery 1.0, section 4).
pub fn oidc_discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The endpoints of a discovery document fetched for `issuer`, which must name that issuer
/// (the specification's guard against a document served for another provider).
pub fn parse_oidc_discovery(issuer: &str, body: &[u8]) -> Result<OidcEndpoints, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        #[serde(default)]
        issuer: String,
        #[serde(default)]
        authorization_endpoint: String,
        #[serde(default)]
        token_endpoint: String,
    }
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| format!("the discovery document is not valid JSON: {e}"))?;
    if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the discovery document names issuer {:?}, not {issuer:?}",
            doc.issuer
        ));
    }
    for (field, value) in [
        ("authorization_endpoint", &doc.authorization_endpoint),
        ("token_endpoint", &doc.token_endpoint),
    ] {
        Uri::parse(value)
            .map_err(|problem| format!("the discovery document's {field} {value:?}: {problem}"))?;
    }
    Ok(OidcEndpoints {
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
    })
}

/// OpenID Connect login: the client secret from its Secret (`client-secret`), the provider's
/// endpoints (as given, else as discovered from the issuer by the control plane) and a cluster
/// for token requests.
pub(super) fn oidc(
    index: &Index<'_>,
    namespace: &str,
    policy: &str,
    o: &Oidc,
    clusters: &mut Vec<ClusterIr>,
) -> Result<OidcIr, PolicyError> {
    let client_id = o
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("spec.oidc.clientID", "", "required"))?;
    let r = o
        .client_secret
        .as_ref()
        .ok_or_else(|| invalid("spec.oidc.clientSecret", "", "required"))?;
    let ns = r.namespace.as_deref().unwrap_or(namespace);
    let secret = index
        .secret(ns, &r.name)
        .ok_or_else(|| PolicyError::RefNotFound {
            field: "spec.oidc.clientSecret".into(),
            kind: "Secret",
            namespace: ns.to_owned(),
            name: r.name.clone(),
        })?;
    let client_secret = secret_value(secret, "client-secret")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PolicyError::MissingKey {
            kind: "Secret",
            namespace: ns.to_owned(),
            name: r.name.clone(),
            key: "client-secret",
        })?;
    let issuer = &o.provider.issuer;
    let discovered = || match index.oidc_discovery.get(issuer) {
        _ if issuer.is_empty() => Err(invalid(
            "spec.oidc.provider.issuer",
            "",
            "required when authorizationEndpoint or tokenEndpoint is not given",
        )),
        Some(Ok(endpoints)) => Ok(endpoints),
        Some(Err(problem)) => Err(invalid(
            "spec.oidc.provider.issuer",
            issuer,
            &format!("discovering its endpoints failed: {problem}"),
        )),
        None => Err(invalid(
            "spec.oidc.provider.issuer",
            issuer,
            "its endpoints are not discovered yet (the control plane fetches them from the issuer)",
        )),
    };
    let endpoint = |field: &str,
                    value: &Option<String>,
                    pick: fn(&OidcEndpoints) -> &String|
     -> Result<String, PolicyError> {
        let value = match value.clone().filter(|v| !v.is_empty()) {
            Some(v) => v,
            None => pick(discovered()?).clone(),
        };
        let at = format!("spec.oidc.provider.{field}");
        Uri::parse(&value).map_err(|problem| invalid(&at, &value, problem))?;
        Ok(value)
    };
    let authorization_endpoint = endpoint(
        "authorizationEndpoint",
        &o.provider.authorization_endpoint,
        |e| &e.authorization_endpoint,
    )?;
    let token_endpoint = endpoint("tokenEndpoint", &o.provider.token_endpoint, |e| {
        &e.token_endpoint
    })?;
    let (token_cluster, token_requests) = uri_cluster(
        index,
        namespace,
        ("spec.oidc.provider.tokenEndpoint", "spec.oidc.provider"),
        policy,
        &token_endpoint,
        &o.provider.backend,
        clusters,
    )?;
    let redirect_url = o
        .redirect_url
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIRECT_URL.to_owned());
    let redirect_path = redirect_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .map(|p| p.split(['?', '#']).next().unwrap_or(p).to_owned())
        .filter(|p| p.len() > 1)
        .ok_or_else(|| {
            invalid(
                "spec.oidc.redirectURL",
                &redirect_url,
                "must be an absolute URL with a path",
            )
        })?;
    let logout_path = o.logout_path.clone().unwrap_or_else(|| "/logout".into());
    if !logout_path.starts_with('/') {
        return Err(invalid(
            "spec.oidc.logoutPath",
            &logout_path,
            "must start with /",
        ));
    }
    // Upstream always asks for `openid`.
    let mut scopes = vec!["openid".to_owned()];
    for scope in &o.scopes {
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    let hmac_secret = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"eg-operator oidc hmac\0");
        h.update(policy.as_bytes());
        h.update(b"\0");
        h.update(client_secret.as_bytes());
        crate::short_hash::hex_prefix(&h.finalize(), 32)
    };
    let names = o.cookie_names.clone().unwrap_or_default();
    Ok(OidcIr {
        client_id,
        client_secret,
        hmac_secret,
        authorization_endpoint,
        token_endpoint,
        token_cluster,
        token_retry: token_requests.retry,
        token_timeout_ms: token_requests.timeout_ms,
        redirect_url,
        redirect_path,
        logout_path,
        scopes,
        resources: o.resources.clone(),
        access_token_cookie: names.access_token,
        id_token_cookie: names.id_token,
        cookie_domain: o.cookie_domain.clone(),
        forward_access_token: o.forward_access_token.unwrap_or(false),
        refresh_token: o.refresh_token.unwrap_or(false),
    })
}

fn system_tls(policy: &str, host: &str) -> UpstreamTlsIr {
    UpstreamTlsIr {
        policy: policy.to_owned(),
        sni: host.to_owned(),
        trust: TrustIr::System,
        subject_alt_names: Vec::new(),
    }
}

fn push_cluster(clusters: &mut Vec<ClusterIr>, cluster: ClusterIr) {
    if !clusters.iter().any(|c| c.name == cluster.name) {
        clusters.push(cluster);
    }
}

fn lowercase(names: &[String]) -> Vec<String> {
    names.iter().map(|h| h.to_ascii_lowercase()).collect()
}

fn invalid(field: &str, value: &str, problem: &str) -> PolicyError {
    PolicyError::InvalidValue {
        field: field.to_owned(),
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

/// The cluster of a policy's backend: one reference (Service or Backend), before its settings
/// ([`with_settings`]).
fn policy_backend(
    index: &Index<'_>,
    namespace: &str,
    at: &str,
    backend: &BackendCluster,
    kind: RouteKind,
) -> Result<ClusterIr, PolicyError> {
    let refs: Vec<_> = backend.refs().collect();
    let field = if backend.backend_ref.is_some() {
        format!("{at}.backendRef")
    } else {
        format!("{at}.backendRefs[0]")
    };
    match refs.as_slice() {
        [] => Err(invalid(
            &format!("{at}.backendRefs"),
            "",
            "a backend is required",
        )),
        [r] => {
            // Another namespace's backend needs a ReferenceGrant from SecurityPolicies (not
            // from routes, which is what `backends::resolve` checks): checked here, then the
            // reference is resolved as if made from the backend's own namespace.
            let target_ns = r
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            let target_kind = r.kind.as_deref().unwrap_or("Service");
            let allowed = reference_allowed(
                &index.grants,
                Referrer {
                    group: "gateway.envoyproxy.io",
                    kind: "SecurityPolicy",
                    namespace,
                },
                Referent {
                    group: r.group.as_deref().unwrap_or(""),
                    kind: target_kind,
                    namespace: target_ns,
                    name: &r.name,
                },
            );
            if !allowed {
                return Err(invalid(
                    &field,
                    &r.name,
                    &format!(
                        "{target_kind} {target_ns}/{} is in another namespace; no ReferenceGrant there permits SecurityPolicies of {namespace}",
                        r.name
                    ),
                ));
            }
            backends::resolve(
                index,
                kind,
                target_ns,
                BackendTarget {
                    group: r.group.as_deref(),
                    kind: r.kind.as_deref(),
                    name: &r.name,
                    namespace: Some(target_ns),
                    port: r.port,
                },
            )
            .map_err(|e| invalid(&field, &r.name, &e.to_string()))
        }
        _ => Err(PolicyError::Unsupported(vec![format!(
            "{at}.backendRefs (more than one backend)"
        )])),
    }
}

/// The parts of an `http(s)://host[:port]/path` URI a cluster needs.
#[derive(Debug, PartialEq, Eq)]
struct Uri {
    https: bool,
    host: String,
    port: u16,
}

impl Uri {
    fn parse(text: &str) -> Result<Self, &'static str> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("must start with http:// or https://");
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("user information is not allowed");
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "invalid port")?,
                None if after.is_empty() => default_port,
                None => return Err("invalid authority"),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().map_err(|_| "invalid port")?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err("a host is required");
        }
        Ok(Self { https, host, port })
    }
}

#[cfg(test)]
mod tests {
    use eg_crds::policies::SecurityPolicy;

    use super::*;
    use crate::translate::load::snapshot_from_yaml;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: first, namespace: n}
stringData: {alice: from-first, bob: bob-key}
---
apiVersion: v1
kind: Secret
metadata: {name: second, namespace: n}
data: {alice: ZnJvbS1zZWNvbmQ=, carol: Y2Fyb2wta2V5}
---
apiVersion: v1
kind: Service
metadata: {name: auth, namespace: n}
spec:
  ports: [{port: 9000}]
"#;

    fn security(spec: serde_json::Value) -> SecurityPolicy {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "n"}, "spec": spec}),
        )
        .expect("decodes")
    }

    #[test]
    fn api_keys_come_from_every_secret_first_one_wins() {
        let snapshot = snapshot_from_yaml("c", OBJECTS).expect("loads");
        let index = Index::new(&snapshot);
        let policy = security(serde_json::json!({"apiKeyAuth": {
            "credentialRefs": [{"name": "first"}, {"name": "second"}],
            "extractFrom": [{"headers": ["x-key"]}]}}));
        let keys = api_key_auth(&index, "n", policy.spec.api_key_auth.as_ref().expect("set"))
            .expect("resolves");
        let pairs: Vec<(&str, &str)> = keys
            .credentials
            .iter()
            .map(|(c, k)| (c.as_str(), k.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("alice", "from-first"),
                ("bob", "bob-key"),
                ("carol", "carol-key")
            ]
        );
        assert!(
            !format!("{keys:?}").contains("from-first"),
            "keys stay out of logs"
        );

        let missing = security(serde_json::json!({"apiKeyAuth": {
            "credentialRefs": [{"name": "first"}, {"name": "gone"}],
            "extractFrom": [{"headers": ["x-key"]}]}}));
        let error = api_key_auth(
            &index,
            "n",
            missing.spec.api_key_auth.as_ref().expect("set"),
        )
        .expect_err("refused")
        .to_string();
        assert_eq!(
            error,
            "spec.apiKeyAuth.credentialRefs[1]: Secret n/gone not found"
        );
        let nowhere = security(serde_json::json!({"apiKeyAuth": {
            "credentialRefs": [{"name": "first"}], "extractFrom": []}}));
        assert!(
            api_key_auth(
                &index,
                "n",
                nowhere.spec.api_key_auth.as_ref().expect("set")
            )
            .expect_err("refused")
            .to_string()
            .contains("spec.apiKeyAuth.extractFrom")
        );
    }

    #[test]
    fn oidc_takes_given_endpoints_and_its_secret() {
        let objects = format!(
            "{OBJECTS}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: oidc, namespace: n}}\nstringData: {{client-secret: s}}\n"
        );
        let snapshot = snapshot_from_yaml("c", &objects).expect("loads");
        let index = Index::new(&snapshot);
        let resolve = |oidc: serde_json::Value| {
            let policy = security(serde_json::json!({ "oidc": oidc }));
            let mut clusters = Vec::new();
            oidc_ir(&index, &policy, &mut clusters)
        };
        let good = serde_json::json!({
            "provider": {"issuer": "https://idp.test", "authorizationEndpoint": "https://idp.test/auth",
                         "tokenEndpoint": "https://idp.test:8443/token"},
            "clientID": "app", "clientSecret": {"name": "oidc"}, "scopes": ["email", "openid"]});
        let (ir, clusters) = resolve(good.clone()).expect("resolves");
        assert_eq!(ir.scopes, ["openid", "email"], "openid once, first");
        assert_eq!(
            ir.redirect_path, "/oauth2/callback",
            "upstream's default callback"
        );
        assert_eq!(ir.logout_path, "/logout");
        assert_eq!(ir.token_cluster, "uri/https/idp.test/8443");
        assert_eq!(clusters.len(), 1);
        assert_eq!(ir.hmac_secret.len(), 64);
        assert_eq!(
            resolve(good.clone()).expect("resolves").0.hmac_secret,
            ir.hmac_secret,
            "stable"
        );
        assert!(
            !format!("{ir:?}").contains("\"s\""),
            "the client secret stays out of logs"
        );

        let mut no_token = good.clone();
        no_token["provider"]["tokenEndpoint"] = serde_json::Value::Null;
        let error = resolve(no_token).expect_err("pending").to_string();
        assert!(
            error.contains("spec.oidc.provider.issuer") && error.contains("not discovered yet"),
            "{error}"
        );
        let mut other_secret = good.clone();
        other_secret["clientSecret"]["name"] = "gone".into();
        let error = resolve(other_secret).expect_err("refused").to_string();
        assert!(
            error.starts_with("spec.oidc.clientSecret: Secret n/gone"),
            "{error}"
        );
        let mut relative = good;
        relative["redirectURL"] = "/callback".into();
        let error = resolve(relative).expect_err("refused").to_string();
        assert!(error.contains("spec.oidc.redirectURL"), "{error}");
    }

    #[test]
    fn oidc_endpoints_not_given_come_from_discovery() {
        let objects = format!(
            "{OBJECTS}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: oidc, namespace: n}}\nstringData: {{client-secret: s}}\n"
        );
        let mut snapshot = snapshot_from_yaml("c", &objects).expect("loads");
        let policy = security(serde_json::json!({"oidc": {
            "provider": {"issuer": "https://idp.test/realm", "tokenEndpoint": "https://idp.test/given-token"},
            "clientID": "app", "clientSecret": {"name": "oidc"}}}));
        snapshot.security_policies.push(policy.clone());
        assert_eq!(
            oidc_issuers_to_discover(&snapshot),
            BTreeSet::from(["https://idp.test/realm".to_owned()])
        );
        let document = br#"{"issuer": "https://idp.test/realm",
            "authorization_endpoint": "https://idp.test/realm/auth",
            "token_endpoint": "https://idp.test/realm/token", "jwks_uri": "https://idp.test/keys"}"#;
        let endpoints = parse_oidc_discovery("https://idp.test/realm/", document).expect("parses");
        snapshot
            .oidc_discovery
            .insert("https://idp.test/realm".into(), Ok(endpoints));
        let index = Index::new(&snapshot);
        let (ir, _) = oidc_ir(&index, &policy, &mut Vec::new()).expect("discovered");
        assert_eq!(ir.authorization_endpoint, "https://idp.test/realm/auth");
        assert_eq!(
            ir.token_endpoint, "https://idp.test/given-token",
            "a given endpoint wins over the document's"
        );

        let mut failed = snapshot.clone();
        failed.oidc_discovery.insert(
            "https://idp.test/realm".into(),
            Err(
                "GET https://idp.test/realm/.well-known/openid-configuration: 404 Not Found".into(),
            ),
        );
        let index = Index::new(&failed);
        let error = oidc_ir(&index, &policy, &mut Vec::new())
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("spec.oidc.provider.issuer") && error.contains("404 Not Found"),
            "{error}"
        );

        let error = parse_oidc_discovery("https://other.test", document).expect_err("other issuer");
        assert!(error.contains("names issuer"), "{error}");
        assert!(parse_oidc_discovery("https://idp.test/realm", b"<html>").is_err());
        let relative = br#"{"issuer": "https://idp.test/realm", "authorization_endpoint": "/auth",
            "token_endpoint": "https://idp.test/realm/token"}"#;
        let error = parse_oidc_discovery("https://idp.test/realm", relative).expect_err("relative");
        assert!(error.contains("authorization_endpoint"), "{error}");
        assert_eq!(
            oidc_discovery_url("https://idp.test/realm/"),
            "https://idp.test/realm/.well-known/openid-configuration"
        );
    }

    fn oidc_ir(
        index: &Index<'_>,
        policy: &SecurityPolicy,
        clusters: &mut Vec<ClusterIr>,
    ) -> Result<(OidcIr, Vec<ClusterIr>), PolicyError> {
        let o = oidc(
            index,
            "n",
            "n/p",
            policy.spec.oidc.as_ref().expect("set"),
            clusters,
        )?;
        Ok((o, clusters.clone()))
    }

    #[test]
    fn ext_auth_needs_one_resolvable_backend() {
        let snapshot = snapshot_from_yaml("c", OBJECTS).expect("loads");
        let index = Index::new(&snapshot);
        let resolve = |spec: serde_json::Value| {
            let policy = security(serde_json::json!({"extAuth": spec}));
            let mut clusters = Vec::new();
            let ext = ext_auth(
                &index,
                "n",
                policy.spec.ext_auth.as_ref().expect("set"),
                None,
                &mut clusters,
            );
            ext.map(|e| (e, clusters)).map_err(|e| e.to_string())
        };
        let (ext, clusters) =
            resolve(serde_json::json!({"grpc": {"backendRef": {"name": "auth", "port": 9000}}}))
                .expect("resolves");
        assert_eq!(ext.cluster, "service/n/auth/9000/h2c");
        assert_eq!(ext.timeout_ms, DEFAULT_EXT_AUTH_TIMEOUT_MS);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].protocol, UpstreamProtocol::H2c);

        let error =
            resolve(serde_json::json!({"http": {"backendRefs": [{"name": "nope", "port": 9000}]}}))
                .expect_err("refused");
        assert!(
            error.contains("spec.extAuth.http.backendRefs[0]") && error.contains("not found"),
            "{error}"
        );
        let error = resolve(
            serde_json::json!({"http": {"backendRefs": [{"name": "auth", "port": 9000}]},
            "grpc": {"backendRefs": [{"name": "auth", "port": 9000}]}}),
        )
        .expect_err("refused");
        assert!(error.contains("exactly one of http and grpc"), "{error}");
        let error = resolve(serde_json::json!({"http": {"backendRefs": [
            {"name": "auth", "port": 9000}, {"name": "auth", "port": 9000}]}}))
        .expect_err("refused");
        assert!(error.contains("more than one backend"), "{error}");
    }

    #[test]
    fn backend_settings_shape_the_policy_cluster_and_its_requests() {
        let snapshot = snapshot_from_yaml("c", OBJECTS).expect("loads");
        let index = Index::new(&snapshot);
        let resolve = |remote: serde_json::Value| {
            let policy = security(serde_json::json!({"jwt": {"providers": [
                {"name": "idp", "remoteJWKS": remote}]}}));
            let provider = &policy.spec.jwt.as_ref().expect("set").providers[0];
            let mut clusters = Vec::new();
            remote_jwks(
                &index,
                "n",
                "spec.jwt.providers[0]",
                "n/p",
                provider.remote_jwks.as_ref().expect("set"),
                None,
                &mut clusters,
            )
            .map(|j| (j, clusters))
            .map_err(|e| e.to_string())
        };
        let (jwks, clusters) = resolve(serde_json::json!({
            "uri": "http://auth.n:9000/jwks",
            "backendRefs": [{"name": "auth", "port": 9000}],
            "backendSettings": {
                "retry": {"numRetries": 4, "perRetry": {"backOff": {"baseInterval": "50ms"}}},
                "timeout": {"tcp": {"connectTimeout": "2s"}, "http": {"requestTimeout": "3s"}},
                "circuitBreaker": {"maxConnections": 7}
            }
        }))
        .expect("resolves");
        assert_eq!(clusters.len(), 1);
        let cluster = &clusters[0];
        assert!(
            cluster.name.starts_with("service/n/auth/9000/btp-"),
            "a settings variant of the Service port's cluster: {}",
            cluster.name
        );
        let settings = cluster.settings.as_deref().expect("settings");
        assert_eq!(settings.connect_timeout_ms, Some(2_000));
        assert_eq!(settings.max_connections, Some(7));
        let JwksIr::Remote {
            cluster: name,
            retry,
            timeout_ms,
            ..
        } = jwks
        else {
            panic!("remote");
        };
        assert_eq!(name, cluster.name);
        assert_eq!(timeout_ms, Some(3_000));
        let retry = retry.expect("retry");
        assert_eq!((retry.num_retries, retry.backoff_base_ms), (4, Some(50)));

        // Without a backendRef the settings shape the cluster built to the URI's host.
        let (_, clusters) = resolve(serde_json::json!({
            "uri": "https://idp.test/jwks",
            "backendSettings": {"circuitBreaker": {"maxPendingRequests": 3}}
        }))
        .expect("resolves");
        assert!(clusters[0].name.starts_with("uri/https/idp.test/443/btp-"));
        assert!(clusters[0].tls.is_some());

        let error = resolve(serde_json::json!({
            "uri": "http://auth.n:9000/jwks",
            "backendRefs": [{"name": "auth", "port": 9000}],
            "backendSettings": {"dns": {"dnsRefreshRate": "5s"}}
        }))
        .expect_err("refused");
        assert!(
            error.contains("spec.jwt.providers[0].remoteJWKS.backendSettings.dns"),
            "{error}"
        );
        let error = resolve(serde_json::json!({
            "uri": "http://auth.n:9000/jwks",
            "backendRefs": [{"name": "auth", "port": 9000}],
            "backendSettings": {"loadBalancer": {"type": "Fastest"}}
        }))
        .expect_err("refused");
        assert!(
            error.contains("spec.jwt.providers[0].remoteJWKS.backendSettings.loadBalancer.type"),
            "{error}"
        );
    }

    #[test]
    fn uris_give_scheme_host_and_port() {
        let parsed = |t: &str| Uri::parse(t).expect(t);
        assert_eq!(
            parsed("https://issuer.example.com/.well-known/jwks.json"),
            Uri {
                https: true,
                host: "issuer.example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            parsed("http://127.0.0.9:8080/jwks"),
            Uri {
                https: false,
                host: "127.0.0.9".into(),
                port: 8080
            }
        );
        assert_eq!(parsed("http://[::1]:81/x").host, "::1");
        assert_eq!(parsed("http://[::1]/x").port, 80);
        assert!(Uri::parse("ftp://x/").is_err());
        assert!(Uri::parse("https:///jwks").is_err());
        assert!(Uri::parse("https://host:notaport/").is_err());
        assert!(Uri::parse("https://user@host/").is_err());
    }
}
