//! The kubelet's HTTPS endpoint, the one a Node reports as `daemonEndpoints.kubeletEndpoint`: the
//! apiserver proxies `pods/log` (so `kubectl logs`) to its `/containerLogs/...`. A thin shell
//! around [`logs`](super::logs): parse, look the container up in the index the kubelet's loop
//! keeps, read the file, select its lines. Everything else is a 404, as are unknown pods.
//!
//! The serving certificate is self-signed for the node address: without
//! `--kubelet-certificate-authority` the apiserver does not verify kubelets' certificates, and it
//! authenticates to them with no client certificate here, so there is nothing to check either way.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::logs::{LogError, LogIndex, locate, parse_request, select};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubelet server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet serving certificate: {0}")]
    Certificate(String),
}

/// The index of running pods' logs, written by the kubelet's loop, read per request.
pub type SharedIndex = Arc<Mutex<LogIndex>>;

/// A running kubelet server; stops (with its connections) when dropped.
#[derive(Debug)]
pub struct KubeletServer {
    task: tokio::task::JoinHandle<()>,
    pub port: u16,
}

impl KubeletServer {
    /// Serves on `address` and a free port (each kubelet of a machine has its own).
    pub async fn start(address: Ipv4Addr, index: SharedIndex) -> Result<Self, ServerError> {
        let acceptor = tls_acceptor(address)?;
        let addr = SocketAddr::from((address, 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?
            .port();
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, index) = (acceptor.clone(), index.clone());
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let index = index.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &index).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Finished connections are reaped here so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { task, port })
    }
}

impl Drop for KubeletServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_acceptor(address: Ipv4Addr) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let failed = |e: &dyn std::fmt::Display| ServerError::Certificate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| failed(&e))?;
    let params =
        rcgen::CertificateParams::new(vec![address.to_string()]).map_err(|e| failed(&e))?;
    let cert = params.self_signed(&key).map_err(|e| failed(&e))?;
    let certs: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| failed(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn answer(req: &Request<Incoming>, index: &SharedIndex) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        );
    }
    match read_log(req, index).await {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            text(status, format!("{e}\n"))
        }
    }
}

async fn read_log(req: &Request<Incoming>, index: &SharedIndex) -> Result<String, LogError> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let request = parse_request(req.uri().path(), req.uri().query().unwrap_or(""), now)?;
    let path = {
        let index = index.lock().unwrap_or_else(|p| p.into_inner());
        locate(&index, &request)?
    };
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        LogError::NotFound(format!("log of {}/{}: {e}", request.namespace, request.pod))
    })?;
    Ok(select(&String::from_utf8_lossy(&bytes), &request.options))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
