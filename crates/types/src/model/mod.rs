//! What the control plane stores. Desired state (written by the server) and
//! observed state (written by the agent) are separate fields with one writer
//! each; lifecycles are enums, never strings.

mod alloc;
mod deployment;
mod eval;
mod event;
mod job;
mod node;
mod plan;

pub use alloc::*;
pub use deployment::*;
pub use eval::*;
pub use event::*;
pub use job::*;
pub use node::*;
pub use plan::*;

/// Milliseconds since the Unix epoch. Timestamps are decided by the caller
/// before a write so store writes stay deterministic.
pub type UnixMillis = u64;

/// A store revision (etcd's `revision`, Nomad's raft index): every committed
/// write gets the next one.
pub type Index = u64;
