//! Echo backends for tests: HTTP/1.1 and h2c, HTTPS (ALPN h2 and http/1.1), and gRPC, each bound
//! to a chosen 127.x address. Every request is answered with a JSON [`Echo`] of what arrived, so a
//! test can assert on exactly what a proxy forwarded (path, headers, host, protocol, SNI).
//!
//! A request whose `content-type` starts with `application/grpc` gets a gRPC answer: one
//! length-prefixed message holding the JSON echo, and `grpc-status: 0` in the trailers.
//! A request header `x-echo-status: NNN` sets the HTTP status of a plain answer;
//! `x-echo-fail-times: N` with `x-echo-key: K` answers 503 to the first N requests carrying key
//! K (per process), for retry tests; `x-echo-delay-ms: D` holds the answer D milliseconds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::pki::CertPair;

/// What a backend saw of one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    /// Name the backend was started with.
    pub backend: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `:authority` or the `Host` header.
    pub host: Option<String>,
    /// Lower-case header names; repeated headers joined with `,`.
    pub headers: BTreeMap<String, String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    pub peer: String,
    pub tls: bool,
    /// SNI the client sent, for TLS connections.
    pub sni: Option<String>,
    pub body_len: usize,
}

/// Errors starting a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("backend certificate: {0}")]
    Certificate(String),
}

/// A running echo backend; stops (with all its connections) when dropped.
#[derive(Debug)]
pub struct EchoBackend {
    name: String,
    addr: SocketAddr,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    /// Plain HTTP (HTTP/1.1 and h2c, including gRPC over h2c) on `ip` and a free port.
    pub async fn http(name: &str, ip: IpAddr) -> Result<Self, BackendError> {
        Self::start(name, SocketAddr::new(ip, 0), None).await
    }

    /// Plain HTTP on exactly `addr`.
    pub async fn http_on(name: &str, addr: SocketAddr) -> Result<Self, BackendError> {
        Self::start(name, addr, None).await
    }

    /// HTTPS with `cert`, offering ALPN `h2` and `http/1.1`.
    pub async fn https(name: &str, ip: IpAddr, cert: &CertPair) -> Result<Self, BackendError> {
        Self::https_on(name, SocketAddr::new(ip, 0), cert).await
    }

    /// HTTPS with `cert` on exactly `addr`.
    pub async fn https_on(
        name: &str,
        addr: SocketAddr,
        cert: &CertPair,
    ) -> Result<Self, BackendError> {
        let certs = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Certificate(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
            .map_err(|e| BackendError::Certificate(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendError::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| BackendError::Certificate(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start(name, addr, Some(acceptor)).await
    }

    async fn start(
        name: &str,
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self, BackendError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BackendError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| BackendError::Bind { addr, source })?;
        let is_tls = tls.is_some();
        let backend_name: Arc<str> = Arc::from(name);
        let task = tokio::spawn(async move {
            // Dropping the set when this task is aborted aborts every connection with it.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let backend = backend_name.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve(TokioIo::new(stream), backend, peer, None).await,
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            serve(TokioIo::new(stream), backend, peer, Some(sni)).await;
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            name: name.to_owned(),
            addr,
            tls: is_tls,
            task,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port` or `https://ip:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw stream echo on one address, TCP and UDP: every TCP read and every datagram is answered
/// with `NAME:` followed by the bytes received, so a test can tell which backend a proxied
/// connection reached. Stops when dropped.
#[derive(Debug)]
pub struct StreamEcho {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StreamEcho {
    pub async fn start(name: &str, addr: SocketAddr) -> Result<Self, BackendError> {
        let bind = |source| BackendError::Bind { addr, source };
        let tcp = TcpListener::bind(addr).await.map_err(bind)?;
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(bind)?;
        let prefix: Arc<[u8]> = Arc::from(format!("{name}:").into_bytes());
        let tcp_prefix = prefix.clone();
        let tcp_task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let prefix = tcp_prefix.clone();
                connections.spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        let mut reply = prefix.to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        if stream.write_all(&reply).await.is_err() {
                            break;
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let mut reply = prefix.to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = udp.send_to(&reply, from).await;
            }
        });
        Ok(Self {
            tasks: vec![tcp_task, udp_task],
        })
    }
}

impl Drop for StreamEcho {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Requests seen per `{backend}/{x-echo-key}`, for `x-echo-fail-times`.
static ATTEMPTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u32>>> =
    std::sync::LazyLock::new(Default::default);

/// `None` for plain connections, `Some(sni)` for TLS ones.
type TlsInfo = Option<Option<String>>;

async fn serve<I>(io: I, backend: Arc<str>, peer: SocketAddr, tls: TlsInfo)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let backend = backend.clone();
        let tls = tls.clone();
        async move { Ok::<_, Infallible>(answer(req, &backend, peer, tls).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    backend: &str,
    peer: SocketAddr,
    tls: TlsInfo,
) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers = BTreeMap::<String, String>::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").cloned());
    let echo = Echo {
        backend: backend.to_owned(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        host,
        protocol: format!("{:?}", parts.version),
        peer: peer.to_string(),
        tls: tls.is_some(),
        sni: tls.flatten(),
        body_len,
        headers,
    };
    let json = serde_json::to_vec(&echo).unwrap_or_default();
    let is_grpc = echo
        .headers
        .get("content-type")
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        return grpc_answer(json);
    }
    if let Some(ms) = echo
        .headers
        .get("x-echo-delay-ms")
        .and_then(|d| d.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let failing = echo
        .headers
        .get("x-echo-fail-times")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|times| {
            let key = format!(
                "{backend}/{}",
                echo.headers.get("x-echo-key").map_or("", |k| k.as_str())
            );
            let mut attempts = ATTEMPTS.lock().unwrap_or_else(|p| p.into_inner());
            let seen = attempts.entry(key).or_insert(0);
            *seen += 1;
            *seen <= times
        });
    let status = if failing {
        Some(hyper::StatusCode::SERVICE_UNAVAILABLE)
    } else {
        None
    };
    let status = status
        .or_else(|| {
            echo.headers
                .get("x-echo-status")
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| hyper::StatusCode::from_u16(s).ok())
        })
        .unwrap_or(hyper::StatusCode::OK);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// One uncompressed gRPC message (5-byte prefix + payload) and an OK status in the trailers.
fn grpc_answer(payload: Vec<u8>) -> Response<EchoBody> {
    let mut frame = BytesMut::with_capacity(payload.len() + 5);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    frame.put_slice(&payload);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let body = Full::new(frame.freeze())
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Decodes the gRPC message of an echo answer (a 5-byte prefix, then the JSON).
pub fn decode_grpc_echo(body: &[u8]) -> Option<Echo> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    serde_json::from_slice(body.get(5..5 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_echo_frame_decodes_and_rejects_truncation() {
        let echo = Echo {
            backend: "b".into(),
            method: "POST".into(),
            path: "/svc/M".into(),
            query: None,
            host: None,
            headers: BTreeMap::new(),
            protocol: "HTTP/2.0".into(),
            peer: "127.0.0.1:1".into(),
            tls: false,
            sni: None,
            body_len: 0,
        };
        let json = serde_json::to_vec(&echo).expect("json");
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(json.len()).expect("len").to_be_bytes());
        frame.extend_from_slice(&json);
        assert_eq!(decode_grpc_echo(&frame), Some(echo));
        assert_eq!(decode_grpc_echo(&frame[..frame.len() - 1]), None);
        assert_eq!(decode_grpc_echo(&[0, 0]), None);
    }
}
