//! xDS: serving Envoy its configuration.
//!
//! - [`protocol`]: the per-connection ADS protocol state, state-of-the-world and delta (pure).
//! - [`envoy_config`]: typed Envoy configuration pieces and their packing into resources (pure).
//! - [`from_ir`]: a Gateway's IR to its Envoy snapshot (pure); [`authz_guard`]: the route
//!   tables that keep connections older than an ext_authz filter from bypassing it;
//!   `route_wire`: the common shape of route entry written straight to wire format.
//! - [`policy_config`]: Envoy Gateway policies as Envoy filters and settings (pure);
//!   [`policy_filters`]: API keys, external authorization, compression, rate limit selectors.
//! - [`client_traffic_config`]: ClientTrafficPolicy as listener settings (pure).
//! - [`bootstrap`]: the bootstrap a proxy starts from (pure).
//! - [`identity`]: which Gateway a proxy's client certificate lets it be served (pure).
//! - [`server`]: the tonic ADS service (I/O), grouping proxies by Gateway.

pub mod authz_guard;
pub mod bootstrap;
pub mod client_traffic_config;
pub mod envoy_config;
pub mod from_ir;
pub mod identity;
pub mod policy_config;
pub mod policy_filters;
pub mod protocol;
mod route_wire;
pub mod server;
