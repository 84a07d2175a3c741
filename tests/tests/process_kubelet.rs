//! The whole product the way a cluster runs it, on the process kubelet: the operator (a real
//! `eg-operator operator` process) reconciles an EnvoyGateway into a control-plane Deployment,
//! whose pod the kubelet runs as a real `eg-operator controller` (config and certificates from
//! mounted volumes, the apiserver through its service account token); that control plane makes
//! the Gateway's proxy Deployment, whose pod runs the real Envoy with its shutdown-manager
//! sidecar and gets its configuration over mTLS xDS from the control-plane pod; a backend
//! Deployment's pod serves the request the test sends to the proxy pod's address.
//!
//! Needs root (network namespaces, mounts), like every test host of this harness.

use std::path::Path;
use std::time::{Duration, Instant};

use eg_e2e::backend::Echo;
use eg_e2e::kubelet::plan::Binaries;
use eg_e2e::kubelet::{Kubelet, KubeletConfig, apiserver_address};
use eg_e2e::manifests::apply;
use eg_e2e::process::{Lifetime, ManagedProcess};
use eg_e2e::{eg_condition, eventually, shared_cluster, tools, with_temp_namespace};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, LogParams};
use kube::{Api, Client};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(120);

/// Prints every pod of `ns` with its status and the tail of its containers' logs.
async fn dump_pods(client: &Client, ns: &str, state: &Path) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for pod in pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        eprintln!(
            "---- pod {:?}: {}",
            pod.metadata.name,
            serde_json::to_string(&pod.status).unwrap_or_default()
        );
    }
    let Ok(dirs) = std::fs::read_dir(state.join("pods")) else {
        return;
    };
    for dir in dirs.flatten() {
        for log in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if log.path().extension().is_some_and(|e| e == "log") {
                eprintln!(
                    "---- {}:\n{}",
                    log.path().display(),
                    eg_e2e::process::tail(&log.path(), 30)
                );
            }
        }
    }
}

/// The Ready pod IPs of the pods matching `selector`.
async fn ready_pod_ips(client: &Client, ns: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| status.pod_ip.clone()).flatten()
        })
        .collect()
}

/// The backend pod's log through `pods/log`, which the apiserver proxies to the kubelet server:
/// eg-echo prints `listening on ADDR` once it serves.
async fn read_logs_through_the_apiserver(pods: &Api<Pod>, pod: &str) -> anyhow::Result<()> {
    const LINE: &str = "listening on 0.0.0.0:8080";
    let all = pods.logs(pod, &LogParams::default()).await?;
    assert!(all.lines().any(|l| l == LINE), "log of {pod}: {all:?}");
    let named = LogParams {
        container: Some("echo".into()),
        tail_lines: Some(1),
        timestamps: true,
        ..LogParams::default()
    };
    let last = pods.logs(pod, &named).await?;
    let (time, text) = last
        .trim_end()
        .split_once(' ')
        .unwrap_or_else(|| panic!("a timestamped line: {last:?}"));
    assert_eq!(text, LINE, "{last:?}");
    let time: k8s_openapi::jiff::Timestamp = time.parse()?;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(time);
    assert!(age.is_positive() && age.as_secs() < 600, "{last:?}");
    let later = LogParams {
        since_time: Some(time.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))?),
        ..LogParams::default()
    };
    assert_eq!(
        pods.logs(pod, &later).await?,
        "",
        "nothing since after the line"
    );
    let unknown = pods
        .logs(
            pod,
            &LogParams {
                container: Some("nope".into()),
                ..LogParams::default()
            },
        )
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    Ok(())
}

#[tokio::test]
async fn envoy_gateway_runs_as_pods_and_serves_a_request() {
    let cluster = shared_cluster();
    let started = Instant::now();
    let state = tempfile::tempdir().expect("state dir");
    let binaries = Binaries {
        eg_operator: Some(tools::eg_operator_bin().expect("eg-operator binary")),
        envoy: Some(tools::envoy_bin().expect("envoy")),
        echo_basic: None,
        eg_echo: Some(env!("CARGO_BIN_EXE_eg-echo").into()),
        coredns_stand_in: None,
    };
    let operator_bin = binaries.eg_operator.clone().expect("set above");
    let kubelet = Kubelet::start(
        cluster.client(),
        KubeletConfig {
            node_name: "process-kubelet".into(),
            binaries,
            state_dir: state.path().join("pods"),
            apiserver: apiserver_address(cluster.server()).expect("apiserver address"),
        },
    )
    .await
    .expect("kubelet starts");

    let state_dir = state.path().to_owned();
    with_temp_namespace(|client, ns| async move {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes.get("process-kubelet").await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "the node registers Ready");

        // The operator, as a process on this machine with the admin kubeconfig.
        let mut operator_cmd = std::process::Command::new(&operator_bin);
        operator_cmd
            .args(["operator", "--metrics-address", "127.0.0.1:0"])
            .args(["--leader-elect", "false"])
            .env("KUBECONFIG", cluster.kubeconfig_path());
        let logs = tempfile::tempdir()?;
        let _operator = ManagedProcess::spawn(
            "eg-operator operator",
            operator_cmd,
            &logs.path().join("operator.log"),
            Lifetime::Owned,
        )?;

        let class = format!("kubelet-{ns}");
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "operator.gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyGateway",
                "metadata": {"name": "env"},
                "spec": {
                    "gatewayClassName": class,
                    "watchNamespaces": [ns],
                    "controlPlane": {"replicas": 1},
                    "proxy": {"replicas": 1}
                }
            }),
        )
        .await;
        let egs: Api<eg_crds::EnvoyGateway> = Api::namespaced(client.clone(), &ns);
        eventually(
            "the EnvoyGateway Ready with its control-plane pod running",
            LIMIT,
            || async {
                let eg = egs.get("env").await.ok()?;
                eg_condition(&eg, "Ready")
                    .filter(|c| c.0 == "True")
                    .map(|_| ())
            },
        )
        .await;
        let to_ready = started.elapsed();

        // The backend, as a Deployment.
        let labels = json!({"app": "echo"});
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "echo"},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                        "name": "echo", "image": "eg-e2e/eg-echo:dev",
                        "command": ["eg-echo"],
                        "args": ["$(POD_NAME)", "0.0.0.0:8080"],
                        "env": [{"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}
                    }]}}}
            }),
        )
        .await;
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}
            }),
        )
        .await;
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw"},
                "spec": {"gatewayClassName": class,
                         "listeners": [{"name": "http", "protocol": "HTTP", "port": 8080}]}
            }),
        )
        .await;
        apply(
            &client,
            Some(&ns),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "echo"},
                "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["shop.example.com"],
                         "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}
            }),
        )
        .await;

        let selector = eg_operator::fleet::build::selector(&ns, "gw")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let served = tokio::time::timeout(LIMIT, eventually("a request served through the proxy pod", LIMIT * 2, || {
            let (client, ns, http, selector) =
                (client.clone(), ns.clone(), http.clone(), selector.clone());
            async move {
                let ip = ready_pod_ips(&client, &ns, &selector).await.pop()?;
                let response = http
                    .get(format!("http://{ip}:8080/hello"))
                    .header("host", "shop.example.com")
                    .send()
                    .await
                    .ok()?;
                if !response.status().is_success() {
                    return None;
                }
                response.json().await.ok()
            }
        }))
        .await;
        let Ok(echo) = served else {
            dump_pods(&client, &ns, state_dir.as_path()).await;
            anyhow::bail!("no request served through the proxy pod within {LIMIT:?}");
        };
        let echo: Echo = echo;
        assert!(echo.backend.starts_with("echo-"), "{echo:?}");
        assert_eq!(echo.path, "/hello");
        eprintln!(
            "process kubelet e2e: environment Ready after {to_ready:?}, first request served after {:?}",
            started.elapsed()
        );

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let backend = pods
            .list(&ListParams::default().labels("app=echo"))
            .await?
            .items
            .pop()
            .and_then(|p| p.metadata.name)
            .expect("backend pod");
        read_logs_through_the_apiserver(&pods, &backend).await?;

        // Deleting a pod stops its processes and removes it; the Deployment replaces it.
        pods.delete(&backend, &DeleteParams::default()).await?;
        eventually("the deleted pod gone and replaced", LIMIT, || async {
            let list = pods
                .list(&ListParams::default().labels("app=echo"))
                .await
                .ok()?;
            let names: Vec<String> = list.items.into_iter().filter_map(|p| p.metadata.name).collect();
            (!names.contains(&backend) && names.len() == 1).then_some(())
        })
        .await;
        Ok::<(), anyhow::Error>(())
    })
    .await;
    drop(kubelet);
}
