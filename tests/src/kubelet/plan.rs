//! Pod → process plan, with no I/O: which local binary runs each container image, its argv and
//! environment (downward-API field references, Secret and ConfigMap keys, `$(VAR)` expansion),
//! where its volumes are mounted, its readiness probe, and the shell prologue that gives the
//! process its own view of the file system (volumes bind-mounted at their `mountPath`s inside the
//! pod's private mount namespace).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Errors planning a pod; each names the container and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("container {container}: image {image:?} is not one this kubelet can run")]
    UnknownImage { container: String, image: String },
    #[error("container {container}: command {command:?} is not the binary of image {image:?}")]
    UnknownCommand {
        container: String,
        image: String,
        command: String,
    },
    #[error("container {container}: {field}: {message}")]
    Field {
        container: String,
        field: String,
        message: String,
    },
    #[error("pod has no spec")]
    NoSpec,
    #[error("{0} is not supported by this kubelet")]
    Unsupported(String),
}

impl PlanError {
    /// Stable category for logs and pod status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            PlanError::UnknownImage { .. } => "unknown_image",
            PlanError::UnknownCommand { .. } => "unknown_command",
            PlanError::Field { .. } => "field",
            PlanError::NoSpec => "no_spec",
            PlanError::Unsupported(_) => "unsupported",
        }
    }
}

/// The local binaries behind the images this kubelet knows.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    /// eg-operator (`quay.io/eg-operator/eg-operator:*`, entrypoint `eg-operator`).
    pub eg_operator: Option<PathBuf>,
    /// Envoy (`*envoyproxy/envoy:*`, entrypoint `envoy`).
    pub envoy: Option<PathBuf>,
    /// The Gateway API conformance echo server (`*gateway-api/echo-basic:*`).
    pub echo_basic: Option<PathBuf>,
    /// The harness' echo server (`eg-e2e/eg-echo:*`), `eg-echo NAME ADDR [mode]`.
    pub eg_echo: Option<PathBuf>,
    /// `eg-echo`, run as a stand-in for CoreDNS (`*coredns/coredns:*`): a TCP and UDP echo on
    /// port 53 whatever the container's args. The conformance suite's setup deploys CoreDNS for
    /// its UDPRoute test (a profile `make conformance` does not run) and waits for it to be ready.
    pub coredns_stand_in: Option<PathBuf>,
}

impl Binaries {
    /// The binary for `image` and the entrypoint name commands may use for it.
    fn for_image(&self, image: &str) -> Option<(&Path, &'static str)> {
        let repository = image_repository(image);
        let known: [(&str, &Option<PathBuf>, &'static str); 5] = [
            ("eg-operator/eg-operator", &self.eg_operator, "eg-operator"),
            ("envoyproxy/envoy", &self.envoy, "envoy"),
            ("gateway-api/echo-basic", &self.echo_basic, "echo-basic"),
            ("eg-e2e/eg-echo", &self.eg_echo, "eg-echo"),
            ("coredns/coredns", &self.coredns_stand_in, "coredns"),
        ];
        known
            .into_iter()
            .find(|(suffix, _, _)| repository.ends_with(suffix))
            .and_then(|(_, bin, entry)| bin.as_deref().map(|b| (b, entry)))
    }
}

/// `registry/path/name` of an image reference, without tag or digest.
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A colon after the last slash starts the tag; one before it is a registry port.
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// What the pod's fields resolve to on this node.
#[derive(Debug, Clone)]
pub struct PodPlace {
    pub pod_ip: Ipv4Addr,
    pub host_ip: String,
    pub node_name: String,
    /// Set when the pod mounts a service account token: in-pod address of the apiserver.
    pub apiserver: Option<(String, u16)>,
}

/// Secret and ConfigMap data the pod's environment refers to, by `(name, key)`.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    pub secrets: BTreeMap<(String, String), String>,
    pub config_maps: BTreeMap<(String, String), String>,
}

/// One volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    pub volume: String,
    pub sub_path: Option<String>,
    pub mount_path: PathBuf,
}

/// How readiness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        port: u16,
        path: String,
        https: bool,
    },
    Tcp {
        port: u16,
    },
    /// gRPC health or exec probes: not run; the container counts as ready once started.
    AssumeReady,
}

/// A readiness probe with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

/// One container as a local process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    /// `argv[0]` is the local binary.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountPlan>,
    pub readiness: Option<ProbePlan>,
    /// HTTP GET run before SIGTERM (`lifecycle.preStop.httpGet`): port and path.
    pub pre_stop: Option<(u16, String)>,
    /// A native sidecar (an init container with `restartPolicy: Always`): started before the
    /// containers, stopped after them, reported under `initContainerStatuses`.
    pub sidecar: bool,
}

/// Plans every container of `pod`: native sidecars first, then the containers. Init containers
/// that run to completion are refused.
pub fn plan_pod(
    pod: &Pod,
    binaries: &Binaries,
    place: &PodPlace,
    sources: &EnvSources,
) -> Result<Vec<ContainerPlan>, PlanError> {
    let spec = pod.spec.as_ref().ok_or(PlanError::NoSpec)?;
    let mut plans = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() != Some("Always") {
            return Err(PlanError::Unsupported(format!(
                "init container {} (only native sidecars, restartPolicy: Always,)",
                c.name
            )));
        }
        let mut plan = plan_container(pod, c, binaries, place, sources)?;
        plan.sidecar = true;
        plans.push(plan);
    }
    for c in &spec.containers {
        plans.push(plan_container(pod, c, binaries, place, sources)?);
    }
    Ok(plans)
}

fn plan_container(
    pod: &Pod,
    c: &Container,
    binaries: &Binaries,
    place: &PodPlace,
    sources: &EnvSources,
) -> Result<ContainerPlan, PlanError> {
    let image = c.image.clone().unwrap_or_default();
    let (binary, entry) = binaries
        .for_image(&image)
        .ok_or_else(|| PlanError::UnknownImage {
            container: c.name.clone(),
            image: image.clone(),
        })?;
    let env = container_env(pod, c, place, sources)?;
    if entry == "coredns" {
        let argv = ["coredns-stand-in", "0.0.0.0:53", "--stream"].map(String::from);
        return Ok(ContainerPlan {
            name: c.name.clone(),
            image,
            argv: std::iter::once(binary.display().to_string())
                .chain(argv)
                .collect(),
            env,
            mounts: Vec::new(),
            readiness: None,
            pre_stop: None,
            sidecar: false,
        });
    }
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|a| expand(a, &vars))
        .collect();
    let args = c.args.iter().flatten().map(|a| expand(a, &vars));
    let mut argv = vec![binary.display().to_string()];
    match command.split_first() {
        None => {}
        Some((first, rest)) => {
            let base = first.rsplit('/').next().unwrap_or(first);
            if base != entry {
                return Err(PlanError::UnknownCommand {
                    container: c.name.clone(),
                    image,
                    command: first.clone(),
                });
            }
            argv.extend(rest.iter().cloned());
        }
    }
    argv.extend(args);
    let mounts = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| MountPlan {
            volume: m.name.clone(),
            sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
            mount_path: PathBuf::from(&m.mount_path),
        })
        .collect();
    let readiness = c
        .readiness_probe
        .as_ref()
        .map(|p| probe_plan(c, p))
        .transpose()?;
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.http_get.as_ref())
        .map(|g| {
            let port = resolve_port(c, &g.port, "lifecycle.preStop.httpGet.port")?;
            Ok((port, g.path.clone().unwrap_or_else(|| "/".into())))
        })
        .transpose()?;
    Ok(ContainerPlan {
        name: c.name.clone(),
        image,
        argv,
        env,
        mounts,
        readiness,
        pre_stop,
        sidecar: false,
    })
}

fn field_err(c: &Container, field: &str, message: impl Into<String>) -> PlanError {
    PlanError::Field {
        container: c.name.clone(),
        field: field.into(),
        message: message.into(),
    }
}

/// A probe or hook port: a number, or the name of one of the container's ports.
fn resolve_port(c: &Container, port: &IntOrString, field: &str) -> Result<u16, PlanError> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| field_err(c, field, format!("no container port named {name:?}")))?,
    };
    u16::try_from(number).map_err(|_| field_err(c, field, format!("{number} is not a port")))
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn probe_plan(c: &Container, p: &Probe) -> Result<ProbePlan, PlanError> {
    let action = if let Some(get) = &p.http_get {
        ProbeAction::Http {
            port: resolve_port(c, &get.port, "readinessProbe.httpGet.port")?,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
            https: get.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        ProbeAction::Tcp {
            port: resolve_port(c, &tcp.port, "readinessProbe.tcpSocket.port")?,
        }
    } else {
        ProbeAction::AssumeReady
    };
    Ok(ProbePlan {
        action,
        initial_delay: seconds(p.initial_delay_seconds, 0),
        period: seconds(p.period_seconds, 10),
        timeout: seconds(p.timeout_seconds, 1),
        failure_threshold: p
            .failure_threshold
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(3),
    })
}

/// The container's environment: what the kubelet always sets, then `env` in order (later
/// entries may refer to earlier ones with `$(NAME)`).
fn container_env(
    pod: &Pod,
    c: &Container,
    place: &PodPlace,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
    ];
    if let Some((host, port)) = &place.apiserver {
        env.push(("KUBERNETES_SERVICE_HOST".into(), host.clone()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let value = env_value(pod, c, var, place, sources, &env)
            .map_err(|message| field_err(c, &format!("env[{i}] ({})", var.name), message))?;
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn env_value(
    pod: &Pod,
    c: &Container,
    var: &EnvVar,
    place: &PodPlace,
    sources: &EnvSources,
    earlier: &[(String, String)],
) -> Result<String, String> {
    let Some(from) = &var.value_from else {
        let vars: BTreeMap<&str, &str> = earlier
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        return Ok(expand(var.value.as_deref().unwrap_or(""), &vars));
    };
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path, place);
    }
    if let Some(r) = &from.resource_field_ref {
        return Err(format!(
            "resourceFieldRef {} of {:?} is not supported",
            r.resource,
            r.container_name.as_deref().unwrap_or(&c.name)
        ));
    }
    let optional_missing = |kind: &str, name: &str, key: &str, optional: Option<bool>| {
        if optional == Some(true) {
            Ok(String::new())
        } else {
            Err(format!("{kind} {name:?} has no key {key:?}"))
        }
    };
    if let Some(s) = &from.secret_key_ref {
        return match sources.secrets.get(&(s.name.clone(), s.key.clone())) {
            Some(v) => Ok(v.clone()),
            None => optional_missing("Secret", &s.name, &s.key, s.optional),
        };
    }
    if let Some(m) = &from.config_map_key_ref {
        return match sources.config_maps.get(&(m.name.clone(), m.key.clone())) {
            Some(v) => Ok(v.clone()),
            None => optional_missing("ConfigMap", &m.name, &m.key, m.optional),
        };
    }
    Err("valueFrom has no source".into())
}

/// A downward-API field of the pod.
pub fn field_value(pod: &Pod, path: &str, place: &PodPlace) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => place.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => place.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => place.host_ip.clone(),
        other => return Err(format!("fieldRef {other:?} is not supported")),
    })
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` escapes a dollar, and
/// unknown references stay as written.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether a container that exited is started again: always for native sidecars, else by the
/// pod's `restartPolicy` (`Always`, `OnFailure`, `Never`).
pub fn restarts(policy: &str, sidecar: bool, succeeded: bool) -> bool {
    sidecar || policy == "Always" || (policy == "OnFailure" && !succeeded)
}

/// A host path bind-mounted at `target` inside the pod's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    /// A file (subPath of a file, /etc/hosts) rather than a directory.
    pub file: bool,
}

/// Single-quotes `s` for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `sh -c` script a container starts with, inside the pod's network and (private) mount
/// namespace: directories that do not exist on this machine are made inside an overlay of their
/// nearest existing ancestor (private to the pod, under `scratch`), every bind mount is made,
/// then the container's argv (the script's arguments) is exec'd. `exists` tells which paths exist
/// on this machine.
pub fn launch_script(
    mounts: &[BindMount],
    scratch: &Path,
    exists: impl Fn(&Path) -> bool,
) -> String {
    let mut overlays: Vec<PathBuf> = Vec::new();
    for m in mounts {
        if exists(&m.target) {
            continue;
        }
        let mut ancestor = m.target.parent();
        while let Some(a) = ancestor {
            if exists(a) {
                break;
            }
            ancestor = a.parent();
        }
        let a = ancestor.unwrap_or(Path::new("/")).to_path_buf();
        if !overlays.contains(&a) {
            overlays.push(a);
        }
    }
    overlays.sort_by_key(|p| p.components().count());
    let mut lines = vec!["set -e".to_owned()];
    for (i, dir) in overlays.iter().enumerate() {
        let upper = scratch.join(format!("overlay-{i}/upper"));
        let work = scratch.join(format!("overlay-{i}/work"));
        let dir = dir.display().to_string();
        lines.push(format!(
            "mkdir -p {u} {w}",
            u = shell_quote(&upper.display().to_string()),
            w = shell_quote(&work.display().to_string())
        ));
        lines.push(format!(
            "mount -t overlay overlay -o {opts} {d}",
            opts = shell_quote(&format!(
                "lowerdir={dir},upperdir={},workdir={}",
                upper.display(),
                work.display()
            )),
            d = shell_quote(&dir)
        ));
    }
    let mut ordered: Vec<&BindMount> = mounts.iter().collect();
    ordered.sort_by_key(|m| m.target.components().count());
    for m in ordered {
        let target = shell_quote(&m.target.display().to_string());
        if m.file {
            lines.push(format!(
                "mkdir -p \"$(dirname {target})\"; [ -e {target} ] || touch {target}"
            ));
        } else {
            lines.push(format!("mkdir -p {target}"));
        }
        lines.push(format!(
            "mount --bind {} {target}",
            shell_quote(&m.source.display().to_string())
        ));
    }
    lines.push("exec \"$@\"".into());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binaries() -> Binaries {
        Binaries {
            eg_operator: Some("/bin/eg-operator".into()),
            envoy: Some("/opt/envoy".into()),
            echo_basic: None,
            eg_echo: Some("/bin/eg-echo".into()),
            coredns_stand_in: Some("/bin/eg-echo".into()),
        }
    }

    fn place() -> PodPlace {
        PodPlace {
            pod_ip: Ipv4Addr::new(10, 214, 3, 7),
            host_ip: "127.0.0.1".into(),
            node_name: "node-a".into(),
            apiserver: Some(("127.0.0.1".into(), 443)),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "cp-1", "namespace": "prod", "uid": "u-1",
                         "labels": {"app": "eg"}},
            "spec": spec
        }))
        .expect("pod")
    }

    #[test]
    fn images_map_to_local_binaries_and_commands_to_their_entrypoint() {
        let p = pod(json!({"containers": [
            {"name": "controller", "image": "quay.io/eg-operator/eg-operator:v0.1.0",
             "args": ["controller", "--config=/etc/envoy-gateway/config.yaml"]},
            {"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.40.0",
             "command": ["/usr/local/bin/envoy"], "args": ["--config-path", "/etc/envoy/config/b.json"]}
        ]}));
        let plans = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect("plan");
        assert_eq!(
            plans[0].argv,
            [
                "/bin/eg-operator",
                "controller",
                "--config=/etc/envoy-gateway/config.yaml"
            ]
        );
        assert_eq!(
            plans[1].argv,
            ["/opt/envoy", "--config-path", "/etc/envoy/config/b.json"]
        );
    }

    #[test]
    fn unknown_images_and_foreign_commands_are_refused_by_name() {
        let p = pod(json!({"containers": [{"name": "x", "image": "nginx:1.27"}]}));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("nginx");
        assert_eq!(err.category(), "unknown_image");
        assert!(err.to_string().contains("nginx:1.27"), "{err}");
        let p = pod(json!({"containers": [
            {"name": "x", "image": "envoyproxy/envoy:v1", "command": ["sh", "-c", "envoy"]}
        ]}));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("sh");
        assert_eq!(err.category(), "unknown_command");
        let p = pod(
            json!({"containers": [{"name": "x", "image": "gcr.io/k8s/gateway-api/echo-basic:v1"}]}),
        );
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default())
            .expect_err("no echo-basic binary configured");
        assert_eq!(err.category(), "unknown_image");
    }

    #[test]
    fn coredns_runs_the_stream_echo_stand_in_whatever_its_args() {
        let p = pod(json!({"containers": [{"name": "coredns",
            "image": "registry.k8s.io/coredns/coredns:v1.12.2", "args": ["-conf", "/root/Corefile"]}]}));
        let plan = &plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect("plan")[0];
        assert_eq!(
            plan.argv,
            ["/bin/eg-echo", "coredns-stand-in", "0.0.0.0:53", "--stream"]
        );
    }

    #[test]
    fn image_repository_strips_tags_and_digests_but_not_registry_ports() {
        assert_eq!(image_repository("reg:5000/a/b:v1"), "reg:5000/a/b");
        assert_eq!(image_repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(image_repository("a/b@sha256:abc"), "a/b");
        assert_eq!(image_repository("a/b:v1@sha256:abc"), "a/b");
    }

    #[test]
    fn env_resolves_field_refs_keys_and_expansions_in_order() {
        let p = pod(json!({"containers": [{
            "name": "c", "image": "eg-e2e/eg-echo:dev",
            "command": ["eg-echo"], "args": ["$(POD_NAME)", "$(POD_IP):8080", "$$(POD_IP)", "$(NOPE)"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k", "optional": true}}},
                {"name": "GREETING", "value": "hi $(POD_NAME)"}
            ]
        }]}));
        let mut sources = EnvSources::default();
        sources
            .secrets
            .insert(("s".into(), "pw".into()), "hunter2".into());
        let plan = &plan_pod(&p, &binaries(), &place(), &sources).expect("plan")[0];
        let env: BTreeMap<_, _> = plan.env.iter().cloned().collect();
        assert_eq!(env["POD_NAME"], "cp-1");
        assert_eq!(env["NAMESPACE"], "prod");
        assert_eq!(env["POD_IP"], "10.214.3.7");
        assert_eq!(env["APP"], "eg");
        assert_eq!(env["PASSWORD"], "hunter2");
        assert_eq!(env["MODE"], "");
        assert_eq!(env["GREETING"], "hi cp-1");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
        assert_eq!(env["HOSTNAME"], "cp-1");
        assert_eq!(
            plan.argv,
            [
                "/bin/eg-echo",
                "cp-1",
                "10.214.3.7:8080",
                "$(POD_IP)",
                "$(NOPE)"
            ]
        );
    }

    #[test]
    fn a_missing_required_key_or_unknown_field_names_the_env_entry() {
        let p = pod(json!({"containers": [{
            "name": "c", "image": "eg-e2e/eg-echo:dev",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        }]}));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("missing");
        assert!(err.to_string().contains("env[0] (X)"), "{err}");
        let p = pod(json!({"containers": [{
            "name": "c", "image": "eg-e2e/eg-echo:dev",
            "env": [{"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]
        }]}));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("field");
        assert!(err.to_string().contains("status.phase"), "{err}");
    }

    #[test]
    fn probes_resolve_named_ports_and_take_kubernetes_defaults() {
        let p = pod(json!({"containers": [{
            "name": "c", "image": "quay.io/eg-operator/eg-operator:v1",
            "ports": [{"name": "health", "containerPort": 8081}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}},
            "lifecycle": {"preStop": {"httpGet": {"path": "/shutdown", "port": 19002}}}
        }]}));
        let plan = &plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect("plan")[0];
        let probe = plan.readiness.as_ref().expect("probe");
        assert_eq!(
            probe.action,
            ProbeAction::Http {
                port: 8081,
                path: "/readyz".into(),
                https: false
            }
        );
        assert_eq!(probe.period, Duration::from_secs(10));
        assert_eq!(probe.failure_threshold, 3);
        assert_eq!(plan.pre_stop, Some((19002, "/shutdown".into())));

        let p = pod(json!({"containers": [{
            "name": "c", "image": "quay.io/eg-operator/eg-operator:v1",
            "readinessProbe": {"httpGet": {"path": "/", "port": "nope"}}
        }]}));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("port");
        assert!(
            err.to_string().contains("readinessProbe.httpGet.port"),
            "{err}"
        );
    }

    #[test]
    fn native_sidecars_come_first_and_other_init_containers_are_refused() {
        let p = pod(json!({
            "initContainers": [{"name": "i", "image": "eg-e2e/eg-echo:dev", "restartPolicy": "Always"}],
            "containers": [{"name": "c", "image": "eg-e2e/eg-echo:dev"}]
        }));
        let plans = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect("plan");
        let names: Vec<_> = plans.iter().map(|p| (p.name.as_str(), p.sidecar)).collect();
        assert_eq!(names, [("i", true), ("c", false)]);
        let p = pod(json!({
            "initContainers": [{"name": "i", "image": "eg-e2e/eg-echo:dev"}],
            "containers": [{"name": "c", "image": "eg-e2e/eg-echo:dev"}]
        }));
        let err = plan_pod(&p, &binaries(), &place(), &EnvSources::default()).expect_err("init");
        assert_eq!(err.category(), "unsupported");
    }

    #[test]
    fn restart_policy_decides_restarts_and_sidecars_always_restart() {
        assert!(restarts("Always", false, true));
        assert!(restarts("OnFailure", false, false));
        assert!(!restarts("OnFailure", false, true));
        assert!(!restarts("Never", false, false));
        assert!(restarts("Never", true, true));
    }

    #[test]
    fn expand_handles_escapes_and_unterminated_references() {
        let vars = BTreeMap::from([("A", "1")]);
        assert_eq!(expand("$(A)-$$-$(A", &vars), "1-$-$(A");
        assert_eq!(expand("x$", &vars), "x$");
    }

    #[test]
    fn launch_script_overlays_missing_parents_once_and_mounts_shallow_first() {
        let exists = |p: &Path| matches!(p.to_str(), Some("/" | "/etc" | "/run" | "/etc/hosts"));
        let mounts = vec![
            BindMount {
                source: "/s/certs".into(),
                target: "/etc/envoy-gateway/certs".into(),
                file: false,
            },
            BindMount {
                source: "/s/config".into(),
                target: "/etc/envoy-gateway".into(),
                file: false,
            },
            BindMount {
                source: "/s/token".into(),
                target: "/run/secrets/kubernetes.io/serviceaccount".into(),
                file: false,
            },
            BindMount {
                source: "/s/hosts".into(),
                target: "/etc/hosts".into(),
                file: true,
            },
        ];
        let script = launch_script(&mounts, Path::new("/scratch"), exists);
        assert_eq!(script.matches("mount -t overlay").count(), 2, "{script}");
        assert!(
            script.contains("lowerdir=/etc,upperdir=/scratch/overlay-"),
            "{script}"
        );
        assert!(script.contains("lowerdir=/run,"), "{script}");
        let config = script.find("'/etc/envoy-gateway'\n").expect("config mount");
        let certs = script
            .find("'/etc/envoy-gateway/certs'\n")
            .expect("certs mount");
        assert!(
            config < certs,
            "parents are mounted before children:\n{script}"
        );
        assert!(script.ends_with("exec \"$@\""));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
