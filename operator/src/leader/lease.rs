//! The Lease I/O loop: every `retry_period` read the Lease, [`decide`], and write the result with
//! the resourceVersion that was read. A conflict means another candidate wrote first, so this
//! round is lost. Leadership is published on a watch channel; a holder that cannot renew within
//! its lease duration steps down before anyone else may take over.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

use super::election::{Decision, LeaseState, decide};

/// Lease parameters; client-go's defaults are 15 s / 2 s.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
}

fn to_system_time(t: &MicroTime) -> SystemTime {
    let micros = t.0.as_microsecond();
    match u64::try_from(micros) {
        Ok(m) => SystemTime::UNIX_EPOCH + Duration::from_micros(m),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn state_of(lease: &Lease) -> LeaseState {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseState {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.as_ref().map(to_system_time),
        duration: Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        ),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// One round: read, decide, write. Returns whether this candidate holds the lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
) -> Result<bool, kube::Error> {
    let existing = api.get_opt(&cfg.name).await?;
    let now = SystemTime::now();
    let decision = decide(existing.as_ref().map(state_of).as_ref(), &cfg.identity, now);
    let now_micro = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let write = match decision {
        Decision::Standby { .. } => return Ok(false),
        Decision::Renew => {
            let mut lease = existing.unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now_micro);
            spec.lease_duration_seconds = Some(seconds);
            lease
        }
        Decision::Acquire { transitions } => {
            let mut lease = existing.unwrap_or_else(|| Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Lease::default()
            });
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                acquire_time: Some(now_micro.clone()),
                renew_time: Some(now_micro),
                lease_duration_seconds: Some(seconds),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            });
            lease
        }
    };
    let result = if write.metadata.resource_version.is_some() {
        // replace carries the resourceVersion that was read: a concurrent writer makes it fail.
        api.replace(&cfg.name, &PostParams::default(), &write).await
    } else {
        api.create(&PostParams::default(), &write).await
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election until the task is dropped, publishing leadership on the returned channel.
pub fn run(
    client: Client,
    cfg: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_renewal: Option<Instant> = None;
        loop {
            let leading = match try_acquire_or_renew(&api, &cfg).await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    // Keep leading only until the renew deadline, two thirds into the lease, so
                    // this replica has stopped before another may take over.
                    last_renewal.is_some_and(|t| t.elapsed() < cfg.lease_duration * 2 / 3)
                }
            };
            if !leading {
                last_renewal = None;
            }
            if *tx.borrow() != leading {
                tracing::info!(identity = %cfg.identity, leading, "leadership changed");
                let _ = tx.send(leading);
            }
            tokio::time::sleep(cfg.retry_period).await;
        }
    });
    (rx, task)
}
