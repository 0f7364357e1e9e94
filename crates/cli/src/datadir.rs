//! One process per data dir. Two servers on one store, or two agents
//! adopting the same tasks, break each other (issue 14, case 1), so every
//! command that owns a data dir (`server`, `agent`, `dev`) takes an
//! exclusive lock on `<dir>/lock` before anything else, and keeps it until
//! it exits. The kernel drops the lock with the process (kill -9
//! included); the file holds the holder's pid for the error message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The lock's file in a data dir.
pub const LOCK_FILE: &str = "lock";

/// Held while the process owns the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Locks `dir` for `what` (`corral server`, ...), creating it; refuses
/// with the holder's pid when another process has it.
pub fn lock(dir: &Path, what: &str) -> Result<DataDirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("process {holder}")
            };
            bail!(
                "the data dir {} is in use by {holder}; stop it first, or give this {what} another --data-dir",
                dir.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{} ({what})", std::process::id())?;
    file.sync_all()?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let d = tempfile::tempdir().unwrap();
        let first = lock(d.path(), "corral server").unwrap();
        let err = lock(d.path(), "corral server").unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "in use by process {} (corral server)",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        lock(d.path(), "corral server").unwrap();
    }
}
