//! `eg-operator migrate ingress-nginx`, the I/O shell around [`crate::migrate::convert`]: reads
//! Ingresses from files or a cluster, writes the generated manifests (stdout or one file per
//! namespace), server-side applies them with `--apply`, and prints the report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::Value;

use crate::migrate::annotations::PREFIX;
use crate::migrate::input::read_yaml;
use crate::migrate::{Input, Migration, Sourced};
use crate::translate::LoadError;

/// The field manager of `--apply`.
pub const FIELD_MANAGER: &str = "eg-operator-migrate";

/// Errors of `eg-operator migrate ingress-nginx`.
#[derive(Debug, thiserror::Error)]
pub enum MigrateCmdError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{}", crate::translate_cmd::strip_line(source))]
    Load {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {what} from the cluster: {source}")]
    List {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("applying {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0}")]
    Usage(&'static str),
}

impl MigrateCmdError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Load { source, .. } => source.category(),
            Self::Write { .. } => "write",
            Self::List { .. } => "kube_list",
            Self::Apply { .. } => "apply",
            Self::Usage(_) => "usage",
        }
    }
}

/// Reads every Ingress, IngressClass, Service and Secret under `paths`.
///
/// # Errors
///
/// An unreadable file, or a document that is not YAML or does not decode (file and line named).
pub fn read_files(paths: &[PathBuf]) -> Result<Input, MigrateCmdError> {
    let files = crate::translate_cmd::manifest_files(paths).map_err(|e| match e {
        crate::translate_cmd::TranslateCmdError::Read { path, source } => {
            MigrateCmdError::Read { path, source }
        }
        _ => MigrateCmdError::Usage("listing input files failed"),
    })?;
    let mut input = Input::default();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| MigrateCmdError::Read {
            path: path.clone(),
            source,
        })?;
        read_yaml(&mut input, &path.display().to_string(), &text)
            .map_err(|source| MigrateCmdError::Load { path, source })?;
    }
    Ok(input)
}

/// Reads the Ingresses of `namespace` (all namespaces when `None`), every IngressClass, the
/// Services of the Ingresses' namespaces and the Secrets their `auth-secret`s name.
///
/// # Errors
///
/// A failed list; a missing or forbidden auth Secret is not an error (the report says so).
pub async fn read_cluster(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Input, MigrateCmdError> {
    let list_err = |what| {
        move |e| MigrateCmdError::List {
            what,
            source: Box::new(e),
        }
    };
    let ingresses: Api<Ingress> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ingresses = ingresses
        .list(&ListParams::default())
        .await
        .map_err(list_err("Ingresses"))?
        .items;
    let classes = Api::<IngressClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(list_err("IngressClasses"))?
        .items;
    let namespaces: BTreeSet<String> = ingresses
        .iter()
        .filter_map(|i| i.metadata.namespace.clone())
        .collect();
    let mut services = Vec::new();
    let mut secrets = Vec::new();
    for ns in &namespaces {
        services.extend(
            Api::<Service>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(list_err("Services"))?
                .items,
        );
    }
    for ingress in &ingresses {
        let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
        let Some(reference) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("{PREFIX}auth-secret")))
        else {
            continue;
        };
        let (secret_ns, name) = reference.split_once('/').unwrap_or((ns, reference));
        if let Ok(Some(secret)) = Api::<Secret>::namespaced(client.clone(), secret_ns)
            .get_opt(name)
            .await
        {
            secrets.push(secret);
        }
    }
    Ok(Input {
        ingresses: ingresses
            .into_iter()
            .map(|object| Sourced {
                object,
                source: "cluster".into(),
            })
            .collect(),
        ingress_classes: classes,
        services,
        secrets,
    })
}

/// The generated objects by namespace, as file name (`<namespace>.yaml`) to YAML stream.
pub fn files_by_namespace(migration: &Migration) -> BTreeMap<String, String> {
    let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in &migration.objects {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("cluster")
            .to_owned();
        by_ns
            .entry(format!("{ns}.yaml"))
            .or_default()
            .push(serde_yaml_ng::to_string(object).unwrap_or_default());
    }
    by_ns
        .into_iter()
        .map(|(file, docs)| (file, docs.join("---\n")))
        .collect()
}

/// Writes [`files_by_namespace`] into `dir` (created if missing).
///
/// # Errors
///
/// The directory or a file cannot be written.
pub fn write_dir(dir: &Path, migration: &Migration) -> Result<Vec<PathBuf>, MigrateCmdError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| MigrateCmdError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut written = Vec::new();
    for (file, text) in files_by_namespace(migration) {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Server-side applies every object with [`FIELD_MANAGER`], in order; nothing is deleted and
/// conflicts with other managers fail (no force). Returns `Kind namespace/name` of each.
///
/// # Errors
///
/// The first object the apiserver rejects, or a kind it does not serve.
pub async fn apply(client: &Client, objects: &[Value]) -> Result<Vec<String>, MigrateCmdError> {
    let mut resources: HashMap<(String, String), ApiResource> = HashMap::new();
    let mut applied = Vec::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let id = format!("{kind} {namespace}/{name}");
        let err = |source: kube::Error| MigrateCmdError::Apply {
            object: id.clone(),
            source: Box::new(source),
        };
        let key = (api_version.to_owned(), kind.to_owned());
        let resource = match resources.get(&key) {
            Some(r) => r.clone(),
            None => {
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
                    .await
                    .map_err(err)?;
                resources.insert(key, resource.clone());
                resource
            }
        };
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| err(kube::Error::SerdeError(e)))?;
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&dynamic),
            )
            .await
            .map_err(err)?;
        applied.push(id);
    }
    Ok(applied)
}

/// What to do after `--apply`: compare the two paths, then cut over.
pub fn cutover_instructions(migration: &Migration, gateway_namespace: &str) -> String {
    let gateways: Vec<&str> = migration
        .objects
        .iter()
        .filter(|o| o["kind"] == "Gateway")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let hosts: BTreeSet<&str> = migration
        .objects
        .iter()
        .filter(|o| o["kind"] == "HTTPRoute")
        .flat_map(|o| o["spec"]["hostnames"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let mut out = format!(
        "\nApplied alongside the Ingresses (server-side apply, field manager {FIELD_MANAGER}); no Ingress was changed or deleted.\n\nCompare:\n"
    );
    for gw in &gateways {
        out.push_str(&format!(
            "  kubectl -n {gateway_namespace} get gateway {gw} -o jsonpath='{{.status.addresses[*].value}}'   # the new entry point\n"
        ));
    }
    out.push_str("  kubectl get httproute,securitypolicy,backendtrafficpolicy -A   # every route Accepted and ResolvedRefs\n");
    for host in hosts.iter().take(5) {
        out.push_str(&format!(
            "  curl -si -H 'Host: {host}' http://<gateway address>/   vs   curl -si -H 'Host: {host}' http://<ingress-nginx address>/\n"
        ));
    }
    out.push_str(
        "\nCut over host by host: point its DNS record at the Gateway address, watch traffic and errors on both,\nthen delete its Ingress (ingress-nginx stops serving it) once the old address receives no requests.\n",
    );
    out
}
