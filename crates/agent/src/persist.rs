//! What the agent keeps on disk so a restarted agent is the same node and
//! adopts its allocations: the node id, each allocation with its group
//! spec, each task's handle and state (restart counters survive).

use std::path::{Path, PathBuf};

use corral_types::{Allocation, GroupSpec, TaskState};
use serde::{Deserialize, Serialize};

use crate::agent::Shared;
use crate::driver::TaskHandle;

/// The node id, created once and kept in the data dir.
pub fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedAlloc {
    pub alloc: Allocation,
    pub group: GroupSpec,
}

fn alloc_file(dir: &Path) -> PathBuf {
    dir.join("alloc.json")
}

fn task_file(dir: &Path, task: &str, what: &str) -> PathBuf {
    dir.join("tasks").join(format!("{task}.{what}.json"))
}

pub fn save_alloc(dir: &Path, rec: &PersistedAlloc) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("tasks"))?;
    write_atomic(
        &alloc_file(dir),
        &serde_json::to_vec(rec).map_err(std::io::Error::other)?,
    )
}

/// Forget an allocation that ended: the record goes, the logs stay.
pub fn remove_alloc(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(alloc_file(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_dir_all(dir.join("tasks")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Allocations a previous agent process was running.
pub fn load_allocs(shared: &Shared) -> Vec<PersistedAlloc> {
    let root = shared.data_dir.join("allocs");
    let Ok(rd) = std::fs::read_dir(&root) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let path = alloc_file(&e.path());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<PersistedAlloc>(&bytes) {
            Ok(rec) => out.push(rec),
            Err(err) => {
                tracing::error!(file = %path.display(), error = %err, "unreadable allocation record; ignoring it")
            }
        }
    }
    out
}

pub fn save_handle(dir: &Path, task: &str, h: &TaskHandle) -> std::io::Result<()> {
    write_atomic(
        &task_file(dir, task, "handle"),
        &serde_json::to_vec(h).map_err(std::io::Error::other)?,
    )
}

pub fn load_handle(dir: &Path, task: &str) -> Option<TaskHandle> {
    let bytes = std::fs::read(task_file(dir, task, "handle")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save_task_state(dir: &Path, task: &str, s: &TaskState) -> std::io::Result<()> {
    write_atomic(
        &task_file(dir, task, "state"),
        &serde_json::to_vec(s).map_err(std::io::Error::other)?,
    )
}

pub fn load_task_state(dir: &Path, task: &str) -> Option<TaskState> {
    let bytes = std::fs::read(task_file(dir, task, "state")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write to a temporary file, fsync, rename: a crash leaves the old or the
/// new content, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable() {
        let d = tempfile::tempdir().unwrap();
        let a = node_id(d.path()).unwrap();
        let b = node_id(d.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn task_state_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let s = TaskState {
            restarts: 3,
            ..TaskState::default()
        };
        save_task_state(d.path(), "web", &s).unwrap();
        assert_eq!(load_task_state(d.path(), "web").unwrap().restarts, 3);
        remove_alloc(d.path()).unwrap();
        assert!(load_task_state(d.path(), "web").is_none());
    }
}
