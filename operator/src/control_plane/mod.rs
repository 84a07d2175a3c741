//! The control plane of one environment (`eg-operator controller`): the provider watches the
//! cluster, the translator turns snapshots into Envoy configuration, the xDS server serves it,
//! and the lease holder writes status.

pub mod config;
pub mod process;
pub mod programmed;
pub mod provider;
pub mod publish;
pub mod run;
pub mod xds_tls;
