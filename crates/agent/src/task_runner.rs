//! [`TaskRunner`]: owns one task of one allocation on this node.
//!
//! It starts the task through its [`Driver`], persists the handle through a
//! [`TaskStore`], waits for the exit, asks the [`RestartTracker`] what to
//! do, sleeps the restart delay (interruptible) and starts again, until the
//! policy gives up or the [`CancellationToken`] fires. Every change of the
//! task's [`TaskState`] is published on a `watch` channel.
//!
//! `TaskState` fields while the runner works:
//! - `state`: Pending (before the first start) -> Running -> Restarting
//!   (waiting for the delay) -> Running ... -> Dead;
//! - `restarts`: restarts decided so far (counted at the exit the policy
//!   answers with a restart, before its delay, as Nomad counts them);
//! - `exit_code`, `oom_killed`, `finished_at`: the most recent exit (kept
//!   while the restarted task runs, so people see why it restarted);
//! - `started_at`: the most recent start;
//! - `message`: a sentence about the latest change.
//!
//! What survives a kill -9 of the agent, and in which order it is written
//! (each before the runner acts on it), so that nothing runs twice and no
//! exit is counted twice or lost:
//! 1. the handle, right after the start returns;
//! 2. the restart record (counter, window, when a decided restart is due),
//!    after every restart decision and before the run it ends is
//!    destroyed, and again after the start it led to.
//!
//! After an agent restart the runner continues in one of two ways:
//! [`TaskRunner::recovering`] (a handle was saved: re-attach, or count the
//! exit that happened meanwhile) or [`TaskRunner::resuming`] (no handle:
//! whatever a start cut short left behind is cleared, a pending restart
//! waits out the rest of its delay, then the task starts again).
//!
//! Health checks hook in twice: the runner publishes the current handle
//! ([`TaskRunner::subscribe_handle`], `None` while the task does not run),
//! and takes restart requests ([`TaskRunner::with_restart_requests`]): the
//! task is stopped and the request counts as an exit, so the restart
//! policy decides (delay, attempts) and `restarts` counts it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral_types::{RestartPolicy, TaskLifecycle, TaskState};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, ExitResult, TaskContext, TaskHandle, now_unix_ms};
use crate::layout::RestartRecord;
use crate::restart::{RestartDecision, RestartTracker};

/// Message of a task found dead when the agent tries to re-attach to it.
pub const EXITED_WHILE_AWAY: &str = "exited while the agent was away";

/// Where the runner persists what a restarted agent needs (the agent
/// writes it as JSON into the allocation's directory).
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Called after every successful start, before the task is reported
    /// running.
    async fn save_handle(&self, handle: &TaskHandle) -> std::io::Result<()>;
    /// Called once the task run is destroyed: the handle is of no use any
    /// more.
    async fn remove_handle(&self, handle: &TaskHandle) -> std::io::Result<()>;
    /// Called after every restart decision, before the runner acts on it,
    /// and after the start it led to.
    async fn save_restarts(&self, record: &RestartRecord) -> std::io::Result<()>;
}

/// Keeps it in memory (tests, or a caller that does not persist).
#[derive(Debug, Default)]
pub struct MemorySink {
    current: Mutex<Option<TaskHandle>>,
    saved: Mutex<Vec<TaskHandle>>,
    restarts: Mutex<Option<RestartRecord>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }
    /// The handle saved and not removed yet.
    pub fn current(&self) -> Option<TaskHandle> {
        locked(&self.current).clone()
    }
    /// Every handle ever saved.
    pub fn saved(&self) -> Vec<TaskHandle> {
        locked(&self.saved).clone()
    }
    /// The last restart record saved.
    pub fn restarts(&self) -> Option<RestartRecord> {
        locked(&self.restarts).clone()
    }
}

#[async_trait]
impl TaskStore for MemorySink {
    async fn save_handle(&self, handle: &TaskHandle) -> std::io::Result<()> {
        *locked(&self.current) = Some(handle.clone());
        locked(&self.saved).push(handle.clone());
        Ok(())
    }
    async fn remove_handle(&self, handle: &TaskHandle) -> std::io::Result<()> {
        let mut cur = locked(&self.current);
        if cur.as_ref().is_some_and(|h| h.id == handle.id) {
            *cur = None;
        }
        Ok(())
    }
    async fn save_restarts(&self, record: &RestartRecord) -> std::io::Result<()> {
        *locked(&self.restarts) = Some(record.clone());
        Ok(())
    }
}

/// A request to restart a task in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRequest {
    pub reason: String,
    /// From a user (`corral alloc restart`): at once, counted in the task's
    /// restarts but not against its restart policy (a check's request goes
    /// through the policy like an exit).
    pub by_user: bool,
}

/// The live view of one task that the allocation's hooks get (checks,
/// health, metrics): its state, its current run's handle, its driver, and
/// a way to ask for a restart.
#[derive(Clone)]
pub struct TaskView {
    pub driver: Arc<dyn Driver>,
    pub state: watch::Receiver<TaskState>,
    /// The task's current handle (`None` while it does not run).
    pub handle: watch::Receiver<Option<TaskHandle>>,
    /// Restart requests to the task's runner.
    pub restart: mpsc::UnboundedSender<RestartRequest>,
}

/// How a runner ended. Either way the task is Dead and nothing of it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Stopped through the cancellation token.
    Stopped,
    /// The restart policy gave up.
    Failed { reason: String },
}

/// How the first run begins.
enum Begin {
    /// Start the task.
    Fresh,
    /// Re-attach to the run of this handle (an agent restart).
    Recover(TaskHandle),
    /// An agent restart found no handle: clear leftovers, wait for a due
    /// restart, start.
    Resume,
}

pub struct TaskRunner {
    driver: Arc<dyn Driver>,
    ctx: TaskContext,
    tracker: RestartTracker,
    store: Arc<dyn TaskStore>,
    cancel: CancellationToken,
    state: watch::Sender<TaskState>,
    /// The handle of the run in progress, for health checks.
    handle: watch::Sender<Option<TaskHandle>>,
    /// Restart requests (their reason), from `check_restart`.
    restart_requests: Option<mpsc::UnboundedReceiver<RestartRequest>>,
    /// Why the task is being restarted, when a request did it: said again
    /// in the message of the next start.
    restart_cause: Option<String>,
    begin: Begin,
    /// What the restart record saved before an agent restart says beyond
    /// the counters: a due restart, the run whose exit it counts, whether
    /// the policy gave up.
    carried: RestartRecord,
    /// When a stop interrupted by an agent restart began.
    stop_began: Option<u64>,
    /// The restart tracker's clock: unix milliseconds when the runner was
    /// made, advanced by tokio's monotonic clock (so paused time in tests
    /// drives it, and persisted times compare across agent restarts).
    clock: (u64, tokio::time::Instant),
}

enum Waited {
    Exited(ExitResult),
    Cancelled,
    /// A restart was requested.
    Restart(RestartRequest),
}

/// An exit to decide on, and the run to destroy once the decision is
/// saved (destroying first would let a kill in between lose the exit).
struct Exit {
    result: ExitResult,
    run: Option<TaskHandle>,
    /// A user's restart request ended the run: restarted at once, not
    /// counted against the policy.
    by_user: bool,
}

impl TaskRunner {
    /// A runner for `ctx`. The restart policy is the task's own
    /// (`ctx.task.restart`) when set, else `group_policy`.
    pub fn new(
        driver: Arc<dyn Driver>,
        ctx: TaskContext,
        group_policy: RestartPolicy,
        store: Arc<dyn TaskStore>,
        cancel: CancellationToken,
    ) -> Self {
        let policy = ctx.task.restart.unwrap_or(group_policy);
        TaskRunner {
            driver,
            ctx,
            tracker: RestartTracker::new(policy),
            store,
            cancel,
            state: watch::channel(TaskState::default()).0,
            handle: watch::channel(None).0,
            restart_requests: None,
            restart_cause: None,
            begin: Begin::Fresh,
            carried: RestartRecord::default(),
            stop_began: None,
            clock: (now_unix_ms(), tokio::time::Instant::now()),
        }
    }

    /// Continues a task run from before an agent restart: `run` re-attaches
    /// to `handle` instead of starting; `previous` (the last known state,
    /// restart counter included) is kept. If the task no longer runs, that
    /// counts as an exit ("exited while the agent was away") and the
    /// restart policy decides.
    pub fn recovering(mut self, handle: TaskHandle, previous: TaskState) -> Self {
        self.tracker = RestartTracker::with_restarts(*self.tracker.policy(), previous.restarts);
        self.state.send_replace(previous);
        self.begin = Begin::Recover(handle);
        self
    }

    /// Continues a task that had no handle when the agent went away (it
    /// never started, a start was cut short, or it waited for a restart):
    /// leftovers are cleared, it starts again, and the restarts already
    /// done still count against the policy.
    pub fn resuming(mut self, previous: TaskState) -> Self {
        self.tracker = RestartTracker::with_restarts(*self.tracker.policy(), previous.restarts);
        self.state.send_modify(|s| {
            s.restarts = previous.restarts;
            s.exit_code = previous.exit_code;
            s.oom_killed = previous.oom_killed;
            s.finished_at = previous.finished_at;
            s.started_at = previous.started_at;
        });
        self.begin = Begin::Resume;
        self
    }

    /// The restart record saved before an agent restart: the window, its
    /// counted exits and a pending restart carry on (after `recovering` or
    /// `resuming`).
    pub fn with_restart_record(mut self, rec: RestartRecord) -> Self {
        self.tracker = RestartTracker::restore(*self.tracker.policy(), &rec);
        self.stop_began = rec.stopping_since;
        self.carried = rec;
        self
    }

    /// The task's live view; its restart requests reach this runner.
    pub fn view(&mut self) -> TaskView {
        let (tx, rx) = mpsc::unbounded_channel();
        self.restart_requests = Some(rx);
        TaskView {
            driver: self.driver.clone(),
            state: self.subscribe(),
            handle: self.subscribe_handle(),
            restart: tx,
        }
    }

    /// The task's state; updated on every change.
    pub fn subscribe(&self) -> watch::Receiver<TaskState> {
        self.state.subscribe()
    }

    /// The handle of the running task (`None` while it does not run); set
    /// before the state says `Running`.
    pub fn subscribe_handle(&self) -> watch::Receiver<Option<TaskHandle>> {
        self.handle.subscribe()
    }

    /// Restart requests: each one received while the task runs stops it
    /// (kill_timeout honoured) and counts as an exit whose message is the
    /// request's reason. Requests from an earlier run are dropped.
    pub fn with_restart_requests(mut self, rx: mpsc::UnboundedReceiver<RestartRequest>) -> Self {
        self.restart_requests = Some(rx);
        self
    }

    /// Runs the task until the restart policy gives up or the token fires.
    pub async fn run(mut self) -> TaskOutcome {
        let mut current: Option<TaskHandle> = None;
        let mut pending: Option<Exit> = None;
        let carried = std::mem::take(&mut self.carried);
        match std::mem::replace(&mut self.begin, Begin::Fresh) {
            Begin::Fresh => {}
            // Its exit is counted already: only the destroy was missing.
            Begin::Recover(h) if carried.exited.as_deref() == Some(h.id.as_str()) => {
                self.cleanup(&h).await;
                if let Some(outcome) = self.resume(&carried).await {
                    return outcome;
                }
            }
            Begin::Recover(h) => match self.reattach(h).await {
                Ok(h) => current = Some(h),
                Err(exit) => pending = Some(exit),
            },
            Begin::Resume => {
                self.clear_leftovers().await;
                if let Some(outcome) = self.resume(&carried).await {
                    return outcome;
                }
            }
        }
        loop {
            let exit = if let Some(exit) = pending.take() {
                exit
            } else if let Some(h) = current.take() {
                match self.wait_or_cancel(&h).await {
                    Waited::Exited(result) => Exit {
                        result,
                        run: Some(h),
                        by_user: false,
                    },
                    Waited::Cancelled => return self.stop_and_finish(h).await,
                    Waited::Restart(req) => self.stop_for_restart(h, req).await,
                }
            } else {
                if self.cancel.is_cancelled() {
                    return self.finish_stopped("stopped before it started", None);
                }
                match self.start().await {
                    Ok(Some(h)) => {
                        current = Some(h);
                        continue;
                    }
                    Ok(None) => return self.finish_stopped("stopped before it started", None),
                    Err(result) => Exit {
                        result,
                        run: None,
                        by_user: false,
                    },
                }
            };
            if let Some(outcome) = self.decide(exit).await {
                return outcome;
            }
        }
    }

    /// Carries on from a restart record with no run to follow: the policy
    /// gave up (dead for good), or a restart is due (wait out the rest of
    /// its delay); `None`: start the task.
    async fn resume(&mut self, carried: &RestartRecord) -> Option<TaskOutcome> {
        if let Some(reason) = &carried.gave_up {
            let reason = reason.clone();
            self.publish(|s| {
                s.state = TaskLifecycle::Dead;
                s.failed = true;
                s.exit_code = carried.exit_code.or(s.exit_code);
                s.oom_killed |= carried.oom_killed;
                s.message = reason.clone();
            });
            return Some(TaskOutcome::Failed { reason });
        }
        let due = carried.due?;
        let after = Duration::from_millis(due.saturating_sub(self.clock_ms()));
        let why = "waiting for its restart (resumed after an agent restart)";
        if self.wait_restart(after, why, None).await {
            None
        } else {
            Some(self.finish_stopped("stopped while waiting to restart", None))
        }
    }

    /// Re-attaches to a run from before an agent restart; the exit to
    /// decide on when it is gone.
    async fn reattach(&mut self, h: TaskHandle) -> Result<TaskHandle, Exit> {
        match self.driver.recover(&h).await {
            Ok(true) => {
                let started = h.started_at_ms;
                self.handle.send_replace(Some(h.clone()));
                self.publish(|s| {
                    s.state = TaskLifecycle::Running;
                    s.started_at.get_or_insert(started);
                    s.message = "re-attached after an agent restart".into();
                });
                Ok(h)
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot recover task");
                }
                Err(Exit {
                    result: ExitResult {
                        message: EXITED_WHILE_AWAY.into(),
                        ..ExitResult::default()
                    },
                    run: Some(h),
                    by_user: false,
                })
            }
        }
    }

    /// One start, raced against the cancel token (an image pull must not
    /// hold up a stop). `Ok(None)`: cancelled, and whatever the cut-short
    /// start left is cleared. `Err`: the start failed, as an exit.
    async fn start(&mut self) -> Result<Option<TaskHandle>, ExitResult> {
        let started = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            r = self.driver.start(&self.ctx) => Some(r),
        };
        let h = match started {
            None => {
                self.clear_leftovers().await;
                return Ok(None);
            }
            Some(Err(e)) => {
                return Err(ExitResult {
                    message: format!("failed to start: {e}"),
                    ..ExitResult::default()
                });
            }
            Some(Ok(h)) => h,
        };
        crate::killpoint::reached("start.before_handle");
        if let Err(e) = self.store.save_handle(&h).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot persist the task handle");
        }
        self.save_restarts(None).await;
        crate::killpoint::reached("start.after_handle");
        let started = h.started_at_ms;
        let restarts = self.tracker.restarts();
        let cause = self.restart_cause.take();
        // Requests meant for the previous run.
        if let Some(rx) = self.restart_requests.as_mut() {
            while rx.try_recv().is_ok() {}
        }
        self.handle.send_replace(Some(h.clone()));
        self.publish(|s| {
            s.state = TaskLifecycle::Running;
            s.started_at = Some(started);
            s.restarts = restarts;
            s.message = match (restarts, cause) {
                (0, _) => "started".into(),
                (n, Some(c)) => format!("restarted (restart {n}) after: {c}"),
                (n, None) => format!("restarted (restart {n})"),
            };
        });
        Ok(Some(h))
    }

    /// Asks the restart policy about an exit, saves the decision, destroys
    /// the run that ended, then waits for the restart (`None`: go on) or
    /// ends the runner.
    async fn decide(&mut self, exit: Exit) -> Option<TaskOutcome> {
        let Exit {
            result: exit,
            run,
            by_user,
        } = exit;
        let now = now_unix_ms();
        let decision = if by_user {
            self.tracker.on_requested()
        } else {
            self.tracker.on_exit(self.clock_ms(), &exit)
        };
        tracing::info!(task = %self.ctx.describe(), exit = %exit.message, ?decision, "task exited");
        let mut rec = self.tracker.record(None);
        match &decision {
            RestartDecision::Restart { after } => {
                rec.due =
                    Some(self.clock_ms() + u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            }
            RestartDecision::Fail { reason } => rec.gave_up = Some(reason.clone()),
        }
        rec.exited = run.as_ref().map(|h| h.id.clone());
        rec.exit_code = exit.exit_code;
        rec.oom_killed = exit.oom_killed;
        if let Err(e) = self.store.save_restarts(&rec).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot persist the restart decision");
        }
        crate::killpoint::reached("exit.after_decision");
        if let Some(h) = run {
            self.cleanup(&h).await;
        }
        match decision {
            RestartDecision::Restart { after } => {
                if self
                    .wait_restart(after, &exit.message, Some((&exit, now)))
                    .await
                {
                    None
                } else {
                    Some(self.finish_stopped("stopped while waiting to restart", None))
                }
            }
            RestartDecision::Fail { reason } => {
                self.publish(|s| {
                    s.state = TaskLifecycle::Dead;
                    s.failed = true;
                    s.exit_code = exit.exit_code;
                    s.oom_killed = exit.oom_killed;
                    s.finished_at = Some(now);
                    s.message = reason.clone();
                });
                Some(TaskOutcome::Failed { reason })
            }
        }
    }

    /// Restarting for `after` (interrupted by the cancel token: false);
    /// `exit`: the exit that led here and when it happened.
    async fn wait_restart(
        &mut self,
        after: Duration,
        why: &str,
        exit: Option<(&ExitResult, u64)>,
    ) -> bool {
        // The restart counts from its decision, as Nomad counts it: a task
        // waiting out a long delay (the rest of its interval, in `delay`
        // mode) is counted restarting, and a crash loop is seen as it
        // happens.
        let restarts = self.tracker.restarts();
        self.publish(|s| {
            s.state = TaskLifecycle::Restarting;
            s.restarts = restarts;
            if let Some((e, at)) = exit {
                s.exit_code = e.exit_code;
                s.oom_killed = e.oom_killed;
                s.finished_at = Some(at);
            }
            s.message = format!("{why}; restarting in {}", fmt_duration(after));
        });
        crate::killpoint::reached("restart.waiting");
        tokio::select! {
            _ = self.cancel.cancelled() => return false,
            _ = tokio::time::sleep(after) => {}
        }
        true
    }

    async fn save_restarts(&self, due: Option<u64>) {
        if let Err(e) = self.store.save_restarts(&self.tracker.record(due)).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot persist the restart record");
        }
    }

    /// Removes what a start that never saved its handle may have left
    /// (an agent killed during the start, or a start cancelled half-way).
    async fn clear_leftovers(&self) {
        if let Err(e) = self
            .driver
            .clear_task(&self.ctx.alloc, &self.ctx.task.name)
            .await
        {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot clear what an interrupted start left");
        }
    }

    async fn wait_or_cancel(&mut self, h: &TaskHandle) -> Waited {
        let requests = self.restart_requests.as_mut();
        let requested = async {
            match requests {
                Some(rx) => match rx.recv().await {
                    Some(reason) => reason,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Waited::Cancelled,
            r = self.driver.wait(h) => Waited::Exited(r.unwrap_or_else(|e| ExitResult {
                message: format!("lost track of the task: {e}"),
                ..ExitResult::default()
            })),
            req = requested => Waited::Restart(req),
        }
    }

    /// Stops the task for a requested restart; the exit carries the
    /// request's reason (the run is destroyed after the decision).
    async fn stop_for_restart(&mut self, h: TaskHandle, req: RestartRequest) -> Exit {
        let reason = req.reason;
        tracing::info!(task = %self.ctx.describe(), %reason, by_user = req.by_user, "restart requested");
        let stopped = self.stop_run(&h, Duration::ZERO).await.unwrap_or_default();
        self.restart_cause = Some(reason.clone());
        Exit {
            result: ExitResult {
                message: reason,
                ..stopped
            },
            run: Some(h),
            by_user: req.by_user,
        }
    }

    /// Stop (graceful, then kill after `kill_timeout`); the exit status
    /// after the stop, when the driver still knows it.
    async fn stop_run(&self, h: &TaskHandle, spent: Duration) -> Option<ExitResult> {
        let timeout = self.ctx.task.kill_timeout.as_std().saturating_sub(spent);
        if let Err(e) = self.driver.stop(h, timeout).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot stop the task");
        }
        tokio::time::timeout(Duration::from_secs(1), self.driver.wait(h))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Stop, destroy, Dead. The stop's start is saved first: an agent
    /// killed during it finishes it with what is left of `kill_timeout`.
    async fn stop_and_finish(&mut self, h: TaskHandle) -> TaskOutcome {
        let began = self.stop_began.take().unwrap_or_else(|| self.clock_ms());
        let mut rec = self.tracker.record(None);
        rec.stopping_since = Some(began);
        if let Err(e) = self.store.save_restarts(&rec).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot persist the start of a stop");
        }
        let spent = Duration::from_millis(self.clock_ms().saturating_sub(began));
        let exit = self.stop_run(&h, spent).await;
        crate::killpoint::reached("stop.after_signal");
        self.cleanup(&h).await;
        self.finish_stopped("stopped", exit)
    }

    fn finish_stopped(&mut self, message: &str, exit: Option<ExitResult>) -> TaskOutcome {
        let now = now_unix_ms();
        self.publish(|s| {
            s.state = TaskLifecycle::Dead;
            if let Some(e) = &exit {
                s.exit_code = e.exit_code;
                s.oom_killed = e.oom_killed;
                s.finished_at = Some(now);
            }
            s.message = match &exit {
                Some(e) => format!("{message} ({})", e.message),
                None => message.to_string(),
            };
        });
        TaskOutcome::Stopped
    }

    /// Removes leftovers of a task run and forgets its handle.
    async fn cleanup(&self, h: &TaskHandle) {
        self.handle.send_replace(None);
        if let Err(e) = self.driver.destroy(h).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot destroy the task");
        }
        if let Err(e) = self.store.remove_handle(h).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot remove the persisted task handle");
        }
    }

    fn publish(&self, f: impl FnOnce(&mut TaskState)) {
        self.state.send_modify(f);
    }

    fn clock_ms(&self) -> u64 {
        let (base, at) = self.clock;
        base.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

fn fmt_duration(d: Duration) -> String {
    corral_types::units::Millis(d.as_millis() as u64).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use corral_types::units::Millis;
    use corral_types::{DriverKind, PullPolicy, Resources, RestartMode, SecuritySpec, TaskSpec};

    use super::*;
    use crate::driver::AllocContext;
    use crate::driver::fake::{FakeCall, FakeDriver, FakeRun};

    fn ctx() -> TaskContext {
        TaskContext {
            mounts: Default::default(),
            alloc: AllocContext {
                alloc_id: "a1".into(),
                job: "shop".into(),
                group: "web".into(),
                index: 0,
                node_id: "n1".into(),
                alloc_dir: PathBuf::from("/tmp/a1"),
                ports: BTreeMap::new(),
                pod: Default::default(),
            },
            task: TaskSpec {
                name: "app".into(),
                driver: DriverKind::Exec,
                image: None,
                command: vec!["app".into()],
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                resources: Resources::default(),
                ports: BTreeMap::new(),
                kill_timeout: Millis(2000),
                restart: None,
                pull_policy: PullPolicy::default(),
                security: SecuritySpec::default(),
                checks: Vec::new(),
                logs: Default::default(),
            },
            env: BTreeMap::new(),
            task_dir: PathBuf::from("/tmp/a1/app"),
            stdout_path: PathBuf::from("/tmp/a1/app.stdout"),
            stderr_path: PathBuf::from("/tmp/a1/app.stderr"),
        }
    }

    fn policy(attempts: u32, mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            attempts,
            interval: Millis::from_secs(600),
            delay: Millis::from_secs(1),
            mode,
        }
    }

    fn exit_after(ms: u64, code: i32) -> FakeRun {
        FakeRun::Exit {
            after: Duration::from_millis(ms),
            exit: ExitResult::from_status(Some(code), None, false),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_per_policy_then_fails() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(exit_after(100, 3));
        let sink = Arc::new(MemorySink::new());
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(2, RestartMode::Fail),
            sink.clone(),
            CancellationToken::new(),
        );
        let mut rx = runner.subscribe();
        let seen = tokio::spawn(async move {
            let mut states = vec![];
            while rx.changed().await.is_ok() {
                let s = rx.borrow().clone();
                states.push((s.state, s.restarts));
            }
            states
        });
        let t0 = tokio::time::Instant::now();
        let outcome = runner.run().await;
        match &outcome {
            TaskOutcome::Failed { reason } => assert_eq!(
                reason,
                "exceeded 2 restarts in 10m and the restart mode is fail; last exit: exited with code 3"
            ),
            o => panic!("expected failure, got {o:?}"),
        }
        // 3 runs of 100 ms, delays 1 s then 2 s (backoff).
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(3300), "{took:?}");
        assert!(took < Duration::from_millis(3400), "{took:?}");
        assert_eq!(driver.starts(), 3);
        assert_eq!(driver.running(), 0);
        let destroys = driver
            .calls()
            .iter()
            .filter(|c| matches!(c, FakeCall::Destroy { .. }))
            .count();
        assert_eq!(destroys, 3);
        assert_eq!(sink.saved().len(), 3);
        assert_eq!(sink.current(), None);

        let mut states = seen.await.expect("watcher");
        states.dedup();
        // A restart counts from its decision: the task waiting out its
        // delay already counts it (issue 14: a crash loop is seen as it
        // happens, whatever the delay).
        use TaskLifecycle::*;
        assert_eq!(
            states,
            [
                (Running, 0),
                (Restarting, 1),
                (Running, 1),
                (Restarting, 2),
                (Running, 2),
                (Dead, 2)
            ]
        );
    }

    /// Issue 14, suspected: in `delay` mode the exit past `attempts` waits
    /// out the rest of the interval (30m by default). That restart counts
    /// when decided, so the crash loop rule sees three restarts in the
    /// first minute, not two in every ten.
    #[tokio::test(start_paused = true)]
    async fn a_restart_waiting_out_its_interval_counts_when_decided() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(exit_after(100, 3));
        let cancel = CancellationToken::new();
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(2, RestartMode::Delay),
            Arc::new(MemorySink::new()),
            cancel.clone(),
        );
        let mut rx = runner.subscribe();
        let run = tokio::spawn(runner.run());
        let t0 = tokio::time::Instant::now();
        rx.wait_for(|s| s.restarts == 3).await.expect("restarts");
        let s = rx.borrow().clone();
        assert_eq!(s.state, TaskLifecycle::Restarting, "{s:?}");
        // The rest of the 10m interval.
        assert!(s.message.contains("; restarting in 596"), "{}", s.message);
        // Three runs so far; the third restart waits for the interval.
        assert_eq!(driver.starts(), 3);
        assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
        cancel.cancel();
        run.await.expect("runner");
    }

    #[tokio::test(start_paused = true)]
    async fn final_state_carries_the_last_exit() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(FakeRun::Exit {
            after: Duration::from_millis(10),
            exit: ExitResult::from_status(None, Some(9), true),
        });
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(0, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            CancellationToken::new(),
        );
        let rx = runner.subscribe();
        assert!(matches!(runner.run().await, TaskOutcome::Failed { .. }));
        let s = rx.borrow().clone();
        assert_eq!(s.state, TaskLifecycle::Dead);
        assert!(s.oom_killed);
        assert_eq!(s.exit_code, None);
        assert!(s.finished_at.is_some());
        assert!(s.message.contains("oom killed"), "{}", s.message);
    }

    #[tokio::test(start_paused = true)]
    async fn task_policy_overrides_group_policy() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(exit_after(10, 1));
        let mut c = ctx();
        c.task.restart = Some(policy(0, RestartMode::Fail));
        let runner = TaskRunner::new(
            driver.clone(),
            c,
            policy(5, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            CancellationToken::new(),
        );
        assert!(matches!(runner.run().await, TaskOutcome::Failed { .. }));
        assert_eq!(driver.starts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn start_failures_count_as_failed_attempts() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(FakeRun::StartError(
            "cannot start \"nope\": no such file".into(),
        ));
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(1, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            CancellationToken::new(),
        );
        let rx = runner.subscribe();
        let outcome = runner.run().await;
        let TaskOutcome::Failed { reason } = outcome else {
            panic!("expected failure");
        };
        assert!(
            reason.ends_with(
                "last exit: failed to start: task app of alloc a1: cannot start \"nope\": no such file"
            ),
            "{reason}"
        );
        let failed = driver
            .calls()
            .iter()
            .filter(|c| matches!(c, FakeCall::StartFailed { .. }))
            .count();
        assert_eq!(failed, 2);
        let s = rx.borrow().clone();
        assert_eq!(s.state, TaskLifecycle::Dead);
        assert_eq!(s.restarts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_running_task() {
        let driver = Arc::new(FakeDriver::new());
        let cancel = CancellationToken::new();
        let sink = Arc::new(MemorySink::new());
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(2, RestartMode::Fail),
            sink.clone(),
            cancel.clone(),
        );
        let mut rx = runner.subscribe();
        let run = tokio::spawn(runner.run());
        rx.wait_for(|s| s.state == TaskLifecycle::Running)
            .await
            .expect("running");
        assert!(sink.current().is_some());
        cancel.cancel();
        assert_eq!(run.await.expect("join"), TaskOutcome::Stopped);
        let calls = driver.calls();
        let stop = calls
            .iter()
            .position(|c| matches!(c, FakeCall::Stop { timeout, .. } if *timeout == Duration::from_millis(2000)))
            .expect("stopped with the kill timeout");
        let destroy = calls
            .iter()
            .position(|c| matches!(c, FakeCall::Destroy { .. }))
            .expect("destroyed");
        assert!(stop < destroy);
        assert_eq!(driver.running(), 0);
        assert_eq!(sink.current(), None);
        let s = rx.borrow().clone();
        assert_eq!(s.state, TaskLifecycle::Dead);
        assert_eq!(s.message, "stopped (killed by signal 15 (SIGTERM))");
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_interrupts_the_restart_delay() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(exit_after(10, 1));
        let cancel = CancellationToken::new();
        let mut p = policy(3, RestartMode::Fail);
        p.delay = Millis::from_secs(3600);
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            p,
            Arc::new(MemorySink::new()),
            cancel.clone(),
        );
        let mut rx = runner.subscribe();
        let run = tokio::spawn(runner.run());
        rx.wait_for(|s| s.state == TaskLifecycle::Restarting)
            .await
            .expect("restarting");
        assert!(rx.borrow().message.contains("restarting in 1h"));
        let t0 = tokio::time::Instant::now();
        cancel.cancel();
        assert_eq!(run.await.expect("join"), TaskOutcome::Stopped);
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(driver.starts(), 1);
        assert_eq!(rx.borrow().state, TaskLifecycle::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_mode_keeps_restarting() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_default(exit_after(10, 1));
        let cancel = CancellationToken::new();
        let mut p = policy(1, RestartMode::Delay);
        p.interval = Millis::from_secs(60);
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            p,
            Arc::new(MemorySink::new()),
            cancel.clone(),
        );
        let mut rx = runner.subscribe();
        let run = tokio::spawn(runner.run());
        rx.wait_for(|s| s.restarts >= 4).await.expect("restarts");
        cancel.cancel();
        assert_eq!(run.await.expect("join"), TaskOutcome::Stopped);
        assert!(driver.starts() >= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn recovered_task_is_waited_on_not_restarted() {
        let driver = Arc::new(FakeDriver::new());
        let handle = TaskHandle {
            driver: DriverKind::Exec,
            task: "app".into(),
            alloc_id: "a1".into(),
            id: "old-1".into(),
            started_at_ms: 1234,
            state: serde_json::json!({}),
        };
        let previous = TaskState {
            state: TaskLifecycle::Running,
            restarts: 5,
            started_at: Some(1234),
            ..TaskState::default()
        };
        let cancel = CancellationToken::new();
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(2, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            cancel.clone(),
        )
        .recovering(handle, previous);
        let mut rx = runner.subscribe();
        let run = tokio::spawn(runner.run());
        rx.wait_for(|s| s.message.starts_with("re-attached"))
            .await
            .expect("re-attached");
        // The recovered task exits; the restart counter continues from 5.
        driver.exit("old-1", ExitResult::from_status(Some(1), None, false));
        rx.wait_for(|s| s.state == TaskLifecycle::Running && s.restarts == 6)
            .await
            .expect("restarted");
        assert_eq!(driver.starts(), 1);
        cancel.cancel();
        assert_eq!(run.await.expect("join"), TaskOutcome::Stopped);
        assert!(
            driver
                .calls()
                .contains(&FakeCall::Recover { id: "old-1".into() })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recovered_task_that_is_gone_counts_as_an_exit() {
        let driver = Arc::new(FakeDriver::new());
        driver.set_recover_alive(false);
        let handle = TaskHandle {
            driver: DriverKind::Exec,
            task: "app".into(),
            alloc_id: "a1".into(),
            id: "old-1".into(),
            started_at_ms: 1234,
            state: serde_json::json!({}),
        };
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(0, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            CancellationToken::new(),
        )
        .recovering(handle, TaskState::default());
        let rx = runner.subscribe();
        let TaskOutcome::Failed { reason } = runner.run().await else {
            panic!("expected failure");
        };
        assert!(reason.ends_with(EXITED_WHILE_AWAY), "{reason}");
        assert_eq!(rx.borrow().exit_code, None);
        assert!(
            driver
                .calls()
                .contains(&FakeCall::Destroy { id: "old-1".into() })
        );
        assert_eq!(driver.starts(), 0);
    }

    fn old_handle() -> TaskHandle {
        TaskHandle {
            driver: DriverKind::Exec,
            task: "app".into(),
            alloc_id: "a1".into(),
            id: "old-1".into(),
            started_at_ms: 1234,
            state: serde_json::json!({}),
        }
    }

    /// Killed after the decision on an exit was saved, before its run was
    /// destroyed: the restarted agent destroys it, does not count the exit
    /// again, and waits out the rest of the delay.
    #[tokio::test(start_paused = true)]
    async fn an_exit_counted_before_an_agent_restart_is_not_counted_again() {
        let driver = Arc::new(FakeDriver::new());
        let sink = Arc::new(MemorySink::new());
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(3, RestartMode::Fail),
            sink.clone(),
            CancellationToken::new(),
        );
        let now = runner.clock_ms();
        let runner = runner
            .recovering(old_handle(), TaskState::default())
            .with_restart_record(RestartRecord {
                restarts: 1,
                window_start: Some(now),
                in_window: 1,
                due: Some(now + 5_000),
                exited: Some("old-1".into()),
                gave_up: None,
                stopping_since: None,
                exit_code: Some(1),
                oom_killed: false,
            });
        let mut rx = runner.subscribe();
        let t0 = tokio::time::Instant::now();
        let run = tokio::spawn(runner.run());
        rx.wait_for(|s| s.state == TaskLifecycle::Running)
            .await
            .expect("running");
        assert!(
            t0.elapsed() >= Duration::from_millis(4900),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(rx.borrow().restarts, 1);
        let calls = driver.calls();
        assert!(
            !calls.contains(&FakeCall::Recover { id: "old-1".into() }),
            "{calls:?}"
        );
        assert!(
            calls.contains(&FakeCall::Destroy { id: "old-1".into() }),
            "{calls:?}"
        );
        assert_eq!(sink.restarts().map(|r| r.restarts), Some(1));
        drop(run);
    }

    /// Killed after the policy gave up: the task stays dead and failed,
    /// nothing starts again.
    #[tokio::test(start_paused = true)]
    async fn a_task_the_policy_gave_up_on_stays_dead_after_an_agent_restart() {
        let driver = Arc::new(FakeDriver::new());
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(1, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            CancellationToken::new(),
        )
        .resuming(TaskState {
            state: TaskLifecycle::Running,
            restarts: 1,
            exit_code: Some(3),
            ..TaskState::default()
        })
        .with_restart_record(RestartRecord {
            restarts: 1,
            gave_up: Some("exceeded 1 restart".into()),
            exit_code: Some(4),
            ..RestartRecord::default()
        });
        let rx = runner.subscribe();
        assert_eq!(
            runner.run().await,
            TaskOutcome::Failed {
                reason: "exceeded 1 restart".into()
            }
        );
        assert_eq!(driver.starts(), 0);
        let s = rx.borrow().clone();
        assert_eq!(
            (s.state, s.failed, s.restarts, s.exit_code),
            (TaskLifecycle::Dead, true, 1, Some(4))
        );
    }

    /// Killed during a stop: the restarted agent, stopping again, gives
    /// the task what was left of its kill_timeout (2 s, 1.5 s spent).
    #[tokio::test(start_paused = true)]
    async fn a_stop_interrupted_by_an_agent_restart_keeps_its_deadline() {
        let driver = Arc::new(FakeDriver::new());
        let cancel = CancellationToken::new();
        let runner = TaskRunner::new(
            driver.clone(),
            ctx(),
            policy(3, RestartMode::Fail),
            Arc::new(MemorySink::new()),
            cancel.clone(),
        );
        let now = runner.clock_ms();
        let runner = runner
            .recovering(old_handle(), TaskState::default())
            .with_restart_record(RestartRecord {
                stopping_since: Some(now - 1_500),
                ..RestartRecord::default()
            });
        cancel.cancel();
        assert_eq!(runner.run().await, TaskOutcome::Stopped);
        let stop = driver
            .calls()
            .into_iter()
            .find_map(|c| match c {
                FakeCall::Stop { timeout, .. } => Some(timeout),
                _ => None,
            })
            .expect("stopped");
        assert!(
            stop <= Duration::from_millis(500) && stop >= Duration::from_millis(400),
            "{stop:?}"
        );
    }
}
