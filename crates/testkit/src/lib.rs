//! Test harness shared by corral's integration tests.
//!
//! - [`cluster`]: a real server (SQLite store, workers, plan applier) and
//!   real agents in this process, on loopback ports.
//! - [`eventually`]: wait for a condition with a deadline that CI can
//!   stretch (`CORRAL_TEST_PATIENCE=3` triples every deadline).

pub mod cluster;
pub mod eventually;

pub use cluster::{TestAgent, TestCluster};
pub use eventually::{eventually, patience};
pub mod procs;
