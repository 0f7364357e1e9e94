//! Backups of this node's volumes, and restores of a lost node's volume
//! from one: restic (through `corral_volumes::backup`), file level, from a
//! read-only snapshot so the backup is one point in time while the task
//! keeps writing. The server says when and where (targets and their
//! secrets come with the request and are never stored here).

use std::path::PathBuf;

use corral_types::api::{VolumeBackupDone, VolumeBackupJob};
use corral_types::{BackupKeep, VolumeBackup};
use corral_volumes::VolumeRef;
use corral_volumes::backup::{BackupTarget, Restic, Retention};

use super::{NodeVolumes, VolumesError};

/// Read-only snapshots made for a backup (deleted after it, not reported).
pub const BACKUP_PREFIX: &str = "backup-";

fn retention(k: BackupKeep) -> Retention {
    Retention {
        last: k.last,
        hourly: k.hourly,
        daily: k.daily,
        weekly: k.weekly,
        monthly: k.monthly,
        ..Retention::default()
    }
}

impl NodeVolumes {
    fn restic(&self) -> Result<Restic, VolumesError> {
        let bin = corral_volumes::find_program("restic").ok_or_else(|| VolumesError::State {
            vol: String::new(),
            message: "restic is not installed on this node (apt-get install restic)".into(),
        })?;
        Ok(Restic::new(
            bin,
            self.dir.join(".corral").join("restic-cache"),
        ))
    }

    fn target(id: &str, name: &str, wire: serde_json::Value) -> Result<BackupTarget, VolumesError> {
        let mut t: BackupTarget =
            serde_json::from_value(wire).map_err(|e| VolumesError::State {
                vol: id.to_owned(),
                message: format!("the backup target the server sent: {e}"),
            })?;
        t.name = name.to_owned();
        Ok(t)
    }

    /// Back the volume up now, apply `keep`, and say what the target keeps.
    pub async fn backup(
        &self,
        id: &str,
        job: VolumeBackupJob,
    ) -> Result<VolumeBackupDone, VolumesError> {
        let target = Self::target(id, &job.to, job.target)?;
        // A directory target that is missing (an NFS share not mounted)
        // must fail, not get a fresh repository on the local disk that
        // hides the real one.
        if let corral_volumes::backup::TargetKind::Dir { path } = &target.kind
            && !path.is_dir()
        {
            return Err(VolumesError::State {
                vol: id.to_owned(),
                message: format!(
                    "backup target {}: {} is not a directory on this node (is the share mounted?)",
                    target.name,
                    path.display()
                ),
            });
        }
        let restic = self.restic()?;
        let keep = retention(job.keep);
        let expect_repository = job.expect_repository;
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let snapshots = self.provider.capabilities().snapshots;
        let snap = format!("{BACKUP_PREFIX}{}", corral_types::now_ms());
        let s = snap.clone();
        let target_name = target.name.clone();
        let started = std::time::Instant::now();
        // Just before the snapshot, in milliseconds (btrfs keeps seconds):
        // every write before this is in the backup.
        let taken_at = corral_types::now_ms();
        if snapshots {
            let s = snap.clone();
            self.with_hooks(id, self.blocking(id, move |p, v| p.snapshot(v, &s)))
                .await?;
        }
        self.blocking(id, move |p, v| {
            // Without snapshots (ext4, host) the live files are read as
            // they are: consistent only if the task is quiet.
            let src = if snapshots {
                p.snapshot_dir(v, &s)?
            } else {
                p.mount(v)?
            };
            let run = || -> Result<VolumeBackupDone, String> {
                let made = restic.ensure_repo(&target, v).map_err(|e| e.to_string())?;
                if made && expect_repository {
                    return Err(format!(
                        "the repository of this volume in target {} was not there (its earlier backups are gone or the target changed); an empty one was made, this backup is not taken; check the target, then back up again",
                        target.name
                    ));
                }
                let info = restic
                    .backup(&target, v, &src, &[])
                    .map_err(|e| e.to_string())?;
                let forgot = restic.forget(&target, v, keep).map_err(|e| e.to_string())?;
                let listed = restic.list(&target, v).map_err(|e| e.to_string())?;
                let backup = VolumeBackup {
                    id: info.id.clone(),
                    target: target_name.clone(),
                    taken_at,
                    took_ms: started.elapsed().as_millis() as u64,
                    bytes_added: info.stats.map_or(0, |s| s.bytes_added),
                };
                let kept = listed
                    .into_iter()
                    .filter(|b| forgot.kept.is_empty() || forgot.kept.contains(&b.id))
                    .map(|b| {
                        if b.id == backup.id {
                            backup.clone()
                        } else {
                            VolumeBackup {
                                id: b.id,
                                target: target_name.clone(),
                                taken_at: b.time,
                                took_ms: 0,
                                bytes_added: 0,
                            }
                        }
                    })
                    .collect();
                Ok(VolumeBackupDone { backup, kept })
            };
            let out = run();
            if snapshots {
                let _ = p.delete_snapshot(v, &s);
            }
            out.map_err(|detail| corral_volumes::VolumeError::Invalid {
                vol: v.0.clone(),
                detail,
            })
        })
        .await
    }

    /// Put the volume's data back as it was in `backup` (the volume is not
    /// in use: the server checked). Where the provider takes snapshots,
    /// the data as it was is kept first as snapshot `before-restore-<ms>`.
    pub async fn restore_backup_in_place(
        &self,
        id: &str,
        backup: &VolumeBackup,
        wire: serde_json::Value,
    ) -> Result<(), VolumesError> {
        let target = Self::target(id, &backup.target, wire)?;
        let restic = self.restic()?;
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let snapshots = self.provider.capabilities().snapshots;
        let backup_id = backup.id.clone();
        self.blocking(id, move |p, v| {
            if snapshots {
                p.snapshot(v, &format!("before-restore-{}", corral_types::now_ms()))?;
            }
            let dir = p.mount(v)?;
            let io = |e: std::io::Error| corral_volumes::VolumeError::Io {
                vol: v.0.clone(),
                op: "empty the data directory for a restore".into(),
                source: e,
            };
            for entry in std::fs::read_dir(&dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path).map_err(io)?;
                } else {
                    std::fs::remove_file(&path).map_err(io)?;
                }
            }
            restic.restore(&target, v, &backup_id, &dir).map_err(|e| {
                corral_volumes::VolumeError::Invalid {
                    vol: v.0.clone(),
                    detail: e.to_string(),
                }
            })
        })
        .await?;
        drop(_g);
        if let Err(e) = self.report(id).await {
            tracing::debug!(volume = id, error = %e, "cannot report the volume");
        }
        Ok(())
    }

    /// Make a fresh copy of the volume here from its own `backup` (its node
    /// is lost): the data dir is filled by restic before anything mounts
    /// it for a task.
    pub async fn restore_backup(
        &self,
        id: &str,
        size: corral_types::units::Bytes,
        backup: &VolumeBackup,
        wire: serde_json::Value,
    ) -> Result<PathBuf, VolumesError> {
        if self.meta.get(id).is_some() {
            self.quarantine(id, "a stale copy where a backup is restored")
                .await?;
        }
        let lock = self.lock(id);
        let _g = lock.lock().await;
        self.fill_from_backup(id, id, size, backup, wire).await
    }

    /// Make volume `id` here and fill it from `backup` of volume `repo`
    /// (the caller holds `id`'s lock); nothing is left if it fails.
    pub(super) async fn fill_from_backup(
        &self,
        id: &str,
        repo: &str,
        size: corral_types::units::Bytes,
        backup: &VolumeBackup,
        wire: serde_json::Value,
    ) -> Result<PathBuf, VolumesError> {
        let target = Self::target(id, &backup.target, wire)?;
        let restic = self.restic()?;
        let backup_id = backup.id.clone();
        let repo = VolumeRef(repo.to_owned());
        let made = self
            .blocking(id, move |p, v| {
                p.create(v, size)?;
                let dir = p.mount(v)?;
                restic
                    .restore(&target, &repo, &backup_id, &dir)
                    .map_err(|e| corral_volumes::VolumeError::Invalid {
                        vol: v.0.clone(),
                        detail: e.to_string(),
                    })?;
                Ok(dir)
            })
            .await;
        if made.is_err() {
            let _ = self.blocking(id, |p, v| p.delete(v)).await;
        }
        made
    }
}
