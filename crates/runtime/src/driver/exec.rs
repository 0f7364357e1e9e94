//! The `exec` driver: runs `command[0]` with `command[1..] + args` directly
//! on the node.
//!
//! - environment: cleared, then exactly [`TaskContext::env`] (plus a default
//!   `PATH` when that has none);
//! - working directory: `task.workdir` (relative to the task dir) or the
//!   task dir;
//! - stdin is `/dev/null`; stdout and stderr are FIFOs copied, line by
//!   line with the time, into the task's rotated log by a capture process
//!   that outlives the agent (or by the agent itself, see
//!   [`capture::Copier`]; and [`crate::logs::capture`]);
//! - the process leads its own process group, so `stop` can signal the
//!   whole group;
//! - it joins its cgroup `<parent>/<alloc_id>-<task>` (cpu and memory
//!   limits) between fork and exec, so it never runs unconfined.
//!
//! The handle state ([`ExecState`]) holds the pid, the process start time
//! from `/proc/PID/stat` (so a reused pid is never mistaken for the task),
//! the process group and the cgroup name. `recover` re-attaches: the agent
//! is then usually no longer the parent, so the exit is noticed by polling
//! `/proc` every 250 ms (a zombie counts as exited), and the exit code is
//! known only when `waitid` on a pidfd opened at recovery can still collect
//! it (this process is the parent); otherwise it is reported as unknown.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral_types::DriverKind;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    AllocContext, Driver, DriverError, ExecOutput, ExitResult, TaskContext, TaskHandle, TaskStats,
    now_unix_ms,
};
use crate::cgroup::{self, CgroupError, CgroupLimits, Cgroups, cgroup_name, join_on_exec, procfs};
use crate::logs::{self, Timestamp, capture};

/// `PATH` given to tasks whose env does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long SIGKILLing a cgroup may take before it is reported as stuck.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an exit waits for the task's last output to reach its log
/// (something the task started may hold its stdout open longer).
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Driver-specific part of an exec [`TaskHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecState {
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat` (clock ticks after boot).
    pub start_time: u64,
    /// Process group (= pid: the task leads its own group).
    pub pgid: i32,
    /// Cgroup name (see [`cgroup::cgroup_name`]).
    pub cgroup: String,
    /// Where the run's output goes (absent in handles of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<capture::CaptureSpec>,
}

impl ExecState {
    /// Whether the task's main process still runs (not a zombie, not a
    /// reused pid).
    pub fn main_alive(&self) -> bool {
        procfs::is_same_running(self.pid, self.start_time)
    }
}

/// A task this driver instance started or recovered.
#[derive(Debug, Clone)]
struct Tracked {
    exit: watch::Receiver<Option<ExitResult>>,
}

#[derive(Debug)]
pub struct ExecDriver {
    cgroups: Arc<dyn Cgroups>,
    tasks: Mutex<HashMap<String, Tracked>>,
    /// How often `/proc` is polled for the exit of a recovered task.
    poll_interval: Duration,
    /// Who copies the tasks' output to their logs.
    copier: capture::Copier,
}

impl ExecDriver {
    pub fn new(cgroups: Arc<dyn Cgroups>) -> Self {
        ExecDriver {
            cgroups,
            tasks: Mutex::new(HashMap::new()),
            poll_interval: Duration::from_millis(250),
            copier: capture::Copier::InProcess,
        }
    }

    /// Capture processes of `exe` (the `corral` binary) copy the tasks'
    /// output, so that it survives the agent; without one the agent copies.
    pub fn with_capture_exe(mut self, exe: Option<std::path::PathBuf>) -> Self {
        self.copier = capture::Copier::of(exe);
        self
    }

    /// With the cgroup layout of this node, under [`cgroup::DEFAULT_PARENT`].
    pub fn detect() -> Result<Self, DriverError> {
        let cg = cgroup::detect(cgroup::DEFAULT_PARENT).map_err(|e| DriverError::Unavailable {
            driver: DriverKind::Exec,
            reason: e.to_string(),
        })?;
        Ok(Self::new(cg))
    }

    pub fn cgroups(&self) -> &Arc<dyn Cgroups> {
        &self.cgroups
    }

    /// Decodes the exec state of a handle.
    pub fn state_of(handle: &TaskHandle) -> Result<ExecState, DriverError> {
        let bad = |reason: String| DriverError::BadHandle {
            alloc_id: handle.alloc_id.clone(),
            task: handle.task.clone(),
            reason,
        };
        if handle.driver != DriverKind::Exec {
            return Err(bad(format!(
                "it belongs to the {} driver, not exec",
                handle.driver
            )));
        }
        let st: ExecState = serde_json::from_value(handle.state.clone())
            .map_err(|e| bad(format!("cannot decode the exec state: {e}")))?;
        // The name becomes a path: never trust a handle file blindly.
        cgroup::validate_name(&st.cgroup).map_err(|e| bad(e.to_string()))?;
        if st.pid <= 1 || st.pgid <= 1 {
            return Err(bad(format!(
                "pid {} / pgid {} is not a task",
                st.pid, st.pgid
            )));
        }
        Ok(st)
    }

    fn tracked(&self, id: &str) -> Option<Tracked> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a cgroup operation off the async threads.
    async fn on_cgroups<T: Send + 'static>(
        &self,
        alloc_id: &str,
        task: &str,
        f: impl FnOnce(&dyn Cgroups) -> Result<T, CgroupError> + Send + 'static,
    ) -> Result<T, DriverError> {
        let cg = self.cgroups.clone();
        tokio::task::spawn_blocking(move || f(cg.as_ref()))
            .await
            .map_err(|e| DriverError::Failed {
                alloc_id: alloc_id.to_string(),
                task: task.to_string(),
                reason: format!("cgroup operation panicked: {e}"),
            })?
            .map_err(|e| DriverError::cgroup(alloc_id, task, e))
    }

    /// Kills and removes the cgroup `name` if it exists.
    async fn clear_cgroup(
        &self,
        alloc_id: &str,
        task: &str,
        name: &str,
    ) -> Result<(), DriverError> {
        let n = name.to_string();
        self.on_cgroups(alloc_id, task, move |cg| {
            if cg.exists(&n) {
                cg.kill_all(&n, KILL_TIMEOUT)?;
                cg.remove(&n)?;
            }
            Ok(())
        })
        .await
    }

    /// Whether nothing of the task runs any more: main process exited and
    /// the cgroup holds no live process.
    fn gone(&self, st: &ExecState) -> bool {
        !st.main_alive()
            && self
                .cgroups
                .pids(&st.cgroup)
                .map(|p| p.is_empty())
                .unwrap_or(true)
    }

    async fn wait_gone(&self, st: &ExecState, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.gone(st) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn spawn_task(
        &self,
        ctx: &TaskContext,
        program: &str,
        first_args: &[String],
        name: &str,
        fds: Vec<OwnedFd>,
    ) -> Result<TaskHandle, DriverError> {
        let alloc_id = &ctx.alloc.alloc_id;
        let task = &ctx.task.name;
        let io = |what: String, source: std::io::Error| DriverError::Io {
            alloc_id: alloc_id.clone(),
            task: task.clone(),
            what,
            source,
        };
        let started = Timestamp::now();
        let spec = capture::CaptureSpec::new(&ctx.alloc.alloc_dir, task, started, ctx.task.logs);
        let capture::Capture {
            stdout,
            stderr,
            drained,
        } = capture::start(&spec, &self.copier).map_err(|e| {
            io(
                format!(
                    "cannot set up the log capture in {}",
                    logs::log_dir(&ctx.alloc.alloc_dir).display()
                ),
                e,
            )
        })?;
        // An absolute workdir replaces the task dir, a relative one is
        // inside it.
        let dir = match &ctx.task.workdir {
            Some(w) => ctx.task_dir.join(w),
            None => ctx.task_dir.clone(),
        };

        let mut cmd = tokio::process::Command::new(program);
        cmd.args(first_args)
            .args(&ctx.task.args)
            .env_clear()
            .envs(&ctx.env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            // The task must outlive the agent (recover re-attaches).
            .kill_on_drop(false);
        if !ctx.env.contains_key("PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        join_on_exec(&mut cmd, fds);

        let spawned = cmd.spawn();
        // The task holds the FIFOs now: the copy ends when it (and what it
        // starts) is gone.
        drop(cmd);
        let mut child = spawned.map_err(|source| DriverError::Spawn {
            alloc_id: alloc_id.clone(),
            task: task.clone(),
            program: program.to_string(),
            source,
        })?;
        if let Err(e) = logs::record_start(&ctx.alloc.alloc_dir, task, started) {
            tracing::warn!(alloc = %alloc_id, task = %task, error = %e, "cannot record the start of the run in its log");
        }
        let Some(pid) = child.id().map(|p| p as i32) else {
            return Err(DriverError::Failed {
                alloc_id: alloc_id.clone(),
                task: task.clone(),
                reason: "the process vanished right after it started".into(),
            });
        };
        // Not reaped yet (we hold the child), so /proc/PID exists.
        let start_time = match procfs::read_stat(pid) {
            Ok(s) => s.start_time,
            Err(e) => {
                let _ = child.start_kill();
                return Err(io(format!("cannot read /proc/{pid}/stat"), e));
            }
        };

        let (tx, rx) = watch::channel(None);
        let cg = self.cgroups.clone();
        let cg_name = name.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            drained.wait(LOG_DRAIN_TIMEOUT).await;
            let exit = match status {
                Ok(status) => ExitResult::from_status(
                    status.code(),
                    status.signal(),
                    oom_of(cg.as_ref(), &cg_name),
                ),
                Err(e) => ExitResult {
                    message: format!("cannot wait for the process: {e}"),
                    ..ExitResult::default()
                },
            };
            tx.send_replace(Some(exit));
        });

        let state = ExecState {
            pid,
            start_time,
            pgid: pid,
            cgroup: name.to_string(),
            logs: Some(spec),
        };
        let handle = TaskHandle {
            driver: DriverKind::Exec,
            task: task.clone(),
            alloc_id: alloc_id.clone(),
            id: format!("{name}.{pid}.{start_time}"),
            started_at_ms: now_unix_ms(),
            state: serde_json::to_value(&state).map_err(|e| DriverError::Failed {
                alloc_id: alloc_id.clone(),
                task: task.clone(),
                reason: format!("cannot encode the handle: {e}"),
            })?,
        };
        self.lock().insert(handle.id.clone(), Tracked { exit: rx });
        tracing::info!(alloc = %alloc_id, task = %task, pid, cgroup = %name, "exec task started");
        Ok(handle)
    }
}

fn oom_of(cg: &dyn Cgroups, name: &str) -> bool {
    cg.oom_killed(name).unwrap_or_else(|e| {
        tracing::warn!(cgroup = %name, error = %e, "cannot tell whether the task was oom killed");
        false
    })
}

fn signal_group(pgid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

fn signal_pid(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits for a process this agent may not be the parent of: polls `/proc`
/// (a zombie counts as exited; the start time guards against pid reuse).
/// Once it exited, `waitid` on the pidfd gives the status when this process
/// happens to be the parent (then it also reaps it); otherwise the status
/// is unknown.
async fn watch_foreign(
    st: ExecState,
    pidfd: Option<OwnedFd>,
    poll: Duration,
) -> (Option<i32>, Option<i32>) {
    while st.main_alive() {
        tokio::time::sleep(poll).await;
    }
    let Some(fd) = pidfd else {
        return (None, None);
    };
    match rustix::process::waitid(
        WaitId::PidFd(fd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(s)) => (s.exit_status(), s.terminating_signal()),
        _ => (None, None),
    }
}

#[async_trait]
impl Driver for ExecDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Exec
    }

    async fn fingerprint(&self) -> Result<(), DriverError> {
        if !cfg!(target_os = "linux") {
            return Err(DriverError::Unavailable {
                driver: DriverKind::Exec,
                reason: "it needs linux".into(),
            });
        }
        let cg = self.cgroups.clone();
        tokio::task::spawn_blocking(move || cg.check())
            .await
            .map_err(|e| DriverError::Unavailable {
                driver: DriverKind::Exec,
                reason: e.to_string(),
            })?
            .map_err(|e| DriverError::Unavailable {
                driver: DriverKind::Exec,
                reason: e.to_string(),
            })
    }

    async fn start(&self, ctx: &TaskContext) -> Result<TaskHandle, DriverError> {
        let alloc_id = ctx.alloc.alloc_id.clone();
        let task = ctx.task.name.clone();
        let Some((program, first_args)) = ctx.task.command.split_first() else {
            return Err(DriverError::InvalidTask {
                alloc_id,
                task,
                reason: "the exec driver needs a command".into(),
            });
        };
        if program.is_empty() {
            return Err(DriverError::InvalidTask {
                alloc_id,
                task,
                reason: "the command is empty".into(),
            });
        }
        let name = cgroup_name(&alloc_id, &task);
        let limits = CgroupLimits::from_resources(&ctx.task.resources);
        let n = name.clone();
        let fds = self
            .on_cgroups(&alloc_id, &task, move |cg| {
                // A leftover of an earlier run (e.g. the agent died before
                // destroy): start from a clean cgroup, OOM counter included.
                if cg.exists(&n) {
                    cg.kill_all(&n, KILL_TIMEOUT)?;
                    cg.remove(&n)?;
                }
                cg.create(&n, &limits)?;
                cg.open_procs(&n)
            })
            .await?;
        // An earlier run's copier still writing (its output was held open
        // by what the cleared cgroup ran) finishes before this run's.
        capture::settle(&ctx.alloc.alloc_dir, &task, LOG_DRAIN_TIMEOUT).await;
        match self.spawn_task(ctx, program, first_args, &name, fds) {
            Ok(h) => Ok(h),
            Err(e) => {
                if let Err(ce) = self.clear_cgroup(&alloc_id, &task, &name).await {
                    tracing::warn!(error = %ce, "cannot remove the cgroup of a task that failed to start");
                }
                Err(e)
            }
        }
    }

    async fn clear_alloc(&self, alloc_id: &str) -> Result<(), DriverError> {
        let prefix = cgroup_name(alloc_id, "");
        for name in self.cgroups.list() {
            if name.starts_with(&prefix) {
                tracing::warn!(alloc = %alloc_id, cgroup = %name, "clearing a task of an allocation whose record is unreadable");
                self.clear_cgroup(alloc_id, &name, &name).await?;
            }
        }
        Ok(())
    }

    /// The task's cgroup holds whatever of it runs, handle or not.
    async fn clear_task(&self, alloc: &AllocContext, task: &str) -> Result<(), DriverError> {
        let name = cgroup_name(&alloc.alloc_id, task);
        self.clear_cgroup(&alloc.alloc_id, task, &name).await
    }

    async fn wait(&self, handle: &TaskHandle) -> Result<ExitResult, DriverError> {
        let Some(mut t) = self.tracked(&handle.id) else {
            return Err(DriverError::UnknownHandle {
                driver: DriverKind::Exec,
                alloc_id: handle.alloc_id.clone(),
                task: handle.task.clone(),
                id: handle.id.clone(),
            });
        };
        let r = t.exit.wait_for(Option::is_some).await.map_err(|_| {
            DriverError::failed(handle, "the process monitor ended without a result")
        })?;
        r.clone()
            .ok_or_else(|| DriverError::failed(handle, "no exit result"))
    }

    async fn stop(&self, handle: &TaskHandle, timeout: Duration) -> Result<(), DriverError> {
        let st = Self::state_of(handle)?;
        if self.gone(&st) {
            return Ok(());
        }
        // Graceful: SIGTERM to the process group while its leader is
        // verifiably ours; with the leader gone, to what is left in the
        // cgroup.
        if st.main_alive() {
            signal_group(st.pgid, Signal::TERM);
            if let Ok(s) = procfs::read_stat(st.pid)
                && s.pgrp != st.pgid
            {
                // The task left its process group: signal it directly.
                signal_pid(st.pid, Signal::TERM);
            }
        } else {
            for pid in self.cgroups.pids(&st.cgroup).unwrap_or_default() {
                signal_pid(pid, Signal::TERM);
            }
        }
        if self.wait_gone(&st, timeout).await {
            return Ok(());
        }
        tracing::info!(alloc = %handle.alloc_id, task = %handle.task, "kill timeout reached, sending sigkill");
        if st.main_alive() {
            signal_group(st.pgid, Signal::KILL);
            signal_pid(st.pid, Signal::KILL);
        }
        let n = st.cgroup.clone();
        self.on_cgroups(&handle.alloc_id, &handle.task, move |cg| {
            cg.kill_all(&n, KILL_TIMEOUT)
        })
        .await?;
        if self.wait_gone(&st, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(DriverError::failed(
                handle,
                format!("pid {} still running after sigkill", st.pid),
            ))
        }
    }

    async fn destroy(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        let st = Self::state_of(handle)?;
        if st.main_alive() {
            signal_group(st.pgid, Signal::KILL);
            signal_pid(st.pid, Signal::KILL);
        }
        self.clear_cgroup(&handle.alloc_id, &handle.task, &st.cgroup)
            .await?;
        if !self.wait_gone(&st, Duration::from_secs(5)).await {
            return Err(DriverError::failed(
                handle,
                format!("pid {} still running after sigkill", st.pid),
            ));
        }
        if let Some(spec) = &st.logs {
            capture::forget(spec);
        }
        self.lock().remove(&handle.id);
        Ok(())
    }

    async fn recover(&self, handle: &TaskHandle) -> Result<bool, DriverError> {
        let st = Self::state_of(handle)?;
        if let Some(t) = self.tracked(&handle.id) {
            return Ok(t.exit.borrow().is_none());
        }
        if !st.main_alive() {
            return Ok(false);
        }
        // The pidfd names this very process (checked again below, after it
        // is open), for waitid once it exited.
        let pidfd = Pid::from_raw(st.pid)
            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
        if !st.main_alive() {
            return Ok(false);
        }
        // Its capture process copied on while the agent was away (or its
        // output waited in the FIFOs): watch the copy again.
        let drained = st
            .logs
            .as_ref()
            .and_then(|spec| capture::reattach(spec, &self.copier));
        let (tx, rx) = watch::channel(None);
        let cg = self.cgroups.clone();
        let poll = self.poll_interval;
        let st2 = st.clone();
        tokio::spawn(async move {
            let (code, signal) = watch_foreign(st2.clone(), pidfd, poll).await;
            if let Some(d) = drained {
                d.wait(LOG_DRAIN_TIMEOUT).await;
            }
            let oom = oom_of(cg.as_ref(), &st2.cgroup);
            let mut exit = ExitResult::from_status(code, signal, oom);
            if code.is_none() && signal.is_none() {
                exit.message = format!(
                    "exited; exit code unknown (the task was re-attached after an agent restart){}",
                    if oom {
                        ", oom killed: memory limit reached"
                    } else {
                        ""
                    }
                );
            }
            tx.send_replace(Some(exit));
        });
        self.lock().insert(handle.id.clone(), Tracked { exit: rx });
        tracing::info!(alloc = %handle.alloc_id, task = %handle.task, pid = st.pid, "exec task recovered");
        Ok(true)
    }

    async fn stats(&self, handle: &TaskHandle) -> Result<TaskStats, DriverError> {
        let st = Self::state_of(handle)?;
        let s = self
            .cgroups
            .stats(&st.cgroup)
            .map_err(|e| DriverError::cgroup(&handle.alloc_id, &handle.task, e))?;
        Ok(TaskStats {
            memory_bytes: s.memory_bytes,
            cpu_usage_ns: s.cpu_usage_ns,
        })
    }

    /// A child process in the task's cgroup, with the environment and
    /// working directory of the task's main process (read from `/proc`),
    /// leading its own process group (killed whole at the timeout).
    async fn exec(
        &self,
        handle: &TaskHandle,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let st = Self::state_of(handle)?;
        let Some((program, args)) = command.split_first() else {
            return Err(DriverError::InvalidTask {
                alloc_id: handle.alloc_id.clone(),
                task: handle.task.clone(),
                reason: "the command to run in the task is empty".into(),
            });
        };
        if !st.main_alive() {
            return Err(DriverError::failed(handle, "the task is not running"));
        }
        let env = task_environ(st.pid);
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", st.pid))
            .unwrap_or_else(|_| std::path::PathBuf::from("/"));
        let n = st.cgroup.clone();
        let fds = self
            .on_cgroups(&handle.alloc_id, &handle.task, move |cg| cg.open_procs(&n))
            .await?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(&env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !env.contains_key("PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        join_on_exec(&mut cmd, fds);
        let child = cmd.spawn().map_err(|source| DriverError::Spawn {
            alloc_id: handle.alloc_id.clone(),
            task: handle.task.clone(),
            program: program.clone(),
            source,
        })?;
        let pgid = child.id().map(|p| p as i32);
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let code = out
                    .status
                    .code()
                    .or_else(|| out.status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                Ok(ExecOutput::from_streams(code, &out.stdout, &out.stderr))
            }
            Ok(Err(source)) => Err(DriverError::Io {
                alloc_id: handle.alloc_id.clone(),
                task: handle.task.clone(),
                what: format!("cannot wait for {program:?}"),
                source,
            }),
            Err(_) => {
                if let Some(pgid) = pgid {
                    signal_group(pgid, Signal::KILL);
                }
                Err(DriverError::failed(
                    handle,
                    format!(
                        "{program:?} did not finish within {}",
                        corral_types::units::Millis(timeout.as_millis() as u64)
                    ),
                ))
            }
        }
    }
}

/// The environment of a running process (`/proc/PID/environ`); empty when
/// it cannot be read.
fn task_environ(pid: i32) -> HashMap<String, String> {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return HashMap::new();
    };
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}
