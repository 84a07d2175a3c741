//! Helpers shared by this crate's integration tests.

#[macro_use]
pub mod golden;
pub mod standalone;
