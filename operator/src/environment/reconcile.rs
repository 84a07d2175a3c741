//! One pass of the environment pipeline for one EnvoyGateway: dereference → validate →
//! certificates → build → conflict check → plan → apply. The controller loop, status and
//! Events sit around this; tests drive it directly against a real apiserver.

use std::time::SystemTime;

use eg_crds::EnvoyGateway;
use eg_graph::{GraphBuilder, ObjectRef, Ownership, Plan, plan};
use kube::Client;

use super::apply::{ApplyError, ApplyOutcome, apply};
use super::build::{BuildError, BuildInputs, build};
use super::certificates::{CertificateError, Issued, decide};
use super::dereference::{
    DereferenceError, existing_certificates, foreign_objects, labelled_objects, owned_objects,
};
use super::names::{ENVIRONMENT_LABEL, FIELD_MANAGER, Names, OWNER_UID_LABEL};
use super::upgrade::{FleetObservation, UpgradeError, observe_fleet, preflight, upgrading};
use super::validate::{Environment, ValidationError, validate};

/// Settings of the operator that shape every environment.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// Image repository of the control plane; the tag is the operand version.
    pub image_repository: String,
    /// Operand versions this operator can run (the upgrade pre-flight refuses others).
    pub runnable_versions: Vec<String>,
    /// How long each upgrade step (the control plane, then each Gateway's proxy fleet) may take
    /// to pass its health gate before the upgrade halts (Degraded).
    pub upgrade_gate_timeout: std::time::Duration,
}

/// Default of [`OperatorSettings::upgrade_gate_timeout`].
pub const DEFAULT_UPGRADE_GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl OperatorSettings {
    /// The settings of this build: its runnable versions and the default gate timeout.
    pub fn new(image_repository: impl Into<String>) -> Self {
        Self {
            image_repository: image_repository.into(),
            runnable_versions: super::versions::RUNNABLE_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            upgrade_gate_timeout: DEFAULT_UPGRADE_GATE_TIMEOUT,
        }
    }
}

/// Why a pass did not complete. Invalid specs wait for a change; the rest are retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("invalid spec: {0}")]
    Invalid(#[from] ValidationError),
    #[error("upgrade refused: {0}")]
    Preflight(#[from] UpgradeError),
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error(transparent)]
    Certificates(#[from] CertificateError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl ReconcileError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Invalid(e) => e.category(),
            ReconcileError::Preflight(e) => e.category(),
            ReconcileError::Dereference(e) => e.category(),
            ReconcileError::Certificates(e) => e.category(),
            ReconcileError::Build(e) => e.category(),
            ReconcileError::Apply(e) => e.category(),
        }
    }

    /// Whether retrying without a spec change can help.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ReconcileError::Invalid(_) | ReconcileError::Preflight(_)
        )
    }
}

/// What one pass found and did.
#[derive(Debug, Clone)]
pub struct ReconcileOutcome {
    pub plan: Plan,
    /// Desired objects that exist but belong to someone else. When non-empty nothing was applied.
    pub conflicts: Vec<ObjectRef>,
    /// `None` when conflicts stopped the pass before applying.
    pub applied: Option<ApplyOutcome>,
    pub issued: Vec<Issued>,
    /// The proxy fleets of the environment's Gateways, observed only while an upgrade needs
    /// them (everything else applied and ready).
    pub fleets: Vec<FleetObservation>,
}

/// The ownership every stage uses for an environment.
pub fn ownership(env: &Environment) -> Ownership {
    ownership_of(&env.names, &env.uid)
}

/// Ownership from identity alone: cleanup must work even when the spec no longer validates.
pub fn ownership_of(names: &Names, uid: &str) -> Ownership {
    Ownership {
        field_manager: FIELD_MANAGER.to_owned(),
        owner_uid: uid.to_owned(),
        owner_uid_label: OWNER_UID_LABEL.to_owned(),
        labels: names.common_labels(uid),
    }
}

/// Deletes every object the EnvoyGateway `uid` owns, dependents first (the plan's delete
/// order). Idempotent: what is already gone is skipped.
pub async fn cleanup_environment(
    client: &Client,
    names: &Names,
    uid: &str,
) -> Result<usize, ReconcileError> {
    let owned = owned_objects(client, uid).await?;
    let nothing = GraphBuilder::new().build().map_err(BuildError::from)?;
    let plan = plan(&nothing, &owned, &ownership_of(names, uid));
    match apply(client, &nothing, &plan, &owned).await? {
        ApplyOutcome::Complete { deleted, .. } => Ok(deleted),
        // An empty graph has no wave to wait for.
        ApplyOutcome::Waiting { .. } => Ok(0),
    }
}

/// Runs one pass for `eg` at `now`.
pub async fn reconcile_environment(
    client: &Client,
    eg: &EnvoyGateway,
    settings: &OperatorSettings,
    now: SystemTime,
) -> Result<ReconcileOutcome, ReconcileError> {
    let env = validate(eg)?;
    let running = eg.status.as_ref().and_then(|s| s.version.as_deref());
    preflight(running, &env.version, &settings.runnable_versions)?;
    let owned = owned_objects(client, &env.uid).await?;
    let existing = existing_certificates(client, &env.names, &env.uid).await?;
    let certificates = decide(&existing, env.certificates, &env.names, now)?;
    let desired = build(&BuildInputs {
        environment: &env,
        certificates: &certificates.certificates,
        image_repository: &settings.image_repository,
    })?;
    let plan = plan(&desired, &owned, &ownership(&env));
    let conflicts = foreign_objects(client, &desired, &owned).await?;
    if !conflicts.is_empty() {
        return Ok(ReconcileOutcome {
            plan,
            conflicts,
            applied: None,
            issued: certificates.issued,
            fleets: Vec::new(),
        });
    }
    let applied = apply(client, &desired, &plan, &owned).await?;
    let upgrade = eg.status.as_ref().and_then(|s| s.upgrade.as_ref());
    let fleets = match applied {
        ApplyOutcome::Complete { .. } if upgrading(running, upgrade, &env.version) => {
            observe_fleets(client, &env).await?
        }
        _ => Vec::new(),
    };
    Ok(ReconcileOutcome {
        plan,
        conflicts,
        applied: Some(applied),
        issued: certificates.issued,
        fleets,
    })
}

/// The proxy fleets of every Gateway of the environment's class (read-only: the control plane
/// applies fleets; the operator only gates its rollout on them).
async fn observe_fleets(
    client: &Client,
    env: &Environment,
) -> Result<Vec<FleetObservation>, DereferenceError> {
    const GATEWAY: &[(&str, &str, bool)] = &[("gateway.networking.k8s.io/v1", "Gateway", true)];
    const WORKLOADS: &[(&str, &str, bool)] = &[
        ("apps/v1", "Deployment", true),
        ("apps/v1", "DaemonSet", true),
    ];
    let fleet_selector = format!(
        "app.kubernetes.io/component={},{ENVIRONMENT_LABEL}={}",
        crate::fleet::FLEET_COMPONENT,
        env.names.environment_label_value()
    );
    let namespaces: Vec<Option<&str>> = if env.watch_namespaces.is_empty() {
        vec![None]
    } else {
        env.watch_namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    let (mut gateways, mut workloads) = (Vec::new(), Vec::new());
    for ns in namespaces {
        gateways.extend(labelled_objects(client, GATEWAY, ns, "").await?);
        workloads.extend(labelled_objects(client, WORKLOADS, ns, &fleet_selector).await?);
    }
    Ok(gateways
        .iter()
        .filter(|g| {
            g.pointer("/spec/gatewayClassName")
                .and_then(serde_json::Value::as_str)
                == Some(env.gateway_class_name.as_str())
                && g.pointer("/metadata/deletionTimestamp").is_none()
        })
        .map(|g| observe_fleet(g, &workloads))
        .collect())
}
