//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go does it: the operator,
//! and later each environment's control plane, run several replicas and only the lease holder
//! writes. [`election`] decides (pure, the clock is an input); [`lease`] reads and writes the
//! Lease with optimistic concurrency, so two candidates can never both win the same round.

pub mod election;
pub mod lease;
