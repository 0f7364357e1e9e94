//! The scheduler: a pure function from a read-only state snapshot and an
//! evaluation to a plan (Nomad's `Scheduler.Process(eval)`). No IO, no
//! tokio, no clock, no OS randomness: ids and time come in through
//! [`PlanContext`], and every "random" choice is a hash of the eval id.
//!
//! - [`reconcile`]: desired (job spec) against actual (allocations).
//! - [`feasible`]: which nodes can take an allocation, and why not.
//! - [`rank`]: which feasible node is best (bin-pack, spread, anti-affinity).
//! - [`select`]: walks the nodes for each placement, with per-plan
//!   accounting ([`usage`]) so placements of one plan see each other.
//! - [`fits`]: the plan applier's re-check against the latest state.

use corral_types::{
    Allocation, Deployment, Evaluation, Index, Job, Node, Plan, UnixMillis, Volume,
};

pub mod config;
pub mod deployment;
pub mod failure;
pub mod feasible;
mod fits;
mod hash;
pub mod ports;
pub mod rank;
pub mod reconcile;
pub mod select;
pub mod usage;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use config::{Algorithm, SchedulerConfig};
pub use fits::fits;

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
    /// The job's newest deployment, if it ever had one.
    fn latest_deployment(&self, job: &str) -> Option<&Deployment>;
    /// One allocation by id.
    fn alloc(&self, id: &str) -> Option<&Allocation>;
    /// A volume by id (`GroupSpec::volume_id`): which node holds it.
    fn volume(&self, _id: &str) -> Option<&Volume> {
        None
    }
    /// What the live allocations on a node hold (cpu, memory, ports; no
    /// group counts). Stores keep it as allocations change, so placement
    /// does not sum a node's allocations at every visit; this default
    /// sums them.
    fn node_usage(&self, node_id: &str) -> usage::NodeUsage {
        usage::NodeUsage::from_allocs(self.allocs_by_node(node_id), "", |_| false)
    }
}

/// What the scheduler needs from the outside world, decided by the caller.
pub struct PlanContext<'a> {
    /// Fresh allocation ids.
    pub new_id: &'a mut dyn FnMut() -> String,
    pub now: UnixMillis,
}

/// Compute the plan for one evaluation with the default configuration
/// (bin-pack).
pub fn schedule(state: &dyn StateView, eval: &Evaluation, ctx: &mut PlanContext) -> Plan {
    schedule_with(&SchedulerConfig::default(), state, eval, ctx)
}

/// Compute the plan for one evaluation: reconcile the job's allocations
/// with its latest version, then place what is missing.
pub fn schedule_with(
    config: &SchedulerConfig,
    state: &dyn StateView,
    eval: &Evaluation,
    ctx: &mut PlanContext,
) -> Plan {
    let rec = reconcile::reconcile(state, &eval.job, ctx.now, ctx.new_id);
    let mut plan = Plan {
        eval_id: eval.id.clone(),
        job: eval.job.clone(),
        snapshot_index: state.index(),
        stop: rec.stops,
        in_place: rec.in_place,
        deployments: rec.deployments,
        wake_at: rec.wake_at,
        ..Plan::default()
    };
    if let Some(job) = state.job(&eval.job)
        && !rec.places.is_empty()
    {
        select::place_all(config, state, job, &eval.id, rec.places, ctx, &mut plan);
    }
    plan
}
