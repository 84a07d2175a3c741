//! Command-line surface of `eg-operator`: argument parsing and dispatch to subcommands.

use std::io::Write;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(
    name = "eg-operator",
    version,
    about = "Runs Envoy Gateway in production on Kubernetes"
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition this project owns, as YAML.
    Crds(CrdsArgs),
}

#[derive(Debug, Args)]
pub struct CrdsArgs {}

/// Errors of the command-line tools.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("rendering CRDs: {0}")]
    RenderCrds(#[from] eg_crds::RenderError),
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl CliError {
    /// Stable category for metric labels and logs.
    #[allow(dead_code)] // read by metrics once the long-running subcommands land
    pub fn category(&self) -> &'static str {
        match self {
            CliError::RenderCrds(_) => "render_crds",
            CliError::Stdout(_) => "stdout",
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let Cli {
        telemetry: _,
        command,
    } = cli;
    match command {
        Command::Crds(CrdsArgs {}) => {
            let yaml = eg_crds::render_yaml()?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .map_err(CliError::Stdout)
        }
    }
}
