//! The environment's certificates (pure; the clock is an input): a CA, the xDS server
//! certificate (SANs = the control-plane Service's DNS names) and the proxy issuer, with the
//! trust bundle they are verified against.
//!
//! The proxy issuer is an intermediate CA for the proxies' client certificates. The controller
//! signs one certificate per Gateway with it (see [`crate::fleet::certificate`]), naming the
//! Gateway, so the xDS server can serve each proxy only its own Gateway's configuration. The
//! controller may read the issuer's key but never the CA's: the issuer can only sign client
//! certificates (its extended key usage is client-auth, which verifiers apply to the whole
//! chain), one level deep (path length 0), and it expires with the CA.
//!
//! Valid existing certificates are kept as they are: a reconcile must not churn Secrets. A
//! certificate is issued anew when it is missing, unreadable, no longer matches what it must say,
//! or is within `renewBefore` of expiry. When the CA itself is renewed, the trust bundle carries
//! the new and the previous CA until the previous one expires, so proxies holding certificates of
//! either generation keep connecting while the rotation rolls out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use time::OffsetDateTime;
use x509_parser::pem::Pem;

use super::build::{CertKeyPem, EnvironmentCertificates};
use super::names::Names;
use super::validate::CertificateLifetimes;

/// Path length of the CA: one level of intermediates (the proxy issuer) below it. A CA issued
/// with a shorter one (0, before the proxy issuer existed) is renewed as no longer matching.
const CA_PATH_LEN: u8 = 1;

/// Errors issuing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("issuing the {which} certificate: {source}")]
    Issue {
        which: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the clock is before 1970")]
    Clock,
}

impl CertificateError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            CertificateError::Issue { .. } => "issue",
            CertificateError::Clock => "clock",
        }
    }
}

/// PEM contents of one live Secret (`ca.crt`, `tls.crt`, `tls.key`), as read by the dereference
/// stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPem {
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

/// What is live today; `None` where the Secret does not exist.
#[derive(Debug, Clone, Default)]
pub struct ExistingCertificates {
    pub ca: Option<SecretPem>,
    pub xds_server: Option<SecretPem>,
    pub proxy_issuer: Option<SecretPem>,
}

/// Why a certificate is (re)issued; shown in Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    Missing,
    Unreadable,
    Mismatch,
    Expiring,
    CaRotated,
    IssuerRotated,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::Unreadable => "unreadable",
            IssueReason::Mismatch => "no longer matches its specification",
            IssueReason::Expiring => "within renewBefore of expiry",
            IssueReason::CaRotated => "the CA was renewed",
            IssueReason::IssuerRotated => "the proxy issuer was renewed",
        }
    }
}

/// One certificate that was issued, for an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub which: &'static str,
    pub reason: IssueReason,
}

/// The certificates to store, and what changed.
#[derive(Debug, Clone)]
pub struct CertificateDecision {
    pub certificates: EnvironmentCertificates,
    pub issued: Vec<Issued>,
}

/// Decides the environment's certificates at `now`.
pub fn decide(
    existing: &ExistingCertificates,
    lifetimes: CertificateLifetimes,
    names: &Names,
    now: SystemTime,
) -> Result<CertificateDecision, CertificateError> {
    let now_s = unix_seconds(now)?;
    let renew_before = secs(lifetimes.renew_before);
    let mut issued = Vec::new();

    let current_ca = existing
        .ca
        .as_ref()
        .ok_or(IssueReason::Missing)
        .and_then(|s| check_ca(s, now_s, renew_before));
    let (ca, ca_reason) = match current_ca {
        Ok(ca) => (ca, None),
        Err(reason) => {
            let ca = issue_ca(names, now, lifetimes.duration)?;
            issued.push(Issued {
                which: "CA",
                reason,
            });
            (ca, Some(reason))
        }
    };
    let ca_cert = parse_first(&ca.cert).ok_or(CertificateError::Issue {
        which: "CA",
        source: rcgen::Error::CouldNotParseCertificate,
    })?;

    // Trust the current CA and the newest other CA from the old bundle that is still valid.
    let mut trust_bundle = ca.cert.trim_end().to_owned();
    trust_bundle.push('\n');
    let old_bundle = existing
        .ca
        .as_ref()
        .map(|s| s.ca_crt.as_str())
        .unwrap_or("");
    let previous = pem_blocks(old_bundle)
        .into_iter()
        .filter(|(_, info)| info.not_after > now_s && info.der != ca_cert.der)
        .max_by_key(|(_, info)| info.not_before);
    if let Some((pem, _)) = previous {
        trust_bundle.push_str(pem.trim_end());
        trust_bundle.push('\n');
    }

    let issuer_key = KeyPair::from_pem(&ca.key).map_err(|source| CertificateError::Issue {
        which: "CA",
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, issuer_key).map_err(|source| {
        CertificateError::Issue {
            which: "CA",
            source,
        }
    })?;
    // A leaf never outlives its CA.
    let leaf_not_after = (now_s + secs(lifetimes.duration)).min(ca_cert.not_after);

    let mut leaf = |which: &'static str,
                    live: &Option<SecretPem>,
                    spec: &LeafSpec|
     -> Result<CertKeyPem, CertificateError> {
        let check = match (live, ca_reason) {
            (None, _) => Err(IssueReason::Missing),
            (Some(_), Some(_)) => Err(IssueReason::CaRotated),
            (Some(s), None) => check_leaf(s, &ca_cert, spec, now_s, renew_before),
        };
        match check {
            Ok(pair) => Ok(pair),
            Err(reason) => {
                issued.push(Issued { which, reason });
                issue_leaf(spec, &issuer, now, leaf_not_after)
                    .map_err(|source| CertificateError::Issue { which, source })
            }
        }
    };
    let server_spec = LeafSpec {
        common_name: names.xds_dns_names()[0].clone(),
        dns_names: names.xds_dns_names(),
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    };
    let xds_server = leaf("xDS server", &existing.xds_server, &server_spec)?;

    let issuer_cn = proxy_issuer_common_name(names);
    let issuer_check = match (&existing.proxy_issuer, ca_reason) {
        (None, _) => Err(IssueReason::Missing),
        (Some(_), Some(_)) => Err(IssueReason::CaRotated),
        (Some(s), None) => check_proxy_issuer(s, &ca_cert, &issuer_cn, now_s, renew_before),
    };
    let proxy_issuer = match issuer_check {
        Ok(pair) => pair,
        Err(reason) => {
            issued.push(Issued {
                which: "proxy issuer",
                reason,
            });
            issue_proxy_issuer(&issuer_cn, &issuer, now, leaf_not_after).map_err(|source| {
                CertificateError::Issue {
                    which: "proxy issuer",
                    source,
                }
            })?
        }
    };

    Ok(CertificateDecision {
        certificates: EnvironmentCertificates {
            trust_bundle,
            ca,
            xds_server,
            proxy_issuer,
        },
        issued,
    })
}

fn proxy_issuer_common_name(names: &Names) -> String {
    format!(
        "eg-operator proxy issuer {}/{}",
        names.namespace(),
        names.environment()
    )
}

struct LeafSpec {
    common_name: String,
    dns_names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
}

/// What this module reads from a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub(crate) der: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

pub(crate) fn unix_seconds(t: SystemTime) -> Result<i64, CertificateError> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertificateError::Clock)?;
    Ok(secs(d))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn pem_blocks(text: &str) -> Vec<(String, CertInfo)> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(text.as_bytes()).flatten() {
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let Ok(cert) = pem.parse_x509() else { continue };
        let info = CertInfo {
            der: pem.contents.clone(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        };
        out.push((encode_pem(&pem.contents), info));
    }
    out
}

fn encode_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    // 48 bytes encode to one 64-character PEM line.
    for chunk in der.chunks(48) {
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub(crate) fn parse_first(text: &str) -> Option<CertInfo> {
    pem_blocks(text).into_iter().next().map(|(_, info)| info)
}

pub(crate) fn key_matches(cert_der: &[u8], key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    x509_parser::parse_x509_certificate(cert_der)
        .is_ok_and(|(_, cert)| cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Reads a live certificate and key and keeps them if `fits` accepts the certificate, the key
/// belongs to it, and it is not within `renew_before` of expiry.
fn check_pair(
    s: &SecretPem,
    now: i64,
    renew_before: i64,
    fits: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<(), IssueReason>,
) -> Result<CertKeyPem, IssueReason> {
    let info = parse_first(&s.tls_crt).ok_or(IssueReason::Unreadable)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&info.der).map_err(|_| IssueReason::Unreadable)?;
    fits(&cert)?;
    if !key_matches(&info.der, &s.tls_key) {
        return Err(IssueReason::Mismatch);
    }
    if info.not_after - renew_before <= now {
        return Err(IssueReason::Expiring);
    }
    Ok(CertKeyPem {
        cert: s.tls_crt.clone(),
        key: s.tls_key.clone(),
    })
}

fn check_ca(s: &SecretPem, now: i64, renew_before: i64) -> Result<CertKeyPem, IssueReason> {
    check_pair(s, now, renew_before, |cert| {
        // The proxy issuer sits below the CA; a CA that forbids intermediates cannot have one.
        let room_for_issuer = match cert.basic_constraints() {
            Ok(Some(bc)) => bc
                .value
                .path_len_constraint
                .is_none_or(|len| len >= u32::from(CA_PATH_LEN)),
            _ => false,
        };
        if cert.is_ca() && room_for_issuer {
            Ok(())
        } else {
            Err(IssueReason::Mismatch)
        }
    })
}

fn check_proxy_issuer(
    s: &SecretPem,
    ca: &CertInfo,
    common_name: &str,
    now: i64,
    renew_before: i64,
) -> Result<CertKeyPem, IssueReason> {
    let (_, ca_cert) =
        x509_parser::parse_x509_certificate(&ca.der).map_err(|_| IssueReason::Unreadable)?;
    check_pair(s, now, renew_before, |cert| {
        if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
            return Err(IssueReason::CaRotated);
        }
        let client_auth_only = cert.extended_key_usage().ok().flatten().is_some_and(|e| {
            let x509_parser::extensions::ExtendedKeyUsage {
                any,
                server_auth,
                client_auth,
                code_signing,
                email_protection,
                time_stamping,
                ocsp_signing,
                other,
            } = e.value;
            *client_auth
                && !(*any
                    || *server_auth
                    || *code_signing
                    || *email_protection
                    || *time_stamping
                    || *ocsp_signing)
                && other.is_empty()
        });
        let path_len_zero = matches!(
            cert.basic_constraints(),
            Ok(Some(bc)) if bc.value.ca && bc.value.path_len_constraint == Some(0)
        );
        if client_auth_only && path_len_zero && common_name_of(cert) == common_name {
            Ok(())
        } else {
            Err(IssueReason::Mismatch)
        }
    })
}

fn common_name_of<'a>(cert: &'a x509_parser::certificate::X509Certificate<'_>) -> &'a str {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
}

fn check_leaf(
    s: &SecretPem,
    ca: &CertInfo,
    spec: &LeafSpec,
    now: i64,
    renew_before: i64,
) -> Result<CertKeyPem, IssueReason> {
    let (_, ca_cert) =
        x509_parser::parse_x509_certificate(&ca.der).map_err(|_| IssueReason::Unreadable)?;
    check_pair(s, now, renew_before, |cert| {
        if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
            return Err(IssueReason::CaRotated);
        }
        let mut dns: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        dns.sort();
        let mut want = spec.dns_names.clone();
        want.sort();
        if dns != want || common_name_of(cert) != spec.common_name {
            return Err(IssueReason::Mismatch);
        }
        Ok(())
    })
}

pub(crate) fn validity(params: &mut CertificateParams, now: SystemTime, not_after_unix: i64) {
    let now = OffsetDateTime::from(now);
    // Tolerate small clock skew between the operator and the proxies.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = OffsetDateTime::from_unix_timestamp(not_after_unix)
        .unwrap_or(now + time::Duration::days(1));
}

fn issue_ca(
    names: &Names,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertKeyPem, CertificateError> {
    let err = |source| CertificateError::Issue {
        which: "CA",
        source,
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!(
            "eg-operator CA {}/{}",
            names.namespace(),
            names.environment()
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(CA_PATH_LEN));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, unix_seconds(now)? + secs(lifetime));
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(CertKeyPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The intermediate CA the controller signs the proxies' client certificates with.
fn issue_proxy_issuer(
    common_name: &str,
    issuer: &Issuer<'_, KeyPair>,
    now: SystemTime,
    not_after: i64,
) -> Result<CertKeyPem, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // No intermediates below it, and (through the extended key usage, which verifiers apply to
    // every certificate of a chain) nothing but client certificates: a controller holding this
    // key cannot mint an xDS server certificate.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, not_after);
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertKeyPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn issue_leaf(
    spec: &LeafSpec,
    issuer: &Issuer<'_, KeyPair>,
    now: SystemTime,
    not_after: i64,
) -> Result<CertKeyPem, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(spec.dns_names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.clone());
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![spec.usage.clone()];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, not_after);
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertKeyPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn lifetimes() -> CertificateLifetimes {
        CertificateLifetimes {
            duration: HOUR * 10,
            renew_before: HOUR * 2,
        }
    }

    fn live(c: &EnvironmentCertificates) -> ExistingCertificates {
        let s = |p: &CertKeyPem| SecretPem {
            ca_crt: c.trust_bundle.clone(),
            tls_crt: p.cert.clone(),
            tls_key: p.key.clone(),
        };
        ExistingCertificates {
            ca: Some(s(&c.ca)),
            xds_server: Some(s(&c.xds_server)),
            proxy_issuer: Some(s(&c.proxy_issuer)),
        }
    }

    fn parse(pem: &str) -> CertInfo {
        parse_first(pem).expect("certificate")
    }

    fn names() -> Names {
        Names::new("eg-production", "production")
    }

    #[test]
    fn fresh_environment_gets_a_chained_set() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let d =
            decide(&ExistingCertificates::default(), lifetimes(), &names(), t0).expect("decide");
        assert_eq!(d.issued.len(), 3);
        assert!(d.issued.iter().all(|i| i.reason == IssueReason::Missing));
        let ca = parse(&d.certificates.ca.cert);
        for leaf in [&d.certificates.xds_server, &d.certificates.proxy_issuer] {
            let info = parse(&leaf.cert);
            let (_, cert) = x509_parser::parse_x509_certificate(&info.der).expect("leaf");
            let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.der).expect("ca");
            cert.verify_signature(Some(ca_cert.public_key()))
                .expect("chains to the CA");
            assert!(info.not_after <= ca.not_after);
        }
        let server = parse(&d.certificates.xds_server.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&server.der).expect("server");
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(san.value.general_names.len(), 4);
        assert_eq!(pem_blocks(&d.certificates.trust_bundle).len(), 1);
    }

    #[test]
    fn valid_certificates_are_kept_byte_for_byte() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let first =
            decide(&ExistingCertificates::default(), lifetimes(), &names(), t0).expect("first");
        let second =
            decide(&live(&first.certificates), lifetimes(), &names(), t0 + HOUR).expect("second");
        assert!(second.issued.is_empty(), "{:?}", second.issued);
        assert_eq!(second.certificates, first.certificates);
    }

    #[test]
    fn ca_renewal_reissues_leaves_and_trusts_both_cas() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let first =
            decide(&ExistingCertificates::default(), lifetimes(), &names(), t0).expect("first");
        // 9 h later the 10 h CA is within its 2 h renewBefore.
        let rotated = decide(
            &live(&first.certificates),
            lifetimes(),
            &names(),
            t0 + HOUR * 9,
        )
        .expect("rotated");
        let reasons: Vec<_> = rotated.issued.iter().map(|i| (i.which, i.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("CA", IssueReason::Expiring),
                ("xDS server", IssueReason::CaRotated),
                ("proxy issuer", IssueReason::CaRotated)
            ]
        );
        let bundle = pem_blocks(&rotated.certificates.trust_bundle);
        assert_eq!(bundle.len(), 2, "new and previous CA");
        let old_ca = parse(&first.certificates.ca.cert);
        let new_ca = parse(&rotated.certificates.ca.cert);
        assert!(bundle.iter().any(|(_, i)| i.der == old_ca.der));
        assert!(bundle.iter().any(|(_, i)| i.der == new_ca.der));

        // Once the old CA has expired it leaves the bundle.
        let later = decide(
            &live(&rotated.certificates),
            lifetimes(),
            &names(),
            t0 + HOUR * 11,
        )
        .expect("later");
        assert!(later.issued.is_empty(), "{:?}", later.issued);
        assert_eq!(pem_blocks(&later.certificates.trust_bundle).len(), 1);
    }

    #[test]
    fn wrong_sans_or_garbage_reissue_only_that_certificate() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let first =
            decide(&ExistingCertificates::default(), lifetimes(), &names(), t0).expect("first");
        let mut existing = live(&first.certificates);
        // The same CA, but an environment with another name: the server SANs and the issuer's
        // name no longer match.
        let other = Names::new("eg-production", "staging");
        let d = decide(&existing, lifetimes(), &other, t0).expect("decide");
        assert_eq!(
            d.issued,
            [
                Issued {
                    which: "xDS server",
                    reason: IssueReason::Mismatch
                },
                Issued {
                    which: "proxy issuer",
                    reason: IssueReason::Mismatch
                }
            ]
        );
        existing.proxy_issuer = Some(SecretPem {
            tls_crt: "garbage".into(),
            ..SecretPem::default()
        });
        let d = decide(&existing, lifetimes(), &names(), t0).expect("decide");
        assert_eq!(
            d.issued,
            [Issued {
                which: "proxy issuer",
                reason: IssueReason::Unreadable
            }]
        );
    }

    #[test]
    fn a_ca_without_room_for_the_proxy_issuer_is_rotated() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let first =
            decide(&ExistingCertificates::default(), lifetimes(), &names(), t0).expect("first");
        // A CA as issued before the proxy issuer existed: no intermediates allowed below it.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        validity(&mut params, t0, unix_seconds(t0 + HOUR * 10).expect("time"));
        let old_ca = params.self_signed(&key).expect("old CA").pem();
        let mut existing = live(&first.certificates);
        existing.ca = Some(SecretPem {
            ca_crt: old_ca.clone(),
            tls_crt: old_ca.clone(),
            tls_key: key.serialize_pem(),
        });
        let d = decide(&existing, lifetimes(), &names(), t0 + HOUR).expect("decide");
        let reasons: Vec<_> = d.issued.iter().map(|i| (i.which, i.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("CA", IssueReason::Mismatch),
                ("xDS server", IssueReason::CaRotated),
                ("proxy issuer", IssueReason::CaRotated)
            ]
        );
        // Proxies and servers of the old CA keep connecting while the rotation rolls out.
        let bundle = pem_blocks(&d.certificates.trust_bundle);
        assert_eq!(bundle.len(), 2);
        let new_ca = parse(&d.certificates.ca.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&new_ca.der).expect("new CA");
        let bc = cert.basic_constraints().expect("bc").expect("present");
        assert_eq!(bc.value.path_len_constraint, Some(u32::from(CA_PATH_LEN)));
    }
}
