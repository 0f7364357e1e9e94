//! cgroup v2 (unified): a task cgroup is `<root>/<parent>/<name>`, with the
//! `cpu`, `memory` and `pids` controllers enabled on the way down.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    CFS_PERIOD_US, CgroupError, CgroupLimits, CgroupStats, CgroupVersion, Cgroups, io_err,
    keyed_value, read_live_pids, read_u64, rmdir_retry, sigkill, validate_name, write_file,
};

const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
    parent: String,
}

impl CgroupV2 {
    /// `root` is the cgroup2 mount (`/sys/fs/cgroup` on a v2 node).
    pub fn new(root: impl Into<PathBuf>, parent: &str) -> Result<Self, CgroupError> {
        let root = root.into();
        if !root.join("cgroup.controllers").exists() {
            return Err(CgroupError::Unavailable(format!(
                "{} is not a cgroup2 mount",
                root.display()
            )));
        }
        Ok(CgroupV2 {
            root,
            parent: parent.to_string(),
        })
    }

    pub fn parent_dir(&self) -> PathBuf {
        self.root.join(&self.parent)
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.parent_dir().join(name)
    }

    /// Creates the parent and enables the controllers it can for its
    /// children (root first, then parent). Controllers the root does not
    /// offer are left out; `create` fails if a limit needs one of them.
    fn setup_parent(&self) -> Result<(), CgroupError> {
        let parent = self.parent_dir();
        std::fs::create_dir_all(&parent).map_err(|e| {
            CgroupError::Unavailable(format!(
                "cannot create {}: {e} (the exec driver needs root)",
                parent.display()
            ))
        })?;
        let available =
            std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        for c in WANTED {
            if !available.split_whitespace().any(|a| a == c) {
                continue;
            }
            for dir in [&self.root, &parent] {
                let f = dir.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&f).unwrap_or_default();
                if !enabled.split_whitespace().any(|a| a == c) {
                    write_file(&self.parent, &f, &format!("+{c}"))?;
                }
            }
        }
        Ok(())
    }

    fn create_dir(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let d = self.dir(name);
        std::fs::create_dir_all(&d).map_err(|e| io_err(name, "create", &d, e))?;
        let need = |file: &str, controller: &str| -> Result<PathBuf, CgroupError> {
            let p = d.join(file);
            if p.exists() {
                Ok(p)
            } else {
                Err(CgroupError::Failed {
                    name: name.to_string(),
                    reason: format!(
                        "the {controller} controller is not enabled in {}: cannot apply the {controller} limit",
                        self.parent_dir().display()
                    ),
                })
            }
        };
        if let Some(quota) = limits.cfs_quota_us() {
            write_file(
                name,
                &need("cpu.max", "cpu")?,
                &format!("{quota} {CFS_PERIOD_US}"),
            )?;
            write_file(
                name,
                &need("cpu.weight", "cpu")?,
                &limits.cpu_weight().to_string(),
            )?;
        }
        if limits.memory_bytes > 0 {
            write_file(
                name,
                &need("memory.max", "memory")?,
                &limits.memory_bytes.to_string(),
            )?;
            let swap = d.join("memory.swap.max");
            if swap.exists() {
                write_file(name, &swap, "0")?;
            }
        }
        Ok(())
    }

    /// The cgroup and any sub-cgroups the task made, deepest last.
    fn tree(&self, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir(name)];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
                out.push(d);
            }
        }
        out
    }

    fn set_frozen(&self, name: &str, dir: &Path, frozen: bool) -> Result<(), CgroupError> {
        let f = dir.join("cgroup.freeze");
        if !f.exists() {
            return Err(CgroupError::Failed {
                name: name.to_string(),
                reason: "no cgroup.freeze".into(),
            });
        }
        write_file(name, &f, if frozen { "1" } else { "0" })?;
        if frozen {
            let events = dir.join("cgroup.events");
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let c = std::fs::read_to_string(&events).unwrap_or_default();
                if keyed_value(&c, "frozen") == Some(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }
}

impl Cgroups for CgroupV2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn check(&self) -> Result<(), CgroupError> {
        self.setup_parent()
    }

    fn list(&self) -> Vec<String> {
        super::subdirs([self.parent_dir()])
    }

    fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.dir(name).exists()
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_name(name)?;
        self.setup_parent()?;
        let r = self.create_dir(name, limits);
        if r.is_err() {
            let _ = self.remove(name);
        }
        r
    }

    fn open_procs(&self, name: &str) -> Result<Vec<OwnedFd>, CgroupError> {
        validate_name(name)?;
        let f = self.dir(name).join("cgroup.procs");
        let fd = std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .map(OwnedFd::from)
            .map_err(|e| io_err(name, "open", &f, e))?;
        Ok(vec![fd])
    }

    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        validate_name(name)?;
        let mut pids = Vec::new();
        for d in self.tree(name) {
            read_live_pids(name, &d.join("cgroup.procs"), &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        validate_name(name)?;
        let dir = self.dir(name);
        // Linux >= 5.14: one write kills the whole subtree, forks included.
        let kill_file = dir.join("cgroup.kill");
        let has_kill = kill_file.exists();
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(name)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Failed {
                    name: name.to_string(),
                    reason: format!("processes {pids:?} still running after sigkill"),
                });
            }
            match std::fs::write(&kill_file, "1") {
                Ok(()) if has_kill => {}
                Err(e) if has_kill && e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(name, "write", &kill_file, e));
                }
                _ => {
                    let frozen = self.set_frozen(name, &dir, true).is_ok();
                    for pid in self.pids(name).unwrap_or(pids) {
                        sigkill(pid);
                    }
                    if frozen {
                        self.set_frozen(name, &dir, false)?;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn oom_killed(&self, name: &str) -> Result<bool, CgroupError> {
        validate_name(name)?;
        let f = self.dir(name).join("memory.events");
        match std::fs::read_to_string(&f) {
            Ok(c) => Ok(keyed_value(&c, "oom_kill").unwrap_or(0) > 0),
            // No memory controller: no memory limit, no OOM kill by us.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir(name).exists() => Ok(false),
            Err(e) => Err(io_err(name, "read", &f, e)),
        }
    }

    fn stats(&self, name: &str) -> Result<CgroupStats, CgroupError> {
        validate_name(name)?;
        let d = self.dir(name);
        let memory_bytes = if d.join("memory.current").exists() {
            read_u64(name, &d.join("memory.current"))?
        } else {
            0
        };
        let f = d.join("cpu.stat");
        let cpu = std::fs::read_to_string(&f).map_err(|e| io_err(name, "read", &f, e))?;
        Ok(CgroupStats {
            memory_bytes,
            cpu_usage_ns: keyed_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
        })
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        validate_name(name)?;
        for d in self.tree(name).into_iter().rev() {
            rmdir_retry(name, &d)?;
        }
        Ok(())
    }
}
