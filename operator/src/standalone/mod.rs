//! Standalone mode (`eg-operator standalone`): the product's main job on one machine, no
//! cluster. Manifests come from a directory ([`config_dir`]) watched for changes
//! ([`watch`]); the same translator and xDS server as the Kubernetes controller program one
//! Envoy child process per Gateway ([`envoy`]) over a Unix socket; an admin API ([`admin`])
//! reports health, readiness, every resource's status, metrics and the proxies' config dumps.
//!
//! This module is the I/O shell: it moves file changes into the pure translator and the
//! translation into the xDS store, and proxy answers into status.

pub mod admin;
pub mod admin_client;
pub mod config_dir;
pub mod envoy;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::control_plane::oidc_discovery::OidcDiscovery;
use crate::control_plane::publish::Publisher;
use crate::translate::{Snapshot, Translation, Translator, oidc_issuers_to_discover};
use crate::xds::from_ir::ListenerBinding;
use crate::xds::server::{AdsServer, SnapshotStore};
use admin::{AdminState, StandaloneMetrics};
use config_dir::ConfigDir;
use envoy::{EnvoyError, Supervisor, SupervisorSettings, find_envoy};

/// What `eg-operator standalone` was asked to do.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    pub config_dir: PathBuf,
    pub envoy_path: Option<PathBuf>,
    pub admin_address: SocketAddr,
    pub controller_name: String,
    /// Bootstraps, the xDS socket and Envoy logs; a private temporary directory by default.
    pub state_dir: Option<PathBuf>,
    /// How long a stopping Envoy drains its listeners.
    pub drain: Duration,
    pub envoy_log_level: String,
}

/// Errors that stop standalone mode from starting.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Envoy(#[from] EnvoyError),
    #[error("config directory {0} does not exist")]
    NoConfigDir(PathBuf),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl StandaloneError {
    pub fn category(&self) -> &'static str {
        match self {
            StandaloneError::Envoy(e) => e.category(),
            StandaloneError::NoConfigDir(_) => "config_dir",
            StandaloneError::StateDir { .. } => "state_dir",
            StandaloneError::Bind { .. } => "bind",
            StandaloneError::Watch { .. } => "watch",
        }
    }
}

/// Where a Gateway's listeners bind: `spec.addresses[0]` when it is an IP address, otherwise
/// every interface.
pub fn listener_ip(snapshot: &Snapshot, gateway: &str) -> IpAddr {
    snapshot
        .gateways
        .iter()
        .find(|g| {
            format!(
                "{}/{}",
                g.metadata.namespace.as_deref().unwrap_or_default(),
                g.metadata.name.as_deref().unwrap_or_default()
            ) == gateway
        })
        .and_then(|g| {
            g.spec
                .addresses
                .as_ref()?
                .first()?
                .value
                .as_deref()?
                .parse()
                .ok()
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Runs until SIGINT or SIGTERM; then drains and stops every Envoy.
pub async fn run(options: StandaloneOptions) -> Result<(), StandaloneError> {
    let envoy = find_envoy(options.envoy_path.as_deref())?;
    if !options.config_dir.exists() {
        return Err(StandaloneError::NoConfigDir(options.config_dir));
    }
    let (state_dir, temporary) = match &options.state_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("eg-standalone-")
                .tempdir()
                .map_err(|source| StandaloneError::StateDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    std::fs::create_dir_all(&state_dir).map_err(|source| StandaloneError::StateDir {
        path: state_dir.clone(),
        source,
    })?;

    let metrics = Arc::new(StandaloneMetrics::default());
    let state = Arc::new(Mutex::new(AdminState::default()));
    let (admin_bound, _admin_task) =
        admin::serve(options.admin_address, state.clone(), metrics.clone())
            .await
            .map_err(|source| StandaloneError::Bind {
                what: format!("admin address {}", options.admin_address),
                source,
            })?;

    let xds_socket = state_dir.join("xds.sock");
    let _ = std::fs::remove_file(&xds_socket);
    let listener =
        tokio::net::UnixListener::bind(&xds_socket).map_err(|source| StandaloneError::Bind {
            what: format!("xDS socket {}", xds_socket.display()),
            source,
        })?;
    let store = SnapshotStore::default();
    let ads = AdsServer::new(store.clone());
    let mut publisher = Publisher::new(store, ads.events());
    let xds = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );

    let mut supervisor = Supervisor::new(
        SupervisorSettings {
            envoy: envoy.clone(),
            state_dir: state_dir.clone(),
            xds_socket: xds_socket.clone(),
            drain: options.drain,
            log_level: options.envoy_log_level.clone(),
        },
        metrics.envoy_restarts.clone(),
    );
    let mut config = ConfigDir::new(&options.config_dir, &options.controller_name);
    let (_watcher, mut changes) =
        watch::watch(&options.config_dir).map_err(|source| StandaloneError::Watch {
            path: options.config_dir.clone(),
            source,
        })?;
    tracing::info!(
        config_dir = %options.config_dir.display(),
        envoy = %envoy.display(),
        admin = %admin_bound,
        state_dir = %state_dir.display(),
        controller = %options.controller_name,
        "standalone mode starting"
    );

    let mut terminate =
        signal(SignalKind::terminate()).map_err(|source| StandaloneError::Bind {
            what: "SIGTERM handler".into(),
            source,
        })?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|source| StandaloneError::Bind {
            what: "SIGINT handler".into(),
            source,
        })?;
    let mut last: Option<Arc<Translation>> = None;
    let mut translator = Translator::new();
    let mut discovery = OidcDiscovery::new(None);
    let mut reload = true;
    let mut discovered = false;
    loop {
        if reload {
            reload = false;
            let started = Instant::now();
            let report = config.reload();
            for e in &report.errors {
                tracing::warn!(file = %e.file, line = e.line, error = %e.message, "manifest not applied; its last good version keeps serving");
            }
            if last.is_none() || !report.changed.is_empty() || std::mem::take(&mut discovered) {
                let mut snapshot = config.snapshot();
                discovery.want(&oidc_issuers_to_discover(&snapshot));
                snapshot.oidc_discovery = discovery.results();
                let translation = tracing::info_span!("translate", changed = report.changed.len())
                    .in_scope(|| translator.translate(&snapshot));
                for d in &translation.diagnostics {
                    tracing::info!(object = %d.object, category = d.category, "{}", d.message);
                }
                publisher
                    .publish(&translation, |g| ListenerBinding {
                        ip: listener_ip(&snapshot, &g.name),
                        port_offset: 0,
                    })
                    .await;
                let gateways: Vec<String> = translation
                    .gateways
                    .iter()
                    .map(|g| g.name.clone())
                    .collect();
                supervisor.reconcile(&gateways).await;
                metrics.observe_translation(started.elapsed(), gateways.len());
                tracing::info!(changed = ?report.changed, gateways = gateways.len(), elapsed = ?started.elapsed(), "configuration applied");
                last = Some(Arc::new(translation));
            }
            metrics
                .config_errors
                .set(i64::try_from(report.errors.len()).unwrap_or(i64::MAX));
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.files = report;
            s.update(last.as_deref(), publisher.programmed());
            s.envoy_admin = supervisor.admin_paths();
        }
        tokio::select! {
            changed = changes.recv() => {
                if changed.is_none() {
                    break;
                }
                watch::debounce(&mut changes).await;
                reload = true;
            }
            found = discovery.next() => {
                if found {
                    discovered = true;
                    reload = true;
                }
            }
            changed = publisher.next_event() => {
                if changed {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.update(last.as_deref(), publisher.programmed());
                    s.envoy_admin = supervisor.admin_paths();
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping: draining and stopping Envoy");
    supervisor.shutdown().await;
    xds.abort();
    let _ = std::fs::remove_file(&xds_socket);
    drop(temporary);
    Ok(())
}
