//! The control plane's configuration file (`config.yaml` in the ConfigMap the operator writes).
//! One type for both sides: the operator serializes it, `eg-operator controller` reads it, so a
//! field can never be written under one name and read under another.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Configuration of one environment's control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerConfig {
    pub environment: EnvironmentRef,
    pub gateway_class_name: String,
    /// The GatewayClass controllerName this environment serves.
    pub controller_name: String,
    /// Namespaces served; empty means all.
    #[serde(default)]
    pub watch_namespaces: Vec<String>,
    /// More than one replica: only the lease holder writes status.
    pub leader_election: bool,
    pub xds: XdsConfig,
    /// `EnvoyGateway.spec.proxy`, the defaults of every proxy fleet.
    #[serde(default)]
    pub proxy_defaults: eg_crds::envoy_gateway::ProxySpec,
    /// Image repository of the operand; its tag is `v{version}`. The proxies' shutdown-manager
    /// sidecar runs it, at the version each fleet may run (see [`crate::fleet::run`]).
    #[serde(default)]
    pub image_repository: String,
    /// The operand version of this control plane: fleets run it unless the EnvoyGateway's status
    /// pins them elsewhere during an upgrade.
    #[serde(default)]
    pub version: String,
    /// Routes may send to Envoy Gateway `Backend`s (`extensionApis.enableBackend`).
    #[serde(default)]
    pub backend_api: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XdsConfig {
    pub port: u16,
    /// Directory with `tls.crt`, `tls.key` (the xDS server's) and `ca.crt` (the trust bundle
    /// proxies' client certificates are checked against).
    pub cert_dir: PathBuf,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

impl ConfigError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse { .. } => "parse",
        }
    }
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}
