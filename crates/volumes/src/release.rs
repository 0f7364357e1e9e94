//! Undo everything volumes made under a directory: its mounts (deepest
//! first) and the loop devices backed by files in it. For teardown of a
//! whole node directory (tests, the benchmark, a test cluster): a running
//! agent releases its volumes one by one through its provider.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Mount points at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    crate::cmd::mount_points()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Loop devices whose backing file is under `dir` (from `losetup -a`).
pub fn loops_under(dir: &Path) -> Vec<String> {
    let Ok(out) = Command::new("losetup").arg("-a").output() else {
        return Vec::new();
    };
    let needle = format!("({}/", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect()
}

/// Unmount everything under `dir` (lazily when busy) and detach the loop
/// devices left; what failed is said on stderr, nothing panics.
pub fn release_under(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        let ok = Command::new("umount")
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("release: lazy unmount of {}", m.display());
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
    // `mount -o loop` devices detach themselves shortly after the unmount.
    for _ in 0..100 {
        if loops_under(dir).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for dev in loops_under(dir) {
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    }
}
