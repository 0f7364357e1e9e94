//! Benchmarks that run the real thing in process.
//!
//! - [`scheduler`]: Nomad's C1M shape scaled to two cores: simulated nodes
//!   in five classes, jobs constrained to a class, through the real store,
//!   broker, workers and plan applier; SQLite against an in-memory store
//!   in the same run.
//! - [`heartbeat`]: what heartbeats of many nodes cost a real server
//!   process, against the same server idle.

pub mod heartbeat;
pub mod node;
pub mod proc;
pub mod scheduler;
