//! One allocation's directory: its record, what a restarted agent needs
//! to carry on, its logs and its tasks' working directories.

use std::path::{Path, PathBuf};

use corral_types::{AllocUpdate, Allocation, GroupSpec, TaskState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::write_atomic;
use crate::driver::TaskHandle;

/// The log directory of an allocation directory: the drivers write there,
/// so the runtime names it.
pub use corral_runtime::logs::log_dir;

/// What the agent keeps of an allocation it runs: enough to adopt it
/// after a restart without asking the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocRecord {
    pub alloc: Allocation,
    pub group: GroupSpec,
    /// When the health watch of the allocation's deployment started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_watch: Option<crate::health::WatchStart>,
}

/// A task's restart policy state, so that an agent restart neither resets
/// the window nor skips (or repeats) a pending restart delay. Times are
/// unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// Restarts decided so far (all windows).
    pub restarts: u32,
    /// When the current counting window opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<u64>,
    /// Exits counted in that window.
    #[serde(default)]
    pub in_window: u32,
    /// A decided restart not started yet: when it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<u64>,
    /// The run (handle id) whose exit this record already counts: a
    /// restarted agent that still finds its handle must not count it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<String>,
    /// The policy gave up, for this reason: the task is dead for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
    /// The exit this record decided on (code, OOM), for the task's state
    /// when the run it ended is gone by the time an agent restart reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// When a stop of the task began: a restarted agent finishing it gives
    /// the task what is left of its `kill_timeout`, not a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_since: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocDir {
    root: PathBuf,
}

/// Files of the agent's own state, by task (`tasks/<task>.<what>.json`).
const TASK_FILES: [&str; 3] = ["handle", "state", "restart"];

impl AllocDir {
    pub fn new(root: impl Into<PathBuf>) -> AllocDir {
        AllocDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The allocation's id (the directory's name).
    pub fn id(&self) -> Option<&str> {
        self.root.file_name().and_then(|n| n.to_str())
    }

    pub fn log_dir(&self) -> PathBuf {
        log_dir(&self.root)
    }

    /// The task's working directory.
    pub fn task_dir(&self, task: &str) -> PathBuf {
        self.root.join(task)
    }

    fn record_file(&self) -> PathBuf {
        self.root.join("alloc.json")
    }

    fn task_file(&self, task: &str, what: &str) -> PathBuf {
        self.root.join("tasks").join(format!("{task}.{what}.json"))
    }

    /// Whether the allocation still runs here (or ran when the agent died).
    pub fn has_record(&self) -> bool {
        self.record_file().exists()
    }

    pub fn save_record(&self, rec: &AllocRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join("tasks"))?;
        save(&self.record_file(), rec)
    }

    pub fn load_record(&self) -> std::io::Result<Option<AllocRecord>> {
        load(&self.record_file())
    }

    /// Why the allocation failed, persisted before the agent acts on it
    /// (stops the other tasks), so a restarted agent does not forget it.
    pub fn save_failure(&self, why: &str) -> std::io::Result<()> {
        save(&self.root.join("failure.json"), &why)
    }

    pub fn load_failure(&self) -> Option<String> {
        load(&self.root.join("failure.json")).ok().flatten()
    }

    /// The allocation's last report, kept once it ended here (with the
    /// logs, until the sweep): a restarted agent sends it again, and never
    /// runs the allocation a second time.
    pub fn save_final(&self, last: &AllocUpdate) -> std::io::Result<()> {
        save(&self.root.join("final.json"), last)
    }

    pub fn load_final(&self) -> Option<AllocUpdate> {
        load(&self.root.join("final.json")).ok().flatten()
    }

    /// The checks' last status (whatever the checks module keeps).
    pub fn save_checks<T: Serialize>(&self, checks: &T) -> std::io::Result<()> {
        save(&self.root.join("checks.json"), checks)
    }

    pub fn load_checks<T: DeserializeOwned>(&self) -> Option<T> {
        load(&self.root.join("checks.json")).ok().flatten()
    }

    pub fn save_handle(&self, task: &str, h: &TaskHandle) -> std::io::Result<()> {
        save(&self.task_file(task, "handle"), h)
    }

    /// Forgets a task's handle once its run is destroyed.
    pub fn remove_handle(&self, task: &str) -> std::io::Result<()> {
        remove(&self.task_file(task, "handle"))
    }

    pub fn load_handle(&self, task: &str) -> Option<TaskHandle> {
        load(&self.task_file(task, "handle")).ok().flatten()
    }

    pub fn save_task_state(&self, task: &str, s: &TaskState) -> std::io::Result<()> {
        save(&self.task_file(task, "state"), s)
    }

    pub fn load_task_state(&self, task: &str) -> Option<TaskState> {
        load(&self.task_file(task, "state")).ok().flatten()
    }

    pub fn save_restarts(&self, task: &str, r: &RestartRecord) -> std::io::Result<()> {
        save(&self.task_file(task, "restart"), r)
    }

    pub fn load_restarts(&self, task: &str) -> Option<RestartRecord> {
        load(&self.task_file(task, "restart")).ok().flatten()
    }

    /// The allocation ended here: its record and state go, its logs and
    /// working directories stay (until [`super::sweep`]).
    pub fn forget(&self) -> std::io::Result<()> {
        remove(&self.record_file())?;
        remove(&self.root.join("failure.json"))?;
        remove(&self.root.join("checks.json"))?;
        let tasks = self.root.join("tasks");
        // Only what the agent wrote: never through something mounted there.
        if super::has_mount_in(&tasks) {
            for e in std::fs::read_dir(&tasks)?.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    remove(&e.path())?;
                }
            }
            return Ok(());
        }
        match std::fs::remove_dir_all(tasks) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The names of the per-task state files, for tests and tools.
    pub fn task_files(&self, task: &str) -> Vec<PathBuf> {
        TASK_FILES.iter().map(|w| self.task_file(task, w)).collect()
    }
}

fn save<T: Serialize + ?Sized>(path: &Path, v: &T) -> std::io::Result<()> {
    write_atomic(path, &serde_json::to_vec(v).map_err(std::io::Error::other)?)
}

/// `None` when the file does not exist; an error when it cannot be read
/// or parsed.
fn load<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_state_round_trips_and_forget_keeps_the_logs() {
        let d = tempfile::tempdir().unwrap();
        let dir = AllocDir::new(d.path().join("a1"));
        let s = TaskState {
            restarts: 3,
            ..TaskState::default()
        };
        dir.save_task_state("web", &s).unwrap();
        dir.save_failure("task web: gave up").unwrap();
        let r = RestartRecord {
            restarts: 3,
            window_start: Some(5),
            in_window: 2,
            due: Some(9),
            exited: Some("run-1".into()),
            gave_up: None,
            stopping_since: None,
            exit_code: Some(1),
            oom_killed: false,
        };
        dir.save_restarts("web", &r).unwrap();
        std::fs::create_dir_all(dir.log_dir()).unwrap();
        std::fs::write(dir.log_dir().join("web.log"), "x").unwrap();
        assert_eq!(dir.load_task_state("web").unwrap().restarts, 3);
        assert_eq!(dir.load_restarts("web"), Some(r));
        assert_eq!(dir.load_failure().as_deref(), Some("task web: gave up"));
        dir.forget().unwrap();
        assert!(dir.load_task_state("web").is_none());
        assert!(dir.load_failure().is_none());
        assert!(dir.log_dir().join("web.log").exists());
    }

    /// Found by a hostile run: forgetting an allocation removed `tasks/`
    /// recursively, through a tmpfs mounted in it (root: it mounts).
    #[test]
    fn forget_never_deletes_through_a_mount() {
        let d = tempfile::tempdir().unwrap();
        let dir = AllocDir::new(d.path().join("a1"));
        dir.save_task_state("web", &TaskState::default()).unwrap();
        let Some(m) =
            super::super::test_mount::tmpfs_with_a_file(&dir.path().join("tasks").join("m"))
        else {
            return;
        };
        let r = dir.forget();
        let survived = m.file_survived();
        drop(m);
        r.unwrap();
        assert!(survived, "forget deleted through the mount");
        assert!(dir.load_task_state("web").is_none());
    }
}
