//! The control plane of one environment (`eg-operator controller`): the provider watches the
//! cluster, the translator turns snapshots into Envoy configuration, the xDS server serves it,
//! and the lease holder writes status.

pub mod config;
pub mod oidc_discovery;
pub mod process;
pub mod programmed;
pub mod provider;
pub mod publish;
pub mod run;
pub mod xds_tls;

/// Aborts a task when dropped, so helper tasks (status writer, certificate reloader, proxy
/// fleets) never outlive what started them.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
