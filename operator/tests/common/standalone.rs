//! The `eg-operator standalone` process of a test: started on a directory of manifests with
//! echo backends on loopback, polled until ready, asked which backend answered a request, and
//! stopped (SIGTERM first) when dropped. Shared by the standalone and migration tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use eg_e2e::backend::{Echo, EchoBackend};
use eg_e2e::process::{Lifetime, ManagedProcess};
use eg_e2e::tools::envoy_bin;
use eg_e2e::{LOOPBACK, free_port};
use serde_json::Value;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Polls `probe` every 20 ms until it yields a value; fails after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A standalone process on a private copy of the quickstart, with its three backends.
pub struct Standalone {
    pub process: ManagedProcess,
    pub config: PathBuf,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
    /// Kept alive as long as the process.
    pub backends_alive: Vec<EchoBackend>,
    pub dir_alive: tempfile::TempDir,
}

impl Standalone {
    /// Starts the binary on a directory holding `files`.
    pub async fn launch(
        files: Vec<(String, String)>,
        gateway: SocketAddr,
        backends: Vec<EchoBackend>,
    ) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config)?;
        for (name, text) in files {
            std::fs::write(config.join(name), text)?;
        }
        let admin = SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eg-operator"));
        cmd.arg("standalone")
            .arg("--config-dir")
            .arg(&config)
            .arg("--envoy-path")
            .arg(envoy_bin()?)
            .arg("--admin-address")
            .arg(admin.to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RUST_LOG", "info");
        let process = ManagedProcess::spawn(
            "eg-operator standalone",
            cmd,
            &dir.path().join("standalone.log"),
            Lifetime::Owned,
        )?;
        let s = Self {
            process,
            config,
            gateway,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            backends_alive: backends,
            dir_alive: dir,
        };
        s.wait_ready().await;
        Ok(s)
    }

    pub async fn wait_ready(&self) {
        eventually("standalone /readyz", Duration::from_secs(30), || async {
            let r = self
                .http
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    /// The backend that answered `path` (with `headers`), or `None` when no backend did.
    pub async fn backend(&self, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut request = self.http.get(format!("http://{}{path}", self.gateway));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Echo>().await.ok().map(|e| e.backend)
    }

    pub async fn admin_json(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await?
            .text()
            .await?)
    }

    pub fn write(&self, file: &str, text: &str) {
        // Write-then-rename, as editors do, so a reload never sees half a file.
        let tmp = self.config.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.config.join(file)).expect("rename");
    }

    /// PIDs of the processes whose parent is the standalone process (its Envoys).
    pub fn children(&self) -> Vec<u32> {
        children_of(self.process.pid())
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        // SIGTERM first, so a failing test still lets the process stop its Envoys.
        self.process.stop(Duration::from_secs(10));
    }
}

pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid ...`; comm may contain spaces.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
