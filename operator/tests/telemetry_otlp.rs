//! `--otlp-endpoint`: spans of a real `eg-operator` run arrive at an OTLP/HTTP collector (a
//! small hyper server here that decodes the export requests with OpenTelemetry's protos).

use std::convert::Infallible;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

type Received = Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>;

async fn collector() -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                                store.lock().expect("lock").push((path, export));
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

#[tokio::test]
async fn spans_are_exported_to_the_otlp_endpoint() {
    let (addr, received) = collector().await;
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/translate/golden/basic-http/input.yaml"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_eg-operator"))
            .args([
                "--otlp-endpoint",
                &format!("http://{addr}"),
                "--otlp-service-name",
                "eg-test",
            ])
            .args(["translate", "-f", input])
            .output()
            .expect("runs")
    })
    .await
    .expect("joins");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let received = received.lock().expect("lock").clone();
    assert!(!received.is_empty(), "no export request arrived");
    assert!(received.iter().all(|(path, _)| path == "/v1/traces"));
    let spans: Vec<String> = received
        .iter()
        .flat_map(|(_, r)| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect();
    assert!(
        spans.contains(&"translate".to_owned()) && spans.contains(&"load".to_owned()),
        "{spans:?}"
    );
    let service_names: Vec<String> = received
        .iter()
        .flat_map(|(_, r)| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .map(|a| format!("{:?}", a.value))
        .collect();
    assert!(
        service_names.iter().all(|v| v.contains("eg-test")) && !service_names.is_empty(),
        "{service_names:?}"
    );
}

#[test]
fn without_an_endpoint_the_command_needs_no_collector() {
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/translate/golden/basic-http/input.yaml"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_eg-operator"))
        .args(["translate", "-f", input])
        .env_remove("EG_OTLP_ENDPOINT")
        .output()
        .expect("runs");
    assert!(output.status.success());
}
