//! Leader election over a real Lease: of two candidates exactly one leads; when it stops
//! renewing, the other takes over once the lease expires, and the two never lead at once.

use std::time::{Duration, Instant};

use eg_e2e::with_temp_namespace;
use eg_operator::leader::lease::{LeaseConfig, run};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

#[tokio::test]
async fn one_leader_at_a_time_and_failover_after_expiry() {
    with_temp_namespace(|client, ns| async move {
        let cfg = |identity: &str| LeaseConfig {
            namespace: ns.clone(),
            name: "test-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
            retry_period: Duration::from_millis(100),
        };
        let (a, task_a) = run(client.clone(), cfg("a"));
        let (b, task_b) = run(client.clone(), cfg("b"));

        // Sample for a while: at most one leads at any time, and someone leads soon.
        let start = Instant::now();
        let mut first_leader = None;
        while start.elapsed() < Duration::from_secs(3) {
            let (la, lb) = (*a.borrow(), *b.borrow());
            assert!(!(la && lb), "both lead at once");
            if first_leader.is_none() && (la || lb) {
                first_leader = Some(if la { "a" } else { "b" });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let leader = first_leader.expect("a leader within 3 s");
        let lease: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let holder = lease
            .get("test-leader")
            .await?
            .spec
            .and_then(|s| s.holder_identity);
        assert_eq!(holder.as_deref(), Some(leader));

        // The leader stops (crash): the other takes over after the 2 s lease, not before.
        let (stopped_at, follower, follower_name) = if leader == "a" {
            task_a.abort();
            (Instant::now(), b.clone(), "b")
        } else {
            task_b.abort();
            (Instant::now(), a.clone(), "a")
        };
        while !*follower.borrow() {
            assert!(stopped_at.elapsed() < Duration::from_secs(6), "no failover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failover = stopped_at.elapsed();
        assert!(
            failover >= Duration::from_millis(1500),
            "took over too early: {failover:?}"
        );
        let spec = lease.get("test-leader").await?.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(follower_name));
        assert_eq!(spec.lease_transitions, Some(1));
        eprintln!("failover after {failover:?}");
        task_a.abort();
        task_b.abort();
        Ok(())
    })
    .await;
}
