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

/// One pass over the local copies.
pub async fn sweep(v: &NodeVolumes) {
    for id in v.meta.ids() {
        let local = v.meta.get(&id).unwrap_or(0);
        if local == 0 || v.is_busy(&id) {
            // Being created, moved or restored: its claim is not settled.
            continue;
        }
        match v.client.volume(&id).await {
            Ok(rec) if rec.node_id == v.node_id && rec.generation == local => {
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
