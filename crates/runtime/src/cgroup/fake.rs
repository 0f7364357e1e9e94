//! A [`Cgroups`] that touches nothing and records what it was asked, for
//! tests without root. Processes started with it run in the caller's own
//! cgroup, unconfined.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

use super::{CgroupError, CgroupLimits, CgroupStats, CgroupVersion, Cgroups, validate_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupCall {
    Create { name: String, limits: CgroupLimits },
    OpenProcs { name: String },
    KillAll { name: String },
    Remove { name: String },
}

#[derive(Debug, Default)]
pub struct RecordingCgroups {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<CgroupCall>,
    live: BTreeMap<String, CgroupLimits>,
    oom: BTreeSet<String>,
}

impl RecordingCgroups {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<CgroupCall> {
        self.lock().calls.clone()
    }

    /// Cgroups created and not removed yet, with their limits.
    pub fn live(&self) -> BTreeMap<String, CgroupLimits> {
        self.lock().live.clone()
    }

    /// Makes `oom_killed(name)` answer true (until the cgroup is removed).
    pub fn set_oom_killed(&self, name: &str) {
        self.lock().oom.insert(name.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic in another test thread must not hide this one's calls.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cgroups for RecordingCgroups {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn check(&self) -> Result<(), CgroupError> {
        Ok(())
    }

    fn list(&self) -> Vec<String> {
        self.lock().live.keys().cloned().collect()
    }

    fn exists(&self, name: &str) -> bool {
        self.lock().live.contains_key(name)
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_name(name)?;
        let mut g = self.lock();
        g.calls.push(CgroupCall::Create {
            name: name.to_string(),
            limits: *limits,
        });
        g.live.insert(name.to_string(), *limits);
        Ok(())
    }

    fn open_procs(&self, name: &str) -> Result<Vec<OwnedFd>, CgroupError> {
        self.lock().calls.push(CgroupCall::OpenProcs {
            name: name.to_string(),
        });
        Ok(Vec::new())
    }

    fn pids(&self, _name: &str) -> Result<Vec<i32>, CgroupError> {
        Ok(Vec::new())
    }

    fn kill_all(&self, name: &str, _timeout: Duration) -> Result<(), CgroupError> {
        self.lock().calls.push(CgroupCall::KillAll {
            name: name.to_string(),
        });
        Ok(())
    }

    fn oom_killed(&self, name: &str) -> Result<bool, CgroupError> {
        Ok(self.lock().oom.contains(name))
    }

    fn stats(&self, _name: &str) -> Result<CgroupStats, CgroupError> {
        Ok(CgroupStats::default())
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let mut g = self.lock();
        g.calls.push(CgroupCall::Remove {
            name: name.to_string(),
        });
        g.live.remove(name);
        g.oom.remove(name);
        Ok(())
    }
}
