//! Proxy identities (pure): which Gateway an xDS peer may be served, from the client certificate
//! it presented.
//!
//! Every proxy of a Gateway holds a client certificate whose URI SAN names that Gateway:
//!
//! ```text
//! spiffe://<environment-namespace>/<environment-name>/gateway/<gateway-namespace>/<gateway-name>
//! ```
//!
//! The trust domain is the environment's namespace (a DNS label, so a valid SPIFFE trust
//! domain) and the path names the environment and the Gateway, so one namespace may hold several
//! environments without their identities colliding. The TLS layer has already verified the chain
//! against the environment's trust bundle and the client-auth usage; this module only reads the
//! identity and compares it with the Gateway the proxy claims in `node.cluster`
//! (`namespace/name`), which on its own is untrusted input.
//!
//! A certificate without such an identity (the environment-wide `envoy-proxy` certificate of
//! earlier versions, the xDS server's own certificate) authorizes nothing.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The environment whose proxies an xDS server serves; it scopes every identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentIdentity {
    namespace: String,
    name: String,
}

impl EnvironmentIdentity {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Everything before the Gateway's namespace.
    fn prefix(&self) -> String {
        format!("spiffe://{}/{}/gateway/", self.namespace, self.name)
    }

    /// The URI SAN of the proxies of Gateway `namespace/name`.
    pub fn gateway_uri(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.prefix())
    }

    /// The Gateway (`namespace/name`) a URI of this environment names; `None` for any other
    /// URI. Kubernetes names never contain `/`, so exactly two non-empty segments must follow.
    pub fn gateway_of_uri(&self, uri: &str) -> Option<String> {
        let rest = uri.strip_prefix(&self.prefix())?;
        let (namespace, name) = rest.split_once('/')?;
        let valid = |s: &str| !s.is_empty() && !s.contains('/');
        (valid(namespace) && valid(name)).then(|| format!("{namespace}/{name}"))
    }
}

/// How an xDS server decides which Gateway a stream may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// A server without TLS (the standalone Unix socket, local development): nothing proves who
    /// the peer is, so `node.cluster` is taken as it is. A peer that does present a certificate
    /// is refused, since then TLS is on and the server was built without the identities to check
    /// it against.
    TrustNodeCluster,
    /// Mutual TLS: the peer's certificate names the one Gateway it may be served.
    Certificate(EnvironmentIdentity),
}

/// Why a stream is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the proxy presented no client certificate, and this xDS server requires one")]
    NoCertificate,
    #[error(
        "the proxy presented a client certificate to an xDS server built without proxy identities"
    )]
    UnexpectedCertificate,
    #[error("the proxy's client certificate cannot be read: {0}")]
    Unreadable(String),
    #[error(
        "the proxy's client certificate (subject {subject:?}) names no Gateway of environment {environment}"
    )]
    NoGateway {
        subject: String,
        environment: String,
    },
    #[error("the proxy's client certificate names several Gateways: {}", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error(
        "the proxy's certificate is Gateway {certified}'s, but its node.cluster claims Gateway {claimed}"
    )]
    Mismatch { certified: String, claimed: String },
}

impl IdentityError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            IdentityError::NoCertificate => "no_certificate",
            IdentityError::UnexpectedCertificate => "unexpected_certificate",
            IdentityError::Unreadable(_) => "unreadable",
            IdentityError::NoGateway { .. } => "no_gateway",
            IdentityError::Ambiguous(_) => "ambiguous",
            IdentityError::Mismatch { .. } => "mismatch",
        }
    }
}

/// The Gateway (`namespace/name`) the certificate chain `chain` (leaf first, as TLS delivers it)
/// may be served. Only the leaf speaks for the peer: an intermediate's names are not its own.
pub fn certified_gateway(
    environment: &EnvironmentIdentity,
    chain: &[CertificateDer<'_>],
) -> Result<String, IdentityError> {
    let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    let mut gateways: Vec<String> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => environment.gateway_of_uri(uri),
            _ => None,
        })
        .collect();
    gateways.sort();
    gateways.dedup();
    match gateways.len() {
        0 => Err(IdentityError::NoGateway {
            subject: cert.subject().to_string(),
            environment: format!("{}/{}", environment.namespace, environment.name),
        }),
        1 => Ok(gateways.remove(0)),
        _ => Err(IdentityError::Ambiguous(gateways)),
    }
}

/// Whether a stream from a peer with `chain` (`None` without TLS) that claims Gateway `claimed`
/// in `node.cluster` may be served that Gateway's configuration.
pub fn authorize(
    policy: &PeerPolicy,
    chain: Option<&[CertificateDer<'_>]>,
    claimed: &str,
) -> Result<(), IdentityError> {
    let chain = chain.filter(|c| !c.is_empty());
    match (policy, chain) {
        (PeerPolicy::TrustNodeCluster, None) => Ok(()),
        (PeerPolicy::TrustNodeCluster, Some(_)) => Err(IdentityError::UnexpectedCertificate),
        (PeerPolicy::Certificate(_), None) => Err(IdentityError::NoCertificate),
        (PeerPolicy::Certificate(environment), Some(chain)) => {
            let certified = certified_gateway(environment, chain)?;
            if certified == claimed {
                Ok(())
            } else {
                Err(IdentityError::Mismatch {
                    certified,
                    claimed: claimed.to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn env() -> EnvironmentIdentity {
        EnvironmentIdentity::new("eg-production", "production")
    }

    fn cert(cn: &str, uris: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().expect("ia5")))
            .collect();
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn the_uri_round_trips_and_is_scoped_to_the_environment() {
        let uri = env().gateway_uri("shop", "public");
        assert_eq!(uri, "spiffe://eg-production/production/gateway/shop/public");
        assert_eq!(env().gateway_of_uri(&uri).as_deref(), Some("shop/public"));
        let staging = EnvironmentIdentity::new("eg-production", "staging");
        assert_eq!(staging.gateway_of_uri(&uri), None, "another environment");
        for bad in [
            "spiffe://eg-production/production/gateway/shop",
            "spiffe://eg-production/production/gateway/shop/",
            "spiffe://eg-production/production/gateway/shop/public/extra",
            "spiffe://eg-production/production/gateway//public",
            "https://eg-production/production/gateway/shop/public",
        ] {
            assert_eq!(env().gateway_of_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certificate_is_mapped_to_the_gateway_its_leaf_names() {
        let leaf = cert("proxy", &[&env().gateway_uri("shop", "public")]);
        // An intermediate after the leaf never speaks for the peer.
        let other = cert("issuer", &[&env().gateway_uri("shop", "admin")]);
        assert_eq!(
            certified_gateway(&env(), &[leaf, other]).as_deref(),
            Ok("shop/public")
        );
    }

    #[test]
    fn certificates_without_one_gateway_identity_map_to_nothing() {
        let legacy = cert("envoy-proxy", &[]);
        let err = certified_gateway(&env(), &[legacy]).expect_err("legacy certificate");
        assert_eq!(err.category(), "no_gateway");
        assert!(err.to_string().contains("envoy-proxy"), "{err}");

        let foreign = cert(
            "proxy",
            &[&EnvironmentIdentity::new("eg-staging", "staging").gateway_uri("shop", "public")],
        );
        assert_eq!(
            certified_gateway(&env(), &[foreign]).map_err(|e| e.category()),
            Err("no_gateway")
        );

        let two = cert(
            "proxy",
            &[
                &env().gateway_uri("shop", "public"),
                &env().gateway_uri("shop", "admin"),
            ],
        );
        assert_eq!(
            certified_gateway(&env(), &[two]),
            Err(IdentityError::Ambiguous(vec![
                "shop/admin".into(),
                "shop/public".into()
            ]))
        );
        assert_eq!(
            certified_gateway(&env(), &[CertificateDer::from(vec![1, 2, 3])])
                .map_err(|e| e.category()),
            Err("unreadable")
        );
    }

    #[test]
    fn a_stream_is_served_only_the_gateway_its_certificate_names() {
        let policy = PeerPolicy::Certificate(env());
        let chain = [cert("proxy", &[&env().gateway_uri("shop", "public")])];
        assert_eq!(authorize(&policy, Some(&chain), "shop/public"), Ok(()));
        assert_eq!(
            authorize(&policy, Some(&chain), "shop/admin"),
            Err(IdentityError::Mismatch {
                certified: "shop/public".into(),
                claimed: "shop/admin".into()
            })
        );
        assert_eq!(
            authorize(&policy, None, "shop/public"),
            Err(IdentityError::NoCertificate)
        );
        assert_eq!(
            authorize(&policy, Some(&[]), "shop/public"),
            Err(IdentityError::NoCertificate)
        );
    }

    #[test]
    fn without_tls_node_cluster_is_trusted_and_certificates_are_not() {
        let policy = PeerPolicy::TrustNodeCluster;
        assert_eq!(authorize(&policy, None, "shop/public"), Ok(()));
        let chain = [cert("proxy", &[&env().gateway_uri("shop", "public")])];
        assert_eq!(
            authorize(&policy, Some(&chain), "shop/public"),
            Err(IdentityError::UnexpectedCertificate)
        );
    }
}
