//! The default provider: a sparse image file formatted btrfs, loop-mounted.
//! The image length is the hard size limit (ENOSPC past it; qgroups give
//! EDQUOT and go wrong after snapshots), snapshots are atomic and read-only,
//! and `btrfs send`/`receive` move only the changes between two snapshots.
//!
//! Inside the filesystem:
//! ```text
//! data/                 subvolume: the live data, what tasks see
//! .snapshots/<name>     read-only snapshots of data (and received ones)
//! .data-new, .data-old  a rollback/import switching data (finished at mount)
//! ```
//! Never `fsfreeze` before a snapshot: a btrfs snapshot then blocks until
//! thawed, and it is atomic without it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use corral_types::units::Bytes;

use crate::cmd::Cmd;
use crate::image::{Fs, Images, io_err, quarantined};
use crate::names::check_snapshot;
use crate::provider::{
    Capabilities, Export, ProviderKind, SnapshotInfo, Usage, VolumeError, VolumeProvider, VolumeRef,
};

const DATA: &str = "data";
const DATA_NEW: &str = ".data-new";
const DATA_OLD: &str = ".data-old";
const SNAPSHOTS: &str = ".snapshots";

pub struct BtrfsImage {
    images: Images,
}

impl BtrfsImage {
    /// Volumes live under `dir` (made on first create).
    pub fn new(dir: PathBuf) -> Self {
        BtrfsImage {
            images: Images { dir, fs: Fs::Btrfs },
        }
    }

    pub fn dir(&self) -> &Path {
        &self.images.dir
    }

    /// Quarantined volumes, as `<vol>.<suffix>` under `<dir>/.quarantine`.
    pub fn quarantined(&self) -> Result<Vec<String>, VolumeError> {
        quarantined(&self.images.dir)
    }

    /// Mounted filesystem root with `data` settled (see [`settle_data`]).
    fn root(&self, vol: &VolumeRef) -> Result<(String, PathBuf), VolumeError> {
        let mnt = self.images.ensure_mounted(vol)?;
        let name = vol.0.clone();
        settle_data(&name, &mnt)?;
        Ok((name, mnt))
    }

    fn snap_path(
        &self,
        vol: &VolumeRef,
        snap: &str,
    ) -> Result<(String, PathBuf, PathBuf), VolumeError> {
        let (name, mnt) = self.root(vol)?;
        check_snapshot(&name, "snapshot name", snap)?;
        let p = mnt.join(SNAPSHOTS).join(snap);
        Ok((name, mnt, p))
    }

    fn existing_snap(&self, vol: &VolumeRef, snap: &str) -> Result<PathBuf, VolumeError> {
        let (name, _, p) = self.snap_path(vol, snap)?;
        if !p.is_dir() {
            return Err(VolumeError::SnapshotNotFound {
                vol: name,
                snapshot: snap.to_string(),
            });
        }
        Ok(p)
    }
}

fn subvol_delete(name: &str, path: &Path) -> Result<(), VolumeError> {
    Cmd::new(name, "btrfs")
        .arg("subvolume")
        .arg("delete")
        .arg(path)
        .run()
        .map(drop)
}

/// Finish (or undo) a switch of `data` cut short by a crash: the order in
/// [`replace_data`] makes each leftover state unambiguous.
fn settle_data(name: &str, mnt: &Path) -> Result<(), VolumeError> {
    let data = mnt.join(DATA);
    let new = mnt.join(DATA_NEW);
    let old = mnt.join(DATA_OLD);
    if !data.exists() && new.exists() {
        fs::rename(&new, &data).map_err(io_err(name, "rename", &new))?;
    }
    if data.exists() {
        for leftover in [&new, &old] {
            if leftover.exists() {
                subvol_delete(name, leftover)?;
            }
        }
    }
    Ok(())
}

/// Make `data` a writable snapshot of `from`: build it aside, swap by two
/// renames, then drop the old one. Fails (EBUSY) if `data` is a mount point
/// in use by a task, which is what we want.
fn replace_data(name: &str, mnt: &Path, from: &Path) -> Result<(), VolumeError> {
    let data = mnt.join(DATA);
    let new = mnt.join(DATA_NEW);
    let old = mnt.join(DATA_OLD);
    if new.exists() {
        subvol_delete(name, &new)?;
    }
    Cmd::new(name, "btrfs")
        .arg("subvolume")
        .arg("snapshot")
        .arg(from)
        .arg(&new)
        .run()?;
    if data.exists() {
        fs::rename(&data, &old).map_err(io_err(name, "rename", &data))?;
    }
    fs::rename(&new, &data).map_err(io_err(name, "rename", &new))?;
    if old.exists() {
        subvol_delete(name, &old)?;
    }
    Ok(())
}

/// Creation time of a subvolume, from `btrfs subvolume show` in UTC.
fn created_at(name: &str, path: &Path) -> Result<u64, VolumeError> {
    let out = Cmd::new(name, "btrfs")
        .env("TZ", "UTC")
        .arg("subvolume")
        .arg("show")
        .arg(path)
        .run()?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Creation time:"))
        .and_then(|t| parse_time_ms(t.trim()))
        .ok_or_else(|| VolumeError::Invalid {
            vol: name.to_string(),
            detail: format!(
                "no creation time in btrfs subvolume show {}",
                path.display()
            ),
        })
}

/// `2024-05-01 10:00:00 +0000` to milliseconds since 1970.
fn parse_time_ms(t: &str) -> Option<u64> {
    let mut parts = t.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let zone = parts.next().unwrap_or("+0000");
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut tm = time.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (tm.next()??, tm.next()??, tm.next()??);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z = zone.trim_start_matches(['+', '-']);
    let zh: i64 = z.get(0..2)?.parse().ok()?;
    let zm: i64 = z.get(2..4)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - sign * (zh * 3600 + zm * 60);
    u64::try_from(secs).ok().map(|s| s * 1000)
}

impl VolumeProvider for BtrfsImage {
    fn quarantined_copies(&self) -> Result<Vec<String>, VolumeError> {
        self.quarantined()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::BtrfsImage
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            size_enforced: true,
            snapshots: true,
            incremental_export: true,
            grow_online: true,
        }
    }

    fn create(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError> {
        self.images.create(vol, size, |name, mnt| {
            Cmd::new(name, "btrfs")
                .arg("subvolume")
                .arg("create")
                .arg(mnt.join(DATA))
                .run()?;
            let snaps = mnt.join(SNAPSHOTS);
            fs::create_dir(&snaps).map_err(io_err(name, "create", &snaps))
        })
    }

    /// Online: enlarge the file, tell the loop device (`losetup -c`), then
    /// `btrfs filesystem resize max`. An unmounted volume is mounted for it
    /// and unmounted again.
    fn grow(&self, vol: &VolumeRef, size: Bytes) -> Result<(), VolumeError> {
        let name = self.images.existing(vol)?;
        let was_mounted = self.images.mounted(name)?;
        // Also when the file is already long enough: a grow cut short after
        // set_len still needs the filesystem resized.
        self.images.set_len(name, size)?;
        let mnt = self.images.ensure_mounted(vol)?;
        let resized = (|| {
            let dev = self
                .images
                .loop_device(name)?
                .ok_or_else(|| VolumeError::Invalid {
                    vol: name.to_string(),
                    detail: "mounted but no loop device found".to_string(),
                })?;
            Cmd::new(name, "losetup").arg("-c").arg(&dev).run()?;
            Cmd::new(name, "btrfs")
                .arg("filesystem")
                .arg("resize")
                .arg("max")
                .arg(&mnt)
                .run()
                .map(drop)
        })();
        if !was_mounted {
            self.images.unmount(vol)?;
        }
        resized
    }

    fn delete(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        self.images.delete(vol)
    }

    fn data_dir(&self, vol: &VolumeRef) -> PathBuf {
        self.images.mnt(&vol.0).join(DATA)
    }

    fn mount(&self, vol: &VolumeRef) -> Result<PathBuf, VolumeError> {
        let (name, mnt) = self.root(vol)?;
        let data = mnt.join(DATA);
        if !data.is_dir() {
            return Err(VolumeError::Invalid {
                vol: name,
                detail: format!("{} is missing", data.display()),
            });
        }
        Ok(data)
    }

    fn unmount(&self, vol: &VolumeRef) -> Result<(), VolumeError> {
        self.images.unmount(vol)
    }

    /// Read-only snapshot of `data` as `.snapshots/<name>`. Taking one that
    /// exists returns it (a retried call after a crash).
    fn snapshot(&self, vol: &VolumeRef, snap: &str) -> Result<SnapshotInfo, VolumeError> {
        let (name, mnt, p) = self.snap_path(vol, snap)?;
        if !p.exists() {
            let snaps = mnt.join(SNAPSHOTS);
            fs::create_dir_all(&snaps).map_err(io_err(&name, "create", &snaps))?;
            Cmd::new(&name, "btrfs")
                .arg("subvolume")
                .arg("snapshot")
                .arg("-r")
                .arg(mnt.join(DATA))
                .arg(&p)
                .run()?;
        }
        Ok(SnapshotInfo {
            name: snap.to_string(),
            created_at: created_at(&name, &p)?,
        })
    }

    fn delete_snapshot(&self, vol: &VolumeRef, snap: &str) -> Result<(), VolumeError> {
        let (name, _, p) = self.snap_path(vol, snap)?;
        if p.exists() {
            subvol_delete(&name, &p)?;
        }
        Ok(())
    }

    /// Oldest first.
    fn snapshots(&self, vol: &VolumeRef) -> Result<Vec<SnapshotInfo>, VolumeError> {
        let (name, mnt) = self.root(vol)?;
        let snaps = mnt.join(SNAPSHOTS);
        let mut out = Vec::new();
        let entries = fs::read_dir(&snaps).map_err(io_err(&name, "list", &snaps))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&name, "list", &snaps))?;
            let Some(s) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // Receives in progress and anything we did not name.
            if check_snapshot(&name, "snapshot", &s).is_err() {
                continue;
            }
            out.push(SnapshotInfo {
                created_at: created_at(&name, &entry.path())?,
                name: s,
            });
        }
        out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(out)
    }

    fn snapshot_dir(&self, vol: &VolumeRef, snap: &str) -> Result<PathBuf, VolumeError> {
        self.existing_snap(vol, snap)
    }

    fn rollback(&self, vol: &VolumeRef, snap: &str) -> Result<(), VolumeError> {
        let p = self.existing_snap(vol, snap)?;
        let (name, mnt) = self.root(vol)?;
        replace_data(&name, &mnt, &p)
    }

    /// `btrfs send [-p .snapshots/<base>] .snapshots/<name>`, streamed.
    fn export(
        &self,
        vol: &VolumeRef,
        snap: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn Export>, VolumeError> {
        let p = self.existing_snap(vol, snap)?;
        let mut cmd = Cmd::new(&vol.0, "btrfs").arg("send").arg("-q");
        if let Some(base) = base {
            cmd = cmd.arg("-p").arg(self.existing_snap(vol, base)?);
        }
        cmd.arg(&p).stream_stdout()
    }

    /// `btrfs receive .snapshots/`, then `data` becomes a writable snapshot
    /// of the received one. The stream carries the sender's snapshot name;
    /// it should be `name` (the agent uses one name on both nodes), else
    /// the received subvolume is renamed to `name` (within `.snapshots`: a
    /// read-only subvolume cannot move to another directory, which is why
    /// there is no staging directory). A `.snapshots/<name>` already there
    /// is replaced: it is a partial receive or an older copy. An
    /// incremental stream needs its base received here before (btrfs finds
    /// it by UUID and fails otherwise); a failed receive's partial
    /// subvolume is removed.
    fn import(
        &self,
        vol: &VolumeRef,
        snap: &str,
        size: Bytes,
        input: &mut dyn Read,
    ) -> Result<(), VolumeError> {
        let name = vol.validate()?;
        check_snapshot(name, "snapshot name", snap)?;
        if !self.images.exists(name) {
            self.create(vol, size)?;
        }
        let (name, mnt) = self.root(vol)?;
        let snaps = mnt.join(SNAPSHOTS);
        fs::create_dir_all(&snaps).map_err(io_err(&name, "create", &snaps))?;
        let target = snaps.join(snap);
        if target.exists() {
            subvol_delete(&name, &target)?;
        }
        let before = entries(&name, &snaps)?;
        let received = Cmd::new(&name, "btrfs")
            .arg("receive")
            .arg(&snaps)
            .feed(input);
        let new: Vec<PathBuf> = entries(&name, &snaps)?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        let sub = match (received, new.as_slice()) {
            (Ok(()), [one]) => one.clone(),
            (result, _) => {
                for p in &new {
                    if let Err(e) = subvol_delete(&name, p) {
                        tracing::warn!(vol = name, error = %e, "cannot remove a failed receive");
                    }
                }
                result?;
                return Err(VolumeError::Invalid {
                    vol: name,
                    detail: format!(
                        "the stream made {} subvolumes in {}, expected one",
                        new.len(),
                        snaps.display()
                    ),
                });
            }
        };
        if sub != target {
            fs::rename(&sub, &target).map_err(io_err(&name, "rename", &sub))?;
        }
        replace_data(&name, &mnt, &target)
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

/// Paths in `dir`.
fn entries(name: &str, dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(name, "list", dir))? {
        out.push(entry.map_err(io_err(name, "list", dir))?.path());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_btrfs_times() {
        assert_eq!(parse_time_ms("1970-01-01 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_time_ms("2024-05-01 10:00:00 +0000"),
            Some(1_714_557_600_000)
        );
        assert_eq!(
            parse_time_ms("2024-05-01 12:00:00 +0200"),
            Some(1_714_557_600_000)
        );
        assert_eq!(parse_time_ms("garbage"), None);
    }
}
