//! `eg-operator`: the operator, the control plane and their tools in one binary.

use std::process::ExitCode;

use clap::Parser;
use eg_operator::{cli, telemetry};

/// mimalloc rather than glibc's malloc: translation is dominated by small, short-lived
/// allocations, for which it is several times faster, and it returns freed memory sooner.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc backs its arenas with transparent huge pages where the kernel offers them; the
    // control plane's heap is many small objects, and 2 MiB pages kept much of the freed
    // memory resident and cost page zeroing (`make bench`). Process-wide and inherited by
    // the processes it starts (Envoy in standalone mode), for which it is harmless.
    let _ = nix::sys::prctl::set_thp_disable(true);
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
