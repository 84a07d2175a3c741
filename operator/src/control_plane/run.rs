//! The control plane's main loop (I/O shell): provider changes → pure translation → Envoy
//! snapshots per Gateway in the xDS store → statuses written back. Changes that arrive while a
//! translation runs are coalesced into the next one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio::sync::{broadcast, watch};

use super::programmed::ProgrammedState;
use super::provider::{ClusterState, DecodeProblem, watch_all};
use crate::translate::{Snapshot as ApiSnapshot, Translation, Translator};
use crate::xds::from_ir::{ListenerBinding, SnapshotBuilder};
use crate::xds::protocol::{CLUSTER, ENDPOINT, Snapshot};
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
}

/// Builds the translator's input from the provider's state; objects that do not decode are
/// returned as problems instead of failing the whole snapshot.
pub fn api_snapshot(
    state: &ClusterState,
    controller_name: &str,
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
        reference_grants: decode(state, "ReferenceGrant", &mut problems),
        services: decode(state, "Service", &mut problems),
        endpoint_slices: decode(state, "EndpointSlice", &mut problems),
        secrets: decode(state, "Secret", &mut problems),
        namespaces: decode(state, "Namespace", &mut problems),
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
    let mut events = Some(events);
    let (state, mut changes, _watches) = watch_all(client.clone(), &settings.watch_namespaces);
    // Status goes out from its own task, so API latency never delays the next translation.
    let (statuses, latest) = watch::channel(None);
    let writer = StatusWriter::new(client, settings.controller_name.clone());
    let status_task = AbortOnDrop(tokio::spawn(write_statuses(writer, latest, leading)));
    let mut programmed = ProgrammedState::default();
    let mut published: BTreeMap<String, Snapshot> = BTreeMap::new();
    let mut version: u64 = 0;
    let mut last: Option<Arc<Translation>> = None;
    // Incremental: one change re-translates the objects it touches, not the whole cluster.
    let mut translator = Translator::new();
    let mut builder = SnapshotBuilder::new();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                changes.borrow_and_update();
                version += 1;
                let started = Instant::now();
                let translation = {
                    let state = state.lock().unwrap_or_else(|p| p.into_inner());
                    let (input, problems) = api_snapshot(&state, &settings.controller_name);
                    for p in problems {
                        tracing::warn!(object = %p.object, error = %p.message, "object skipped: cannot be read");
                    }
                    translator.translate(&input)
                };
                for gateway in &translation.gateways {
                    let next = builder.build(gateway, settings.binding, &version.to_string());
                    // Only a change of content is a new version: proxies answer nothing to an
                    // identical snapshot, and Programmed waits for an answer.
                    if published.get(&gateway.name).is_some_and(|p| p.resources == next.resources) {
                        continue;
                    }
                    // Make before break: clusters a new route needs are warmed (endpoints ACKed)
                    // before the route arrives, or Envoy answers 503 while they warm.
                    if let Some(previous) = published.get(&gateway.name)
                        && let Some(warm_up) = with_new_clusters(previous, &next, &format!("{version}-warm"))
                        && programmed.connected(&gateway.name) > 0
                    {
                        programmed.published(&gateway.name, &warm_up.version);
                        store.set(&gateway.name, warm_up.clone());
                        wait_for_endpoints(&mut events, &mut programmed, &gateway.name, &warm_up.version).await;
                    }
                    programmed.published(&gateway.name, &next.version);
                    store.set(&gateway.name, next.clone());
                    published.insert(gateway.name.clone(), next);
                }
                builder.finish_round();
                tracing::debug!(version, elapsed = ?started.elapsed(), gateways = translation.gateways.len(), "translated");
                let translation = Arc::new(translation);
                statuses.send_replace(Some((translation.clone(), programmed.clone())));
                last = Some(translation);
            }
            event = async {
                match events.as_mut() {
                    Some(e) => e.recv().await,
                    None => std::future::pending().await,
                }
            } => match event {
                Ok(event) => {
                    if programmed.on_event(&event)
                        && let Some(t) = &last
                    {
                        statuses.send_replace(Some((t.clone(), programmed.clone())));
                    }
                }
                // Missed events: statuses are re-derived on the next change or event.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                // No xDS server any more: keep translating without proxy answers.
                Err(broadcast::error::RecvError::Closed) => events = None,
            }
        }
    }
    drop(status_task);
}

/// Aborts the task when dropped, so the status writer never outlives its loop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// `previous` plus the clusters and endpoints `next` adds, when it adds any: the first of two
/// steps that bring new clusters in before the routes that use them.
fn with_new_clusters(previous: &Snapshot, next: &Snapshot, version: &str) -> Option<Snapshot> {
    let empty = BTreeMap::new();
    let old = previous.resources.get(CLUSTER).unwrap_or(&empty);
    let new = next.resources.get(CLUSTER).unwrap_or(&empty);
    if new.keys().all(|k| old.contains_key(k)) {
        return None;
    }
    let mut warm = previous.clone();
    warm.version = version.to_owned();
    for type_url in [CLUSTER, ENDPOINT] {
        let target = warm.resources.entry(type_url.to_owned()).or_default();
        for (name, r) in next.resources.get(type_url).unwrap_or(&empty) {
            target.entry(name.clone()).or_insert_with(|| r.clone());
        }
    }
    Some(warm)
}

/// Waits (at most a second) until a proxy of `gateway` ACKed the endpoints of `version`.
async fn wait_for_endpoints(
    events: &mut Option<broadcast::Receiver<ProxyEvent>>,
    programmed: &mut ProgrammedState,
    gateway: &str,
    version: &str,
) {
    let Some(rx) = events.as_mut() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while !programmed.acked_type(gateway, ENDPOINT, version) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(event)) => {
                programmed.on_event(&event);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                tracing::debug!(
                    gateway,
                    version,
                    "endpoints not acknowledged in time; publishing routes"
                );
                return;
            }
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
        for (key, status) in &t.status.http_routes {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let api: Api<HttpRoute> = Api::namespaced(self.client.clone(), ns);
            let Ok(ours) = serde_json::to_value(status) else {
                continue;
            };
            let id = format!("HTTPRoute {key}");
            if self.unchanged(&id, &ours) {
                continue;
            }
            // Route status is shared by every controller the route attaches to: keep the
            // parents entries other controllers wrote, replace only ours. Read only when ours
            // changed, so a quiet route costs no API call.
            let mut merged = ours.clone();
            if let Ok(Some(live)) = api.get_opt(name).await {
                let others: Vec<serde_json::Value> = live
                    .status
                    .map(|s| s.parents)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p.controller_name != self.controller_name)
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect();
                if let Some(parents) = merged.get_mut("parents").and_then(|p| p.as_array_mut()) {
                    parents.extend(others);
                }
            }
            self.send(&api, &id, name, ours, merged).await;
        }
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

/// Replaces the translator's epoch placeholders with now.
fn stamp_transition_times(mut v: serde_json::Value) -> serde_json::Value {
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
