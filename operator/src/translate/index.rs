//! Lookup tables over a [`Snapshot`](super::Snapshot): Services, EndpointSlices, Secrets,
//! Backends and Namespaces by name, and the ReferenceGrants.
//!
//! Built once per translation so every resolution is a map lookup and no answer depends on the
//! order objects arrived in. Two objects with one name cannot come from an API server; should a
//! hand-written snapshot hold them, the first occurrence wins.

use std::collections::{BTreeMap, HashMap};

use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use eg_crds::upstream::Backend;

use super::Snapshot;

/// The text under `key` of a Secret: from `data`, else from `stringData` (write-only in a real
/// cluster, but hand-written snapshots use it).
pub(super) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
}

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Lookup tables keyed by name; only ever looked up, never iterated, so unordered.
type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Read-only views of the snapshot keyed by `(namespace, name)`.
#[derive(Debug)]
pub(super) struct Index<'a> {
    namespaces: Table<&'a str, &'a Namespace>,
    // Keyed by borrowed `(namespace, name)` so lookups allocate nothing: they run once per
    // backendRef, tens of thousands of times for a large Gateway (hashed: a tree compared
    // names sharing long prefixes a dozen times per lookup).
    services: Table<(&'a str, &'a str), &'a Service>,
    endpoint_slices: Table<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: Table<(&'a str, &'a str), &'a Secret>,
    config_maps: Table<(&'a str, &'a str), &'a ConfigMap>,
    backends: Table<(&'a str, &'a str), &'a Backend>,
    pub grants: Vec<&'a ReferenceGrant>,
    /// Whether backendRefs may name Envoy Gateway `Backend`s.
    pub backend_api: bool,
    /// OpenID providers' discovered endpoints, by issuer.
    pub oidc_discovery: &'a BTreeMap<String, Result<super::OidcEndpoints, String>>,
}

impl<'a> Index<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut namespaces = Table::default();
        for ns in &snapshot.namespaces {
            if let Some(name) = ns.metadata.name.as_deref() {
                namespaces.entry(name).or_insert(ns);
            }
        }
        let mut services = Table::default();
        for svc in &snapshot.services {
            if let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) {
                services.entry((ns.as_str(), name.as_str())).or_insert(svc);
            }
        }
        let mut endpoint_slices: Table<(&str, &str), Vec<&EndpointSlice>> = Table::default();
        for slice in &snapshot.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(service)) = (&slice.metadata.namespace, service) {
                endpoint_slices
                    .entry((ns.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        for slices in endpoint_slices.values_mut() {
            slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        let mut secrets = Table::default();
        for secret in &snapshot.secrets {
            if let (Some(ns), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) {
                secrets
                    .entry((ns.as_str(), name.as_str()))
                    .or_insert(secret);
            }
        }
        let mut config_maps = Table::default();
        for map in &snapshot.config_maps {
            if let (Some(ns), Some(name)) = (&map.metadata.namespace, &map.metadata.name) {
                config_maps
                    .entry((ns.as_str(), name.as_str()))
                    .or_insert(map);
            }
        }
        let mut backends = Table::default();
        for backend in &snapshot.backends {
            if let (Some(ns), Some(name)) = (&backend.metadata.namespace, &backend.metadata.name) {
                backends
                    .entry((ns.as_str(), name.as_str()))
                    .or_insert(backend);
            }
        }
        let mut grants: Vec<&ReferenceGrant> = snapshot.reference_grants.iter().collect();
        grants.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        Self {
            namespaces,
            services,
            endpoint_slices,
            secrets,
            config_maps,
            backends,
            grants,
            backend_api: snapshot.backend_api,
            oidc_discovery: &snapshot.oidc_discovery,
        }
    }

    pub fn namespace(&self, name: &str) -> Option<&'a Namespace> {
        self.namespaces.get(name).copied()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&(namespace, name)).copied()
    }

    /// The Service's EndpointSlices, by slice name.
    pub fn endpoint_slices<'s>(
        &'s self,
        namespace: &'s str,
        service: &'s str,
    ) -> &'s [&'a EndpointSlice] {
        self.endpoint_slices
            .get(&(namespace, service))
            .map_or(&[], Vec::as_slice)
    }

    pub fn backend(&self, namespace: &str, name: &str) -> Option<&'a Backend> {
        self.backends.get(&(namespace, name)).copied()
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&(namespace, name)).copied()
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&'a ConfigMap> {
        self.config_maps.get(&(namespace, name)).copied()
    }
}
