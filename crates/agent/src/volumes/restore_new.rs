//! A new volume made here from another one's snapshot (held on this node)
//! or backup: `corral volume restore VOL SNAPSHOT|BACKUP --as NEW`. The
//! server recorded it first, marked as being restored; the copy gets its
//! generation here only once it is whole, and the report that follows
//! tells the store it is done.

use corral_types::api::VolumeRestoreNew;
use corral_volumes::VolumeRef;

use super::{NodeVolumes, VolumesError};

fn state(id: &str, message: impl Into<String>) -> VolumesError {
    VolumesError::State {
        vol: id.to_owned(),
        message: message.into(),
    }
}

impl NodeVolumes {
    pub async fn restore_new(&self, id: &str, job: VolumeRestoreNew) -> Result<(), VolumesError> {
        let _busy = self.mark_busy(id);
        let lock = self.lock(id);
        let _g = lock.lock().await;
        if self.meta.get(id).is_some() {
            return Err(state(id, "this node already has a copy of it"));
        }
        // What an earlier restore under this id left unfinished: never
        // live, it goes.
        self.blocking(id, |p, v| {
            if p.list()?.contains(v) {
                p.delete(v)?;
            }
            Ok(())
        })
        .await?;
        let made = match (&job.from.snapshot, &job.from.backup, &job.from.target) {
            (Some(snapshot), _, _) => self.copy_snapshot(id, &job, snapshot).await,
            (None, Some(backup), Some(target)) => self
                .fill_from_backup(id, &job.source, job.size, backup, target.clone())
                .await
                .map(|_| ()),
            _ => Err(state(
                id,
                "a restore needs a snapshot, or a backup and its target",
            )),
        };
        if let Err(e) = made {
            let _ = self.blocking(id, |p, v| p.delete(v)).await;
            return Err(e);
        }
        // Not mounted until an allocation takes it.
        self.blocking(id, |p, v| p.unmount(v)).await?;
        self.meta
            .set(id, 1)
            .map_err(|e| state(id, format!("cannot record its generation: {e}")))?;
        drop(_g);
        if let Err(e) = self.report(id).await {
            // The sweep reports it again.
            tracing::warn!(volume = id, error = %e, "cannot report the restored volume");
        }
        tracing::info!(volume = id, from = %job.source, "volume restored under a new id");
        Ok(())
    }

    /// Receive a full export of `source`'s snapshot as the new volume (the
    /// same stream a move sends between nodes).
    async fn copy_snapshot(
        &self,
        id: &str,
        job: &VolumeRestoreNew,
        snapshot: &str,
    ) -> Result<(), VolumesError> {
        let source = job.source.clone();
        match (self.meta.get(&source), job.source_generation) {
            (Some(g), Some(want)) if g == want => {}
            (g, want) => {
                return Err(state(
                    &source,
                    format!(
                        "this node's copy is at generation {g:?}, not {want:?}: it moved; try again"
                    ),
                ));
            }
        }
        // No restore or delete of the source meanwhile.
        let src_lock = self.lock(&source);
        let _src = src_lock.lock().await;
        let snapshot = snapshot.to_owned();
        let size = job.size;
        self.blocking(id, move |p, new| {
            let src = VolumeRef(source);
            let mut export = p.export(&src, &snapshot, None)?;
            p.import(new, &snapshot, size, &mut export)?;
            export.finish()?;
            // The snapshot received is the source's history, not the new
            // volume's: its data is live now, the copy of it goes.
            p.delete_snapshot(new, &snapshot)
        })
        .await
    }
}
