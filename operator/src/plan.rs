//! `eg-operator plan`: what the operator would do for an EnvoyGateway, before it does anything.
//!
//! Reads one EnvoyGateway manifest, runs the same pure stages as the reconciler (validate,
//! certificates, build) and prints the desired graph's plan, in apply order, like
//! `terraform plan`: against an empty cluster offline, or against the live environment with a
//! kubeconfig. Secret values never appear in the output.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eg_crds::EnvoyGateway;
use eg_graph::{Action, Plan, ResourceGraph, plan};
use serde::Serialize;

use crate::environment::build::{BuildError, BuildInputs, build};
use crate::environment::certificates::{CertificateError, ExistingCertificates, decide};
use crate::environment::dereference::{DereferenceError, existing_certificates, owned_objects};
use crate::environment::names::Names;
use crate::environment::reconcile::ownership;
use crate::environment::validate::{ValidationError, validate};

/// UID used for an EnvoyGateway that has not been created yet; it only shows in labels.
pub const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Errors of `eg-operator plan`, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{file}: expected kind EnvoyGateway (operator.gateway.envoyproxy.io/v1alpha1), found {found}"
    )]
    WrongKind { file: PathBuf, found: String },
    #[error("{file}: EnvoyGateway {name}: {source}")]
    Invalid {
        file: PathBuf,
        name: String,
        #[source]
        source: ValidationError,
    },
    #[error("{file}: metadata.namespace is not set; pass --namespace")]
    NoNamespace { file: PathBuf },
    #[error(transparent)]
    Certificates(#[from] CertificateError),
    #[error("reading the live environment: {0}")]
    Dereference(#[from] DereferenceError),
    #[error("reading the EnvoyGateway: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl PlanError {
    /// Stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            PlanError::Read { .. } => "read",
            PlanError::Parse { .. } => "parse",
            PlanError::WrongKind { .. } => "wrong_kind",
            PlanError::Invalid { .. } => "invalid",
            PlanError::NoNamespace { .. } => "no_namespace",
            PlanError::Certificates(_) => "certificates",
            PlanError::Dereference(e) => e.category(),
            PlanError::Kube(_) => "kube",
            PlanError::Build(_) => "build",
        }
    }
}

/// Parses an EnvoyGateway manifest; errors carry file, line and column.
pub fn read_envoy_gateway(file: &Path, text: &str) -> Result<EnvoyGateway, PlanError> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| parse_error(file, &e))?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("(none)");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind != "EnvoyGateway" || api_version != "operator.gateway.envoyproxy.io/v1alpha1" {
        return Err(PlanError::WrongKind {
            file: file.to_owned(),
            found: format!("{api_version} {kind}"),
        });
    }
    // Deserialize from the text again so field errors keep their line numbers.
    serde_yaml_ng::from_str(text).map_err(|e| parse_error(file, &e))
}

fn parse_error(file: &Path, e: &serde_yaml_ng::Error) -> PlanError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    PlanError::Parse {
        file: file.to_owned(),
        line,
        column,
        message: e.to_string(),
    }
}

/// The desired graph of an environment and its plan.
#[derive(Debug)]
pub struct EnvironmentPlan {
    pub graph: ResourceGraph,
    pub plan: Plan,
}

fn with_namespace(
    file: &Path,
    mut eg: EnvoyGateway,
    namespace: Option<&str>,
) -> Result<EnvoyGateway, PlanError> {
    if eg.metadata.namespace.is_none() {
        let ns = namespace.ok_or_else(|| PlanError::NoNamespace {
            file: file.to_owned(),
        })?;
        eg.metadata.namespace = Some(ns.to_owned());
    }
    Ok(eg)
}

/// Plans `eg` against the given live objects and certificates (pure).
pub fn plan_against(
    file: &Path,
    mut eg: EnvoyGateway,
    live: &[serde_json::Value],
    existing: &ExistingCertificates,
    image_repository: &str,
    now: SystemTime,
) -> Result<EnvironmentPlan, PlanError> {
    eg.metadata
        .uid
        .get_or_insert_with(|| OFFLINE_UID.to_owned());
    let environment = validate(&eg).map_err(|source| PlanError::Invalid {
        file: file.to_owned(),
        name: eg.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    let certificates = decide(existing, environment.certificates, &environment.names, now)?;
    let graph = build(&BuildInputs {
        environment: &environment,
        certificates: &certificates.certificates,
        image_repository,
    })?;
    let mut plan = plan(&graph, live, &ownership(&environment));
    redact_secrets(&mut plan);
    Ok(EnvironmentPlan { graph, plan })
}

/// Plans `eg` against an empty cluster.
pub fn offline_plan(
    file: &Path,
    eg: EnvoyGateway,
    namespace: Option<&str>,
    image_repository: &str,
    now: SystemTime,
) -> Result<EnvironmentPlan, PlanError> {
    let eg = with_namespace(file, eg, namespace)?;
    plan_against(
        file,
        eg,
        &[],
        &ExistingCertificates::default(),
        image_repository,
        now,
    )
}

/// Plans `eg` against what is live in the cluster. An EnvoyGateway that does not exist yet
/// is planned against nothing, as the operator would see it on creation.
pub async fn live_plan(
    client: &kube::Client,
    file: &Path,
    eg: EnvoyGateway,
    namespace: Option<&str>,
    image_repository: &str,
    now: SystemTime,
) -> Result<EnvironmentPlan, PlanError> {
    let mut eg = with_namespace(file, eg, namespace)?;
    let ns = eg.metadata.namespace.clone().unwrap_or_default();
    let name = eg.metadata.name.clone().unwrap_or_default();
    let api: kube::Api<EnvoyGateway> = kube::Api::namespaced(client.clone(), &ns);
    let Some(live_eg) = api
        .get_opt(&name)
        .await
        .map_err(|e| PlanError::Kube(Box::new(e)))?
    else {
        return plan_against(
            file,
            eg,
            &[],
            &ExistingCertificates::default(),
            image_repository,
            now,
        );
    };
    let uid = live_eg.metadata.uid.unwrap_or_default();
    eg.metadata.uid = Some(uid.clone());
    let owned = owned_objects(client, &uid).await?;
    let existing = existing_certificates(client, &Names::new(&ns, &name), &uid).await?;
    plan_against(file, eg, &owned, &existing, image_repository, now)
}

/// Replaces the values of Secret field changes so key material never reaches a terminal or log.
pub fn redact_secrets(plan: &mut Plan) {
    let hidden = || Some(serde_json::Value::String("(sensitive)".into()));
    for step in &mut plan.steps {
        if step.id.kind != "Secret" {
            continue;
        }
        if let Action::Update { changes } = &mut step.action {
            for change in changes {
                if change.before.is_some() {
                    change.before = hidden();
                }
                if change.after.is_some() {
                    change.after = hidden();
                }
            }
        }
    }
}

/// `-o json`: the apply waves and the plan, for tools.
#[derive(Debug, Serialize)]
pub struct JsonOutput<'a> {
    pub waves: Vec<Vec<String>>,
    pub plan: &'a Plan,
}

impl EnvironmentPlan {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let waves = self
            .graph
            .waves()
            .into_iter()
            .map(|w| w.iter().map(ToString::to_string).collect())
            .collect();
        serde_json::to_string_pretty(&JsonOutput {
            waves,
            plan: &self.plan,
        })
    }

    /// Human output: the apply order by wave, then the plan.
    pub fn to_text(&self) -> String {
        let mut out = String::from("Apply order (objects in one wave are applied together):\n");
        for (i, wave) in self.graph.waves().iter().enumerate() {
            let names: Vec<String> = wave.iter().map(ToString::to_string).collect();
            out.push_str(&format!("  wave {i}: {}\n", names.join(", ")));
        }
        out.push('\n');
        out.push_str(&self.plan.render_text());
        out
    }
}
