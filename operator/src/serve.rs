//! The operator's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (the process is alive)
//! and `/readyz` (the controller has started), and [`serve_with`] for processes with more routes
//! (standalone mode's admin API). Plain hyper: a few fixed routes need no framework.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Whether the process is ready to be counted as a serving replica.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn respond(request_path: &str, metrics: &Metrics, ready: &Readiness) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request_path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" if ready.get() => (StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    };
    reply(status, content_type, body)
}

/// An HTTP response of these small endpoint servers.
pub type HttpResponse = Response<Full<Bytes>>;

/// Answers a request path (the handler of [`serve_with`]).
pub type Handler = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = HttpResponse> + Send>>
        + Send
        + Sync,
>;

/// A response with a status, content type and body.
pub fn reply(status: StatusCode, content_type: &str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let handler: Handler = Arc::new(move |path: String| {
        let response = respond(&path, &metrics, &ready);
        Box::pin(async move { response })
    });
    serve_with(addr, handler).await
}

/// Binds `addr` and answers every request with `handler` (by path) until the task is dropped.
pub async fn serve_with(
    addr: SocketAddr,
    handler: Handler,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let response = handler(req.uri().path().to_owned());
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_answer_as_documented() {
        let metrics = Metrics::default();
        let ready = Readiness::default();
        assert_eq!(
            respond("/healthz", &metrics, &ready).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/readyz", &metrics, &ready).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.set(true);
        assert_eq!(
            respond("/readyz", &metrics, &ready).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/metrics", &metrics, &ready).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond("/nope", &metrics, &ready).status(),
            StatusCode::NOT_FOUND
        );
    }
}
