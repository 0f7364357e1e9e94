//! What the agent does with its volumes on its own, every `interval`:
//! report each held copy's use and snapshots, and set aside copies the
//! store has moved past (a node back after its volume moved or was
//! restored elsewhere). A copy the store moved away from this node in a
//! clean move (its `moved_from` is this node, one generation back) is
//! deleted instead: the new holder has everything it held.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::NodeVolumes;

pub async fn run(v: Arc<NodeVolumes>, interval: Duration, shutdown: CancellationToken) {
    loop {
        sweep(&v).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// `move-*` snapshots a move left behind (the move gave up) go after this
/// long: a move waits at most for its old allocation's stop.
const STALE_MOVE_SNAPSHOT_MS: u64 = 3_600_000;

/// One pass over the local copies.
pub async fn sweep(v: &NodeVolumes) {
    unclaimed(v).await;
    for id in v.meta.ids() {
        let local = v.meta.get(&id).unwrap_or(0);
        if local == 0 || v.is_busy(&id) {
            // Being created, moved or restored: its claim is not settled.
            continue;
        }
        match v.client.volume(&id).await {
            Ok(rec) if rec.node_id == v.node_id && rec.generation == local => {
                old_move_snapshots(v, &id).await;
                if let Err(e) = v.report(&id).await {
                    tracing::debug!(volume = %id, error = %e, "cannot report the volume");
                }
            }
            // A claim of this node stored without its answer: the next
            // acquire settles it.
            Ok(rec) if rec.node_id == v.node_id && rec.generation == local + 1 => {}
            Ok(rec) if rec.node_id == v.node_id => {
                let why = format!(
                    "the store is at generation {}, this copy at {local}",
                    rec.generation
                );
                let _ = v.quarantine(&id, &why).await;
            }
            Ok(rec) => {
                let clean = rec.moved_from.as_deref() == Some(v.node_id.as_str())
                    && rec.generation == local + 1
                    && rec.restored_from.is_none();
                if clean {
                    match v.delete(&id).await {
                        Ok(()) => {
                            tracing::info!(volume = %id, to = %rec.node_id, "volume moved away; this copy is deleted")
                        }
                        Err(e) => {
                            tracing::warn!(volume = %id, error = %e, "cannot delete the moved volume's old copy")
                        }
                    }
                } else {
                    let why = format!("node {} holds generation {}", rec.node_id, rec.generation);
                    let _ = v.quarantine(&id, &why).await;
                }
            }
            Err(e) if e.status() == Some(404) => {
                let _ = v.quarantine(&id, "the store has no record of it").await;
            }
            Err(e) => tracing::debug!(volume = %id, error = %e, "cannot read the volume's record"),
        }
    }
}

/// Copies with no generation here were being received (a move or a
/// restore that did not finish: the job stopped, the volume was deleted,
/// the receiving node drained): never live on this node, they go unless
/// the store names this node (then the next acquire settles it).
async fn unclaimed(v: &NodeVolumes) {
    let p = v.provider.clone();
    let Ok(Ok(local)) = tokio::task::spawn_blocking(move || p.list()).await else {
        return;
    };
    for vol in local {
        let id = vol.0;
        if v.meta.get(&id).is_some() || v.is_busy(&id) {
            continue;
        }
        let gone = match v.client.volume(&id).await {
            Ok(rec) => rec.node_id != v.node_id,
            Err(e) => e.status() == Some(404),
        };
        if gone && !v.is_busy(&id) {
            match v.delete(&id).await {
                Ok(()) => {
                    tracing::info!(volume = %id, "a copy that never became live here is deleted")
                }
                Err(e) => {
                    tracing::warn!(volume = %id, error = %e, "cannot delete an unfinished copy")
                }
            }
        }
    }
}

async fn old_move_snapshots(v: &NodeVolumes, id: &str) {
    if !v.provider.capabilities().snapshots {
        return;
    }
    let Ok(snaps) = v.blocking(id, |p, vol| p.snapshots(vol)).await else {
        return;
    };
    let now = corral_types::now_ms();
    for s in snaps {
        if s.name.starts_with(super::MOVE_PREFIX)
            && s.created_at.saturating_add(STALE_MOVE_SNAPSHOT_MS) < now
        {
            let name = s.name.clone();
            if let Err(e) = v
                .blocking(id, move |p, vol| p.delete_snapshot(vol, &name))
                .await
            {
                tracing::debug!(volume = %id, error = %e, "cannot delete an old move snapshot");
            }
        }
    }
}
