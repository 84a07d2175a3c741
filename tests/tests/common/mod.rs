// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

//! Shared by the Gateway API end-to-end tests and the latency benchmark: an in-process control
//! plane (provider, translator, ADS server) for some namespaces, and an Envoy for one Gateway.

pub mod certs;
pub mod jwt;

use std::net::SocketAddr;

use eg_e2e::LOOPBACK;
use eg_e2e::envoy::EnvoyProcess;
use eg_operator::control_plane::run::{ControlPlaneSettings, run};
use eg_operator::xds::bootstrap::{AdsFlavour, BootstrapSpec, bootstrap};
use eg_operator::xds::from_ir::ListenerBinding;
use eg_operator::xds::server::{AdsServer, SnapshotStore};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio_stream::wrappers::TcpListenerStream;

/// A running control plane; stops when dropped.
pub struct ControlPlane {
    pub xds: SocketAddr,
    loop_task: tokio::task::JoinHandle<()>,
    server_task: tokio::task::JoinHandle<()>,
    _leader: tokio::sync::watch::Sender<bool>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.loop_task.abort();
        self.server_task.abort();
    }
}

/// Starts the control plane for `controller_name` over `namespaces`, always leading.
pub async fn start_control_plane(
    client: kube::Client,
    controller_name: &str,
    namespaces: Vec<String>,
) -> ControlPlane {
    start_control_plane_with(client, controller_name, namespaces, false).await
}

/// [`start_control_plane`], with the Backend API on or off.
pub async fn start_control_plane_with(
    client: kube::Client,
    controller_name: &str,
    namespaces: Vec<String>,
    backend_api: bool,
) -> ControlPlane {
    start_control_plane_trusting(client, controller_name, namespaces, backend_api, None).await
}

/// [`start_control_plane_with`], trusting the CAs of `oidc_discovery_ca` (PEM) when it
/// discovers OpenID providers.
#[allow(dead_code)] // Not every test binary discovers providers.
pub async fn start_control_plane_trusting(
    client: kube::Client,
    controller_name: &str,
    namespaces: Vec<String>,
    backend_api: bool,
    oidc_discovery_ca: Option<String>,
) -> ControlPlane {
    let store = SnapshotStore::default();
    let ads = AdsServer::new(store.clone());
    let events = ads.events();
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
        .await
        .expect("bind xDS");
    let xds = listener.local_addr().expect("xDS address");
    let server_task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let (leader, leading) = tokio::sync::watch::channel(true);
    let settings = ControlPlaneSettings {
        controller_name: controller_name.to_owned(),
        watch_namespaces: namespaces,
        binding: ListenerBinding {
            ip: LOOPBACK,
            port_offset: 0,
        },
        backend_api,
        oidc_discovery_ca,
    };
    let loop_task = tokio::spawn(run(client, settings, store, events, leading));
    ControlPlane {
        xds,
        loop_task,
        server_task,
        _leader: leader,
    }
}

/// An Envoy for the Gateway `namespace/gateway`, fed by `xds`.
pub async fn envoy_for(
    xds: SocketAddr,
    namespace: &str,
    gateway: &str,
    flavour: AdsFlavour,
) -> EnvoyProcess {
    let spec = BootstrapSpec {
        node_id: format!("{gateway}-proxy-0"),
        node_cluster: format!("{namespace}/{gateway}"),
        admin: SocketAddr::new(LOOPBACK, 0),
        xds_server: xds.into(),
        flavour,
        tls: None,
    };
    EnvoyProcess::start(&bootstrap(&spec).to_string())
        .await
        .expect("envoy starts")
}

/// Re-evaluates the async expression `$probe` (an `Option`) until it is `Some`, failing after
/// `$limit`; yields the value and how long it took.
#[macro_export]
macro_rules! until {
    ($what:expr, $limit:expr, $probe:expr) => {{
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = $probe {
                break (v, start.elapsed());
            }
            assert!(
                start.elapsed() < $limit,
                "timed out after {:?}: {}",
                $limit,
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
