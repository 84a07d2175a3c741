//! `eg-operator translate`: Gateway API resources in, what the control plane would program and
//! report out, offline. Prints each Gateway's IR, the Envoy resources of its snapshot (type,
//! name, content version) and the status of every resource. Errors name the file and document.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::translate::{LoadError, Snapshot, Statuses, Translation, load_yaml, translate};
use crate::xds::from_ir::{ListenerBinding, snapshot};

/// Upstream Envoy Gateway's default controllerName.
pub const DEFAULT_CONTROLLER_NAME: &str = "gateway.envoyproxy.io/gatewayclass-controller";

/// Errors of `eg-operator translate`.
#[derive(Debug, thiserror::Error)]
pub enum TranslateCmdError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{}", strip_line(source))]
    Load {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
    #[error("rendering output: {0}")]
    Render(String),
}

/// `line N: rest` as `N: rest`, so the error reads `file:N: rest` like a compiler's.
pub(crate) fn strip_line(e: &LoadError) -> String {
    let text = e.to_string();
    text.strip_prefix("line ")
        .map_or_else(|| format!(" {text}"), str::to_owned)
}

impl TranslateCmdError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            TranslateCmdError::Read { .. } => "read",
            TranslateCmdError::Load { source, .. } => source.category(),
            TranslateCmdError::Render(_) => "render",
        }
    }
}

/// One Envoy resource of a Gateway's snapshot.
#[derive(Debug, Serialize)]
pub struct EnvoyResource {
    pub name: String,
    pub version: String,
}

/// Everything `translate` prints.
#[derive(Debug, Serialize)]
pub struct Output<'a> {
    pub gateways: &'a [crate::translate::GatewayIr],
    /// Per Gateway, per xDS type URL, the resources Envoy would receive.
    pub envoy: BTreeMap<String, BTreeMap<String, Vec<EnvoyResource>>>,
    pub status: &'a Statuses,
    pub diagnostics: &'a [crate::translate::Diagnostic],
}

/// Every YAML/JSON file under `paths` (files as given, directories recursively), sorted.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TranslateCmdError> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), TranslateCmdError> {
        let read_err = |source| TranslateCmdError::Read {
            path: path.to_owned(),
            source,
        };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                if entry.is_dir()
                    || entry
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                {
                    walk(&entry, out)?;
                }
            }
        } else {
            out.push(path.to_owned());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// Reads every manifest into one snapshot.
pub fn load(paths: &[PathBuf], controller_name: &str) -> Result<Snapshot, TranslateCmdError> {
    let mut all = Snapshot {
        controller_name: controller_name.to_owned(),
        ..Snapshot::default()
    };
    for path in manifest_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|source| TranslateCmdError::Read {
            path: path.clone(),
            source,
        })?;
        let (s, skipped) =
            load_yaml(controller_name, &text).map_err(|source| TranslateCmdError::Load {
                path: path.clone(),
                source,
            })?;
        for s in skipped {
            eprintln!(
                "{}:{}: {}: not translated yet, ignored",
                path.display(),
                s.line,
                s.object
            );
        }
        all.extend(s);
    }
    Ok(all)
}

/// The Envoy resources of every Gateway in `t`.
pub fn envoy_resources(t: &Translation) -> BTreeMap<String, BTreeMap<String, Vec<EnvoyResource>>> {
    let binding = ListenerBinding {
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port_offset: 0,
    };
    t.gateways
        .iter()
        .map(|g| {
            let snap = snapshot(g, binding, "offline");
            let by_type = snap
                .resources
                .into_iter()
                .map(|(type_url, resources)| {
                    let list = resources
                        .into_values()
                        .map(|r| EnvoyResource {
                            name: r.name,
                            version: r.version,
                        })
                        .collect();
                    (type_url, list)
                })
                .collect();
            (g.name.clone(), by_type)
        })
        .collect()
}

/// Renders the translation of `paths` as YAML or JSON.
pub fn render(
    paths: &[PathBuf],
    controller_name: &str,
    json: bool,
) -> Result<String, TranslateCmdError> {
    let _span = tracing::info_span!("translate", files = paths.len()).entered();
    let snapshot = tracing::info_span!("load").in_scope(|| load(paths, controller_name))?;
    let t = translate(&snapshot);
    tracing::info!(
        gateways = t.gateways.len(),
        routes = t.status.http_routes.len(),
        "translated"
    );
    let output = Output {
        gateways: &t.gateways,
        envoy: envoy_resources(&t),
        status: &t.status,
        diagnostics: &t.diagnostics,
    };
    if json {
        serde_json::to_string_pretty(&output)
            .map(|s| s + "\n")
            .map_err(|e| TranslateCmdError::Render(e.to_string()))
    } else {
        serde_yaml_ng::to_string(&output).map_err(|e| TranslateCmdError::Render(e.to_string()))
    }
}
