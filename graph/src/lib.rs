//! The desired-state engine of eg-operator (pure core, no client, no I/O).
//!
//! It will hold the resource graph, `plan(desired, live)` and the apply/prune ordering that the
//! operator's executor drives. This crate is only the workspace slot for it today: the engine is
//! built under its own issue ("Desired-state engine (graph/) and the EnvoyGateway lifecycle").
