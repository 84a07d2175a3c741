//! The intermediate representation (IR): what one Gateway's Envoy must do, with every Gateway API
//! rule already applied (validation, hostname intersection, listener isolation, route
//! precedence, backend resolution, ReferenceGrants).
//!
//! The IR is the contract between this pure translator and the later step that writes Envoy
//! configuration, so it carries decisions, not inputs: a consumer never looks at Gateway API
//! objects again and never re-sorts anything. Everything is ordered deterministically and
//! serializes to stable YAML/JSON, which is what the golden tests compare.
//!
//! Shape, top down:
//! - [`GatewayIr`]: one per Gateway of an accepted GatewayClass, whether or not any listener
//!   survived validation (no listeners means "run an Envoy that serves nothing").
//! - [`ListenerIr`]: one per *valid* Gateway listener, in spec order. Several listeners may share
//!   a port; Envoy gets one listener per port, so the converter groups them with
//!   [`GatewayIr::ports`]. Listener isolation has already been applied, so the domains of the
//!   virtual hosts of different listeners on one port never overlap and can be merged into one
//!   route table (HTTP) or kept per SNI filter chain (HTTPS).
//! - [`VirtualHostIr`]: one per hostname a route was attached under, most specific first.
//! - [`RouteIr`]: one per (HTTPRoute rule, match), already in Gateway API precedence order.
//! - [`ClusterIr`]: one per backend identity (`service/{ns}/{name}/{port}`), shared by every
//!   route of the Gateway that sends traffic to it.
//!
//! Virtual hosts and route entries are behind `Arc`: a route with five hostnames has the same
//! entries under each, and an unchanged virtual host is handed from one translation to the
//! next, so sharing them keeps large Gateways small and lets consumers recognise (by pointer)
//! what they already converted. Serialization is unaffected.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Everything one Gateway's Envoy must serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayIr {
    /// `"{namespace}/{name}"` of the Gateway.
    pub name: String,
    /// The GatewayClass the Gateway belongs to.
    pub class_name: String,
    /// Valid listeners only, in the order of `spec.listeners`.
    pub listeners: Vec<ListenerIr>,
    /// Every upstream cluster a route or mirror of this Gateway references, by name.
    pub clusters: BTreeMap<String, ClusterIr>,
}

impl GatewayIr {
    /// Listeners grouped by port, TCP-based ports first then UDP ones, each ascending,
    /// listeners in spec order. Envoy binds once per port (and transport); conflict detection
    /// guarantees all listeners of a group share one protocol.
    pub fn ports(&self) -> BTreeMap<(bool, u16), Vec<&ListenerIr>> {
        let mut ports: BTreeMap<(bool, u16), Vec<&ListenerIr>> = BTreeMap::new();
        for listener in &self.listeners {
            let udp = listener.protocol == ListenerProtocol::Udp;
            ports
                .entry((udp, listener.port))
                .or_default()
                .push(listener);
        }
        ports
    }
}

/// One valid Gateway listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerIr {
    /// The listener's `name` (the `sectionName` routes use), unique within the Gateway.
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// The listener hostname (lowercase). For HTTPS it is the SNI the certificates are served
    /// for; `None` means "any SNI / any Host" (the fallback chain of the port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Present exactly when `protocol` is HTTPS, or TLS in `Terminate` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsIr>,
    /// Most specific hostname first; empty when no route is attached (Envoy answers 404).
    pub virtual_hosts: VirtualHosts,
    /// The ClientTrafficPolicy governing this listener (a listener-level one, else the
    /// Gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientTrafficIr>,
}

/// A listener's virtual hosts, most specific first: a `Vec` that frees a long list in
/// parallel. The last owner of a large Gateway's IR frees tens of thousands of route entries,
/// most of them allocated by the translator's worker threads; one thread doing that was a
/// fifth of a full translation of 1000 HTTPRoutes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VirtualHosts(#[serde(with = "shared")] Vec<Arc<VirtualHostIr>>);

impl VirtualHosts {
    /// Below this, handing the work to other threads costs more than it saves.
    const PARALLEL_DROP: usize = 256;
}

impl Drop for VirtualHosts {
    fn drop(&mut self) {
        // Only hosts this list owns alone are freed here: the translator's cache keeps
        // the unchanged ones of a re-translation alive.
        if self.0.len() >= Self::PARALLEL_DROP
            && self
                .0
                .iter()
                .filter(|v| Arc::strong_count(v) == 1)
                .nth(Self::PARALLEL_DROP)
                .is_some()
        {
            use rayon::prelude::*;
            std::mem::take(&mut self.0).into_par_iter().for_each(drop);
        }
    }
}

impl std::ops::Deref for VirtualHosts {
    type Target = Vec<Arc<VirtualHostIr>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<Arc<VirtualHostIr>> for VirtualHosts {
    fn from_iter<I: IntoIterator<Item = Arc<VirtualHostIr>>>(hosts: I) -> Self {
        Self(hosts.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a VirtualHosts {
    type Item = &'a Arc<VirtualHostIr>;
    type IntoIter = std::slice::Iter<'a, Arc<VirtualHostIr>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Listener protocols this translator programs.
///
/// On TLS, TCP and UDP listeners the virtual hosts are not Host headers: a TLS listener's are
/// the SNI names its TLSRoutes serve (a filter chain each), a TCP or UDP listener has the single
/// virtual host `*`. The first route entry of such a virtual host carries its connections (the
/// oldest route, by Gateway API precedence); its action is always `forward` or a 500
/// `direct_response`, meaning "no valid backend: refuse the connection".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    /// TLS passthrough (no `tls` on the listener IR) or TLS termination (`tls` present) in
    /// front of raw TCP backends.
    Tls,
    Tcp,
    Udp,
}

impl ListenerProtocol {
    /// Whether the listener's traffic is HTTP (routes match requests) rather than connections.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }
}

/// TLS termination for an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsIr {
    /// In `certificateRefs` order; Envoy picks among them by key type and SNI.
    pub certificates: Vec<CertificateIr>,
}

/// One certificate/key pair read from a `kubernetes.io/tls` Secret. `Debug` redacts the key
/// so logging the IR cannot leak it; serialization keeps it because the converter needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateIr {
    /// `"{namespace}/{name}"` of the Secret, for naming SDS resources and for diagnostics.
    pub secret: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertificateIr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateIr")
            .field("secret", &self.secret)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Routes served for some hostnames on one listener: those served by exactly the same route
/// entries (each hostname is in one virtual host of a listener).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtualHostIr {
    /// `"{gateway ns}/{gateway name}/{listener}/{first domain}"`: unique across the Gateway,
    /// so the virtual hosts of all listeners on a port can share one route table.
    pub name: String,
    /// The hostnames (`"*"`, `"*.example.com"` or exact names), most specific first, Envoy
    /// matches the Host header against. The port of the Host header must be ignored by the
    /// converter (Gateway API: "Implementations MUST ignore any port value specified in the
    /// HTTP Host header").
    pub domains: Vec<Arc<str>>,
    /// In Gateway API precedence order: the first route that matches a request wins.
    #[serde(with = "shared")]
    pub routes: Vec<Arc<RouteIr>>,
    /// Whether it is known that no route carries policy settings (`traffic`, `security`), so
    /// that the filters a connection manager needs are found without visiting every route of
    /// a large Gateway. `false` claims nothing: the routes are looked at.
    #[serde(skip)]
    pub policy_free: bool,
}

/// Equal when they route the same: `policy_free` is a fact about the routes, known or not.
impl PartialEq for VirtualHostIr {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            name,
            domains,
            routes,
            policy_free: _,
        } = self;
        *name == other.name && *domains == other.domains && *routes == other.routes
    }
}

impl Eq for VirtualHostIr {}

/// One HTTPRoute rule match, with what to do with matching requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteIr {
    /// `"httproute/{ns}/{name}/rule/{rule index}/match/{match index}"`: stable across
    /// unrelated changes and unique within a virtual host.
    pub name: String,
    /// `"{ns}/{name}"` of the HTTPRoute, shared by its entries.
    pub source: Arc<str>,
    /// The rule's `name`, when the HTTPRoute sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    pub path: PathMatchIr,
    /// ANDed; at most one entry per header name (case-insensitive, first wins, per spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatchIr>,
    /// ANDed; at most one entry per parameter name (case-sensitive, first wins, per spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatchIr>,
    /// HTTP method, uppercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub action: RouteActionIr,
    /// Shared by the entries of a route whose rules have the same filters (most often none).
    #[serde(default, skip_serializing_if = "RouteFiltersIr::is_empty")]
    pub filters: Arc<RouteFiltersIr>,
    /// The BackendTrafficPolicy governing this entry on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Box<TrafficIr>>,
    /// The SecurityPolicy governing this entry on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<SecurityIr>>,
}

/// What a BackendTrafficPolicy asks of a route (cluster-level settings live on the clusters
/// the route is re-pointed to; see [`ClusterIr::settings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficIr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryIr>,
    /// Whole-request timeout; an HTTPRoute's own `timeouts.request` takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Local rate limit rules; a request counts against every rule whose selectors it meets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitIr>,
    /// Response compressors offered, in the policy's order (`gzip`, `brotli`, `zstd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compression: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policy: Option<HashPolicyIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSettingsIr>,
}

/// Faults Envoy injects into a share of the route's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultIr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Share of requests delayed, in millionths.
    pub delay_per_million: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_http_status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_grpc_status: Option<u32>,
    /// Share of requests aborted, in millionths.
    pub abort_per_million: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryIr {
    pub num_retries: u32,
    /// Envoy `retry_on` conditions.
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
}

/// A local (per-proxy) token bucket for the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitIr {
    pub requests: u32,
    pub fill_interval_ms: u64,
    /// All must hold for a request to count; none means every request counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<RateLimitSelectorIr>,
}

/// One condition of a rate limit rule. `Distinct` selectors give each value (client address,
/// header value) a bucket of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RateLimitSelectorIr {
    Header {
        name: String,
        value: StringMatchIr,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invert: bool,
    },
    HeaderDistinct {
        name: String,
    },
    /// `cidr` is normalised (host bits cleared).
    SourceCidr {
        cidr: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invert: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        distinct: bool,
    },
    Path {
        path: PathMatchIr,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invert: bool,
    },
    Methods {
        methods: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invert: bool,
    },
}

/// What consistent hashing hashes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum HashPolicyIr {
    SourceIp,
    Header(String),
    Cookie { name: String, ttl_ms: Option<u64> },
}

/// Cluster settings from a BackendTrafficPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterSettingsIr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancingIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_health_check: Option<ActiveHealthCheckIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepaliveIr>,
    /// PROXY protocol version (1 or 2) sent ahead of every upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<u8>,
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActiveHealthCheckIr {
    pub check: HealthCheckKindIr,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthCheckKindIr {
    Http {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// Statuses counted healthy; empty means 200.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        expected_statuses: Vec<u32>,
    },
    Tcp,
    Grpc {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
}

/// Passive health checking: endpoints ejected after consecutive errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutlierDetectionIr {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub interval_ms: Option<u64>,
    pub base_ejection_time_ms: Option<u64>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpKeepaliveIr {
    pub probes: Option<u32>,
    pub idle_time_s: Option<u32>,
    pub interval_s: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadBalancingIr {
    /// `round_robin`, `least_request`, `random`, `ring_hash`.
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u64>,
}

/// What a SecurityPolicy asks of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityIr {
    /// `"{namespace}/{name}"` of the policy.
    pub policy: String,
    /// Replaces the route's own CORS filter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_auth: Option<ApiKeyAuthIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuthIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcIr>,
    /// Clusters the policy's own requests go to (authorization checks, JWKS fetches); added
    /// to the Gateway of every route the policy governs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterIr>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyAuthIr {
    /// `(client ID, API key)`, sorted by client ID.
    pub credentials: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_client_id_header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sanitize: bool,
}

impl std::fmt::Debug for ApiKeyAuthIr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients: Vec<&str> = self.credentials.iter().map(|(c, _)| c.as_str()).collect();
        f.debug_struct("ApiKeyAuthIr")
            .field("clients", &clients)
            .field("headers", &self.headers)
            .field("params", &self.params)
            .field("cookies", &self.cookies)
            .field("forward_client_id_header", &self.forward_client_id_header)
            .field("sanitize", &self.sanitize)
            .finish()
    }
}

/// OpenID Connect login (authorization-code flow) through Envoy's oauth2 filter.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcIr {
    pub client_id: String,
    pub client_secret: String,
    /// Signs Envoy's session cookies; derived from the client secret and the policy, so it is
    /// as secret as the client secret and stable across translations and replicas.
    pub hmac_secret: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Key into the policy's clusters: where token requests go.
    pub token_cluster: String,
    /// Retries of a failed token request (`backendSettings.retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_retry: Option<RetryIr>,
    /// How long a token request may take (`backendSettings.timeout.http.requestTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_timeout_ms: Option<u64>,
    /// Where the provider sends the browser back (may use Envoy's `%REQ(...)%` formatting).
    pub redirect_url: String,
    /// The path of `redirect_url`, which the filter answers itself.
    pub redirect_path: String,
    pub logout_path: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_access_token: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh_token: bool,
}

impl std::fmt::Debug for OidcIr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIr")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("redirect_url", &self.redirect_url)
            .field("logout_path", &self.logout_path)
            .finish_non_exhaustive()
    }
}

/// An external authorization service asked about every request of the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtAuthIr {
    pub service: ExtAuthServiceIr,
    /// Key into the policy's clusters.
    pub cluster: String,
    /// Client request headers sent along (lowercase); empty means the service's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_ext_auth: Vec<String>,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// Retries of a failed check (`backendSettings.retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryIr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExtAuthServiceIr {
    Http {
        /// Prefixed to the request path in the check request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Replaces the request path in the check request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path_override: Option<String>,
        /// Headers of an allowing answer copied onto the upstream request (lowercase).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers_to_backend: Vec<String>,
    },
    Grpc,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuthIr {
    /// htpasswd lines (`user:{SHA}hash`).
    pub htpasswd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_username_header: Option<String>,
}

impl std::fmt::Debug for BasicAuthIr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthIr")
            .field("htpasswd", &"<redacted>")
            .field("forward_username_header", &self.forward_username_header)
            .finish()
    }
}

/// Rules are evaluated in order; the first whose principal and operation match decides; none
/// matching means `default_allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationIr {
    pub default_allow: bool,
    pub rules: Vec<AuthzRuleIr>,
}

/// A rule matches when every listed condition does (CIDRs: any of them; headers: each header
/// with any of its values; methods: any of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRuleIr {
    pub allow: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, Vec<String>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtIr {
    /// Requests without a token pass; a token present must still be valid.
    pub optional: bool,
    /// Any one of them may validate the token.
    pub providers: Vec<JwtProviderIr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtProviderIr {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub jwks: JwksIr,
    /// `(claim, header)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<(String, String)>,
    /// `(header, value prefix)`; empty with no cookies/params means Envoy's default
    /// (`Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<(String, Option<String>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum JwksIr {
    /// The JWKS document itself.
    Local(String),
    /// A URI Envoy fetches the JWKS from, through `cluster` (one of the policy's clusters).
    Remote {
        uri: String,
        cluster: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_duration_ms: Option<u64>,
        /// Retries of a failed fetch (`backendSettings.retry`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<RetryIr>,
        /// How long one fetch may take (`backendSettings.timeout.http.requestTimeout`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

/// How the request path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PathMatchIr {
    /// The whole path equals the value.
    Exact(String),
    /// Element-wise prefix: `/foo` matches `/foo` and `/foo/bar` but not `/foobar` (Envoy's
    /// `path_separated_prefix`, except `/` which matches everything). Trailing slashes are
    /// already stripped, so the value is either `/` or has no trailing slash.
    Prefix(String),
    /// RE2 regular expression over the whole path (validated with the `regex` crate).
    Regex(String),
}

/// How a header or query parameter value is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum StringMatchIr {
    Exact(String),
    Regex(String),
}

/// A request header condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatchIr {
    /// Lowercase header name.
    pub name: String,
    #[serde(flatten)]
    pub value: StringMatchIr,
}

/// A query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatchIr {
    pub name: String,
    #[serde(flatten)]
    pub value: StringMatchIr,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteActionIr {
    Forward(ForwardIr),
    Redirect(RedirectIr),
    DirectResponse(DirectResponseIr),
}

/// Weighted load balancing over clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardIr {
    /// Never empty and never a zero weight: zero-weight backendRefs are left out.
    pub backends: Vec<WeightedBackendIr>,
    /// Total weight of invalid backendRefs. Gateway API: "the proportion of requests that
    /// would otherwise have been routed to an invalid backend MUST receive a 500", so the
    /// converter must answer 500 for `invalid_weight / (invalid_weight + Σ weights)` of the
    /// traffic. Zero in the common case.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid_weight: u32,
}

/// One destination of a [`ForwardIr`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedBackendIr {
    /// Key into [`GatewayIr::clusters`], shared by the references to it of one route.
    pub cluster: Arc<str>,
    pub weight: u32,
    /// Header changes applied only when this backend is picked (backendRef-level filters);
    /// boxed, as they are rare and every entry of a split carries the fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Box<HeaderModifierIr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<Box<HeaderModifierIr>>,
}

/// An HTTP redirect answered by Envoy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectIr {
    /// `http` or `https`; `None` keeps the request's scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// `None` keeps the request's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierIr>,
    /// Always resolved per the spec: the explicit port, else 80/443 for an explicit http/https
    /// scheme, else the listener's port. The converter SHOULD leave the port out of `Location`
    /// when it is the default of the resulting scheme (80 for http, 443 for https).
    pub port: u16,
    /// 301, 302 (default), 303, 307 or 308.
    pub status_code: u16,
}

/// A fixed response without contacting any backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectResponseIr {
    /// 500 when no backendRef of the rule is valid (Gateway API), or when an ExtensionRef
    /// filter cannot be resolved (requests that filter would process must get an error).
    pub status: u16,
}

/// Path rewriting shared by redirects and URL rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PathModifierIr {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part matched by the rule's PathPrefix match (always a prefix match: any
    /// other match type makes the rule invalid).
    ReplacePrefixMatch(String),
}

/// Per-route request/response processing, applied in this order: request headers, URL rewrite,
/// mirrors; response headers on the way back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFiltersIr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifierIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifierIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewriteIr>,
    /// Only on forwarding routes: Envoy mirrors from the route action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsIr>,
}

impl RouteFiltersIr {
    /// True when the route needs no processing besides its action.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Header changes, applied set → add → remove as Gateway API orders them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderModifierIr {
    /// Overwrite (or create) the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValueIr>,
    /// Append a value, keeping existing ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValueIr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderValueIr {
    pub name: String,
    pub value: String,
}

/// Rewrite before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewriteIr {
    /// Replacement for the Host/:authority header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierIr>,
}

/// Copy requests to another cluster, ignoring its responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorIr {
    /// Key into [`GatewayIr::clusters`].
    pub cluster: Arc<str>,
    /// Fraction of requests mirrored: `numerator / denominator` (100/100 when unset).
    pub numerator: u32,
    pub denominator: u32,
}

/// CORS policy answered by Envoy's CORS filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsIr {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
}

/// GEP-1742 timeouts in milliseconds; `Some(0)` disables the timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutsIr {
    /// Whole request, client to response (Envoy route `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// One attempt to the backend (Envoy `per_try_timeout`); never above `request_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
}

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIr {
    /// `service/{ns}/{name}/{port}`: derived from the backend's identity only, so two rules
    /// (or two routes) sending to the same Service port share the cluster.
    pub name: String,
    pub source: ClusterSourceIr,
    pub protocol: UpstreamProtocol,
    /// Ready endpoints, sorted and deduplicated. Empty when the Service has none: Envoy then
    /// answers 503, which is what Gateway API recommends for a backend without endpoints.
    pub endpoints: Vec<EndpointIr>,
    /// TLS to the endpoints, from the BackendTLSPolicy targeting the Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<UpstreamTlsIr>>,
    /// Connection settings from a BackendTrafficPolicy. A cluster with settings is a variant
    /// of the backend's plain cluster, named `{plain name}/btp-{hash of the settings}`: routes
    /// under different policies never share one, and the name stays put while the settings do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Box<ClusterSettingsIr>>,
}

/// TLS Envoy originates to a backend (BackendTLSPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTlsIr {
    /// `"{namespace}/{name}"` of the policy.
    pub policy: String,
    /// Sent as SNI; also the name the certificate must carry when `subject_alt_names` is empty.
    pub sni: String,
    pub trust: TrustIr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltNameIr>,
}

/// Which CA certificates a backend's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "pem", rename_all = "snake_case")]
pub enum TrustIr {
    /// The PEM bundle of the policy's `caCertificateRefs`.
    Pem(String),
    /// The proxy's system trust store.
    System,
    /// The policy's CA references cannot be read: no certificate may be trusted.
    Unresolved,
}

/// A name the backend's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum SubjectAltNameIr {
    Hostname(String),
    Uri(String),
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterSourceIr {
    Service {
        namespace: String,
        name: String,
        /// The Service port (not the target port).
        port: u16,
    },
    /// Envoy Gateway's `Backend` kind (`gateway.envoyproxy.io`): its endpoints are in the spec.
    Backend { namespace: String, name: String },
    /// The host of a URI a policy names (a remote JWKS): its one endpoint is set at translation.
    Uri { uri: String },
}

/// Protocol Envoy speaks to the endpoints, from the Service port's `appProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// Cleartext HTTP/2 (`appProtocol: kubernetes.io/h2c`).
    H2c,
    /// HTTP/1.1 expected to carry WebSocket upgrades (`kubernetes.io/ws` or `kubernetes.io/wss`).
    #[serde(rename = "websocket")]
    WebSocket,
    /// Raw TCP (TLSRoute, TCPRoute backends).
    Tcp,
    /// UDP datagrams (UDPRoute backends).
    Udp,
}

/// One ready endpoint. IP endpoints serialise as `{ip, port}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointIr {
    Ip {
        ip: String,
        port: u16,
    },
    /// Resolved by Envoy through DNS (a `Backend`'s `fqdn` endpoint).
    Hostname {
        hostname: String,
        port: u16,
    },
    /// A Unix domain socket (a `Backend`'s `unix` endpoint).
    Unix {
        path: String,
    },
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Serde for `Vec<Arc<T>>` exactly as for `Vec<T>` (serde's own `Arc` support needs its `rc`
/// feature, which would rebuild every crate of the dependency tree for two fields).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        items: &[Arc<T>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|item| &**item))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<Arc<T>>, D::Error> {
        Ok(Vec::<T>::deserialize(deserializer)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }
}

/// What a ClientTrafficPolicy asks of a listener. Settings that Envoy holds per bound port
/// (socket options, listener filters, buffer limits) are taken from the first listener of a
/// port that has a policy; the rest (TLS, HTTP connection manager) apply per listener where
/// Envoy has one filter chain per listener (HTTPS), and per port otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTrafficIr {
    /// `"{namespace}/{name}"` of the policy; names the SDS secret of its client CA.
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_received_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<ConnectionLimitIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_limit_bytes: Option<u32>,
    /// Connections accepted per socket event (`None`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_accept_per_socket_event: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepaliveIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1: Option<Http1Ir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<Http2Ir>,
    /// Serve HTTP/3 over QUIC on the same port (HTTPS listeners).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http3: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfcc: Option<XfccIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestIdIr>,
    /// `Allow`, `RejectRequest` or `DropHeader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_underscores_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathNormalizationIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpIr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// Downstream TLS parameters; versions are Envoy's names (`TLSv1_2`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTlsIr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ciphers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature_algorithms: Vec<String>,
    /// Replaces the listener's default ALPN list when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidationIr>,
}

/// Trusted CAs for client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientValidationIr {
    /// Every referenced `ca.crt`, concatenated in reference order.
    pub ca_pem: String,
    /// Clients without a certificate are let in (one with a certificate must present a valid
    /// one).
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionLimitIr {
    pub max_connections: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_delay_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http1Ir {
    pub enable_trailers: bool,
    pub preserve_header_case: bool,
    /// Accept HTTP/1.0; `Some(host)` also serves requests without Host as if for `host`.
    pub accept_http_10: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_host_for_http_10: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Ir {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_stream_window_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connection_window_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

/// `x-forwarded-client-cert` handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XfccIr {
    /// `Sanitize`, `ForwardOnly`, `AppendForward`, `SanitizeSet`, `AlwaysForwardOnly`.
    pub mode: String,
    /// `Subject`, `Cert`, `Chain`, `DNS`, `URI`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `x-request-id` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestIdIr {
    pub preserve: bool,
    pub generate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathNormalizationIr {
    pub merge_slashes: bool,
    /// `KeepUnchanged`, `RejectRequest`, `UnescapeAndForward`, `UnescapeAndRedirect`.
    pub escaped_slashes_action: String,
}

/// Where the client's address comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientIpIr {
    /// `X-Forwarded-For`, trusting this many hops in front of Envoy.
    XffHops {
        hops: u32,
    },
    /// `X-Forwarded-For`, trusting the hops whose addresses are in these CIDRs.
    XffCidrs {
        cidrs: Vec<String>,
    },
    CustomHeader {
        name: String,
        fail_closed: bool,
    },
}
