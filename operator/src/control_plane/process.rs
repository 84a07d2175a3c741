//! `eg-operator controller`: one replica of an environment's control plane. Every replica
//! watches, translates and serves xDS (mutual TLS with the environment's certificates, each
//! proxy served only the Gateway its certificate names); only the lease holder writes status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use kube::Client;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use super::AbortOnDrop;
use super::config::{ConfigError, ControllerConfig};
use super::run::{ControlPlaneSettings, run};
use super::xds_tls::{ReloadingTls, XdsTlsError};
use crate::environment::names::Names;
use crate::leader::lease::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::serve::{Readiness, serve};
use crate::xds::bootstrap::XdsAddress;
use crate::xds::from_ir::ListenerBinding;
use crate::xds::identity::{EnvironmentIdentity, PeerPolicy};
use crate::xds::server::{AdsServer, SnapshotStore};

/// Errors starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("xDS server TLS: {0}")]
    Tls(#[from] XdsTlsError),
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
            ControlPlaneError::Tls(e) => e.category(),
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
    /// Extra CAs (PEM) for OpenID discovery.
    pub oidc_discovery_ca: Option<String>,
}

/// How often the xDS certificate files are re-read: well inside the operator's renewal margin,
/// and cheap (three small files, compared before anything is rebuilt).
const CERTIFICATE_RELOAD_PERIOD: Duration = Duration::from_secs(30);

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
            image_repository: (!config.image_repository.is_empty())
                .then(|| config.image_repository.clone()),
            version: config.version.clone(),
            names: names.clone(),
        },
        proxy_defaults: config.proxy_defaults.clone(),
        issuer_secret: (names.namespace().to_owned(), names.proxy_issuer_secret()),
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
    // With TLS, each proxy is served only the Gateway its client certificate names.
    let peers = if options.insecure_xds {
        PeerPolicy::TrustNodeCluster
    } else {
        PeerPolicy::Certificate(EnvironmentIdentity::new(
            &config.environment.namespace,
            &config.environment.name,
        ))
    };
    let ads = AdsServer::with_peer_policy(store.clone(), peers);
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
    let builder =
        tonic::transport::Server::builder().add_service(AggregatedDiscoveryServiceServer::new(ads));
    let (server, _reload_task) = if options.insecure_xds {
        let server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
            Box::pin(builder.serve_with_incoming(TcpListenerStream::new(listener)));
        (server, None)
    } else {
        let tls = ReloadingTls::load(&config.xds.cert_dir)?;
        let reload = AbortOnDrop(tls.watch(CERTIFICATE_RELOAD_PERIOD));
        let server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
            Box::pin(builder.serve_with_incoming(tls.incoming(listener)));
        (server, Some(reload))
    };
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
            backend_api: config.backend_api,
            oidc_discovery_ca: options.oidc_discovery_ca,
        },
        store,
        events,
        leading,
    )
    .await;
    Ok(())
}
