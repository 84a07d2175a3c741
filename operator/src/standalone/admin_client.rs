//! A minimal HTTP/1.1 client for Envoy's admin API on loopback (drain, config dump). One
//! request per connection: these calls are rare and a pooled client would be dead weight.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Errors talking to an Envoy admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP to {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Sends `method path` to the admin API at `addr`; returns the status code and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), AdminClientError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| AdminClientError::Connect { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|source| AdminClientError::Http { addr, source })?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
