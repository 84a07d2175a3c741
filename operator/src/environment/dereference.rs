//! Reads what is live for one environment (I/O): the objects it owns, found by its owner-UID
//! label across every kind the environment can ever contain, and the certificate Secrets the
//! certificates stage decides from. Objects that exist at a desired name without this owner's
//! label are reported as conflicts, never adopted.

use eg_graph::{ObjectRef, ResourceGraph};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use super::certificates::{ExistingCertificates, SecretPem};
use super::names::{Names, OWNER_UID_LABEL};

/// Every kind an environment graph can contain: `(apiVersion, kind, namespaced)`. Owned objects
/// are listed for each, so an object of a kind that left the graph is still found and pruned.
pub const ENVIRONMENT_KINDS: &[(&str, &str, bool)] = &[
    ("v1", "ServiceAccount", true),
    ("v1", "Secret", true),
    ("v1", "ConfigMap", true),
    ("v1", "Service", true),
    ("apps/v1", "Deployment", true),
    ("policy/v1", "PodDisruptionBudget", true),
    ("rbac.authorization.k8s.io/v1", "Role", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", false),
    ("gateway.networking.k8s.io/v1", "GatewayClass", false),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy", true),
];

/// Errors reading live state.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    // kube::Error is large; boxed so every Result carrying this error stays small.
    #[error("listing {kind}: {source}")]
    List {
        kind: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading {id}: {source}")]
    Get {
        id: Box<ObjectRef>,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "the {kind} API ({api_version}) is not served: install its CustomResourceDefinition (Envoy Gateway's CRDs for gateway.envoyproxy.io, the Gateway API CRDs for gateway.networking.k8s.io)"
    )]
    MissingApi { api_version: String, kind: String },
    #[error("live {kind} is not valid JSON: {source}")]
    Json {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DereferenceError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            DereferenceError::List { .. } => "list",
            DereferenceError::Get { .. } => "get",
            DereferenceError::MissingApi { .. } => "missing_api",
            DereferenceError::Json { .. } => "json",
        }
    }
}

/// The API resource of a kind, for dynamic access.
pub fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// A dynamic API handle for one object.
pub fn api_for(client: &Client, id: &ObjectRef) -> Api<DynamicObject> {
    let ar = api_resource(&id.api_version(), &id.kind);
    match &id.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Every live object labelled as owned by the EnvoyGateway with `owner_uid`.
pub async fn owned_objects(
    client: &Client,
    owner_uid: &str,
) -> Result<Vec<serde_json::Value>, DereferenceError> {
    labelled_objects(
        client,
        ENVIRONMENT_KINDS,
        None,
        &format!("{OWNER_UID_LABEL}={owner_uid}"),
    )
    .await
}

/// Every live object of `kinds` matching the label `selector`, in `namespace` or everywhere,
/// as JSON with its apiVersion and kind set.
pub async fn labelled_objects(
    client: &Client,
    kinds: &[(&str, &str, bool)],
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<serde_json::Value>, DereferenceError> {
    let params = ListParams::default().labels(selector);
    let mut out = Vec::new();
    for (api_version, kind, namespaced) in kinds {
        let ar = api_resource(api_version, kind);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) if *namespaced => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        let list = api.list(&params).await.map_err(|source| match source {
            kube::Error::Api(e) if e.code == 404 => DereferenceError::MissingApi {
                api_version: (*api_version).to_owned(),
                kind: (*kind).to_owned(),
            },
            source => DereferenceError::List {
                kind: (*kind).to_owned(),
                source: Box::new(source),
            },
        })?;
        for mut item in list.items {
            // List items carry no apiVersion/kind of their own.
            item.types = Some(kube::api::TypeMeta {
                api_version: (*api_version).to_owned(),
                kind: (*kind).to_owned(),
            });
            out.push(
                serde_json::to_value(&item).map_err(|source| DereferenceError::Json {
                    kind: (*kind).to_owned(),
                    source,
                })?,
            );
        }
    }
    Ok(out)
}

/// Desired objects that exist but are not in `owned`: someone else's, left untouched.
pub async fn foreign_objects(
    client: &Client,
    desired: &ResourceGraph,
    owned: &[serde_json::Value],
) -> Result<Vec<ObjectRef>, DereferenceError> {
    let owned_ids: Vec<ObjectRef> = owned
        .iter()
        .filter_map(|o| ObjectRef::from_object(o).ok())
        .collect();
    let mut foreign = Vec::new();
    for node in desired.nodes() {
        if owned_ids.contains(&node.id) {
            continue;
        }
        let found = api_for(client, &node.id)
            .get_opt(&node.id.name)
            .await
            .map_err(|source| DereferenceError::Get {
                id: Box::new(node.id.clone()),
                source: Box::new(source),
            })?;
        if found.is_some() {
            foreign.push(node.id.clone());
        }
    }
    Ok(foreign)
}

/// The certificate Secrets of the environment, as far as they exist and are owned by it.
pub async fn existing_certificates(
    client: &Client,
    names: &Names,
    owner_uid: &str,
) -> Result<ExistingCertificates, DereferenceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), names.namespace());
    let read = |name: String| {
        let api = api.clone();
        async move {
            let secret = api
                .get_opt(&name)
                .await
                .map_err(|source| DereferenceError::Get {
                    id: Box::new(ObjectRef::new(
                        "v1",
                        "Secret",
                        Some(names.namespace()),
                        &name,
                    )),
                    source: Box::new(source),
                })?;
            // A Secret someone else made at our name is not trusted as key material.
            let owned = secret.as_ref().is_some_and(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(OWNER_UID_LABEL))
                    .is_some_and(|uid| uid == owner_uid)
            });
            Ok::<_, DereferenceError>(secret.filter(|_| owned).map(|s| {
                let data = s.data.unwrap_or_default();
                let text = |key: &str| {
                    data.get(key)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .unwrap_or_default()
                };
                SecretPem {
                    ca_crt: text("ca.crt"),
                    tls_crt: text("tls.crt"),
                    tls_key: text("tls.key"),
                }
            }))
        }
    };
    Ok(ExistingCertificates {
        ca: read(names.ca_secret()).await?,
        xds_server: read(names.xds_server_secret()).await?,
        proxy_issuer: read(names.proxy_issuer_secret()).await?,
    })
}
