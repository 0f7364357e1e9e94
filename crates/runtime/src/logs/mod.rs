//! Task logs on a node, the same for both drivers: where they live, their
//! format, their rotation, the start of each run (for `--previous`),
//! reading them (`read`) and the exec driver's capture of a task's output
//! (`capture`, `writer`). The agent's periodic upkeep (CRI log rotation,
//! deleting logs past retention) is the agent's `logs` module.
//!
//! Layout, the same for both drivers, under `<alloc_dir>/logs/`:
//!
//! - `<task>.log`: the current file, in the CRI log format ([`format`](mod@format)),
//!   both streams, every run of the task appended (containerd opens it in
//!   append mode for each new container; the exec writer appends too);
//! - `<task>.log.<seq>`: rotated files, a higher `seq` is newer; at most
//!   `max_files - 1` of them are kept;
//! - `<task>.starts`: the start time of each run, one per line (the last
//!   [`STARTS_KEPT`]); a run's lines are those written between its start
//!   and the next one's;
//! - `.<task>.<n>.stdout|stderr`: the FIFOs of a running exec task.
//!
//! The allocation's directory stays after the allocation stops (only the
//! agent's record of it goes); the agent deletes it once the retention has
//! passed.

pub mod capture;
pub mod format;
pub mod read;
pub mod writer;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use format::{Stream, Timestamp};

/// Runs whose start is remembered (two are enough for `--previous`).
pub const STARTS_KEPT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    BadQuery(String),
    #[error(
        "allocation {0} has no logs on this node (not started yet, or deleted after the retention period)"
    )]
    NoAlloc(String),
    #[error("allocation {alloc} has no task {task:?}; its tasks: {tasks}")]
    NoTask {
        alloc: String,
        task: String,
        tasks: String,
    },
    #[error("allocation {alloc} has several tasks ({tasks}): pick one with --task")]
    WhichTask { alloc: String, tasks: String },
    #[error("task {task} has not restarted: there is no previous run")]
    NoPrevious { task: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The log directory of the allocation directory `alloc_dir`.
pub fn log_dir(alloc_dir: &Path) -> PathBuf {
    alloc_dir.join("logs")
}

/// The current log file of a task.
pub fn log_file(alloc_dir: &Path, task: &str) -> PathBuf {
    log_dir(alloc_dir).join(format!("{task}.log"))
}

fn starts_file(alloc_dir: &Path, task: &str) -> PathBuf {
    log_dir(alloc_dir).join(format!("{task}.starts"))
}

/// One file of a task's log: a rotated one (`seq`) or the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFile {
    pub path: PathBuf,
    /// `None` for the current file.
    pub seq: Option<u64>,
    /// Inode, to recognise a file after it was renamed.
    pub ino: u64,
}

/// The files of the log whose current file is `current`, oldest first,
/// the current one last (when it exists).
pub fn chain(current: &Path) -> std::io::Result<Vec<ChainFile>> {
    use std::os::unix::fs::MetadataExt;
    let (Some(dir), Some(name)) = (
        current.parent(),
        current.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for e in rd.filter_map(Result::ok) {
        let file_name = e.file_name();
        let Some(seq) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if let Ok(m) = e.metadata() {
            out.push(ChainFile {
                path: e.path(),
                seq: Some(seq),
                ino: m.ino(),
            });
        }
    }
    out.sort_by_key(|f| f.seq);
    if let Ok(m) = std::fs::metadata(current) {
        out.push(ChainFile {
            path: current.to_path_buf(),
            seq: None,
            ino: m.ino(),
        });
    }
    Ok(out)
}

/// Renames the current file to the next rotated name and deletes the
/// oldest rotated files beyond `max_files - 1`. Returns the new name.
pub fn rotate(current: &Path, max_files: u32) -> std::io::Result<PathBuf> {
    let rotated = rename_current(current)?;
    prune(current, max_files)?;
    Ok(rotated)
}

/// Moves the current file to the next rotated name, deleting nothing (the
/// container driver prunes only once containerd writes to a new file).
pub fn rename_current(current: &Path) -> std::io::Result<PathBuf> {
    let files = chain(current)?;
    let next = files.iter().filter_map(|f| f.seq).max().unwrap_or(0) + 1;
    let mut rotated = current.as_os_str().to_owned();
    rotated.push(format!(".{next}"));
    let rotated = PathBuf::from(rotated);
    std::fs::rename(current, &rotated)?;
    Ok(rotated)
}

/// Deletes the oldest rotated files beyond `max_files - 1`.
pub fn prune(current: &Path, max_files: u32) -> std::io::Result<()> {
    let rotated: Vec<ChainFile> = chain(current)?
        .into_iter()
        .filter(|f| f.seq.is_some())
        .collect();
    let keep = (max_files as usize).saturating_sub(1);
    for f in &rotated[..rotated.len().saturating_sub(keep)] {
        match std::fs::remove_file(&f.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Remembers that a run of `task` started at `time` (taken before the
/// run could write anything).
pub fn record_start(alloc_dir: &Path, task: &str, time: Timestamp) -> std::io::Result<()> {
    let path = starts_file(alloc_dir, task);
    std::fs::create_dir_all(log_dir(alloc_dir))?;
    let mut starts = starts(alloc_dir, task);
    starts.push(time);
    if starts.len() > STARTS_KEPT * 2 {
        let text: String = starts[starts.len() - STARTS_KEPT..]
            .iter()
            .map(|t| format!("{t}\n"))
            .collect();
        let tmp = path.with_extension("starts.tmp");
        std::fs::write(&tmp, text)?;
        return std::fs::rename(&tmp, &path);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    f.write_all(format!("{time}\n").as_bytes())
}

/// Start times of the task's runs, oldest first.
pub fn starts(alloc_dir: &Path, task: &str) -> Vec<Timestamp> {
    std::fs::read_to_string(starts_file(alloc_dir, task))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Timestamp::parse(l.trim()))
        .collect()
}

/// Tasks of the allocation that have a log, sorted.
pub fn tasks(alloc_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(log_dir(alloc_dir))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let n = e.file_name();
                    let n = n.to_str()?;
                    let task = n
                        .strip_suffix(".log")
                        .or_else(|| n.strip_suffix(".starts"))?;
                    (!task.starts_with('.')).then(|| task.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
