//! The status of an EnvoyGateway (pure): what one reconcile pass found, turned into
//! `observedGeneration`, `version` and the Ready / Progressing / Degraded conditions of the
//! Kubernetes API conventions, with reasons that say what is waiting or wrong, plus
//! `targetVersion` and the `upgrade` record while `spec.version` changes (see [`super::upgrade`]).
//! `lastTransitionTime` moves only when a condition's status flips, so an unchanged environment
//! produces an identical status and no write.

use eg_crds::EnvoyGatewayStatus;
use eg_crds::envoy_gateway::UpgradePhase;
use eg_graph::ObjectRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::apply::ApplyOutcome;
use super::reconcile::{ReconcileError, ReconcileOutcome};
use super::upgrade::{FleetObservation, Gate, next_upgrade};

/// The gist of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything applied and ready.
    Ready,
    /// Applied up to an object that is not ready yet.
    Waiting { object: String, rule: String },
    /// Desired objects exist and belong to someone else; nothing was applied.
    Conflict { objects: Vec<ObjectRef> },
    /// The spec cannot be acted on until it changes.
    InvalidSpec { message: String },
    /// A transient failure; retried.
    Error {
        category: &'static str,
        message: String,
    },
}

impl Verdict {
    /// Stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::Waiting { .. } => "waiting",
            Verdict::Conflict { .. } => "conflict",
            Verdict::InvalidSpec { .. } => "invalid_spec",
            Verdict::Error { .. } => "error",
        }
    }

    /// The error category, for verdicts that carry one.
    pub fn error_category(&self) -> Option<&'static str> {
        match self {
            Verdict::Error { category, .. } => Some(category),
            Verdict::InvalidSpec { .. } => Some("invalid_spec"),
            _ => None,
        }
    }

    pub fn from_pass(pass: &Result<ReconcileOutcome, ReconcileError>) -> Self {
        match pass {
            Ok(outcome) if !outcome.conflicts.is_empty() => Verdict::Conflict {
                objects: outcome.conflicts.clone(),
            },
            Ok(ReconcileOutcome {
                applied: Some(ApplyOutcome::Waiting { id, rule, .. }),
                ..
            }) => Verdict::Waiting {
                object: id.to_string(),
                rule: rule.clone(),
            },
            Ok(_) => Verdict::Ready,
            Err(ReconcileError::Invalid(e)) => Verdict::InvalidSpec {
                message: e.to_string(),
            },
            Err(ReconcileError::Preflight(e)) => Verdict::InvalidSpec {
                message: e.to_string(),
            },
            Err(e) => Verdict::Error {
                category: e.category(),
                message: e.to_string(),
            },
        }
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// The status to record for `verdict` on an object at `generation`, given the previous status.
/// `version` is the wanted operand version (`spec.version`), running once the verdict is Ready
/// and any upgrade to it is complete; `fleets` are the proxy fleets the pass observed (only while
/// upgrading); `gate_timeout` bounds how long an upgrade waits for each step (see
/// [`super::upgrade`]).
pub fn next_status(
    previous: Option<&EnvoyGatewayStatus>,
    verdict: &Verdict,
    fleets: &[FleetObservation],
    generation: Option<i64>,
    version: &str,
    now: Time,
    gate_timeout: std::time::Duration,
) -> EnvoyGatewayStatus {
    let previous_version = previous.and_then(|p| p.version.clone());
    let gate = match verdict {
        Verdict::Ready => Gate::Passed(fleets.to_vec()),
        Verdict::Waiting { object, rule } => Gate::Waiting(format!("waiting for {object}: {rule}")),
        _ => Gate::NotReached,
    };
    let upgrade = next_upgrade(
        previous.and_then(|p| p.upgrade.as_ref()),
        previous_version.as_deref(),
        version,
        &gate,
        &now,
        gate_timeout,
    );
    let upgrading = upgrade
        .as_ref()
        .filter(|u| u.phase != UpgradePhase::Complete && u.to == version);
    let target_version = (upgrading.is_some()
        || (*verdict != Verdict::Ready && previous_version.as_deref() != Some(version)))
    .then(|| version.to_owned());
    let (conditions, version) = match (verdict, upgrading) {
        (Verdict::Waiting { .. } | Verdict::Ready, Some(u)) if u.phase == UpgradePhase::Halted => {
            let message = format!("upgrade from {} to {} halted: {}", u.from, u.to, u.message);
            (
                [
                    condition("Ready", false, "UpgradeHalted", message.clone()),
                    condition(
                        "Progressing",
                        false,
                        "UpgradeHalted",
                        "waiting for a spec.version change".into(),
                    ),
                    condition("Degraded", true, "UpgradeHalted", message),
                ],
                previous_version,
            )
        }
        (Verdict::Waiting { .. } | Verdict::Ready, Some(u)) => {
            let message = format!("upgrading from {} to {}: {}", u.from, u.to, u.message);
            (
                [
                    condition("Ready", false, "Upgrading", message.clone()),
                    condition("Progressing", true, "Upgrading", message),
                    condition("Degraded", false, "AsExpected", String::new()),
                ],
                previous_version,
            )
        }
        _ => verdict_conditions(verdict, version, previous_version),
    };
    EnvoyGatewayStatus {
        observed_generation: generation,
        version,
        target_version,
        upgrade,
        conditions: with_transitions(conditions, previous, generation, &now),
    }
}

fn verdict_conditions(
    verdict: &Verdict,
    version: &str,
    previous_version: Option<String>,
) -> ([Condition; 3], Option<String>) {
    match verdict {
        Verdict::Ready => (
            [
                condition(
                    "Ready",
                    true,
                    "Reconciled",
                    "every object is applied and ready".into(),
                ),
                condition(
                    "Progressing",
                    false,
                    "Complete",
                    "nothing is pending".into(),
                ),
                condition("Degraded", false, "AsExpected", String::new()),
            ],
            Some(version.to_owned()),
        ),
        Verdict::Waiting { object, rule } => (
            [
                condition(
                    "Ready",
                    false,
                    "Waiting",
                    format!("waiting for {object}: {rule}"),
                ),
                condition(
                    "Progressing",
                    true,
                    "Waiting",
                    format!("waiting for {object}: {rule}"),
                ),
                condition("Degraded", false, "AsExpected", String::new()),
            ],
            previous_version,
        ),
        Verdict::Conflict { objects } => {
            let names: Vec<String> = objects.iter().map(ToString::to_string).collect();
            let message = format!(
                "already exist and are not owned by this EnvoyGateway, left untouched: {}",
                names.join(", ")
            );
            (
                [
                    condition("Ready", false, "Conflict", message.clone()),
                    condition("Progressing", false, "Conflict", String::new()),
                    condition("Degraded", true, "Conflict", message),
                ],
                previous_version,
            )
        }
        Verdict::InvalidSpec { message } => (
            [
                condition("Ready", false, "InvalidSpec", message.clone()),
                condition(
                    "Progressing",
                    false,
                    "InvalidSpec",
                    "waiting for a spec change".into(),
                ),
                condition("Degraded", true, "InvalidSpec", message.clone()),
            ],
            previous_version,
        ),
        Verdict::Error { category, message } => (
            [
                condition("Ready", false, "Error", message.clone()),
                condition(
                    "Progressing",
                    true,
                    "Retrying",
                    format!("{category}: retrying"),
                ),
                condition("Degraded", true, "Error", message.clone()),
            ],
            previous_version,
        ),
    }
}

fn with_transitions(
    conditions: [Condition; 3],
    previous: Option<&EnvoyGatewayStatus>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    conditions
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            let before = previous
                .into_iter()
                .flat_map(|p| p.conditions.iter())
                .find(|p| p.type_ == c.type_);
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => b.last_transition_time.clone(),
                _ => now.clone(),
            };
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    const GATE: std::time::Duration = std::time::Duration::from_secs(60);

    fn reason(s: &EnvoyGatewayStatus, type_: &str) -> (String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn an_upgrade_shows_its_target_and_progress_then_halts_degraded_past_the_gate() {
        let waiting = Verdict::Waiting {
            object: "Deployment eg/prod-envoy-gateway".into(),
            rule: "Deployment Available".into(),
        };
        let steady = next_status(None, &Verdict::Ready, &[], Some(1), "0.1.0", at(0), GATE);
        assert_eq!(steady.target_version, None);
        let upgrading = next_status(Some(&steady), &waiting, &[], Some(2), "0.2.0", at(10), GATE);
        assert_eq!(upgrading.version.as_deref(), Some("0.1.0"));
        assert_eq!(upgrading.target_version.as_deref(), Some("0.2.0"));
        assert_eq!(
            reason(&upgrading, "Progressing"),
            ("True".into(), "Upgrading".into())
        );
        let upgrade = upgrading.upgrade.clone().expect("upgrade");
        assert_eq!(upgrade.phase, UpgradePhase::ControlPlane);
        let halted = next_status(
            Some(&upgrading),
            &waiting,
            &[],
            Some(2),
            "0.2.0",
            at(70),
            GATE,
        );
        assert_eq!(
            reason(&halted, "Degraded"),
            ("True".into(), "UpgradeHalted".into())
        );
        assert_eq!(halted.version.as_deref(), Some("0.1.0"));
        // Rolled back: spec.version set back, the old control plane becomes Available again.
        let back = next_status(Some(&halted), &waiting, &[], Some(3), "0.1.0", at(80), GATE);
        assert_eq!(back.target_version.as_deref(), Some("0.1.0"));
        assert_eq!(reason(&back, "Degraded").0, "False");
        let done = next_status(
            Some(&back),
            &Verdict::Ready,
            &[],
            Some(3),
            "0.1.0",
            at(90),
            GATE,
        );
        assert_eq!(done.version.as_deref(), Some("0.1.0"));
        assert_eq!(done.target_version, None);
        let record = done.upgrade.expect("upgrade");
        assert_eq!(
            (record.from.as_str(), record.to.as_str(), record.phase),
            ("0.2.0", "0.1.0", UpgradePhase::Complete)
        );
    }

    #[test]
    fn a_ready_control_plane_with_proxies_still_rolling_keeps_the_running_version() {
        use super::super::upgrade::FleetObservation;
        let steady = next_status(None, &Verdict::Ready, &[], Some(1), "0.1.0", at(0), GATE);
        let fleet = |version: &str| FleetObservation {
            gateway: "shop/a".into(),
            version: Some(version.into()),
            available: true,
            programmed: true,
        };
        let rolling = next_status(
            Some(&steady),
            &Verdict::Ready,
            &[fleet("0.1.0")],
            Some(2),
            "0.2.0",
            at(10),
            GATE,
        );
        assert_eq!(rolling.version.as_deref(), Some("0.1.0"));
        assert_eq!(rolling.target_version.as_deref(), Some("0.2.0"));
        assert_eq!(
            reason(&rolling, "Ready"),
            ("False".into(), "Upgrading".into())
        );
        let record = rolling.upgrade.clone().expect("upgrade");
        assert_eq!(record.phase, UpgradePhase::Proxies);
        assert_eq!(record.proxies[0].version, "0.2.0");
        let done = next_status(
            Some(&rolling),
            &Verdict::Ready,
            &[fleet("0.2.0")],
            Some(2),
            "0.2.0",
            at(20),
            GATE,
        );
        assert_eq!(done.version.as_deref(), Some("0.2.0"));
        assert_eq!(done.target_version, None);
        assert_eq!(reason(&done, "Ready"), ("True".into(), "Reconciled".into()));
    }

    fn cond<'a>(s: &'a EnvoyGatewayStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn waiting_then_ready_moves_transitions_only_on_flips() {
        let waiting = Verdict::Waiting {
            object: "Deployment ns/x".into(),
            rule: "Deployment Available".into(),
        };
        let s1 = next_status(None, &waiting, &[], Some(1), "0.1.0", at(100), GATE);
        assert_eq!(cond(&s1, "Progressing").status, "True");
        assert_eq!(
            cond(&s1, "Ready").message,
            "waiting for Deployment ns/x: Deployment Available"
        );
        assert_eq!(s1.version, None);

        let s2 = next_status(Some(&s1), &waiting, &[], Some(1), "0.1.0", at(200), GATE);
        assert_eq!(s2, s1, "an unchanged verdict must give an identical status");

        let s3 = next_status(
            Some(&s2),
            &Verdict::Ready,
            &[],
            Some(1),
            "0.1.0",
            at(300),
            GATE,
        );
        assert_eq!(cond(&s3, "Ready").status, "True");
        assert_eq!(cond(&s3, "Ready").last_transition_time, at(300));
        assert_eq!(
            cond(&s3, "Degraded").last_transition_time,
            at(100),
            "Degraded stayed False"
        );
        assert_eq!(s3.version.as_deref(), Some("0.1.0"));
        assert_eq!(s3.observed_generation, Some(1));
    }

    #[test]
    fn conflict_names_the_foreign_objects() {
        let v = Verdict::Conflict {
            objects: vec![ObjectRef::new(
                "gateway.networking.k8s.io/v1",
                "GatewayClass",
                None,
                "prod",
            )],
        };
        let s = next_status(None, &v, &[], Some(2), "0.1.0", at(1), GATE);
        let degraded = cond(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "Conflict")
        );
        assert!(degraded.message.contains("GatewayClass prod"));
    }
}
