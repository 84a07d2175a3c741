//! `eg-operator`: the operator, the control plane and their tools in one binary.
//!
//! Subcommands arrive with their issues; today the binary prints the CRDs this project owns.

mod cli;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(&cli.telemetry);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("eg-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
