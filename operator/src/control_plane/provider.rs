//! The Kubernetes provider of the control plane: watches every kind the translator reads and
//! keeps the latest objects per kind, coalescing changes into a version counter that the
//! translation loop follows.
//!
//! Objects are watched untyped and decoded one by one when a snapshot is taken, so one object
//! the Rust types cannot read is skipped and reported instead of stalling its whole watch (a
//! typed watcher fails the entire list on a single bad object). Watch restarts are handled as
//! kube-runtime's watcher defines them: objects listed between `Init` and `InitDone` replace the
//! previous set at once.
//!
//! The cluster is [`ClusterState::synced`] once every watch has finished its first list.
//! Translating before that would program the proxies from a partial view: a listener whose
//! ClientTrafficPolicy CA ConfigMap or a route whose basic-auth Secret has not been listed yet
//! would briefly serve without mTLS or authentication.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A kind the provider watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

/// Everything the translator reads.
pub const KINDS: &[WatchedKind] = &[
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "GatewayClass",
        namespaced: false,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "Gateway",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "GRPCRoute",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "TLSRoute",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1alpha2",
        kind: "TCPRoute",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1alpha2",
        kind: "UDPRoute",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "BackendTLSPolicy",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.envoyproxy.io/v1alpha1",
        kind: "BackendTrafficPolicy",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.envoyproxy.io/v1alpha1",
        kind: "SecurityPolicy",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.envoyproxy.io/v1alpha1",
        kind: "ClientTrafficPolicy",
        namespaced: true,
    },
    WatchedKind {
        api_version: "gateway.networking.k8s.io/v1beta1",
        kind: "ReferenceGrant",
        namespaced: true,
    },
    WatchedKind {
        api_version: "v1",
        kind: "Service",
        namespaced: true,
    },
    WatchedKind {
        api_version: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        namespaced: true,
    },
    WatchedKind {
        api_version: "v1",
        kind: "Secret",
        namespaced: true,
    },
    WatchedKind {
        api_version: "v1",
        kind: "ConfigMap",
        namespaced: true,
    },
    WatchedKind {
        api_version: "v1",
        kind: "Namespace",
        namespaced: false,
    },
];

/// Envoy Gateway's `Backend`, watched when the environment enables the Backend API.
pub const BACKEND_KIND: WatchedKind = WatchedKind {
    api_version: "gateway.envoyproxy.io/v1alpha1",
    kind: "Backend",
    namespaced: true,
};

type Key = (String, String);

/// The objects of one kind, with the buffer of a watch (re)list in progress (pure).
#[derive(Debug, Default, Clone)]
pub struct KindState {
    live: BTreeMap<Key, serde_json::Value>,
    relist: Option<BTreeMap<Key, serde_json::Value>>,
    /// The first list has completed (or the kind is not served by the apiserver at all).
    synced: bool,
}

fn key_of(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

impl KindState {
    /// Applies one watcher event; returns whether the visible set changed.
    pub fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        match event {
            Event::Apply(o) => {
                let v = value(&o);
                self.live.insert(key_of(&o), v.clone()) != Some(v)
            }
            Event::Delete(o) => self.live.remove(&key_of(&o)).is_some(),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key_of(&o), value(&o));
                false
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = fresh != self.live || !self.synced;
                self.live = fresh;
                self.synced = true;
                changed
            }
        }
    }

    /// The apiserver does not serve the kind (its CRD is not installed): there is nothing to
    /// wait for. Returns whether this changed anything.
    pub fn mark_not_served(&mut self) -> bool {
        !std::mem::replace(&mut self.synced, true)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Decodes every object as `K`; the ones that do not decode are returned as problems.
    pub fn decode<K: DeserializeOwned>(&self) -> (Vec<K>, Vec<DecodeProblem>) {
        let mut ok = Vec::new();
        let mut problems = Vec::new();
        for ((namespace, name), value) in &self.live {
            match serde_json::from_value::<K>(value.clone()) {
                Ok(k) => ok.push(k),
                Err(e) => problems.push(DecodeProblem {
                    object: if namespace.is_empty() {
                        name.clone()
                    } else {
                        format!("{namespace}/{name}")
                    },
                    message: e.to_string(),
                }),
            }
        }
        (ok, problems)
    }
}

/// An object that could not be read as its Rust type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    pub object: String,
    pub message: String,
}

/// The provider's view of the cluster: per kind, the live objects of each watch (one per
/// watched namespace, or one for the whole cluster). Each watch's relists replace only its own
/// objects.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub kinds: BTreeMap<&'static str, BTreeMap<String, KindState>>,
}

impl ClusterState {
    /// Whether every watch has finished its first list (see the module docs).
    pub fn synced(&self) -> bool {
        self.kinds
            .values()
            .flat_map(|scopes| scopes.values())
            .all(|s| s.synced)
    }

    /// Every object of `kind` across its watches, decoded; undecodable ones as problems.
    pub fn decode<K: DeserializeOwned>(&self, kind: &str) -> (Vec<K>, Vec<DecodeProblem>) {
        let mut ok = Vec::new();
        let mut problems = Vec::new();
        for state in self
            .kinds
            .get(kind)
            .into_iter()
            .flat_map(|scopes| scopes.values())
        {
            let (k, p) = state.decode::<K>();
            ok.extend(k);
            problems.extend(p);
        }
        (ok, problems)
    }
}

/// Watches `KINDS` (in `namespaces`, or everywhere when empty) and bumps the returned counter on
/// every visible change. The tasks run until the returned handles are dropped or aborted.
pub fn watch_all(
    client: Client,
    namespaces: &[String],
    backend_api: bool,
) -> (
    Arc<Mutex<ClusterState>>,
    watch::Receiver<u64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let state = Arc::new(Mutex::new(ClusterState::default()));
    let (tx, rx) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let mut tasks = Vec::new();
    // Backends only when their API is on: the kind's CRD may not even be installed otherwise.
    let backend = backend_api.then_some(&BACKEND_KIND);
    for kind in KINDS.iter().chain(backend) {
        let (group, version) = kind
            .api_version
            .split_once('/')
            .unwrap_or(("", kind.api_version));
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind.kind));
        let apis: Vec<(String, Api<DynamicObject>)> = if !kind.namespaced || namespaces.is_empty() {
            vec![(String::new(), Api::all_with(client.clone(), &ar))]
        } else {
            namespaces
                .iter()
                .map(|ns| (ns.clone(), Api::namespaced_with(client.clone(), ns, &ar)))
                .collect()
        };
        for (scope, api) in apis {
            // Registered before the watch starts, so `synced` waits for it.
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .kinds
                .entry(kind.kind)
                .or_default()
                .entry(scope.clone())
                .or_default();
            let (state, tx) = (state.clone(), tx.clone());
            let kind_name = kind.kind;
            tasks.push(tokio::spawn(async move {
                let mut events = watcher::watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(e) => Ok(e),
                        Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                            if status.is_not_found() =>
                        {
                            Err(())
                        }
                        Err(e) => {
                            tracing::warn!(kind = kind_name, error = %e, "watch error; retrying");
                            continue;
                        }
                    };
                    let changed = {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        let kind_state = s
                            .kinds
                            .entry(kind_name)
                            .or_default()
                            .entry(scope.clone())
                            .or_default();
                        match event {
                            Ok(event) => kind_state.apply(event),
                            Err(()) => {
                                if !kind_state.synced {
                                    tracing::warn!(
                                        kind = kind_name,
                                        "kind not served by the apiserver (CRD not installed?); translating without it"
                                    );
                                }
                                kind_state.mark_not_served()
                            }
                        }
                    };
                    if changed {
                        tx.send_modify(|v| *v += 1);
                    }
                }
            }));
        }
    }
    (state, rx, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, data: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns"},
            "data": {"k": data}
        }))
        .expect("object")
    }

    #[test]
    fn relist_replaces_the_set_at_once_and_reports_real_changes_only() {
        let mut s = KindState::default();
        assert!(s.apply(Event::Apply(cm("a", "1"))));
        assert!(
            !s.apply(Event::Apply(cm("a", "1"))),
            "same content is no change"
        );
        assert!(s.apply(Event::Apply(cm("b", "1"))));
        // A relist that no longer has b: b disappears only at InitDone.
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(cm("a", "1"))));
        assert_eq!(s.len(), 2);
        assert!(s.apply(Event::InitDone));
        assert_eq!(s.len(), 1);
        assert!(s.apply(Event::Delete(cm("a", "1"))));
        assert!(s.is_empty());
    }

    fn scope<'c>(cluster: &'c mut ClusterState, kind: &'static str) -> &'c mut KindState {
        cluster
            .kinds
            .entry(kind)
            .or_default()
            .entry(String::new())
            .or_default()
    }

    #[test]
    fn the_cluster_is_synced_once_every_watch_has_listed_or_is_not_served() {
        let mut cluster = ClusterState::default();
        for kind in ["ConfigMap", "Secret", "TCPRoute"] {
            scope(&mut cluster, kind);
        }
        assert!(!cluster.synced());
        // An empty first list is a change: the kind is now known to be empty.
        assert!(!scope(&mut cluster, "ConfigMap").apply(Event::Init));
        assert!(scope(&mut cluster, "ConfigMap").apply(Event::InitDone));
        scope(&mut cluster, "Secret").apply(Event::Init);
        scope(&mut cluster, "Secret").apply(Event::InitApply(cm("s", "x")));
        assert!(
            !cluster.synced(),
            "Secrets still listing, TCPRoutes not known"
        );
        assert!(scope(&mut cluster, "Secret").apply(Event::InitDone));
        assert!(scope(&mut cluster, "TCPRoute").mark_not_served());
        assert!(!scope(&mut cluster, "TCPRoute").mark_not_served(), "once");
        assert!(cluster.synced());
        // A later relist (watch restart) does not unsync the cluster.
        scope(&mut cluster, "ConfigMap").apply(Event::Init);
        assert!(cluster.synced());
    }

    #[test]
    fn undecodable_objects_are_reported_not_fatal() {
        let mut s = KindState::default();
        s.apply(Event::Apply(cm("good", "1")));
        let mut bad = cm("bad", "1");
        bad.data = serde_json::json!({"data": {"k": 5}});
        s.apply(Event::Apply(bad));
        let (ok, problems) = s.decode::<k8s_openapi::api::core::v1::ConfigMap>();
        assert_eq!(ok.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "ns/bad");
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    fn cm(ns: &str, name: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns}, "data": {}
        }))
        .expect("object")
    }

    #[test]
    fn a_relist_of_one_namespace_keeps_the_others() {
        let mut state = ClusterState::default();
        for ns in ["a", "b"] {
            let scope = state
                .kinds
                .entry("ConfigMap")
                .or_default()
                .entry(ns.to_owned())
                .or_default();
            scope.apply(Event::Init);
            scope.apply(Event::InitApply(cm(ns, "x")));
            scope.apply(Event::InitDone);
        }
        let (all, problems) = state.decode::<k8s_openapi::api::core::v1::ConfigMap>("ConfigMap");
        assert!(problems.is_empty());
        assert_eq!(all.len(), 2, "both namespaces' objects are visible");
    }
}
