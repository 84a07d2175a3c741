//! The lifecycle of one `EnvoyGateway`: everything an environment needs, derived from its spec.
//!
//! Reconciling is a pipeline, each stage its own module and error type:
//! [`dereference`] (read what is live) → [`validate`] (pure) → [`certificates`] (pure, decides
//! which certificates to keep or issue) → [`build`] (pure, the desired
//! [`eg_graph::ResourceGraph`]) → [`apply`] (server-side apply in waves, then prune) → status.
//! [`upgrade`] orders and gates changes of `spec.version` (pre-flight, the control plane, then
//! the proxy fleets one Gateway at a time, health gates, halt, rollback).
//! [`names`] fixes the names and labels every stage agrees on; [`permissions`] derives the
//! operator's own RBAC from what these stages do.

pub mod apply;
pub mod build;
pub mod certificates;
pub mod controller;
pub mod dereference;
pub mod names;
pub mod permissions;
pub mod reconcile;
pub mod status;
pub mod upgrade;
pub mod validate;
pub mod versions;
