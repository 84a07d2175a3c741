//! Builds the desired state of an environment (pure): every Kubernetes object the control plane of
//! one EnvoyGateway needs, and which needs which, as an [`eg_graph::ResourceGraph`].
//!
//! Objects are built with the typed Kubernetes API structs (so field names are checked by the
//! compiler) and then handed to the graph as JSON. Nothing here talks to a cluster: inputs are the
//! validated [`Environment`], the certificates decided by the certificates stage, and the image.

use std::collections::BTreeMap;

use eg_crds::envoy_gateway::{AntiAffinity, PodDisruptionBudgetSpec};
use eg_graph::{
    GraphBuilder, GraphError, Node, ObjectRef, ObjectRefError, Readiness, ResourceGraph,
};
use gateway_api::apis::standard::gatewayclasses::{
    GatewayClass, GatewayClassParametersRef, GatewayClassSpec,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec as K8sPdbSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::names::{HEALTH_PORT, METRICS_PORT, XDS_PORT};
use super::validate::Environment;
use crate::control_plane::config::{ControllerConfig, EnvironmentRef, XdsConfig};
use crate::short_hash::short_sha256_hex;

/// Why the desired state could not be built. These are bugs or impossible inputs, not user
/// errors: validation has already passed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("desired object: {0}")]
    ObjectRef(#[from] ObjectRefError),
    #[error("desired graph: {0}")]
    Graph(#[from] GraphError),
}

impl BuildError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::Serialize { .. } => "serialize",
            BuildError::ObjectRef(_) => "object_ref",
            BuildError::Graph(_) => "graph",
        }
    }
}

/// PEM certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPem {
    pub cert: String,
    pub key: String,
}

/// The certificates of an environment, as decided by the certificates stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentCertificates {
    /// Every CA certificate that must be trusted now: the current CA and, during a rotation, the
    /// previous one.
    pub trust_bundle: String,
    pub ca: CertKeyPem,
    pub xds_server: CertKeyPem,
    /// The intermediate CA the controller signs the proxies' per-Gateway certificates with.
    pub proxy_issuer: CertKeyPem,
}

/// What the builder needs besides the environment.
#[derive(Debug, Clone)]
pub struct BuildInputs<'a> {
    pub environment: &'a Environment,
    pub certificates: &'a EnvironmentCertificates,
    /// Image repository of the control plane; the tag is the operand version.
    pub image_repository: &'a str,
}

const CONFIG_DIR: &str = "/etc/envoy-gateway";
const CERT_DIR: &str = "/etc/envoy-gateway/certs";

/// The desired graph of one environment.
pub fn build(inputs: &BuildInputs<'_>) -> Result<ResourceGraph, BuildError> {
    let BuildInputs {
        environment: env,
        certificates,
        image_repository,
    } = inputs;
    let n = &env.names;
    let ns = n.namespace();
    let labels = n.common_labels(&env.uid);
    let owned = |name: &str| meta(Some(ns), name, &labels, Some(owner_reference(env)));
    let shared = |namespace: Option<&str>, name: &str| meta(namespace, name, &labels, None);

    let mut g = GraphBuilder::new();

    let sa = g
        .add(node(
            "ServiceAccount",
            &ServiceAccount {
                metadata: owned(n.control_plane()),
                ..ServiceAccount::default()
            },
            Readiness::Exists,
        )?)?
        .clone();

    // RBAC: exactly what the control plane does. With watchNamespaces, namespaced rules are
    // granted per watched namespace through Roles, and the ClusterRole keeps only what is
    // cluster-scoped.
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: n.control_plane().to_owned(),
        namespace: Some(ns.to_owned()),
        ..Subject::default()
    };
    let cluster_rules = if env.watch_namespaces.is_empty() {
        [cluster_scoped_rules(), namespaced_rules()].concat()
    } else {
        cluster_scoped_rules()
    };
    let cluster_role = g
        .add(node(
            "ClusterRole",
            &ClusterRole {
                metadata: shared(None, &n.cluster_role()),
                rules: Some(cluster_rules),
                ..ClusterRole::default()
            },
            Readiness::Exists,
        )?)?
        .clone();
    let cluster_binding = g
        .add(node(
            "ClusterRoleBinding",
            &ClusterRoleBinding {
                metadata: shared(None, &n.cluster_role()),
                role_ref: role_ref("ClusterRole", &n.cluster_role()),
                subjects: Some(vec![subject.clone()]),
            },
            Readiness::Exists,
        )?)?
        .clone();
    g.needs(&cluster_binding, &cluster_role);
    g.needs(&cluster_binding, &sa);
    let mut bindings = vec![cluster_binding];

    // Leader election and Events live in the control plane's own namespace.
    let mut role_grants = vec![(ns.to_owned(), own_namespace_rules(n), true)];
    for watched in &env.watch_namespaces {
        role_grants.push((watched.clone(), namespaced_rules(), watched == ns));
    }
    let mut merged: BTreeMap<String, (Vec<PolicyRule>, bool)> = BTreeMap::new();
    for (namespace, rules, same_ns) in role_grants {
        let entry = merged.entry(namespace).or_default();
        entry.0.extend(rules);
        entry.1 |= same_ns;
    }
    for (namespace, (rules, same_ns)) in merged {
        // Roles in other namespaces cannot point at a namespaced owner; labels tie them to it.
        let role_meta = if same_ns {
            owned(n.control_plane())
        } else {
            shared(Some(&namespace), &n.cluster_role())
        };
        let role_name = role_meta.name.clone().unwrap_or_default();
        let role = g
            .add(node(
                "Role",
                &Role {
                    metadata: role_meta.clone(),
                    rules: Some(rules),
                },
                Readiness::Exists,
            )?)?
            .clone();
        let binding = g
            .add(node(
                "RoleBinding",
                &RoleBinding {
                    metadata: role_meta,
                    role_ref: role_ref("Role", &role_name),
                    subjects: Some(vec![subject.clone()]),
                },
                Readiness::Exists,
            )?)?
            .clone();
        g.needs(&binding, &role);
        g.needs(&binding, &sa);
        bindings.push(binding);
    }

    let secret = |name: String, pair: &CertKeyPem| Secret {
        metadata: owned(&name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "ca.crt".to_owned(),
                ByteString(certificates.trust_bundle.clone().into_bytes()),
            ),
            (
                "tls.crt".to_owned(),
                ByteString(pair.cert.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(pair.key.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    let ca_secret = g
        .add(node(
            "Secret",
            &secret(n.ca_secret(), &certificates.ca),
            Readiness::Exists,
        )?)?
        .clone();
    let server_secret = g
        .add(node(
            "Secret",
            &secret(n.xds_server_secret(), &certificates.xds_server),
            Readiness::Exists,
        )?)?
        .clone();
    let issuer_secret = g
        .add(node(
            "Secret",
            &secret(n.proxy_issuer_secret(), &certificates.proxy_issuer),
            Readiness::Exists,
        )?)?
        .clone();
    g.needs(&server_secret, &ca_secret);
    g.needs(&issuer_secret, &ca_secret);

    let config = ControllerConfig {
        environment: EnvironmentRef {
            namespace: ns.to_owned(),
            name: n.environment().to_owned(),
        },
        gateway_class_name: env.gateway_class_name.clone(),
        controller_name: n.controller_name(),
        watch_namespaces: env.watch_namespaces.clone(),
        leader_election: env.control_plane.replicas > 1,
        xds: XdsConfig {
            port: XDS_PORT,
            cert_dir: CERT_DIR.into(),
        },
        proxy_defaults: env.proxy.clone(),
        image_repository: (*image_repository).to_owned(),
        version: env.version.clone(),
        backend_api: env.backend_api,
    };
    let config_yaml = serde_yaml_ng::to_string(&config).map_err(|e| BuildError::Serialize {
        kind: "ConfigMap",
        name: n.config_map(),
        source: serde::ser::Error::custom(e),
    })?;
    let config_hash = short_sha256_hex(config_yaml.as_bytes(), 8);
    let config_map = g
        .add(node(
            "ConfigMap",
            &ConfigMap {
                metadata: owned(&n.config_map()),
                data: Some(BTreeMap::from([("config.yaml".to_owned(), config_yaml)])),
                ..ConfigMap::default()
            },
            Readiness::Exists,
        )?)?
        .clone();

    let deployment = g
        .add(node(
            "Deployment",
            &control_plane_deployment(env, &labels, image_repository, &config_hash),
            Readiness::DeploymentAvailable,
        )?)?
        .clone();
    g.needs(&deployment, &sa);
    g.needs(&deployment, &config_map);
    g.needs(&deployment, &server_secret);
    for binding in &bindings {
        g.needs(&deployment, binding);
    }

    g.add(node(
        "Service",
        &Service {
            metadata: owned(n.control_plane()),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(n.control_plane_selector()),
                ports: Some(vec![
                    service_port("xds", i32::from(XDS_PORT), Some("grpc")),
                    service_port("metrics", METRICS_PORT, Some("http")),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        Readiness::Exists,
    )?)?;

    if let Some(budget) = control_plane_pdb(env) {
        let pdb = g
            .add(node(
                "PodDisruptionBudget",
                &PodDisruptionBudget {
                    metadata: owned(n.control_plane()),
                    spec: Some(K8sPdbSpec {
                        selector: Some(LabelSelector {
                            match_labels: Some(n.control_plane_selector()),
                            ..LabelSelector::default()
                        }),
                        min_available: budget.min_available,
                        max_unavailable: budget.max_unavailable,
                        ..K8sPdbSpec::default()
                    }),
                    ..PodDisruptionBudget::default()
                },
                Readiness::Exists,
            )?)?
            .clone();
        g.needs(&pdb, &deployment);
    }

    // Defaults of every proxy fleet of the class, as upstream's EnvoyProxy so a Gateway's own
    // EnvoyProxy (infrastructure.parametersRef) can override them field by field.
    let envoy_proxy = g
        .add(Node::new(
            default_envoy_proxy(env, &owned(&n.envoy_proxy()))?,
            Readiness::Exists,
        )?)?
        .clone();

    // The class is announced once a controller is there to accept it.
    let class = g
        .add(node(
            "GatewayClass",
            &GatewayClass {
                metadata: shared(None, &env.gateway_class_name),
                spec: GatewayClassSpec {
                    controller_name: n.controller_name(),
                    // The API caps descriptions at 64 bytes; the environment is in the labels.
                    description: Some("Envoy Gateway environment managed by eg-operator".into()),
                    parameters_ref: Some(GatewayClassParametersRef {
                        group: "gateway.envoyproxy.io".into(),
                        kind: "EnvoyProxy".into(),
                        name: n.envoy_proxy(),
                        namespace: Some(ns.to_owned()),
                    }),
                },
                status: None,
            },
            Readiness::Exists,
        )?)?
        .clone();
    g.needs(&class, &deployment);
    g.needs(&class, &envoy_proxy);

    Ok(g.build()?)
}

fn node<T: Serialize>(
    kind: &'static str,
    object: &T,
    readiness: Readiness,
) -> Result<Node, BuildError> {
    let value = serde_json::to_value(object).map_err(|source| BuildError::Serialize {
        kind,
        name: String::new(),
        source,
    })?;
    Ok(Node::new(value, readiness)?)
}

fn meta(
    namespace: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels.clone()),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(env: &Environment) -> OwnerReference {
    OwnerReference {
        api_version: "operator.gateway.envoyproxy.io/v1alpha1".into(),
        kind: "EnvoyGateway".into(),
        name: env.names.environment().to_owned(),
        uid: env.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

fn rule<R: AsRef<str>>(groups: &[&str], resources: &[R], verbs: &[&str]) -> PolicyRule {
    let strings = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(resources.iter().map(|r| r.as_ref().to_owned()).collect()),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE_STATUS: &[&str] = &["update", "patch"];
/// Server-side apply is a patch; pruning deletes.
const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

fn cluster_scoped_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["gateway.networking.k8s.io"], &["gatewayclasses"], READ),
        rule(
            &["gateway.networking.k8s.io"],
            &["gatewayclasses/status"],
            WRITE_STATUS,
        ),
        rule(&[""], &["namespaces"], READ),
    ]
}

fn namespaced_rules() -> Vec<PolicyRule> {
    const GATEWAY_API: &[&str] = &[
        "gateways",
        "httproutes",
        "grpcroutes",
        "tlsroutes",
        "tcproutes",
        "udproutes",
        "referencegrants",
        "backendtlspolicies",
    ];
    const ENVOY_GATEWAY: &[&str] = &[
        "envoyproxies",
        "securitypolicies",
        "backendtrafficpolicies",
        "clienttrafficpolicies",
        "backends",
    ];
    let status = |rs: &[&str]| rs.iter().map(|r| format!("{r}/status")).collect::<Vec<_>>();
    vec![
        rule(&["gateway.networking.k8s.io"], GATEWAY_API, READ),
        rule(
            &["gateway.networking.k8s.io"],
            &status(GATEWAY_API),
            WRITE_STATUS,
        ),
        rule(&["gateway.envoyproxy.io"], ENVOY_GATEWAY, READ),
        rule(
            &["gateway.envoyproxy.io"],
            &status(ENVOY_GATEWAY),
            WRITE_STATUS,
        ),
        rule(&[""], &["secrets"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        // Proxy fleets: the control plane applies and prunes each Gateway's infrastructure.
        rule(
            &[""],
            &["services", "serviceaccounts", "configmaps", "secrets"],
            MANAGE,
        ),
        // Fleet objects block their Gateway's deletion until the garbage collector removed them.
        rule(
            &["gateway.networking.k8s.io"],
            &["gateways/finalizers"],
            &["update"],
        ),
        rule(&["apps"], &["deployments", "daemonsets"], MANAGE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], MANAGE),
        rule(&["policy"], &["poddisruptionbudgets"], MANAGE),
    ]
}

/// Every rule any control plane can be granted, wherever it is granted. Kubernetes lets the
/// operator grant only what it holds itself, so the operator's own permissions include these.
/// Rules limited to one object's name are widened to the resource.
pub fn control_plane_grantable_rules() -> Vec<PolicyRule> {
    let any = super::names::Names::new("any", "any");
    let own = own_namespace_rules(&any).into_iter().map(|r| PolicyRule {
        resource_names: None,
        ..r
    });
    cluster_scoped_rules()
        .into_iter()
        .chain(namespaced_rules())
        .chain(own)
        .collect()
}

fn own_namespace_rules(n: &super::names::Names) -> Vec<PolicyRule> {
    vec![
        // Proxy fleets: the class-wide EnvoyProxy, and the proxy issuer that signs each
        // Gateway's client certificate (that Secret only: the CA key lives next to it).
        rule(&["gateway.envoyproxy.io"], &["envoyproxies"], READ),
        // The EnvoyGateway's status: the operand version each fleet may run during upgrades.
        rule(
            &["operator.gateway.envoyproxy.io"],
            &["envoygateways"],
            READ,
        ),
        PolicyRule {
            resource_names: Some(vec![n.proxy_issuer_secret()]),
            ..rule(&[""], &["secrets"], &["get"])
        },
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update"],
        ),
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

fn control_plane_pdb(env: &Environment) -> Option<PodDisruptionBudgetSpec> {
    match &env.control_plane.pod_disruption_budget {
        Some(pdb) => Some(pdb.clone()),
        // A single replica cannot tolerate a disruption budget without blocking node drains.
        None if env.control_plane.replicas > 1 => Some(PodDisruptionBudgetSpec {
            min_available: None,
            max_unavailable: Some(IntOrString::Int(1)),
        }),
        None => None,
    }
}

fn service_port(name: &str, port: i32, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(str::to_owned),
        ..ServicePort::default()
    }
}

/// Anti-affinity over hostname and zone: Preferred → weighted preferred terms (hostname weighs
/// more), Required → required terms on both.
pub fn anti_affinity(mode: AntiAffinity, selector: &BTreeMap<String, String>) -> Affinity {
    let term = |topology_key: &str| PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        topology_key: topology_key.into(),
        ..PodAffinityTerm::default()
    };
    const HOSTNAME: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";
    let pod_anti_affinity = match mode {
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term(HOSTNAME),
                },
                WeightedPodAffinityTerm {
                    weight: 50,
                    pod_affinity_term: term(ZONE),
                },
            ]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![
                term(HOSTNAME),
                term(ZONE),
            ]),
            ..PodAntiAffinity::default()
        },
    };
    Affinity {
        pod_anti_affinity: Some(pod_anti_affinity),
        ..Affinity::default()
    }
}

/// A container security context meeting the "restricted" Pod Security Standard, for every
/// container the operator and the control plane run.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// An environment variable from the pod's own fields (`metadata.name`, `metadata.namespace`).
pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An HTTP GET probe of `path` on the named container port, every 10 seconds.
pub fn http_probe(path: &str, port: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// A named TCP container port.
pub fn tcp_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The pod-level half of the "restricted" Pod Security Standard: non-root, default seccomp.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The operand's image at `version`: the control plane's, and the proxies' shutdown manager's.
pub fn operand_image(image_repository: &str, version: &str) -> String {
    format!("{image_repository}:v{version}")
}

fn control_plane_deployment(
    env: &Environment,
    labels: &BTreeMap<String, String>,
    image_repository: &str,
    config_hash: &str,
) -> Deployment {
    let n = &env.names;
    let selector = n.control_plane_selector();
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector.clone());
    pod_labels.insert("app.kubernetes.io/version".into(), env.version.clone());
    let probe = |path: &str| http_probe(path, "health");
    let port = tcp_port;
    let container = Container {
        name: "controller".into(),
        image: Some(operand_image(image_repository, &env.version)),
        args: Some(vec![
            "controller".into(),
            format!("--config={CONFIG_DIR}/config.yaml"),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            port("xds", i32::from(XDS_PORT)),
            port("metrics", METRICS_PORT),
            port("health", HEALTH_PORT),
        ]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: env.control_plane.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "certs".into(),
                mount_path: CERT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(
            Some(n.namespace()),
            n.control_plane(),
            labels,
            Some(owner_reference(env)),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(env.control_plane.replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            // Surge first: an xDS server never goes away before its replacement is ready.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // A changed configuration rolls the pods.
                    annotations: Some(BTreeMap::from([(
                        "operator.gateway.envoyproxy.io/config-hash".to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(n.control_plane().to_owned()),
                    affinity: Some(anti_affinity(env.control_plane.anti_affinity, &selector)),
                    security_context: Some(restricted_pod_security()),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: n.config_map(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "certs".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(n.xds_server_secret()),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Label that upstream Envoy Gateway puts on each Gateway's proxy pods; spreading by it keeps
/// the constraints per Gateway although one EnvoyProxy serves the whole class.
pub const OWNING_GATEWAY_LABEL: &str = "gateway.envoyproxy.io/owning-gateway-name";

/// The class-wide EnvoyProxy built from `spec.proxy` (upstream field names).
fn default_envoy_proxy(
    env: &Environment,
    meta: &ObjectMeta,
) -> Result<serde_json::Value, BuildError> {
    let spec = proxy_defaults_spec(&env.proxy).map_err(|source| BuildError::Serialize {
        kind: "EnvoyProxy",
        name: env.names.envoy_proxy(),
        source,
    })?;
    Ok(serde_json::json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": meta,
        "spec": spec,
    }))
}

/// `EnvoyGateway.spec.proxy` as the `spec` of an upstream EnvoyProxy: the least specific layer
/// of every fleet's settings (the fleet builder falls back to it when a class has no EnvoyProxy).
pub fn proxy_defaults_spec(
    proxy: &eg_crds::envoy_gateway::ProxySpec,
) -> Result<serde_json::Value, serde_json::Error> {
    let eg_crds::envoy_gateway::ProxySpec {
        replicas,
        autoscaling,
        anti_affinity: anti,
        topology_spread,
        pod_disruption_budget,
        service,
        resources,
    } = proxy;
    let proxy_selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "envoy".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "proxy".to_owned()),
    ]);
    let mut affinity = serde_json::to_value(anti_affinity(*anti, &proxy_selector))?;
    // Every term is scoped to the pods of one Gateway.
    for terms in [
        "/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        "/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
    ] {
        if let Some(list) = affinity.pointer_mut(terms).and_then(|v| v.as_array_mut()) {
            for term in list {
                // Preferred terms wrap the affinity term; required ones are the term.
                let term = if term.get("podAffinityTerm").is_some() {
                    &mut term["podAffinityTerm"]
                } else {
                    term
                };
                term["matchLabelKeys"] = serde_json::json!([OWNING_GATEWAY_LABEL]);
            }
        }
    }
    let mut pod = serde_json::json!({ "affinity": affinity });
    if let Some(spread) = topology_spread {
        pod["topologySpreadConstraints"] = serde_json::json!([{
            "maxSkew": spread.max_skew,
            "topologyKey": spread.topology_key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": proxy_selector},
            "matchLabelKeys": [OWNING_GATEWAY_LABEL],
        }]);
    }
    let mut deployment = serde_json::json!({ "pod": pod });
    // With an HPA the Deployment leaves its replica count to the autoscaler.
    if autoscaling.is_none() {
        deployment["replicas"] = serde_json::json!(replicas);
    }
    if let Some(resources) = resources {
        deployment["container"] = serde_json::json!({ "resources": resources });
    }
    let mut kubernetes = serde_json::json!({
        "envoyDeployment": deployment,
        "envoyService": {"type": service.type_},
    });
    if !service.annotations.is_empty() {
        kubernetes["envoyService"]["annotations"] = serde_json::json!(service.annotations);
    }
    if let Some(a) = autoscaling {
        kubernetes["envoyHpa"] = serde_json::json!({
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage},
                },
            }],
        });
    }
    if let Some(pdb) = pod_disruption_budget {
        kubernetes["envoyPDB"] = serde_json::to_value(pdb)?;
    }
    Ok(serde_json::json!({"provider": {"type": "Kubernetes", "kubernetes": kubernetes}}))
}

/// The ObjectRef of the environment's GatewayClass, for conflict checks.
pub fn gateway_class_ref(env: &Environment) -> ObjectRef {
    ObjectRef::new(
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
        None,
        &env.gateway_class_name,
    )
}
