//! `eg-conformance`: behind `make conformance`. `run` brings up the control plane, the process
//! kubelet, the operator and an EnvoyGateway, then runs the official Gateway API conformance suite
//! and writes its report; `summary REPORT` prints a report's figures per profile as Markdown.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use eg_e2e::conformance::{RunOptions, markdown_table, run, summarize};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the suite (needs root: the kubelet gives pods network namespaces).
    Run {
        /// Where the report YAML goes.
        #[arg(long)]
        report: PathBuf,
        /// The directory `hack/build-conformance.sh` printed.
        #[arg(long)]
        suite_dir: PathBuf,
        /// Cluster state, pod directories and logs (kept for reading after the run).
        #[arg(long, default_value = "/tmp/eg-conformance")]
        work_dir: PathBuf,
        /// More flags for the suite, after `--` (e.g. `--run-test=HTTPRouteSimpleSameNamespace`).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Print a report's figures per profile, and its failed tests.
    Summary { report: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            report,
            suite_dir,
            work_dir,
            extra,
        } => {
            let _ = std::fs::remove_dir_all(&work_dir);
            let running = run(RunOptions {
                work_dir,
                report: report.clone(),
                suite_dir,
                extra_args: extra,
            });
            // On Ctrl-C or SIGTERM the run is dropped: pods, networks and the cluster go too.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let status = tokio::select! {
                outcome = running => outcome.map_err(|e| anyhow::anyhow!("[{}] {e}", e.category()))?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
                _ = term.recv() => anyhow::bail!("terminated"),
            };
            eprintln!("[conformance] suite exited with {status}");
            if let Ok(text) = std::fs::read_to_string(&report) {
                print!("{}", markdown_table(&summarize(&text)?));
            }
            Ok(())
        }
        Command::Summary { report } => {
            let text = std::fs::read_to_string(&report)?;
            let summaries = summarize(&text)?;
            print!("{}", markdown_table(&summaries));
            for s in &summaries {
                for t in &s.failed_tests {
                    println!("- {} failed: {t}", s.name);
                }
            }
            Ok(())
        }
    }
}
