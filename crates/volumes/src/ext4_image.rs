//! Fallback provider where btrfs is missing: a sparse image formatted ext4,
//! loop-mounted. The size is enforced the same way (ENOSPC), but there are
//! no snapshots (backups only), exports are full tar streams of the live
//! data, and growing needs the volume unmounted (`resize2fs` while mounted
//! is refused on the kernels we run).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use corral_types::units::Bytes;

use crate::cmd::Cmd;
use crate::image::{Fs, Images, io_err, quarantined};
use crate::provider::{
    Capabilities, Export, ProviderKind, SnapshotInfo, Usage, VolumeError, VolumeProvider, VolumeRef,
};
use crate::tar;

/// The live data is a directory inside the filesystem, so `lost+found`
/// stays out of what tasks see and what exports carry.
const DATA: &str = "data";

pub struct Ext4Image {
    images: Images,
}

impl Ext4Image {
    pub fn new(dir: PathBuf) -> Self {
        Ext4Image {
            images: Images { dir, fs: Fs::Ext4 },
        }
    }

    pub fn dir(&self) -> &Path {
        &self.images.dir
    }

    /// Quarantined volumes, as `<vol>.<suffix>` under `<dir>/.quarantine`.
    pub fn quarantined(&self) -> Result<Vec<String>, VolumeError> {
        quarantined(&self.images.dir)
    }

    fn unsupported(&self, vol: &VolumeRef, what: &'static str) -> VolumeError {
        VolumeError::Unsupported {
            vol: vol.0.clone(),
            provider: ProviderKind::Ext4Image,
            what,
        }
    }
}

impl VolumeProvider for Ext4Image {
    fn quarantined_copies(&self) -> Result<Vec<String>, VolumeError> {
        self.quarantined()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Ext4Image
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            size_enforced: true,
            snapshots: false,
            incremental_export: false,
            grow_online: false,
        }
    }

    fn create(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError> {
        self.images.create(vol, size, |name, mnt| {
            let data = mnt.join(DATA);
            fs::create_dir(&data).map_err(io_err(name, "create", &data))
        })
    }

    /// Offline only: enlarge the file, `e2fsck -f` (resize2fs insists on a
    /// fresh check), `resize2fs`.
    fn grow(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError> {
        let name = self.images.existing(vol)?;
        if self.images.image_size(name)? >= size.0 {
            return Ok(());
        }
        if self.images.mounted(name)? {
            return Err(self.unsupported(
                vol,
                "grow while mounted: stop the allocation using it first",
            ));
        }
        self.images.set_len(name, size)?;
        let image = self.images.image(name);
        // -p fixes what is safe to fix; exit 1 means it fixed something.
        Cmd::new(name, "e2fsck")
            .arg("-f")
            .arg("-p")
            .arg(&image)
            .ok_codes(&[0, 1])
            .run()?;
        Cmd::new(name, "resize2fs").arg(&image).run().map(drop)
    }

    fn delete(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        self.images.delete(vol)
    }

    fn data_dir(&self, vol: &VolumeRef) -> PathBuf {
        self.images.mnt(&vol.0).join(DATA)
    }

    fn mount(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        let mnt = self.images.ensure_mounted(vol)?;
        let data = mnt.join(DATA);
        // Made at create; recreated if someone removed it.
        fs::create_dir_all(&data).map_err(io_err(&vol.0, "create", &data))?;
        Ok(data)
    }

    fn unmount(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        self.images.unmount(vol)
    }

    fn snapshot(&self, vol: &VolumeRef, _name: &str) -> Result<SnapshotInfo, VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    fn delete_snapshot(&self, vol: &VolumeRef, _name: &str) -> Result<(), VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    /// None, ever (not an error: callers list before they choose).
    fn snapshots(&self, vol: &VolumeRef) -> Result<Vec<SnapshotInfo>, VolumeError> {
        self.images.existing(vol)?;
        Ok(Vec::new())
    }

    fn snapshot_dir(&self, vol: &VolumeRef, _name: &str) -> Result<PathBuf, VolumeError> {
        Err(self.unsupported(vol, "take snapshots"))
    }

    fn rollback(&self, vol: &VolumeRef, _name: &str) -> Result<(), VolumeError> {
        Err(self.unsupported(vol, "roll back to a snapshot"))
    }

    /// A tar stream of the live data; `name` is only a label here. The
    /// caller makes sure no task writes meanwhile (no snapshot to read).
    fn export(
        &self,
        vol: &VolumeRef,
        _name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn Export>, VolumeError> {
        if base.is_some() {
            return Err(self.unsupported(vol, "export incrementally"));
        }
        let data = self.mount(vol)?;
        tar::export(&vol.0, &data)
    }

    /// Untar into the volume (created with `size` when absent; its data
    /// must be empty).
    fn import(
        &self,
        vol: &VolumeRef,
        _name: &str,
        size: Bytes,
        input: &mut dyn Read,
    ) -> Result<(), VolumeError> {
        let name = vol.validate()?;
        if !self.images.exists(name) {
            self.create(vol, size)?;
        }
        let data = self.mount(vol)?;
        tar::import(name, &data, input)
    }

    fn usage(&self, vol: &VolumeRef) -> Result<Usage, VolumeError> {
        self.images.usage(vol)
    }

    fn list(&self) -> Result<Vec<VolumeRef>, VolumeError> {
        self.images.list()
    }

    fn quarantine(&self, vol: &VolumeRef, suffix: &str) -> Result<(), VolumeError> {
        self.images.quarantine(vol, suffix)
    }
}
