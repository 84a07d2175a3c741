//! `eg-operator controller`: one replica of an environment's control plane. Every replica
//! watches, translates and serves xDS (mutual TLS with the environment's certificates); only
//! the lease holder writes status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use kube::Client;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use super::config::{ConfigError, ControllerConfig};
use super::run::{ControlPlaneSettings, run};
use crate::environment::names::Names;
use crate::leader::lease::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::serve::{Readiness, serve};
use crate::xds::bootstrap::XdsAddress;
use crate::xds::from_ir::ListenerBinding;
use crate::xds::server::{AdsServer, SnapshotStore};

/// Errors starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("xDS certificate {path}: {source}")]
    Certificate {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("xDS server TLS: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ControlPlaneError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ControlPlaneError::Config(e) => e.category(),
            ControlPlaneError::Certificate { .. } => "certificate",
            ControlPlaneError::Tls(_) => "tls",
            ControlPlaneError::Bind { .. } => "bind",
        }
    }
}

/// Where this replica listens.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// xDS; defaults to `0.0.0.0:{config.xds.port}`.
    pub xds_address: Option<SocketAddr>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub health_address: SocketAddr,
    /// Serve xDS without TLS (local development only).
    pub insecure_xds: bool,
    /// This replica's identity in the leader lease.
    pub identity: String,
    /// Where proxies bind their listeners.
    pub binding: ListenerBinding,
}

fn read(dir: &std::path::Path, file: &str) -> Result<String, ControlPlaneError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| ControlPlaneError::Certificate {
        path: path.display().to_string(),
        source,
    })
}

/// Aborts the task when dropped, so the fleet task never outlives the control plane.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fleet task's view of the configuration: proxies reach the xDS server through the
/// control-plane Service, whose certificate carries that name.
pub fn fleet_config(config: &ControllerConfig) -> crate::fleet::run::FleetConfig {
    let names = Names::new(&config.environment.namespace, &config.environment.name);
    let host = format!("{}.{}.svc", names.control_plane(), names.namespace());
    crate::fleet::run::FleetConfig {
        controller_name: config.controller_name.clone(),
        watch_namespaces: config.watch_namespaces.clone(),
        environment: crate::fleet::build::FleetEnvironment {
            anti_affinity: config.proxy_defaults.anti_affinity,
            xds: XdsAddress::Dns {
                host: host.clone(),
                port: config.xds.port,
            },
            xds_server_name: host,
            names: names.clone(),
        },
        proxy_defaults: config.proxy_defaults.clone(),
        client_secret: (names.namespace().to_owned(), names.xds_client_secret()),
        resync: Duration::from_secs(60),
    }
}

/// Runs the control plane until the process is stopped.
pub async fn run_controller(
    client: Client,
    config: ControllerConfig,
    options: ControllerOptions,
) -> Result<(), ControlPlaneError> {
    let metrics = Metrics::new();
    let ready = Arc::new(Readiness::default());
    let (health, _health_task) = serve(options.health_address, metrics, ready.clone())
        .await
        .map_err(|source| ControlPlaneError::Bind {
            addr: options.health_address,
            source,
        })?;

    let store = SnapshotStore::default();
    let ads = AdsServer::new(store.clone());
    let events = ads.events();
    let xds_addr = options
        .xds_address
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.xds.port)));
    let listener = tokio::net::TcpListener::bind(xds_addr)
        .await
        .map_err(|source| ControlPlaneError::Bind {
            addr: xds_addr,
            source,
        })?;
    let xds_bound = listener
        .local_addr()
        .map_err(|source| ControlPlaneError::Bind {
            addr: xds_addr,
            source,
        })?;
    let mut builder = tonic::transport::Server::builder();
    if !options.insecure_xds {
        let dir = &config.xds.cert_dir;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                read(dir, "tls.crt")?,
                read(dir, "tls.key")?,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                dir, "ca.crt",
            )?));
        builder = builder
            .tls_config(tls)
            .map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
    }
    let server = builder
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "xDS server stopped");
        }
    });

    let (leading, _election) = if config.leader_election {
        lease::run(
            client.clone(),
            LeaseConfig {
                namespace: config.environment.namespace.clone(),
                name: format!("{}-envoy-gateway-leader", config.environment.name),
                identity: options.identity.clone(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(2),
            },
        )
    } else {
        // A single replica always leads; the loop keeps the last value once the sender is gone.
        (watch::channel(true).1, tokio::spawn(async {}))
    };
    tracing::info!(
        environment = %format!("{}/{}", config.environment.namespace, config.environment.name),
        controller = %config.controller_name,
        xds = %xds_bound,
        health = %health,
        tls = !options.insecure_xds,
        "control plane starting"
    );
    ready.set(true);
    let _fleets = AbortOnDrop(tokio::spawn(crate::fleet::run::run(
        client.clone(),
        fleet_config(&config),
        leading.clone(),
    )));
    run(
        client,
        ControlPlaneSettings {
            controller_name: config.controller_name,
            watch_namespaces: config.watch_namespaces,
            binding: options.binding,
        },
        store,
        events,
        leading,
    )
    .await;
    Ok(())
}
