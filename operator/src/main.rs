//! `eg-operator`: the operator, the control plane and their tools in one binary.

use std::process::ExitCode;

use clap::Parser;
use eg_operator::{cli, telemetry};

/// mimalloc rather than glibc's malloc: translation is dominated by small, short-lived
/// allocations, for which it is several times faster, and it returns freed memory sooner.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Dropped last: flushes the spans of the whole run.
    let _telemetry = telemetry::init(&cli.telemetry);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("eg-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
