//! Allocation hooks: each concern of an allocation's life on this node
//! (its record on disk, its drivers' per-allocation setup, checks, health,
//! metrics; volumes, DNS and secrets next) is one hook, and the runner
//! calls every hook at the same points, in order:
//!
//! 1. `prerun`, in the order of [`hooks`], before any task runs: on a
//!    fresh allocation and when an agent restart adopts one
//!    (`view.recovering`). An error fails the allocation: no task runs,
//!    and `destroy` is called on the hooks whose `prerun` ran.
//! 2. `update`, when the server changes the allocation in place (tasks
//!    keep running).
//! 3. `postrun`, once every task is dead (stopped or failed).
//! 4. `destroy`, in reverse order, after `postrun`: undo what `prerun`
//!    made. The allocation is over on this node.
//!
//! When the agent shuts down and leaves the tasks running (detach), the
//! runner is dropped: no hook is called after `prerun`/`update`, and what
//! they spawned stops with the [`AllocView`]'s tasks. So a hook persists
//! what a restarted agent needs before it acts on it.
//!
//! Every hook sees the same [`AllocView`]: the allocation, its group, its
//! directory, and a live [`TaskView`] per task; what hooks report next to
//! the task states (checks, health) goes through the view's channels.

mod checks;
mod driver;
mod health;
mod metrics;
mod record;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use corral_types::{AllocHealth, Allocation, GroupSpec};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RunnerEnv;
use crate::checks::CheckStates;
use crate::driver::AllocContext;
use crate::layout::AllocDir;
use crate::task_runner::TaskView;

/// What every hook sees of the allocation.
pub struct AllocView {
    pub env: Arc<RunnerEnv>,
    pub dir: AllocDir,
    /// What drivers get.
    pub ctx: AllocContext,
    pub group: GroupSpec,
    /// The allocation as the server last sent it.
    pub alloc: watch::Receiver<Allocation>,
    /// Adopted after an agent restart (tasks may be running already).
    pub recovering: bool,
    /// Fires when the allocation is told to stop (or failed).
    pub stop: CancellationToken,
    /// The tasks that have a runner (a task that finished before an agent
    /// restart has none).
    pub tasks: BTreeMap<String, TaskView>,
    /// The checks' states, published by the checks hook.
    pub checks: Arc<watch::Sender<CheckStates>>,
    /// The deployment health verdict, published by the health hook.
    pub health: Arc<watch::Sender<Option<AllocHealth>>>,
    /// When the health watch of the current deployment started (kept in
    /// the record).
    pub health_watch: Arc<watch::Sender<Option<crate::health::WatchStart>>>,
    /// How far the volumes hook got (a move takes a while), reported with
    /// the allocation.
    pub volume_sync: Arc<watch::Sender<Option<corral_types::VolumeSync>>>,
}

/// A hook failed its `prerun`: the allocation cannot run here.
#[derive(Debug, thiserror::Error)]
#[error("{hook}: {message}")]
pub struct HookError {
    pub hook: &'static str,
    pub message: String,
}

/// One concern of an allocation's life; see the module documentation for
/// when each method is called.
#[async_trait]
pub trait AllocHook: Send {
    fn name(&self) -> &'static str;

    /// Before any task runs (also on adoption: `view.recovering`).
    async fn prerun(&mut self, _view: &AllocView) -> Result<(), HookError> {
        Ok(())
    }

    /// The server changed the allocation in place.
    async fn update(&mut self, _view: &AllocView, _alloc: &Allocation) {}

    /// Every task is dead.
    async fn postrun(&mut self, _view: &AllocView) {}

    /// The allocation is over here: undo what `prerun` made.
    async fn destroy(&mut self, _view: &AllocView) {}
}

/// The hooks of an allocation, in `prerun` order.
pub fn hooks() -> Vec<Box<dyn AllocHook>> {
    vec![
        Box::new(record::Record::default()),
        Box::new(volumes::Volumes::default()),
        Box::new(driver::Drivers::default()),
        Box::new(metrics::Metrics),
        Box::new(checks::Checks::default()),
        Box::new(health::Health::default()),
    ]
}

/// Runs `prerun` of every hook in order; on the first error, `destroy`
/// of those that ran (reverse order) and the error.
pub async fn prerun_all(
    hooks: &mut [Box<dyn AllocHook>],
    view: &AllocView,
) -> Result<(), HookError> {
    for i in 0..hooks.len() {
        if let Err(e) = hooks[i].prerun(view).await {
            tracing::warn!(alloc = %view.ctx.alloc_id, hook = hooks[i].name(), error = %e, "allocation hook failed");
            for h in hooks[..i].iter_mut().rev() {
                h.destroy(view).await;
            }
            return Err(e);
        }
    }
    Ok(())
}

pub async fn update_all(hooks: &mut [Box<dyn AllocHook>], view: &AllocView, alloc: &Allocation) {
    for h in hooks.iter_mut() {
        h.update(view, alloc).await;
    }
}

/// `postrun` in order, then `destroy` in reverse order.
pub async fn finish_all(hooks: &mut [Box<dyn AllocHook>], view: &AllocView) {
    for h in hooks.iter_mut() {
        h.postrun(view).await;
    }
    for h in hooks.iter_mut().rev() {
        h.destroy(view).await;
    }
}
