//! Cgroups for tasks that the agent runs itself (the `exec` driver).
//!
//! Every OS effect sits behind the [`Cgroups`] trait, with three
//! implementations:
//!
//! - [`CgroupV1`]: the legacy/hybrid layout (one hierarchy per controller,
//!   e.g. `/sys/fs/cgroup/memory/corral/<name>`), used on our Debian 12 VMs;
//! - [`CgroupV2`]: the unified layout (`/sys/fs/cgroup/corral/<name>`);
//! - [`RecordingCgroups`]: a fake that records every call, for tests that
//!   run without root.
//!
//! [`detect`] picks v1 or v2 for this node. A task's process joins its
//! cgroup *before* it execs: the driver opens the `cgroup.procs` files with
//! [`Cgroups::open_procs`] and the child writes `0` (itself) into them in
//! `pre_exec` ([`join_on_exec`]). Spawning first and moving the pid after
//! would leave a window in which the task runs (and forks) unconfined.

mod fake;
pub mod procfs;
mod v1;
mod v2;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_types::Resources;
use serde::{Deserialize, Serialize};

pub use fake::{CgroupCall, RecordingCgroups};
pub use v1::CgroupV1;
pub use v2::CgroupV2;

/// The parent cgroup under which every task cgroup is created.
pub const DEFAULT_PARENT: &str = "corral";

/// CFS period used for cpu limits, in microseconds (100 ms).
pub const CFS_PERIOD_US: u64 = 100_000;

/// Limits applied to one task cgroup. Zero means "no limit" for that
/// resource (nothing is written for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Millicores: 1000 = one full cpu.
    pub cpu_millis: u64,
    /// Hard memory limit in bytes; swap is not allowed on top of it.
    pub memory_bytes: u64,
}

impl CgroupLimits {
    pub fn from_resources(r: &Resources) -> Self {
        CgroupLimits {
            cpu_millis: r.cpu.0,
            memory_bytes: r.memory.0,
        }
    }

    /// v1 `cpu.shares`: 1024 per cpu, at least 2 (the kernel minimum).
    pub fn cpu_shares(&self) -> u64 {
        (self.cpu_millis.saturating_mul(1024) / 1000).max(2)
    }

    /// `cpu.cfs_quota_us` (v1) / the quota of `cpu.max` (v2) for a period of
    /// [`CFS_PERIOD_US`]: millicores * 100, at least 1000 us (the kernel
    /// minimum); `None` when there is no cpu limit.
    pub fn cfs_quota_us(&self) -> Option<u64> {
        (self.cpu_millis > 0).then(|| self.cpu_millis.saturating_mul(100).max(1000))
    }

    /// v2 `cpu.weight` (1..=10000) from the v1 shares, with the conversion
    /// runc and systemd use.
    pub fn cpu_weight(&self) -> u64 {
        let shares = self.cpu_shares().min(262_144);
        1 + ((shares - 2) * 9999) / 262_142
    }
}

/// Usage numbers for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CgroupStats {
    /// Current memory charged to the cgroup (v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`), page cache included.
    pub memory_bytes: u64,
    /// Total cpu time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups are not usable on this node: {0}")]
    Unavailable(String),
    #[error("invalid cgroup name {0:?}: use letters, digits, '.', '_' and '-' only")]
    InvalidName(String),
    #[error("cgroup {name}: cannot {op} {path}: {source}")]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {name}: {reason}")]
    Failed { name: String, reason: String },
}

/// Task cgroups on one node. Names are single path components (see
/// [`cgroup_name`]); every method is synchronous and quick except
/// [`Cgroups::kill_all`] and [`Cgroups::remove`], which may sleep a little
/// while they wait for the kernel: call them from `spawn_blocking`.
pub trait Cgroups: Send + Sync + std::fmt::Debug + 'static {
    fn version(&self) -> CgroupVersion;

    /// Whether cgroups can be created here (mounted, writable); creates the
    /// parent cgroup if needed.
    fn check(&self) -> Result<(), CgroupError>;

    /// Whether a cgroup of that name exists (in any hierarchy on v1).
    fn exists(&self, name: &str) -> bool;

    /// The names of the task cgroups under the parent (any hierarchy on
    /// v1), sorted.
    fn list(&self) -> Vec<String>;

    /// Creates the cgroup and applies the limits. Fails when a limit cannot
    /// be applied: a task never runs with fewer limits than it asked for.
    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError>;

    /// Opens the `cgroup.procs` file(s) of the cgroup for writing, for the
    /// child to join before it execs ([`join_on_exec`]). Empty for fakes.
    fn open_procs(&self, name: &str) -> Result<Vec<OwnedFd>, CgroupError>;

    /// Pids of the processes in the cgroup that have not exited (zombies
    /// are left out). Empty when the cgroup does not exist.
    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError>;

    /// SIGKILLs every process in the cgroup until none is left (freezing it
    /// meanwhile where possible, so nothing can fork away), or fails after
    /// `timeout` naming the survivors.
    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError>;

    /// Whether the kernel OOM-killed a process of this cgroup.
    fn oom_killed(&self, name: &str) -> Result<bool, CgroupError>;

    fn stats(&self, name: &str) -> Result<CgroupStats, CgroupError>;

    /// Removes the cgroup (all hierarchies). It must be empty; a cgroup that
    /// does not exist is not an error.
    fn remove(&self, name: &str) -> Result<(), CgroupError>;
}

/// Picks the cgroup layout of this node: v2 when the unified hierarchy is
/// mounted at `/sys/fs/cgroup` (it then has `cgroup.controllers`), v1
/// otherwise (hybrid nodes have cgroup2 at `/sys/fs/cgroup/unified` with no
/// controllers in it: the v1 hierarchies are the ones that limit).
pub fn detect(parent: &str) -> Result<Arc<dyn Cgroups>, CgroupError> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        Ok(Arc::new(CgroupV2::new(root, parent)?))
    } else {
        Ok(Arc::new(CgroupV1::detect(parent)?))
    }
}

/// The cgroup name of one task of one allocation: `<alloc_id>-<task>`, with
/// every character outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn cgroup_name(alloc_id: &str, task: &str) -> String {
    format!("{alloc_id}-{task}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The names of the directories in `dirs` (cgroups are directories).
pub(crate) fn subdirs(dirs: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
    let mut out: Vec<String> = dirs
        .into_iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.filter_map(Result::ok))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(crate) fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

/// Makes the child join the cgroup(s) whose `cgroup.procs` files are `fds`
/// between fork and exec. Writing `0` moves the writing process; the write
/// is a single syscall on an already open descriptor, so nothing allocates
/// or locks in the forked child.
#[allow(unsafe_code)]
pub fn join_on_exec(cmd: &mut tokio::process::Command, fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs in the child after fork. It only calls
    // write(2) on descriptors opened before the fork (owned by the closure,
    // closed on exec) and builds an io::Error from an errno, which does not
    // allocate: both are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                rustix::io::write(fd, b"0").map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Pids listed in a `cgroup.procs` file that have not exited. A missing
/// file (cgroup gone) reads as empty.
pub(crate) fn read_live_pids(
    name: &str,
    file: &Path,
    out: &mut Vec<i32>,
) -> Result<(), CgroupError> {
    let content = match std::fs::read_to_string(file) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(name, "read", file, e)),
    };
    for line in content.lines() {
        if let Ok(pid) = line.trim().parse::<i32>()
            && procfs::is_running(pid)
        {
            out.push(pid);
        }
    }
    Ok(())
}

/// SIGKILL to one pid; a process that is already gone is fine.
pub(crate) fn sigkill(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// `rmdir` with retries: the kernel may report `EBUSY` for a short while
/// after the last process of a cgroup exited.
pub(crate) fn rmdir_retry(name: &str, dir: &Path) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if tries < 100
                    && e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(name, "remove", dir, e)),
        }
    }
}

pub(crate) fn write_file(name: &str, path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io_err(name, "write", path, e))
}

pub(crate) fn read_u64(name: &str, path: &Path) -> Result<u64, CgroupError> {
    let s = std::fs::read_to_string(path).map_err(|e| io_err(name, "read", path, e))?;
    s.trim().parse().map_err(|_| CgroupError::Failed {
        name: name.to_string(),
        reason: format!("{} holds {:?}, not a number", path.display(), s.trim()),
    })
}

/// Value of `key` in a flat-keyed file such as `memory.oom_control`,
/// `memory.events` or `cpu.stat` (`key value` lines).
pub(crate) fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

pub(crate) fn io_err(name: &str, op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        name: name.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::units::{Bytes, MilliCpu};

    #[test]
    fn cpu_conversions() {
        let l = CgroupLimits::from_resources(&Resources {
            disk: Default::default(),
            cpu: MilliCpu(500),
            memory: Bytes(32 << 20),
        });
        assert_eq!(l.cpu_shares(), 512);
        assert_eq!(l.cfs_quota_us(), Some(50_000));
        assert_eq!(l.memory_bytes, 32 << 20);

        let tiny = CgroupLimits {
            cpu_millis: 1,
            memory_bytes: 0,
        };
        assert_eq!(tiny.cpu_shares(), 2);
        assert_eq!(tiny.cfs_quota_us(), Some(1000));
        assert_eq!(tiny.cpu_weight(), 1);

        let none = CgroupLimits::default();
        assert_eq!(none.cfs_quota_us(), None);

        let one = CgroupLimits {
            cpu_millis: 1000,
            memory_bytes: 0,
        };
        assert_eq!(one.cpu_shares(), 1024);
        assert_eq!(one.cfs_quota_us(), Some(100_000));
        assert_eq!(one.cpu_weight(), 39);
    }

    #[test]
    fn names_are_sanitized_and_validated() {
        assert_eq!(cgroup_name("a1b2", "web app/x"), "a1b2-web_app_x");
        assert!(validate_name("a1b2-web_app.x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn keyed_values() {
        let c = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(c, "oom_kill"), Some(3));
        assert_eq!(keyed_value(c, "under_oom"), Some(0));
        assert_eq!(keyed_value(c, "missing"), None);
    }
}
