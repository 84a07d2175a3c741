//! The ClusterServiceVersion (pure): how OLM installs, describes and upgrades the operator.
//!
//! The install strategy's Deployment is a typed `DeploymentSpec`; its RBAC comes from
//! [`crate::environment::permissions`]; the owned CRD's descriptors take their descriptions from
//! the CRD schema; `alm-examples` is the production example shipped in `examples/`;
//! `relatedImages` lists every image the operator can run, so mirrors for disconnected
//! clusters are complete.

use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{Value, json};

use super::{BundleError, File, METRICS_PORT, OPERATOR_NAME, PACKAGE, Release, yaml_file};
use crate::control_plane::provider::KINDS;
use crate::environment::build::{
    field_env, http_probe, restricted_container_security, restricted_pod_security, tcp_port,
};
use crate::environment::dereference::ENVIRONMENT_KINDS;
use crate::environment::permissions::{operator_cluster_rules, operator_namespace_rules};
use crate::environment::versions::RUNNABLE_VERSIONS;
use crate::fleet::FLEET_KINDS;

/// The example every new user starts from, shown by OperatorHub as `alm-examples`.
const EXAMPLE: &str = include_str!("../../../examples/envoygateway-production.yaml");
/// The operator's icon (SVG), shown by OperatorHub.
const ICON_SVG: &str = include_str!("icon.svg");
/// Oldest Kubernetes the operator supports: Gateway API v1.5 and the APIs it uses need 1.30.
pub const MIN_KUBE_VERSION: &str = "1.30.0";
/// OperatorHub capability level: installs, upgrades itself and its operands.
const CAPABILITIES: &str = "Seamless Upgrades";

const DESCRIPTION: &str = "\
eg-operator runs [Envoy Gateway](https://gateway.envoyproxy.io) for production: one
`EnvoyGateway` resource per environment (production, staging, dev, ...), and the operator runs
everything behind it.

* **Control plane**: replicas spread over hosts and zones, a disruption budget, leader
  election, least-privilege RBAC per watched namespace.
* **Certificates**: an environment CA, mutual TLS between the control plane and its Envoy
  proxies, rotated ahead of expiry with no downtime.
* **Proxy fleets**: one Envoy fleet per Gateway with autoscaling, anti-affinity, topology
  spread and graceful draining.
* **Safe changes**: objects applied in dependency order with server-side apply, readiness gates
  between waves, orphans pruned; `eg-operator plan` shows a change before it is made.

Users' Gateway API (`gateway.networking.k8s.io`) and Envoy Gateway (`gateway.envoyproxy.io`)
manifests work unchanged. The Gateway API and Envoy Gateway CRDs must be installed.
";

/// The CSV's `metadata.name` for a version.
pub fn csv_name(version: &str) -> String {
    format!("{PACKAGE}.v{version}")
}

/// The bundle's ClusterServiceVersion file.
pub fn render(release: &Release) -> Result<File, BundleError> {
    let csv = csv(release)?;
    yaml_file(
        &format!("bundle/manifests/{PACKAGE}.clusterserviceversion.yaml"),
        &[csv],
    )
}

fn to_value<T: serde::Serialize>(what: &str, v: &T) -> Result<Value, BundleError> {
    serde_json::to_value(v).map_err(|source| BundleError::Json {
        what: what.to_owned(),
        source,
    })
}

/// The ClusterServiceVersion as JSON.
pub fn csv(release: &Release) -> Result<Value, BundleError> {
    let Release {
        version,
        created_at,
    } = *release;
    let image = super::operator_image(version);
    let examples = alm_examples()?;
    let annotations = json!({
        "olm.skipRange": super::catalog::skip_range(version),
        "alm-examples": examples,
        "capabilities": CAPABILITIES,
        "categories": "Networking",
        "containerImage": image,
        "createdAt": created_at,
        "description": "Runs Envoy Gateway in production: environments, certificates, proxy fleets and upgrades.",
        "repository": "https://github.com/eg-operator/eg-operator",
        "support": "eg-operator maintainers",
        "operators.openshift.io/valid-subscription": "[]",
        "features.operators.openshift.io/disconnected": "true",
        "features.operators.openshift.io/fips-compliant": "false",
        "features.operators.openshift.io/proxy-aware": "false",
        "features.operators.openshift.io/tls-profiles": "false",
        "features.operators.openshift.io/token-auth-aws": "false",
        "features.operators.openshift.io/token-auth-azure": "false",
        "features.operators.openshift.io/token-auth-gcp": "false",
        "features.operators.openshift.io/cnf": "false",
        "features.operators.openshift.io/cni": "false",
        "features.operators.openshift.io/csi": "false",
    });
    Ok(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": csv_name(version),
            "annotations": annotations,
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/arch.arm64": "supported",
                "operatorframework.io/os.linux": "supported",
            },
        },
        "spec": {
            "displayName": "Envoy Gateway Operator",
            "description": DESCRIPTION,
            "version": version,
            "minKubeVersion": MIN_KUBE_VERSION,
            "maturity": "alpha",
            "provider": {"name": "eg-operator maintainers", "url": "https://github.com/eg-operator/eg-operator"},
            "maintainers": [{"name": "eg-operator maintainers", "email": "maintainers@eg-operator.dev"}],
            "links": [
                {"name": "Source", "url": "https://github.com/eg-operator/eg-operator"},
                {"name": "Envoy Gateway", "url": "https://gateway.envoyproxy.io"},
                {"name": "Gateway API", "url": "https://gateway-api.sigs.k8s.io"},
            ],
            "keywords": ["envoy", "gateway", "gateway-api", "ingress", "load-balancer", "networking"],
            "icon": [{
                "base64data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ICON_SVG),
                "mediatype": "image/svg+xml",
            }],
            "installModes": [
                {"type": "OwnNamespace", "supported": false},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": true},
            ],
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": [{
                        "serviceAccountName": OPERATOR_NAME,
                        "rules": to_value("clusterPermissions", &operator_cluster_rules())?,
                    }],
                    "permissions": [{
                        "serviceAccountName": OPERATOR_NAME,
                        "rules": to_value("permissions", &operator_namespace_rules())?,
                    }],
                    "deployments": [{
                        "name": OPERATOR_NAME,
                        "label": pod_labels(),
                        "spec": to_value("deployment", &deployment(&image))?,
                    }],
                },
            },
            "customresourcedefinitions": {"owned": [owned_crd()?]},
            "relatedImages": related_images(&image),
        },
    }))
}

fn pod_labels() -> Value {
    json!({"app.kubernetes.io/name": OPERATOR_NAME})
}

/// The operator's Deployment: leader-elected replicas, restricted security context, probes on
/// its health endpoints.
fn deployment(image: &str) -> DeploymentSpec {
    let labels: std::collections::BTreeMap<String, String> = [(
        "app.kubernetes.io/name".to_owned(),
        OPERATOR_NAME.to_owned(),
    )]
    .into();
    let quantity = |q: &str| Quantity(q.into());
    DeploymentSpec {
        replicas: Some(2),
        selector: LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        },
        strategy: Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            ..DeploymentStrategy::default()
        }),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                service_account_name: Some(OPERATOR_NAME.into()),
                security_context: Some(restricted_pod_security()),
                termination_grace_period_seconds: Some(10),
                containers: vec![Container {
                    name: "operator".into(),
                    image: Some(image.to_owned()),
                    args: Some(vec![
                        "operator".into(),
                        format!("--metrics-address=0.0.0.0:{METRICS_PORT}"),
                    ]),
                    env: Some(vec![
                        field_env("POD_NAMESPACE", "metadata.namespace"),
                        field_env("POD_NAME", "metadata.name"),
                    ]),
                    ports: Some(vec![tcp_port("metrics", METRICS_PORT)]),
                    liveness_probe: Some(http_probe("/healthz", "metrics")),
                    readiness_probe: Some(http_probe("/readyz", "metrics")),
                    resources: Some(ResourceRequirements {
                        requests: Some(
                            [
                                ("cpu".to_owned(), quantity("50m")),
                                ("memory".to_owned(), quantity("64Mi")),
                            ]
                            .into(),
                        ),
                        limits: Some([("memory".to_owned(), quantity("512Mi"))].into()),
                        ..ResourceRequirements::default()
                    }),
                    security_context: Some(restricted_container_security()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        },
        ..DeploymentSpec::default()
    }
}

/// `relatedImages`: the operator, the control plane of every operand version it can run, and
/// the default Envoy proxy image.
fn related_images(operator_image: &str) -> Value {
    let mut images = vec![json!({"name": "eg-operator", "image": operator_image})];
    for version in RUNNABLE_VERSIONS {
        images.push(json!({
            "name": format!("envoy-gateway-{}", version.replace('.', "-")),
            "image": super::operator_image(version),
        }));
    }
    images.push(json!({"name": "envoy", "image": crate::fleet::build::DEFAULT_ENVOY_IMAGE}));
    // The operator and the current operand are one image: list each image once.
    let mut seen = std::collections::BTreeSet::new();
    images.retain(|i| seen.insert(i["image"].to_string()));
    Value::Array(images)
}

fn alm_examples() -> Result<String, BundleError> {
    let mut example: Value =
        serde_yaml_ng::from_str(EXAMPLE).map_err(|source| BundleError::Yaml {
            file: "examples/envoygateway-production.yaml".into(),
            source,
        })?;
    if let Some(meta) = example.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("namespace");
    }
    serde_json::to_string_pretty(&json!([example])).map_err(|source| BundleError::Json {
        what: "alm-examples".into(),
        source,
    })
}

/// Spec fields shown in consoles: (path, display name, x-descriptors).
const SPEC_DESCRIPTORS: &[(&str, &str, &[&str])] = &[
    (
        "version",
        "Version",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "gatewayClassName",
        "GatewayClass",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "watchNamespaces",
        "Watched namespaces",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "controlPlane.replicas",
        "Control plane replicas",
        &["urn:alm:descriptor:com.tectonic.ui:podCount"],
    ),
    (
        "controlPlane.antiAffinity",
        "Control plane anti-affinity",
        &[
            "urn:alm:descriptor:com.tectonic.ui:select:Preferred",
            "urn:alm:descriptor:com.tectonic.ui:select:Required",
        ],
    ),
    (
        "controlPlane.resources",
        "Control plane resources",
        &["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"],
    ),
    (
        "proxy.replicas",
        "Proxy replicas",
        &["urn:alm:descriptor:com.tectonic.ui:podCount"],
    ),
    (
        "proxy.autoscaling.minReplicas",
        "Proxy minimum replicas",
        &["urn:alm:descriptor:com.tectonic.ui:number"],
    ),
    (
        "proxy.autoscaling.maxReplicas",
        "Proxy maximum replicas",
        &["urn:alm:descriptor:com.tectonic.ui:number"],
    ),
    (
        "proxy.resources",
        "Proxy resources",
        &["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"],
    ),
    (
        "certificates.duration",
        "Certificate lifetime",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "certificates.renewBefore",
        "Renew before expiry",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "extensionApis.enableBackend",
        "Enable Backend API",
        &["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"],
    ),
];

/// Status fields shown in consoles.
const STATUS_DESCRIPTORS: &[(&str, &str, &[&str])] = &[
    (
        "version",
        "Running version",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "targetVersion",
        "Target version",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "upgrade.phase",
        "Upgrade phase",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "upgrade.message",
        "Upgrade progress",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "observedGeneration",
        "Observed generation",
        &["urn:alm:descriptor:com.tectonic.ui:text"],
    ),
    (
        "conditions",
        "Conditions",
        &["urn:alm:descriptor:io.kubernetes.conditions"],
    ),
];

fn owned_crd() -> Result<Value, BundleError> {
    let crd = eg_crds::all().remove(0);
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| to_value("schema", s))
        .transpose()?
        .unwrap_or(Value::Null);
    let descriptors = |root: &str, list: &[(&str, &str, &[&str])]| {
        list.iter()
            .map(|(path, display, x)| {
                let description = schema_description(&schema, &format!("{root}.{path}"))?;
                Ok(json!({
                    "path": path,
                    "displayName": display,
                    "description": description,
                    "x-descriptors": x,
                }))
            })
            .collect::<Result<Vec<_>, BundleError>>()
    };
    let resources: Vec<Value> = resource_kinds()
        .into_iter()
        .map(|(api_version, kind)| {
            let version = api_version.rsplit('/').next().unwrap_or(api_version);
            json!({"kind": kind, "name": "", "version": version})
        })
        .collect();
    Ok(json!({
        "name": crd.metadata.name,
        "version": crd.spec.versions[0].name,
        "kind": crd.spec.names.kind,
        "displayName": "Envoy Gateway environment",
        "description": schema_description(&schema, "")?,
        "resources": resources,
        "specDescriptors": descriptors("spec", SPEC_DESCRIPTORS)?,
        "statusDescriptors": descriptors("status", STATUS_DESCRIPTORS)?,
    }))
}

/// Every kind an environment involves, at the API version the code uses, each once: what the
/// operator applies, what the control plane applies for proxy fleets or reads, and the Events
/// published about it. (OLM consoles list them; validators learn the versions from them.)
fn resource_kinds() -> Vec<(&'static str, &'static str)> {
    let mut kinds: Vec<(&str, &str)> = ENVIRONMENT_KINDS
        .iter()
        .chain(FLEET_KINDS)
        .map(|(api_version, kind, _)| (*api_version, *kind))
        .chain(KINDS.iter().map(|k| (k.api_version, k.kind)))
        .chain([("events.k8s.io/v1", "Event")])
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    kinds.retain(|(_, kind)| seen.insert(*kind));
    kinds
}

/// The first line of the description of the schema field at a dotted `path` (`""` = root).
fn schema_description(schema: &Value, path: &str) -> Result<String, BundleError> {
    let mut node = schema;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        node = node
            .get("properties")
            .and_then(|p| p.get(segment))
            .ok_or_else(|| BundleError::Descriptor {
                path: path.to_owned(),
            })?;
    }
    let text = node
        .get("description")
        .and_then(Value::as_str)
        .ok_or_else(|| BundleError::Descriptor {
            path: path.to_owned(),
        })?;
    Ok(text.split("\n\n").next().unwrap_or(text).replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Value {
        csv(&super::super::current_release()).expect("csv")
    }

    #[test]
    fn csv_carries_what_operatorhub_lists() {
        let csv = current();
        let annotations = &csv["metadata"]["annotations"];
        for key in [
            "alm-examples",
            "capabilities",
            "categories",
            "containerImage",
            "createdAt",
            "repository",
            "support",
            "description",
        ] {
            assert!(annotations[key].is_string(), "{key}");
        }
        let examples: Value =
            serde_json::from_str(annotations["alm-examples"].as_str().expect("str")).expect("json");
        assert_eq!(examples[0]["kind"], "EnvoyGateway");
        for key in [
            "icon",
            "maintainers",
            "links",
            "installModes",
            "relatedImages",
            "minKubeVersion",
        ] {
            assert!(!csv["spec"][key].is_null(), "{key}");
        }
    }

    #[test]
    fn rbac_is_the_operators_own() {
        let csv = current();
        let spec = &csv["spec"]["install"]["spec"];
        assert_eq!(
            spec["clusterPermissions"][0]["rules"],
            to_value("rules", &operator_cluster_rules()).expect("rules")
        );
        assert_eq!(
            spec["deployments"][0]["spec"]["template"]["spec"]["serviceAccountName"],
            OPERATOR_NAME
        );
    }

    #[test]
    fn descriptors_take_their_descriptions_from_the_schema() {
        let owned = &current()["spec"]["customresourcedefinitions"]["owned"][0];
        let replicas = owned["specDescriptors"]
            .as_array()
            .expect("array")
            .iter()
            .find(|d| d["path"] == "controlPlane.replicas")
            .expect("replicas descriptor");
        assert!(
            replicas["description"]
                .as_str()
                .expect("str")
                .contains("control-plane replicas")
        );
        assert!(matches!(
            schema_description(&json!({"properties": {}}), "spec.nope"),
            Err(BundleError::Descriptor { .. })
        ));
    }

    #[test]
    fn related_images_cover_every_runnable_version_once() {
        let images = related_images(&super::super::operator_image("0.1.0"));
        let list = images.as_array().expect("array");
        for version in RUNNABLE_VERSIONS {
            assert!(
                list.iter()
                    .any(|i| i["image"] == super::super::operator_image(version))
            );
        }
        let unique: std::collections::BTreeSet<_> =
            list.iter().map(|i| i["image"].to_string()).collect();
        assert_eq!(unique.len(), list.len());
    }
}
