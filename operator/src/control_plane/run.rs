//! The control plane's main loop (I/O shell): provider changes → pure translation → Envoy
//! snapshots per Gateway in the xDS store → statuses written back. Changes that arrive while a
//! translation runs are coalesced into the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio::sync::{broadcast, watch};

use super::AbortOnDrop;
use super::oidc_discovery::OidcDiscovery;
use super::programmed::ProgrammedState;
use super::provider::{ClusterState, DecodeProblem, KINDS, watch_all};
use super::publish::Publisher;
use crate::translate::{
    Snapshot as ApiSnapshot, Translation, Translator, oidc_issuers_to_discover,
};
use crate::xds::from_ir::ListenerBinding;
use crate::xds::server::{ProxyEvent, SnapshotStore};

/// Field manager of status writes.
pub const STATUS_MANAGER: &str = "eg-operator-controller";

/// What the loop needs to know about its environment.
#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// The GatewayClass controllerName this environment serves.
    pub controller_name: String,
    /// Namespaces served; empty means all.
    pub watch_namespaces: Vec<String>,
    pub binding: ListenerBinding,
    /// Watch Envoy Gateway `Backend`s and let routes use them.
    pub backend_api: bool,
    /// CAs (PEM) trusted besides the public ones when discovering OpenID providers.
    pub oidc_discovery_ca: Option<String>,
}

/// Builds the translator's input from the provider's state; objects that do not decode are
/// returned as problems instead of failing the whole snapshot.
pub fn api_snapshot(
    state: &ClusterState,
    controller_name: &str,
    backend_api: bool,
) -> (ApiSnapshot, Vec<DecodeProblem>) {
    let mut problems = Vec::new();
    fn decode<K: DeserializeOwned>(
        state: &ClusterState,
        kind: &str,
        problems: &mut Vec<DecodeProblem>,
    ) -> Vec<K> {
        let (ok, bad) = state.decode::<K>(kind);
        problems.extend(bad);
        ok
    }
    let snapshot = ApiSnapshot {
        controller_name: controller_name.to_owned(),
        gateway_classes: decode(state, "GatewayClass", &mut problems),
        gateways: decode(state, "Gateway", &mut problems),
        http_routes: decode(state, "HTTPRoute", &mut problems),
        grpc_routes: decode(state, "GRPCRoute", &mut problems),
        tls_routes: decode(state, "TLSRoute", &mut problems),
        tcp_routes: decode(state, "TCPRoute", &mut problems),
        udp_routes: decode(state, "UDPRoute", &mut problems),
        reference_grants: decode(state, "ReferenceGrant", &mut problems),
        services: decode(state, "Service", &mut problems),
        endpoint_slices: decode(state, "EndpointSlice", &mut problems),
        secrets: decode(state, "Secret", &mut problems),
        config_maps: decode(state, "ConfigMap", &mut problems),
        backend_tls_policies: decode(state, "BackendTLSPolicy", &mut problems),
        backend_traffic_policies: decode(state, "BackendTrafficPolicy", &mut problems),
        security_policies: decode(state, "SecurityPolicy", &mut problems),
        client_traffic_policies: decode(state, "ClientTrafficPolicy", &mut problems),
        namespaces: decode(state, "Namespace", &mut problems),
        // Empty unless the Backend API is on: then the provider watches them.
        backends: decode(state, "Backend", &mut problems),
        backend_api,
        // Filled in by the loop from its discovery results.
        oidc_discovery: Default::default(),
    };
    (snapshot, problems)
}

/// Runs until the provider's channel closes. `events` are the xDS server's proxy events, which
/// decide each Gateway's Programmed condition; statuses are written only while `leading`.
pub async fn run(
    client: Client,
    settings: ControlPlaneSettings,
    store: SnapshotStore,
    events: broadcast::Receiver<ProxyEvent>,
    leading: watch::Receiver<bool>,
) {
    let (state, mut changes, _watches) = watch_all(
        client.clone(),
        &settings.watch_namespaces,
        settings.backend_api,
    );
    // Status goes out from its own task, so API latency never delays the next translation.
    let (statuses, latest) = watch::channel(None);
    let writer = StatusWriter::new(client, settings.controller_name.clone());
    let status_task = AbortOnDrop(tokio::spawn(write_statuses(writer, latest, leading)));
    let mut publisher = Publisher::new(store, events);
    let mut last: Option<Arc<Translation>> = None;
    // Incremental: one change re-translates the objects it touches, not the whole cluster.
    let mut translator = Translator::new();
    let mut discovery = OidcDiscovery::new(settings.oidc_discovery_ca.as_deref());
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                changes.borrow_and_update();
            }
            found = discovery.next() => {
                if !found {
                    continue;
                }
            }
            changed = publisher.next_event() => {
                if changed && let Some(t) = &last {
                    statuses.send_replace(Some((t.clone(), publisher.programmed().clone())));
                }
                continue;
            }
        }
        let started = Instant::now();
        let translation = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            // A partial view could serve a listener without its mTLS CA or a route
            // without its credentials; proxies wait for the whole picture instead.
            if !state.synced() {
                continue;
            }
            let (mut input, problems) =
                api_snapshot(&state, &settings.controller_name, settings.backend_api);
            for p in problems {
                tracing::warn!(object = %p.object, error = %p.message, "object skipped: cannot be read");
            }
            discovery.want(&oidc_issuers_to_discover(&input));
            // Proxies may still hold an earlier control plane's config, in which the OIDC
            // routes are protected: the first translation waits for their providers'
            // endpoints (found or failed) rather than publish those policies as pending.
            if last.is_none() && !discovery.settled() {
                continue;
            }
            input.oidc_discovery = discovery.results();
            tracing::info_span!("translate").in_scope(|| translator.translate(&input))
        };
        publisher.publish(&translation, |_| settings.binding).await;
        tracing::debug!(elapsed = ?started.elapsed(), gateways = translation.gateways.len(), "translated");
        let translation = Arc::new(translation);
        statuses.send_replace(Some((translation.clone(), publisher.programmed().clone())));
        last = Some(translation);
    }
    drop(status_task);
}

type StatusInput = Option<(Arc<Translation>, ProgrammedState)>;

/// Writes the latest statuses while this replica leads; a new leader rewrites everything.
async fn write_statuses(
    mut writer: StatusWriter,
    mut latest: watch::Receiver<StatusInput>,
    mut leading: watch::Receiver<bool>,
) {
    let mut leadership_open = true;
    loop {
        tokio::select! {
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = async {
                if leadership_open {
                    leading.changed().await
                } else {
                    std::future::pending().await
                }
            } => {
                if changed.is_err() {
                    // The election ended: the last known leadership stands.
                    leadership_open = false;
                    continue;
                }
                // A new leader trusts nothing it wrote before: another replica may have since.
                if *leading.borrow_and_update() {
                    writer.forget();
                }
            }
        }
        if !*leading.borrow() {
            continue;
        }
        let current = latest.borrow_and_update().clone();
        if let Some((translation, programmed)) = current {
            writer.write(&translation, &programmed).await;
        }
    }
}

/// Writes statuses that changed since the last write; the translator's placeholder transition
/// times are replaced by the time of the write.
struct StatusWriter {
    client: Client,
    controller_name: String,
    written: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
}

impl StatusWriter {
    fn new(client: Client, controller_name: String) -> Self {
        Self {
            client,
            controller_name,
            written: Arc::default(),
        }
    }

    fn forget(&mut self) {
        if let Ok(mut w) = self.written.lock() {
            w.clear();
        }
    }

    async fn write(&mut self, t: &Translation, programmed: &ProgrammedState) {
        // What was written for objects this translation no longer has a status for (deleted,
        // or no longer ours) is forgotten: an object created again under the same name must
        // get its status written even when it equals the old one's.
        let current: BTreeSet<String> = (t.status.gateway_classes.keys())
            .map(|name| format!("GatewayClass {name}"))
            .chain(t.status.gateways.keys().map(|key| format!("Gateway {key}")))
            .chain(
                t.status
                    .routes()
                    .into_iter()
                    .flat_map(|(kind, s)| s.keys().map(move |key| format!("{kind} {key}"))),
            )
            .chain(
                (t.status.backend_tls_policies.keys()).map(|key| format!("BackendTLSPolicy {key}")),
            )
            .chain(
                (t.status.policies.backend_traffic_policies.keys())
                    .map(|key| format!("BackendTrafficPolicy {key}")),
            )
            .chain(
                (t.status.policies.security_policies.keys())
                    .map(|key| format!("SecurityPolicy {key}")),
            )
            .chain(
                (t.status.client_traffic_policies.keys())
                    .map(|key| format!("ClientTrafficPolicy {key}")),
            )
            .collect();
        if let Ok(mut w) = self.written.lock() {
            w.retain(|id, _| current.contains(id));
        }
        for (name, status) in &t.status.gateway_classes {
            let api: Api<GatewayClass> = Api::all(self.client.clone());
            self.patch(&api, "GatewayClass", name, name, status).await;
        }
        for (key, status) in &t.status.gateways {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), ns);
            let mut status = status.clone();
            programmed.refine(key, &mut status);
            self.patch(&api, "Gateway", key, name, &status).await;
        }
        let mut shared: Vec<(&str, &str, JsonStatuses)> = t
            .status
            .routes()
            .into_iter()
            .map(|(kind, statuses)| (kind, "parents", json_statuses(statuses)))
            .collect();
        shared.push((
            "BackendTLSPolicy",
            "ancestors",
            json_statuses(&t.status.backend_tls_policies),
        ));
        shared.push((
            "BackendTrafficPolicy",
            "ancestors",
            json_statuses(&t.status.policies.backend_traffic_policies),
        ));
        shared.push((
            "SecurityPolicy",
            "ancestors",
            json_statuses(&t.status.policies.security_policies),
        ));
        shared.push((
            "ClientTrafficPolicy",
            "ancestors",
            json_statuses(&t.status.client_traffic_policies),
        ));
        for (kind, list, statuses) in shared {
            let Some(resource) = status_resource(kind) else {
                continue;
            };
            for (key, ours) in statuses {
                self.write_shared(&resource, kind, list, &key, ours).await;
            }
        }
    }

    /// Writes the status of a route or policy, whose `list` (`parents`, `ancestors`) is shared
    /// by every controller involved: the entries other controllers wrote are kept, only ours
    /// replaced. Read only when ours changed, so a quiet object costs no API call.
    async fn write_shared(
        &self,
        resource: &ApiResource,
        kind: &str,
        list: &str,
        key: &str,
        ours: serde_json::Value,
    ) {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, resource);
        let id = format!("{kind} {key}");
        if self.unchanged(&id, &ours) {
            return;
        }
        let mut merged = ours.clone();
        if let Ok(Some(live)) = api.get_opt(name).await {
            let others = live
                .data
                .pointer(&format!("/status/{list}"))
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.get("controllerName").and_then(serde_json::Value::as_str)
                        != Some(self.controller_name.as_str())
                })
                .cloned();
            if let Some(entries) = merged.get_mut(list).and_then(|p| p.as_array_mut()) {
                entries.extend(others);
            }
        }
        self.send(&api, &id, name, ours, merged).await;
    }

    fn unchanged(&self, id: &str, desired: &serde_json::Value) -> bool {
        self.written
            .lock()
            .ok()
            .is_some_and(|w| w.get(id) == Some(desired))
    }

    /// Writes `body` as the status of `name`, remembering `desired` as what was written for `id`.
    async fn send<K>(
        &self,
        api: &Api<K>,
        id: &str,
        name: &str,
        desired: serde_json::Value,
        body: serde_json::Value,
    ) where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let patch = serde_json::json!({ "status": stamp_transition_times(body) });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if let Ok(mut w) = self.written.lock() {
                    w.insert(id.to_owned(), desired);
                }
            }
            Err(e) => tracing::warn!(object = %id, error = %e, "status write failed"),
        }
    }

    async fn patch<K, S>(&self, api: &Api<K>, kind: &str, key: &str, name: &str, status: &S)
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
        S: Serialize,
    {
        let Ok(desired) = serde_json::to_value(status) else {
            return;
        };
        let id = format!("{kind} {key}");
        if self.unchanged(&id, &desired) {
            return;
        }
        self.send(api, &id, name, desired.clone(), desired).await;
    }
}

/// Statuses by `"{namespace}/{name}"`, as the JSON that is written.
type JsonStatuses = Vec<(String, serde_json::Value)>;

fn json_statuses<K: AsRef<str>, S: Serialize>(statuses: &BTreeMap<K, S>) -> JsonStatuses {
    statuses
        .iter()
        .filter_map(|(key, status)| {
            Some((key.as_ref().to_owned(), serde_json::to_value(status).ok()?))
        })
        .collect()
}

/// The API resource of a route or policy kind, at the version the provider watches it in.
fn status_resource(kind: &str) -> Option<ApiResource> {
    let watched = KINDS.iter().find(|k| k.kind == kind)?;
    let (group, version) = watched.api_version.split_once('/')?;
    Some(ApiResource::from_gvk(&GroupVersionKind::gvk(
        group, version, kind,
    )))
}

/// Replaces the translator's epoch placeholders with now.
pub(crate) fn stamp_transition_times(mut v: serde_json::Value) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    fn walk(v: &mut serde_json::Value, now: &str) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "lastTransitionTime" {
                        *child = serde_json::Value::String(now.to_owned());
                    } else {
                        walk(child, now);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, now)),
            _ => {}
        }
    }
    walk(&mut v, &now);
    v
}
