//! `eg-operator migrate ingress-nginx`, the pure core: Ingress and IngressClass objects (and the
//! Services and Secrets they reference) in, Gateway API and Envoy Gateway objects plus a report
//! out. No I/O: the command (`crate::migrate_cmd`) reads files or a cluster and writes or applies
//! the result, and golden tests pin this function's output.
//!
//! The shape of the output, and why:
//! - One Gateway per ingress class (named after it, in `Options::gateway_namespace`), with an
//!   HTTP listener per host, an HTTPS listener per TLS host (the Ingress's Secret as
//!   certificateRef, with a ReferenceGrant when the Secret lives in another namespace) and a
//!   hostless `http` listener for host-less rules and default backends (all HTTP routes share
//!   it when per-host listeners would pass Gateway API's 64). Routes may attach from exactly
//!   the namespaces that had Ingresses.
//! - One HTTPRoute per Ingress and host, in the Ingress's namespace, so each Ingress's
//!   policies (SecurityPolicy, BackendTrafficPolicy, named after the Ingress) target only its own
//!   routes, as its annotations did. Routes of TLS hosts attach to the HTTPS listener; with
//!   `ssl-redirect` (ingress-nginx's default) a `-redirect` HTTPRoute answers HTTP with 308.
//! - Canary Ingresses add rules and weighted backendRefs to the main Ingress's route for the
//!   same host and path, as ingress-nginx merges them.
//!
//! Path and rewrite mapping lives in [`paths`], annotations in [`annotations`], the report in
//! [`report`].

pub mod annotations;
pub mod input;
pub mod paths;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use serde_json::{Value, json};

use annotations::{Canary, Parsed, Protocol};
use paths::{PathMatch, Rewrite, map_path};
pub use report::{IngressReport, Item, Report, Status};

/// The controller of IngressClasses served by ingress-nginx.
pub const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Gateway API's limit on `Gateway.spec.listeners`.
const MAX_LISTENERS: usize = 64;
const EG_API: &str = "gateway.envoyproxy.io/v1alpha1";

/// An input object and where it came from (`file:line`, or the cluster).
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub object: T,
    pub source: String,
}

/// What the migration reads.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub ingresses: Vec<Sourced<Ingress>>,
    pub ingress_classes: Vec<IngressClass>,
    /// Services, to resolve named ports.
    pub services: Vec<Service>,
    /// Secrets, to convert `auth-secret`s.
    pub secrets: Vec<Secret>,
}

/// Choices the input does not make.
#[derive(Debug, Clone)]
pub struct Options {
    /// GatewayClass of the generated Gateways.
    pub gateway_class: String,
    /// Namespace of the generated Gateways.
    pub gateway_namespace: String,
    pub http_port: u16,
    pub https_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway_class: "eg".into(),
            gateway_namespace: "default".into(),
            http_port: 80,
            https_port: 443,
        }
    }
}

/// The generated objects (ordered: Gateways, routes, policies, the rest) and the report.
#[derive(Debug, Clone)]
pub struct Migration {
    pub objects: Vec<Value>,
    pub report: Report,
}

impl Migration {
    /// The objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> String {
        self.objects
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// One Ingress being migrated.
struct Prepared<'a> {
    ingress: &'a Ingress,
    namespace: String,
    name: String,
    class: String,
    parsed: Parsed,
    report: IngressReport,
}

impl Prepared<'_> {
    /// Whether the Ingress belongs to another controller's class (reported, not migrated).
    fn foreign(&self) -> bool {
        self.report
            .items
            .iter()
            .any(|it| it.subject == "spec.ingressClassName")
    }
}

/// An HTTPRoute rule under construction.
#[derive(Debug, Clone)]
struct RuleDraft {
    /// Ingress path and path type, for canary merging.
    key: (String, String),
    path: PathMatch,
    headers: Vec<Value>,
    filters: Vec<Value>,
    backends: Vec<Value>,
}

impl RuleDraft {
    fn matches(&self) -> Value {
        let mut m = json!({"path": {"type": self.path.type_name(), "value": self.path.value()}});
        if !self.headers.is_empty() {
            m["headers"] = json!(self.headers);
        }
        json!([m])
    }

    fn render(&self) -> Value {
        let mut r = json!({"matches": self.matches()});
        if !self.filters.is_empty() {
            r["filters"] = json!(self.filters);
        }
        if !self.backends.is_empty() {
            r["backendRefs"] = json!(self.backends);
        }
        r
    }
}

/// An HTTPRoute under construction: one Ingress, one host.
#[derive(Debug)]
struct RouteDraft {
    ingress: usize,
    namespace: String,
    name: String,
    class: String,
    host: Option<String>,
    https: bool,
    redirect_http: bool,
    rules: Vec<RuleDraft>,
}

/// A Gateway under construction: listeners by name.
#[derive(Debug, Default)]
struct GatewayDraft {
    listeners: BTreeMap<String, Value>,
    namespaces: BTreeSet<String>,
    /// TLS host to the Secret (`namespace`, `name`) serving it.
    certificates: BTreeMap<String, (String, String)>,
}

/// Migrates `input`. Total: problems with single objects, fields or annotations end up in the
/// report, never as an error.
pub fn convert(input: &Input, options: &Options) -> Migration {
    let mut prepared = prepare(input);
    let regex_hosts: BTreeSet<Option<String>> = prepared
        .iter()
        .filter(|p| p.parsed.regex && p.parsed.canary.is_none())
        .flat_map(|p| hosts(p.ingress))
        .collect();
    let mut b = Builder {
        input,
        options,
        routes: BTreeMap::new(),
        gateways: BTreeMap::new(),
        grants: BTreeMap::new(),
        objects: Vec::new(),
    };
    // TLS first: like nginx's server blocks, a host is HTTPS for every Ingress naming it once
    // any Ingress of the class has a certificate for it.
    for p in prepared
        .iter_mut()
        .filter(|p| p.parsed.canary.is_none() && !p.foreign())
    {
        b.tls(p);
    }
    for i in 0..prepared.len() {
        if prepared[i].parsed.canary.is_none() {
            b.primary(&mut prepared, i, &regex_hosts);
        }
    }
    for i in 0..prepared.len() {
        if prepared[i].parsed.canary.is_some() {
            b.canary(&mut prepared, i);
        }
    }
    b.default_backends(&mut prepared);
    let objects = b.finish(&mut prepared);
    Migration {
        objects,
        report: Report::new(prepared.into_iter().map(|p| p.report).collect()),
    }
}

fn hosts(ingress: &Ingress) -> Vec<Option<String>> {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .map(|r| r.host.clone().filter(|h| !h.is_empty()))
        .collect()
}

/// Classes, annotations and the report skeleton of every Ingress, ordered by namespace/name.
fn prepare(input: &Input) -> Vec<Prepared<'_>> {
    let default_class = input
        .ingress_classes
        .iter()
        .find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true")
        })
        .and_then(|c| c.metadata.name.clone());
    let mut out: Vec<Prepared<'_>> = Vec::new();
    for sourced in &input.ingresses {
        let ingress = &sourced.object;
        let namespace = ingress
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = ingress.metadata.name.clone().unwrap_or_default();
        let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
        let legacy_class = annotations.get("kubernetes.io/ingress.class");
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.clone())
            .or_else(|| legacy_class.cloned())
            .or_else(|| default_class.clone())
            .unwrap_or_else(|| "nginx".into());
        let mut report = IngressReport {
            namespace: namespace.clone(),
            name: name.clone(),
            source: sourced.source.clone(),
            ingress_class: class.clone(),
            status: Status::Translated,
            resources: Vec::new(),
            items: Vec::new(),
        };
        let controller = input
            .ingress_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class.as_str()))
            .and_then(|c| c.spec.as_ref()?.controller.clone());
        if let Some(controller) = controller.filter(|c| c != NGINX_CONTROLLER) {
            report.items.push(Item::new(
                "spec.ingressClassName",
                Status::NotTranslated,
                format!("IngressClass {class} is served by {controller}, not ingress-nginx"),
            ));
            out.push(Prepared {
                ingress,
                namespace,
                name,
                class,
                parsed: annotations::parse("", "", &BTreeMap::new(), &[]),
                report,
            });
            continue;
        }
        if legacy_class.is_some() {
            report.items.push(Item::new(
                "kubernetes.io/ingress.class",
                Status::Translated,
                format!("selects Gateway {class}"),
            ));
        }
        let parsed = annotations::parse(&namespace, &name, &annotations, &input.secrets);
        report.items.extend(parsed.items.iter().cloned());
        out.push(Prepared {
            ingress,
            namespace,
            name,
            class,
            parsed,
            report,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// A DNS-label-friendly form of a host for object and listener names.
fn slug(host: &str) -> String {
    host.to_lowercase()
        .replace("*.", "wildcard-")
        .replace(['.', '*', '_'], "-")
}

/// Rule index, host, and (path index, path, path type, backend) of each path of one
/// Ingress rule.
type IngressRule = (
    usize,
    Option<String>,
    Vec<(usize, String, String, IngressBackend)>,
);

struct Builder<'a> {
    input: &'a Input,
    options: &'a Options,
    /// By (namespace, name).
    routes: BTreeMap<(String, String), RouteDraft>,
    /// By ingress class.
    gateways: BTreeMap<String, GatewayDraft>,
    /// ReferenceGrants: (target namespace, from kind, from namespace) to target (kind, name).
    grants: BTreeMap<(String, String, String), BTreeSet<(String, String)>>,
    /// Other objects (HTTPRouteFilters, BackendTLSPolicies), with the Ingress (namespace,
    /// name) that needed them.
    objects: Vec<((String, String), Value)>,
}

impl Builder<'_> {
    fn ingress_rules(p: &Prepared<'_>) -> Vec<IngressRule> {
        p.ingress
            .spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .enumerate()
            .map(|(i, rule)| {
                let paths = rule
                    .http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .enumerate()
                    .map(|(j, path)| {
                        (
                            j,
                            path.path.clone().unwrap_or_else(|| "/".into()),
                            path.path_type.clone(),
                            path.backend.clone(),
                        )
                    })
                    .collect();
                (i, rule.host.clone().filter(|h| !h.is_empty()), paths)
            })
            .collect()
    }

    /// The backendRef of an Ingress backend, resolving named ports through the input's Services.
    fn backend_ref(
        &self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> Result<(String, Value), String> {
        if let Some(r) = &backend.resource {
            return Err(format!(
                "resource backend {}/{} has no Gateway API equivalent",
                r.kind, r.name
            ));
        }
        let service = backend
            .service
            .as_ref()
            .ok_or("backend has neither service nor resource")?;
        let port = service.port.as_ref().ok_or("backend service has no port")?;
        let number = match (port.number, port.name.as_deref()) {
            (Some(n), _) => n,
            (None, Some(port_name)) => self
                .input
                .services
                .iter()
                .filter(|s| {
                    s.metadata.name.as_deref() == Some(service.name.as_str())
                        && s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                })
                .flat_map(|s| s.spec.iter().flat_map(|sp| sp.ports.iter().flatten()))
                .find(|p| p.name.as_deref() == Some(port_name))
                .map(|p| p.port)
                .ok_or_else(|| {
                    format!(
                        "port {port_name:?} of Service {namespace}/{} is not in the input; Gateway API needs the port number",
                        service.name
                    )
                })?,
            (None, None) => return Err("backend service port has neither number nor name".into()),
        };
        Ok((
            service.name.clone(),
            json!({"name": service.name, "port": number}),
        ))
    }

    fn gateway(&mut self, class: &str) -> &mut GatewayDraft {
        self.gateways.entry(class.to_owned()).or_default()
    }

    /// Classes whose Gateway would exceed Gateway API's 64 listeners with one HTTP listener per
    /// host: their routes share the hostless `http` listener instead (routes still carry their
    /// hostnames, so routing is the same; only per-host listener isolation is lost).
    fn classes_over_listener_limit(
        &self,
        drafts: &BTreeMap<(String, String), RouteDraft>,
    ) -> BTreeSet<String> {
        let mut hosts: BTreeMap<&str, BTreeSet<Option<&str>>> = BTreeMap::new();
        for d in drafts.values().filter(|d| !d.rules.is_empty()) {
            hosts.entry(&d.class).or_default().insert(d.host.as_deref());
        }
        hosts
            .into_iter()
            .filter(|(class, hosts)| {
                let https = self
                    .gateways
                    .get(*class)
                    .map_or(0, |g| g.certificates.len());
                hosts.len() + https > MAX_LISTENERS
            })
            .map(|(class, _)| class.to_owned())
            .collect()
    }

    fn http_listener(&mut self, class: &str, host: Option<&str>) -> String {
        let name = host.map_or_else(|| "http".to_owned(), |h| format!("http-{}", slug(h)));
        let mut listener =
            json!({"name": name, "protocol": "HTTP", "port": self.options.http_port});
        if let Some(h) = host {
            listener["hostname"] = json!(h);
        }
        self.gateway(class).listeners.insert(name.clone(), listener);
        name
    }

    /// Registers the TLS hosts of an Ingress on its Gateway; reports each `spec.tls` entry.
    fn tls(&mut self, p: &mut Prepared<'_>) {
        let tls = p.ingress.spec.iter().flat_map(|s| s.tls.iter().flatten());
        for (k, entry) in tls.enumerate() {
            let subject = format!("spec.tls[{k}]");
            let Some(secret) = entry.secret_name.clone().filter(|s| !s.is_empty()) else {
                p.report.items.push(Item::new(
                    subject,
                    Status::NotTranslated,
                    "no secretName: nginx's default certificate has no Gateway equivalent; add a Secret",
                ));
                continue;
            };
            let mut notes = Vec::new();
            for host in entry.hosts.iter().flatten() {
                let https = self.options.https_port;
                let gw = self.gateway(&p.class);
                let wanted = (p.namespace.clone(), secret.clone());
                match gw.certificates.get(host) {
                    Some(existing) if *existing != wanted => {
                        notes.push(format!(
                            "{host} already uses Secret {}/{}",
                            existing.0, existing.1
                        ));
                        continue;
                    }
                    _ => {}
                }
                gw.certificates.insert(host.clone(), wanted);
                let name = format!("https-{}", slug(host));
                gw.listeners.insert(
                    name.clone(),
                    json!({
                        "name": name, "protocol": "HTTPS", "port": https, "hostname": host,
                        "tls": {"mode": "Terminate", "certificateRefs": [{
                            "group": "", "kind": "Secret", "name": secret, "namespace": p.namespace,
                        }]},
                    }),
                );
            }
            if p.namespace != self.options.gateway_namespace {
                self.grants
                    .entry((
                        p.namespace.clone(),
                        "Gateway".into(),
                        self.options.gateway_namespace.clone(),
                    ))
                    .or_default()
                    .insert(("Secret".into(), secret.clone()));
            }
            let hosts = entry.hosts.clone().unwrap_or_default().join(", ");
            p.report.items.push(if notes.is_empty() {
                Item::new(
                    subject,
                    Status::Translated,
                    format!("HTTPS listeners for {hosts} with Secret {secret}"),
                )
            } else {
                Item::new(
                    subject,
                    Status::Partial,
                    format!("first Ingress wins: {}", notes.join("; ")),
                )
            });
        }
    }

    /// The rule for one Ingress path, or why there is none.
    fn rule(
        &mut self,
        p: &Prepared<'_>,
        regex: bool,
        path: &str,
        path_type: &str,
        backend: &IngressBackend,
    ) -> Result<(RuleDraft, Status, String), String> {
        let mapped = map_path(path, path_type, regex, p.parsed.rewrite_target.as_deref())
            .map_err(|e| e.to_string())?;
        let mut filters = Vec::new();
        let mut backends = Vec::new();
        if let Some(redirect) = &p.parsed.redirect {
            filters.push(json!({"type": "RequestRedirect", "requestRedirect": redirect.filter}));
        } else {
            let (service, backend) = self.backend_ref(&p.namespace, backend)?;
            self.backend_tls(p, &service);
            backends.push(backend);
            match &mapped.rewrite {
                Rewrite::None => {}
                Rewrite::Full(v) => filters.push(json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": v}}})),
                Rewrite::Prefix(v) => filters.push(json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": v}}})),
                Rewrite::Regex { pattern, substitution } => {
                    let name = format!("{}-rewrite-{}", p.name, self.objects.len());
                    self.objects.push((owner(p), json!({
                        "apiVersion": EG_API, "kind": "HTTPRouteFilter",
                        "metadata": {"name": name, "namespace": p.namespace},
                        "spec": {"urlRewrite": {"path": {"type": "ReplaceRegexMatch", "replaceRegexMatch": {"pattern": pattern, "substitution": substitution}}}},
                    })));
                    filters.push(json!({"type": "ExtensionRef", "extensionRef": {"group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": name}}));
                }
            }
            if let Some(cors) = &p.parsed.cors {
                filters.push(json!({"type": "CORS", "cors": cors}));
            }
        }
        Ok((
            RuleDraft {
                key: (path.to_owned(), path_type.to_owned()),
                path: mapped.matched,
                headers: Vec::new(),
                filters,
                backends,
            },
            mapped.status,
            mapped.detail,
        ))
    }

    /// A BackendTLSPolicy for `service` when the Ingress speaks TLS to its backends.
    fn backend_tls(&mut self, p: &Prepared<'_>, service: &str) {
        if !matches!(p.parsed.protocol, Protocol::Https | Protocol::Grpcs) {
            return;
        }
        let name = format!("{service}-backend-tls");
        let exists = self.objects.iter().any(|(_, o)| {
            o["kind"] == "BackendTLSPolicy"
                && o["metadata"]["name"] == name.as_str()
                && o["metadata"]["namespace"] == p.namespace.as_str()
        });
        if !exists {
            self.objects.push((owner(p), json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
                "metadata": {"name": name, "namespace": p.namespace},
                "spec": {
                    "targetRefs": [{"group": "", "kind": "Service", "name": service}],
                    "validation": {"hostname": format!("{service}.{}.svc", p.namespace), "wellKnownCACertificates": "System"},
                },
            })));
        }
    }

    fn primary(
        &mut self,
        prepared: &mut [Prepared<'_>],
        i: usize,
        regex_hosts: &BTreeSet<Option<String>>,
    ) {
        let p = &mut prepared[i];
        if p.foreign() {
            return;
        }
        for (r, host, paths) in Self::ingress_rules(p) {
            let route_name = host
                .as_deref()
                .map_or_else(|| p.name.clone(), |h| format!("{}-{}", p.name, slug(h)));
            let key = (p.namespace.clone(), route_name.clone());
            let https = host
                .as_ref()
                .is_some_and(|h| self.gateway(&p.class).certificates.contains_key(h));
            let redirect_http = (https && p.parsed.ssl_redirect) || p.parsed.force_ssl_redirect;
            let regex = regex_hosts.contains(&host);
            if regex && !p.parsed.regex {
                p.report.items.push(Item::new(
                    format!("spec.rules[{r}]"),
                    Status::Translated,
                    "paths read as regular expressions: another Ingress of this host sets use-regex or rewrite-target, as in ingress-nginx",
                ));
            }
            let mut rules = Vec::new();
            if let Some(root) = &p.parsed.app_root {
                rules.push(RuleDraft {
                    key: (String::new(), String::new()),
                    path: PathMatch::Exact("/".into()),
                    headers: Vec::new(),
                    filters: vec![json!({"type": "RequestRedirect", "requestRedirect": {"statusCode": 302, "path": {"type": "ReplaceFullPath", "replaceFullPath": root}}})],
                    backends: Vec::new(),
                });
            }
            for (j, path, path_type, backend) in paths {
                let subject = format!("spec.rules[{r}].http.paths[{j}]");
                match self.rule(p, regex, &path, &path_type, &backend) {
                    Ok((rule, status, detail)) => {
                        p.report.items.push(Item::new(subject, status, detail));
                        rules.push(rule);
                    }
                    Err(why) => p
                        .report
                        .items
                        .push(Item::new(subject, Status::NotTranslated, why)),
                }
            }
            let class = p.class.clone();
            let draft = self.routes.entry(key).or_insert_with(|| RouteDraft {
                ingress: i,
                namespace: p.namespace.clone(),
                name: route_name,
                class,
                host: host.clone(),
                https,
                redirect_http,
                rules: Vec::new(),
            });
            draft.rules.extend(rules);
        }
    }

    fn canary(&mut self, prepared: &mut [Prepared<'_>], i: usize) {
        let p = &mut prepared[i];
        let Some(canary) = p.parsed.canary.clone() else {
            return;
        };
        for (r, host, paths) in Self::ingress_rules(p) {
            for (j, path, path_type, backend) in paths {
                let subject = format!("spec.rules[{r}].http.paths[{j}]");
                let outcome =
                    self.canary_path(p, &canary, host.as_ref(), &path, &path_type, &backend);
                p.report.items.push(match outcome {
                    Ok(detail) => Item::new(subject, Status::Translated, detail),
                    Err(why) => Item::new(subject, Status::NotTranslated, why),
                });
            }
        }
    }

    fn canary_path(
        &mut self,
        p: &Prepared<'_>,
        canary: &Canary,
        host: Option<&String>,
        path: &str,
        path_type: &str,
        backend: &IngressBackend,
    ) -> Result<String, String> {
        let (_, mut canary_ref) = self.backend_ref(&p.namespace, backend)?;
        let key = (path.to_owned(), path_type.to_owned());
        let route = self
            .routes
            .values_mut()
            .find(|r| r.host.as_ref() == host && r.rules.iter().any(|rule| rule.key == key))
            .ok_or_else(|| {
                format!(
                    "no main Ingress serves host {} path {path} ({path_type}); ingress-nginx ignores this canary too",
                    host.map_or("*", |h| h.as_str())
                )
            })?;
        if route.namespace != p.namespace {
            canary_ref["namespace"] = json!(p.namespace);
            let service = canary_ref["name"].as_str().unwrap_or_default().to_owned();
            self.grants
                .entry((
                    p.namespace.clone(),
                    "HTTPRoute".into(),
                    route.namespace.clone(),
                ))
                .or_default()
                .insert(("Service".into(), service));
        }
        let index = route
            .rules
            .iter()
            .position(|rule| rule.key == key)
            .unwrap_or(0);
        let main = route.rules[index].clone();
        let only = |backend: &Value, header: Value| {
            let mut rule = main.clone();
            rule.headers.push(header);
            rule.backends = vec![backend.clone()];
            rule
        };
        let exact =
            |name: &str, value: &str| json!({"type": "Exact", "name": name, "value": value});
        let mut extra = Vec::new();
        let mut what = Vec::new();
        let main_ref = main.backends.first().cloned().unwrap_or(Value::Null);
        if let Some(h) = &canary.header {
            if let Some(v) = &canary.header_value {
                extra.push(only(&canary_ref, exact(h, v)));
            } else if let Some(pattern) = &canary.header_pattern {
                extra.push(only(
                    &canary_ref,
                    json!({"type": "RegularExpression", "name": h, "value": pattern}),
                ));
            } else {
                extra.push(only(&canary_ref, exact(h, "always")));
                extra.push(only(&main_ref, exact(h, "never")));
            }
            what.push(format!("header {h}"));
        }
        if let Some(c) = &canary.cookie {
            let cookie = |v: &str| json!({"type": "RegularExpression", "name": "Cookie", "value": format!("(.*;\\s*)?{}={v}(;.*)?", regex::escape(c))});
            extra.push(only(&canary_ref, cookie("always")));
            extra.push(only(&main_ref, cookie("never")));
            what.push(format!("cookie {c}"));
        }
        if let Some((weight, total)) = canary.weight {
            let rule = &mut route.rules[index];
            if let Some(first) = rule.backends.first_mut() {
                first["weight"] = json!(total - weight);
            }
            let mut weighted = canary_ref.clone();
            weighted["weight"] = json!(weight);
            rule.backends.push(weighted);
            what.push(format!("weight {weight}/{total}"));
        }
        let route_name = format!("HTTPRoute {}/{}", route.namespace, route.name);
        for (n, rule) in extra.into_iter().enumerate() {
            route.rules.insert(index + n, rule);
        }
        Ok(format!(
            "canary by {} in {route_name}",
            if what.is_empty() {
                "nothing (no canary-* rule set)".to_owned()
            } else {
                what.join(", ")
            }
        ))
    }

    /// `spec.defaultBackend`: a catch-all route on the hostless listener.
    fn default_backends(&mut self, prepared: &mut [Prepared<'_>]) {
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in prepared.iter_mut().enumerate() {
            let Some(backend) = p
                .ingress
                .spec
                .as_ref()
                .and_then(|s| s.default_backend.clone())
            else {
                continue;
            };
            let subject = "spec.defaultBackend";
            if p.parsed.canary.is_some() || p.foreign() {
                p.report.items.push(Item::new(
                    subject,
                    Status::NotTranslated,
                    "ignored on canary and non-nginx Ingresses",
                ));
                continue;
            }
            if let Some(first) = taken.get(&p.class) {
                p.report.items.push(Item::new(
                    subject,
                    Status::NotTranslated,
                    format!(
                        "Ingress {first} already provides the default backend of class {}",
                        p.class
                    ),
                ));
                continue;
            }
            match self.backend_ref(&p.namespace, &backend) {
                Ok((_, backend)) => {
                    taken.insert(p.class.clone(), format!("{}/{}", p.namespace, p.name));
                    let name = format!("{}-default-backend", p.name);
                    self.routes.insert(
                        (p.namespace.clone(), name.clone()),
                        RouteDraft {
                            ingress: i,
                            namespace: p.namespace.clone(),
                            name,
                            class: p.class.clone(),
                            host: None,
                            https: false,
                            redirect_http: false,
                            rules: vec![RuleDraft {
                                key: (String::new(), String::new()),
                                path: PathMatch::Prefix("/".into()),
                                headers: Vec::new(),
                                filters: Vec::new(),
                                backends: vec![backend],
                            }],
                        },
                    );
                    p.report.items.push(Item::new(
                        subject,
                        Status::Translated,
                        "catch-all HTTPRoute on the hostless http listener",
                    ));
                }
                Err(why) => p
                    .report
                    .items
                    .push(Item::new(subject, Status::NotTranslated, why)),
            }
        }
    }

    fn parent(&self, class: &str, section: &str) -> Value {
        json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": self.options.gateway_namespace, "name": class, "sectionName": section})
    }

    /// Renders every object, recording in each Ingress's report what it became.
    fn finish(mut self, prepared: &mut [Prepared<'_>]) -> Vec<Value> {
        let mut routes = Vec::new();
        let mut route_names: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let drafts = std::mem::take(&mut self.routes);
        let shared_http = self.classes_over_listener_limit(&drafts);
        for draft in drafts.into_values() {
            if draft.rules.is_empty() {
                continue;
            }
            let host = draft
                .host
                .as_deref()
                .filter(|_| !shared_http.contains(&draft.class));
            let http = self.http_listener(&draft.class, host);
            self.gateway(&draft.class)
                .namespaces
                .insert(draft.namespace.clone());
            let hostnames = draft.host.iter().cloned().collect::<Vec<_>>();
            let mut parents = Vec::new();
            if let Some(h) = draft.host.as_ref().filter(|_| draft.https) {
                parents.push(self.parent(&draft.class, &format!("https-{}", slug(h))));
            }
            if !draft.redirect_http {
                parents.push(self.parent(&draft.class, &http));
            } else {
                let mut redirect = json!({"scheme": "https", "statusCode": 308});
                if self.options.https_port != 443 {
                    redirect["port"] = json!(self.options.https_port);
                }
                // One redirect rule per path: header-matching (canary) rules redirect the same.
                let mut seen = BTreeSet::new();
                let rules: Vec<Value> = draft
                    .rules
                    .iter()
                    .filter(|r| seen.insert(r.path.clone()))
                    .map(|r| {
                        let path = RuleDraft { headers: Vec::new(), ..r.clone() };
                        json!({"matches": path.matches(), "filters": [{"type": "RequestRedirect", "requestRedirect": redirect}]})
                    })
                    .collect();
                let name = format!("{}-redirect", draft.name);
                route_names
                    .entry(draft.ingress)
                    .or_default()
                    .push(format!("HTTPRoute {}/{name}", draft.namespace));
                routes.push(route(
                    &name,
                    &draft.namespace,
                    vec![self.parent(&draft.class, &http)],
                    &hostnames,
                    rules,
                ));
            }
            if parents.is_empty() {
                continue;
            }
            let rules: Vec<Value> = draft.rules.iter().map(RuleDraft::render).collect();
            route_names
                .entry(draft.ingress)
                .or_default()
                .push(format!("HTTPRoute {}/{}", draft.namespace, draft.name));
            routes.push(route(
                &draft.name,
                &draft.namespace,
                parents,
                &hostnames,
                rules,
            ));
            prepared[draft.ingress].report.resources.push(format!(
                "Gateway {}/{}",
                self.options.gateway_namespace, draft.class
            ));
        }
        let mut out = Vec::new();
        for (class, gw) in &self.gateways {
            let allowed = if gw
                .namespaces
                .iter()
                .all(|n| *n == self.options.gateway_namespace)
            {
                json!({"namespaces": {"from": "Same"}})
            } else {
                json!({"namespaces": {"from": "Selector", "selector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": gw.namespaces}]}}})
            };
            let listeners: Vec<Value> = gw
                .listeners
                .values()
                .map(|l| {
                    let mut l = l.clone();
                    l["allowedRoutes"] = allowed.clone();
                    l
                })
                .collect();
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": class, "namespace": self.options.gateway_namespace},
                "spec": {"gatewayClassName": self.options.gateway_class, "listeners": listeners},
            }));
        }
        out.extend(routes);
        for (i, p) in prepared.iter_mut().enumerate() {
            let names = route_names.remove(&i).unwrap_or_default();
            let targets: Vec<Value> = names
                .iter()
                .filter(|n| !n.ends_with("-redirect"))
                .map(|n| json!({"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": n.rsplit('/').next().unwrap_or_default()}))
                .collect();
            p.report.resources.extend(names);
            for (kind, spec) in [
                ("SecurityPolicy", &p.parsed.security),
                ("BackendTrafficPolicy", &p.parsed.traffic),
            ] {
                if spec.is_empty() {
                    continue;
                }
                if targets.is_empty() {
                    p.report.items.push(Item::new(
                        kind,
                        Status::NotTranslated,
                        "the Ingress produced no HTTPRoute to attach the policy to",
                    ));
                    continue;
                }
                let mut spec = spec.clone();
                spec.insert("targetRefs".into(), json!(targets));
                p.report
                    .resources
                    .push(format!("{kind} {}/{}", p.namespace, p.name));
                out.push(json!({"apiVersion": EG_API, "kind": kind, "metadata": {"name": p.name, "namespace": p.namespace}, "spec": spec}));
            }
            for extra in &p.parsed.extra {
                p.report.resources.push(describe(extra));
                out.push(extra.clone());
            }
        }
        for (owner, object) in std::mem::take(&mut self.objects) {
            if let Some(p) = prepared
                .iter_mut()
                .find(|p| (&p.namespace, &p.name) == (&owner.0, &owner.1))
            {
                p.report.resources.push(describe(&object));
            }
            out.push(object);
        }
        for ((namespace, from_kind, from_namespace), targets) in &self.grants {
            let to: Vec<Value> = targets
                .iter()
                .map(|(kind, name)| json!({"group": "", "kind": kind, "name": name}))
                .collect();
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": format!("from-{}-{}", from_kind.to_lowercase(), from_namespace), "namespace": namespace},
                "spec": {"from": [{"group": GATEWAY_GROUP, "kind": from_kind, "namespace": from_namespace}], "to": to},
            }));
        }
        out
    }
}

fn route(
    name: &str,
    namespace: &str,
    parents: Vec<Value>,
    hostnames: &[String],
    rules: Vec<Value>,
) -> Value {
    let mut spec = json!({"parentRefs": parents, "rules": rules});
    if !hostnames.is_empty() {
        spec["hostnames"] = json!(hostnames);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn owner(p: &Prepared<'_>) -> (String, String) {
    (p.namespace.clone(), p.name.clone())
}

/// `Kind namespace/name` of a generated object.
fn describe(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(host: &str) -> Sourced<Ingress> {
        let object = serde_json::from_value(json!({
            "metadata": {"name": slug(host), "namespace": "apps"},
            "spec": {"rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            ]}}]},
        }))
        .expect("valid Ingress");
        Sourced {
            object,
            source: "test".into(),
        }
    }

    fn listeners(m: &Migration) -> Vec<String> {
        m.objects
            .iter()
            .filter(|o| o["kind"] == "Gateway")
            .flat_map(|g| {
                g["spec"]["listeners"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|l| l["name"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn many_hosts_share_one_http_listener_to_stay_within_64() {
        let few = Input {
            ingresses: (0..10)
                .map(|i| ingress(&format!("h{i}.example.com")))
                .collect(),
            ..Input::default()
        };
        assert_eq!(listeners(&convert(&few, &Options::default())).len(), 10);
        let many = Input {
            ingresses: (0..70)
                .map(|i| ingress(&format!("h{i}.example.com")))
                .collect(),
            ..Input::default()
        };
        let m = convert(&many, &Options::default());
        assert_eq!(listeners(&m), ["http"]);
        let routes: Vec<&Value> = m
            .objects
            .iter()
            .filter(|o| o["kind"] == "HTTPRoute")
            .collect();
        assert_eq!(routes.len(), 70);
        assert!(routes.iter().all(|r| {
            r["spec"]["parentRefs"][0]["sectionName"] == "http"
                && r["spec"]["hostnames"]
                    .as_array()
                    .is_some_and(|h| h.len() == 1)
        }));
    }
}
