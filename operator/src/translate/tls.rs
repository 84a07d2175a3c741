//! Listener TLS: resolving `certificateRefs` to certificate/key PEM from `kubernetes.io/tls`
//! Secrets, with the permission and shape checks Gateway API requires.
//!
//! The PEM check is structural (a `CERTIFICATE` block in `tls.crt`, a `… PRIVATE KEY` block in
//! `tls.key`, base64 bodies) rather than cryptographic: it catches the mistakes people make
//! (wrong key, pasted DER, empty value) without pulling a crypto stack into a pure translator.
//! Envoy still rejects a well-formed but unusable key, which the status writer observes as a
//! NACK.

use gateway_api::apis::standard::gateways::GatewayListenersTlsCertificateRefs;

use super::conditions::reason;
use super::index::{Index, secret_value};
use super::ir::CertificateIr;
use super::refs::{GATEWAY_GROUP, Referent, Referrer, reference_allowed};

const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
const CERT_KEY: &str = "tls.crt";
const PRIVATE_KEY_KEY: &str = "tls.key";

/// Why a certificate reference cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum CertificateError {
    #[error("certificate ref group must be empty (core API group), got {0:?}")]
    UnsupportedGroup(String),
    #[error("certificate ref kind must be Secret, got {0:?}")]
    UnsupportedKind(String),
    #[error("certificate ref to Secret {namespace}/{name} not permitted by any ReferenceGrant")]
    NotPermitted { namespace: String, name: String },
    #[error("Secret {namespace}/{name} does not exist")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} must be of type {TLS_SECRET_TYPE}")]
    WrongType { namespace: String, name: String },
    #[error("Secret {namespace}/{name} must contain {CERT_KEY} and {PRIVATE_KEY_KEY}")]
    MissingData { namespace: String, name: String },
    #[error("Secret {namespace}/{name}: {key} is not valid PEM: {problem}")]
    InvalidPem {
        namespace: String,
        name: String,
        key: &'static str,
        problem: String,
    },
}

impl CertificateError {
    /// Stable, low-cardinality label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedGroup(_) | Self::UnsupportedKind(_) => "unsupported_ref",
            Self::NotPermitted { .. } => "not_permitted",
            Self::NotFound { .. } => "not_found",
            Self::WrongType { .. } | Self::MissingData { .. } | Self::InvalidPem { .. } => {
                "invalid_secret"
            }
        }
    }

    /// The listener `ResolvedRefs` reason Gateway API prescribes.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotPermitted { .. } => reason::REF_NOT_PERMITTED,
            _ => reason::INVALID_CERTIFICATE_REF,
        }
    }
}

/// Resolves one certificate reference of a listener of a Gateway in `gateway_namespace`.
pub(super) fn resolve(
    index: &Index<'_>,
    gateway_namespace: &str,
    cert_ref: &GatewayListenersTlsCertificateRefs,
) -> Result<CertificateIr, CertificateError> {
    let group = cert_ref.group.as_deref().unwrap_or("");
    if !group.is_empty() {
        return Err(CertificateError::UnsupportedGroup(group.to_owned()));
    }
    let kind = cert_ref.kind.as_deref().unwrap_or("Secret");
    if kind != "Secret" {
        return Err(CertificateError::UnsupportedKind(kind.to_owned()));
    }
    let namespace = cert_ref
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(gateway_namespace);
    let name = cert_ref.name.as_str();
    let allowed = reference_allowed(
        &index.grants,
        Referrer {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            namespace: gateway_namespace,
        },
        Referent {
            group: "",
            kind: "Secret",
            namespace,
            name,
        },
    );
    let ids = || (namespace.to_owned(), name.to_owned());
    if !allowed {
        let (namespace, name) = ids();
        return Err(CertificateError::NotPermitted { namespace, name });
    }
    let Some(secret) = index.secret(namespace, name) else {
        let (namespace, name) = ids();
        return Err(CertificateError::NotFound { namespace, name });
    };
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        let (namespace, name) = ids();
        return Err(CertificateError::WrongType { namespace, name });
    }
    let value = |key: &str| secret_value(secret, key).filter(|v| !v.trim().is_empty());
    let (Some(cert_pem), Some(key_pem)) = (value(CERT_KEY), value(PRIVATE_KEY_KEY)) else {
        let (namespace, name) = ids();
        return Err(CertificateError::MissingData { namespace, name });
    };
    let invalid = |key: &'static str, problem: String| {
        let (namespace, name) = ids();
        CertificateError::InvalidPem {
            namespace,
            name,
            key,
            problem,
        }
    };
    check_pem(&cert_pem, |label| label == "CERTIFICATE").map_err(|p| invalid(CERT_KEY, p))?;
    check_pem(&key_pem, |label| label.ends_with("PRIVATE KEY"))
        .map_err(|p| invalid(PRIVATE_KEY_KEY, p))?;
    Ok(CertificateIr {
        secret: format!("{namespace}/{name}"),
        cert_pem,
        key_pem,
    })
}

/// Checks that `text` holds at least one PEM block whose label satisfies `wanted`, and that
/// every block is well formed (matching BEGIN/END labels, non-empty base64 body).
fn check_pem(text: &str, wanted: impl Fn(&str) -> bool) -> Result<(), String> {
    let mut found = false;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            // Text outside blocks (e.g. openssl's "Bag Attributes") is allowed.
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for inner in lines.by_ref() {
            if inner == end {
                closed = true;
                break;
            }
            if inner.contains(':') {
                // RFC 1421 headers ("Proc-Type: …") in encrypted keys.
                continue;
            }
            body.push_str(inner);
        }
        if !closed {
            return Err(format!("block {label} has no END line"));
        }
        if !is_base64(&body) {
            return Err(format!("block {label} has an invalid base64 body"));
        }
        found |= wanted(label);
    }
    if found {
        Ok(())
    } else {
        Err("no suitable PEM block found".to_owned())
    }
}

fn is_base64(body: &str) -> bool {
    let data = body.trim_end_matches('=');
    let padding = body.len() - data.len();
    !body.is_empty()
        && body.len().is_multiple_of(4)
        && padding <= 2
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_checks_labels_and_bodies() {
        let cert = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n";
        assert!(check_pem(cert, |l| l == "CERTIFICATE").is_ok());
        assert!(check_pem(cert, |l| l.ends_with("PRIVATE KEY")).is_err());
        let key = "-----BEGIN EC PRIVATE KEY-----\nTUlJQg==\n-----END EC PRIVATE KEY-----";
        assert!(check_pem(key, |l| l.ends_with("PRIVATE KEY")).is_ok());
        assert!(check_pem("not pem", |_| true).is_err());
        let unclosed = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n";
        assert!(check_pem(unclosed, |_| true).is_err());
        let bad_body = "-----BEGIN CERTIFICATE-----\nno*base64\n-----END CERTIFICATE-----";
        assert!(check_pem(bad_body, |_| true).is_err());
    }
}
