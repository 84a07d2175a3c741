//! Operand upgrades and rollbacks of one environment (pure): the pre-flight checks a new
//! `spec.version` must pass before anything changes, and the state machine recorded in
//! `status.upgrade` that gates the rollout on health and halts it when a gate fails.
//!
//! An upgrade starts when `spec.version` differs from the running `status.version` (or from
//! the version an unfinished upgrade was rolling out, which makes setting `spec.version` back a
//! rollback that runs the same way). Phase `ControlPlane`: the control plane Deployment rolls to
//! the new image and must become Available (updated, observed, available replicas) within the
//! gate timeout; then `Complete`, and `status.version` moves. A gate that times out turns the
//! upgrade `Halted` (Degraded, with the reason) until `spec.version` changes again.
//!
//! Not here yet: rolling proxy fleets one Gateway at a time. Fleets are built by the control
//! plane, which needs a per-Gateway version to honour first (the proxy fleet issue).

use std::time::Duration;

use eg_crds::envoy_gateway::{UpgradePhase, UpgradeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::versions::normalize;

/// Why a `spec.version` is refused before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "spec.version: {version:?} is not a version this operator can run (it runs {runnable})"
    )]
    NotRunnable { version: String, runnable: String },
    #[error("spec.version: {version:?} is not a MAJOR.MINOR.PATCH version")]
    Unparsable { version: String },
    #[error(
        "spec.version: {from} to {to} skips a minor version; proxies may run at most one minor version away from their control plane, so upgrade one minor version at a time"
    )]
    Skew { from: String, to: String },
}

impl UpgradeError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            UpgradeError::NotRunnable { .. } => "version_not_runnable",
            UpgradeError::Unparsable { .. } => "version_unparsable",
            UpgradeError::Skew { .. } => "version_skew",
        }
    }
}

/// `(major, minor)` of a `MAJOR.MINOR.PATCH[-pre]` version, with or without a leading `v`.
fn major_minor(version: &str) -> Result<(u64, u64), UpgradeError> {
    let unparsable = || UpgradeError::Unparsable {
        version: version.to_owned(),
    };
    let core = normalize(version).split('-').next().unwrap_or_default();
    let parts: Vec<u64> = core
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| unparsable())?;
    match parts.as_slice() {
        [major, minor, _patch] => Ok((*major, *minor)),
        _ => Err(unparsable()),
    }
}

/// Pre-flight of a move from `running` (none on a fresh install) to `target`: the operator can
/// run `target`, and control plane and proxies stay within one minor version of each other
/// while one of them runs the old version.
pub fn preflight(
    running: Option<&str>,
    target: &str,
    runnable: &[String],
) -> Result<(), UpgradeError> {
    if !runnable.iter().any(|r| normalize(r) == normalize(target)) {
        return Err(UpgradeError::NotRunnable {
            version: target.to_owned(),
            runnable: runnable.join(", "),
        });
    }
    let Some(running) = running else {
        return Ok(());
    };
    let (from, to) = (major_minor(running)?, major_minor(target)?);
    if from.0 != to.0 || from.1.abs_diff(to.1) > 1 {
        return Err(UpgradeError::Skew {
            from: running.to_owned(),
            to: target.to_owned(),
        });
    }
    Ok(())
}

/// What the pass says about the control plane's health gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every object, the control plane Deployment included, is applied and ready.
    Passed,
    /// Waiting for this (object and readiness rule, in words).
    Waiting(String),
    /// The pass did not get as far as the gate (invalid spec, conflict, error).
    NotReached,
}

/// The upgrade record after a pass. `previous` is the recorded one, `running` the version in
/// `status.version`, `target` the normalized `spec.version`.
pub fn next_upgrade(
    previous: Option<&UpgradeStatus>,
    running: Option<&str>,
    target: &str,
    gate: &Gate,
    now: &Time,
    gate_timeout: Duration,
) -> Option<UpgradeStatus> {
    let unfinished = previous.filter(|u| u.phase != UpgradePhase::Complete);
    let mut record = match unfinished {
        Some(u) if u.to == target => u.clone(),
        // A new target while rolling out another: roll from what was being rolled out.
        Some(u) => started(&u.to, target, now),
        None => match running {
            Some(r) if r != target => started(r, target, now),
            // A fresh install or a steady environment: keep the last record as history.
            _ => return previous.cloned(),
        },
    };
    match gate {
        Gate::Passed => {
            record.phase = UpgradePhase::Complete;
            record.message = format!("control plane {} is Available", record.to);
        }
        Gate::Waiting(what) if record.phase == UpgradePhase::ControlPlane => {
            let elapsed = now.0.duration_since(record.started_at.0);
            let deadline = k8s_openapi::jiff::SignedDuration::try_from(gate_timeout)
                .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
            if elapsed >= deadline {
                record.phase = UpgradePhase::Halted;
                record.message = format!(
                    "control plane {} did not become Available within {}s: {what}",
                    record.to,
                    gate_timeout.as_secs()
                );
            } else {
                record.message = format!("control plane: {what}");
            }
        }
        // Halted stays halted, with its reason, until the target changes.
        Gate::Waiting(_) | Gate::NotReached => {}
    }
    Some(record)
}

fn started(from: &str, to: &str, now: &Time) -> UpgradeStatus {
    UpgradeStatus {
        from: from.to_owned(),
        to: to.to_owned(),
        phase: UpgradePhase::ControlPlane,
        started_at: now.clone(),
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("timestamp"))
    }

    fn runnable() -> Vec<String> {
        ["0.1.0", "0.2.0", "0.3.0", "1.0.0"]
            .map(String::from)
            .to_vec()
    }

    const GATE: Duration = Duration::from_secs(60);

    fn waiting() -> Gate {
        Gate::Waiting("waiting for Deployment eg/prod-envoy-gateway: Deployment Available".into())
    }

    #[test]
    fn preflight_refuses_unknown_versions_and_minor_skips_in_both_directions() {
        assert_eq!(preflight(None, "0.1.0", &runnable()), Ok(()));
        assert_eq!(preflight(Some("0.1.0"), "v0.2.0", &runnable()), Ok(()));
        assert_eq!(preflight(Some("0.2.0"), "0.1.0", &runnable()), Ok(()));
        assert!(matches!(
            preflight(Some("0.1.0"), "0.9.0", &runnable()),
            Err(UpgradeError::NotRunnable { .. })
        ));
        assert!(matches!(
            preflight(Some("0.1.0"), "0.3.0", &runnable()),
            Err(UpgradeError::Skew { .. })
        ));
        assert!(matches!(
            preflight(Some("0.3.0"), "0.1.0", &runnable()),
            Err(UpgradeError::Skew { .. })
        ));
        assert!(matches!(
            preflight(Some("0.3.0"), "1.0.0", &runnable()),
            Err(UpgradeError::Skew { .. })
        ));
        assert!(matches!(
            preflight(Some("garbage"), "0.1.0", &runnable()),
            Err(UpgradeError::Unparsable { .. })
        ));
    }

    #[test]
    fn installs_and_steady_environments_record_no_upgrade() {
        assert_eq!(
            next_upgrade(None, None, "0.1.0", &waiting(), &at(0), GATE),
            None
        );
        assert_eq!(
            next_upgrade(None, Some("0.1.0"), "0.1.0", &Gate::Passed, &at(0), GATE),
            None
        );
    }

    #[test]
    fn an_upgrade_waits_on_the_control_plane_then_completes() {
        let started = next_upgrade(None, Some("0.1.0"), "0.2.0", &waiting(), &at(100), GATE)
            .expect("upgrade");
        assert_eq!(
            (started.from.as_str(), started.to.as_str()),
            ("0.1.0", "0.2.0")
        );
        assert_eq!(started.phase, UpgradePhase::ControlPlane);
        assert!(started.message.contains("Deployment Available"));
        // The start time is kept across passes.
        let later = next_upgrade(
            Some(&started),
            Some("0.1.0"),
            "0.2.0",
            &waiting(),
            &at(130),
            GATE,
        )
        .expect("upgrade");
        assert_eq!(later.started_at, at(100));
        let done = next_upgrade(
            Some(&later),
            Some("0.1.0"),
            "0.2.0",
            &Gate::Passed,
            &at(140),
            GATE,
        )
        .expect("upgrade");
        assert_eq!(done.phase, UpgradePhase::Complete);
        // Once complete and recorded, the record stays as history.
        assert_eq!(
            next_upgrade(
                Some(&done),
                Some("0.2.0"),
                "0.2.0",
                &Gate::Passed,
                &at(500),
                GATE
            ),
            Some(done)
        );
    }

    #[test]
    fn a_gate_past_its_deadline_halts_and_stays_halted() {
        let started =
            next_upgrade(None, Some("0.1.0"), "0.2.0", &waiting(), &at(0), GATE).expect("upgrade");
        let halted = next_upgrade(
            Some(&started),
            Some("0.1.0"),
            "0.2.0",
            &waiting(),
            &at(60),
            GATE,
        )
        .expect("upgrade");
        assert_eq!(halted.phase, UpgradePhase::Halted);
        assert!(halted.message.contains("within 60s"), "{}", halted.message);
        let still = next_upgrade(
            Some(&halted),
            Some("0.1.0"),
            "0.2.0",
            &Gate::NotReached,
            &at(90),
            GATE,
        );
        assert_eq!(still, Some(halted.clone()));
        // A late success still completes the upgrade.
        let late = next_upgrade(
            Some(&halted),
            Some("0.1.0"),
            "0.2.0",
            &Gate::Passed,
            &at(95),
            GATE,
        )
        .expect("upgrade");
        assert_eq!(late.phase, UpgradePhase::Complete);
    }

    #[test]
    fn setting_the_version_back_rolls_back_from_what_was_rolling_out() {
        let halted = UpgradeStatus {
            phase: UpgradePhase::Halted,
            ..next_upgrade(None, Some("0.1.0"), "0.2.0", &waiting(), &at(0), GATE).expect("upgrade")
        };
        let rollback = next_upgrade(
            Some(&halted),
            Some("0.1.0"),
            "0.1.0",
            &waiting(),
            &at(200),
            GATE,
        )
        .expect("rollback");
        assert_eq!(
            (rollback.from.as_str(), rollback.to.as_str()),
            ("0.2.0", "0.1.0")
        );
        assert_eq!(rollback.phase, UpgradePhase::ControlPlane);
        assert_eq!(rollback.started_at, at(200));
        let done = next_upgrade(
            Some(&rollback),
            Some("0.1.0"),
            "0.1.0",
            &Gate::Passed,
            &at(210),
            GATE,
        )
        .expect("rollback");
        assert_eq!(done.phase, UpgradePhase::Complete);
    }
}
