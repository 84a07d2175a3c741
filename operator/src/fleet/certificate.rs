//! Each Gateway's proxy client certificate (pure; the clock is an input), signed by the
//! environment's proxy issuer (see [`crate::environment::certificates`]).
//!
//! The certificate's only name is a URI SAN naming the Gateway
//! ([`EnvironmentIdentity::gateway_uri`]); the xDS server serves a stream only the Gateway its
//! peer's certificate names. `tls.crt` holds the leaf followed by the issuer, so Envoy presents
//! the chain the server verifies against the environment's CA.
//!
//! Like the environment's certificates, a valid live certificate is kept byte for byte (a pass
//! must not churn Secrets or make every proxy reload). It is issued anew when it is missing,
//! unreadable, names something else, no longer belongs to its key, was signed by an issuer that
//! has since been renewed, or has expired. A leaf expires with its issuer, and the operator renews
//! the issuer `renewBefore` ahead of expiry; the next fleet pass then re-signs every Gateway's
//! certificate. Proxies holding the previous chain keep connecting while the new one reaches
//! them, since the previous issuer stays valid and its CA stays in the trust bundle.

use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::extensions::GeneralName;

use super::build::ClientCertificate;
use crate::environment::build::EnvironmentCertificates;
use crate::environment::certificates::{
    IssueReason, SecretPem, key_matches, parse_first, pem_blocks, unix_seconds, validity,
};
use crate::xds::identity::EnvironmentIdentity;

/// The environment's proxy issuer, as its Secret holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIssuer {
    /// Every CA certificate to trust now (the Secret's `ca.crt`).
    pub trust_bundle: String,
    /// The issuer's certificate (`tls.crt`) and key (`tls.key`).
    pub cert: String,
    pub key: String,
}

impl From<&EnvironmentCertificates> for ProxyIssuer {
    fn from(c: &EnvironmentCertificates) -> Self {
        Self {
            trust_bundle: c.trust_bundle.clone(),
            cert: c.proxy_issuer.cert.clone(),
            key: c.proxy_issuer.key.clone(),
        }
    }
}

/// Why a Gateway's certificate cannot be issued.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the proxy issuer's certificate or key cannot be used: {0}")]
    Issuer(String),
    #[error("signing the proxy certificate of Gateway {gateway}: {source}")]
    Sign {
        gateway: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the clock is before 1970")]
    Clock,
}

impl CertificateError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            CertificateError::Issuer(_) => "issuer",
            CertificateError::Sign { .. } => "sign",
            CertificateError::Clock => "clock",
        }
    }
}

/// The proxy issuer, parsed once per pass and shared by every Gateway's decision.
pub struct Signer {
    issuer: ProxyIssuer,
    signing: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    not_after: i64,
}

impl std::fmt::Debug for Signer {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(issuer: ProxyIssuer) -> Result<Self, CertificateError> {
        let unusable = |e: &dyn std::fmt::Display| CertificateError::Issuer(e.to_string());
        let info = parse_first(&issuer.cert).ok_or_else(|| unusable(&"no certificate"))?;
        let key = KeyPair::from_pem(&issuer.key).map_err(|e| unusable(&e))?;
        if !key_matches(&info.der, &issuer.key) {
            return Err(unusable(&"the key does not belong to the certificate"));
        }
        let signing = Issuer::from_ca_cert_pem(&issuer.cert, key).map_err(|e| unusable(&e))?;
        Ok(Self {
            issuer,
            signing,
            issuer_der: info.der,
            not_after: info.not_after,
        })
    }
}

/// A Gateway's certificate, and why it was issued (`None`: the live one was kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub certificate: ClientCertificate,
    pub issued: Option<IssueReason>,
}

/// Decides the certificate of the proxies of Gateway `namespace/name` at `now`; `live` is the
/// fleet's current certificate Secret, if any.
pub fn decide(
    signer: &Signer,
    environment: &EnvironmentIdentity,
    (namespace, name): (&str, &str),
    live: Option<&SecretPem>,
    now: SystemTime,
) -> Result<Decision, CertificateError> {
    let now_s = unix_seconds(now).map_err(|_| CertificateError::Clock)?;
    let uri = environment.gateway_uri(namespace, name);
    let check = match live {
        None => Err(IssueReason::Missing),
        Some(s) => check(signer, s, &uri, now_s),
    };
    let issued = check.err();
    let (tls_crt, tls_key) = match (issued, live) {
        (None, Some(s)) => (s.tls_crt.clone(), s.tls_key.clone()),
        _ => issue(signer, &uri, now).map_err(|source| CertificateError::Sign {
            gateway: format!("{namespace}/{name}"),
            source,
        })?,
    };
    Ok(Decision {
        certificate: ClientCertificate {
            // The bundle follows CA rotations even while the leaf is kept.
            ca_crt: signer.issuer.trust_bundle.clone(),
            tls_crt,
            tls_key,
        },
        issued,
    })
}

fn check(signer: &Signer, s: &SecretPem, uri: &str, now: i64) -> Result<(), IssueReason> {
    let blocks = pem_blocks(&s.tls_crt);
    let [(_, leaf), (_, chained)] = blocks.as_slice() else {
        return Err(IssueReason::Unreadable);
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(&leaf.der).map_err(|_| IssueReason::Unreadable)?;
    let (_, issuer) = x509_parser::parse_x509_certificate(&signer.issuer_der)
        .map_err(|_| IssueReason::Unreadable)?;
    if cert.verify_signature(Some(issuer.public_key())).is_err() || chained.der != signer.issuer_der
    {
        return Err(IssueReason::IssuerRotated);
    }
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|g| match g {
                    GeneralName::URI(u) => (*u).to_owned(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if names != [uri] {
        return Err(IssueReason::Mismatch);
    }
    if !key_matches(&leaf.der, &s.tls_key) {
        return Err(IssueReason::Mismatch);
    }
    if leaf.not_after <= now {
        return Err(IssueReason::Expiring);
    }
    Ok(())
}

/// A new key and a leaf naming `uri`, valid as long as the issuer; returns the chain and key.
fn issue(signer: &Signer, uri: &str, now: SystemTime) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    // Informational only: the URI SAN is the identity.
    dn.push(DnType::CommonName, "envoy-gateway-proxy");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, signer.not_after);
    let cert = params.signed_by(&key, &signer.signing)?;
    let mut chain = cert.pem();
    chain.push_str(signer.issuer.cert.trim_end());
    chain.push('\n');
    Ok((chain, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;
    use crate::environment::certificates::{self, ExistingCertificates};
    use crate::environment::names::Names;
    use crate::environment::validate::CertificateLifetimes;
    use crate::xds::identity::certified_gateway;

    const HOUR: Duration = Duration::from_secs(3600);

    fn lifetimes() -> CertificateLifetimes {
        CertificateLifetimes {
            duration: HOUR * 10,
            renew_before: HOUR * 2,
        }
    }

    fn env() -> EnvironmentIdentity {
        EnvironmentIdentity::new("eg-production", "production")
    }

    fn environment_certificates(
        existing: &ExistingCertificates,
        now: SystemTime,
    ) -> EnvironmentCertificates {
        certificates::decide(
            existing,
            lifetimes(),
            &Names::new("eg-production", "production"),
            now,
        )
        .expect("environment certificates")
        .certificates
    }

    fn signer(c: &EnvironmentCertificates) -> Signer {
        Signer::new(ProxyIssuer::from(c)).expect("signer")
    }

    fn live(c: &ClientCertificate) -> SecretPem {
        SecretPem {
            ca_crt: c.ca_crt.clone(),
            tls_crt: c.tls_crt.clone(),
            tls_key: c.tls_key.clone(),
        }
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        pem_blocks(pem)
            .into_iter()
            .map(|(_, info)| CertificateDer::from(info.der))
            .collect()
    }

    /// Verifies `tls_crt` as a client chain the way the xDS server does (rustls, the trust
    /// bundle as roots, client-auth usage along the chain).
    fn verifies(trust_bundle: &str, tls_crt: &str, at: SystemTime) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in chain(trust_bundle) {
            roots.add(ca).expect("root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .expect("verifier");
        let certs = chain(tls_crt);
        let (leaf, intermediates) = certs.split_first().expect("leaf");
        verifier
            .verify_client_cert(
                leaf,
                intermediates,
                UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).expect("after 1970")),
            )
            .map(|_| ())
    }

    #[test]
    fn a_gateway_gets_a_chain_the_xds_server_accepts_and_maps_to_it() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let c = environment_certificates(&ExistingCertificates::default(), t0);
        let d = decide(&signer(&c), &env(), ("shop", "public"), None, t0).expect("decide");
        assert_eq!(d.issued, Some(IssueReason::Missing));
        assert_eq!(d.certificate.ca_crt, c.trust_bundle);
        let certs = chain(&d.certificate.tls_crt);
        assert_eq!(certs.len(), 2, "leaf and issuer");
        verifies(&c.trust_bundle, &d.certificate.tls_crt, t0 + HOUR).expect("chain verifies");
        assert_eq!(
            certified_gateway(&env(), &certs).as_deref(),
            Ok("shop/public")
        );
        assert!(
            verifies(&c.trust_bundle, &d.certificate.tls_crt, t0 + HOUR * 11).is_err(),
            "the leaf expires with the issuer"
        );
    }

    #[test]
    fn the_issuer_cannot_sign_for_servers_or_sign_a_leaf_without_its_chain() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let c = environment_certificates(&ExistingCertificates::default(), t0);
        let d = decide(&signer(&c), &env(), ("shop", "public"), None, t0).expect("decide");
        let leaf_only = pem_blocks(&d.certificate.tls_crt).remove(0).0;
        assert!(
            verifies(&c.trust_bundle, &leaf_only, t0 + HOUR).is_err(),
            "the CA alone does not vouch for a leaf of the issuer"
        );
        // A server certificate signed with the issuer is refused: the issuer's extended key
        // usage (client-auth only) binds every certificate below it.
        let s = signer(&c);
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["xds.example".to_owned()]).expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&key, &s.signing).expect("signs");
        let mut roots = rustls::RootCertStore::empty();
        for ca in chain(&c.trust_bundle) {
            roots.add(ca).expect("root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .expect("verifier");
        let refused = verifier.verify_server_cert(
            server.der(),
            &[CertificateDer::from(s.issuer_der.clone())],
            &rustls::pki_types::ServerName::try_from("xds.example").expect("name"),
            &[],
            UnixTime::since_unix_epoch((t0 + HOUR).duration_since(UNIX_EPOCH).expect("time")),
        );
        assert!(
            matches!(
                &refused,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::InvalidPurposeContext { .. }
                ))
            ),
            "{refused:?}"
        );

        // The issuer's extended key usage is client-auth only.
        let info = parse_first(&c.proxy_issuer.cert).expect("issuer");
        let (_, issuer) = x509_parser::parse_x509_certificate(&info.der).expect("issuer");
        let eku = issuer.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        let bc = issuer.basic_constraints().expect("bc").expect("present");
        assert_eq!((bc.value.ca, bc.value.path_len_constraint), (true, Some(0)));
    }

    #[test]
    fn a_valid_certificate_is_kept_and_a_wrong_one_reissued() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let c = environment_certificates(&ExistingCertificates::default(), t0);
        let s = signer(&c);
        let first = decide(&s, &env(), ("shop", "public"), None, t0).expect("first");
        let again = decide(
            &s,
            &env(),
            ("shop", "public"),
            Some(&live(&first.certificate)),
            t0 + HOUR,
        )
        .expect("again");
        assert_eq!(
            again,
            Decision {
                issued: None,
                ..first.clone()
            }
        );

        // Another Gateway's Secret copied over this one's is not this Gateway's identity.
        let moved = decide(
            &s,
            &env(),
            ("shop", "admin"),
            Some(&live(&first.certificate)),
            t0,
        )
        .expect("moved");
        assert_eq!(moved.issued, Some(IssueReason::Mismatch));
        let certs = chain(&moved.certificate.tls_crt);
        assert_eq!(
            certified_gateway(&env(), &certs).as_deref(),
            Ok("shop/admin")
        );

        let mut foreign_key = live(&first.certificate);
        foreign_key.tls_key = moved.certificate.tls_key.clone();
        let d = decide(&s, &env(), ("shop", "public"), Some(&foreign_key), t0).expect("key");
        assert_eq!(d.issued, Some(IssueReason::Mismatch));

        let mut garbage = live(&first.certificate);
        garbage.tls_crt = "garbage".into();
        let d = decide(&s, &env(), ("shop", "public"), Some(&garbage), t0).expect("garbage");
        assert_eq!(d.issued, Some(IssueReason::Unreadable));
    }

    #[test]
    fn a_renewed_issuer_re_signs_while_the_previous_chain_still_verifies() {
        let t0 = UNIX_EPOCH + HOUR * 500_000;
        let c = environment_certificates(&ExistingCertificates::default(), t0);
        let first = decide(&signer(&c), &env(), ("shop", "public"), None, t0).expect("first");
        // 9 h later the 10 h CA and issuer are within renewBefore: both are renewed.
        let existing = ExistingCertificates {
            ca: Some(SecretPem {
                ca_crt: c.trust_bundle.clone(),
                tls_crt: c.ca.cert.clone(),
                tls_key: c.ca.key.clone(),
            }),
            xds_server: None,
            proxy_issuer: Some(SecretPem {
                ca_crt: c.trust_bundle.clone(),
                tls_crt: c.proxy_issuer.cert.clone(),
                tls_key: c.proxy_issuer.key.clone(),
            }),
        };
        let t1 = t0 + HOUR * 9;
        let rotated = environment_certificates(&existing, t1);
        assert_ne!(rotated.proxy_issuer, c.proxy_issuer);
        let d = decide(
            &signer(&rotated),
            &env(),
            ("shop", "public"),
            Some(&live(&first.certificate)),
            t1,
        )
        .expect("re-signed");
        assert_eq!(d.issued, Some(IssueReason::IssuerRotated));
        assert_eq!(d.certificate.ca_crt, rotated.trust_bundle);
        verifies(&rotated.trust_bundle, &d.certificate.tls_crt, t1).expect("new chain");
        verifies(&rotated.trust_bundle, &first.certificate.tls_crt, t1)
            .expect("the previous chain keeps connecting during the rollout");
    }
}
