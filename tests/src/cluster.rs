//! The real Kubernetes control plane of the tests: embedded etcd, kube-apiserver and
//! kube-controller-manager from `hack/testcluster`, on free loopback ports, with client-certificate
//! auth and RBAC like a production cluster. [`shared_cluster`] starts one per test binary;
//! [`ControlPlane`] is also what `make cluster` runs, detached.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use serde::Deserialize;

use crate::pki::ClusterPki;
use crate::process::{Lifetime, ManagedProcess, ProcessError};
use crate::tools::{self, ToolError};
use crate::{LOOPBACK, free_port};

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "eg-e2e";

/// Errors starting or using the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    #[error("{file}: document {index}: {source}")]
    CrdYaml {
        file: PathBuf,
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{component} exited before the control plane was ready ({status}); log tail:\n{log}")]
    Exited {
        component: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("{what} not ready after {after:?}{detail}")]
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
}

impl ClusterError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Tool(_) => "tool",
            ClusterError::Process(_) => "process",
            ClusterError::Io { .. } => "io",
            ClusterError::Pki(_) => "pki",
            ClusterError::Kubeconfig(_) => "kubeconfig",
            ClusterError::Kube(_) => "kube",
            ClusterError::CrdYaml { .. } => "crd_yaml",
            ClusterError::Exited { .. } => "exited",
            ClusterError::Timeout { .. } => "timeout",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Directory for certificates, etcd data, logs and the kubeconfig.
    pub state_dir: PathBuf,
    /// Owned processes stop with their starter (tests); detached ones outlive it (`make cluster`).
    pub lifetime: Lifetime,
    /// Also run kube-controller-manager (namespace, deployment, garbage-collector, ... controllers).
    pub controller_manager: bool,
}

/// A running etcd + kube-apiserver (+ kube-controller-manager).
#[derive(Debug)]
pub struct ControlPlane {
    pub state_dir: PathBuf,
    pub kubeconfig_path: PathBuf,
    pub server: String,
    processes: Vec<ManagedProcess>,
}

impl ControlPlane {
    /// Starts the processes and waits until the apiserver reports ready. CRDs are not installed
    /// here; see [`install_project_crds`].
    pub async fn start(opts: ControlPlaneOptions) -> Result<Self, ClusterError> {
        let ControlPlaneOptions {
            state_dir,
            lifetime,
            controller_manager,
        } = opts;
        let bin = tools::testcluster_bin()?;
        std::fs::create_dir_all(&state_dir).map_err(io_err(&state_dir))?;
        let pki = ClusterPki::generate()?;
        let file = |name: &str, contents: &str| -> Result<String, ClusterError> {
            let path = state_dir.join(name);
            std::fs::write(&path, contents).map_err(io_err(&path))?;
            Ok(path.display().to_string())
        };
        let ca_crt = file("ca.crt", &pki.ca.cert_pem)?;
        let ca_key = file("ca.key", &pki.ca.key_pem)?;
        let api_crt = file("apiserver.crt", &pki.apiserver.cert_pem)?;
        let api_key = file("apiserver.key", &pki.apiserver.key_pem)?;
        let sa_key = file("service-account.key", &pki.service_account_key_pem)?;
        let sa_pub = file("service-account.pub", &pki.service_account_pub_pem)?;

        let etcd_port = free_port(LOOPBACK).map_err(io_err(&state_dir))?;
        let etcd_peer_port = free_port(LOOPBACK).map_err(io_err(&state_dir))?;
        let api_port = free_port(LOOPBACK).map_err(io_err(&state_dir))?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = kubeconfig_yaml(&server, &pki);
        let kubeconfig_path = state_dir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig).map_err(io_err(&kubeconfig_path))?;

        let command = |role: &str| {
            let mut cmd = Command::new(&bin);
            cmd.arg(role);
            if lifetime == Lifetime::Owned {
                cmd.env("TESTCLUSTER_EXIT_WITH_PARENT", "1");
            }
            cmd
        };
        let mut processes = Vec::new();

        let mut etcd = command("etcd");
        etcd.arg(format!("--data-dir={}", state_dir.join("etcd").display()))
            .arg(format!("--listen-client=127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer=127.0.0.1:{etcd_peer_port}"));
        if lifetime == Lifetime::Owned {
            // The shared test cluster is never dropped; etcd, the last to stop, cleans up.
            etcd.arg(format!("--remove-on-exit={}", state_dir.display()));
        }
        processes.push(ManagedProcess::spawn(
            "etcd",
            etcd,
            &state_dir.join("etcd.log"),
            lifetime,
        )?);

        let mut apiserver = command("kube-apiserver");
        apiserver.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={api_crt}"),
            format!("--tls-private-key-file={api_key}"),
            format!("--client-ca-file={ca_crt}"),
            format!("--cert-dir={}", state_dir.join("apiserver-certs").display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={sa_pub}"),
            format!("--service-account-signing-key-file={sa_key}"),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            // The process kubelet's server (pods/log) listens on the node's InternalIP; its
            // Hostname is `localhost`, which the default order would try first.
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            // One client, a few requests a second: fairness queues only add start-up time.
            "--enable-priority-and-fairness=false".into(),
        ]);
        processes.push(ManagedProcess::spawn(
            "kube-apiserver",
            apiserver,
            &state_dir.join("kube-apiserver.log"),
            lifetime,
        )?);

        if controller_manager {
            let mut kcm = command("kube-controller-manager");
            kcm.args([
                format!("--kubeconfig={}", kubeconfig_path.display()),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={ca_crt}"),
                format!("--cluster-signing-cert-file={ca_crt}"),
                format!("--cluster-signing-key-file={ca_key}"),
                "--use-service-account-credentials=false".into(),
            ]);
            processes.push(ManagedProcess::spawn(
                "kube-controller-manager",
                kcm,
                &state_dir.join("kube-controller-manager.log"),
                lifetime,
            )?);
        }

        let mut control_plane = Self {
            state_dir,
            kubeconfig_path,
            server,
            processes,
        };
        if let Err(e) = control_plane.wait_ready(Duration::from_secs(90)).await {
            // Detached processes would otherwise outlive a failed start.
            for p in control_plane.processes.iter_mut().rev() {
                p.stop(Duration::from_secs(5));
            }
            return Err(e);
        }
        Ok(control_plane)
    }

    /// PIDs of the running processes, by component name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// A client configuration for the admin user.
    pub async fn kube_config(&self) -> Result<Config, ClusterError> {
        let text = std::fs::read_to_string(&self.kubeconfig_path)
            .map_err(io_err(&self.kubeconfig_path))?;
        let kubeconfig = Kubeconfig::from_yaml(&text)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let config = self.kube_config().await?;
        let client = Client::try_from(config)?;
        let start = Instant::now();
        loop {
            for p in &mut self.processes {
                if let Some(status) = p.exited() {
                    return Err(ClusterError::Exited {
                        component: p.name().to_owned(),
                        status,
                        log: p.log_tail(40),
                    });
                }
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| ClusterError::Kube(kube::Error::HttpError(e)))?;
            let last = match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if start.elapsed() > limit {
                return Err(ClusterError::Timeout {
                    what: "kube-apiserver /readyz".into(),
                    after: limit,
                    detail: format!(": {last}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL) in reverse start order and removes the state.
    pub fn stop(mut self) {
        for p in self.processes.iter_mut().rev() {
            p.stop(Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn kubeconfig_yaml(server: &str, pki: &ClusterPki) -> String {
    use base64::Engine as _;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: eg-testcluster\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: eg-admin\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\ncontexts:\n- name: eg-testcluster\n  context:\n    cluster: eg-testcluster\n    user: eg-admin\n    namespace: default\ncurrent-context: eg-testcluster\n",
        ca = encode(pki.ca.cert_pem.as_bytes()),
        crt = encode(pki.admin.cert_pem.as_bytes()),
        key = encode(pki.admin.key_pem.as_bytes()),
    )
}

/// Reads every CustomResourceDefinition in the YAML files of `dir` (other kinds are skipped).
pub fn read_crds_dir(dir: &Path) -> Result<Vec<CustomResourceDefinition>, ClusterError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io_err(&file))?;
        for (index, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value =
                serde_json::Value::deserialize(doc).map_err(|source| ClusterError::CrdYaml {
                    file: file.clone(),
                    index,
                    source,
                })?;
            if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(value).map_err(|e| ClusterError::CrdYaml {
                    file: file.clone(),
                    index,
                    source: serde::de::Error::custom(e),
                })?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

/// Server-side applies `crds` and waits until each is Established.
pub async fn install_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
) -> Result<(), ClusterError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    let limit = Duration::from_secs(30);
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(limit, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(ClusterError::Timeout {
                    what: format!("CRD {name}"),
                    after: limit,
                    detail: format!(": {e}"),
                });
            }
            Err(_) => {
                return Err(ClusterError::Timeout {
                    what: format!("CRD {name} Established"),
                    after: limit,
                    detail: String::new(),
                });
            }
        }
    }
    Ok(())
}

/// Installs this project's CRDs, the Gateway API CRDs (experimental channel) and upstream Envoy
/// Gateway's CRDs (EnvoyProxy, policies), as users have them.
pub async fn install_project_crds(client: &Client) -> Result<usize, ClusterError> {
    let mut crds = eg_crds::all();
    crds.extend(read_crds_dir(&tools::gateway_api_crds_dir()?)?);
    crds.extend(read_crds_dir(&tools::envoy_gateway_crds_dir()?)?);
    install_crds(client, &crds).await?;
    Ok(crds.len())
}

/// The control plane shared by every test of one test binary.
#[derive(Debug)]
pub struct TestCluster {
    control_plane: ControlPlane,
    config: Config,
    /// Wall time from start to CRDs Established.
    pub startup: Duration,
}

impl TestCluster {
    /// A new client; each test runtime needs its own, since a client's connections live on the
    /// runtime that created them.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("client from a valid test kubeconfig")
    }

    /// The admin client configuration, e.g. to build a client with extra layers.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.control_plane.kubeconfig_path
    }

    pub fn server(&self) -> &str {
        &self.control_plane.server
    }

    /// Log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.control_plane
            .state_dir
            .join(format!("{component}.log"))
    }
}

/// Starts the shared control plane on first use and returns it. Blocks; safe to call from any
/// test, async or not. Panics with the start-up error, which then fails every test that needs it.
pub fn shared_cluster() -> &'static TestCluster {
    static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
    let result = SHARED.get_or_init(|| {
        // A dedicated thread and runtime: the caller may already be inside a runtime, and the
        // cluster must outlive any one test's runtime.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(start_shared()).map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("test cluster start-up panicked".into()))
    });
    match result {
        Ok(cluster) => cluster,
        Err(e) => panic!("test control plane failed to start: {e}"),
    }
}

async fn start_shared() -> Result<TestCluster, ClusterError> {
    let started = Instant::now();
    // Ports are reserved by binding and releasing them, so another process (an Envoy of a test
    // binary running beside this one) can take one before the apiserver binds it: start again
    // on fresh ports when that is what went wrong.
    let mut attempt = 0;
    let control_plane = loop {
        attempt += 1;
        let state_dir = tempfile::Builder::new()
            .prefix("eg-testcluster-")
            .tempdir()
            .map_err(io_err(&std::env::temp_dir()))?
            // Removed by etcd when the test binary exits (see --remove-on-exit).
            .keep();
        match ControlPlane::start(ControlPlaneOptions {
            state_dir,
            lifetime: Lifetime::Owned,
            controller_manager: true,
        })
        .await
        {
            Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                eprintln!("eg-e2e: control plane port taken, starting again: {e}");
            }
            other => break other?,
        }
    };
    let config = control_plane.kube_config().await?;
    let client = Client::try_from(config.clone())?;
    install_project_crds(&client).await?;
    let startup = started.elapsed();
    eprintln!(
        "eg-e2e: control plane at {} ready with CRDs in {:.2}s",
        control_plane.server,
        startup.as_secs_f64()
    );
    Ok(TestCluster {
        control_plane,
        config,
        startup,
    })
}

/// Runs `test` with a fresh namespace (`e2e-xxxxx`) and a client, then deletes the namespace.
/// A panic or error inside the test fails the test after cleanup.
pub async fn with_temp_namespace<F, Fut>(test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let client = shared_cluster().client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some("e2e-".into()),
            labels: Some([("eg-e2e/test".to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    let name = created.metadata.name.expect("generated namespace name");
    let outcome = tokio::spawn(test(client.clone(), name.clone())).await;
    // Deletion finishes in the background (namespace controller); nothing waits for it.
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("test in namespace {name} failed: {e:?}"),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => panic!("test in namespace {name} was cancelled: {join}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_crds_dir_keeps_only_crds_and_names_bad_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: []\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: p}\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
        let crds = read_crds_dir(dir.path()).expect("read");
        assert_eq!(crds.len(), 1);
        assert_eq!(
            crds[0].metadata.name.as_deref(),
            Some("widgets.example.com")
        );

        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed\n").expect("write");
        let err = read_crds_dir(dir.path()).expect_err("bad YAML must fail");
        let message = err.to_string();
        assert!(
            message.contains("b.yaml") && message.contains("document 0"),
            "{message}"
        );
        assert_eq!(err.category(), "crd_yaml");
    }
}
