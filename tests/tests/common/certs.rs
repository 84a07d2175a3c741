// Included by test binaries of both crates (eg-e2e through `common`, eg-operator by path);
// each uses a different subset.
#![allow(dead_code)]

//! Certificates as the operator and the fleet task issue them, for tests that start proxies
//! with real mutual TLS.

use std::time::Duration;

use eg_operator::environment::names::Names;

/// The environment's certificates (valid for an hour) and the client certificate of Gateway
/// `namespace/name` as its fleet Secret holds it, made by the functions the operator and the
/// fleet task call.
pub fn certificates_for(
    names: &Names,
    (namespace, name): (&str, &str),
) -> (
    eg_operator::environment::build::EnvironmentCertificates,
    eg_operator::fleet::build::ClientCertificate,
) {
    use eg_operator::environment::certificates::{ExistingCertificates, decide};
    use eg_operator::environment::validate::CertificateLifetimes;
    let now = std::time::SystemTime::now();
    let lifetimes = CertificateLifetimes {
        duration: Duration::from_secs(3600),
        renew_before: Duration::from_secs(600),
    };
    let certs = decide(&ExistingCertificates::default(), lifetimes, names, now)
        .expect("environment certificates")
        .certificates;
    let gateway = gateway_certificate(&certs, names, (namespace, name));
    (certs, gateway)
}

/// A fresh client certificate of Gateway `namespace/name`, signed by the environment's proxy
/// issuer as the fleet task signs it.
pub fn gateway_certificate(
    certs: &eg_operator::environment::build::EnvironmentCertificates,
    names: &Names,
    (namespace, name): (&str, &str),
) -> eg_operator::fleet::build::ClientCertificate {
    use eg_operator::fleet::certificate::{self, ProxyIssuer, Signer};
    use eg_operator::xds::identity::EnvironmentIdentity;
    let signer = Signer::new(ProxyIssuer::from(certs)).expect("proxy issuer");
    let identity = EnvironmentIdentity::new(names.namespace(), names.environment());
    certificate::decide(
        &signer,
        &identity,
        (namespace, name),
        None,
        std::time::SystemTime::now(),
    )
    .expect("gateway certificate")
    .certificate
}
