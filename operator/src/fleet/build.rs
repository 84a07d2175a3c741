//! Builds the desired proxy fleet of one Gateway (pure) as an [`eg_graph::ResourceGraph`]:
//! ServiceAccount, the xDS client certificate Secret, the ConfigMap with the Envoy bootstrap and
//! its SDS files, a Deployment (or a DaemonSet), a Service with one port per listener port, and
//! optionally a HorizontalPodAutoscaler and a PodDisruptionBudget.
//!
//! Every object lives in the Gateway's namespace and has the Gateway as its controlling owner,
//! so the garbage collector removes the fleet with the Gateway; labels tie it to the Gateway's
//! UID for pruning. Inputs are the already resolved [`EnvoyProxySpec`] (see
//! [`super::settings`]), so nothing here decides precedence or talks to a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use eg_crds::envoy_gateway::AntiAffinity;
use eg_crds::upstream::{
    EnvoyProxyKubernetesProvider, EnvoyProxySpec, KubernetesContainerSpec, KubernetesDaemonSetSpec,
    KubernetesDeploymentSpec, KubernetesHorizontalPodAutoscalerSpec,
    KubernetesPodDisruptionBudgetSpec, KubernetesPodSpec, KubernetesServiceAccountSpec,
    KubernetesServiceSpec, ShutdownConfig,
};
use eg_graph::{GraphBuilder, GraphError, Node, ObjectRefError, Readiness, ResourceGraph};
use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, DeploymentStrategy,
    RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, Service, ServiceAccount,
    ServicePort, ServiceSpec, SleepAction, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::settings::parse_duration;
use super::shutdown::{SHUTDOWN_PATH, SHUTDOWN_PORT};
use super::{
    FLEET_COMPONENT, FLEET_GATEWAY_UID_LABEL, GATEWAY_NAME_LABEL, OPERAND_VERSION_ANNOTATION,
    OWNING_GATEWAY_NAMESPACE_LABEL,
};
use crate::environment::build::restricted_container_security;
use crate::environment::build::{OWNING_GATEWAY_LABEL, anti_affinity, operand_image};
use crate::environment::names::{ENVIRONMENT_LABEL, MANAGED_BY, Names};
use crate::short_hash::short_sha256_hex;
use crate::xds::bootstrap::{
    AdsFlavour, BootstrapSpec, ProxyBootstrapSpec, SdsTls, XdsAddress, proxy_bootstrap, sds_files,
};

/// Why a fleet could not be built: bugs or impossible inputs (settings were validated).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("serializing {kind}: {source}")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the Gateway has no {0}")]
    Gateway(&'static str),
    #[error("desired object: {0}")]
    ObjectRef(#[from] ObjectRefError),
    #[error("desired graph: {0}")]
    Graph(#[from] GraphError),
}

impl BuildError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::Serialize { .. } => "serialize",
            BuildError::Gateway(_) => "gateway",
            BuildError::ObjectRef(_) => "object_ref",
            BuildError::Graph(_) => "graph",
        }
    }
}

/// Envoy image of a fleet unless its EnvoyProxy names another: the release the tests pin.
pub const DEFAULT_ENVOY_IMAGE: &str = "docker.io/envoyproxy/envoy:distroless-v1.40.0";
/// Admin interface, on loopback only: it can stop the proxy and dump its secrets.
pub const ADMIN_ADDRESS: &str = "127.0.0.1:19000";
/// Port of the readiness endpoint (`/ready`).
pub const READY_PORT: u16 = 19003;
/// Port of the Prometheus stats (`/stats/prometheus`).
pub const STATS_PORT: u16 = 19001;
/// Where the bootstrap ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/envoy/config";
/// Where the xDS client certificate Secret is mounted.
pub const CERT_DIR: &str = "/etc/envoy/certs";
/// Key of the bootstrap in the ConfigMap.
pub const BOOTSTRAP_KEY: &str = "bootstrap.json";
/// Pod annotation carrying a hash of the bootstrap: a changed bootstrap rolls the pods. The
/// certificate is not hashed: proxies reload it through SDS without a restart.
pub const BOOTSTRAP_HASH_ANNOTATION: &str = "operator.gateway.envoyproxy.io/bootstrap-hash";
/// Upstream's defaults for graceful shutdown.
const DEFAULT_DRAIN_SECONDS: u64 = 60;
const DEFAULT_MIN_DRAIN_SECONDS: u64 = 10;

/// What every fleet of an environment shares.
#[derive(Debug, Clone)]
pub struct FleetEnvironment {
    pub names: Names,
    /// Spread used when a fleet's EnvoyProxy gives no affinity.
    pub anti_affinity: AntiAffinity,
    /// Where proxies reach the xDS server (the control-plane Service in a cluster).
    pub xds: XdsAddress,
    /// Name the xDS server certificate carries.
    pub xds_server_name: String,
    /// Image repository of the proxies' shutdown-manager sidecar (this project's own operand,
    /// tagged with each fleet's version); without one, the Envoy container only waits the
    /// minimum drain duration before it is stopped.
    pub image_repository: Option<String>,
    /// The control plane's own operand version: what a fleet runs when nothing pins it.
    pub version: String,
}

/// The Gateway's xDS client certificate (see [`super::certificate`]): the trust bundle, the leaf
/// followed by the proxy issuer, and the leaf's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

/// Everything one fleet is built from.
#[derive(Debug, Clone)]
pub struct FleetInputs<'a> {
    pub environment: &'a FleetEnvironment,
    pub gateway: &'a Gateway,
    pub settings: &'a EnvoyProxySpec,
    pub certificate: &'a ClientCertificate,
    /// Operand version this fleet runs (its shutdown manager's image tag), as the upgrade
    /// rollout allows it; recorded on the workload as [`OPERAND_VERSION_ANNOTATION`].
    pub version: &'a str,
}

/// Names of one Gateway's fleet objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNames {
    pub namespace: String,
    /// `envoy-<gateway>`, shortened with a hash when the Gateway's name is long.
    pub base: String,
}

impl FleetNames {
    pub fn new(namespace: &str, gateway: &str) -> Self {
        let full = format!("envoy-{gateway}");
        // Room for the suffixes of derived names and of the pods a Deployment makes.
        let base = if full.len() <= 50 {
            full
        } else {
            // 4 bytes: 8 hex characters.
            let hash = short_sha256_hex(full.as_bytes(), 4);
            format!("{}-{hash}", full[..41].trim_end_matches(['-', '.']))
        };
        Self {
            namespace: namespace.to_owned(),
            base,
        }
    }

    pub fn config_map(&self) -> String {
        format!("{}-bootstrap", self.base)
    }

    pub fn certificate_secret(&self) -> String {
        format!("{}-xds", self.base)
    }
}

/// The selector of a Gateway's proxy pods (immutable on a Deployment: identity only).
pub fn selector(namespace: &str, gateway: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "envoy".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            FLEET_COMPONENT.to_owned(),
        ),
        (OWNING_GATEWAY_LABEL.to_owned(), gateway.to_owned()),
        (
            OWNING_GATEWAY_NAMESPACE_LABEL.to_owned(),
            namespace.to_owned(),
        ),
    ])
}

/// The listener ports of a Gateway and their transport protocol, sorted and deduplicated
/// (listeners sharing a port share one Service port).
pub fn listener_ports(gateway: &Gateway) -> Vec<(i32, &'static str)> {
    let ports: BTreeSet<(i32, &'static str)> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| {
            let protocol = if l.protocol == "UDP" { "UDP" } else { "TCP" };
            (l.port, protocol)
        })
        .collect();
    ports.into_iter().collect()
}

fn port_name(port: i32, protocol: &str) -> String {
    format!("{}-{port}", protocol.to_ascii_lowercase())
}

fn to_value<T: Serialize>(kind: &'static str, object: &T) -> Result<serde_json::Value, BuildError> {
    serde_json::to_value(object).map_err(|source| BuildError::Serialize { kind, source })
}

fn node<T: Serialize>(kind: &'static str, object: &T) -> Result<Node, BuildError> {
    // No kubelet decides a fleet's order: each object only has to exist for the next.
    Ok(Node::new(to_value(kind, object)?, Readiness::Exists)?)
}

/// The bootstrap and SDS files of a Gateway's proxies, by ConfigMap key.
pub fn bootstrap_files(
    environment: &FleetEnvironment,
    namespace: &str,
    gateway: &str,
) -> Result<BTreeMap<String, String>, BuildError> {
    let sds = SdsTls {
        sds_dir: CONFIG_DIR.into(),
        cert_dir: CERT_DIR.into(),
        server_name: environment.xds_server_name.clone(),
    };
    let admin: SocketAddr = ADMIN_ADDRESS
        .parse()
        .map_err(|_| BuildError::Gateway("valid admin address"))?;
    let spec = ProxyBootstrapSpec {
        base: BootstrapSpec {
            // Replaced by the pod name (`--service-node`): each proxy is its own xDS node.
            node_id: format!("{namespace}/{gateway}"),
            node_cluster: format!("{namespace}/{gateway}"),
            admin,
            xds_server: environment.xds.clone(),
            flavour: AdsFlavour::Delta,
            tls: None,
        },
        sds: Some(sds.clone()),
        readiness: SocketAddr::from(([0, 0, 0, 0], READY_PORT)),
        stats: SocketAddr::from(([0, 0, 0, 0], STATS_PORT)),
    };
    let mut files = BTreeMap::new();
    let text = |kind, v: &serde_json::Value| {
        serde_json::to_string_pretty(v).map_err(|source| BuildError::Serialize { kind, source })
    };
    files.insert(
        BOOTSTRAP_KEY.to_owned(),
        text("bootstrap", &proxy_bootstrap(&spec))?,
    );
    for (name, content) in sds_files(&sds) {
        files.insert(name.to_owned(), text("SDS file", &content)?);
    }
    Ok(files)
}

/// The desired fleet of one Gateway.
pub fn build(inputs: &FleetInputs<'_>) -> Result<ResourceGraph, BuildError> {
    let FleetInputs {
        environment,
        gateway,
        settings,
        certificate,
        version,
    } = inputs;
    let namespace = gateway
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::Gateway("namespace"))?;
    let name = gateway
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::Gateway("name"))?;
    let uid = gateway
        .metadata
        .uid
        .as_deref()
        .ok_or(BuildError::Gateway("uid"))?;
    let fleet = FleetNames::new(namespace, name);
    let EnvoyProxySpec {
        provider,
        shutdown,
        merge_type: _,
    } = settings;
    let EnvoyProxyKubernetesProvider {
        envoy_deployment,
        envoy_daemon_set,
        envoy_service,
        envoy_hpa,
        envoy_pdb,
        envoy_service_account,
    } = provider
        .as_ref()
        .and_then(|p| p.kubernetes.clone())
        .unwrap_or_default();

    // Gateway infrastructure labels and annotations go on every fleet object.
    let infrastructure = gateway.spec.infrastructure.as_ref();
    let infra_labels = infrastructure
        .and_then(|i| i.labels.clone())
        .unwrap_or_default();
    let infra_annotations = infrastructure
        .and_then(|i| i.annotations.clone())
        .unwrap_or_default();
    let selector = selector(namespace, name);
    let mut labels = infra_labels.clone();
    labels.extend(selector.clone());
    labels.extend([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        (
            ENVIRONMENT_LABEL.to_owned(),
            environment.names.environment_label_value(),
        ),
        (FLEET_GATEWAY_UID_LABEL.to_owned(), uid.to_owned()),
        // Gateway API's own label for the objects a Gateway's infrastructure consists of.
        (GATEWAY_NAME_LABEL.to_owned(), name.to_owned()),
    ]);
    let owner = OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let meta = |object_name: &str,
                extra_labels: Option<&BTreeMap<String, String>>,
                extra_annotations: Option<&BTreeMap<String, String>>| {
        let mut l = labels.clone();
        l.extend(extra_labels.cloned().unwrap_or_default());
        let mut a = infra_annotations.clone();
        a.extend(extra_annotations.cloned().unwrap_or_default());
        ObjectMeta {
            name: Some(object_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(l),
            annotations: (!a.is_empty()).then_some(a),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        }
    };

    let mut g = GraphBuilder::new();

    let KubernetesServiceAccountSpec { name: sa_name } = envoy_service_account.unwrap_or_default();
    let sa_name = sa_name.unwrap_or_else(|| fleet.base.clone());
    let sa = g
        .add(node(
            "ServiceAccount",
            &ServiceAccount {
                metadata: meta(&sa_name, None, None),
                // Envoy never calls the Kubernetes API.
                automount_service_account_token: Some(false),
                ..ServiceAccount::default()
            },
        )?)?
        .clone();

    let secret = g
        .add(node(
            "Secret",
            &Secret {
                metadata: meta(&fleet.certificate_secret(), None, None),
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    ("ca.crt".to_owned(), bytes(&certificate.ca_crt)),
                    ("tls.crt".to_owned(), bytes(&certificate.tls_crt)),
                    ("tls.key".to_owned(), bytes(&certificate.tls_key)),
                ])),
                ..Secret::default()
            },
        )?)?
        .clone();

    let files = bootstrap_files(environment, namespace, name)?;
    let bootstrap_hash = short_sha256_hex(
        files
            .get(BOOTSTRAP_KEY)
            .map(String::as_bytes)
            .unwrap_or_default(),
        6,
    );
    let config_map = g
        .add(node(
            "ConfigMap",
            &ConfigMap {
                metadata: meta(&fleet.config_map(), None, None),
                data: Some(files),
                ..ConfigMap::default()
            },
        )?)?
        .clone();

    let ports = listener_ports(gateway);
    let ShutdownConfig {
        drain_timeout,
        min_drain_duration,
    } = shutdown.clone().unwrap_or_default();
    let drain = drain_timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_DRAIN_SECONDS);
    let min_drain = min_drain_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_MIN_DRAIN_SECONDS);
    let pod_inputs = PodInputs {
        fleet: &fleet,
        selector: &selector,
        labels: &labels,
        infra_annotations: &infra_annotations,
        sa_name: &sa_name,
        default_spread: environment.anti_affinity,
        bootstrap_hash: &bootstrap_hash,
        ports: &ports,
        drain_seconds: drain,
        min_drain_seconds: min_drain,
        shutdown_manager_image: environment
            .image_repository
            .as_deref()
            .map(|repository| operand_image(repository, version)),
    };
    let versioned =
        BTreeMap::from([(OPERAND_VERSION_ANNOTATION.to_owned(), (*version).to_owned())]);

    let hpa_wanted = envoy_hpa.is_some() && envoy_daemon_set.is_none();
    let workload = if let Some(daemon_set) = envoy_daemon_set {
        let KubernetesDaemonSetSpec {
            strategy,
            pod,
            container,
            name: ds_name,
        } = daemon_set;
        let ds_name = ds_name.unwrap_or_else(|| fleet.base.clone());
        g.add(node(
            "DaemonSet",
            &DaemonSet {
                metadata: meta(&ds_name, None, Some(&versioned)),
                spec: Some(DaemonSetSpec {
                    selector: match_labels(&selector),
                    template: pod_template(&pod_inputs, pod.as_ref(), container.as_ref()),
                    update_strategy: strategy,
                    ..DaemonSetSpec::default()
                }),
                ..DaemonSet::default()
            },
        )?)?
        .clone()
    } else {
        let KubernetesDeploymentSpec {
            replicas,
            strategy,
            pod,
            container,
            name: deploy_name,
        } = envoy_deployment.unwrap_or_default();
        let deploy_name = deploy_name.unwrap_or_else(|| fleet.base.clone());
        let deployment = Deployment {
            metadata: meta(&deploy_name, None, Some(&versioned)),
            spec: Some(DeploymentSpec {
                // With an HPA the field is left out, so applies never fight the autoscaler.
                replicas: if hpa_wanted {
                    None
                } else {
                    Some(replicas.unwrap_or(1))
                },
                selector: match_labels(&selector),
                // Surge first: a proxy goes away only once its replacement is ready.
                strategy: Some(strategy.unwrap_or(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                })),
                template: pod_template(&pod_inputs, pod.as_ref(), container.as_ref()),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let id = g.add(node("Deployment", &deployment)?)?.clone();
        if hpa_wanted && let Some(hpa) = &envoy_hpa {
            let KubernetesHorizontalPodAutoscalerSpec {
                min_replicas,
                max_replicas,
                metrics,
                behavior,
                name: hpa_name,
            } = hpa.clone();
            let hpa_name = hpa_name.unwrap_or_else(|| fleet.base.clone());
            let hpa_id = g
                .add(node(
                    "HorizontalPodAutoscaler",
                    &HorizontalPodAutoscaler {
                        metadata: meta(&hpa_name, None, None),
                        spec: HorizontalPodAutoscalerSpec {
                            scale_target_ref: CrossVersionObjectReference {
                                api_version: Some("apps/v1".into()),
                                kind: "Deployment".into(),
                                name: deploy_name.clone(),
                            },
                            min_replicas,
                            max_replicas: max_replicas.unwrap_or(1),
                            metrics: Some(
                                metrics
                                    .filter(|m| !m.is_empty())
                                    .unwrap_or_else(default_metrics),
                            ),
                            behavior,
                        },
                        ..HorizontalPodAutoscaler::default()
                    },
                )?)?
                .clone();
            g.needs(&hpa_id, &id);
        }
        id
    };
    g.needs(&workload, &sa);
    g.needs(&workload, &secret);
    g.needs(&workload, &config_map);

    let KubernetesServiceSpec {
        annotations: svc_annotations,
        labels: svc_labels,
        type_,
        load_balancer_class,
        allocate_load_balancer_node_ports,
        load_balancer_source_ranges,
        load_balancer_ip,
        external_traffic_policy,
        name: svc_name,
    } = envoy_service.unwrap_or_default();
    let svc_name = svc_name.unwrap_or_else(|| fleet.base.clone());
    // Upstream's default: a load balancer in front of every Gateway.
    let type_ = type_.unwrap_or_else(|| "LoadBalancer".into());
    let load_balancer = type_ == "LoadBalancer";
    // The apiserver refuses these fields on types they do not apply to.
    let external = type_ != "ClusterIP";
    g.add(node(
        "Service",
        &Service {
            metadata: meta(&svc_name, svc_labels.as_ref(), svc_annotations.as_ref()),
            spec: Some(ServiceSpec {
                type_: Some(type_.clone()),
                selector: Some(selector.clone()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port, protocol)| ServicePort {
                            name: Some(port_name(*port, protocol)),
                            port: *port,
                            protocol: Some((*protocol).to_owned()),
                            // The controller binds listeners at the Gateway's port in a pod.
                            target_port: Some(IntOrString::Int(*port)),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                external_traffic_policy: external
                    .then(|| external_traffic_policy.unwrap_or_else(|| "Local".into())),
                load_balancer_class: load_balancer_class.filter(|_| load_balancer),
                load_balancer_ip: load_balancer_ip.filter(|_| load_balancer),
                load_balancer_source_ranges: load_balancer_source_ranges.filter(|_| load_balancer),
                allocate_load_balancer_node_ports: allocate_load_balancer_node_ports
                    .filter(|_| load_balancer),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
    )?)?;

    if let Some(pdb) = envoy_pdb {
        let KubernetesPodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            name: pdb_name,
        } = pdb;
        let pdb_name = pdb_name.unwrap_or_else(|| fleet.base.clone());
        let id = g
            .add(node(
                "PodDisruptionBudget",
                &PodDisruptionBudget {
                    metadata: meta(&pdb_name, None, None),
                    spec: Some(PodDisruptionBudgetSpec {
                        selector: Some(match_labels(&selector)),
                        min_available,
                        max_unavailable,
                        ..PodDisruptionBudgetSpec::default()
                    }),
                    ..PodDisruptionBudget::default()
                },
            )?)?
            .clone();
        g.needs(&id, &workload);
    }

    Ok(g.build()?)
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

fn match_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

/// Upstream's default target: 80% CPU.
fn default_metrics() -> Vec<MetricSpec> {
    vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }]
}

/// What the pod template of a fleet needs besides the EnvoyProxy's pod and container parts.
struct PodInputs<'a> {
    fleet: &'a FleetNames,
    selector: &'a BTreeMap<String, String>,
    labels: &'a BTreeMap<String, String>,
    /// The Gateway's `infrastructure.annotations`, which Gateway API wants on the pods too.
    infra_annotations: &'a BTreeMap<String, String>,
    sa_name: &'a str,
    default_spread: AntiAffinity,
    bootstrap_hash: &'a str,
    ports: &'a [(i32, &'static str)],
    drain_seconds: u64,
    min_drain_seconds: u64,
    shutdown_manager_image: Option<String>,
}

fn pod_template(
    inputs: &PodInputs<'_>,
    pod: Option<&KubernetesPodSpec>,
    container: Option<&KubernetesContainerSpec>,
) -> PodTemplateSpec {
    let PodInputs {
        fleet,
        selector,
        labels,
        infra_annotations,
        sa_name,
        default_spread,
        bootstrap_hash,
        ports,
        drain_seconds,
        min_drain_seconds,
        shutdown_manager_image,
    } = inputs;
    let KubernetesPodSpec {
        annotations,
        labels: pod_labels,
        security_context,
        affinity,
        tolerations,
        image_pull_secrets,
        node_selector,
        topology_spread_constraints,
        priority_class_name,
    } = pod.cloned().unwrap_or_default();
    let KubernetesContainerSpec {
        env,
        resources,
        security_context: container_security,
        image,
        image_repository,
    } = container.cloned().unwrap_or_default();

    let mut all_labels = pod_labels.unwrap_or_default();
    all_labels.extend((*labels).clone());
    let mut all_annotations = (*infra_annotations).clone();
    all_annotations.extend(annotations.unwrap_or_default());
    all_annotations.insert(
        BOOTSTRAP_HASH_ANNOTATION.to_owned(),
        (*bootstrap_hash).to_owned(),
    );

    let image = image.unwrap_or_else(|| match image_repository {
        Some(repository) => {
            let tag = DEFAULT_ENVOY_IMAGE
                .rsplit_once(':')
                .map_or("latest", |(_, t)| t);
            format!("{repository}:{tag}")
        }
        None => DEFAULT_ENVOY_IMAGE.to_owned(),
    });
    let mut container_env = vec![EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    container_env.extend(env.unwrap_or_default());
    let mut container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|(port, protocol)| ContainerPort {
            name: Some(port_name(*port, protocol)),
            container_port: *port,
            protocol: Some((*protocol).to_owned()),
            ..ContainerPort::default()
        })
        .collect();
    for (port_name, port) in [("ready", READY_PORT), ("metrics", STATS_PORT)] {
        container_ports.push(ContainerPort {
            name: Some(port_name.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
    }
    let envoy = Container {
        name: "envoy".into(),
        image: Some(image),
        command: Some(vec!["envoy".into()]),
        args: Some(vec![
            "--config-path".into(),
            format!("{CONFIG_DIR}/{BOOTSTRAP_KEY}"),
            // Each pod is its own xDS node; the cluster (`namespace/gateway`) is the fleet's.
            "--service-node".into(),
            "$(POD_NAME)".into(),
            "--drain-time-s".into(),
            drain_seconds.to_string(),
            "--drain-strategy".into(),
            "immediate".into(),
            "--log-level".into(),
            "warn".into(),
        ]),
        env: Some(container_env),
        ports: Some(container_ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(crate::xds::bootstrap::READY_PATH.into()),
                port: IntOrString::Int(i32::from(READY_PORT)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(1),
            ..Probe::default()
        }),
        // Envoy exits at once on SIGTERM: before it is sent, the shutdown manager drains the
        // listeners and waits for connections to close (at least the minimum drain duration,
        // at most the drain timeout). Without the sidecar, only the minimum is waited.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(match shutdown_manager_image {
                Some(_) => LifecycleHandler {
                    http_get: Some(HTTPGetAction {
                        path: Some(SHUTDOWN_PATH.into()),
                        port: IntOrString::Int(i32::from(SHUTDOWN_PORT)),
                        ..HTTPGetAction::default()
                    }),
                    ..LifecycleHandler::default()
                },
                None => LifecycleHandler {
                    sleep: Some(SleepAction {
                        seconds: i64::try_from(*min_drain_seconds).unwrap_or(i64::MAX),
                    }),
                    ..LifecycleHandler::default()
                },
            }),
            ..Lifecycle::default()
        }),
        resources,
        security_context: Some(container_security.unwrap_or_else(restricted_container_security)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "bootstrap".into(),
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
    // A native sidecar (an init container that keeps running): started before Envoy and
    // stopped only after it, so it is there for the whole of Envoy's preStop hook.
    let shutdown_manager = shutdown_manager_image.as_ref().map(|image| Container {
        name: "shutdown-manager".into(),
        image: Some(image.clone()),
        restart_policy: Some("Always".into()),
        args: Some(vec![
            "shutdown-manager".into(),
            "--admin-address".into(),
            ADMIN_ADDRESS.into(),
            "--listen".into(),
            format!("0.0.0.0:{SHUTDOWN_PORT}"),
            "--min-drain-seconds".into(),
            min_drain_seconds.to_string(),
            "--drain-seconds".into(),
            drain_seconds.to_string(),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("shutdown".into()),
            container_port: i32::from(SHUTDOWN_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([
                (
                    "cpu".to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("10m".into()),
                ),
                (
                    "memory".to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Mi".into()),
                ),
            ])),
            ..k8s_openapi::api::core::v1::ResourceRequirements::default()
        }),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(all_labels),
            annotations: Some(all_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some((*sa_name).to_owned()),
            automount_service_account_token: Some(false),
            affinity: Some(affinity.unwrap_or_else(|| anti_affinity(*default_spread, selector))),
            tolerations,
            node_selector,
            topology_spread_constraints,
            image_pull_secrets,
            priority_class_name,
            security_context: Some(security_context.unwrap_or_else(|| PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                // Listeners bind at the Gateway's ports, below 1024 too, without privileges
                // (a namespaced sysctl the restricted Pod Security Standard allows).
                sysctls: Some(vec![Sysctl {
                    name: "net.ipv4.ip_unprivileged_port_start".into(),
                    value: "0".into(),
                }]),
                ..PodSecurityContext::default()
            })),
            // The pre-stop wait, the drain and a margin.
            termination_grace_period_seconds: Some(
                i64::try_from(drain_seconds + min_drain_seconds + 15).unwrap_or(i64::MAX),
            ),
            init_containers: shutdown_manager.map(|c| vec![c]),
            containers: vec![envoy],
            volumes: Some(vec![
                Volume {
                    name: "bootstrap".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: fleet.config_map(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "certs".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(fleet.certificate_secret()),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::settings::{Layer, resolve};
    use serde_json::{Value, json};

    fn environment() -> FleetEnvironment {
        FleetEnvironment {
            names: Names::new("eg-production", "production"),
            anti_affinity: AntiAffinity::Preferred,
            xds: XdsAddress::Dns {
                host: "production-envoy-gateway.eg-production.svc".into(),
                port: 18000,
            },
            xds_server_name: "production-envoy-gateway.eg-production.svc".into(),
            image_repository: Some("quay.io/eg-operator/eg-operator".into()),
            version: "1.9.1".into(),
        }
    }

    fn gateway() -> Gateway {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public", "namespace": "shop", "uid": "gw-uid-1"},
            "spec": {
                "gatewayClassName": "production",
                "infrastructure": {"labels": {"team": "shop"}, "annotations": {"cost-center": "42"}},
                "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 80},
                    {"name": "https", "protocol": "HTTPS", "port": 443},
                    {"name": "https-2", "protocol": "HTTPS", "port": 443, "hostname": "b.example.com"},
                    {"name": "dns", "protocol": "UDP", "port": 53}
                ]
            }
        }))
        .expect("gateway")
    }

    fn certificate() -> ClientCertificate {
        ClientCertificate {
            ca_crt: "CA".into(),
            tls_crt: "CRT".into(),
            tls_key: "KEY".into(),
        }
    }

    fn settings(spec: Value) -> EnvoyProxySpec {
        resolve(&[Layer {
            source_name: "test".into(),
            spec,
        }])
        .expect("valid settings")
        .0
    }

    fn objects(spec: Value) -> BTreeMap<String, Value> {
        let graph = build(&FleetInputs {
            environment: &environment(),
            gateway: &gateway(),
            settings: &settings(spec),
            certificate: &certificate(),
            version: "1.9.1",
        })
        .expect("builds");
        graph
            .nodes()
            .map(|n| (format!("{} {}", n.id.kind, n.id.name), n.object.clone()))
            .collect()
    }

    fn full_settings() -> Value {
        json!({
            "shutdown": {"drainTimeout": "30s", "minDrainDuration": "5s"},
            "provider": {"type": "Kubernetes", "kubernetes": {
                "envoyDeployment": {
                    "replicas": 3,
                    "pod": {
                        "labels": {"tier": "edge"},
                        "annotations": {"scrape": "yes"},
                        "nodeSelector": {"pool": "edge"},
                        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
                    },
                    "container": {
                        "image": "envoy:custom",
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                        "env": [{"name": "FOO", "value": "bar"}]
                    }
                },
                "envoyService": {"type": "LoadBalancer", "annotations": {"lb": "internal"}, "externalTrafficPolicy": "Cluster", "loadBalancerClass": "example.com/lb"},
                "envoyHpa": {"minReplicas": 2, "maxReplicas": 9, "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
                "envoyPDB": {"maxUnavailable": 1}
            }}
        })
    }

    /// Set UPDATE_GOLDEN=1 to rewrite the golden file after an intended change.
    #[test]
    fn a_fully_configured_fleet_matches_its_golden_file() {
        let rendered = serde_yaml_ng::to_string(&objects(full_settings())).expect("yaml");
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fleet-full.yaml");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &rendered).expect("write golden");
        }
        let expected = std::fs::read_to_string(&golden).expect("golden file");
        assert_eq!(
            rendered, expected,
            "fleet changed; UPDATE_GOLDEN=1 to accept"
        );
    }

    #[test]
    fn settings_are_honoured_and_an_hpa_owns_the_replica_count() {
        let o = objects(full_settings());
        let d = &o["Deployment envoy-public"];
        assert!(
            d.pointer("/spec/replicas").is_none(),
            "HPA decides replicas"
        );
        let hpa = &o["HorizontalPodAutoscaler envoy-public"];
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 9);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "memory");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "envoy-public");
        assert_eq!(
            o["PodDisruptionBudget envoy-public"]["spec"]["maxUnavailable"],
            1
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "envoy:custom");
        assert_eq!(pod["containers"][0]["resources"]["requests"]["cpu"], "500m");
        assert_eq!(pod["nodeSelector"]["pool"], "edge");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30 + 5 + 15);
        assert_eq!(
            d["metadata"]["labels"]["team"], "shop",
            "infrastructure labels"
        );
        assert_eq!(d["metadata"]["annotations"]["cost-center"], "42");
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["cost-center"], "42",
            "infrastructure annotations reach the pods"
        );
        assert_eq!(
            d["metadata"]["ownerReferences"][0]["uid"], "gw-uid-1",
            "owned by the Gateway"
        );
        let svc = &o["Service envoy-public"];
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(svc["metadata"]["annotations"]["lb"], "internal");
    }

    #[test]
    fn one_service_port_per_listener_port_and_protocol() {
        let o = objects(json!({}));
        let ports: Vec<(Value, Value, Value)> = o["Service envoy-public"]["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["name"].clone(),
                    p["port"].clone(),
                    p["targetPort"].clone(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (json!("udp-53"), json!(53), json!(53)),
                (json!("tcp-80"), json!(80), json!(80)),
                (json!("tcp-443"), json!(443), json!(443)),
            ]
        );
    }

    #[test]
    fn without_settings_replicas_spread_over_hostname_and_zone() {
        let o = objects(json!({}));
        let d = &o["Deployment envoy-public"];
        assert_eq!(d["spec"]["replicas"], 1);
        let terms = d
            .pointer("/spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .expect("preferred anti-affinity");
        let keys: Vec<&Value> = terms
            .iter()
            .map(|t| &t["podAffinityTerm"]["topologyKey"])
            .collect();
        assert_eq!(
            keys,
            [
                &json!("kubernetes.io/hostname"),
                &json!("topology.kubernetes.io/zone")
            ]
        );
        assert!(!o.contains_key("HorizontalPodAutoscaler envoy-public"));
        assert!(!o.contains_key("PodDisruptionBudget envoy-public"));
        assert_eq!(o["Service envoy-public"]["spec"]["type"], "LoadBalancer");
    }

    #[test]
    fn a_daemon_set_replaces_the_deployment() {
        let o = objects(json!({"provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDaemonSet": {"pod": {"nodeSelector": {"edge": "true"}}},
            "envoyService": {"type": "ClusterIP", "externalTrafficPolicy": "Local"}
        }}}));
        assert!(o.contains_key("DaemonSet envoy-public"));
        assert!(!o.contains_key("Deployment envoy-public"));
        assert!(
            o["Service envoy-public"]["spec"]
                .get("externalTrafficPolicy")
                .is_none(),
            "not valid on ClusterIP"
        );
    }

    #[test]
    fn the_bootstrap_names_the_gateway_and_reads_certificates_through_sds() {
        let o = objects(json!({}));
        let cm = &o["ConfigMap envoy-public-bootstrap"]["data"];
        let bootstrap: Value =
            serde_json::from_str(cm[BOOTSTRAP_KEY].as_str().expect("bootstrap")).expect("json");
        assert_eq!(bootstrap["node"]["cluster"], "shop/public");
        assert_eq!(
            bootstrap["static_resources"]["clusters"][0]["type"],
            "STRICT_DNS"
        );
        assert!(cm.get("xds-certificate.json").is_some());
        let secret = &o["Secret envoy-public-xds"];
        assert_eq!(secret["type"], "kubernetes.io/tls");
    }

    #[test]
    fn long_gateway_names_are_shortened_deterministically() {
        let n = FleetNames::new("ns", &"g".repeat(100));
        assert!(n.base.len() <= 50, "{}", n.base);
        assert_eq!(n, FleetNames::new("ns", &"g".repeat(100)));
        assert_ne!(n.base, FleetNames::new("ns", &"h".repeat(100)).base);
    }
}
