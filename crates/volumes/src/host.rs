//! A plain directory per volume under the node's configured path: for
//! hosts without loop devices or where the operator wants data on a given
//! disk. No size limit (the `size` is only recorded by the caller), no
//! snapshots, full tar exports.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use corral_types::units::Bytes;

use crate::image::{io_err, list_dirs, quarantine_dir, quarantined, sync_dir};
use crate::provider::{
    Capabilities, Export, ProviderKind, SnapshotInfo, Usage, VolumeError, VolumeProvider, VolumeRef,
};
use crate::tar;

pub struct HostDir {
    dir: PathBuf,
}

impl HostDir {
    pub fn new(dir: PathBuf) -> Self {
        HostDir { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Quarantined volumes, as `<vol>.<suffix>` under `<dir>/.quarantine`.
    pub fn quarantined(&self) -> Result<Vec<String>, VolumeError> {
        quarantined(&self.dir)
    }

    fn path(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        Ok(self.dir.join(vol.validate()?))
    }

    fn existing(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        let p = self.path(vol)?;
        if !p.is_dir() {
            return Err(VolumeError::NotFound { vol: vol.0.clone() });
        }
        Ok(p)
    }

    fn unsupported(&self, vol: &VolumeRef, what: &'static str) -> VolumeError {
        VolumeError::Unsupported {
            vol: vol.0.clone(),
            provider: ProviderKind::Host,
            what,
        }
    }
}

/// Sum of the lengths of the regular files under `dir` (like `du
/// --apparent-size`), not following symlinks.
fn apparent_size(vol: &str, dir: &Path) -> Result<u64, VolumeError> {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            // Removed meanwhile by the task: nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(vol, "list", &d)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(vol, "list", &d))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(vol, "stat", &entry.path())(e)),
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

impl VolumeProvider for HostDir {
    fn quarantined_copies(&self) -> Result<Vec<String>, VolumeError> {
        self.quarantined()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Host
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            size_enforced: false,
            snapshots: false,
            incremental_export: false,
            grow_online: true,
        }
    }

    /// `mkdir`: atomic, so a killed create leaves nothing half-made.
    fn create(&self, vol: &VolumeRef, _size: Bytes) -> Result<(), VolumeError> {
        let p = self.path(vol)?;
        fs::create_dir_all(&self.dir).map_err(io_err(&vol.0, "create", &self.dir))?;
        match fs::create_dir(&p) {
            Ok(()) => sync_dir(&vol.0, &self.dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
            Err(e) => Err(io_err(&vol.0, "create", &p)(e)),
        }
    }

    /// Nothing to do: there is no limit to raise.
    fn grow(&self, vol: &VolumeRef, _size: Bytes) -> Result<(), VolumeError> {
        self.existing(vol).map(drop)
    }

    fn delete(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        let p = self.path(vol)?;
        match fs::remove_dir_all(&p) {
            Ok(()) => sync_dir(&vol.0, &self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&vol.0, "remove", &p)(e)),
        }
    }

    fn data_dir(&self, vol: &VolumeRef) -> PathBuf {
        self.dir.join(&vol.0)
    }

    fn mount(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        self.existing(vol)
    }

    fn unmount(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        self.path(vol).map(drop)
    }

    fn snapshot(&self, vol: &VolumeRef, _name: &str) -> Result<SnapshotInfo, VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    fn delete_snapshot(&self, vol: &VolumeRef, _name: &str) -> Result<(), VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    fn snapshots(&self, vol: &VolumeRef) -> Result<Vec<SnapshotInfo>, VolumeError> {
        self.existing(vol)?;
        Ok(Vec::new())
    }

    fn snapshot_dir(&self, vol: &VolumeRef, _name: &str) -> Result<PathBuf, VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    fn rollback(&self, vol: &VolumeRef, _name: &str) -> Result<(), VolumeError> {
        Err(self.unsupported(vol, "roll back to a snapshot"))
    }

    /// A tar stream of the directory; `name` is only a label.
    fn export(
        &self,
        vol: &VolumeRef,
        _name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn Export>, VolumeError> {
        if base.is_some() {
            return Err(self.unsupported(vol, "export incrementally"));
        }
        let p = self.existing(vol)?;
        tar::export(&vol.0, &p)
    }

    fn import(
        &self,
        vol: &VolumeRef,
        _name: &str,
        size: Bytes,
        input: &mut dyn Read,
    ) -> Result<(), VolumeError> {
        self.create(vol, size)?;
        let p = self.existing(vol)?;
        tar::import(&vol.0, &p, input)
    }

    /// used = apparent size of the files; size = the host filesystem's size.
    fn usage(&self, vol: &VolumeRef) -> Result<Usage, VolumeError> {
        let p = self.existing(vol)?;
        let st = rustix::fs::statvfs(&p).map_err(|e| io_err(&vol.0, "statvfs", &p)(e.into()))?;
        Ok(Usage {
            size: Bytes(st.f_blocks * st.f_frsize),
            used: Bytes(apparent_size(&vol.0, &p)?),
        })
    }

    fn list(&self) -> Result<Vec<VolumeRef>, VolumeError> {
        list_dirs(&self.dir, |_| true)
    }

    fn quarantine(&self, vol: &VolumeRef, suffix: &str) -> Result<(), VolumeError> {
        let p = self.existing(vol)?;
        crate::names::check_snapshot(&vol.0, "quarantine suffix", suffix)?;
        quarantine_dir(&self.dir, &vol.0, &p, suffix)
    }
}
