//! Operand upgrades and rollbacks of one environment (pure): the pre-flight checks a new
//! `spec.version` must pass before anything changes, and the state machine recorded in
//! `status.upgrade` that orders the rollout, gates each step on health and halts it when a gate
//! fails.
//!
//! An upgrade starts when `spec.version` differs from the running `status.version` (or from
//! the version an unfinished upgrade was rolling out, which makes setting `spec.version` back a
//! rollback that runs the same way). Phase `ControlPlane`: the control plane Deployment rolls to
//! the new image and must become Available within the gate timeout. Phase `Proxies`: the proxy
//! fleets follow one Gateway at a time, in namespace/name order. Each step publishes, in
//! `status.upgrade.proxies`, the version that one Gateway's fleet may run (the control plane
//! renders every fleet at its published version, a Gateway not listed at `status.version`), then
//! waits until that fleet's workload runs it, is Available, and its Gateway is Programmed (its
//! proxies ACKed their configuration) before the next Gateway is allowed. Then `Complete`, and
//! `status.version` moves. A gate past its deadline turns the upgrade `Halted` (Degraded, with the
//! reason): nothing further is rolled while it fails. Everything the planner knows is in the
//! status, so a restarted operator continues exactly where the previous one stopped.

use std::time::Duration;

use eg_crds::envoy_gateway::{ProxyRollout, UpgradePhase, UpgradeStatus};
use eg_graph::Readiness;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

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
    /// Every object, the control plane Deployment included, is applied and ready; the proxy
    /// fleets of the environment's Gateways are as observed.
    Passed(Vec<FleetObservation>),
    /// Waiting for this (object and readiness rule, in words).
    Waiting(String),
    /// The pass did not get as far as the gate (invalid spec, conflict, error).
    NotReached,
}

/// What the operator observed of one Gateway's proxy fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetObservation {
    /// The Gateway, `namespace/name`.
    pub gateway: String,
    /// Operand version its workload was rendered at; `None` while it has no workload.
    pub version: Option<String>,
    /// Its workload is Available with every replica on the current template.
    pub available: bool,
    /// Its Gateway is `Programmed=True` for its current generation.
    pub programmed: bool,
}

impl FleetObservation {
    fn healthy_at(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version) && self.available && self.programmed
    }

    /// What this fleet still lacks to run `version` healthily, in words.
    fn lacks(&self, version: &str) -> String {
        match self.version.as_deref() {
            None => "its workload does not exist yet".to_owned(),
            Some(v) if v != version => format!("its workload still runs {v}"),
            Some(_) if !self.available => "its workload is not Available".to_owned(),
            Some(_) => "the Gateway is not Programmed (its proxies have not ACKed)".to_owned(),
        }
    }
}

/// Observes the fleet of `gateway` (the Gateway as read) among the fleet `workloads` of the
/// environment (Deployments and DaemonSets as read, tied to their Gateway by UID label).
pub fn observe_fleet(gateway: &Value, workloads: &[Value]) -> FleetObservation {
    let text = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_str).map(str::to_owned);
    let label = format!(
        "/metadata/labels/{}",
        crate::fleet::FLEET_GATEWAY_UID_LABEL.replace('/', "~1")
    );
    let uid = text(gateway, "/metadata/uid");
    let workload = workloads
        .iter()
        .find(|w| uid.is_some() && text(w, &label) == uid);
    let generation = gateway
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let programmed = gateway
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Programmed")
                && c.get("status").and_then(Value::as_str) == Some("True")
                && c.get("observedGeneration").and_then(Value::as_i64) == generation
        });
    FleetObservation {
        gateway: format!(
            "{}/{}",
            text(gateway, "/metadata/namespace").unwrap_or_default(),
            text(gateway, "/metadata/name").unwrap_or_default()
        ),
        version: workload.and_then(|w| {
            text(
                w,
                &format!(
                    "/metadata/annotations/{}",
                    crate::fleet::OPERAND_VERSION_ANNOTATION.replace('/', "~1")
                ),
            )
        }),
        available: workload.is_some_and(workload_available),
        programmed,
    }
}

/// A Deployment as [`Readiness::DeploymentAvailable`] has it; a DaemonSet when its controller saw
/// the current spec and every scheduled pod is updated and available.
fn workload_available(workload: &Value) -> bool {
    if workload.get("kind").and_then(Value::as_str) != Some("DaemonSet") {
        return Readiness::DeploymentAvailable.is_ready(workload);
    }
    let number = |path: &str| workload.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let desired = number("/status/desiredNumberScheduled");
    number("/status/observedGeneration") >= number("/metadata/generation")
        && number("/status/updatedNumberScheduled") >= desired
        && number("/status/numberAvailable") >= desired
}

/// The version the fleet of `gateway` may run: its entry in an upgrade record, else the running
/// `status.version`, else `fallback` (a fresh install: the control plane's own version).
pub fn fleet_version<'a>(
    upgrade: Option<&'a UpgradeStatus>,
    running: Option<&'a str>,
    gateway: &str,
    fallback: &'a str,
) -> &'a str {
    upgrade
        .and_then(|u| u.proxies.iter().find(|p| p.gateway == gateway))
        .map(|p| p.version.as_str())
        .or(running)
        .unwrap_or(fallback)
}

/// Whether a pass must observe the proxy fleets: an upgrade is pending or unfinished.
pub fn upgrading(running: Option<&str>, upgrade: Option<&UpgradeStatus>, target: &str) -> bool {
    running.is_some_and(|r| r != target)
        || upgrade.is_some_and(|u| u.phase != UpgradePhase::Complete)
}

fn past(since: &Time, now: &Time, timeout: Duration) -> bool {
    let deadline = k8s_openapi::jiff::SignedDuration::try_from(timeout)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    now.0.duration_since(since.0) >= deadline
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
        // A new target while rolling out another: roll from what was being rolled out; fleets
        // keep the versions they were allowed until this upgrade moves them.
        Some(u) => UpgradeStatus {
            proxies: u.proxies.clone(),
            ..started(&u.to, target, now)
        },
        None => match running {
            Some(r) if r != target => started(r, target, now),
            // A fresh install or a steady environment: keep the last record as history.
            _ => return previous.cloned(),
        },
    };
    match gate {
        Gate::Passed(fleets) => roll_proxies(&mut record, running, fleets, now, gate_timeout),
        Gate::Waiting(what) if record.phase == UpgradePhase::ControlPlane => {
            if past(&record.started_at, now, gate_timeout) {
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
        // Halted stays halted, with its reason, until its gate passes or the target changes;
        // a control plane unavailable while proxies roll holds the proxies where they are.
        Gate::Waiting(_) | Gate::NotReached => {}
    }
    Some(record)
}

/// The proxy phase, with the control plane Available at `record.to`: the first Gateway (in
/// namespace/name order) whose fleet is not yet allowed the target is allowed it, and nothing
/// further moves until that fleet is healthy at it.
fn roll_proxies(
    record: &mut UpgradeStatus,
    running: Option<&str>,
    fleets: &[FleetObservation],
    now: &Time,
    gate_timeout: Duration,
) {
    let mut fleets: Vec<&FleetObservation> = fleets.iter().collect();
    fleets.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    // Gateways that are gone leave the record.
    record
        .proxies
        .retain(|p| fleets.iter().any(|f| f.gateway == p.gateway));
    let to = record.to.clone();
    let unlisted = running.unwrap_or(&record.from).to_owned();
    for fleet in fleets {
        let entry = record
            .proxies
            .iter_mut()
            .find(|p| p.gateway == fleet.gateway);
        let allowed = entry.as_ref().map_or(unlisted.as_str(), |p| &p.version);
        if allowed != to {
            let rollout = ProxyRollout {
                gateway: fleet.gateway.clone(),
                version: to.clone(),
                started_at: now.clone(),
                ready: false,
            };
            match entry {
                Some(e) => *e = rollout,
                None => record.proxies.push(rollout),
            }
            record.phase = UpgradePhase::Proxies;
            record.message = format!("proxy fleet of Gateway {}: rolling to {to}", fleet.gateway);
            return;
        }
        // Already at the target before this upgrade (a fleet a rollback never moved).
        let Some(entry) = entry else {
            continue;
        };
        entry.ready = fleet.healthy_at(&to);
        if entry.ready {
            continue;
        }
        let lacks = fleet.lacks(&to);
        if past(&entry.started_at, now, gate_timeout) {
            record.phase = UpgradePhase::Halted;
            record.message = format!(
                "proxy fleet of Gateway {} did not become Available and Programmed at {to} within {}s: {lacks}",
                fleet.gateway,
                gate_timeout.as_secs()
            );
        } else {
            record.phase = UpgradePhase::Proxies;
            record.message = format!("proxy fleet of Gateway {}: {lacks}", fleet.gateway);
        }
        return;
    }
    record.phase = UpgradePhase::Complete;
    record.message = format!(
        "control plane Available at {to}; {} proxy fleet(s) rolled",
        record.proxies.len()
    );
}

/// An upgrade step worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// The Gateway (`namespace/name`) whose fleet the step is about, if any.
    pub gateway: Option<String>,
}

/// The steps taken between two records: a fleet allowed a new version, a halt, a completion.
pub fn step_events(
    before: Option<&UpgradeStatus>,
    after: Option<&UpgradeStatus>,
) -> Vec<StepEvent> {
    let Some(after) = after else {
        return Vec::new();
    };
    let same_upgrade = before.filter(|b| b.to == after.to && b.started_at == after.started_at);
    let mut events: Vec<StepEvent> = after
        .proxies
        .iter()
        .filter(|p| {
            !same_upgrade.is_some_and(|b| {
                b.proxies
                    .iter()
                    .any(|q| q.gateway == p.gateway && q.version == p.version)
            })
        })
        // Entries a rollback inherited still name the version being left.
        .filter(|p| p.version == after.to)
        .map(|p| StepEvent {
            warning: false,
            reason: "UpgradingProxies",
            note: format!("proxy fleet of Gateway {} may run {}", p.gateway, p.version),
            gateway: Some(p.gateway.clone()),
        })
        .collect();
    let phase_before = same_upgrade.map(|b| b.phase);
    if phase_before != Some(after.phase) {
        match after.phase {
            UpgradePhase::Halted => events.push(StepEvent {
                warning: true,
                reason: "UpgradeHalted",
                note: after.message.clone(),
                // The fleet whose gate failed: the first one not there.
                gateway: after
                    .proxies
                    .iter()
                    .find(|p| p.version == after.to && !p.ready)
                    .map(|p| p.gateway.clone()),
            }),
            UpgradePhase::Complete if same_upgrade.is_some() => events.push(StepEvent {
                warning: false,
                reason: "UpgradeComplete",
                note: format!(
                    "upgrade from {} to {}: {}",
                    after.from, after.to, after.message
                ),
                gateway: None,
            }),
            _ => {}
        }
    }
    events
}

fn started(from: &str, to: &str, now: &Time) -> UpgradeStatus {
    UpgradeStatus {
        from: from.to_owned(),
        to: to.to_owned(),
        phase: UpgradePhase::ControlPlane,
        started_at: now.clone(),
        message: String::new(),
        proxies: Vec::new(),
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
            next_upgrade(
                None,
                Some("0.1.0"),
                "0.1.0",
                &Gate::Passed(Vec::new()),
                &at(0),
                GATE
            ),
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
            &Gate::Passed(Vec::new()),
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
                &Gate::Passed(Vec::new()),
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
            &Gate::Passed(Vec::new()),
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
            &Gate::Passed(Vec::new()),
            &at(210),
            GATE,
        )
        .expect("rollback");
        assert_eq!(done.phase, UpgradePhase::Complete);
    }

    fn fleet(gateway: &str, version: &str, available: bool, programmed: bool) -> FleetObservation {
        FleetObservation {
            gateway: gateway.into(),
            version: Some(version.into()),
            available,
            programmed,
        }
    }

    fn allowed(record: &UpgradeStatus) -> Vec<(&str, &str)> {
        record
            .proxies
            .iter()
            .map(|p| (p.gateway.as_str(), p.version.as_str()))
            .collect()
    }

    /// Gateways shop/a and shop/b, their fleets healthy at 0.1.0.
    fn steady() -> [FleetObservation; 2] {
        [
            fleet("shop/a", "0.1.0", true, true),
            fleet("shop/b", "0.1.0", true, true),
        ]
    }

    /// An upgrade from 0.1.0 to 0.2.0 started at 0, waiting for its control plane.
    fn upgrade_started() -> Option<UpgradeStatus> {
        next_upgrade(None, Some("0.1.0"), "0.2.0", &waiting(), &at(0), GATE)
    }

    /// `spec.version` set back to 0.1.0 at 200, the control plane not yet Available.
    fn rolled_back(record: &UpgradeStatus) -> Option<UpgradeStatus> {
        next_upgrade(
            Some(record),
            Some("0.1.0"),
            "0.1.0",
            &waiting(),
            &at(200),
            GATE,
        )
    }

    /// One pass from 0.1.0 to `target` with the control plane Available.
    fn pass(
        previous: &UpgradeStatus,
        target: &str,
        fleets: &[FleetObservation],
        t: i64,
    ) -> UpgradeStatus {
        next_upgrade(
            Some(previous),
            Some("0.1.0"),
            target,
            &Gate::Passed(fleets.to_vec()),
            &at(t),
            GATE,
        )
        .expect("upgrade")
    }

    #[test]
    fn proxies_roll_one_gateway_at_a_time_in_order_after_the_control_plane() {
        let steady = [
            fleet("shop/b", "0.1.0", true, true),
            fleet("shop/a", "0.1.0", true, true),
        ];
        let cp = upgrade_started().expect("upgrade");
        assert_eq!(cp.phase, UpgradePhase::ControlPlane);
        assert!(
            cp.proxies.is_empty(),
            "no fleet moves before the control plane is Available"
        );

        let first = pass(&cp, "0.2.0", &steady, 10);
        assert_eq!(first.phase, UpgradePhase::Proxies);
        assert_eq!(allowed(&first), [("shop/a", "0.2.0")]);
        assert_eq!(
            fleet_version(Some(&first), Some("0.1.0"), "shop/a", "0.2.0"),
            "0.2.0"
        );
        assert_eq!(
            fleet_version(Some(&first), Some("0.1.0"), "shop/b", "0.2.0"),
            "0.1.0"
        );
        // Not rendered yet, then rendered but not Available, then not Programmed: b waits.
        let not_yet = pass(&first, "0.2.0", &steady, 12);
        assert_eq!(allowed(&not_yet), [("shop/a", "0.2.0")]);
        assert!(
            not_yet.message.contains("still runs 0.1.0"),
            "{}",
            not_yet.message
        );
        let unavailable = [fleet("shop/a", "0.2.0", false, true), steady[0].clone()];
        assert!(
            pass(&first, "0.2.0", &unavailable, 13)
                .message
                .contains("not Available")
        );
        let unacked = [fleet("shop/a", "0.2.0", true, false), steady[0].clone()];
        let still = pass(&first, "0.2.0", &unacked, 14);
        assert!(
            still.message.contains("not Programmed"),
            "{}",
            still.message
        );
        assert_eq!(allowed(&still), [("shop/a", "0.2.0")]);

        let a_done = [fleet("shop/a", "0.2.0", true, true), steady[0].clone()];
        let second = pass(&still, "0.2.0", &a_done, 20);
        assert_eq!(allowed(&second), [("shop/a", "0.2.0"), ("shop/b", "0.2.0")]);
        assert!(second.proxies[0].ready && !second.proxies[1].ready);
        assert_eq!(second.proxies[1].started_at, at(20));
        assert_eq!(second.phase, UpgradePhase::Proxies);

        let all = [
            fleet("shop/a", "0.2.0", true, true),
            fleet("shop/b", "0.2.0", true, true),
        ];
        let done = pass(&second, "0.2.0", &all, 30);
        assert_eq!(done.phase, UpgradePhase::Complete);
        assert!(done.proxies.iter().all(|p| p.ready));
    }

    #[test]
    fn a_fleet_gate_past_its_deadline_halts_and_holds_the_fleets_after_it() {
        let cp = upgrade_started().expect("upgrade");
        let steady = steady();
        let first = pass(&cp, "0.2.0", &steady, 10);
        let broken = [fleet("shop/a", "0.2.0", false, true), steady[1].clone()];
        assert_eq!(
            pass(&first, "0.2.0", &broken, 69).phase,
            UpgradePhase::Proxies
        );
        let halted = pass(&first, "0.2.0", &broken, 70);
        assert_eq!(halted.phase, UpgradePhase::Halted);
        assert!(
            halted.message.contains("shop/a") && halted.message.contains("within 60s"),
            "{}",
            halted.message
        );
        let later = pass(&halted, "0.2.0", &broken, 500);
        assert_eq!(later.phase, UpgradePhase::Halted);
        assert_eq!(
            allowed(&later),
            [("shop/a", "0.2.0")],
            "shop/b is held back"
        );
        // An unavailable control plane holds the proxies too.
        let held = next_upgrade(
            Some(&first),
            Some("0.1.0"),
            "0.2.0",
            &waiting(),
            &at(20),
            GATE,
        );
        assert_eq!(held.as_ref().map(allowed), Some(vec![("shop/a", "0.2.0")]));
    }

    #[test]
    fn setting_the_version_back_rolls_back_only_the_fleets_that_moved() {
        let cp = upgrade_started().expect("upgrade");
        let steady = steady();
        let first = pass(&cp, "0.2.0", &steady, 10);
        let broken = [fleet("shop/a", "0.2.0", false, true), steady[1].clone()];
        let halted = pass(&first, "0.2.0", &broken, 100);
        assert_eq!(halted.phase, UpgradePhase::Halted);

        let back = rolled_back(&halted).expect("rollback");
        assert_eq!(
            (back.from.as_str(), back.to.as_str(), back.phase),
            ("0.2.0", "0.1.0", UpgradePhase::ControlPlane)
        );
        // The control plane goes first: shop/a keeps 0.2.0 meanwhile.
        assert_eq!(
            fleet_version(Some(&back), Some("0.1.0"), "shop/a", "0.1.0"),
            "0.2.0"
        );
        let rolling = pass(&back, "0.1.0", &broken, 210);
        assert_eq!(allowed(&rolling), [("shop/a", "0.1.0")]);
        assert_eq!(rolling.proxies[0].started_at, at(210));
        let done = pass(&rolling, "0.1.0", &steady, 220);
        assert_eq!(done.phase, UpgradePhase::Complete);
        assert_eq!(allowed(&done), [("shop/a", "0.1.0")], "shop/b never moved");
    }

    #[test]
    fn the_record_alone_carries_the_rollout_so_a_restart_resumes_it_unchanged() {
        let cp = upgrade_started().expect("upgrade");
        let steady = steady();
        let first = pass(&cp, "0.2.0", &steady, 10);
        // A new operator process reads the same status and sees the same cluster.
        let rolling = [fleet("shop/a", "0.2.0", false, true), steady[1].clone()];
        assert_eq!(
            pass(&first, "0.2.0", &rolling, 11),
            pass(&first, "0.2.0", &rolling, 11)
        );
        assert_eq!(pass(&first, "0.2.0", &rolling, 11).proxies, first.proxies);
        // A finished upgrade is history: later passes and restarts change nothing and look
        // at no fleet.
        let all = [
            fleet("shop/a", "0.2.0", true, true),
            fleet("shop/b", "0.2.0", true, true),
        ];
        let done = pass(&pass(&first, "0.2.0", &all, 20), "0.2.0", &all, 30);
        assert_eq!(done.phase, UpgradePhase::Complete);
        let after = next_upgrade(
            Some(&done),
            Some("0.2.0"),
            "0.2.0",
            &Gate::Passed(Vec::new()),
            &at(99),
            GATE,
        );
        assert_eq!(after.as_ref(), Some(&done));
        assert!(!upgrading(Some("0.2.0"), Some(&done), "0.2.0"));
        assert!(upgrading(Some("0.2.0"), Some(&done), "0.3.0"));
        assert!(
            !upgrading(None, None, "0.2.0"),
            "a fresh install has no fleets to roll"
        );
        assert_eq!(
            fleet_version(Some(&done), Some("0.2.0"), "shop/new", "0.2.0"),
            "0.2.0"
        );
    }

    #[test]
    fn a_fleet_is_observed_from_its_workload_and_its_gateways_programmed_condition() {
        let gateway = |observed: i64| {
            serde_json::json!({
                "metadata": {"namespace": "shop", "name": "a", "uid": "u-a", "generation": 2},
                "status": {"conditions": [
                    {"type": "Programmed", "status": "True", "observedGeneration": observed}
                ]}
            })
        };
        let deployment = serde_json::json!({
            "kind": "Deployment",
            "metadata": {
                "generation": 3,
                "labels": {crate::fleet::FLEET_GATEWAY_UID_LABEL: "u-a"},
                "annotations": {crate::fleet::OPERAND_VERSION_ANNOTATION: "0.2.0"}
            },
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        });
        let other = serde_json::json!({
            "kind": "DaemonSet",
            "metadata": {"generation": 1, "labels": {crate::fleet::FLEET_GATEWAY_UID_LABEL: "u-b"}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 1, "numberAvailable": 3}
        });
        let seen = observe_fleet(&gateway(2), &[other.clone(), deployment.clone()]);
        assert_eq!(seen, fleet("shop/a", "0.2.0", true, true));
        // Programmed for an older generation of the Gateway does not count.
        assert!(!observe_fleet(&gateway(1), std::slice::from_ref(&deployment)).programmed);
        // No workload of its own yet.
        let none = observe_fleet(&gateway(2), std::slice::from_ref(&other));
        assert_eq!((none.version, none.available), (None, false));
        assert!(!workload_available(&other), "a DaemonSet mid-rollout");
        let mut rolled = other;
        rolled["status"]["updatedNumberScheduled"] = 3.into();
        assert!(workload_available(&rolled));
    }

    #[test]
    fn each_fleet_step_a_halt_and_the_completion_are_events_once() {
        let cp = upgrade_started();
        assert!(step_events(None, cp.as_ref()).is_empty());
        let cp = cp.expect("upgrade");
        let steady = steady();
        let first = pass(&cp, "0.2.0", &steady, 10);
        let events = step_events(Some(&cp), Some(&first));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "UpgradingProxies");
        assert_eq!(events[0].gateway.as_deref(), Some("shop/a"));
        assert!(
            events[0].note.contains("shop/a may run 0.2.0"),
            "{}",
            events[0].note
        );
        assert!(step_events(Some(&first), Some(&pass(&first, "0.2.0", &steady, 11))).is_empty());
        let broken = [fleet("shop/a", "0.2.0", false, true), steady[1].clone()];
        let halted = pass(&first, "0.2.0", &broken, 100);
        let events = step_events(Some(&first), Some(&halted));
        assert_eq!(
            (events.len(), events[0].warning, events[0].reason),
            (1, true, "UpgradeHalted")
        );
        assert_eq!(events[0].gateway.as_deref(), Some("shop/a"));
        assert!(step_events(Some(&halted), Some(&pass(&halted, "0.2.0", &broken, 101))).is_empty());
        // The rollback's inherited entry (still at 0.2.0) is no step of its own.
        let back = rolled_back(&halted);
        assert!(step_events(Some(&halted), back.as_ref()).is_empty());
        let back = back.expect("rollback");
        let rolled = pass(&back, "0.1.0", &broken, 210);
        assert_eq!(step_events(Some(&back), Some(&rolled)).len(), 1);
        let done = pass(&rolled, "0.1.0", &steady, 220);
        let events = step_events(Some(&rolled), Some(&done));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "UpgradeComplete");
    }
}
