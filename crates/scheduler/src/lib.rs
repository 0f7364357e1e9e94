//! The scheduler: a pure function from a read-only state snapshot and an
//! evaluation to a plan (Nomad's `Scheduler.Process(eval)`). No IO, no
//! tokio, no clock: ids and time come in through [`PlanContext`].
//!
//! - `reconcile`: desired (job spec) against actual (allocations).
//! - `feasible`: which nodes can take an allocation, and why not.
//! - `rank`: which feasible node is best (bin-pack, spread, anti-affinity).

use corral_types::{Allocation, Index, Job, Node, UnixMillis};

/// The read-only view of cluster state the scheduler works on. The store's
/// immutable snapshot implements it; tests implement it over plain vectors.
pub trait StateView {
    /// The state index this view reflects.
    fn index(&self) -> Index;
    /// The latest version of a job.
    fn job(&self, name: &str) -> Option<&Job>;
    /// A specific stored version of a job.
    fn job_version(&self, name: &str, version: u64) -> Option<&Job>;
    /// Every allocation of a job, terminal ones included.
    fn allocs_by_job(&self, job: &str) -> Vec<&Allocation>;
    /// Every allocation on a node, terminal ones included.
    fn allocs_by_node(&self, node_id: &str) -> Vec<&Allocation>;
    /// Every node, in a stable order (by id).
    fn nodes(&self) -> Vec<&Node>;
    fn node(&self, id: &str) -> Option<&Node>;
}

/// What the scheduler needs from the outside world, decided by the caller.
pub struct PlanContext<'a> {
    /// Fresh allocation ids.
    pub new_id: &'a mut dyn FnMut() -> String,
    pub now: UnixMillis,
}
