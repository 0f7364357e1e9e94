//! Background upkeep: the store's change feed is compacted so it keeps a
//! window of recent revisions (enough for watchers to resume) instead of
//! growing forever.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;

/// Revisions of change history kept for watchers.
pub const KEEP_REVISIONS: u64 = 100_000;

pub async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.shutdown.cancelled() => return,
        }
        let index = core.store.snapshot().index();
        if index <= KEEP_REVISIONS {
            continue;
        }
        let c = core.clone();
        let r =
            tokio::task::spawn_blocking(move || c.store.backend().compact(index - KEEP_REVISIONS))
                .await;
        match r {
            Ok(Ok(())) => tracing::debug!(below = index - KEEP_REVISIONS, "change feed compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "change feed compaction failed"),
            Err(e) => tracing::warn!(error = %e, "change feed compaction task failed"),
        }
    }
}
