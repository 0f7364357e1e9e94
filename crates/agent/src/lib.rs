//! The node agent: registers the node, heartbeats, watches its
//! allocations, runs their tasks through drivers, reports what it sees.
//!
//! - [`agent`]: the node loop (register, heartbeat, watch, report).
//! - [`alloc_runner`] / [`task_runner`]: one allocation / one task.
//! - [`driver`]: the `Driver` trait and its implementations (`exec`).
//! - [`cgroup`]: cgroup v1/v2 behind a trait.
//! - [`restart`]: the restart policy, as a pure state machine.
//! - [`checks`], [`health`]: health checks of allocations, and their
//!   deployment health.
//! - [`persist`]: what survives an agent restart.
//! - [`logs`], [`http`]: task log files and the endpoint that serves them.

pub mod agent;
pub mod alloc_runner;
pub mod cgroup;
pub mod checks;
pub mod config;
pub mod containerd;
pub mod driver;
pub mod fingerprint;
pub mod health;
pub mod http;
pub mod image;
pub mod killpoint;
pub mod layout;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod restart;
pub mod task_runner;

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;
