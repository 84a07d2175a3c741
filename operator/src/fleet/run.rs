//! The fleet task of the controller (I/O shell): while this replica holds the lease, every
//! change to Gateways, GatewayClasses, EnvoyProxies or fleet Services (and a periodic resync,
//! which also carries certificate rotations into the fleets) runs one pass over every Gateway
//! of the environment's class:
//!
//! read the EnvoyProxy layers → [`resolve`] → the Gateway's client certificate
//! ([`certificate::decide`], signed with the proxy issuer, the live one kept while valid) →
//! [`build`] → plan against the Gateway's live fleet → conflict check → [`apply`] (server-side
//! apply, prune by the Gateway-UID label) → status.
//!
//! Each fleet is rendered at the operand version the environment's upgrade rollout allows its
//! Gateway ([`fleet_version`] of the EnvoyGateway's status: the operator moves one Gateway at a
//! time), so a new control plane neither restarts proxies nor moves them all at once.
//!
//! A Gateway whose settings do not resolve keeps its previous fleet untouched and gets a False
//! condition naming the field. Fleets whose Gateway left the class are pruned; fleets of deleted
//! Gateways go with their owner (garbage collector) and are pruned here too if still around.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eg_crds::envoy_gateway::ProxySpec;
use eg_crds::{EnvoyGateway, EnvoyGatewayStatus};
use eg_graph::{GraphBuilder, Ownership, plan};
use futures::StreamExt;
use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

use super::build::{BuildError, FleetEnvironment, FleetInputs, FleetNames, build};
use super::certificate::{self, CertificateError, ProxyIssuer, Signer};
use super::settings::{Layer, SettingsError, resolve};
use super::status::{Verdict, addresses, reason, status_patch};
use super::{FLEET_COMPONENT, FLEET_GATEWAY_UID_LABEL, FLEET_KINDS};
use crate::environment::apply::{ApplyError, ApplyOutcome, apply};
use crate::environment::build::proxy_defaults_spec;
use crate::environment::certificates::SecretPem;
use crate::environment::dereference::{
    DereferenceError, api_resource, foreign_objects, labelled_objects,
};
use crate::environment::names::{ENVIRONMENT_LABEL, FIELD_MANAGER, MANAGED_BY};
use crate::environment::upgrade::fleet_version;
use crate::xds::identity::EnvironmentIdentity;

/// Errors of one pass that stop it as a whole (per-Gateway problems become conditions).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("listing {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the proxy issuer Secret {0} is missing or incomplete")]
    Issuer(String),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("EnvoyGateway.spec.proxy as an EnvoyProxy: {0}")]
    Defaults(#[source] serde_json::Error),
}

impl FleetError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            FleetError::List { .. } => "list",
            FleetError::Issuer(_) => "issuer",
            FleetError::Certificate(e) => e.category(),
            FleetError::Dereference(e) => e.category(),
            FleetError::Build(e) => e.category(),
            FleetError::Apply(e) => e.category(),
            FleetError::Defaults(_) => "defaults",
        }
    }
}

/// What the fleet task needs to know about its environment.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The GatewayClass controllerName this environment serves.
    pub controller_name: String,
    /// Namespaces served; empty means all.
    pub watch_namespaces: Vec<String>,
    pub environment: FleetEnvironment,
    /// `EnvoyGateway.spec.proxy`: the least specific settings layer.
    pub proxy_defaults: ProxySpec,
    /// Namespace and name of the environment's proxy issuer Secret.
    pub issuer_secret: (String, String),
    /// A pass runs at least this often.
    pub resync: Duration,
}

/// Runs until `leading`'s sender is gone and the watches end; passes run only while leading.
pub async fn run(client: Client, config: FleetConfig, mut leading: watch::Receiver<bool>) {
    let (tx, mut changes) = watch::channel(0u64);
    let _watches = spawn_watches(&client, &config, tx);
    let mut resync = tokio::time::interval(config.resync);
    let mut leadership_open = true;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Coalesce a burst of events into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
                changes.borrow_and_update();
            }
            _ = resync.tick() => {}
            changed = async {
                if leadership_open { leading.changed().await } else { std::future::pending().await }
            } => {
                if changed.is_err() {
                    leadership_open = false;
                    continue;
                }
            }
        }
        if !*leading.borrow() {
            continue;
        }
        if let Err(e) = pass(&client, &config).await {
            tracing::warn!(error = %e, category = e.category(), "fleet pass failed; retrying");
        }
    }
}

/// Aborts the watch tasks when dropped.
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn spawn_watches(client: &Client, config: &FleetConfig, tx: watch::Sender<u64>) -> Watches {
    let tx = std::sync::Arc::new(tx);
    let mut namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    // The class-wide EnvoyProxy lives in the control plane's namespace.
    let own = Some(config.environment.names.namespace().to_owned());
    let mut proxy_namespaces = namespaces.clone();
    if !proxy_namespaces.contains(&None) && !proxy_namespaces.contains(&own) {
        proxy_namespaces.push(own.clone());
    }
    let fleet_services = format!(
        "app.kubernetes.io/component={FLEET_COMPONENT},{ENVIRONMENT_LABEL}={}",
        config.environment.names.environment_label_value()
    );
    let mut watches: Vec<(ApiResource, Option<String>, Option<String>)> = vec![(
        api_resource("gateway.networking.k8s.io/v1", "GatewayClass"),
        None,
        None,
    )];
    for ns in namespaces.drain(..) {
        watches.push((
            api_resource("gateway.networking.k8s.io/v1", "Gateway"),
            ns.clone(),
            None,
        ));
        watches.push((
            api_resource("v1", "Service"),
            ns,
            Some(fleet_services.clone()),
        ));
    }
    // The environment's EnvoyGateway: its status carries the version each fleet may run.
    watches.push((
        api_resource("operator.gateway.envoyproxy.io/v1alpha1", "EnvoyGateway"),
        own.clone(),
        None,
    ));
    for ns in proxy_namespaces {
        watches.push((
            api_resource("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"),
            ns,
            None,
        ));
    }
    Watches(
        watches
            .into_iter()
            .map(|(ar, ns, labels)| {
                let api: Api<DynamicObject> = match &ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let mut wc = watcher::Config::default();
                if let Some(labels) = labels {
                    wc = wc.labels(&labels);
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut events = watcher::watcher(api, wc).boxed();
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(_) => tx.send_modify(|v| *v += 1),
                            Err(e) => {
                                tracing::debug!(kind = %ar.kind, error = %e, "fleet watch error");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                })
            })
            .collect(),
    )
}

fn list_error(kind: &'static str) -> impl Fn(kube::Error) -> FleetError {
    move |source| FleetError::List {
        kind,
        source: Box::new(source),
    }
}

/// The Gateways of the served namespaces.
async fn gateways(client: &Client, config: &FleetConfig) -> Result<Vec<Gateway>, FleetError> {
    if config.watch_namespaces.is_empty() {
        let api: Api<Gateway> = Api::all(client.clone());
        return Ok(api
            .list(&ListParams::default())
            .await
            .map_err(list_error("Gateway"))?
            .items);
    }
    let mut out = Vec::new();
    for ns in &config.watch_namespaces {
        let api: Api<Gateway> = Api::namespaced(client.clone(), ns);
        out.extend(
            api.list(&ListParams::default())
                .await
                .map_err(list_error("Gateway"))?
                .items,
        );
    }
    Ok(out)
}

/// Every fleet object of this environment, grouped by the UID of its Gateway.
async fn fleet_objects(
    client: &Client,
    config: &FleetConfig,
) -> Result<BTreeMap<String, Vec<Value>>, FleetError> {
    let selector = format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component={FLEET_COMPONENT},{ENVIRONMENT_LABEL}={}",
        config.environment.names.environment_label_value()
    );
    let mut objects = Vec::new();
    if config.watch_namespaces.is_empty() {
        objects = labelled_objects(client, FLEET_KINDS, None, &selector).await?;
    } else {
        for ns in &config.watch_namespaces {
            objects.extend(labelled_objects(client, FLEET_KINDS, Some(ns), &selector).await?);
        }
    }
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for object in objects {
        let uid = object
            .pointer(&format!(
                "/metadata/labels/{}",
                FLEET_GATEWAY_UID_LABEL.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        grouped.entry(uid).or_default().push(object);
    }
    Ok(grouped)
}

fn ownership(config: &FleetConfig, gateway_uid: &str) -> Ownership {
    Ownership {
        field_manager: FIELD_MANAGER.to_owned(),
        owner_uid: gateway_uid.to_owned(),
        owner_uid_label: FLEET_GATEWAY_UID_LABEL.to_owned(),
        labels: BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            ),
            (
                ENVIRONMENT_LABEL.to_owned(),
                config.environment.names.environment_label_value(),
            ),
        ]),
    }
}

async fn proxy_issuer(client: &Client, config: &FleetConfig) -> Result<ProxyIssuer, FleetError> {
    let (ns, name) = &config.issuer_secret;
    let missing = || FleetError::Issuer(format!("{ns}/{name}"));
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get_opt(name)
        .await
        .map_err(list_error("Secret"))?
        .ok_or_else(missing)?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|s| !s.is_empty())
    };
    match (text("ca.crt"), text("tls.crt"), text("tls.key")) {
        (Some(trust_bundle), Some(cert), Some(key)) => Ok(ProxyIssuer {
            trust_bundle,
            cert,
            key,
        }),
        _ => Err(missing()),
    }
}

/// Reads the EnvoyProxy a `parametersRef` names; `field` is the reference's path for messages.
async fn envoy_proxy_layer(
    client: &Client,
    field: String,
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Layer, SettingsError> {
    if group != "gateway.envoyproxy.io" || kind != "EnvoyProxy" {
        return Err(SettingsError::Reference {
            field,
            message: format!(
                "must reference a gateway.envoyproxy.io EnvoyProxy, not {group}/{kind}"
            ),
        });
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &api_resource("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"),
    );
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(Layer {
            source_name: format!("EnvoyProxy {namespace}/{name}"),
            spec: object.data.get("spec").cloned().unwrap_or(Value::Null),
        }),
        Ok(None) => Err(SettingsError::Reference {
            field,
            message: format!("EnvoyProxy {namespace}/{name} does not exist"),
        }),
        Err(e) => Err(SettingsError::Reference {
            field,
            message: format!("reading EnvoyProxy {namespace}/{name}: {e}"),
        }),
    }
}

/// The settings layers of `gateway`, least specific first.
async fn layers(
    client: &Client,
    defaults: &Value,
    class: &GatewayClass,
    gateway: &Gateway,
) -> Result<Vec<Layer>, SettingsError> {
    let mut layers = vec![Layer {
        source_name: "EnvoyGateway spec.proxy".into(),
        spec: defaults.clone(),
    }];
    let class_name = class.metadata.name.clone().unwrap_or_default();
    if let Some(p) = &class.spec.parameters_ref {
        let field = format!("GatewayClass {class_name} spec.parametersRef");
        let Some(ns) = &p.namespace else {
            return Err(SettingsError::Reference {
                field,
                message: "an EnvoyProxy reference needs a namespace".into(),
            });
        };
        layers.push(envoy_proxy_layer(client, field, &p.group, &p.kind, ns, &p.name).await?);
    }
    if let Some(p) = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        let ns = gateway.metadata.namespace.as_deref().unwrap_or_default();
        layers.push(
            envoy_proxy_layer(
                client,
                "spec.infrastructure.parametersRef".into(),
                &p.group,
                &p.kind,
                ns,
                &p.name,
            )
            .await?,
        );
    }
    Ok(layers)
}

/// The status of the environment's EnvoyGateway, which carries the upgrade rollout; `None` when
/// there is none (a control plane run without the operator).
async fn rollout(
    client: &Client,
    config: &FleetConfig,
) -> Result<Option<EnvoyGatewayStatus>, FleetError> {
    let names = &config.environment.names;
    let api: Api<EnvoyGateway> = Api::namespaced(client.clone(), names.namespace());
    Ok(api
        .get_opt(names.environment())
        .await
        .map_err(list_error("EnvoyGateway"))?
        .and_then(|eg| eg.status))
}

/// One pass over every Gateway of the class.
pub async fn pass(client: &Client, config: &FleetConfig) -> Result<(), FleetError> {
    let classes: Api<GatewayClass> = Api::all(client.clone());
    let ours: BTreeMap<String, GatewayClass> = classes
        .list(&ListParams::default())
        .await
        .map_err(list_error("GatewayClass"))?
        .items
        .into_iter()
        .filter(|c| c.spec.controller_name == config.controller_name)
        .filter_map(|c| c.metadata.name.clone().map(|n| (n, c)))
        .collect();
    let gateways: Vec<Gateway> = gateways(client, config)
        .await?
        .into_iter()
        .filter(|g| ours.contains_key(&g.spec.gateway_class_name))
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .collect();
    let mut live = fleet_objects(client, config).await?;
    let rollout = rollout(client, config).await?;
    let signer = Signer::new(proxy_issuer(client, config).await?)?;
    let defaults = proxy_defaults_spec(&config.proxy_defaults).map_err(FleetError::Defaults)?;

    let mut kept = BTreeSet::new();
    for gateway in &gateways {
        let Some(uid) = gateway.metadata.uid.clone() else {
            continue;
        };
        kept.insert(uid.clone());
        let key = format!(
            "{}/{}",
            gateway.metadata.namespace.as_deref().unwrap_or_default(),
            gateway.metadata.name.as_deref().unwrap_or_default()
        );
        let owned = live.remove(&uid).unwrap_or_default();
        let class = &ours[&gateway.spec.gateway_class_name];
        let version = fleet_version(
            rollout.as_ref().and_then(|s| s.upgrade.as_ref()),
            rollout.as_ref().and_then(|s| s.version.as_deref()),
            &key,
            &config.environment.version,
        );
        let outcome = reconcile_gateway(
            client,
            config,
            (gateway, class),
            &defaults,
            &signer,
            &owned,
            version,
        )
        .await;
        let (verdict, service) = match outcome {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(gateway = %key, error = %e, "fleet apply failed");
                (
                    Verdict {
                        ok: false,
                        reason: reason::APPLY_FAILED,
                        message: e.to_string(),
                    },
                    None,
                )
            }
        };
        write_status(client, gateway, &verdict, service.as_ref()).await;
    }

    // Fleets whose Gateway is gone or left the class.
    for (uid, owned) in live {
        if kept.contains(&uid) || uid.is_empty() {
            continue;
        }
        let nothing = GraphBuilder::new().build().map_err(BuildError::from)?;
        let p = plan(&nothing, &owned, &ownership(config, &uid));
        apply(client, &nothing, &p, &owned).await?;
        tracing::info!(gateway_uid = %uid, "fleet of a Gateway no longer served pruned");
    }
    Ok(())
}

/// Reconciles one Gateway's fleet; returns its verdict and the live fleet Service.
async fn reconcile_gateway(
    client: &Client,
    config: &FleetConfig,
    (gateway, class): (&Gateway, &GatewayClass),
    defaults: &Value,
    signer: &Signer,
    owned: &[Value],
    version: &str,
) -> Result<(Verdict, Option<Value>), FleetError> {
    let resolved = match layers(client, defaults, class, gateway).await {
        Ok(layers) => resolve(&layers),
        Err(e) => Err(e),
    };
    let settings = match resolved {
        Ok((settings, _)) => settings,
        Err(e) => {
            // The previous fleet stays as it was.
            let live_service = owned
                .iter()
                .find(|o| o.get("kind").and_then(Value::as_str) == Some("Service"))
                .cloned();
            return Ok((
                Verdict {
                    ok: false,
                    reason: reason::INVALID_PARAMETERS,
                    message: e.to_string(),
                },
                live_service,
            ));
        }
    };
    let uid = gateway.metadata.uid.clone().unwrap_or_default();
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or_default();
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    let names = &config.environment.names;
    let secret_name = FleetNames::new(namespace, name).certificate_secret();
    let decision = certificate::decide(
        signer,
        &EnvironmentIdentity::new(names.namespace(), names.environment()),
        (namespace, name),
        live_secret(owned, &secret_name).as_ref(),
        std::time::SystemTime::now(),
    )?;
    if let Some(reason) = decision.issued {
        tracing::info!(
            gateway = %format!("{namespace}/{name}"),
            reason = reason.as_str(),
            "proxy client certificate issued"
        );
    }
    let desired = build(&FleetInputs {
        environment: &config.environment,
        gateway,
        settings: &settings,
        certificate: &decision.certificate,
        version,
    })?;
    let steps = plan(&desired, owned, &ownership(config, &uid));
    let conflicts = foreign_objects(client, &desired, owned).await?;
    if !conflicts.is_empty() {
        let names: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        return Ok((
            Verdict {
                ok: false,
                reason: reason::CONFLICT,
                message: format!(
                    "objects exist that this fleet does not own: {}",
                    names.join(", ")
                ),
            },
            None,
        ));
    }
    let outcome = apply(client, &desired, &steps, owned).await?;
    if let ApplyOutcome::Waiting { id, rule, .. } = &outcome {
        tracing::debug!(object = %id, rule = %rule, "fleet waiting");
    }
    let service_id = desired
        .nodes()
        .find(|n| n.id.kind == "Service")
        .map(|n| n.id.clone());
    let service = match service_id {
        Some(id) => crate::environment::dereference::api_for(client, &id)
            .get_opt(&id.name)
            .await
            .ok()
            .flatten()
            .and_then(|s| serde_json::to_value(s).ok()),
        None => None,
    };
    Ok((
        Verdict {
            ok: true,
            reason: reason::APPLIED,
            message: "The proxy fleet is as its settings ask".into(),
        },
        service,
    ))
}

/// The PEM contents of the live fleet Secret `name` among a fleet's objects.
fn live_secret(owned: &[Value], name: &str) -> Option<SecretPem> {
    use base64::Engine as _;
    let secret = owned.iter().find(|o| {
        o.get("kind").and_then(Value::as_str) == Some("Secret")
            && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
    })?;
    let text = |key: &str| {
        secret
            .pointer(&format!("/data/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Some(SecretPem {
        ca_crt: text("ca.crt"),
        tls_crt: text("tls.crt"),
        tls_key: text("tls.key"),
    })
}

async fn write_status(
    client: &Client,
    gateway: &Gateway,
    verdict: &Verdict,
    service: Option<&Value>,
) {
    let Ok(live) = serde_json::to_value(gateway) else {
        return;
    };
    let found = service.map(addresses);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let Some(patch) = status_patch(&live, verdict, found.as_deref(), &now) else {
        return;
    };
    let ns = gateway.metadata.namespace.as_deref().unwrap_or_default();
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Gateway> = Api::namespaced(client.clone(), ns);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        // Someone wrote meanwhile: the watch brings the next pass.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            tracing::warn!(gateway = %format!("{ns}/{name}"), error = %e, "fleet status write failed")
        }
    }
}
