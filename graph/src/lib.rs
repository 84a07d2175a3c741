//! The desired-state engine of eg-operator: a pure core with no client, no async and no I/O.
//!
//! It answers "what should exist, in which order, and what has to change to get there":
//! - [`object_ref`]: the identity every object is keyed by;
//! - [`graph`]: desired objects and their dependencies, validated into apply/prune waves;
//! - [`readiness`]: when a live object counts as ready, so the next wave may start;
//! - [`plan`]: the diff of desired against live objects, ownership-safe pruning, a
//!   `terraform plan`-like rendering and a pure model of applying a plan.
//!
//! The operator's executor (the I/O shell, written elsewhere) lists live objects, calls
//! [`plan()`], applies the steps with server-side apply and waits on [`Readiness`]. Keeping the
//! decisions here, free of the cluster, is what lets them be tested exhaustively with
//! fixtures and property tests.

pub mod graph;
pub mod object_ref;
mod path;
pub mod plan;
pub mod readiness;

pub use graph::{GraphBuilder, GraphError, Node, ResourceGraph};
pub use object_ref::{ObjectRef, ObjectRefError};
pub use plan::{Action, FieldChange, Ownership, Plan, Step, kind_rank, plan, simulate_apply};
pub use readiness::Readiness;
