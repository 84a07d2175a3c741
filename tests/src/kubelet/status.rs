//! Pod and Node status, with no I/O: what the kubelet observed of a pod's processes becomes its
//! `status` (phase, podIP(s), hostIP(s), conditions, containerStatuses) the way a kubelet reports
//! it, keeping a condition's `lastTransitionTime` while its status does not change so that an
//! unchanged pod computes an unchanged status (and costs no write). The Node and its Lease are
//! built here too.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::PodStatus;
use serde_json::{Value, json};

/// What a container's process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        started_at: String,
        finished_at: String,
    },
}

/// One container as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerObservation {
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub ready: bool,
    pub restart_count: u32,
    /// A native sidecar, reported under `initContainerStatuses`.
    pub sidecar: bool,
}

/// A pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObservation {
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: String,
    pub start_time: String,
    /// `Always` pods never reach Succeeded or Failed.
    pub restart_always: bool,
    pub containers: Vec<ContainerObservation>,
}

fn phase(obs: &PodObservation) -> &'static str {
    let started = |c: &ContainerObservation| !matches!(c.state, ContainerState::Waiting { .. });
    if obs.containers.is_empty() || !obs.containers.iter().all(started) {
        return "Pending";
    }
    let terminated: Vec<i32> = obs
        .containers
        .iter()
        .filter_map(|c| match c.state {
            ContainerState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    if obs.restart_always || terminated.len() < obs.containers.len() {
        "Running"
    } else if terminated.iter().all(|c| *c == 0) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// The pod's `status` as JSON for a merge patch; `previous` supplies transition times.
pub fn pod_status(obs: &PodObservation, previous: Option<&PodStatus>, now: &str) -> Value {
    let all_ready = !obs.containers.is_empty() && obs.containers.iter().all(|c| c.ready);
    let initialized = true;
    let conditions: Vec<Value> = [
        ("PodScheduled", true),
        ("Initialized", initialized),
        ("PodReadyToStartContainers", obs.pod_ip.is_some()),
        ("ContainersReady", all_ready),
        ("Ready", all_ready),
    ]
    .into_iter()
    .map(|(type_, ok)| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.to_owned());
        let mut c = json!({"type": type_, "status": status, "lastTransitionTime": since});
        if !ok && matches!(type_, "ContainersReady" | "Ready") {
            c["reason"] = json!("ContainersNotReady");
        }
        c
    })
    .collect();
    let (sidecars, containers): (Vec<&ContainerObservation>, Vec<&ContainerObservation>) =
        obs.containers.iter().partition(|c| c.sidecar);
    let report = |c: &ContainerObservation| {
        let state = match &c.state {
            ContainerState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            ContainerState::Running { started_at } => {
                json!({"running": {"startedAt": started_at}})
            }
            ContainerState::Terminated {
                exit_code,
                started_at,
                finished_at,
            } => json!({"terminated": {
                "exitCode": exit_code,
                "reason": if *exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": started_at,
                "finishedAt": finished_at
            }}),
        };
        json!({
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "containerID": format!("process://{}", c.name),
            "ready": c.ready,
            "started": matches!(c.state, ContainerState::Running { .. }),
            "restartCount": c.restart_count,
            "state": state
        })
    };
    let containers: Vec<Value> = containers.into_iter().map(report).collect();
    let sidecars: Vec<Value> = sidecars.into_iter().map(report).collect();
    let mut status = json!({
        "phase": phase(obs),
        "hostIP": obs.host_ip,
        "hostIPs": [{"ip": obs.host_ip}],
        "startTime": obs.start_time,
        "conditions": conditions,
        "containerStatuses": containers
    });
    if !sidecars.is_empty() {
        status["initContainerStatuses"] = json!(sidecars);
    }
    if let Some(ip) = obs.pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status
}

/// Whether `computed` (from [`pod_status`]) says something `current` does not.
pub fn status_differs(computed: &Value, current: Option<&PodStatus>) -> bool {
    let current = current
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let Some(fields) = computed.as_object() else {
        return true;
    };
    fields.iter().any(|(k, v)| current.get(k) != Some(v))
}

/// The Node object this kubelet registers (Ready, untainted, with capacity), its kubelet server
/// at `address:port`.
pub fn node(
    name: &str,
    address: &str,
    port: u16,
    pod_cidr: &str,
    now: &str,
    version: &str,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "eg-e2e/process-kubelet": "true"
        }},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": node_status(address, port, now, version)
    })
}

/// The Node's `status`, heartbeat time `now`. The apiserver reaches the kubelet server at the
/// first address of the types in its `--kubelet-preferred-address-types`, on `port`.
pub fn node_status(address: &str, port: u16, now: &str, version: &str) -> Value {
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"});
    json!({
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": address},
                      {"type": "Hostname", "address": "localhost"}],
        "capacity": resources.clone(),
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "eg-e2e process kubelet",
            "containerRuntimeVersion": "process://0", "kubeletVersion": version,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"
        }
    })
}

/// The node's Lease in `kube-node-lease`, renewed at `now`.
pub fn node_lease(name: &str, now_micro: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";

    fn container(state: ContainerState, ready: bool) -> ContainerObservation {
        ContainerObservation {
            name: "c".into(),
            image: "img".into(),
            state,
            ready,
            restart_count: 0,
            sidecar: false,
        }
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            started_at: T0.into(),
        }
    }

    fn obs(containers: Vec<ContainerObservation>, always: bool) -> PodObservation {
        PodObservation {
            pod_ip: Some(Ipv4Addr::new(10, 214, 0, 2)),
            host_ip: "127.0.0.1".into(),
            start_time: T0.into(),
            restart_always: always,
            containers,
        }
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn phase_and_readiness_follow_the_containers() {
        let waiting = ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
        let s = pod_status(&obs(vec![container(waiting, false)], true), None, T0);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(condition(&s, "Ready")["status"], "False");

        let s = pod_status(&obs(vec![container(running(), true)], true), None, T0);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.214.0.2");
        assert_eq!(condition(&s, "Ready")["status"], "True");
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"]["startedAt"],
            T0
        );

        let done = |code| ContainerState::Terminated {
            exit_code: code,
            started_at: T0.into(),
            finished_at: T1.into(),
        };
        let s = pod_status(&obs(vec![container(done(0), false)], false), None, T0);
        assert_eq!(s["phase"], "Succeeded");
        let s = pod_status(&obs(vec![container(done(2), false)], false), None, T0);
        assert_eq!(s["phase"], "Failed");
        let s = pod_status(&obs(vec![container(done(2), false)], true), None, T0);
        assert_eq!(s["phase"], "Running");
    }

    #[test]
    fn sidecars_are_reported_as_init_containers() {
        let mut sidecar = container(running(), true);
        sidecar.sidecar = true;
        sidecar.name = "shutdown-manager".into();
        let s = pod_status(
            &obs(vec![sidecar, container(running(), true)], true),
            None,
            T0,
        );
        assert_eq!(s["initContainerStatuses"][0]["name"], "shutdown-manager");
        assert_eq!(s["containerStatuses"].as_array().map(Vec::len), Some(1));
        assert_eq!(s["phase"], "Running");
    }

    #[test]
    fn an_unchanged_pod_keeps_its_transition_times_and_needs_no_write() {
        let o = obs(vec![container(running(), true)], true);
        let first = pod_status(&o, None, T0);
        let written: PodStatus = serde_json::from_value(first.clone()).expect("status");
        let again = pod_status(&o, Some(&written), T1);
        assert_eq!(condition(&again, "Ready")["lastTransitionTime"], T0);
        assert!(!status_differs(&again, Some(&written)));

        let not_ready = obs(vec![container(running(), false)], true);
        let changed = pod_status(&not_ready, Some(&written), T1);
        assert_eq!(condition(&changed, "Ready")["lastTransitionTime"], T1);
        assert!(status_differs(&changed, Some(&written)));
        assert!(status_differs(&changed, None));
    }

    #[test]
    fn node_is_ready_untainted_and_has_capacity() {
        let n = node("n1", "10.214.3.1", 41234, "10.214.3.0/24", T0, "v1.36.3");
        let ready = n["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .expect("Ready");
        assert_eq!(ready["status"], "True");
        assert!(n["spec"].get("taints").is_none());
        assert_eq!(n["status"]["capacity"]["pods"], "250");
        assert_eq!(
            n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            41234
        );
        assert_eq!(n["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.214.3.1");
        let lease = node_lease("n1", "2026-01-01T00:00:00.000000Z");
        assert_eq!(lease["spec"]["holderIdentity"], "n1");
    }
}
