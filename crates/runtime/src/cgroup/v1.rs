//! cgroup v1 (legacy and hybrid layouts): one hierarchy per controller, a
//! task cgroup is the directory `<mount>/<parent>/<name>` in each of the
//! hierarchies we use. Mount points come from `/proc/self/mountinfo`, so
//! co-mounted controllers (`cpu,cpuacct`) work too.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    CFS_PERIOD_US, CgroupError, CgroupLimits, CgroupStats, CgroupVersion, Cgroups, io_err,
    keyed_value, read_live_pids, read_u64, rmdir_retry, sigkill, validate_name, write_file,
};

/// Controllers a task cgroup is created in. `cpu` and `memory` carry the
/// limits, `cpuacct` the cpu usage, `pids` lets later limits on forks in,
/// `freezer` stops forks while everything is killed.
const CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

#[derive(Debug, Clone)]
pub struct CgroupV1 {
    parent: String,
    /// controller -> mount point of its hierarchy.
    mounts: BTreeMap<String, PathBuf>,
}

impl CgroupV1 {
    /// Finds the v1 hierarchies from `/proc/self/mountinfo`.
    pub fn detect(parent: &str) -> Result<Self, CgroupError> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
            CgroupError::Unavailable(format!("cannot read /proc/self/mountinfo: {e}"))
        })?;
        Ok(Self::with_mounts(parent, parse_mountinfo(&info)))
    }

    /// With explicit mount points (controller name -> directory).
    pub fn with_mounts(parent: &str, mounts: BTreeMap<String, PathBuf>) -> Self {
        CgroupV1 {
            parent: parent.to_string(),
            mounts: mounts
                .into_iter()
                .filter(|(c, _)| CONTROLLERS.contains(&c.as_str()))
                .collect(),
        }
    }

    /// Directory of cgroup `name` in the hierarchy of `controller`.
    pub fn dir(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.mounts
            .get(controller)
            .map(|m| m.join(&self.parent).join(name))
    }

    /// Every directory of cgroup `name`, each hierarchy once.
    pub fn dirs(&self, name: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for c in CONTROLLERS {
            if let Some(d) = self.dir(c, name)
                && !dirs.contains(&d)
            {
                dirs.push(d);
            }
        }
        dirs
    }

    fn require(&self, controller: &str) -> Result<&Path, CgroupError> {
        self.mounts
            .get(controller)
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                CgroupError::Unavailable(format!(
                    "the cgroup v1 {controller} controller is not mounted"
                ))
            })
    }

    fn freeze(&self, name: &str, dir: &Path) -> Result<(), CgroupError> {
        let state = dir.join("freezer.state");
        write_file(name, &state, "FROZEN")?;
        // FREEZING -> FROZEN takes a moment; a task stuck in the kernel may
        // keep it FREEZING: go on after a bound, SIGKILL still gets through.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match std::fs::read_to_string(&state) {
                Ok(s) if s.trim() == "FROZEN" => return Ok(()),
                Ok(_) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(io_err(name, "read", &state, e)),
            }
        }
        Ok(())
    }

    fn create_dirs(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for d in self.dirs(name) {
            std::fs::create_dir_all(&d).map_err(|e| io_err(name, "create", &d, e))?;
        }
        if let Some(quota) = limits.cfs_quota_us() {
            let cpu = self.dir("cpu", name).ok_or_else(|| {
                CgroupError::Unavailable("the cgroup v1 cpu controller is not mounted".into())
            })?;
            write_file(
                name,
                &cpu.join("cpu.shares"),
                &limits.cpu_shares().to_string(),
            )?;
            write_file(
                name,
                &cpu.join("cpu.cfs_period_us"),
                &CFS_PERIOD_US.to_string(),
            )?;
            write_file(name, &cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if limits.memory_bytes > 0 {
            let mem = self.dir("memory", name).ok_or_else(|| {
                CgroupError::Unavailable("the cgroup v1 memory controller is not mounted".into())
            })?;
            let bytes = limits.memory_bytes.to_string();
            // memsw >= limit is enforced by the kernel: set the limit first.
            write_file(name, &mem.join("memory.limit_in_bytes"), &bytes)?;
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                // memory + swap capped at the same value: no swap at all.
                write_file(name, &memsw, &bytes)?;
            } else {
                // No swap accounting on this kernel: discourage swapping.
                write_file(name, &mem.join("memory.swappiness"), "0")?;
            }
        }
        Ok(())
    }
}

/// controller -> mount point, for every `cgroup` (v1) mount.
fn parse_mountinfo(info: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let _source = r.next();
        let Some(opts) = r.next() else { continue };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        for opt in opts.split(',') {
            if CONTROLLERS.contains(&opt) {
                out.entry(opt.to_string())
                    .or_insert_with(|| PathBuf::from(mount_point));
            }
        }
    }
    out
}

impl Cgroups for CgroupV1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn check(&self) -> Result<(), CgroupError> {
        self.require("cpu")?;
        self.require("memory")?;
        for c in CONTROLLERS {
            if let Some(m) = self.mounts.get(c) {
                let p = m.join(&self.parent);
                std::fs::create_dir_all(&p).map_err(|e| {
                    CgroupError::Unavailable(format!(
                        "cannot create {}: {e} (the exec driver needs root)",
                        p.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    fn list(&self) -> Vec<String> {
        super::subdirs(self.mounts.values().map(|m| m.join(&self.parent)))
    }

    fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.dirs(name).iter().any(|d| d.exists())
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_name(name)?;
        let r = self.create_dirs(name, limits);
        if r.is_err() {
            let _ = self.remove(name);
        }
        r
    }

    fn open_procs(&self, name: &str) -> Result<Vec<OwnedFd>, CgroupError> {
        validate_name(name)?;
        self.dirs(name)
            .into_iter()
            .map(|d| {
                let f = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .map(OwnedFd::from)
                    .map_err(|e| io_err(name, "open", &f, e))
            })
            .collect()
    }

    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        validate_name(name)?;
        let mut pids = Vec::new();
        for d in self.dirs(name) {
            read_live_pids(name, &d.join("cgroup.procs"), &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        validate_name(name)?;
        let freezer = self.dir("freezer", name).filter(|d| d.exists());
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
            // Frozen, nothing can fork between listing and killing.
            let frozen = match &freezer {
                Some(d) => self.freeze(name, d).is_ok(),
                None => false,
            };
            let listed = self.pids(name).unwrap_or(pids);
            for pid in listed {
                sigkill(pid);
            }
            if let (true, Some(d)) = (frozen, &freezer) {
                // Thaw so the pending SIGKILLs are delivered.
                write_file(name, &d.join("freezer.state"), "THAWED")?;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn oom_killed(&self, name: &str) -> Result<bool, CgroupError> {
        validate_name(name)?;
        let Some(mem) = self.dir("memory", name) else {
            return Ok(false);
        };
        let f = mem.join("memory.oom_control");
        let content = std::fs::read_to_string(&f).map_err(|e| io_err(name, "read", &f, e))?;
        // `oom_kill` exists since Linux 4.13; `under_oom` is the fallback.
        Ok(keyed_value(&content, "oom_kill")
            .or_else(|| keyed_value(&content, "under_oom"))
            .unwrap_or(0)
            > 0)
    }

    fn stats(&self, name: &str) -> Result<CgroupStats, CgroupError> {
        validate_name(name)?;
        let memory_bytes = match self.dir("memory", name) {
            Some(d) => read_u64(name, &d.join("memory.usage_in_bytes"))?,
            None => 0,
        };
        let cpu_usage_ns = match self.dir("cpuacct", name) {
            Some(d) => read_u64(name, &d.join("cpuacct.usage"))?,
            None => 0,
        };
        Ok(CgroupStats {
            memory_bytes,
            cpu_usage_ns,
        })
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        validate_name(name)?;
        let mut first_err = None;
        for d in self.dirs(name) {
            if let Err(e) = rmdir_retry(name, &d) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const COMOUNTED: &str = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_hybrid() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m["freezer"], PathBuf::from("/sys/fs/cgroup/freezer"));
        assert_eq!(m.len(), 5);
        let cg = CgroupV1::with_mounts("corral", m);
        assert_eq!(
            cg.dir("memory", "a-b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/corral/a-b"))
        );
        assert_eq!(cg.dirs("a-b").len(), 5);
    }

    #[test]
    fn mountinfo_comounted_dirs_are_deduplicated() {
        let cg = CgroupV1::with_mounts("corral", parse_mountinfo(COMOUNTED));
        let dirs = cg.dirs("x");
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/corral/x"),
                PathBuf::from("/sys/fs/cgroup/memory/corral/x"),
            ]
        );
        assert!(cg.require("freezer").is_err());
    }
}
