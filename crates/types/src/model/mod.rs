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
mod volume;

pub use alloc::*;
pub use deployment::*;
pub use eval::*;
pub use event::*;
pub use job::*;
pub use node::*;
pub use plan::*;
pub use volume::*;

/// Milliseconds since the Unix epoch. Timestamps are decided by the caller
/// before a write so store writes stay deterministic.
pub type UnixMillis = u64;

/// Unix time now, in milliseconds: the one clock read of every crate (the
/// scheduler never reads it; it gets `now` from its caller).
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A store revision (etcd's `revision`, Nomad's raft index): every committed
/// write gets the next one.
pub type Index = u64;
