//! Who holds the lease (pure). A candidate acquires a lease that is free or expired, renews one
//! it holds, and otherwise stands by until the holder's lease would expire.

use std::time::{Duration, SystemTime};

/// What matters of a Lease for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub renew_time: Option<SystemTime>,
    pub duration: Duration,
    pub transitions: i32,
}

/// What a candidate should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take the lease (free, expired, or never created); `transitions` is the count to record.
    Acquire { transitions: i32 },
    /// Keep holding it.
    Renew,
    /// Someone else holds it until `until`.
    Standby { holder: String, until: SystemTime },
}

/// Decides for candidate `me` at `now`, given the lease as read (`None`: it does not exist).
pub fn decide(lease: Option<&LeaseState>, me: &str, now: SystemTime) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire { transitions: 0 };
    };
    match lease.holder.as_deref() {
        None | Some("") => Decision::Acquire {
            transitions: lease.transitions + 1,
        },
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            // A lease never renewed counts as expired: its holder never proved it is alive.
            let until = lease
                .renew_time
                .map(|t| t + lease.duration)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if until <= now {
                Decision::Acquire {
                    transitions: lease.transitions + 1,
                }
            } else {
                Decision::Standby {
                    holder: holder.to_owned(),
                    until,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn held_by(holder: &str, renewed_at: u64) -> LeaseState {
        LeaseState {
            holder: Some(holder.into()),
            renew_time: Some(T0 + Duration::from_secs(renewed_at)),
            duration: Duration::from_secs(15),
            transitions: 3,
        }
    }

    #[test]
    fn free_or_missing_leases_are_acquired() {
        assert_eq!(decide(None, "a", T0), Decision::Acquire { transitions: 0 });
        let mut free = held_by("", 0);
        free.holder = None;
        assert_eq!(
            decide(Some(&free), "a", T0),
            Decision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn holder_renews_and_others_wait_until_expiry() {
        let lease = held_by("a", 100);
        assert_eq!(
            decide(Some(&lease), "a", T0 + Duration::from_secs(110)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease), "b", T0 + Duration::from_secs(110)),
            Decision::Standby {
                holder: "a".into(),
                until: T0 + Duration::from_secs(115)
            }
        );
        assert_eq!(
            decide(Some(&lease), "b", T0 + Duration::from_secs(115)),
            Decision::Acquire { transitions: 4 }
        );
    }
}
