//! `eg-testcluster`: the developer's real Kubernetes control plane (`make cluster`).
//!
//! `up` starts etcd, kube-apiserver and kube-controller-manager detached on 127.0.0.1, installs
//! this project's CRDs and the Gateway API CRDs, and prints `export KUBECONFIG=...`. Running `up`
//! again while the cluster is healthy only prints the export line. `down` stops every process
//! and deletes the state directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use eg_e2e::cluster::{self, ControlPlane, ControlPlaneOptions};
use eg_e2e::process::{self, Lifetime};

#[derive(Debug, Parser)]
#[command(about = "Run a real Kubernetes control plane on loopback for development")]
struct Cli {
    /// Where certificates, etcd data, logs, PIDs and the kubeconfig live.
    #[arg(long, env = "EG_CLUSTER_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the control plane (no-op when it already runs) and print the KUBECONFIG export.
    Up,
    /// Stop every process and remove the state directory.
    Down,
}

fn default_state_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("eg-operator").join("cluster")
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = cli.state_dir.unwrap_or_else(default_state_dir);
    match cli.command {
        Cmd::Up => up(&dir).await,
        Cmd::Down => down(&dir),
    }
}

async fn up(dir: &Path) -> anyhow::Result<()> {
    let kubeconfig = dir.join("kubeconfig");
    let pids = read_pids(dir);
    if !pids.is_empty() && pids.iter().all(|p| process::is_alive(*p)) {
        eprintln!("cluster already running (state in {})", dir.display());
        println!("export KUBECONFIG={}", kubeconfig.display());
        return Ok(());
    }
    if dir.exists() {
        // Leftovers of a cluster that died: stop what survives and start clean.
        down(dir)?;
    }
    let started = Instant::now();
    let control_plane = ControlPlane::start(ControlPlaneOptions {
        state_dir: dir.to_owned(),
        lifetime: Lifetime::Detached,
        controller_manager: true,
    })
    .await
    .context("starting the control plane")?;
    let pid_list: Vec<String> = control_plane
        .pids()
        .iter()
        .map(|(_, p)| p.to_string())
        .collect();
    std::fs::write(dir.join("pids"), pid_list.join("\n")).context("writing pids")?;
    let client = kube::Client::try_from(control_plane.kube_config().await?)?;
    let n = cluster::install_project_crds(&client)
        .await
        .context("installing CRDs")?;
    eprintln!(
        "cluster ready at {} with {n} CRDs in {:.1}s; logs in {}",
        control_plane.server,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let pids = read_pids(dir);
    // Reverse start order: controller-manager, apiserver, then etcd. Kubernetes components shut
    // down gracefully on the first SIGTERM and exit at once on a second; kube-apiserver's graceful
    // path can hang for a long time once its clients are gone, so the second follows shortly.
    for round in 0..2 {
        for pid in pids.iter().rev().filter(|p| process::is_alive(**p)) {
            process::terminate(*pid);
        }
        let deadline = Instant::now() + Duration::from_secs(if round == 0 { 3 } else { 10 });
        while pids.iter().any(|p| process::is_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for pid in pids.iter().filter(|p| process::is_alive(**p)) {
        eprintln!("process {pid} ignored two SIGTERMs; killing it");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| process::is_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<String> = pids
        .iter()
        .filter(|p| process::is_alive(**p))
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        .collect();
    if !survivors.is_empty() {
        bail!("processes survived SIGKILL: {survivors:?}");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!("cluster stopped");
    Ok(())
}
