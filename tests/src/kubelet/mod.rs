//! A process kubelet: runs the pods of a real apiserver as local processes, for the end-to-end
//! tests and `make conformance` on machines without a container runtime.
//!
//! It registers a Node (Ready, untainted, with capacity) and heartbeats its Lease, binds every
//! pending pod to that node (it is the cluster's scheduler too), and runs each pod's containers
//! for the images it knows ([`plan::Binaries`]): eg-operator, Envoy, the Gateway API conformance
//! echo server and the harness' `eg-echo`. Each pod gets its own network namespace and address on
//! the node's bridge ([`net`]), its Secret / ConfigMap / projected / downward-API volumes as files
//! bind-mounted at their mount paths in a private mount namespace ([`volumes`], [`plan`]), its
//! environment with downward-API field references, the apiserver at `127.0.0.1:443` when it
//! mounts a service account token, Service names in its `/etc/hosts`, readiness from its probes,
//! restarts with back-off, and a `status` like a kubelet's ([`status`]). Deleted pods get their
//! preStop hooks, SIGTERM, their grace period, then SIGKILL, and are removed from the apiserver.
//! Each container run's output goes to a log file in the pod's directory, a timestamped line at a
//! time ([`logs`]), which the kubelet server ([`server`], the Node's `kubeletEndpoint`) serves to
//! the apiserver's `pods/log`, for the pods running here (a stopping pod's logs are gone from it).
//!
//! The I/O here is a thin loop (every 300 ms: list, bind, start, supervise, report); every
//! decision is in the pure modules. Not done: `kubectl exec`/`attach`/`port-forward`, following a
//! log, init containers that run to completion (native sidecars are supported), resource limits,
//! affinity (one node), Secret updates after start, read-only mounts, readiness for exec/gRPC
//! probes (assumed ready once started), ClusterIPs (no kube-proxy: Service names resolve to pod
//! IPs, and `LoadBalancer` Services get the IPs of their ready pods as ingress, which is how
//! Gateways get reachable addresses). Until a container is first ready its probe runs every
//! second; after that at its `periodSeconds`.

pub mod logs;
pub mod net;
pub mod plan;
pub mod server;
pub mod status;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use crate::process::{Lifetime, ManagedProcess, ProcessError};
use logs::{ContainerLogs, LogIndex, Stream};
use net::{Bridge, NetError, PodNet};
use plan::{
    Binaries, BindMount, ContainerPlan, EnvSources, PlanError, PodPlace, ProbeAction,
    launch_script, plan_pod,
};
use server::{KubeletServer, ServerError, SharedIndex};
use status::{ContainerObservation, ContainerState, PodObservation};
use volumes::{Sources, VolumeError, references, volume_files};

/// Kubernetes version the node reports.
pub const KUBELET_VERSION: &str = "v1.36.3";
const TICK: Duration = Duration::from_millis(300);
const FIELD_MANAGER: &str = "eg-process-kubelet";

/// Errors of the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("apiserver {0:?} is not a 127.x address and port")]
    Apiserver(String),
}

impl KubeletError {
    /// Stable category for logs and pod status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            KubeletError::Kube(_) => "kube",
            KubeletError::Net(e) => e.category(),
            KubeletError::Plan(e) => e.category(),
            KubeletError::Volume(e) => e.category(),
            KubeletError::Process(_) => "process",
            KubeletError::Server(_) => "server",
            KubeletError::Io { .. } => "io",
            KubeletError::Apiserver(_) => "apiserver",
        }
    }

    /// The waiting reason a pod shows while this error stands.
    fn reason(&self) -> &'static str {
        match self {
            KubeletError::Plan(_) | KubeletError::Volume(_) => "CreateContainerConfigError",
            _ => "ContainerCreating",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KubeletError + '_ {
    move |source| KubeletError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to run a kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    pub binaries: Binaries,
    /// Pod directories (volumes, logs, overlays) go here.
    pub state_dir: PathBuf,
    /// The apiserver's loopback address (forwarded into pods at `127.0.0.1:443`).
    pub apiserver: SocketAddr,
}

/// A running kubelet; dropping it stops every pod (SIGKILL) and removes their networks.
#[derive(Debug)]
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    node_name: String,
    /// This machine's address on the pod bridge.
    pub node_address: Ipv4Addr,
    /// Serves the containers' logs on `node_address`.
    server: KubeletServer,
}

impl Kubelet {
    /// Registers the node and starts running pods.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Self, KubeletError> {
        let apiserver = config.apiserver;
        if !apiserver.ip().is_loopback() {
            return Err(KubeletError::Apiserver(apiserver.to_string()));
        }
        std::fs::create_dir_all(&config.state_dir).map_err(io_err(&config.state_dir))?;
        let bridge = Bridge::create()?;
        let node_address = bridge.gateway();
        let logs = SharedIndex::default();
        let server = KubeletServer::start(node_address, logs.clone()).await?;
        register_node(&client, &config.node_name, &bridge, server.port).await?;
        renew_lease(&client, &config.node_name).await?;
        let node_name = config.node_name.clone();
        let mut state = State {
            client,
            config,
            bridge,
            apiserver,
            pods: HashMap::new(),
            stopping: HashSet::new(),
            failed_starts: HashMap::new(),
            last_lease: Instant::now(),
            services: Vec::new(),
            released: tokio::sync::mpsc::unbounded_channel(),
            logs,
        };
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = state.tick().await {
                    tracing::warn!(category = e.category(), "kubelet: {e}");
                }
                tokio::time::sleep(TICK).await;
            }
        });
        Ok(Self {
            task,
            node_name,
            node_address,
            server,
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The port of the kubelet server (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub fn port(&self) -> u16 {
        self.server.port
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // Dropping the loop's state kills the processes and deletes the networks.
        self.task.abort();
    }
}

/// The apiserver address of a kubeconfig `server` URL like `https://127.0.0.1:6443`.
pub fn apiserver_address(server: &str) -> Result<SocketAddr, KubeletError> {
    server
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|hostport| hostport.parse::<SocketAddr>().ok())
        .filter(|a| a.ip().is_loopback())
        .ok_or_else(|| KubeletError::Apiserver(server.to_owned()))
}

fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

async fn register_node(
    client: &Client,
    name: &str,
    bridge: &Bridge,
    port: u16,
) -> Result<(), KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let address = bridge.gateway().to_string();
    let node = status::node(
        name,
        &address,
        port,
        &bridge.cidr(),
        &now(),
        KUBELET_VERSION,
    );
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    nodes.patch(name, &pp, &Patch::Apply(&node)).await?;
    let status = json!({"status": status::node_status(&address, port, &now(), KUBELET_VERSION)});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn renew_lease(client: &Client, name: &str) -> Result<(), KubeletError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let micro = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let lease = status::node_lease(name, &micro);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    leases.patch(name, &pp, &Patch::Apply(&lease)).await?;
    Ok(())
}

/// One container's process and what the kubelet knows of it.
#[derive(Debug)]
struct ContainerRun {
    plan: ContainerPlan,
    process: Option<ManagedProcess>,
    started_at: String,
    restart_count: u32,
    ready: bool,
    ever_ready: bool,
    failures: u32,
    next_probe: Instant,
    restart_at: Option<Instant>,
    terminated: Option<(i32, String)>,
}

/// A pod whose processes run here.
#[derive(Debug)]
struct RunningPod {
    // Field order: processes stop before the network namespace goes away.
    containers: Vec<ContainerRun>,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    net: PodNet,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    dir: PathBuf,
    mounts: Vec<Vec<BindMount>>,
    hosts: String,
    start_time: String,
    restart_always: bool,
    restart_policy: String,
    grace: Duration,
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if let Some(f) = &self.forwarder {
            f.abort();
        }
        for c in &mut self.containers {
            c.process = None;
        }
        let _ = net::ip(&["netns", "del", &self.net.netns]);
        let _ = net::ip(&["link", "del", &self.net.link]);
        // The directory (with the containers' logs) stays until the state directory goes, or a
        // graceful stop removes it.
    }
}

struct State {
    client: Client,
    config: KubeletConfig,
    bridge: Bridge,
    apiserver: SocketAddr,
    pods: HashMap<String, RunningPod>,
    stopping: HashSet<String>,
    /// Pods that could not start yet: the error, and when to try again.
    failed_starts: HashMap<String, (String, Instant)>,
    last_lease: Instant,
    /// The cluster's Services as of the last tick (for `/etc/hosts`).
    services: Vec<Service>,
    /// Networks of stopped pods, freed once their clean-up is done.
    released: (
        tokio::sync::mpsc::UnboundedSender<PodNet>,
        tokio::sync::mpsc::UnboundedReceiver<PodNet>,
    ),
    /// What the kubelet server may show: the logs of the pods in `pods`, as of the last tick.
    logs: SharedIndex,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl State {
    async fn tick(&mut self) -> Result<(), KubeletError> {
        while let Ok(net) = self.released.1.try_recv() {
            self.bridge.forget(&net);
        }
        if self.last_lease.elapsed() > Duration::from_secs(10) {
            renew_lease(&self.client, &self.config.node_name).await?;
            self.last_lease = Instant::now();
        }
        let all: Api<Pod> = Api::all(self.client.clone());
        let pods = all.list(&ListParams::default()).await?.items;
        let mut seen = HashSet::new();
        for pod in &pods {
            let id = uid(pod);
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            match node {
                None if pod.metadata.deletion_timestamp.is_none() => self.bind(pod).await,
                Some(n) if n == self.config.node_name => {
                    seen.insert(id.clone());
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.stop(pod);
                    } else if self.pods.contains_key(&id) {
                        self.supervise(pod).await;
                    } else if !self.stopping.contains(&id) {
                        self.try_start(pod).await;
                    }
                }
                _ => {}
            }
        }
        // Pods removed from the apiserver without a graceful deletion.
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(run) = self.pods.remove(&id) {
                self.bridge.forget(&run.net);
                drop(run);
            }
        }
        self.failed_starts.retain(|id, _| seen.contains(id));
        self.stopping.retain(|id| seen.contains(id));
        let index = log_index(self.pods.values());
        *self.logs.lock().unwrap_or_else(|p| p.into_inner()) = index;
        self.refresh_services().await
    }

    async fn bind(&self, pod: &Pod) {
        let (Some(name), Some(ns)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name}
        });
        if let Err(e) = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            tracing::debug!("binding {ns}/{name}: {e}");
        }
    }

    async fn try_start(&mut self, pod: &Pod) {
        let id = uid(pod);
        if let Some((_, retry)) = self.failed_starts.get(&id)
            && Instant::now() < *retry
        {
            return;
        }
        match self.start(pod).await {
            Ok(run) => {
                self.failed_starts.remove(&id);
                self.pods.insert(id, run);
                self.supervise(pod).await;
            }
            Err(e) => {
                let message = e.to_string();
                tracing::info!("pod {:?} not started: {message}", pod.metadata.name);
                self.report_waiting(pod, e.reason(), &message).await;
                self.failed_starts
                    .insert(id, (message, Instant::now() + Duration::from_secs(1)));
            }
        }
    }

    /// Writes a Pending status whose containers wait with `reason`.
    async fn report_waiting(&self, pod: &Pod, reason: &str, message: &str) {
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerObservation {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: ContainerState::Waiting {
                    reason: reason.into(),
                    message: message.into(),
                },
                ready: false,
                restart_count: 0,
                sidecar: false,
            })
            .collect();
        let obs = PodObservation {
            pod_ip: None,
            host_ip: self.bridge.gateway().to_string(),
            start_time: now(),
            restart_always: true,
            containers,
        };
        self.write_status(pod, &obs).await;
    }

    async fn write_status(&self, pod: &Pod, obs: &PodObservation) {
        let (Some(name), Some(ns)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return;
        };
        let mut computed = status::pod_status(obs, pod.status.as_ref(), &now());
        if let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) {
            computed["startTime"] = json!(start.0.to_string());
        }
        if !status::status_differs(&computed, pod.status.as_ref()) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": computed});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!("status of {ns}/{name}: {e}");
        }
    }

    /// Fetches what the pod refers to, writes its volumes, makes its network, starts its
    /// containers.
    async fn start(&mut self, pod: &Pod) -> Result<RunningPod, KubeletError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or(PlanError::NoSpec)?;
        let sources = self.fetch_sources(pod, &ns).await?;
        let env_sources = EnvSources {
            secrets: flatten_strings(&sources.secrets),
            config_maps: flatten_strings(&sources.config_maps),
        };
        let wants_api = volumes::mounts_token(pod);
        // Plan once with a placeholder address to fail fast before a network exists.
        let mut place = PodPlace {
            pod_ip: Ipv4Addr::UNSPECIFIED,
            host_ip: self.bridge.gateway().to_string(),
            node_name: self.config.node_name.clone(),
            apiserver: wants_api.then(|| ("127.0.0.1".to_owned(), 443)),
        };
        plan_pod(pod, &self.config.binaries, &place, &env_sources)?;
        for v in spec.volumes.iter().flatten() {
            volume_files(pod, v, &sources, &place)?;
        }

        let dir = self
            .config
            .state_dir
            .join(format!("{ns}_{name}_{}", uid(pod)));
        let net = self.bridge.add_pod()?;
        place.pod_ip = net.address;
        let plans = plan_pod(pod, &self.config.binaries, &place, &env_sources)?;
        let mut run = RunningPod {
            containers: Vec::new(),
            forwarder: None,
            net,
            namespace: ns,
            name,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            dir: dir.clone(),
            mounts: Vec::new(),
            hosts: String::new(),
            start_time: now(),
            restart_always: spec.restart_policy.as_deref().unwrap_or("Always") == "Always",
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            grace: Duration::from_secs(
                spec.termination_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30),
            ),
        };
        // From here on, dropping `run` undoes the network and the directory.
        let volumes_dir = dir.join("volumes");
        for v in spec.volumes.iter().flatten() {
            let vdir = volumes_dir.join(&v.name);
            std::fs::create_dir_all(&vdir).map_err(io_err(&vdir))?;
            for (rel, bytes) in volume_files(pod, v, &sources, &place)? {
                let path = vdir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                std::fs::write(&path, bytes).map_err(io_err(&path))?;
            }
        }
        let hosts_path = dir.join("hosts");
        // Complete from the start: Envoy resolves the xDS server's name as soon as it runs.
        run.hosts = net::hosts_file(
            (&run.namespace, &run.name, run.net.address),
            &self.services,
            &self.running_pods(),
        );
        std::fs::write(&hosts_path, &run.hosts).map_err(io_err(&hosts_path))?;
        if wants_api {
            let listener = net::listen_in(&run.net.netns, SocketAddr::from(([127, 0, 0, 1], 443)))?;
            run.forwarder = Some(tokio::spawn(net::forward(listener, self.apiserver)));
        }
        for plan in plans {
            let mut mounts: Vec<BindMount> = plan
                .mounts
                .iter()
                .map(|m| {
                    let base = volumes_dir.join(&m.volume);
                    let source = m.sub_path.as_ref().map_or(base.clone(), |s| base.join(s));
                    BindMount {
                        file: source.is_file(),
                        source,
                        target: m.mount_path.clone(),
                    }
                })
                .collect();
            mounts.push(BindMount {
                source: hosts_path.clone(),
                target: "/etc/hosts".into(),
                file: true,
            });
            run.mounts.push(mounts);
            run.containers.push(ContainerRun {
                plan,
                process: None,
                started_at: now(),
                restart_count: 0,
                ready: false,
                ever_ready: false,
                failures: 0,
                next_probe: Instant::now(),
                restart_at: None,
                terminated: None,
            });
        }
        for i in 0..run.containers.len() {
            spawn_container(&mut run, i)?;
        }
        Ok(run)
    }

    async fn fetch_sources(&self, pod: &Pod, ns: &str) -> Result<Sources, KubeletError> {
        let refs = references(pod);
        let mut sources = Sources::default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        for name in &refs.secrets {
            let data = secrets.get_opt(name).await?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .chain(
                        s.string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    )
                    .collect()
            });
            sources.secrets.insert(name.clone(), data);
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for name in &refs.config_maps {
            let data = config_maps.get_opt(name).await?.map(|c| {
                c.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .chain(
                        c.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    )
                    .collect()
            });
            sources.config_maps.insert(name.clone(), data);
        }
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), ns);
        for token in &refs.tokens {
            let request = json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {
                    "audiences": token.audience.iter().collect::<Vec<_>>(),
                    "expirationSeconds": token.expiration_seconds,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                        "name": pod.metadata.name, "uid": pod.metadata.uid}
                }
            });
            let answer: serde_json::Value = accounts
                .create_subresource("token", &sa, &PostParams::default(), &request)
                .await?;
            let jwt = answer["status"]["token"].as_str().unwrap_or_default();
            sources.tokens.insert(token.clone(), jwt.to_owned());
        }
        Ok(sources)
    }

    /// Restarts exited containers, runs due probes, reports status.
    async fn supervise(&mut self, pod: &Pod) {
        let id = uid(pod);
        let Some(run) = self.pods.get_mut(&id) else {
            return;
        };
        let address = run.net.address;
        for i in 0..run.containers.len() {
            let exited = run.containers[i].process.as_mut().and_then(|p| p.exited());
            if let Some(status) = exited {
                let c = &mut run.containers[i];
                c.process = None;
                c.ready = false;
                c.terminated = Some((status.code().unwrap_or(137), now()));
                if plan::restarts(&run.restart_policy, c.plan.sidecar, status.success()) {
                    let backoff = Duration::from_secs(1 << c.restart_count.min(4));
                    c.restart_at = Some(Instant::now() + backoff);
                }
            }
            let due = run.containers[i]
                .restart_at
                .is_some_and(|at| Instant::now() >= at);
            if due {
                run.containers[i].restart_count += 1;
                if let Err(e) = spawn_container(run, i) {
                    tracing::warn!("restarting {}: {e}", run.containers[i].plan.name);
                }
            }
            let c = &mut run.containers[i];
            if c.process.is_none() || Instant::now() < c.next_probe {
                continue;
            }
            let Some(probe) = c.plan.readiness.clone() else {
                c.ready = true;
                continue;
            };
            let ok = run_probe(address, &probe.action, probe.timeout).await;
            let c = &mut run.containers[i];
            if ok {
                c.failures = 0;
                c.ready = true;
                c.ever_ready = true;
            } else {
                c.failures += 1;
                if c.failures >= probe.failure_threshold || !c.ever_ready {
                    c.ready = false;
                }
            }
            let period = if c.ever_ready {
                probe.period
            } else {
                probe.period.min(Duration::from_secs(1))
            };
            c.next_probe = Instant::now() + period;
        }
        let obs = observe(run, self.bridge.gateway());
        self.write_status(pod, &obs).await;
    }

    /// Stops a pod being deleted, in the background, then removes it from the apiserver.
    fn stop(&mut self, pod: &Pod) {
        let id = uid(pod);
        if !self.stopping.insert(id.clone()) {
            return;
        }
        let run = self.pods.remove(&id);
        let released = self.released.0.clone();
        let client = self.client.clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        tokio::spawn(async move {
            if let Some(mut run) = run {
                let grace = grace.unwrap_or(run.grace);
                let address = run.net.address;
                let hooks = run
                    .containers
                    .iter()
                    .filter_map(|c| c.plan.pre_stop.clone());
                for (port, path) in hooks.collect::<Vec<_>>() {
                    let action = ProbeAction::Http {
                        port,
                        path,
                        https: false,
                    };
                    run_probe(address, &action, grace).await;
                }
                // Containers first, then their sidecars.
                for sidecars in [false, true] {
                    let mut processes: Vec<ManagedProcess> = run
                        .containers
                        .iter_mut()
                        .filter(|c| c.plan.sidecar == sidecars)
                        .filter_map(|c| c.process.take())
                        .collect();
                    let _ = tokio::task::spawn_blocking(move || {
                        std::thread::scope(|s| {
                            for p in &mut processes {
                                s.spawn(|| p.stop(grace.max(Duration::from_secs(1))));
                            }
                        });
                    })
                    .await;
                }
                let (dir, net) = (run.dir.clone(), run.net.clone());
                drop(run);
                let _ = released.send(net);
                let _ = std::fs::remove_dir_all(dir);
            }
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(id),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&name, &dp).await;
        });
    }

    /// `(namespace, labels, ip)` of every pod running here.
    fn running_pods(&self) -> Vec<(String, BTreeMap<String, String>, Ipv4Addr)> {
        self.pods
            .values()
            .map(|r| (r.namespace.clone(), r.labels.clone(), r.net.address))
            .collect()
    }

    /// Rewrites each pod's `/etc/hosts` when the Services or pods behind them changed, and points
    /// `LoadBalancer` Services at their ready pods.
    async fn refresh_services(&mut self) -> Result<(), KubeletError> {
        let api: Api<Service> = Api::all(self.client.clone());
        self.services = api.list(&ListParams::default()).await?.items;
        let services = &self.services;
        let ready: Vec<(String, BTreeMap<String, String>, Ipv4Addr, bool)> = self
            .pods
            .values()
            .map(|r| {
                let ready = r.containers.iter().all(|c| c.ready && c.process.is_some());
                (r.namespace.clone(), r.labels.clone(), r.net.address, ready)
            })
            .collect();
        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let ips = net::load_balancer_ips(svc, &ready);
            if ips.is_empty() {
                continue;
            }
            let ingress: Vec<serde_json::Value> =
                ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
            let live: Vec<String> = svc
                .status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .filter_map(|i| i.ip.clone())
                .collect();
            let wanted: Vec<String> = ips.iter().map(ToString::to_string).collect();
            if live == wanted {
                continue;
            }
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let namespaced: Api<Service> = Api::namespaced(self.client.clone(), ns);
            if let Err(e) = namespaced
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!("load balancer status of {ns}/{name}: {e}");
            }
        }
        let running = self.running_pods();
        for run in self.pods.values_mut() {
            let hosts = net::hosts_file(
                (&run.namespace, &run.name, run.net.address),
                &self.services,
                &running,
            );
            if hosts != run.hosts {
                // Rewritten in place: the file is bind-mounted, a rename would not show.
                let path = run.dir.join("hosts");
                std::fs::write(&path, &hosts).map_err(io_err(&path))?;
                run.hosts = hosts;
            }
        }
        Ok(())
    }
}

fn flatten_strings(
    data: &BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
) -> BTreeMap<(String, String), String> {
    data.iter()
        .filter_map(|(name, d)| d.as_ref().map(|d| (name, d)))
        .flat_map(|(name, d)| {
            d.iter().map(move |(k, v)| {
                (
                    (name.clone(), k.clone()),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
        })
        .collect()
}

/// Starts container `i` of `run` inside the pod's namespaces.
fn spawn_container(run: &mut RunningPod, i: usize) -> Result<(), KubeletError> {
    let c = &mut run.containers[i];
    let scratch = run.dir.join("rootfs").join(&c.plan.name);
    let script = launch_script(&run.mounts[i], &scratch, Path::exists);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &run.net.netns, "sh", "-c", &script, "sh"])
        .args(&c.plan.argv)
        .env_clear()
        .envs(c.plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/");
    let log = log_path(&run.dir, &c.plan.name, c.restart_count);
    let file = File::create(&log).map_err(io_err(&log))?;
    let name = format!("{}/{}/{}", run.namespace, run.name, c.plan.name);
    let (process, stdout, stderr) = ManagedProcess::spawn_piped(name, cmd, &log, Lifetime::Owned)?;
    c.process = Some(process);
    let file = Arc::new(Mutex::new(file));
    for (stream, output) in [
        (Stream::Stdout, Box::new(stdout) as Box<dyn Read + Send>),
        (Stream::Stderr, Box::new(stderr)),
    ] {
        let file = file.clone();
        // Ends when the container's last process closes the pipe.
        std::thread::Builder::new()
            .name(format!("log {}", c.plan.name))
            .spawn(move || record(output, stream, &file))
            .map_err(io_err(&log))?;
    }
    c.started_at = now();
    c.restart_at = None;
    c.terminated = None;
    c.ready = false;
    c.failures = 0;
    c.next_probe = Instant::now()
        + c.plan
            .readiness
            .as_ref()
            .map_or(Duration::ZERO, |p| p.initial_delay);
    Ok(())
}

/// The log file of a container's run number `restart`.
fn log_path(dir: &Path, container: &str, restart: u32) -> PathBuf {
    dir.join(format!("{container}-{restart}.log"))
}

/// Copies a container's output into its log file a line at a time, each with the time it came.
fn record(output: Box<dyn Read + Send>, stream: Stream, file: &Mutex<File>) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let framed = logs::log_line(k8s_openapi::jiff::Timestamp::now(), stream, &line);
        // A failed write loses the line but keeps draining the pipe, so the container never
        // blocks on a full one.
        let _ = file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&framed);
    }
}

/// The log files of every running pod's containers.
fn log_index<'a>(pods: impl Iterator<Item = &'a RunningPod>) -> LogIndex {
    pods.map(|run| {
        let containers = run
            .containers
            .iter()
            .map(|c| ContainerLogs {
                name: c.plan.name.clone(),
                current: log_path(&run.dir, &c.plan.name, c.restart_count),
                previous: c
                    .restart_count
                    .checked_sub(1)
                    .map(|n| log_path(&run.dir, &c.plan.name, n)),
            })
            .collect();
        ((run.namespace.clone(), run.name.clone()), containers)
    })
    .collect()
}

fn observe(run: &RunningPod, host_ip: Ipv4Addr) -> PodObservation {
    let containers = run
        .containers
        .iter()
        .map(|c| {
            let state = match (&c.process, &c.terminated) {
                (Some(_), _) => ContainerState::Running {
                    started_at: c.started_at.clone(),
                },
                (None, Some((code, finished))) => ContainerState::Terminated {
                    exit_code: *code,
                    started_at: c.started_at.clone(),
                    finished_at: finished.clone(),
                },
                (None, None) => ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
            };
            ContainerObservation {
                name: c.plan.name.clone(),
                image: c.plan.image.clone(),
                state,
                ready: c.ready && c.process.is_some(),
                restart_count: c.restart_count,
                sidecar: c.plan.sidecar,
            }
        })
        .collect();
    PodObservation {
        pod_ip: Some(run.net.address),
        host_ip: host_ip.to_string(),
        start_time: run.start_time.clone(),
        restart_always: run.restart_always,
        containers,
    }
}

/// One probe of the pod at `address`.
async fn run_probe(address: Ipv4Addr, action: &ProbeAction, timeout: Duration) -> bool {
    let ip = IpAddr::V4(address);
    match action {
        ProbeAction::AssumeReady => true,
        ProbeAction::Tcp { port } => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, *port))).await,
            Ok(Ok(_))
        ),
        ProbeAction::Http { port, path, https } => {
            let scheme = if *https { "https" } else { "http" };
            let Ok(client) = reqwest::Client::builder()
                .timeout(timeout)
                .danger_accept_invalid_certs(true)
                .no_proxy()
                .build()
            else {
                return false;
            };
            let url = format!("{scheme}://{address}:{port}{path}");
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| (200..400).contains(&r.status().as_u16()))
        }
    }
}
