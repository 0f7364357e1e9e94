//! What the btrfs and ext4 providers share: one sparse image file per
//! volume, formatted, loop-mounted.
//!
//! ```text
//! <dir>/<vol>/image            the sparse file (its length is the size limit)
//! <dir>/<vol>/mnt              where it is loop-mounted
//! <dir>/.creating-<vol>/       a create in progress (redone if found)
//! <dir>/.quarantine/<vol>.<s>  volumes set aside
//! ```
//!
//! Callers serialize operations on one volume (the agent does); different
//! volumes are independent.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use corral_types::units::Bytes;

use crate::cmd::{Cmd, is_mounted};
use crate::names::check_snapshot;
use crate::provider::{Usage, VolumeError, VolumeRef};

pub(crate) const MIB: u64 = 1 << 20;
const QUARANTINE: &str = ".quarantine";
const CREATING: &str = ".creating-";

/// Which filesystem goes into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fs {
    Btrfs,
    Ext4,
}

impl Fs {
    /// mkfs.btrfs refuses images under ~109 MiB (without `--mixed`);
    /// ext4 is fine small, 16 MiB keeps its metadata share reasonable.
    pub fn min_size(self) -> u64 {
        match self {
            Fs::Btrfs => 128 * MIB,
            Fs::Ext4 => 16 * MIB,
        }
    }
}

/// Builds an `Io` error with the operation and path as context.
pub(crate) fn io_err(vol: &str, op: &str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let vol = vol.to_string();
    let op = format!("{op} {}", path.display());
    move |source| VolumeError::Io { vol, op, source }
}

/// Makes `path` durable in its parent directory (after a create or rename).
pub(crate) fn sync_dir(vol: &str, dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(vol, "sync directory", dir))
}

pub(crate) struct Images {
    pub dir: PathBuf,
    pub fs: Fs,
}

impl Images {
    pub fn vol_dir(&self, vol: &str) -> PathBuf {
        self.dir.join(vol)
    }
    pub fn image(&self, vol: &str) -> PathBuf {
        self.vol_dir(vol).join("image")
    }
    pub fn mnt(&self, vol: &str) -> PathBuf {
        self.vol_dir(vol).join("mnt")
    }
    fn staging(&self, vol: &str) -> PathBuf {
        self.dir.join(format!("{CREATING}{vol}"))
    }

    pub fn exists(&self, vol: &str) -> bool {
        self.image(vol).is_file()
    }

    /// The name, checked, for a volume that must exist.
    pub fn existing<'a>(&self, vol: &'a VolumeRef) -> Result<&'a str, VolumeError> {
        let name = vol.validate()?;
        if !self.exists(name) {
            return Err(VolumeError::NotFound {
                vol: name.to_string(),
            });
        }
        Ok(name)
    }

    pub fn image_size(&self, vol: &str) -> Result<u64, VolumeError> {
        let image = self.image(vol);
        Ok(fs::metadata(&image)
            .map_err(io_err(vol, "stat", &image))?
            .len())
    }

    pub fn mounted(&self, vol: &str) -> Result<bool, VolumeError> {
        let mnt = self.mnt(vol);
        is_mounted(&mnt).map_err(io_err(vol, "read mounts for", &mnt))
    }

    /// Make the volume unless it exists. The image is built, formatted and
    /// initialised (by `init`, on the mounted filesystem) under
    /// `.creating-<vol>` and renamed into place only when complete, so a
    /// killed create leaves either nothing or a staging directory, which
    /// the next create clears and redoes.
    pub fn create(
        &self,
        vol: &VolumeRef,
        size: Bytes,
        init: impl FnOnce(&str, &Path) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError> {
        let name = vol.validate()?;
        let min = self.fs.min_size();
        if size.0 < min {
            return Err(VolumeError::Invalid {
                vol: name.to_string(),
                detail: format!(
                    "size {size} is under the {:?} image minimum of {}",
                    self.fs,
                    Bytes(min)
                ),
            });
        }
        if self.exists(name) {
            let have = self.image_size(name)?;
            // Same or grown since: the volume is what was asked for.
            if have >= size.0 {
                return Ok(());
            }
            return Err(VolumeError::Invalid {
                vol: name.to_string(),
                detail: format!("exists with size {} < {size}: grow it instead", Bytes(have)),
            });
        }
        let vdir = self.vol_dir(name);
        if vdir.exists() {
            return Err(VolumeError::Invalid {
                vol: name.to_string(),
                detail: format!("{} exists but holds no image", vdir.display()),
            });
        }
        fs::create_dir_all(&self.dir).map_err(io_err(name, "create", &self.dir))?;
        self.clear_staging(name)?;
        let staging = self.staging(name);
        let built = self.build(name, &staging, size, init);
        if let Err(e) = built {
            // Best effort: the next create clears it again anyway.
            if let Err(e2) = self.clear_staging(name) {
                tracing::warn!(vol = name, error = %e2, "cannot clear a failed create");
            }
            return Err(e);
        }
        fs::rename(&staging, &vdir).map_err(io_err(name, "rename into place", &staging))?;
        sync_dir(name, &self.dir)
    }

    fn build(
        &self,
        name: &str,
        staging: &Path,
        size: Bytes,
        init: impl FnOnce(&str, &Path) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError> {
        let mnt = staging.join("mnt");
        let image = staging.join("image");
        fs::create_dir_all(&mnt).map_err(io_err(name, "create", &mnt))?;
        let file = File::create(&image).map_err(io_err(name, "create", &image))?;
        // Sparse: the size is a limit, blocks are allocated as data comes.
        file.set_len(size.0)
            .map_err(io_err(name, "set the size of", &image))?;
        drop(file);
        match self.fs {
            Fs::Btrfs => Cmd::new(name, "mkfs.btrfs")
                .arg("-q")
                .arg("-f")
                .arg(&image)
                .run()?,
            // -m 0: tasks run as non-root users too; reserved blocks would
            // make them hit ENOSPC 5% before the size they asked for.
            Fs::Ext4 => Cmd::new(name, "mkfs.ext4")
                .arg("-q")
                .arg("-F")
                .arg("-m")
                .arg("0")
                .arg(&image)
                .run()?,
        };
        loop_mount(name, &image, &mnt)?;
        let inited = init(name, &mnt);
        let unmounted = unmount_image(name, &mnt, &image);
        inited?;
        unmounted?;
        File::open(&image)
            .and_then(|f| f.sync_all())
            .map_err(io_err(name, "sync", &image))?;
        sync_dir(name, staging)
    }

    /// Remove a staging directory left by a killed or failed create.
    fn clear_staging(&self, name: &str) -> Result<(), VolumeError> {
        let staging = self.staging(name);
        if !staging.exists() {
            return Ok(());
        }
        tracing::info!(vol = name, "clearing an unfinished create");
        let mnt = staging.join("mnt");
        if is_mounted(&mnt).map_err(io_err(name, "read mounts for", &mnt))? {
            unmount_image(name, &mnt, &staging.join("image"))?;
        }
        detach_loops(name, &staging.join("image"))?;
        fs::remove_dir_all(&staging).map_err(io_err(name, "remove", &staging))
    }

    /// Mount if not yet; returns the mount point (the filesystem root).
    pub fn ensure_mounted(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        let name = self.existing(vol)?;
        let mnt = self.mnt(name);
        if !self.mounted(name)? {
            fs::create_dir_all(&mnt).map_err(io_err(name, "create", &mnt))?;
            loop_mount(name, &self.image(name), &mnt)?;
        }
        Ok(mnt)
    }

    pub fn unmount(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        let name = vol.validate()?;
        if self.exists(name) && self.mounted(name)? {
            unmount_image(name, &self.mnt(name), &self.image(name))?;
        }
        Ok(())
    }

    pub fn delete(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        let name = vol.validate()?;
        self.clear_staging(name)?;
        let vdir = self.vol_dir(name);
        if !vdir.exists() {
            return Ok(());
        }
        if self.mounted(name)? {
            unmount_image(name, &self.mnt(name), &self.image(name))?;
        }
        detach_loops(name, &self.image(name))?;
        fs::remove_dir_all(&vdir).map_err(io_err(name, "remove", &vdir))?;
        sync_dir(name, &self.dir)
    }

    /// Grow the image file (never shrinks); the filesystem is the caller's.
    pub fn set_len(&self, name: &str, size: Bytes) -> Result<bool, VolumeError> {
        let image = self.image(name);
        if self.image_size(name)? >= size.0 {
            return Ok(false);
        }
        File::options()
            .write(true)
            .open(&image)
            .and_then(|f| {
                f.set_len(size.0)?;
                f.sync_all()
            })
            .map_err(io_err(name, "grow", &image))?;
        Ok(true)
    }

    /// The loop device behind the image, if attached.
    pub fn loop_device(&self, name: &str) -> Result<Option<String>, VolumeError> {
        Ok(loops_of(name, &self.image(name))?.into_iter().next())
    }

    /// size = the image length; used = blocks taken in the filesystem
    /// (statvfs total - available, so it includes filesystem metadata)
    /// when mounted, else the blocks the sparse image holds on the host.
    pub fn usage(&self, vol: &VolumeRef) -> Result<Usage, VolumeError> {
        let name = self.existing(vol)?;
        let size = self.image_size(name)?;
        let used = if self.mounted(name)? {
            let mnt = self.mnt(name);
            let st =
                rustix::fs::statvfs(&mnt).map_err(|e| io_err(name, "statvfs", &mnt)(e.into()))?;
            st.f_blocks.saturating_sub(st.f_bavail) * st.f_frsize
        } else {
            let image = self.image(name);
            fs::metadata(&image)
                .map_err(io_err(name, "stat", &image))?
                .blocks()
                * 512
        };
        Ok(Usage {
            size: Bytes(size),
            used: Bytes(used),
        })
    }

    /// Volumes with an image; staging, quarantine and hidden names skipped.
    pub fn list(&self) -> Result<Vec<VolumeRef>, VolumeError> {
        list_dirs(&self.dir, |p| p.join("image").is_file())
    }

    pub fn quarantine(&self, vol: &VolumeRef, suffix: &str) -> Result<(), VolumeError> {
        let name = self.existing(vol)?;
        check_snapshot(name, "quarantine suffix", suffix)?;
        if self.mounted(name)? {
            unmount_image(name, &self.mnt(name), &self.image(name))?;
        }
        quarantine_dir(&self.dir, name, &self.vol_dir(name), suffix)
    }
}

/// `mount -o loop`: the kernel's autoclear frees the loop device at unmount.
/// noatime: reads then write no metadata (nor CoW btrfs snapshot blocks).
fn loop_mount(name: &str, image: &Path, mnt: &Path) -> Result<(), VolumeError> {
    Cmd::new(name, "mount")
        .arg("-o")
        .arg("loop,noatime")
        .arg(image)
        .arg(mnt)
        .run()
        .map(drop)
}

/// Loop devices attached to `image` (from `losetup -j`).
fn loops_of(name: &str, image: &Path) -> Result<Vec<String>, VolumeError> {
    if !image.exists() {
        return Ok(Vec::new());
    }
    let out = Cmd::new(name, "losetup").arg("-j").arg(image).run()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|d| d.starts_with("/dev/"))
        .map(str::to_string)
        .collect())
}

/// Detach loop devices still attached to `image` without a mount (a
/// killed `mount` can leave one); a no-op normally. One the kernel
/// detached meanwhile (autoclear) is not an error.
fn detach_loops(name: &str, image: &Path) -> Result<(), VolumeError> {
    for dev in loops_of(name, image)? {
        tracing::info!(vol = name, dev, "detaching a leftover loop device");
        if let Err(e) = Cmd::new(name, "losetup").arg("-d").arg(&dev).run()
            && loops_of(name, image)?.contains(&dev)
        {
            return Err(e);
        }
    }
    Ok(())
}

/// Unmount a loop-mounted image and wait for its loop device to go.
/// Autoclear runs after `umount` returns (deferred in the kernel), so
/// without the wait a quick delete or re-mount would race it; after a
/// second the device is detached by hand.
fn unmount_image(name: &str, mnt: &Path, image: &Path) -> Result<(), VolumeError> {
    Cmd::new(name, "umount").arg(mnt).run()?;
    for _ in 0..100 {
        if loops_of(name, image)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    detach_loops(name, image)
}

/// Subdirectories of `dir` that `keep` accepts, as volume names; names a
/// volume could not have (hidden, staging, quarantine) are skipped.
pub(crate) fn list_dirs(
    dir: &Path,
    keep: impl Fn(&Path) -> bool,
) -> Result<Vec<VolumeRef>, VolumeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("-", "list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("-", "list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let vol = VolumeRef(name);
        if vol.validate().is_err() {
            continue;
        }
        let path = entry.path();
        if path.is_dir() && keep(&path) {
            out.push(vol);
        }
    }
    out.sort();
    Ok(out)
}

/// Rename `vdir` to `<dir>/.quarantine/<name>.<suffix>`.
pub(crate) fn quarantine_dir(
    dir: &Path,
    name: &str,
    vdir: &Path,
    suffix: &str,
) -> Result<(), VolumeError> {
    let qdir = dir.join(QUARANTINE);
    fs::create_dir_all(&qdir).map_err(io_err(name, "create", &qdir))?;
    let target = qdir.join(format!("{name}.{suffix}"));
    if target.exists() {
        return Err(VolumeError::Invalid {
            vol: name.to_string(),
            detail: format!("{} exists already", target.display()),
        });
    }
    fs::rename(vdir, &target).map_err(io_err(name, "quarantine", vdir))?;
    sync_dir(name, dir)?;
    sync_dir(name, &qdir)
}

/// Names (`<vol>.<suffix>`) of quarantined volumes under `dir`.
pub(crate) fn quarantined(dir: &Path) -> Result<Vec<String>, VolumeError> {
    let qdir = dir.join(QUARANTINE);
    let entries = match fs::read_dir(&qdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("-", "list", &qdir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("-", "list", &qdir))?;
        if let Some(n) = entry.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}
