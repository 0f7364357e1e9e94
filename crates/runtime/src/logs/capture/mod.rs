//! The exec driver's capture of a task's stdout and stderr.
//!
//! Each stream is a FIFO in the log directory. The task gets it opened
//! read-write as its fd 1 or 2; a copier reads it, stamps each line with
//! the time and writes it to the task's log through the rotating
//! [`super::writer`]. The copier is a capture process per run
//! (`corral logmon`, [`process`]) in its own session, outside the task's
//! cgroup and process group, that outlives the agent; or, when the agent
//! does not know its binary ([`Copier::InProcess`]: unit tests), a task
//! of the agent.
//!
//! Nothing the task writes is lost while a copier is missing for a while:
//! the task holds a read end of its FIFOs too, so its writes wait in the
//! pipe (64 KiB; then it blocks) instead of failing; the agent holds
//! another read end (it never reads from it) while it supervises the run
//! (`supervise`), so a task that exits while the capture process is
//! being replaced leaves its last output in the pipe for the next one. The
//! agent starts a capture process again when one dies, and after its own
//! restart finds the running one ([`reattach`]) by the lock it holds
//! ([`lock`]). A copier ends when every writer is gone (the task and
//! whatever it started): it writes what is left of an unfinished line,
//! removes the FIFOs and exits.

mod copy;
pub mod lock;
pub mod process;
mod supervise;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use corral_types::LogPolicy;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::format::Timestamp;
use super::writer;

pub use process::SUBCOMMAND;

/// Where a run's output goes; kept in the exec handle so that a restarted
/// agent can reattach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    /// The task's current log file.
    pub file: PathBuf,
    pub stdout_fifo: PathBuf,
    pub stderr_fifo: PathBuf,
    pub policy: LogPolicy,
}

impl CaptureSpec {
    /// For a run of `task` starting at `start` (which names its FIFOs).
    pub fn new(alloc_dir: &Path, task: &str, start: Timestamp, policy: LogPolicy) -> CaptureSpec {
        let dir = super::log_dir(alloc_dir);
        CaptureSpec {
            file: super::log_file(alloc_dir, task),
            stdout_fifo: dir.join(format!(".{task}.{}.stdout", start.0)),
            stderr_fifo: dir.join(format!(".{task}.{}.stderr", start.0)),
            policy,
        }
    }

    /// Both FIFOs are there: the run may still have output to copy.
    fn fifos_exist(&self) -> bool {
        self.stdout_fifo.exists() && self.stderr_fifo.exists()
    }

    fn remove_fifos(&self) {
        for p in [&self.stdout_fifo, &self.stderr_fifo] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Who copies a run's output to its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Copier {
    /// A task of this process: what it has read but not written yet (an
    /// unfinished line) is lost with the agent, and so is what waits in
    /// the pipe when the task exits while the agent is down.
    #[default]
    InProcess,
    /// A capture process, `<this binary> logmon <spec>`, that outlives
    /// the agent.
    Process(PathBuf),
}

impl Copier {
    /// A capture process of `exe` when known, else in this process.
    pub fn of(exe: Option<PathBuf>) -> Copier {
        exe.map_or(Copier::InProcess, Copier::Process)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("the capture spec is not valid")]
    Spec(#[from] serde_json::Error),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves once a run's output is all in its log.
#[derive(Debug, Clone)]
pub struct Drained(watch::Receiver<bool>);

impl Drained {
    /// Waits until the copy ended, at most `timeout` (something the task
    /// started may keep its output open). Returns whether it ended.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.0.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await,
            Ok(Ok(_))
        )
    }
}

/// Runs supervised by this process, by stdout FIFO.
static ACTIVE: LazyLock<Mutex<HashMap<PathBuf, Drained>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn active() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Drained>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(std::io::Error::from)
}

/// The task's ends of the FIFOs (stdout, stderr), and the copy's end.
pub struct Capture {
    pub stdout: File,
    pub stderr: File,
    pub drained: Drained,
}

/// Creates the FIFOs and starts copying; give `stdout` and `stderr` to the
/// task (and drop them here once it started). Needs a tokio runtime.
pub fn start(spec: &CaptureSpec, copier: &Copier) -> std::io::Result<Capture> {
    if let Some(dir) = spec.file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A log that cannot be written fails the start, not the copy.
    drop(writer::shared(&spec.file, spec.policy)?);
    mkfifo(&spec.stdout_fifo)?;
    mkfifo(&spec.stderr_fifo)?;
    let open_rw = |p: &Path| std::fs::OpenOptions::new().read(true).write(true).open(p);
    let stdout = open_rw(&spec.stdout_fifo)?;
    let stderr = open_rw(&spec.stderr_fifo)?;
    let drained = supervise::spawn(spec.clone(), copier.clone());
    Ok(Capture {
        stdout,
        stderr,
        drained,
    })
}

/// After an agent restart: supervises a run's copy again (its capture
/// process still running, or a new one). `None` when the FIFOs are gone
/// (the run ended and its output was copied).
pub fn reattach(spec: &CaptureSpec, copier: &Copier) -> Option<Drained> {
    if let Some(d) = active().get(&spec.stdout_fifo) {
        return Some(d.clone());
    }
    if !spec.fifos_exist() {
        return None;
    }
    Some(supervise::spawn(spec.clone(), copier.clone()))
}

/// Removes the FIFOs of a run nobody copies from any more (its task died
/// while the agent was away, and its capture process with it). A capture
/// process still copying removes them itself once done.
pub fn forget(spec: &CaptureSpec) {
    if active().contains_key(&spec.stdout_fifo) || lock::copier_runs(&spec.stdout_fifo) {
        return;
    }
    spec.remove_fifos();
}

/// Waits, at most `timeout`, until no copier of an earlier run of `task`
/// runs (one that outlived its run: something held its output open), so
/// that one copier at a time writes the task's log.
pub async fn settle(alloc_dir: &Path, task: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for fifo in stdout_fifos(alloc_dir, task) {
        while lock::copier_runs(&fifo) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(fifo = %fifo.display(), "the capture of an earlier run still copies");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The stdout FIFOs of the runs of `task` in the log directory.
fn stdout_fifos(alloc_dir: &Path, task: &str) -> Vec<PathBuf> {
    let prefix = format!(".{task}.");
    let Ok(rd) = std::fs::read_dir(super::log_dir(alloc_dir)) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".stdout"))
                .is_some_and(|start| start.parse::<i64>().is_ok())
        })
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
use lock::Taken;

#[cfg(test)]
mod tests;
