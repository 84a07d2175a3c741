//! Names and labels of the objects of one environment. Every stage derives them from here, so the
//! builder, the pruner and the status writer can never disagree on what belongs to whom.

use std::collections::BTreeMap;

use crate::short_hash::short_sha256_hex;

/// `app.kubernetes.io/managed-by` value of every object the operator creates.
pub const MANAGED_BY: &str = "eg-operator";
/// Label holding the UID of the EnvoyGateway that owns an object. Cluster-scoped and
/// cross-namespace objects cannot carry an ownerReference to a namespaced owner, so pruning and
/// conflict checks rely on this label for every object alike.
pub const OWNER_UID_LABEL: &str = "operator.gateway.envoyproxy.io/owner-uid";
/// Label naming the environment (`namespace.name`, shortened with a hash when too long).
pub const ENVIRONMENT_LABEL: &str = "operator.gateway.envoyproxy.io/environment";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "eg-operator";

/// Port on which the control plane serves xDS to Envoy proxies.
pub const XDS_PORT: u16 = 18000;
/// Port of the control plane's Prometheus metrics.
pub const METRICS_PORT: i32 = 19001;
/// Port of the control plane's health endpoints (`/healthz`, `/readyz`).
pub const HEALTH_PORT: i32 = 8081;

/// Names of one environment's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
    name: String,
    base: String,
}

impl Names {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            base: format!("{name}-envoy-gateway"),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn environment(&self) -> &str {
        &self.name
    }

    /// Deployment, Service, ServiceAccount, PDB and Role of the control plane.
    pub fn control_plane(&self) -> &str {
        &self.base
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.base)
    }

    /// The class-wide EnvoyProxy holding `spec.proxy`, referenced by the GatewayClass.
    pub fn envoy_proxy(&self) -> String {
        format!("{}-proxy", self.base)
    }

    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.base)
    }

    pub fn xds_server_secret(&self) -> String {
        format!("{}-xds-server", self.base)
    }

    /// The intermediate CA the controller signs each Gateway's proxy certificate with.
    pub fn proxy_issuer_secret(&self) -> String {
        format!("{}-proxy-issuer", self.base)
    }

    /// Cluster-scoped names must be unique across environments, so they carry the namespace.
    pub fn cluster_role(&self) -> String {
        format!("eg-operator:{}:{}", self.namespace, self.name)
    }

    /// The GatewayClass controllerName, unique to this EnvoyGateway.
    pub fn controller_name(&self) -> String {
        format!(
            "operator.gateway.envoyproxy.io/{}.{}",
            self.namespace, self.name
        )
    }

    /// DNS names under which proxies reach the xDS server; the server certificate's SANs.
    pub fn xds_dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.base, &self.namespace);
        vec![
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ]
    }

    /// Value of [`ENVIRONMENT_LABEL`]: `namespace.name`, or, past the 63-character limit of
    /// label values, a prefix of it and a hash of the whole.
    pub fn environment_label_value(&self) -> String {
        let full = format!("{}.{}", self.namespace, self.name);
        if full.len() <= 63 {
            return full;
        }
        let hash = short_sha256_hex(full.as_bytes(), 5);
        let prefix = full[..52].trim_end_matches(['.', '-']);
        format!("{prefix}-{hash}")
    }

    /// Labels every object of the environment carries; `owner_uid` ties it to one EnvoyGateway.
    pub fn common_labels(&self, owner_uid: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            ),
            (
                "app.kubernetes.io/part-of".to_owned(),
                "envoy-gateway".to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (ENVIRONMENT_LABEL.to_owned(), self.environment_label_value()),
            (OWNER_UID_LABEL.to_owned(), owner_uid.to_owned()),
        ])
    }

    /// Selector of the control-plane pods (immutable on a Deployment, so no version in it).
    pub fn control_plane_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                "envoy-gateway".to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (
                "app.kubernetes.io/component".to_owned(),
                "controller".to_owned(),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_to_the_environment() {
        let n = Names::new("eg-production", "production");
        assert_eq!(n.control_plane(), "production-envoy-gateway");
        assert_eq!(n.cluster_role(), "eg-operator:eg-production:production");
        assert_eq!(
            n.controller_name(),
            "operator.gateway.envoyproxy.io/eg-production.production"
        );
        assert_eq!(
            n.xds_dns_names()[0],
            "production-envoy-gateway.eg-production.svc.cluster.local"
        );
        assert_eq!(n.environment_label_value(), "eg-production.production");
    }

    #[test]
    fn long_environment_label_is_shortened_deterministically() {
        let n = Names::new(&"n".repeat(60), &"e".repeat(60));
        let v = n.environment_label_value();
        assert!(v.len() <= 63, "{v} is {} chars", v.len());
        assert_eq!(v, n.environment_label_value());
        assert_ne!(
            v,
            Names::new(&"n".repeat(60), &"f".repeat(60)).environment_label_value()
        );
    }
}
