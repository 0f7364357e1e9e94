//! corral's control plane.
//!
//! Write path: `api` validates and commits a job version plus an
//! evaluation in one transaction → the `broker` hands evaluations to
//! `worker`s (one in flight per job) → a worker runs the pure scheduler on
//! an immutable snapshot → the single `applier` re-checks the plan against
//! the latest state and commits it in one transaction → agents see their
//! allocations through a blocking query. `heartbeat` marks silent nodes
//! down, which creates evaluations that replace their allocations.

pub mod alerts;
pub mod api;
pub mod applier;
pub mod backups;
pub mod broker;
pub mod catalog;
pub mod config;
pub mod core;
pub mod deployments;
pub mod error;
pub mod events;
pub mod gc;
pub mod heartbeat;
pub mod maintenance;
pub mod metrics;
pub mod ops;
#[cfg(test)]
mod test_server;
pub mod usage;
pub mod views;
pub mod worker;

pub use config::ServerConfig;
pub use core::{Core, Server};
pub use error::ServerError;
