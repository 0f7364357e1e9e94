//! Test harness shared by corral's integration tests.
//!
//! - [`cluster`]: a real server (SQLite store, workers, plan applier) and
//!   real agents in this process, on loopback ports.
//! - [`containers`]: a private containerd per test, test images, a local
//!   registry, and checks that nothing is left behind.
//! - [`eventually`]: wait for a condition with a deadline that CI can
//!   stretch (`CORRAL_TEST_PATIENCE=3` triples every deadline).
//! - [`jobs`]: waiting on jobs, allocations and logs through the API.

pub mod cluster;
pub mod containers;
pub mod eventually;
pub mod jobs;
pub mod netns;
pub mod prereq;

pub use cluster::{TestAgent, TestCluster};
pub use eventually::{eventually, patience};
pub mod procs;
