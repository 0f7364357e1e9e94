//! [`AllocRunner`]: one allocation on this node. It runs one
//! [`crate::task_runner::TaskRunner`] per task and the allocation's hooks
//! ([`hooks`]: record, drivers' setup, metrics, checks, health) around
//! them, folds the tasks' states into the allocation's observed status and
//! reports every change ([`status`]).
//!
//! Two ways to end: `stop()` stops the tasks (the server asked); the
//! `detach` token drops the runner and leaves the tasks running (the agent
//! is shutting down and its successor adopts them). A runner told to stop
//! finishes stopping even when detached: a half-done stop would leave what
//! it was tearing down behind.

pub mod hooks;
mod run;
pub mod status;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use corral_types::{AllocUpdate, Allocation, ClientStatus, GroupSpec};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::node::{Drivers, Shared};

pub use status::fold;
pub use tasks::task_env;

/// What every runner needs from the agent.
pub struct RunnerEnv {
    pub shared: Arc<Shared>,
    pub drivers: Drivers,
    pub updates: mpsc::UnboundedSender<AllocUpdate>,
    pub node_id: String,
    /// The node DNS, as every pod's resolver (`None`: the runtime's
    /// default).
    pub pod_dns: Option<crate::driver::PodDns>,
}

pub struct AllocRunner {
    /// The server asked to stop: the tasks stop after the services'
    /// `shutdown_delay` (see [`AllocRunner::stop`]).
    requested: CancellationToken,
    stop: CancellationToken,
    done: Arc<AtomicBool>,
    /// `true` once the runner finished (tasks stopped and cleaned up, or
    /// detached).
    finished: watch::Receiver<bool>,
    alloc: watch::Sender<Allocation>,
}

impl AllocRunner {
    /// `wait_for`: the runners of allocations stopping on this node that
    /// are in this one's way (the one it replaces, those holding a port it
    /// needs). It starts only once they have finished (Nomad's
    /// previous-allocation watcher), so a static host port or a file the
    /// old one holds is free.
    pub fn spawn(
        tracker: &TaskTracker,
        env: Arc<RunnerEnv>,
        alloc: Allocation,
        group: GroupSpec,
        recovering: bool,
        detach: CancellationToken,
        wait_for: Vec<watch::Receiver<bool>>,
    ) -> AllocRunner {
        let stop = CancellationToken::new();
        let done = Arc::new(AtomicBool::new(false));
        let (finished_tx, finished) = watch::channel(false);
        let (alloc_tx, alloc_rx) = watch::channel(alloc.clone());
        env.shared.set_active(&alloc.id, true);
        let requested = CancellationToken::new();
        let delay = shutdown_delay(&group);
        let d = done.clone();
        let s = stop.clone();
        let r = requested.clone();
        tracker.spawn(async move {
            let id = alloc.id.clone();
            let delayed_stop = delayed_stop(r, s.clone(), alloc_rx.clone(), delay);
            tokio::select! {
                _ = async {
                    if wait_for_previous(&env, &alloc, wait_for, &s).await {
                        run::run(env.clone(), alloc, group, recovering, s.clone(), alloc_rx).await;
                    }
                } => {}
                // Ends with the runner (or its detach): a runner that ended
                // or left its tasks to a successor leaves no waiting task.
                _ = delayed_stop => {}
                // Dropping the run future leaves the tasks running; not
                // once they are being stopped.
                _ = async {
                    detach.cancelled().await;
                    if s.is_cancelled() {
                        std::future::pending::<()>().await;
                    }
                } => {}
            }
            env.shared.set_active(&id, false);
            d.store(true, Ordering::SeqCst);
            finished_tx.send_replace(true);
        });
        AllocRunner {
            requested,
            stop,
            done,
            finished,
            alloc: alloc_tx,
        }
    }

    /// Follows whether the runner finished.
    pub fn finished(&self) -> watch::Receiver<bool> {
        self.finished.clone()
    }

    /// Whether it was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.requested.is_cancelled() || self.stop.is_cancelled()
    }

    /// The host ports its allocation holds.
    pub fn ports(&self) -> Vec<u16> {
        self.alloc.borrow().ports.values().copied().collect()
    }

    /// The server stopped the allocation: stop its tasks (kill_timeout
    /// honoured) once its services' `shutdown_delay` has passed, and clean
    /// up.
    pub fn stop(&self) {
        self.requested.cancel();
    }

    /// Stop the tasks now, without the services' `shutdown_delay` (the
    /// agent itself is shutting down: no router sent it away first).
    pub fn stop_now(&self) {
        self.stop.cancel();
    }

    /// The server changed the allocation in place (e.g. a new job version
    /// that only changed `count`): record it, the tasks keep running.
    pub fn update(&self, alloc: Allocation) {
        self.alloc.send_if_modified(|cur| {
            let changed = *cur != alloc;
            *cur = alloc;
            changed
        });
    }

    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// What a new allocation reports while it waits for those in its way.
pub const WAITING_FOR_PREVIOUS: &str = "waiting for the allocations in its way on this node to stop (the one it replaces, or one holding a host port it needs)";

/// Wait until the allocations in `alloc`'s way on this node have finished;
/// false (and reported complete) when `alloc` is stopped meanwhile.
async fn wait_for_previous(
    env: &RunnerEnv,
    alloc: &Allocation,
    wait_for: Vec<watch::Receiver<bool>>,
    stop: &CancellationToken,
) -> bool {
    if wait_for.is_empty() {
        return true;
    }
    tracing::info!(alloc = %alloc.id, previous = ?alloc.previous, n = wait_for.len(),
        "waiting for the allocations in its way on this node to stop");
    // Said to the server too: `corral status` tells why it is pending.
    let _ = env.updates.send(AllocUpdate {
        volume_sync: Default::default(),
        id: alloc.id.clone(),
        client: ClientStatus::Pending,
        tasks: BTreeMap::new(),
        message: WAITING_FOR_PREVIOUS.into(),
        checks: BTreeMap::new(),
        health: None,
    });
    let all = futures::future::join_all(wait_for.into_iter().map(|mut rx| async move {
        // A closed channel means its runner is gone: nothing to wait for.
        let _ = rx.wait_for(|f| *f).await;
    }));
    tokio::select! {
        _ = all => true,
        _ = stop.cancelled() => {
            let _ = env.updates.send(AllocUpdate { volume_sync: Default::default(),
                id: alloc.id.clone(),
                client: ClientStatus::Complete,
                tasks: BTreeMap::new(),
                message: "stopped before it started on this node".into(),
                checks: BTreeMap::new(),
                health: None,
            });
            false
        }
    }
}

#[cfg(test)]
mod tests;

/// Routers and node DNS drop the endpoint as soon as the server stops the
/// allocation (`requested`); its tasks get their signal (`stop`) `delay`
/// later, so requests already sent to it finish. Never returns: it runs
/// beside the runner and goes with it.
async fn delayed_stop(
    requested: CancellationToken,
    stop: CancellationToken,
    alloc: watch::Receiver<Allocation>,
    delay: std::time::Duration,
) {
    tokio::select! {
        _ = requested.cancelled() => {
            let serving = alloc.borrow().client == ClientStatus::Running;
            if serving && !delay.is_zero() {
                tracing::info!(alloc = %alloc.borrow().id, ?delay, "stopping after the services' shutdown_delay");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
            }
            stop.cancel();
        }
        _ = stop.cancelled() => {}
    }
    std::future::pending::<()>().await;
}

/// How long a stopped allocation of `group` keeps serving: the longest
/// `shutdown_delay` of its services.
fn shutdown_delay(group: &GroupSpec) -> std::time::Duration {
    let ms = group
        .services
        .iter()
        .map(|s| s.shutdown_delay.0)
        .max()
        .unwrap_or(0);
    std::time::Duration::from_millis(ms)
}
