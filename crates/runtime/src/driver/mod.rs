//! Task drivers: what actually runs a task on this node.
//!
//! The [`Driver`] trait is shaped for two drivers:
//!
//! - `exec` ([`exec::ExecDriver`]): a command run directly on the node in its
//!   own cgroup;
//! - `container` ([`cri::CriDriver`], containerd through CRI): one pod sandbox per
//!   allocation, created in [`Driver::prepare_alloc`] and removed in
//!   [`Driver::cleanup_alloc`], one container per task.
//!
//! Lifecycle of one task run, as the agent's task runner drives it:
//! `start` -> persist the [`TaskHandle`] -> `wait` -> (`stop`) ->
//! `destroy`. After an agent restart the persisted handle goes through
//! `recover`, and if the task still runs, `wait`/`stop`/`destroy` work on it
//! as if it had been started by this process.

pub mod cri;
pub mod exec;
pub mod fake;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use corral_types::{DriverKind, TaskSpec};
use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupError;

pub use self::cri::pod::{PodDns, PodOptions};

/// What a driver needs to know about the allocation a task belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocContext {
    pub alloc_id: String,
    pub job: String,
    pub group: String,
    pub index: u32,
    pub node_id: String,
    /// The allocation's directory on the node (shared by its tasks).
    pub alloc_dir: PathBuf,
    /// Host ports assigned by the scheduler, by port name.
    pub ports: BTreeMap<String, u16>,
    /// What the allocation's pod needs of its group (container ports,
    /// network mode, privilege), from [`PodOptions::from_group`]: the
    /// container driver's sandbox is made from it; the exec driver has no
    /// use for it.
    #[serde(default)]
    pub pod: PodOptions,
}

/// Everything needed to start one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    pub alloc: AllocContext,
    pub task: TaskSpec,
    /// The final environment of the task: `task.env` plus the `CORRAL_*`
    /// variables the caller adds. The driver uses this, not `task.env`.
    pub env: BTreeMap<String, String>,
    /// The task's own directory; its working directory unless
    /// `task.workdir` says otherwise (a relative `workdir` is relative to
    /// it).
    pub task_dir: PathBuf,
    /// Where stdout and stderr go: both drivers write them, with the time
    /// of each line, to the task's one log file under the allocation's
    /// log directory ([`crate::logs::log_file`]), whatever these say.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// Host directories bound into a container (volumes); the exec
    /// driver, which has no mount namespace, ignores them.
    pub mounts: Vec<HostMount>,
}

/// A host directory a container sees at `container_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

impl TaskContext {
    /// `task <name> of alloc <id>`, for messages.
    pub fn describe(&self) -> String {
        format!("task {} of alloc {}", self.task.name, self.alloc.alloc_id)
    }
}

/// A started task, as the driver needs it to find the task again, also
/// after an agent restart: the agent persists it as JSON in its data dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskHandle {
    pub driver: DriverKind,
    pub task: String,
    pub alloc_id: String,
    /// Unique per start (a restart gets a new id).
    pub id: String,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    /// Driver-specific state (exec: pid, process start time, pgid, cgroup;
    /// CRI: sandbox and container ids).
    pub state: serde_json::Value,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExitResult {
    /// Exit code, when the process exited by itself and the code is known.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The kernel OOM killer killed a process of the task (its memory limit
    /// was reached).
    pub oom_killed: bool,
    /// A sentence for people: "exited with code 1", "killed by signal 9".
    pub message: String,
}

impl ExitResult {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none() && !self.oom_killed
    }

    /// An exit with the usual message for a code or a signal.
    pub fn from_status(exit_code: Option<i32>, signal: Option<i32>, oom_killed: bool) -> Self {
        let mut message = match (exit_code, signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            (None, None) => "exited with an unknown status".to_string(),
        };
        if oom_killed {
            message = format!("oom killed: memory limit reached ({message})");
        }
        ExitResult {
            exit_code,
            signal,
            oom_killed,
            message,
        }
    }
}

/// What a command run inside a task ([`Driver::exec`]) gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The exit code; 128 + the signal number when a signal killed it.
    pub exit_code: i32,
    /// stdout, then stderr, each cut to [`EXEC_OUTPUT_LIMIT`] bytes.
    pub output: String,
}

/// How much of each output stream of [`Driver::exec`] is kept.
pub const EXEC_OUTPUT_LIMIT: usize = 4096;

impl ExecOutput {
    /// From the raw streams: stdout then stderr, each cut to
    /// [`EXEC_OUTPUT_LIMIT`] bytes, decoded lossily, trimmed.
    pub fn from_streams(exit_code: i32, stdout: &[u8], stderr: &[u8]) -> ExecOutput {
        let cut = |b: &[u8]| {
            String::from_utf8_lossy(&b[..b.len().min(EXEC_OUTPUT_LIMIT)])
                .trim()
                .to_string()
        };
        let (out, err) = (cut(stdout), cut(stderr));
        let output = match (out.is_empty(), err.is_empty()) {
            (_, true) => out,
            (true, false) => err,
            (false, false) => format!("{out}\n{err}"),
        };
        ExecOutput { exit_code, output }
    }
}

/// Usage numbers of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskStats {
    pub memory_bytes: u64,
    pub cpu_usage_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the {driver} driver is not usable on this node: {reason}")]
    Unavailable { driver: DriverKind, reason: String },
    #[error("task {task} of alloc {alloc_id}: {reason}")]
    InvalidTask {
        alloc_id: String,
        task: String,
        reason: String,
    },
    #[error("task {task} of alloc {alloc_id}: cannot start {program:?}: {source}")]
    Spawn {
        alloc_id: String,
        task: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task} of alloc {alloc_id}: {source}")]
    Cgroup {
        alloc_id: String,
        task: String,
        #[source]
        source: CgroupError,
    },
    #[error("task {task} of alloc {alloc_id}: {what}: {source}")]
    Io {
        alloc_id: String,
        task: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "task {task} of alloc {alloc_id}: handle {id} is not known to the {driver} driver (start or recover it first)"
    )]
    UnknownHandle {
        driver: DriverKind,
        alloc_id: String,
        task: String,
        id: String,
    },
    #[error("task {task} of alloc {alloc_id}: unusable handle: {reason}")]
    BadHandle {
        alloc_id: String,
        task: String,
        reason: String,
    },
    #[error("task {task} of alloc {alloc_id}: {reason}")]
    Failed {
        alloc_id: String,
        task: String,
        reason: String,
    },
    #[error("the {driver} driver does not support {what}")]
    Unsupported {
        driver: DriverKind,
        what: &'static str,
    },
}

impl DriverError {
    pub(crate) fn failed(h: &TaskHandle, reason: impl Into<String>) -> Self {
        DriverError::Failed {
            alloc_id: h.alloc_id.clone(),
            task: h.task.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn cgroup(alloc_id: &str, task: &str, source: CgroupError) -> Self {
        DriverError::Cgroup {
            alloc_id: alloc_id.to_string(),
            task: task.to_string(),
            source,
        }
    }
}

/// A way to run tasks on this node. Implementations keep their own table of
/// running tasks, keyed by [`TaskHandle::id`]; everything the driver needs
/// to find a task again after an agent restart goes into
/// [`TaskHandle::state`].
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    fn kind(&self) -> DriverKind;

    /// Whether this driver works on this node (binaries, sockets, cgroups,
    /// permissions). The agent advertises only drivers that pass.
    async fn fingerprint(&self) -> Result<(), DriverError>;

    /// Called before an allocation's tasks start, and again when a
    /// restarted agent adopts the allocation: idempotent (CRI: adopt the
    /// allocation's ready pod sandbox, or replace a dead one, or create
    /// one). Default: nothing to do.
    async fn prepare_alloc(&self, _alloc: &AllocContext) -> Result<(), DriverError> {
        Ok(())
    }

    /// Called once per allocation after all its tasks are destroyed (CRI:
    /// stop and remove the pod sandbox). Default: nothing to do.
    async fn cleanup_alloc(&self, _alloc: &AllocContext) -> Result<(), DriverError> {
        Ok(())
    }

    /// Starts the task and returns once it runs. The returned handle is
    /// what the caller persists.
    async fn start(&self, task: &TaskContext) -> Result<TaskHandle, DriverError>;

    /// Resolves when the task exits. Cancel-safe: dropping the future loses
    /// nothing, and several callers may wait on the same handle; after the
    /// exit it keeps answering the same result until `destroy`.
    async fn wait(&self, handle: &TaskHandle) -> Result<ExitResult, DriverError>;

    /// Asks the task to stop (SIGTERM or the runtime's equivalent), and
    /// after `timeout` kills whatever is left. Returns when nothing of the
    /// task runs any more. Stopping a task that already exited is fine.
    async fn stop(&self, handle: &TaskHandle, timeout: Duration) -> Result<(), DriverError>;

    /// Removes every leftover of the task (processes, cgroup, container).
    /// Idempotent; works from the handle alone, also for a task this
    /// driver instance never started or recovered.
    async fn destroy(&self, handle: &TaskHandle) -> Result<(), DriverError>;

    /// Removes whatever of `task` of the allocation runs or is left on this
    /// node, with or without a handle: an agent killed while a start was in
    /// flight saved none, and a start cancelled half-way may have left a
    /// process or a container behind (exec: the task's cgroup; CRI: the
    /// containers labelled with the allocation and task). Idempotent.
    async fn clear_task(&self, _alloc: &AllocContext, _task: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// Removes whatever of the allocation runs on this node, every task,
    /// knowing only its id (its record on disk was unreadable). Exec: the
    /// cgroups named after the allocation; CRI: its pod sandbox goes with
    /// [`Driver::remove_orphans`]. Idempotent.
    async fn clear_alloc(&self, _alloc_id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// After an agent restart: true when the driver can follow the task
    /// described by a persisted handle: it runs, or it exited and its
    /// status is still known (CRI: an exited container's exit code and
    /// OOM flag); `wait` then answers at once. The driver re-attaches so
    /// that `wait`, `stop` and `destroy` work again. False when it can
    /// not: the caller should `destroy` the leftovers and treat the task
    /// as exited for an unknown reason.
    async fn recover(&self, handle: &TaskHandle) -> Result<bool, DriverError>;

    /// After an agent restart: remove what this driver finds labelled as
    /// this node's but belonging to no allocation in `keep` (CRI: pod
    /// sandboxes left by a crash, then the CNI nat rules and leases of
    /// sandboxes the runtime no longer has). Returns how many were
    /// removed.
    async fn remove_orphans(
        &self,
        _node_id: &str,
        _keep: &std::collections::HashSet<String>,
    ) -> Result<usize, DriverError> {
        Ok(0)
    }

    /// Rotates the logs of this node's running tasks that this process
    /// does not write itself (CRI: containerd writes them; the agent
    /// renames a file past its size and asks the runtime to reopen it, as
    /// the kubelet does). Called periodically; returns how many files were
    /// rotated. Default: nothing to do (the exec driver rotates as it
    /// writes).
    async fn rotate_logs(&self, _node_id: &str) -> Result<usize, DriverError> {
        Ok(0)
    }

    /// Current usage of a running task.
    async fn stats(&self, _handle: &TaskHandle) -> Result<TaskStats, DriverError> {
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "stats",
        })
    }

    /// Runs `command` (program and arguments) inside the running task:
    /// its filesystem, namespaces, cgroup and environment (CRI: ExecSync;
    /// exec: a child process in the task's cgroup). Returns its exit code
    /// and output; after `timeout` the command is killed and this is an
    /// error. Health checks of `type: exec` use it.
    async fn exec(
        &self,
        _handle: &TaskHandle,
        _command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "exec",
        })
    }

    /// The address at which this node reaches the task's ports: the IP of
    /// the task's own network namespace (CRI with bridge networking: the
    /// pod IP), or `None` when the task uses the node's network and its
    /// ports are reached on 127.0.0.1. Health checks use it.
    async fn task_ip(&self, _handle: &TaskHandle) -> Result<Option<IpAddr>, DriverError> {
        Ok(None)
    }
}

/// The usual name of a signal number, for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Unix time now, in milliseconds.
pub use corral_types::model::now_ms as now_unix_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_messages() {
        assert!(ExitResult::from_status(Some(0), None, false).success());
        let e = ExitResult::from_status(Some(1), None, false);
        assert!(!e.success());
        assert_eq!(e.message, "exited with code 1");
        let e = ExitResult::from_status(None, Some(9), true);
        assert!(!e.success());
        assert_eq!(
            e.message,
            "oom killed: memory limit reached (killed by signal 9 (SIGKILL))"
        );
        assert!(!ExitResult::from_status(Some(0), None, true).success());
    }

    #[test]
    fn handle_round_trips_as_json() {
        let h = TaskHandle {
            driver: DriverKind::Exec,
            task: "app".into(),
            alloc_id: "a1".into(),
            id: "a1-app.42".into(),
            started_at_ms: 1_700_000_000_000,
            state: serde_json::json!({"pid": 42, "start_time": 7}),
        };
        let s = serde_json::to_string(&h).expect("serializes");
        assert!(s.contains("\"driver\":\"exec\""));
        let back: TaskHandle = serde_json::from_str(&s).expect("parses");
        assert_eq!(back, h);
    }

    #[test]
    fn errors_name_task_and_alloc() {
        let e = DriverError::Spawn {
            alloc_id: "a1".into(),
            task: "app".into(),
            program: "nope".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("task app of alloc a1: cannot start \"nope\""),
            "{m}"
        );
    }
}
