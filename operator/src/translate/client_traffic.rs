//! Envoy Gateway's ClientTrafficPolicy: which listeners each one governs, what it asks of
//! them (as [`ClientTrafficIr`] on the listener IR), and its status.
//!
//! Attachment reuses the other policies' machinery (`policies`): targets from `targetRef`,
//! `targetRefs` and `targetSelectors`, the oldest policy on one target wins and the others are
//! `Conflicted`. A ClientTrafficPolicy targets Gateways and their listeners only (anything
//! else is `TargetNotFound`, as no such Gateway exists); a listener-level (`sectionName`) policy
//! governs its listener instead of the Gateway-level one, which then reports `Overridden`
//! naming the listeners it lost.
//!
//! A policy with a field not translated yet, an unreadable CA, or a bad value (CIDR, duration,
//! quantity, enum) is `Accepted=False` reason `Invalid` and changes no listener: a listener
//! that skipped client certificate validation would let anyone in.

use std::collections::BTreeMap;

use eg_crds::client_traffic::{ClientTrafficPolicy, ClientTrafficPolicySpec};
use eg_crds::policies::unsupported_fields;
use gateway_api::apis::standard::gateways::Gateway;
use serde_json::Value;

use super::conditions::condition;
use super::index::{Index, secret_value};
use super::ir::{
    ClientIpIr, ClientTlsIr, ClientTrafficIr, ClientValidationIr, ConnectionLimitIr, GatewayIr,
    Http1Ir, Http2Ir, PathNormalizationIr, RequestIdIr, TcpKeepaliveIr, XfccIr,
};
use super::policies::{
    Attachments, PolicyError, PolicyStatus, RouteParents, Target, Targetable, attach, opt_millis,
    parse_cidr, reason, refuse_unsupported,
};

const KIND: &str = "ClientTrafficPolicy";

/// A policy's IR, plus what depends on the listener it lands on.
#[derive(Debug)]
pub(super) struct ClientPolicy {
    ir: ClientTrafficIr,
    /// `http1.http10.useDefaultHost`: requests without Host are served as if for the
    /// listener's hostname.
    http10_default_host: bool,
}

/// Every ClientTrafficPolicy of a snapshot, attached.
#[derive(Debug)]
pub(super) struct ClientPolicies {
    attachments: Attachments<ClientPolicy>,
}

impl ClientPolicies {
    pub fn new(index: &Index<'_>, gateways: &[Gateway], policies: &[ClientTrafficPolicy]) -> Self {
        let targetable = Targetable {
            gateways,
            routes: &[],
        };
        Self {
            attachments: attach(
                KIND,
                policies
                    .iter()
                    .map(|p| {
                        let ir =
                            port_shared_with_others(gateways, p).and_then(|()| client_ir(index, p));
                        (&p.metadata, &p.spec.targets, ir)
                    })
                    .collect(),
                &targetable,
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.attachments.policies.is_empty()
    }

    /// Sets `client` on every listener of `gateway` a policy governs.
    pub fn apply(&self, gateway: &mut GatewayIr) {
        for listener in &mut gateway.listeners {
            let chain = [
                Target::Listener(gateway.name.clone(), listener.name.clone()),
                Target::Gateway(gateway.name.clone()),
            ];
            listener.client = self.attachments.winner(&chain).map(|(_, policy)| {
                let mut ir = policy.ir.clone();
                if policy.http10_default_host
                    && let Some(http1) = ir.http1.as_mut()
                {
                    http1.default_host_for_http_10 = listener.hostname.clone();
                }
                ir
            });
        }
    }

    /// Statuses by `"{namespace}/{name}"`: one ancestor per Gateway (or listener) targeted.
    pub fn statuses(
        &self,
        controller_name: &str,
    ) -> (BTreeMap<String, PolicyStatus>, Vec<super::Diagnostic>) {
        let mut diagnostics = Vec::new();
        let mut out =
            self.attachments
                .statuses(&RouteParents::new(), controller_name, &mut diagnostics);
        for (key, status) in &mut out {
            let Some(policy) = self.attachments.policies.get(key) else {
                continue;
            };
            for ancestor in &mut status.ancestors {
                let gateway = format!(
                    "{}/{}",
                    ancestor.ancestor_ref.namespace, ancestor.ancestor_ref.name
                );
                let holds_gateway = ancestor.ancestor_ref.section_name.is_none()
                    && policy.targets.contains(&Target::Gateway(gateway.clone()))
                    && self
                        .attachments
                        .winners
                        .get(&Target::Gateway(gateway.clone()))
                        == Some(key);
                if !holds_gateway {
                    continue;
                }
                let listeners: Vec<&str> = self
                    .attachments
                    .winners
                    .iter()
                    .filter_map(|(target, holder)| match target {
                        Target::Listener(g, l) if *g == gateway && holder != key => {
                            Some(l.as_str())
                        }
                        _ => None,
                    })
                    .collect();
                if listeners.is_empty() {
                    continue;
                }
                let generation = ancestor
                    .conditions
                    .first()
                    .and_then(|c| c.observed_generation);
                ancestor.conditions.push(condition(
                    reason::OVERRIDDEN,
                    true,
                    reason::OVERRIDDEN,
                    format!(
                        "This policy is being overridden by other ClientTrafficPolicies for these listeners: [{}]",
                        listeners.join(", ")
                    ),
                    generation,
                ));
            }
        }
        (out, diagnostics)
    }
}

/// Refuses a policy that names a plain HTTP listener whose port other HTTP listeners of the
/// Gateway share, unless it names them all: those listeners are one Envoy listener and one
/// connection manager, so the policy would govern the others too. (Upstream refuses it too.)
/// HTTPS listeners on one port have a filter chain each and are not concerned.
fn port_shared_with_others(
    gateways: &[Gateway],
    policy: &ClientTrafficPolicy,
) -> Result<(), PolicyError> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let targets = &policy.spec.targets;
    let refs = targets
        .target_ref
        .iter()
        .map(|r| ("spec.targetRef".to_owned(), r))
        .chain(
            targets
                .target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)),
        );
    let named = |gateway: &str, listener: &str| {
        targets
            .target_ref
            .iter()
            .chain(&targets.target_refs)
            .any(|r| {
                r.kind == "Gateway"
                    && r.name == gateway
                    && r.section_name.as_deref() == Some(listener)
            })
    };
    for (field, r) in refs {
        let (Some(section), "Gateway") = (&r.section_name, r.kind.as_str()) else {
            continue;
        };
        let Some(gateway) = gateways.iter().find(|g| {
            g.metadata.namespace.as_deref() == Some(namespace)
                && g.metadata.name.as_deref() == Some(&r.name)
        }) else {
            continue;
        };
        let listeners = &gateway.spec.listeners;
        let Some(target) = listeners.iter().find(|l| &l.name == section) else {
            continue;
        };
        if target.protocol != "HTTP" {
            continue;
        }
        let others: Vec<&str> = listeners
            .iter()
            .filter(|l| {
                l.name != target.name
                    && l.port == target.port
                    && l.protocol == "HTTP"
                    && !named(&r.name, &l.name)
            })
            .map(|l| l.name.as_str())
            .collect();
        if !others.is_empty() {
            return Err(invalid(
                &format!("{field}.sectionName"),
                section.clone(),
                format!(
                    "listeners {} of Gateway {namespace}/{} share port {} over plain HTTP, where \
                     one Envoy listener serves them all, so the policy would govern them too; \
                     target the Gateway or each of them",
                    others.join(", "),
                    r.name,
                    target.port
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(field: &str, value: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::InvalidValue {
        field: field.to_owned(),
        value: value.into(),
        problem: problem.into(),
    }
}

/// Names of the fields of `spec` this project does not translate.
fn unsupported(spec: &ClientTrafficPolicySpec) -> Vec<String> {
    let mut found = unsupported_fields("spec", &spec.unsupported);
    if let Some(tls) = &spec.tls {
        found.extend(unsupported_fields("spec.tls", &tls.unsupported));
        if let Some(v) = &tls.client_validation {
            found.extend(unsupported_fields(
                "spec.tls.clientValidation",
                &v.unsupported,
            ));
        }
    }
    if let Some(t) = &spec.timeout {
        if let Some(h) = &t.http {
            found.extend(unsupported_fields("spec.timeout.http", &h.unsupported));
        }
        if let Some(tcp) = &t.tcp {
            found.extend(unsupported_fields("spec.timeout.tcp", &tcp.unsupported));
        }
    }
    if let Some(c) = &spec.connection {
        found.extend(unsupported_fields("spec.connection", &c.unsupported));
        if let Some(l) = &c.connection_limit {
            found.extend(unsupported_fields(
                "spec.connection.connectionLimit",
                &l.unsupported,
            ));
        }
    }
    if let Some(h) = &spec.http1 {
        found.extend(unsupported_fields("spec.http1", &h.unsupported));
    }
    if let Some(h) = &spec.http2 {
        found.extend(unsupported_fields("spec.http2", &h.unsupported));
    }
    if let Some(h) = &spec.http3 {
        found.extend(unsupported_fields("spec.http3", h));
    }
    if let Some(h) = &spec.headers {
        found.extend(unsupported_fields("spec.headers", &h.unsupported));
    }
    if let Some(p) = &spec.path {
        found.extend(unsupported_fields("spec.path", &p.unsupported));
    }
    if let Some(c) = &spec.client_ip_detection {
        found.extend(unsupported_fields("spec.clientIPDetection", &c.unsupported));
        if let Some(x) = &c.x_forwarded_for {
            found.extend(unsupported_fields(
                "spec.clientIPDetection.xForwardedFor",
                &x.unsupported,
            ));
        }
    }
    found
}

/// The IR of a ClientTrafficPolicy, or why it cannot be applied.
fn client_ir(index: &Index<'_>, policy: &ClientTrafficPolicy) -> Result<ClientPolicy, PolicyError> {
    let spec = &policy.spec;
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    refuse_unsupported(unsupported(spec))?;

    let tls = spec
        .tls
        .as_ref()
        .map(|t| -> Result<ClientTlsIr, PolicyError> {
            if let Some(alpn) = &t.alpn_protocols
                && let Some(bad) = alpn
                    .iter()
                    .find(|p| !matches!(p.as_str(), "h2" | "http/1.1" | "http/1.0"))
            {
                return Err(invalid(
                    "spec.tls.alpnProtocols",
                    bad.as_str(),
                    "must be h2, http/1.1 or http/1.0",
                ));
            }
            let min_version = tls_version("spec.tls.minVersion", t.min_version.as_deref())?;
            let max_version = tls_version("spec.tls.maxVersion", t.max_version.as_deref())?;
            if let (Some(min), Some(max)) = (&min_version, &max_version)
                && min > max
            {
                return Err(invalid(
                    "spec.tls.minVersion",
                    t.min_version.clone().unwrap_or_default(),
                    "is above maxVersion",
                ));
            }
            let client_validation = t
                .client_validation
                .as_ref()
                .map(|v| -> Result<ClientValidationIr, PolicyError> {
                    if v.ca_certificate_refs.is_empty() {
                        return Err(invalid(
                            "spec.tls.clientValidation.caCertificateRefs",
                            "",
                            "at least one CA certificate reference is required",
                        ));
                    }
                    let mut ca_pem = String::new();
                    for (i, r) in v.ca_certificate_refs.iter().enumerate() {
                        let field = format!("spec.tls.clientValidation.caCertificateRefs[{i}]");
                        let pem = ca_certificate(index, namespace, &field, r)?;
                        ca_pem.push_str(pem.trim_end());
                        ca_pem.push('\n');
                    }
                    Ok(ClientValidationIr {
                        ca_pem,
                        optional: v.optional.unwrap_or(false),
                    })
                })
                .transpose()?;
            Ok(ClientTlsIr {
                min_version,
                max_version,
                ciphers: t.ciphers.clone(),
                ecdh_curves: t.ecdh_curves.clone(),
                signature_algorithms: t.signature_algorithms.clone(),
                alpn_protocols: t.alpn_protocols.clone(),
                client_validation,
            })
        })
        .transpose()?;

    let http_timeout = spec.timeout.as_ref().and_then(|t| t.http.as_ref());
    let tcp_timeout = spec.timeout.as_ref().and_then(|t| t.tcp.as_ref());
    let connection = spec.connection.as_ref();
    let connection_limit = connection
        .and_then(|c| c.connection_limit.as_ref())
        .map(|l| -> Result<ConnectionLimitIr, PolicyError> {
            if l.value == 0 {
                return Err(invalid(
                    "spec.connection.connectionLimit.value",
                    "0",
                    "must be at least 1",
                ));
            }
            Ok(ConnectionLimitIr {
                max_connections: l.value,
                close_delay_ms: opt_millis(
                    "spec.connection.connectionLimit.closeDelay",
                    l.close_delay.as_ref(),
                )?,
            })
        })
        .transpose()?;
    let seconds = |field: &str, value: Option<&String>| -> Result<Option<u32>, PolicyError> {
        Ok(opt_millis(field, value)?.map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)))
    };
    let tcp_keepalive = spec
        .tcp_keepalive
        .as_ref()
        .map(|k| -> Result<TcpKeepaliveIr, PolicyError> {
            Ok(TcpKeepaliveIr {
                probes: k.probes,
                idle_time_s: seconds("spec.tcpKeepalive.idleTime", k.idle_time.as_ref())?,
                interval_s: seconds("spec.tcpKeepalive.interval", k.interval.as_ref())?,
            })
        })
        .transpose()?;
    let http1 = spec.http1.as_ref().map(|h| Http1Ir {
        enable_trailers: h.enable_trailers.unwrap_or(false),
        preserve_header_case: h.preserve_header_case.unwrap_or(false),
        accept_http_10: h.http10.is_some(),
        default_host_for_http_10: None,
    });
    let http10_default_host = spec
        .http1
        .as_ref()
        .and_then(|h| h.http10.as_ref())
        .and_then(|h| h.use_default_host)
        .unwrap_or(false);
    let http2 = spec
        .http2
        .as_ref()
        .map(|h| -> Result<Http2Ir, PolicyError> {
            Ok(Http2Ir {
                initial_stream_window_size: opt_quantity(
                    "spec.http2.initialStreamWindowSize",
                    h.initial_stream_window_size.as_ref(),
                )?,
                initial_connection_window_size: opt_quantity(
                    "spec.http2.initialConnectionWindowSize",
                    h.initial_connection_window_size.as_ref(),
                )?,
                max_concurrent_streams: h.max_concurrent_streams,
            })
        })
        .transpose()?;
    let headers = spec.headers.as_ref();
    let xfcc = headers
        .and_then(|h| h.x_forwarded_client_cert.as_ref())
        .map(|x| -> Result<XfccIr, PolicyError> {
            let mode = x.mode.clone().unwrap_or_else(|| "Sanitize".to_owned());
            if !matches!(
                mode.as_str(),
                "Sanitize" | "ForwardOnly" | "AppendForward" | "SanitizeSet" | "AlwaysForwardOnly"
            ) {
                return Err(invalid(
                    "spec.headers.xForwardedClientCert.mode",
                    mode,
                    "must be Sanitize, ForwardOnly, AppendForward, SanitizeSet or AlwaysForwardOnly",
                ));
            }
            if let Some(bad) = x
                .cert_details_to_add
                .iter()
                .find(|d| !matches!(d.as_str(), "Subject" | "Cert" | "Chain" | "DNS" | "URI"))
            {
                return Err(invalid(
                    "spec.headers.xForwardedClientCert.certDetailsToAdd",
                    bad.as_str(),
                    "must be Subject, Cert, Chain, DNS or URI",
                ));
            }
            Ok(XfccIr {
                mode,
                details: x.cert_details_to_add.clone(),
            })
        })
        .transpose()?;
    let request_id = match (
        headers.and_then(|h| h.request_id.as_deref()),
        headers.and_then(|h| h.preserve_x_request_id),
    ) {
        (Some("PreserveOrGenerate"), _) | (None, Some(true)) => Some(RequestIdIr {
            preserve: true,
            generate: true,
        }),
        (Some("Preserve"), _) => Some(RequestIdIr {
            preserve: true,
            generate: false,
        }),
        (Some("Generate"), _) => Some(RequestIdIr {
            preserve: false,
            generate: true,
        }),
        (Some("Disable"), _) => Some(RequestIdIr {
            preserve: false,
            generate: false,
        }),
        (Some(other), _) => {
            return Err(invalid(
                "spec.headers.requestID",
                other,
                "must be PreserveOrGenerate, Preserve, Generate or Disable",
            ));
        }
        (None, _) => None,
    };
    let with_underscores_action = headers
        .and_then(|h| h.with_underscores_action.clone())
        .map(|a| {
            if matches!(a.as_str(), "Allow" | "RejectRequest" | "DropHeader") {
                Ok(a)
            } else {
                Err(invalid(
                    "spec.headers.withUnderscoresAction",
                    a,
                    "must be Allow, RejectRequest or DropHeader",
                ))
            }
        })
        .transpose()?;
    let path = spec
        .path
        .as_ref()
        .map(|p| -> Result<PathNormalizationIr, PolicyError> {
            // Upstream's default for escaped slashes.
            let action = p
                .escaped_slashes_action
                .clone()
                .unwrap_or_else(|| "UnescapeAndRedirect".to_owned());
            if !matches!(
                action.as_str(),
                "KeepUnchanged" | "RejectRequest" | "UnescapeAndForward" | "UnescapeAndRedirect"
            ) {
                return Err(invalid(
                    "spec.path.escapedSlashesAction",
                    action,
                    "must be KeepUnchanged, RejectRequest, UnescapeAndForward or UnescapeAndRedirect",
                ));
            }
            Ok(PathNormalizationIr {
                merge_slashes: !p.disable_merge_slashes.unwrap_or(false),
                escaped_slashes_action: action,
            })
        })
        .transpose()?;
    let client_ip = spec
        .client_ip_detection
        .as_ref()
        .map(|c| -> Result<Option<ClientIpIr>, PolicyError> {
            match (&c.x_forwarded_for, &c.custom_header) {
                (Some(_), Some(_)) => Err(invalid(
                    "spec.clientIPDetection",
                    "",
                    "xForwardedFor and customHeader are mutually exclusive",
                )),
                (Some(x), None) => {
                    if x.num_trusted_hops.is_some() && !x.trusted_cidrs.is_empty() {
                        return Err(invalid(
                            "spec.clientIPDetection.xForwardedFor",
                            "",
                            "numTrustedHops and trustedCIDRs are mutually exclusive",
                        ));
                    }
                    if x.trusted_cidrs.is_empty() {
                        return Ok(Some(ClientIpIr::XffHops {
                            hops: x.num_trusted_hops.unwrap_or(0),
                        }));
                    }
                    for (i, cidr) in x.trusted_cidrs.iter().enumerate() {
                        parse_cidr(cidr).map_err(|problem| {
                            invalid(
                                &format!("spec.clientIPDetection.xForwardedFor.trustedCIDRs[{i}]"),
                                cidr.as_str(),
                                problem,
                            )
                        })?;
                    }
                    Ok(Some(ClientIpIr::XffCidrs {
                        cidrs: x.trusted_cidrs.clone(),
                    }))
                }
                (None, Some(h)) => {
                    if h.name.is_empty() {
                        return Err(invalid(
                            "spec.clientIPDetection.customHeader.name",
                            "",
                            "must not be empty",
                        ));
                    }
                    Ok(Some(ClientIpIr::CustomHeader {
                        name: h.name.to_ascii_lowercase(),
                        fail_closed: h.fail_closed.unwrap_or(false),
                    }))
                }
                (None, None) => Ok(None),
            }
        })
        .transpose()?
        .flatten();

    Ok(ClientPolicy {
        ir: ClientTrafficIr {
            policy: super::object_key(&policy.metadata),
            tls,
            request_received_timeout_ms: opt_millis(
                "spec.timeout.http.requestReceivedTimeout",
                http_timeout.and_then(|h| h.request_received_timeout.as_ref()),
            )?,
            http_idle_timeout_ms: opt_millis(
                "spec.timeout.http.idleTimeout",
                http_timeout.and_then(|h| h.idle_timeout.as_ref()),
            )?,
            tcp_idle_timeout_ms: opt_millis(
                "spec.timeout.tcp.idleTimeout",
                tcp_timeout.and_then(|t| t.idle_timeout.as_ref()),
            )?,
            connection_limit,
            buffer_limit_bytes: opt_quantity(
                "spec.connection.bufferLimit",
                connection.and_then(|c| c.buffer_limit.as_ref()),
            )?,
            max_accept_per_socket_event: connection
                .and_then(|c| c.max_accept_per_socket_event)
                .filter(|n| *n > 0),
            tcp_keepalive,
            http1,
            http2,
            http3: spec.http3.is_some(),
            xfcc,
            request_id,
            with_underscores_action,
            path,
            client_ip,
            proxy_protocol: spec.enable_proxy_protocol.unwrap_or(false),
        },
        http10_default_host,
    })
}

/// Envoy's name of an upstream TLS version (`None` for `Auto` or unset: Envoy's default).
/// The names sort in version order, which the min/max check relies on.
fn tls_version(field: &str, value: Option<&str>) -> Result<Option<String>, PolicyError> {
    match value {
        None | Some("Auto") => Ok(None),
        Some(v @ ("1.0" | "1.1" | "1.2" | "1.3")) => Ok(Some(format!("TLSv1_{}", &v[2..]))),
        Some(other) => Err(invalid(field, other, "must be Auto, 1.0, 1.1, 1.2 or 1.3")),
    }
}

/// The PEM under `ca.crt` of a CA reference (a Secret or ConfigMap of the policy's namespace).
fn ca_certificate(
    index: &Index<'_>,
    namespace: &str,
    field: &str,
    r: &eg_crds::client_traffic::CaCertificateRef,
) -> Result<String, PolicyError> {
    if r.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return Err(invalid(
            &format!("{field}.namespace"),
            r.namespace.clone().unwrap_or_default(),
            "CA certificates from other namespaces are not supported yet",
        ));
    }
    let group = r.group.as_deref().unwrap_or_default();
    let kind = r.kind.as_deref().unwrap_or("Secret");
    let (kind, found): (&'static str, Option<Option<String>>) = match (group, kind) {
        ("", "Secret") => (
            "Secret",
            index
                .secret(namespace, &r.name)
                .map(|s| secret_value(s, "ca.crt")),
        ),
        ("", "ConfigMap") => (
            "ConfigMap",
            index
                .config_map(namespace, &r.name)
                .map(|c| c.data.as_ref().and_then(|d| d.get("ca.crt")).cloned()),
        ),
        (group, kind) => {
            return Err(invalid(
                &format!("{field}.kind"),
                format!("{group}/{kind}"),
                "must be a core Secret or ConfigMap",
            ));
        }
    };
    let Some(value) = found else {
        return Err(PolicyError::RefNotFound {
            field: field.to_string(),
            kind,
            namespace: namespace.to_owned(),
            name: r.name.clone(),
        });
    };
    value
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| PolicyError::MissingKey {
            kind,
            namespace: namespace.to_owned(),
            name: r.name.clone(),
            key: "ca.crt",
        })
}

fn opt_quantity(field: &str, value: Option<&Value>) -> Result<Option<u32>, PolicyError> {
    value.map(|v| quantity(field, v)).transpose()
}

/// A Kubernetes quantity of bytes (`1024`, `32Ki`, `1Mi`, `1G`) that fits Envoy's 32 bits.
fn quantity(field: &str, value: &Value) -> Result<u32, PolicyError> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(invalid(field, other.to_string(), "not a quantity")),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(invalid(
                field,
                text.as_str(),
                "expected a whole number of bytes with an optional k, M, G, Ki, Mi or Gi suffix",
            ));
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| invalid(field, text.as_str(), "not a quantity"))?;
    number
        .checked_mul(scale)
        .and_then(|bytes| u32::try_from(bytes).ok())
        .ok_or_else(|| invalid(field, text.as_str(), "larger than 4294967295 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{Snapshot, snapshot_from_yaml};

    fn policy(spec: serde_json::Value) -> ClientTrafficPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": spec,
        }))
        .expect("decodes")
    }

    fn ir_of(snapshot: &Snapshot, spec: serde_json::Value) -> Result<ClientPolicy, PolicyError> {
        client_ir(&Index::new(snapshot), &policy(spec))
    }

    #[test]
    fn quantities_are_bytes_within_32_bits() {
        assert_eq!(
            quantity("f", &serde_json::json!("32Ki")).expect("ok"),
            32768
        );
        assert_eq!(quantity("f", &serde_json::json!(1024)).expect("ok"), 1024);
        assert_eq!(
            quantity("f", &serde_json::json!("1M")).expect("ok"),
            1_000_000
        );
        assert!(quantity("f", &serde_json::json!("8Gi")).is_err());
        assert!(quantity("f", &serde_json::json!("1.5Mi")).is_err());
        assert!(quantity("f", &serde_json::json!("12Q")).is_err());
    }

    #[test]
    fn tls_versions_map_to_envoy_names_and_must_be_ordered() {
        let s = Snapshot::default();
        let ir = ir_of(
            &s,
            serde_json::json!({"tls": {"minVersion": "1.3", "maxVersion": "Auto"}}),
        )
        .expect("valid");
        let tls = ir.ir.tls.expect("tls");
        assert_eq!(tls.min_version.as_deref(), Some("TLSv1_3"));
        assert_eq!(tls.max_version, None);
        let err = ir_of(
            &s,
            serde_json::json!({"tls": {"minVersion": "1.3", "maxVersion": "1.2"}}),
        )
        .expect_err("min above max");
        assert!(err.to_string().contains("spec.tls.minVersion"), "{err}");
        assert!(ir_of(&s, serde_json::json!({"tls": {"minVersion": "1.4"}})).is_err());
    }

    #[test]
    fn client_ca_is_read_from_secret_or_config_map_and_missing_ones_are_named() {
        let s = snapshot_from_yaml(
            "c",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: n}\ndata:\n  ca.crt: |\n    -----BEGIN CERTIFICATE-----\n    AA==\n    -----END CERTIFICATE-----\n",
        )
        .expect("loads");
        let ok = ir_of(
            &s,
            serde_json::json!({"tls": {"clientValidation": {"optional": true,
                "caCertificateRefs": [{"kind": "ConfigMap", "name": "ca"}]}}}),
        )
        .expect("valid");
        let v = ok.ir.tls.and_then(|t| t.client_validation).expect("mtls");
        assert!(v.optional);
        assert!(v.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let err = ir_of(
            &s,
            serde_json::json!({"tls": {"clientValidation": {"caCertificateRefs": [{"name": "gone"}]}}}),
        )
        .expect_err("missing Secret");
        assert_eq!(
            err.to_string(),
            "spec.tls.clientValidation.caCertificateRefs[0]: Secret n/gone not found"
        );
    }

    #[test]
    fn client_ip_detection_checks_cidrs_and_exclusivity() {
        let s = Snapshot::default();
        let err = ir_of(
            &s,
            serde_json::json!({"clientIPDetection": {"xForwardedFor": {"trustedCIDRs": ["10.0.0.0/40"]}}}),
        )
        .expect_err("bad CIDR");
        assert!(
            err.to_string()
                .contains("spec.clientIPDetection.xForwardedFor.trustedCIDRs[0]"),
            "{err}"
        );
        assert!(
            ir_of(
                &s,
                serde_json::json!({"clientIPDetection": {"xForwardedFor": {"numTrustedHops": 1},
                    "customHeader": {"name": "x-real-ip"}}})
            )
            .is_err()
        );
        let ok = ir_of(
            &s,
            serde_json::json!({"clientIPDetection": {"customHeader": {"name": "X-Real-IP", "failClosed": true}}}),
        )
        .expect("valid");
        assert_eq!(
            ok.ir.client_ip,
            Some(ClientIpIr::CustomHeader {
                name: "x-real-ip".into(),
                fail_closed: true
            })
        );
    }

    #[test]
    fn unmodelled_fields_refuse_the_policy_naming_them() {
        let err = ir_of(
            &Snapshot::default(),
            serde_json::json!({"headers": {"earlyRequestHeaders": {}}, "healthCheck": {"path": "/x"}}),
        )
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "spec.healthCheck, spec.headers.earlyRequestHeaders not supported yet; the policy is not applied"
        );
    }

    #[test]
    fn request_id_modes() {
        let s = Snapshot::default();
        let mode = |m: &str| {
            ir_of(&s, serde_json::json!({"headers": {"requestID": m}}))
                .expect("valid")
                .ir
                .request_id
                .expect("set")
        };
        assert_eq!(
            mode("Disable"),
            RequestIdIr {
                preserve: false,
                generate: false
            }
        );
        assert_eq!(
            mode("PreserveOrGenerate"),
            RequestIdIr {
                preserve: true,
                generate: true
            }
        );
        assert!(
            ir_of(
                &s,
                serde_json::json!({"headers": {"requestID": "Sometimes"}})
            )
            .is_err()
        );
    }
}
