//! [`TaskRunner`]: owns one task of one allocation on this node.
//!
//! It starts the task through its [`Driver`], persists the handle through a
//! [`HandleSink`], waits for the exit, asks the [`RestartTracker`] what to
//! do, sleeps the restart delay (interruptible) and starts again, until the
//! policy gives up or the [`CancellationToken`] fires. Every change of the
//! task's [`TaskState`] is published on a `watch` channel.
//!
//! `TaskState` fields while the runner works:
//! - `state`: Pending (before the first start) -> Running -> Restarting
//!   (waiting for the delay) -> Running ... -> Dead;
//! - `restarts`: restarts done so far;
//! - `exit_code`, `oom_killed`, `finished_at`: the most recent exit (kept
//!   while the restarted task runs, so people see why it restarted);
//! - `started_at`: the most recent start;
//! - `message`: a sentence about the latest change.
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
use crate::restart::{RestartDecision, RestartTracker};

/// Message of a task found dead when the agent tries to re-attach to it.
pub const EXITED_WHILE_AWAY: &str = "exited while the agent was away";

/// Where the runner persists task handles (the agent writes them as JSON
/// into its data dir, to `recover` them after a restart).
#[async_trait]
pub trait HandleSink: Send + Sync + 'static {
    /// Called after every successful start.
    async fn save(&self, handle: &TaskHandle) -> std::io::Result<()>;
    /// Called once the task run is destroyed: the handle is of no use any
    /// more.
    async fn remove(&self, handle: &TaskHandle) -> std::io::Result<()>;
}

/// Keeps the handles in memory (tests, or a caller that does not persist).
#[derive(Debug, Default)]
pub struct MemorySink {
    current: Mutex<Option<TaskHandle>>,
    saved: Mutex<Vec<TaskHandle>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }
    /// The handle saved and not removed yet.
    pub fn current(&self) -> Option<TaskHandle> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Every handle ever saved.
    pub fn saved(&self) -> Vec<TaskHandle> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl HandleSink for MemorySink {
    async fn save(&self, handle: &TaskHandle) -> std::io::Result<()> {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
        self.saved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.clone());
        Ok(())
    }
    async fn remove(&self, handle: &TaskHandle) -> std::io::Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|h| h.id == handle.id) {
            *cur = None;
        }
        Ok(())
    }
}

/// How a runner ended. Either way the task is Dead and nothing of it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Stopped through the cancellation token.
    Stopped,
    /// The restart policy gave up.
    Failed { reason: String },
}

pub struct TaskRunner {
    driver: Arc<dyn Driver>,
    ctx: TaskContext,
    tracker: RestartTracker,
    sink: Arc<dyn HandleSink>,
    cancel: CancellationToken,
    state: watch::Sender<TaskState>,
    /// The handle of the run in progress, for health checks.
    handle: watch::Sender<Option<TaskHandle>>,
    /// Restart requests (their reason), from `check_restart`.
    restart_requests: Option<mpsc::UnboundedReceiver<String>>,
    /// Why the task is being restarted, when a request did it: said again
    /// in the message of the next start.
    restart_cause: Option<String>,
    recovered: Option<TaskHandle>,
    /// Monotonic base of the restart tracker's clock (tokio's, so paused
    /// time in tests drives it too).
    clock: tokio::time::Instant,
}

enum Waited {
    Exited(ExitResult),
    Cancelled,
    /// A restart was requested, for this reason.
    Restart(String),
}

impl TaskRunner {
    /// A runner for `ctx`. The restart policy is the task's own
    /// (`ctx.task.restart`) when set, else `group_policy`.
    pub fn new(
        driver: Arc<dyn Driver>,
        ctx: TaskContext,
        group_policy: RestartPolicy,
        sink: Arc<dyn HandleSink>,
        cancel: CancellationToken,
    ) -> Self {
        let policy = ctx.task.restart.unwrap_or(group_policy);
        TaskRunner {
            driver,
            ctx,
            tracker: RestartTracker::new(policy),
            sink,
            cancel,
            state: watch::channel(TaskState::default()).0,
            handle: watch::channel(None).0,
            restart_requests: None,
            restart_cause: None,
            recovered: None,
            clock: tokio::time::Instant::now(),
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
        self.recovered = Some(handle);
        self
    }

    /// Continues a task that had no running process when the agent went
    /// away (it never started, or waited for a restart): it starts again,
    /// and the restarts already done still count against the policy.
    pub fn resuming(mut self, previous: TaskState) -> Self {
        self.tracker = RestartTracker::with_restarts(*self.tracker.policy(), previous.restarts);
        let restarts = previous.restarts;
        self.state.send_modify(|s| s.restarts = restarts);
        self
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
    pub fn with_restart_requests(mut self, rx: mpsc::UnboundedReceiver<String>) -> Self {
        self.restart_requests = Some(rx);
        self
    }

    /// Runs the task until the restart policy gives up or the token fires.
    pub async fn run(mut self) -> TaskOutcome {
        let mut current: Option<TaskHandle> = None;
        let mut pending_exit: Option<ExitResult> = None;

        if let Some(h) = self.recovered.take() {
            match self.driver.recover(&h).await {
                Ok(true) => {
                    let started = h.started_at_ms;
                    self.handle.send_replace(Some(h.clone()));
                    self.publish(|s| {
                        s.state = TaskLifecycle::Running;
                        s.started_at.get_or_insert(started);
                        s.message = "re-attached after an agent restart".into();
                    });
                    current = Some(h);
                }
                other => {
                    if let Err(e) = other {
                        tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot recover task");
                    }
                    self.cleanup(&h).await;
                    pending_exit = Some(ExitResult {
                        message: EXITED_WHILE_AWAY.into(),
                        ..ExitResult::default()
                    });
                }
            }
        }

        loop {
            let exit = if let Some(exit) = pending_exit.take() {
                exit
            } else if let Some(h) = current.take() {
                match self.wait_or_cancel(&h).await {
                    Waited::Exited(exit) => {
                        self.cleanup(&h).await;
                        exit
                    }
                    Waited::Cancelled => return self.stop_and_finish(h).await,
                    Waited::Restart(reason) => self.stop_for_restart(h, reason).await,
                }
            } else {
                if self.cancel.is_cancelled() {
                    return self.finish_stopped("stopped before it started", None);
                }
                // A stop must not wait for a start (an image pull may
                // hang for minutes): drop it and remove what it made.
                let started = tokio::select! {
                    r = self.driver.start(&self.ctx) => r,
                    _ = self.cancel.cancelled() => {
                        let (alloc, task) = (&self.ctx.alloc, &self.ctx.task.name);
                        if let Err(e) = self.driver.clear_task(alloc, task).await {
                            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot clear a cancelled start");
                        }
                        return self.finish_stopped("stopped while starting", None);
                    }
                };
                match started {
                    Ok(h) => {
                        if let Err(e) = self.sink.save(&h).await {
                            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot persist the task handle");
                        }
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
                            s.message = match (restarts, cause) {
                                (0, _) => "started".into(),
                                (n, Some(c)) => format!("restarted (restart {n}) after: {c}"),
                                (n, None) => format!("restarted (restart {n})"),
                            };
                        });
                        current = Some(h);
                        continue;
                    }
                    Err(e) => ExitResult {
                        message: format!("failed to start: {e}"),
                        ..ExitResult::default()
                    },
                }
            };

            let now = now_unix_ms();
            let decision = self.tracker.on_exit(self.clock_ms(), &exit);
            tracing::info!(task = %self.ctx.describe(), exit = %exit.message, ?decision, "task exited");
            match decision {
                RestartDecision::Restart { after } => {
                    self.publish(|s| {
                        s.state = TaskLifecycle::Restarting;
                        s.exit_code = exit.exit_code;
                        s.oom_killed = exit.oom_killed;
                        s.finished_at = Some(now);
                        s.message =
                            format!("{}; restarting in {}", exit.message, fmt_duration(after));
                    });
                    tokio::select! {
                        _ = self.cancel.cancelled() => {
                            return self.finish_stopped("stopped while waiting to restart", None);
                        }
                        _ = tokio::time::sleep(after) => {}
                    }
                    let restarts = self.tracker.restarts();
                    self.publish(|s| s.restarts = restarts);
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
                    return TaskOutcome::Failed { reason };
                }
            }
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
            reason = requested => Waited::Restart(reason),
        }
    }

    /// Stops the task for a requested restart; the exit carries the
    /// request's reason.
    async fn stop_for_restart(&mut self, h: TaskHandle, reason: String) -> ExitResult {
        tracing::info!(task = %self.ctx.describe(), %reason, "restart requested");
        let timeout = self.ctx.task.kill_timeout.as_std();
        if let Err(e) = self.driver.stop(&h, timeout).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot stop the task");
        }
        let stopped = tokio::time::timeout(Duration::from_secs(1), self.driver.wait(&h))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.cleanup(&h).await;
        self.restart_cause = Some(reason.clone());
        ExitResult {
            message: reason,
            ..stopped
        }
    }

    /// Stop (graceful, then kill after `kill_timeout`), destroy, Dead.
    async fn stop_and_finish(&mut self, h: TaskHandle) -> TaskOutcome {
        let timeout = self.ctx.task.kill_timeout.as_std();
        if let Err(e) = self.driver.stop(&h, timeout).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot stop the task");
        }
        // The exit status after the stop, when the driver still knows it.
        let exit = tokio::time::timeout(Duration::from_secs(1), self.driver.wait(&h))
            .await
            .ok()
            .and_then(Result::ok);
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
        if let Err(e) = self.sink.remove(h).await {
            tracing::warn!(task = %self.ctx.describe(), error = %e, "cannot remove the persisted task handle");
        }
    }

    fn publish(&self, f: impl FnOnce(&mut TaskState)) {
        self.state.send_modify(f);
    }

    fn clock_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
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
            alloc: AllocContext {
                alloc_id: "a1".into(),
                job: "shop".into(),
                group: "web".into(),
                index: 0,
                node_id: "n1".into(),
                alloc_dir: PathBuf::from("/tmp/a1"),
                ports: BTreeMap::new(),
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

        let states = seen.await.expect("watcher");
        assert!(states.contains(&(TaskLifecycle::Restarting, 0)));
        assert!(states.contains(&(TaskLifecycle::Running, 1)));
        assert!(states.contains(&(TaskLifecycle::Running, 2)));
        assert_eq!(states.last(), Some(&(TaskLifecycle::Dead, 2)));
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
}
