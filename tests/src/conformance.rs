//! `make conformance`: the official Gateway API conformance suite against the whole product on
//! the process kubelet. [`run`] starts a control plane (etcd, kube-apiserver,
//! kube-controller-manager) with the CRDs, the [`crate::kubelet`], the operator as a process and
//! an EnvoyGateway whose GatewayClass the suite uses; once the class reports its
//! `supportedFeatures`, it runs the suite (built by `hack/build-conformance.sh`) with the profiles
//! GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS and exactly those features, which writes the report
//! YAML. [`summarize`] turns a report into the per-profile figures the README shows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;

use crate::cluster::{ClusterError, ControlPlane, ControlPlaneOptions, install_project_crds};
use crate::kubelet::plan::Binaries;
use crate::kubelet::{Kubelet, KubeletConfig, KubeletError, apiserver_address};
use crate::process::{Lifetime, ManagedProcess, ProcessError};
use crate::tools::{self, ToolError};

/// Profiles `make conformance` runs.
pub const PROFILES: [&str; 3] = ["GATEWAY-HTTP", "GATEWAY-GRPC", "GATEWAY-TLS"];
/// The GatewayClass (and EnvoyGateway) the suite runs against.
pub const GATEWAY_CLASS: &str = "eg-conformance";
const NAMESPACE: &str = "eg-conformance";

/// Errors running the suite or reading its report.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("GatewayClass {0} reported no supportedFeatures within {1:?}")]
    NoFeatures(String, Duration),
}

impl ConformanceError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ConformanceError::Cluster(_) => "cluster",
            ConformanceError::Kubelet(_) => "kubelet",
            ConformanceError::Tool(_) => "tool",
            ConformanceError::Process(_) => "process",
            ConformanceError::Kube(_) => "kube",
            ConformanceError::Io { .. } => "io",
            ConformanceError::Report { .. } => "report",
            ConformanceError::NoFeatures(..) => "no_features",
        }
    }
}

/// The suite's command-line flags (after the `go test` ones).
pub fn suite_args(features: &[String], report: &Path, version: &str) -> Vec<String> {
    vec![
        "-test.run=TestConformance".into(),
        "-test.v".into(),
        "-test.timeout=120m".into(),
        format!("--gateway-class={GATEWAY_CLASS}"),
        format!("--conformance-profiles={}", PROFILES.join(",")),
        format!("--supported-features={}", features.join(",")),
        format!("--report-output={}", report.display()),
        "--organization=eg-operator".into(),
        "--project=eg-operator".into(),
        "--url=https://github.com/eg-operator/eg-operator".into(),
        format!("--version={version}"),
        "--contact=eg-operator maintainers".into(),
        "--mode=default".into(),
        "--cleanup-base-resources=true".into(),
    ]
}

/// `status.supportedFeatures` of a GatewayClass, by name.
pub fn supported_features(class: &GatewayClass) -> Vec<String> {
    class
        .status
        .as_ref()
        .and_then(|s| s.supported_features.as_ref())
        .map(|fs| fs.iter().map(|f| f.name.clone()).collect())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(default)]
    profiles: Vec<ProfileReport>,
}

#[derive(Debug, Deserialize)]
struct ProfileReport {
    name: String,
    core: Status,
    #[serde(default)]
    extended: Option<Status>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    result: String,
    statistics: Statistics,
    #[serde(default)]
    failed_tests: Vec<String>,
}

/// Passed, skipped and failed counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statistics {
    #[serde(default)]
    pub passed: u32,
    #[serde(default)]
    pub skipped: u32,
    #[serde(default)]
    pub failed: u32,
}

/// One profile's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSummary {
    pub name: String,
    pub core_result: String,
    pub core: Statistics,
    pub extended: Option<Statistics>,
    pub failed_tests: Vec<String>,
}

/// The figures of a report, per profile.
pub fn summarize(report_yaml: &str) -> Result<Vec<ProfileSummary>, serde_yaml_ng::Error> {
    let report: Report = serde_yaml_ng::from_str(report_yaml)?;
    Ok(report
        .profiles
        .into_iter()
        .map(|p| {
            let mut failed_tests = p.core.failed_tests;
            if let Some(e) = &p.extended {
                failed_tests.extend(e.failed_tests.iter().cloned());
            }
            ProfileSummary {
                name: p.name,
                core_result: p.core.result,
                core: p.core.statistics,
                extended: p.extended.map(|e| e.statistics),
                failed_tests,
            }
        })
        .collect())
}

/// The figures as a Markdown table.
pub fn markdown_table(summaries: &[ProfileSummary]) -> String {
    let mut out = String::from(
        "| profile | core passed / failed / skipped | extended passed / failed / skipped |\n|---|---|---|\n",
    );
    for s in summaries {
        let fmt = |st: &Statistics| format!("{} / {} / {}", st.passed, st.failed, st.skipped);
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            s.name,
            fmt(&s.core),
            s.extended.as_ref().map_or("-".into(), fmt)
        ));
    }
    out
}

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cluster state, pod directories and logs.
    pub work_dir: PathBuf,
    /// Where the report YAML goes.
    pub report: PathBuf,
    /// The directory `hack/build-conformance.sh` printed (`conformance.test`, `echo-basic`).
    pub suite_dir: PathBuf,
    /// Extra flags for the suite (e.g. `--run-test=HTTPRouteSimpleSameNamespace`).
    pub extra_args: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConformanceError + '_ {
    move |source| ConformanceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs the whole thing; returns the suite's exit status.
pub async fn run(mut opts: RunOptions) -> Result<std::process::ExitStatus, ConformanceError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(io_err(&opts.work_dir))?;
    // The suite runs in the work directory: a relative report path is the caller's.
    if opts.report.is_relative() {
        let here = std::env::current_dir().map_err(io_err(Path::new(".")))?;
        opts.report = here.join(&opts.report);
    }
    let control_plane = ControlPlane::start(ControlPlaneOptions {
        state_dir: opts.work_dir.join("cluster"),
        lifetime: Lifetime::Owned,
        controller_manager: true,
    })
    .await?;
    let kubeconfig = control_plane.kubeconfig_path.clone();
    let client = Client::try_from(kube_config(&kubeconfig).await?)?;
    install_project_crds(&client).await?;
    eprintln!("[conformance] control plane up at {}", control_plane.server);

    let operator_bin = tools::eg_operator_bin()?;
    let binaries = Binaries {
        eg_operator: Some(operator_bin.clone()),
        envoy: Some(tools::envoy_bin()?),
        echo_basic: Some(opts.suite_dir.join("echo-basic")),
        eg_echo: None,
        coredns_stand_in: Some(tools::cargo_bin("eg-echo", "EG_ECHO_BIN")?),
    };
    let _kubelet = Kubelet::start(
        client.clone(),
        KubeletConfig {
            node_name: "process-kubelet".into(),
            binaries,
            state_dir: opts.work_dir.join("pods"),
            apiserver: apiserver_address(&control_plane.server)?,
        },
    )
    .await?;

    let mut operator = std::process::Command::new(&operator_bin);
    operator
        .args(["operator", "--metrics-address", "127.0.0.1:0"])
        .args(["--leader-elect", "false"])
        .env("KUBECONFIG", &kubeconfig);
    let _operator = ManagedProcess::spawn(
        "eg-operator operator",
        operator,
        &opts.work_dir.join("operator.log"),
        Lifetime::Owned,
    )?;

    let pp = PatchParams::apply(crate::cluster::FIELD_MANAGER).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NAMESPACE,
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await?;
    let egs: Api<eg_crds::EnvoyGateway> = Api::namespaced(client.clone(), NAMESPACE);
    egs.patch(
        GATEWAY_CLASS,
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "operator.gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyGateway",
            "metadata": {"name": GATEWAY_CLASS, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "controlPlane": {"replicas": 1},
                "proxy": {"replicas": 1, "service": {"type": "LoadBalancer"}},
                "extensionApis": {"enableBackend": true}
            }
        })),
    )
    .await?;

    let classes: Api<GatewayClass> = Api::all(client.clone());
    let limit = Duration::from_secs(180);
    let start = std::time::Instant::now();
    let features = loop {
        let accepted = classes.get_opt(GATEWAY_CLASS).await?.filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Accepted" && c.status == "True")
                })
        });
        let features = accepted
            .as_ref()
            .map(supported_features)
            .unwrap_or_default();
        if !features.is_empty() {
            break features;
        }
        if start.elapsed() > limit {
            return Err(ConformanceError::NoFeatures(GATEWAY_CLASS.into(), limit));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "[conformance] GatewayClass {GATEWAY_CLASS} accepted; supported features: {}",
        features.join(",")
    );

    if let Some(parent) = opts.report.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut suite = tokio::process::Command::new(opts.suite_dir.join("conformance.test"));
    suite
        .args(suite_args(
            &features,
            &opts.report,
            env!("CARGO_PKG_VERSION"),
        ))
        .args(&opts.extra_args)
        .env("KUBECONFIG", &kubeconfig)
        .current_dir(&opts.work_dir)
        .kill_on_drop(true);
    let status = suite
        .status()
        .await
        .map_err(io_err(&opts.suite_dir.join("conformance.test")))?;
    drop(control_plane);
    Ok(status)
}

async fn kube_config(kubeconfig: &Path) -> Result<kube::Config, ConformanceError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(ClusterError::from)?;
    Ok(
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(ClusterError::from)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: ConformanceReport
date: "2026-11-26T10:00:00Z"
gatewayAPIChannel: experimental
gatewayAPIVersion: v1.5.1
implementation: {organization: eg-operator, project: eg-operator, url: u, version: 0.1.0, contact: [c]}
mode: default
profiles:
- name: GATEWAY-HTTP
  summary: Core tests partially succeeded with 1 test failures.
  core:
    result: partial
    statistics: {Failed: 1, Passed: 32, Skipped: 0}
    failedTests: [HTTPRouteHostnameIntersection]
  extended:
    result: success
    statistics: {Failed: 0, Passed: 10, Skipped: 0}
    supportedFeatures: [HTTPRouteQueryParamMatching]
- name: GATEWAY-TLS
  core:
    result: success
    statistics: {Failed: 0, Passed: 11, Skipped: 0}
"#;

    #[test]
    fn a_report_summarizes_per_profile_with_failed_tests() {
        let s = summarize(REPORT).expect("report");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "GATEWAY-HTTP");
        assert_eq!(
            s[0].core,
            Statistics {
                passed: 32,
                skipped: 0,
                failed: 1
            }
        );
        assert_eq!(s[0].failed_tests, ["HTTPRouteHostnameIntersection"]);
        assert_eq!(s[1].extended, None);
        let table = markdown_table(&s);
        assert!(
            table.contains("| GATEWAY-HTTP | 32 / 1 / 0 | 10 / 0 / 0 |"),
            "{table}"
        );
        assert!(
            table.contains("| GATEWAY-TLS | 11 / 0 / 0 | - |"),
            "{table}"
        );
        assert!(summarize("profiles: [{name: x}]").is_err());
    }

    #[test]
    fn suite_args_name_the_class_profiles_features_and_report() {
        let args = suite_args(
            &["Gateway".into(), "HTTPRoute".into()],
            Path::new("/r/report.yaml"),
            "0.1.0",
        );
        assert!(args.contains(&"--gateway-class=eg-conformance".to_owned()));
        assert!(args.contains(&"--supported-features=Gateway,HTTPRoute".to_owned()));
        assert!(
            args.contains(
                &"--conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS".to_owned()
            )
        );
        assert!(args.contains(&"--report-output=/r/report.yaml".to_owned()));
    }
}
