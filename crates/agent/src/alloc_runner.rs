//! [`AllocRunner`]: one allocation on this node. It prepares the
//! allocation with its driver(s), runs one [`TaskRunner`] per task, folds
//! their states into the allocation's observed status, persists them (so
//! restart counters survive an agent restart) and reports every change.
//!
//! Two ways to end: `stop()` stops the tasks (the server asked); the
//! `detach` token drops the runner and leaves the tasks running (the agent
//! is shutting down and its successor adopts them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use corral_types::{
    AllocHealth, AllocUpdate, Allocation, ClientStatus, GroupSpec, TaskLifecycle, TaskState,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Drivers, Shared};
use crate::driver::{AllocContext, TaskContext, TaskHandle};
use crate::logs;
use crate::persist::{self, PersistedAlloc};
use crate::task_runner::{HandleSink, TaskOutcome, TaskRunner};
use crate::{checks, health};

/// What every runner needs from the agent.
pub struct RunnerEnv {
    pub shared: Arc<Shared>,
    pub drivers: Drivers,
    pub updates: mpsc::UnboundedSender<AllocUpdate>,
    pub node_id: String,
}

pub struct AllocRunner {
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
        let d = done.clone();
        let s = stop.clone();
        tracker.spawn(async move {
            let id = alloc.id.clone();
            let stopping = s.clone();
            let run = async {
                if wait_for_previous(&env, &alloc, wait_for, &s).await {
                    run(env.clone(), alloc, group, recovering, s, alloc_rx).await;
                }
            };
            tokio::pin!(run);
            tokio::select! {
                _ = &mut run => {}
                // Dropping the run future leaves the tasks running; but a
                // stop in progress is finished: dropped, it would cancel
                // the runtime's stop and teardown half-way.
                _ = detach.cancelled() => {
                    if stopping.is_cancelled() {
                        run.await;
                    }
                }
            }
            env.shared.set_active(&id, false);
            d.store(true, Ordering::SeqCst);
            finished_tx.send_replace(true);
        });
        AllocRunner {
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
        self.stop.is_cancelled()
    }

    /// The host ports its allocation holds.
    pub fn ports(&self) -> Vec<u16> {
        self.alloc.borrow().ports.values().copied().collect()
    }

    /// Stop the allocation's tasks (kill_timeout honoured) and clean up.
    pub fn stop(&self) {
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
    let all = futures::future::join_all(wait_for.into_iter().map(|mut rx| async move {
        // A closed channel means its runner is gone: nothing to wait for.
        let _ = rx.wait_for(|f| *f).await;
    }));
    tokio::select! {
        _ = all => true,
        _ = stop.cancelled() => {
            let _ = env.updates.send(AllocUpdate {
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

/// Persists each task's handle next to the allocation record.
struct DiskSink {
    dir: std::path::PathBuf,
    task: String,
}

#[async_trait]
impl HandleSink for DiskSink {
    async fn save(&self, handle: &TaskHandle) -> std::io::Result<()> {
        persist::save_handle(&self.dir, &self.task, handle)
    }
    async fn remove(&self, _handle: &TaskHandle) -> std::io::Result<()> {
        Ok(())
    }
}

/// The environment a task sees: its spec's env plus `CORRAL_*` facts.
pub fn task_env(
    alloc: &Allocation,
    group: &GroupSpec,
    task: &str,
    env: &BTreeMap<String, String>,
    alloc_dir: &Path,
) -> BTreeMap<String, String> {
    let mut out = env.clone();
    out.insert("CORRAL_JOB".into(), alloc.job.clone());
    out.insert("CORRAL_GROUP".into(), alloc.group.clone());
    out.insert("CORRAL_TASK".into(), task.to_string());
    out.insert("CORRAL_ALLOC_ID".into(), alloc.id.clone());
    out.insert("CORRAL_ALLOC_INDEX".into(), alloc.index.to_string());
    out.insert("CORRAL_ALLOC_NAME".into(), alloc.name());
    out.insert("CORRAL_NODE_ID".into(), alloc.node_id.clone());
    out.insert("CORRAL_ALLOC_DIR".into(), alloc_dir.display().to_string());
    for (t, name, _) in group.ports() {
        if let Some(p) = alloc.ports.get(&format!("{t}.{name}")) {
            out.insert(GroupSpec::port_env_var(name), p.to_string());
        }
    }
    out
}

async fn run(
    env: Arc<RunnerEnv>,
    alloc: Allocation,
    group: GroupSpec,
    recovering: bool,
    stop: CancellationToken,
    mut alloc_rx: watch::Receiver<Allocation>,
) {
    let dir = env.shared.alloc_dir(&alloc.id);
    let report = |client: ClientStatus, tasks: BTreeMap<String, TaskState>, message: String| {
        let _ = env.updates.send(AllocUpdate {
            id: alloc.id.clone(),
            client,
            tasks,
            message,
            checks: BTreeMap::new(),
            health: None,
        });
    };
    let record = PersistedAlloc {
        alloc: alloc.clone(),
        group: group.clone(),
    };
    if let Err(e) = persist::save_alloc(&dir, &record) {
        report(
            ClientStatus::Failed,
            BTreeMap::new(),
            format!(
                "cannot write the allocation directory {}: {e}",
                dir.display()
            ),
        );
        return;
    }
    let actx = AllocContext {
        alloc_id: alloc.id.clone(),
        job: alloc.job.clone(),
        group: alloc.group.clone(),
        index: alloc.index,
        node_id: env.node_id.clone(),
        alloc_dir: dir.clone(),
        ports: alloc.ports.clone(),
    };
    let kinds: BTreeSet<_> = group.tasks.iter().map(|t| t.driver).collect();
    for k in &kinds {
        let Some(driver) = env.drivers.get(k) else {
            report(
                ClientStatus::Failed,
                BTreeMap::new(),
                format!("driver {k} is not available on this node"),
            );
            let _ = persist::remove_alloc(&dir);
            return;
        };
        if let Err(e) = driver.prepare_alloc(&actx).await {
            report(
                ClientStatus::Failed,
                BTreeMap::new(),
                format!("cannot prepare the allocation: {e}"),
            );
            let _ = driver.cleanup_alloc(&actx).await;
            let _ = persist::remove_alloc(&dir);
            return;
        }
    }

    // One runner per task. Dropping the JoinSet (detach) aborts the runner
    // futures, not the tasks they run.
    let mut states: BTreeMap<String, watch::Receiver<TaskState>> = BTreeMap::new();
    let mut links: BTreeMap<String, checks::TaskLink> = BTreeMap::new();
    let mut joins = tokio::task::JoinSet::new();
    for task in &group.tasks {
        let Some(driver) = env.drivers.get(&task.driver).cloned() else {
            continue;
        };
        let task_dir = dir.join(&task.name);
        let _ = std::fs::create_dir_all(&task_dir);
        let _ = std::fs::create_dir_all(logs::log_dir(&dir));
        let ctx = TaskContext {
            alloc: actx.clone(),
            task: task.clone(),
            env: task_env(&alloc, &group, &task.name, &task.env, &dir),
            task_dir,
            stdout_path: logs::log_file(&dir, &task.name),
            stderr_path: logs::log_file(&dir, &task.name),
        };
        let sink = Arc::new(DiskSink {
            dir: dir.clone(),
            task: task.name.clone(),
        });
        let (restart_tx, restart_rx) = mpsc::unbounded_channel();
        let link_driver = driver.clone();
        let mut runner = TaskRunner::new(driver, ctx, group.restart, sink, stop.child_token())
            .with_restart_requests(restart_rx);
        if recovering {
            let previous = persist::load_task_state(&dir, &task.name).unwrap_or_default();
            if previous.state == TaskLifecycle::Dead {
                // Finished before the agent went away: nothing to run.
                let (tx, rx) = watch::channel(previous);
                drop(tx);
                states.insert(task.name.clone(), rx);
                continue;
            }
            runner = match persist::load_handle(&dir, &task.name) {
                Some(h) => runner.recovering(h, previous),
                // No process to re-attach to: start again, restarts kept
                // (issue 13, case 3: the count went back to its start).
                None => runner.resuming(previous),
            };
        }
        states.insert(task.name.clone(), runner.subscribe());
        links.insert(
            task.name.clone(),
            checks::TaskLink {
                driver: link_driver,
                state: runner.subscribe(),
                handle: runner.subscribe_handle(),
                restart: restart_tx,
            },
        );
        env.shared
            .metrics
            .track(&actx, task, &env.drivers, runner.subscribe());
        let name = task.name.clone();
        joins.spawn(async move { (name, runner.run().await) });
    }

    // Health checks, and the deployment health they lead to. Dropping
    // these guards (the end of the run, or detach) stops them.
    let (mut checks_rx, _check_loops) = checks::spawn(
        checks::plan(&group),
        &links,
        group.network,
        alloc.ports.clone(),
    );
    let (health_tx, mut health_rx) = watch::channel(None);
    let mut watchers = tokio::task::JoinSet::new();
    watchers.spawn(health::watch(
        alloc_rx.clone(),
        group.update,
        states.clone(),
        checks_rx.clone(),
        group.has_checks(),
        health_tx,
        stop.clone(),
    ));

    let mut last_sent: Option<Sent> = None;
    let mut failure: Option<String> = None;
    let send = |states: &BTreeMap<String, watch::Receiver<TaskState>>,
                failure: &Option<String>,
                finished: bool,
                checks: &watch::Receiver<checks::CheckStates>,
                health: &watch::Receiver<Option<AllocHealth>>,
                last_sent: &mut Option<Sent>| {
        let tasks: BTreeMap<String, TaskState> = states
            .iter()
            .map(|(k, v)| (k.clone(), v.borrow().clone()))
            .collect();
        for (name, s) in &tasks {
            let _ = persist::save_task_state(&dir, name, s);
        }
        let sent = Sent {
            client: fold(&tasks, failure.is_some(), finished),
            tasks,
            checks: checks.borrow().clone(),
            health: health.borrow().clone(),
        };
        if last_sent.as_ref() != Some(&sent) {
            let _ = env.updates.send(AllocUpdate {
                id: alloc.id.clone(),
                client: sent.client,
                tasks: sent.tasks.clone(),
                message: failure.clone().unwrap_or_default(),
                checks: sent.checks.clone(),
                health: sent.health.clone(),
            });
            *last_sent = Some(sent);
        }
    };
    send(
        &states,
        &failure,
        false,
        &checks_rx,
        &health_rx,
        &mut last_sent,
    );
    let mut changes = futures::stream::select_all(
        states
            .values()
            .map(|rx| tokio_stream::wrappers::WatchStream::from_changes(rx.clone())),
    );
    // A watch whose sender is gone (no checks, the health watch done, the
    // allocation's record dropped) answers at once forever: stop polling
    // it, or this loop spins.
    let (mut alloc_open, mut checks_open, mut health_open) = (true, true, true);
    loop {
        let changed = changes.next();
        tokio::select! {
            Some(_) = changed => {
                send(&states, &failure, false, &checks_rx, &health_rx, &mut last_sent);
            }
            r = joins.join_next(), if !joins.is_empty() => {
                match r {
                    Some(Ok((name, TaskOutcome::Failed { reason }))) => {
                        // One task gave up: the allocation failed; stop the rest.
                        failure.get_or_insert(format!("task {name}: {reason}"));
                        stop.cancel();
                    }
                    Some(Ok((_, TaskOutcome::Stopped))) => {}
                    Some(Err(e)) => {
                        failure.get_or_insert(format!("task runner crashed: {e}"));
                        stop.cancel();
                    }
                    None => {}
                }
                send(&states, &failure, false, &checks_rx, &health_rx, &mut last_sent);
            }
            r = alloc_rx.changed(), if alloc_open => {
                alloc_open = r.is_ok();
                if r.is_ok() {
                    let a = alloc_rx.borrow().clone();
                    let _ = persist::save_alloc(&dir, &PersistedAlloc { alloc: a, group: group.clone() });
                }
            }
            // Checks are reported when a status changes, not every probe.
            r = checks_rx.changed(), if checks_open => {
                checks_open = r.is_ok();
                let reported = last_sent.as_ref().map(|s| &s.checks);
                if r.is_ok()
                    && reported.is_none_or(|old| checks::worth_reporting(old, &checks_rx.borrow()))
                {
                    send(&states, &failure, false, &checks_rx, &health_rx, &mut last_sent);
                }
            }
            r = health_rx.changed(), if health_open => {
                health_open = r.is_ok();
                if r.is_ok() {
                    // Kept in the record: a restarted agent does not decide again.
                    let health = health_rx.borrow().clone();
                    if health.is_some() {
                        let mut a = alloc_rx.borrow().clone();
                        a.health = health;
                        let _ = persist::save_alloc(&dir, &PersistedAlloc { alloc: a, group: group.clone() });
                    }
                    send(&states, &failure, false, &checks_rx, &health_rx, &mut last_sent);
                }
            }
            // Nothing left to wait on: the check below ends the loop.
            else => {}
        }
        if joins.is_empty() {
            break;
        }
    }
    for k in &kinds {
        if let Some(d) = env.drivers.get(k)
            && let Err(e) = d.cleanup_alloc(&actx).await
        {
            tracing::warn!(alloc = %alloc.id, error = %e, "allocation cleanup failed");
        }
    }
    send(
        &states,
        &failure,
        true,
        &checks_rx,
        &health_rx,
        &mut last_sent,
    );
    if let Err(e) = persist::remove_alloc(&dir) {
        tracing::warn!(alloc = %alloc.id, error = %e, "cannot remove the allocation record");
    }
}

/// What was last reported for the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    client: ClientStatus,
    tasks: BTreeMap<String, TaskState>,
    checks: checks::CheckStates,
    health: Option<AllocHealth>,
}

/// The allocation's observed status from its tasks' states.
pub fn fold(tasks: &BTreeMap<String, TaskState>, failed: bool, finished: bool) -> ClientStatus {
    if finished || tasks.values().all(|t| t.state == TaskLifecycle::Dead) {
        return if failed || tasks.values().any(|t| t.failed) {
            ClientStatus::Failed
        } else {
            ClientStatus::Complete
        };
    }
    // A task waiting for its restart runs nothing: as Nomad, the
    // allocation is pending until every task runs again (a task that never
    // starts is never reported running).
    if tasks
        .values()
        .any(|t| matches!(t.state, TaskLifecycle::Pending | TaskLifecycle::Restarting))
    {
        ClientStatus::Pending
    } else {
        ClientStatus::Running
    }
}

#[cfg(test)]
#[path = "alloc_runner_tests.rs"]
mod tests;
