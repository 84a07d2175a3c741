//! Certificates for the test control plane: a throwaway CA, the apiserver's serving certificate
//! for 127.0.0.1/localhost, an admin client certificate in `system:masters`, and the
//! service-account signing key. Generated with rcgen, the project's certificate library.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A PEM certificate with its PEM private key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the control plane needs.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    pub ca: CertPair,
    pub apiserver: CertPair,
    pub admin: CertPair,
    /// PKCS#8 PEM private key that signs service-account tokens.
    pub service_account_key_pem: String,
    /// Its public key (PEM), which verifies them.
    pub service_account_pub_pem: String,
}

/// A CA that signs leaf certificates.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn server_cert(&self, common_name: &str, sans: &[&str]) -> Result<CertPair, rcgen::Error> {
        self.leaf(common_name, None, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate; `organization` becomes the Kubernetes group.
    pub fn client_cert(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> Result<CertPair, rcgen::Error> {
        self.leaf(
            common_name,
            organization,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<CertPair, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(common_name, organization);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

impl ClusterPki {
    pub fn generate() -> Result<Self, rcgen::Error> {
        let ca = TestCa::new("eg-testcluster-ca")?;
        let apiserver = ca.server_cert(
            "kube-apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default.svc",
            ],
        )?;
        let admin = ca.client_cert("eg-admin", Some("system:masters"))?;
        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca: CertPair {
                cert_pem: ca.cert_pem.clone(),
                key_pem: ca.key_pem.clone(),
            },
            apiserver,
            admin,
            service_account_key_pem: service_account.serialize_pem(),
            service_account_pub_pem: service_account.public_key_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_is_pem() {
        let pki = ClusterPki::generate().expect("pki");
        assert!(pki.ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.apiserver.key_pem.contains("PRIVATE KEY"));
        assert!(pki.service_account_key_pem.contains("PRIVATE KEY"));
        assert_ne!(pki.apiserver.cert_pem, pki.admin.cert_pem);
    }
}
