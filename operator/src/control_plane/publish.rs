//! Publishing translations to the xDS store (I/O shell shared by the Kubernetes controller and
//! standalone mode): one Envoy snapshot per Gateway, a new version only when content changed,
//! make-before-break warm-up of new clusters, and the proxy answers that decide `Programmed`.

use std::collections::BTreeMap;

use tokio::sync::broadcast;

use super::programmed::ProgrammedState;
use crate::translate::{GatewayIr, Translation};
use crate::xds::from_ir::{ListenerBinding, SnapshotBuilder};
use crate::xds::protocol::{CLUSTER, ENDPOINT, Snapshot};
use crate::xds::server::{ProxyEvent, SnapshotStore};

/// Owns what was published per Gateway and what its proxies answered.
#[derive(Debug)]
pub struct Publisher {
    store: SnapshotStore,
    events: Option<broadcast::Receiver<ProxyEvent>>,
    programmed: ProgrammedState,
    published: BTreeMap<String, Snapshot>,
    version: u64,
    /// Reuses the encoding of unchanged route entries and virtual hosts between rounds.
    builder: SnapshotBuilder,
}

impl Publisher {
    /// `events` are the xDS server's proxy events.
    pub fn new(store: SnapshotStore, events: broadcast::Receiver<ProxyEvent>) -> Self {
        Self {
            store,
            events: Some(events),
            programmed: ProgrammedState::default(),
            published: BTreeMap::new(),
            version: 0,
            builder: SnapshotBuilder::new(),
        }
    }

    /// What the proxies did with each Gateway's configuration.
    pub fn programmed(&self) -> &ProgrammedState {
        &self.programmed
    }

    /// Publishes every Gateway of `translation`; Gateways no longer present are withdrawn.
    pub async fn publish(
        &mut self,
        translation: &Translation,
        binding: impl Fn(&GatewayIr) -> ListenerBinding,
    ) {
        self.version += 1;
        let version = self.version.to_string();
        for gateway in &translation.gateways {
            let next = self.builder.build(gateway, binding(gateway), &version);
            // Only a change of content is a new version: proxies answer nothing to an
            // identical snapshot, and Programmed waits for an answer.
            if self
                .published
                .get(&gateway.name)
                .is_some_and(|p| p.resources == next.resources)
            {
                continue;
            }
            // Make before break: clusters a new route needs are warmed (endpoints ACKed) before
            // the route arrives, or Envoy answers 503 while they warm.
            if let Some(previous) = self.published.get(&gateway.name)
                && let Some(warm_up) =
                    with_new_clusters(previous, &next, &format!("{version}-warm"))
                && self.programmed.connected(&gateway.name) > 0
            {
                self.programmed.published(&gateway.name, &warm_up.version);
                self.store.set(&gateway.name, warm_up.clone());
                self.wait_for_endpoints(&gateway.name, &warm_up.version)
                    .await;
            }
            self.programmed.published(&gateway.name, &next.version);
            self.store.set(&gateway.name, next.clone());
            self.published.insert(gateway.name.clone(), next);
        }
        self.builder.finish_round();
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|name| !translation.gateways.iter().any(|g| &g.name == *name))
            .cloned()
            .collect();
        for name in gone {
            self.published.remove(&name);
            self.store.set(&name, Snapshot::new(&version));
        }
    }

    /// Waits for the next proxy event and applies it; `true` when it can change a status.
    /// Pending forever once the xDS server is gone.
    pub async fn next_event(&mut self) -> bool {
        loop {
            let Some(rx) = self.events.as_mut() else {
                return std::future::pending().await;
            };
            match rx.recv().await {
                Ok(event) => return self.programmed.on_event(&event),
                // Missed events: statuses are re-derived on the next change or event.
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                // No xDS server any more: keep translating without proxy answers.
                Err(broadcast::error::RecvError::Closed) => self.events = None,
            }
        }
    }

    /// Waits (at most a second) until a proxy of `gateway` ACKed the endpoints of `version`.
    async fn wait_for_endpoints(&mut self, gateway: &str, version: &str) {
        let Some(rx) = self.events.as_mut() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.programmed.acked_type(gateway, ENDPOINT, version) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(event)) => {
                    self.programmed.on_event(&event);
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
