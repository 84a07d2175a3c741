//! The EnvoyGateway controller loop (I/O shell): watches EnvoyGateways and the Deployments they
//! own, runs one [`reconcile_environment`] pass per change behind a finalizer, records status and
//! Events. Everything it decides comes from the pure stages; this module only moves messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use eg_crds::envoy_gateway::UpgradePhase;
use eg_crds::{EnvoyGateway, EnvoyGatewayStatus};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::apply::ApplyOutcome;
use super::names::{FIELD_MANAGER, MANAGED_BY, Names};
use super::reconcile::{
    OperatorSettings, ReconcileError, ReconcileOutcome, cleanup_environment, reconcile_environment,
};
use super::status::{Verdict, next_status};
use super::upgrade::{StepEvent, step_events};
use crate::metrics::Metrics;

/// Finalizer that lets the operator remove cluster-scoped and cross-namespace objects, which
/// garbage collection cannot reach through ownerReferences.
pub const FINALIZER: &str = "operator.gateway.envoyproxy.io/cleanup";

/// Errors of the controller loop.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("EnvoyGateway has no namespace")]
    NoNamespace,
    #[error("cleanup: {0}")]
    Cleanup(#[source] ReconcileError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("transient: {0}")]
    Transient(#[source] ReconcileError),
}

impl ControllerError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ControllerError::NoNamespace => "no_namespace",
            ControllerError::Cleanup(_) => "cleanup",
            ControllerError::Finalizer(_) => "finalizer",
            ControllerError::Status(_) => "status",
            ControllerError::Transient(e) => e.category(),
        }
    }
}

struct Context {
    client: Client,
    settings: OperatorSettings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Exponential backoff per EnvoyGateway (namespace/name) while its passes keep failing;
    /// cleared by a pass that succeeds.
    backoff: Mutex<HashMap<String, backon::ExponentialBackoff>>,
}

fn key(eg: &EnvoyGateway) -> String {
    format!("{}/{}", eg.namespace().unwrap_or_default(), eg.name_any())
}

/// How soon to look again at an environment that is waiting for readiness, besides the watch
/// on its Deployment.
const WAITING_REQUEUE: Duration = Duration::from_secs(10);
/// How soon to look again while proxy fleets roll (their readiness is not watched).
const ROLLOUT_REQUEUE: Duration = Duration::from_secs(2);
/// Periodic check of a healthy environment (drift, certificate renewal).
const HEALTHY_REQUEUE: Duration = Duration::from_secs(300);
const CONFLICT_REQUEUE: Duration = Duration::from_secs(60);

/// Runs the controller until the stream ends (the process is asked to stop).
pub async fn run(client: Client, settings: OperatorSettings, metrics: Arc<Metrics>) {
    let egs: Api<EnvoyGateway> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let reporter = Reporter {
        controller: "eg-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        settings,
        metrics,
        backoff: Mutex::new(HashMap::new()),
    });
    Controller::new(egs, watcher::Config::default())
        .owns(
            deployments,
            watcher::Config::default()
                .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}")),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

async fn reconcile(eg: Arc<EnvoyGateway>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = eg.namespace().ok_or(ControllerError::NoNamespace)?;
    let key = key(&eg);
    let span = info_span!("reconcile", envoygateway = %key);
    let api: Api<EnvoyGateway> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, eg, |event| async {
        match event {
            FinalizerEvent::Apply(eg) => apply(&eg, &ctx).await,
            FinalizerEvent::Cleanup(eg) => cleanup(&eg, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .inspect(|_| {
        if let Ok(mut backoff) = ctx.backoff.lock() {
            backoff.remove(&key);
        }
    })
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ControllerError::Finalizer(other.to_string()),
    })
}

async fn apply(eg: &EnvoyGateway, ctx: &Context) -> Result<Action, ControllerError> {
    let started = Instant::now();
    let pass = reconcile_environment(&ctx.client, eg, &ctx.settings, SystemTime::now()).await;
    let verdict = Verdict::from_pass(&pass);
    ctx.metrics
        .observe(verdict.label(), verdict.error_category(), started.elapsed());
    publish_events(eg, ctx, &pass).await;
    let status = write_status(eg, ctx, &verdict, &pass).await?;
    let steps = step_events(
        eg.status.as_ref().and_then(|s| s.upgrade.as_ref()),
        status.upgrade.as_ref(),
    );
    for step in steps {
        let StepEvent {
            warning,
            reason,
            note,
            gateway,
        } = step;
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        // The Gateway as related object keeps each fleet's steps apart (the recorder folds
        // events of one key into a series that keeps the first note).
        let related = gateway.and_then(|g| {
            let (namespace, name) = g.split_once('/')?;
            Some(ObjectReference {
                api_version: Some("gateway.networking.k8s.io/v1".into()),
                kind: Some("Gateway".into()),
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectReference::default()
            })
        });
        publish(eg, ctx, (type_, reason, note), "Upgrade", related).await;
    }
    // Proxy fleets are gated on objects this controller does not own (fleet workloads,
    // Gateway conditions): a rollout looks again soon, a halted one now and then.
    let phase = status.upgrade.as_ref().map(|u| u.phase);
    match (verdict, pass) {
        (Verdict::Ready, _) if phase == Some(UpgradePhase::Proxies) => {
            Ok(Action::requeue(ROLLOUT_REQUEUE))
        }
        (Verdict::Ready, _) if phase == Some(UpgradePhase::Halted) => {
            Ok(Action::requeue(WAITING_REQUEUE))
        }
        (Verdict::Ready, _) => Ok(Action::requeue(HEALTHY_REQUEUE)),
        (Verdict::Waiting { .. }, _) => Ok(Action::requeue(WAITING_REQUEUE)),
        (Verdict::Conflict { .. }, _) => Ok(Action::requeue(CONFLICT_REQUEUE)),
        // Invalid specs wait for the user: the next change to the object triggers a pass.
        (Verdict::InvalidSpec { .. }, _) => Ok(Action::await_change()),
        (Verdict::Error { .. }, Err(e)) => Err(ControllerError::Transient(e)),
        (Verdict::Error { .. }, Ok(_)) => Ok(Action::requeue(WAITING_REQUEUE)),
    }
}

async fn cleanup(eg: &EnvoyGateway, ctx: &Context) -> Result<Action, ControllerError> {
    let ns = eg.namespace().ok_or(ControllerError::NoNamespace)?;
    let uid = eg.uid().unwrap_or_default();
    let deleted = cleanup_environment(&ctx.client, &Names::new(&ns, &eg.name_any()), &uid)
        .await
        .map_err(ControllerError::Cleanup)?;
    info!(deleted, "environment removed");
    Ok(Action::await_change())
}

async fn write_status(
    eg: &EnvoyGateway,
    ctx: &Context,
    verdict: &Verdict,
    pass: &Result<ReconcileOutcome, ReconcileError>,
) -> Result<EnvoyGatewayStatus, ControllerError> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let version = eg.spec.version.trim_start_matches('v');
    let fleets = pass
        .as_ref()
        .map(|o| o.fleets.as_slice())
        .unwrap_or_default();
    let status = next_status(
        eg.status.as_ref(),
        verdict,
        fleets,
        eg.meta().generation,
        version,
        now,
        ctx.settings.upgrade_gate_timeout,
    );
    if eg.status.as_ref() == Some(&status) {
        return Ok(status);
    }
    let ns = eg.namespace().ok_or(ControllerError::NoNamespace)?;
    let api: Api<EnvoyGateway> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "operator.gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyGateway",
        "status": status,
    });
    api.patch_status(
        &eg.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ControllerError::Status)?;
    Ok(status)
}

async fn publish_events(
    eg: &EnvoyGateway,
    ctx: &Context,
    pass: &Result<ReconcileOutcome, ReconcileError>,
) {
    let mut events = Vec::new();
    match pass {
        Ok(outcome) => {
            for issued in &outcome.issued {
                events.push((
                    EventType::Normal,
                    "CertificateIssued",
                    format!(
                        "{} certificate issued: {}",
                        issued.which,
                        issued.reason.as_str()
                    ),
                ));
            }
            if !outcome.conflicts.is_empty() {
                let names: Vec<String> =
                    outcome.conflicts.iter().map(ToString::to_string).collect();
                events.push((
                    EventType::Warning,
                    "Conflict",
                    format!(
                        "not owned by this EnvoyGateway, left untouched: {}",
                        names.join(", ")
                    ),
                ));
            } else if outcome.plan.has_changes() {
                let (created, updated, _, deleted) = outcome.plan.counts();
                let waiting = match &outcome.applied {
                    Some(ApplyOutcome::Waiting { id, .. }) => format!("; waiting for {id}"),
                    _ => String::new(),
                };
                events.push((
                    EventType::Normal,
                    "Applied",
                    format!(
                        "{created} to create, {updated} to update, {deleted} to delete{waiting}"
                    ),
                ));
            }
        }
        Err(e) => events.push((
            EventType::Warning,
            if e.is_transient() {
                "ReconcileError"
            } else {
                "InvalidSpec"
            },
            e.to_string(),
        )),
    }
    for event in events {
        publish(eg, ctx, event, "Reconcile", None).await;
    }
}

async fn publish(
    eg: &EnvoyGateway,
    ctx: &Context,
    (type_, reason, note): (EventType, &str, String),
    action: &str,
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary,
    };
    if let Err(e) = ctx.recorder.publish(&event, &eg.object_ref(&())).await {
        warn!(error = %e, "publishing event");
    }
}

fn error_policy(eg: Arc<EnvoyGateway>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    let delay = ctx
        .backoff
        .lock()
        .ok()
        .and_then(|mut all| {
            all.entry(key(&eg))
                .or_insert_with(|| {
                    backon::BackoffBuilder::build(
                        backon::ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(500))
                            .with_max_delay(Duration::from_secs(300))
                            .with_jitter()
                            .without_max_times(),
                    )
                })
                .next()
        })
        .unwrap_or(Duration::from_secs(300));
    warn!(category = error.category(), error = %error, retry_in = ?delay, "will retry");
    Action::requeue(delay)
}
