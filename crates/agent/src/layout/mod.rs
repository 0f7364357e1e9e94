//! The node's disk layout, owned here and nowhere else: every path under
//! the agent's data dir is built by this module, and so is the rule for
//! what may be deleted. The one exception is what the drivers write: the
//! files under an allocation's `logs/` are named by
//! [`corral_runtime::logs`] (which also names `logs/` itself).
//!
//! ```text
//! <data_dir>/
//!   node-id                      the node's id, created once
//!   images/                      images the agent built (the sandbox image)
//!   allocs/<alloc id>/           one allocation: AllocDir
//!     alloc.json                 its record (allocation + group spec), kept
//!                                while it runs here; a restarted agent
//!                                adopts what has one
//!     failure.json               why it failed, once decided
//!     final.json                 its last report, once it ended here
//!     checks.json                its checks' last status, by run
//!     tasks/<task>.handle.json   how the driver finds the task's run again
//!     tasks/<task>.state.json    the task's last reported state
//!     tasks/<task>.restart.json  its restart window and pending restart
//!     logs/                      the tasks' logs (corral_runtime::logs)
//!     <task>/                    the task's working directory
//! ```
//!
//! Everything but `logs/`, `final.json` and the task directories goes when the
//! allocation ends on this node ([`AllocDir::forget`]); the directory
//! itself goes after the log retention ([`sweep`]), and never across a
//! mount point (volumes will be mounted under it).

mod alloc;
mod atomic;
mod sweep;

use std::path::{Path, PathBuf};

pub use alloc::{AllocDir, AllocRecord, RestartRecord, log_dir as alloc_log_dir};
pub use atomic::write_atomic;
pub use sweep::{has_mount_in, sweep};

/// The agent's data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDir {
    root: PathBuf,
}

impl NodeDir {
    pub fn new(root: impl Into<PathBuf>) -> NodeDir {
        NodeDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where allocation directories live.
    pub fn allocs(&self) -> PathBuf {
        self.root.join("allocs")
    }

    /// Where images the agent builds itself go.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn alloc(&self, id: &str) -> AllocDir {
        AllocDir::new(self.allocs().join(id))
    }

    /// The node id, created once and kept.
    pub fn node_id(&self) -> std::io::Result<String> {
        let path = self.root.join("node-id");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                write_atomic(&path, id.as_bytes())?;
                Ok(id)
            }
        }
    }

    /// Allocations that ended here and have no record any more, with
    /// their last report.
    pub fn finished(&self) -> Vec<(String, corral_types::AllocUpdate)> {
        let Ok(rd) = std::fs::read_dir(self.allocs()) else {
            return vec![];
        };
        rd.filter_map(Result::ok)
            .map(|e| AllocDir::new(e.path()))
            .filter(|d| !d.has_record())
            .filter_map(|d| Some((d.id()?.to_string(), d.load_final()?)))
            .collect()
    }

    /// Allocations with a record: what a previous agent process ran; and
    /// the directories whose record cannot be read (what runs of them must
    /// be cleared: it cannot be adopted).
    pub fn records(&self) -> (Vec<AllocRecord>, Vec<AllocDir>) {
        let Ok(rd) = std::fs::read_dir(self.allocs()) else {
            return (vec![], vec![]);
        };
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for e in rd.filter_map(Result::ok) {
            let dir = AllocDir::new(e.path());
            match dir.load_record() {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(dir = %dir.path().display(), error = %err,
                        "unreadable allocation record: what runs of it is stopped");
                    bad.push(dir);
                }
            }
        }
        (out, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable() {
        let d = tempfile::tempdir().unwrap();
        let n = NodeDir::new(d.path());
        let a = n.node_id().unwrap();
        assert_eq!(a, n.node_id().unwrap());
        assert_eq!(a.len(), 36);
    }
}

/// For the mount-safety tests (root only: they mount a tmpfs).
#[cfg(test)]
pub(crate) mod test_mount {
    use std::path::{Path, PathBuf};

    /// A tmpfs mounted on `dir` (created) holding the file `precious`;
    /// unmounted on drop. `None` when not root (the test then skips;
    /// CI, which requires root tests, fails instead).
    pub struct Tmpfs(pub PathBuf);

    pub fn tmpfs_with_a_file(dir: &Path) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("CORRAL_REQUIRE_ROOT_TESTS").is_none(),
                "root tests must run"
            );
            return None;
        }
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        std::fs::write(dir.join("precious"), "keep me").expect("write");
        Some(Tmpfs(dir.to_path_buf()))
    }

    impl Tmpfs {
        pub fn file_survived(&self) -> bool {
            self.0.join("precious").exists()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
}
