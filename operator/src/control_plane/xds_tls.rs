//! Mutual TLS for the xDS server with certificates that follow their files. The operator
//! rotates the xDS server certificate and the CA ahead of expiry and Kubernetes updates the
//! mounted Secret in place; a TLS configuration read once at start would serve the old
//! certificate until it expires. Here every accepted connection uses the latest configuration,
//! and the files are re-read periodically (a changed file set builds a new configuration; a
//! broken one is logged and the previous configuration stays).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why the TLS configuration cannot be built from the files.
#[derive(Debug, thiserror::Error)]
pub enum XdsTlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl XdsTlsError {
    pub fn category(&self) -> &'static str {
        match self {
            XdsTlsError::Read { .. } => "read",
            XdsTlsError::Pem { .. } => "pem",
            XdsTlsError::Config(_) => "tls_config",
        }
    }
}

/// `tls.crt`, `tls.key` and `ca.crt` (the trust bundle for client certificates) in one dir.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

fn read_material(dir: &Path) -> Result<Material, XdsTlsError> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|source| XdsTlsError::Read { path, source })
    };
    Ok(Material {
        cert: read("tls.crt")?,
        key: read("tls.key")?,
        ca: read("ca.crt")?,
    })
}

fn server_config(dir: &Path, m: &Material) -> Result<Arc<rustls::ServerConfig>, XdsTlsError> {
    let pem = |file: &str, message: String| XdsTlsError::Pem {
        path: dir.join(file),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&m.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("tls.crt", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&m.key).map_err(|e| pem("tls.key", e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&m.ca) {
        let ca = ca.map_err(|e| pem("ca.crt", e.to_string()))?;
        roots.add(ca).map_err(|e| pem("ca.crt", e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| XdsTlsError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| XdsTlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| XdsTlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration, shared by the accept loop and the reloader.
#[derive(Debug, Clone)]
pub struct ReloadingTls {
    dir: PathBuf,
    current: Arc<RwLock<(Material, Arc<rustls::ServerConfig>)>>,
}

impl ReloadingTls {
    /// Reads the files once; fails when they do not form a valid configuration.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, XdsTlsError> {
        let dir = dir.into();
        let material = read_material(&dir)?;
        let config = server_config(&dir, &material)?;
        Ok(Self {
            dir,
            current: Arc::new(RwLock::new((material, config))),
        })
    }

    /// Re-reads the files; returns whether a new configuration took effect.
    pub fn reload(&self) -> Result<bool, XdsTlsError> {
        let material = read_material(&self.dir)?;
        if self
            .current
            .read()
            .map(|c| c.0 == material)
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let config = server_config(&self.dir, &material)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = (material, config);
        Ok(true)
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.1.clone())
    }

    /// Re-reads the files every `period` for as long as the returned task runs.
    pub fn watch(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(dir = %this.dir.display(), "xDS certificates reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, category = e.category(), "xDS certificates not reloaded; the previous ones stay in use")
                    }
                }
            }
        })
    }

    /// TLS connections accepted on `listener`, each with the configuration current at its
    /// accept. Handshakes run concurrently so one slow client cannot stall the rest.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "xDS accept failed");
                        continue;
                    }
                };
                let acceptor = this.acceptor();
                let sender = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "xDS TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "xDS TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_stream::StreamExt;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, ca: &Ca, name: &str) {
        let (cert, key) = leaf(ca, name);
        std::fs::write(dir.join("tls.crt"), cert).expect("write");
        std::fs::write(dir.join("tls.key"), key).expect("write");
        std::fs::write(dir.join("ca.crt"), &ca.pem).expect("write");
    }

    /// Connects with a client certificate of `ca` trusting `ca`; returns the server's
    /// certificate, or `None` when the handshake fails.
    async fn handshake(addr: std::net::SocketAddr, ca: &Ca, server_name: &str) -> Option<Vec<u8>> {
        let (cert, key) = leaf(ca, "proxy");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).ok()?)
            .ok()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).ok()?],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).ok()?,
            )
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).ok()?;
        let mut stream = connector.connect(name, tcp).await.ok()?;
        // TLS 1.3 reports a rejected client certificate only on the first read.
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        let (_, session) = stream.get_ref();
        session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
    }

    #[tokio::test]
    async fn rotated_files_serve_new_connections_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old_ca = ca("old");
        write(dir.path(), &old_ca, "xds.old");
        let tls = ReloadingTls::load(dir.path()).expect("loads");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = tls.incoming(listener);
        tokio::spawn(async move {
            // Keep accepted streams alive briefly so clients can read.
            let mut held = Vec::new();
            while let Some(s) = incoming.next().await {
                held.push(s);
            }
        });
        assert!(handshake(addr, &old_ca, "xds.old").await.is_some());

        let new_ca = ca("new");
        write(dir.path(), &new_ca, "xds.new");
        assert!(tls.reload().expect("reloads"), "new files take effect");
        assert!(
            !tls.reload().expect("reloads"),
            "unchanged files change nothing"
        );
        assert!(handshake(addr, &new_ca, "xds.new").await.is_some());
        assert!(
            handshake(addr, &old_ca, "xds.old").await.is_none(),
            "the old certificate is no longer served"
        );

        // A broken file keeps the previous configuration.
        std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
        assert_eq!(tls.reload().map_err(|e| e.category()), Err("pem"));
        assert!(handshake(addr, &new_ca, "xds.new").await.is_some());
    }
}
