//! eg-operator: runs Envoy Gateway in production on Kubernetes.
//!
//! - [`environment`]: the lifecycle of one `EnvoyGateway`, as a pipeline of pure stages
//!   (validate, certificates, build) and I/O stages (dereference, apply).
//! - [`plan`]: `eg-operator plan`, the pure stages run offline.
//! - [`translate`]: Gateway API to the per-Gateway IR and statuses (pure).
//! - [`xds`]: the ADS protocol, Envoy configuration from the IR, the gRPC server.
//! - [`control_plane`]: the environment's control plane loop (provider, translation, status).
//! - [`fleet`]: the Envoy proxy fleet of each Gateway (settings, build, apply, status).
//! - [`metrics`] and [`serve`]: Prometheus metrics and the health endpoints.
//! - [`migrate`] and [`migrate_cmd`]: `migrate ingress-nginx`, Ingresses to Gateway API (pure
//!   core, I/O shell).
//! - [`bundle`]: the OLM bundle, catalog and install manifests, generated from the code.
//! - [`cli`] and [`telemetry`]: the binary's surface.

pub mod bundle;
pub mod cli;
pub mod control_plane;
pub mod environment;
pub mod fleet;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod migrate_cmd;
pub mod plan;
pub mod serve;
pub mod short_hash;
pub mod standalone;
pub mod telemetry;
pub mod translate;
pub mod translate_cmd;
pub mod xds;
