//! Deleting allocation directories: only stopped ones, only after the
//! retention, and never one with a mount point in it (a volume still
//! mounted there would lose its data to `remove_dir_all`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::AllocDir;

/// Mount points of this process's mount namespace
/// (`/proc/self/mountinfo`, field 5, octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// Undo mountinfo's `\040`-style escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `dir` is a mount point or has one below it.
pub fn has_mount_in(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mount_points().iter().any(|m| m.starts_with(&dir))
}

/// When an allocation directory was last touched: its own change time
/// (its record is removed when the allocation stops) or its newest log.
fn last_change(dir: &AllocDir) -> Option<SystemTime> {
    let mut t = std::fs::metadata(dir.path()).ok()?.modified().ok()?;
    if let Ok(rd) = std::fs::read_dir(dir.log_dir()) {
        for e in rd.filter_map(Result::ok) {
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                t = t.max(m);
            }
        }
    }
    Some(t)
}

/// Deletes the directories of allocations that stopped (no record, no
/// runner) more than `retention` ago, leaving alone any with a mount
/// point in it. Returns how many went.
pub fn sweep(allocs_dir: &Path, retention: Duration, is_active: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(allocs_dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in rd.filter_map(Result::ok) {
        let dir = AllocDir::new(e.path());
        let Some(id) = dir.id().map(str::to_string) else {
            continue;
        };
        if !dir.path().is_dir() || dir.has_record() || is_active(&id) {
            continue;
        }
        let Some(changed) = last_change(&dir) else {
            continue;
        };
        if now.duration_since(changed).unwrap_or_default() < retention {
            continue;
        }
        if has_mount_in(dir.path()) {
            tracing::warn!(alloc = %id, "not deleting a stopped allocation's directory: something is mounted in it");
            continue;
        }
        match std::fs::remove_dir_all(dir.path()) {
            Ok(()) => {
                tracing::info!(alloc = %id, "deleted the directory of a stopped allocation (retention passed)");
                removed += 1;
            }
            Err(err) => {
                tracing::warn!(alloc = %id, error = %err, "cannot delete the directory of a stopped allocation")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_dir_has_none() {
        assert!(has_mount_in(Path::new("/")));
        let d = tempfile::tempdir().unwrap();
        assert!(!has_mount_in(d.path()));
    }

    /// A volume mounted in a stopped allocation's directory must survive
    /// the sweep (root: it mounts a tmpfs).
    #[test]
    fn a_directory_with_a_mount_in_it_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let dir = AllocDir::new(d.path().join("a1"));
        let Some(vol) = super::super::test_mount::tmpfs_with_a_file(&dir.path().join("data"))
        else {
            return;
        };
        let removed = sweep(d.path(), Duration::ZERO, |_| false);
        let survived = vol.file_survived();
        drop(vol);
        assert_eq!(removed, 0);
        assert!(survived, "the mounted volume's file was deleted");
        assert_eq!(sweep(d.path(), Duration::ZERO, |_| false), 1);
    }
}
