//! The node agent: registers the node, heartbeats, watches its
//! allocations, runs their tasks through drivers, reports what it sees.
//!
//! - [`agent`]: the node loop (register, heartbeat, watch, report).
//! - [`alloc_runner`] / [`task_runner`]: one allocation / one task.
//! - [`driver`], [`cgroup`], [`containerd`], [`image`], [`killpoint`]:
//!   the node runtime, re-exported from [`corral_runtime`] under their old
//!   paths (the drivers and what they stand on; nothing there knows the
//!   runners).
//! - [`restart`]: the restart policy, as a pure state machine.
//! - [`checks`], [`health`]: health checks of allocations, and their
//!   deployment health.
//! - [`layout`]: the node's disk layout, and what survives an agent
//!   restart.
//! - [`logs`], [`http`]: task log files (the files are
//!   [`corral_runtime::logs`]; the upkeep is here) and the endpoint that
//!   serves them.
//! - [`volumes`]: the node's volumes (create, take over, move here,
//!   snapshots, stale copies set aside) over `corral_volumes`' providers.

pub mod agent;
pub mod alloc_runner;
pub mod checks;
pub mod config;
pub mod dns;
pub mod fingerprint;
pub mod health;
pub mod http;
pub mod layout;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod restart;
pub mod task_runner;
pub mod volumes;

pub use corral_runtime::{cgroup, containerd, driver, image, killpoint};

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;
