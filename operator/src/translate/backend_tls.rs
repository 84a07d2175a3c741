//! BackendTLSPolicy: TLS from Envoy to the Services a policy targets, validating the backend's
//! certificate against CA certificates from ConfigMaps (key `ca.crt`) or Secrets, or the
//! system trust store (`wellKnownCACertificates: System`), with the policy's `hostname` as SNI
//! and the certificate checked against `subjectAltNames` (or, when none are given, against
//! `hostname`, as the spec requires).
//!
//! Policies apply to clusters after routes are compiled: a policy change never recompiles a
//! route, it only changes the clusters of the Services it targets. A target is a Service, or one
//! port of it (`sectionName` = the port's name). Between policies targeting the same port the
//! oldest wins (then `{namespace}/{name}` order); the others are `Accepted=False Conflicted`.
//!
//! Fail closed: a policy whose CA certificates cannot be read still turns TLS on for its
//! targets, with a trust no certificate can satisfy, so traffic to them fails rather than
//! flowing unverified; the policy reports why.

use std::collections::BTreeMap;

use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyStatus, BackendTlsPolicyStatusAncestors,
    BackendTlsPolicyStatusAncestorsAncestorRef, BackendTlsPolicyValidationSubjectAltNamesType,
};

use super::Diagnostic;
use super::conditions::{Problem, verdict};
use super::index::{Index, secret_value};
use super::ir::{ClusterIr, ClusterSourceIr, SubjectAltNameIr, TrustIr, UpstreamTlsIr};
use super::refs::GATEWAY_GROUP;

/// Condition types and reasons of BackendTLSPolicy status (Gateway API v1.5).
mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
    pub const INVALID_KIND: &str = "InvalidKind";
}

/// What is wrong with a policy's CA certificates.
#[derive(Debug, thiserror::Error)]
pub(super) enum CaError {
    #[error(
        "caCertificateRefs kind {group}/{kind} is not supported, must be core ConfigMap or Secret"
    )]
    UnsupportedKind { group: String, kind: String },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} has no PEM certificate under key ca.crt")]
    NoCertificate {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("wellKnownCACertificates {0:?} is not supported, only System is")]
    UnsupportedWellKnown(String),
    #[error("exactly one of caCertificateRefs and wellKnownCACertificates must be set")]
    NoTrust,
}

impl CaError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedKind { .. } => "invalid_kind",
            Self::NotFound { .. } => "not_found",
            Self::NoCertificate { .. } | Self::UnsupportedWellKnown(_) | Self::NoTrust => {
                "invalid_ca"
            }
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedKind { .. } => reason::INVALID_KIND,
            Self::NotFound { .. } | Self::NoCertificate { .. } => {
                reason::INVALID_CA_CERTIFICATE_REF
            }
            Self::UnsupportedWellKnown(_) | Self::NoTrust => reason::NO_VALID_CA_CERTIFICATE,
        }
    }
}

/// The policies of a snapshot, each resolved once, by the Service port they target.
#[derive(Debug, Default)]
pub(super) struct Policies {
    /// `(namespace, service, section)` → the winning policy's key; section `None` = every port.
    targets: BTreeMap<Slot, String>,
    /// Younger policies on a slot a `targets` policy holds: they get status where it applies.
    losers: BTreeMap<Slot, Vec<String>>,
    resolved: BTreeMap<String, Resolved>,
}

/// `(namespace, service, section)`; section `None` = every port of the Service.
type Slot = (String, String, Option<String>);

#[derive(Debug)]
struct Resolved {
    tls: UpstreamTlsIr,
    /// `(reason, category, message)` when the CA certificates cannot be used.
    ca_problem: Option<(&'static str, &'static str, String)>,
    /// Targets another, older policy already holds.
    conflicted: bool,
    generation: Option<i64>,
}

/// Which Gateways used which policy, and the problems found, for status and diagnostics.
#[derive(Debug, Default)]
pub(super) struct Usage {
    by_policy: BTreeMap<String, Vec<String>>,
}

impl Policies {
    pub fn new(index: &Index<'_>, policies: &[BackendTlsPolicy]) -> Self {
        let mut sorted: Vec<&BackendTlsPolicy> = policies.iter().collect();
        sorted.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.clone(),
                super::object_key(&p.metadata),
            )
        });
        let mut out = Self::default();
        for policy in sorted {
            let key = super::object_key(&policy.metadata);
            let namespace = policy.metadata.namespace.clone().unwrap_or_default();
            let mut conflicted = false;
            for target in &policy.spec.target_refs {
                if !target.group.is_empty() || target.kind != "Service" {
                    continue;
                }
                let slot = (
                    namespace.clone(),
                    target.name.clone(),
                    target.section_name.clone(),
                );
                match out.targets.get(&slot) {
                    Some(holder) if *holder != key => {
                        conflicted = true;
                        out.losers.entry(slot).or_default().push(key.clone());
                    }
                    _ => {
                        out.targets.insert(slot, key.clone());
                    }
                }
            }
            let (tls, ca_problem) = resolve(index, &namespace, &key, policy);
            out.resolved.insert(
                key,
                Resolved {
                    tls,
                    ca_problem,
                    conflicted,
                    generation: policy.metadata.generation,
                },
            );
        }
        out
    }

    /// Turns TLS on for every cluster of a Service port a policy targets, recording which
    /// policies `gateway` uses.
    pub fn apply(
        &self,
        index: &Index<'_>,
        gateway: &str,
        clusters: &mut BTreeMap<String, ClusterIr>,
        usage: &mut Usage,
    ) {
        if self.targets.is_empty() {
            return;
        }
        for cluster in clusters.values_mut() {
            let ClusterSourceIr::Service {
                namespace,
                name,
                port,
            } = &cluster.source
            else {
                continue;
            };
            let port_name = index
                .service(namespace, name)
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .find(|p| p.port == i32::from(*port))
                .and_then(|p| p.name.clone());
            let section = (namespace.clone(), name.clone(), port_name);
            let whole = (namespace.clone(), name.clone(), None);
            let slot = [section, whole]
                .into_iter()
                .find(|slot| self.targets.contains_key(slot));
            let Some(slot) = slot else { continue };
            let Some(resolved) = self.resolved.get(&self.targets[&slot]) else {
                continue;
            };
            cluster.tls = Some(Box::new(resolved.tls.clone()));
            let losers = self.losers.get(&slot).into_iter().flatten();
            for key in std::iter::once(&self.targets[&slot]).chain(losers) {
                let gateways = usage.by_policy.entry(key.clone()).or_default();
                if !gateways.iter().any(|g| g == gateway) {
                    gateways.push(gateway.to_owned());
                }
            }
        }
    }

    /// Status of every policy a Gateway of ours uses, one ancestor per such Gateway, and the
    /// diagnostics of those policies.
    pub fn statuses(
        &self,
        usage: &Usage,
        controller_name: &str,
    ) -> (BTreeMap<String, BackendTlsPolicyStatus>, Vec<Diagnostic>) {
        let mut statuses = BTreeMap::new();
        let mut diagnostics = Vec::new();
        for (key, gateways) in &usage.by_policy {
            let Some(resolved) = self.resolved.get(key) else {
                continue;
            };
            let accepted = if resolved.conflicted {
                Some(Problem::new(
                    reason::CONFLICTED,
                    "Another, older BackendTLSPolicy targets the same Service port",
                ))
            } else {
                resolved.ca_problem.as_ref().map(|_| {
                    Problem::new(
                        reason::NO_VALID_CA_CERTIFICATE,
                        "No valid CA certificate: TLS to the targets fails closed",
                    )
                })
            };
            let resolved_refs = resolved
                .ca_problem
                .as_ref()
                .map(|(reason, _, message)| Problem::new(reason, message.clone()));
            if let Some((_, category, message)) = &resolved.ca_problem {
                diagnostics.push(Diagnostic {
                    object: format!("BackendTLSPolicy {key}"),
                    category,
                    message: message.clone(),
                });
            }
            let ancestors = gateways
                .iter()
                .map(|gateway| {
                    let (namespace, name) = gateway.split_once('/').unwrap_or(("", gateway));
                    BackendTlsPolicyStatusAncestors {
                        ancestor_ref: BackendTlsPolicyStatusAncestorsAncestorRef {
                            group: Some(GATEWAY_GROUP.to_owned()),
                            kind: Some("Gateway".to_owned()),
                            name: name.to_owned(),
                            namespace: Some(namespace.to_owned()),
                            port: None,
                            section_name: None,
                        },
                        conditions: vec![
                            verdict(
                                reason::ACCEPTED,
                                accepted.as_ref(),
                                reason::ACCEPTED,
                                "Policy is accepted",
                                resolved.generation,
                            ),
                            verdict(
                                reason::RESOLVED_REFS,
                                resolved_refs.as_ref(),
                                reason::RESOLVED_REFS,
                                "CA certificate references are resolved",
                                resolved.generation,
                            ),
                        ],
                        controller_name: controller_name.to_owned(),
                    }
                })
                .collect();
            statuses.insert(key.clone(), BackendTlsPolicyStatus { ancestors });
        }
        (statuses, diagnostics)
    }
}

/// The upstream TLS settings of one policy, and what is wrong with its trust, if anything.
fn resolve(
    index: &Index<'_>,
    namespace: &str,
    key: &str,
    policy: &BackendTlsPolicy,
) -> (UpstreamTlsIr, Option<(&'static str, &'static str, String)>) {
    let validation = &policy.spec.validation;
    let trust = trust(index, namespace, policy);
    let subject_alt_names = validation
        .subject_alt_names
        .iter()
        .flatten()
        .filter_map(|san| match san.r#type {
            BackendTlsPolicyValidationSubjectAltNamesType::Hostname => {
                san.hostname.clone().map(SubjectAltNameIr::Hostname)
            }
            BackendTlsPolicyValidationSubjectAltNamesType::Uri => {
                san.uri.clone().map(SubjectAltNameIr::Uri)
            }
        })
        .collect();
    let problem = trust
        .as_ref()
        .err()
        .map(|e| (e.reason(), e.category(), e.to_string()));
    let tls = UpstreamTlsIr {
        policy: key.to_owned(),
        sni: validation.hostname.to_ascii_lowercase(),
        trust: trust.unwrap_or(TrustIr::Unresolved),
        subject_alt_names,
    };
    (tls, problem)
}

fn trust(
    index: &Index<'_>,
    namespace: &str,
    policy: &BackendTlsPolicy,
) -> Result<TrustIr, CaError> {
    let validation = &policy.spec.validation;
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    match (
        refs.is_empty(),
        validation.well_known_ca_certificates.as_deref(),
    ) {
        (true, Some("System")) => return Ok(TrustIr::System),
        (true, Some(other)) => return Err(CaError::UnsupportedWellKnown(other.to_owned())),
        (false, Some(_)) | (true, None) => return Err(CaError::NoTrust),
        (false, None) => {}
    }
    let mut pem = String::new();
    for r in refs {
        let (kind, data) = match (r.group.as_str(), r.kind.as_str()) {
            ("", "ConfigMap") => (
                "ConfigMap",
                index
                    .config_map(namespace, &r.name)
                    .map(|c| c.data.as_ref().and_then(|d| d.get("ca.crt")).cloned()),
            ),
            ("", "Secret") => (
                "Secret",
                index
                    .secret(namespace, &r.name)
                    .map(|s| secret_value(s, "ca.crt")),
            ),
            (group, kind) => {
                return Err(CaError::UnsupportedKind {
                    group: if group.is_empty() { "core" } else { group }.to_owned(),
                    kind: kind.to_owned(),
                });
            }
        };
        let ids = || (namespace.to_owned(), r.name.clone());
        let Some(found) = data else {
            let (namespace, name) = ids();
            return Err(CaError::NotFound {
                kind,
                namespace,
                name,
            });
        };
        match found.filter(|p| p.contains("-----BEGIN CERTIFICATE-----")) {
            Some(cert) => {
                pem.push_str(cert.trim_end());
                pem.push('\n');
            }
            None => {
                let (namespace, name) = ids();
                return Err(CaError::NoCertificate {
                    kind,
                    namespace,
                    name,
                });
            }
        }
    }
    Ok(TrustIr::Pem(pem))
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.by_policy.is_empty()
    }
}
