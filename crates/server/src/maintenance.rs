//! Background upkeep, once a minute:
//! - events older than `event_retention`, or beyond the newest
//!   `event_max`, are pruned (the newest is always kept);
//! - resolved alerts older than the alerts' `retention` are deleted;
//! - allocations of purged jobs are deleted once they can no longer run
//!   (a purge deletes those already finished; these were still stopping);
//! - finished allocations, evaluations, deployments and long-down nodes
//!   are garbage collected (`crate::gc`).

use std::sync::Arc;
use std::time::Duration;

use corral_store::{EventSpan, State, Write};
use corral_types::UnixMillis;

use crate::ServerError;
use crate::core::{Core, now_ms};

/// At most this many events are deleted per commit, so pruning a large
/// backlog never holds the writer long.
const PRUNE_CHUNK: u64 = 20_000;

pub async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.shutdown.cancelled() => return,
        }
        if let Err(e) = prune_events(&core, now_ms()).await {
            tracing::warn!(error = %e, "event pruning failed");
        }
        if let Err(e) = prune_alerts(&core, now_ms()).await {
            tracing::warn!(error = %e, "alert pruning failed");
        }
        if let Err(e) = delete_orphans(&core).await {
            tracing::warn!(error = %e, "deleting the allocations of purged jobs failed");
        }
        if let Err(e) = crate::gc::collect(&core, now_ms(), core.config.gc).await {
            tracing::warn!(error = %e, "garbage collection failed");
        }
    }
}

/// Allocations of purged jobs that can no longer run: their job is gone,
/// or is a new job of the same name (they were made before its first
/// version). Nothing will read them again. At most `max`.
pub fn orphaned_allocs(state: &State, max: usize) -> Vec<String> {
    // When each job's current incarnation began (its first version's
    // index; none once purged), looked up once per job.
    let mut began: std::collections::HashMap<&str, Option<u64>> = Default::default();
    state
        .allocs()
        .filter(|a| !a.may_run())
        .filter(|a| {
            let start = *began.entry(a.job.as_str()).or_insert_with(|| {
                state
                    .job_versions(&a.job)
                    .iter()
                    .map(|j| j.create_index)
                    .min()
            });
            start.is_none_or(|s| a.create_index < s)
        })
        .take(max)
        .map(|a| a.id.clone())
        .collect()
}

/// Delete the allocations of purged jobs that finished stopping.
pub async fn delete_orphans(core: &Arc<Core>) -> Result<usize, ServerError> {
    // A walk over every allocation (a million at the benchmark's scale):
    // off the async workers.
    let snapshot = core.store.snapshot();
    let ids = tokio::task::spawn_blocking(move || orphaned_allocs(&snapshot, PRUNE_CHUNK as usize))
        .await
        .map_err(|e| ServerError::Internal(format!("the orphan scan failed: {e}")))?;
    let n = ids.len();
    if n > 0 {
        core.commit(ids.into_iter().map(Write::DeleteAlloc).collect())
            .await?;
        tracing::debug!(n, "allocations of purged jobs deleted");
    }
    Ok(n)
}

/// The last event index to prune, if any: every event before
/// `first_recent` (the first one within the retention time), and every
/// one beyond the newest `max`; never the newest.
pub fn events_to_prune(span: EventSpan, first_recent: u64, max: u64) -> Option<u64> {
    if span.is_empty() {
        return None;
    }
    let by_time = first_recent.saturating_sub(1);
    let by_count = span.last.saturating_sub(max.max(1));
    let through = by_time.max(by_count).min(span.last - 1);
    (through >= span.first).then_some(through)
}

/// Apply the event retention as of `now`; returns how many were pruned.
pub async fn prune_events(core: &Arc<Core>, now: UnixMillis) -> Result<u64, ServerError> {
    let cutoff = now.saturating_sub(core.config.event_retention.as_millis() as u64);
    let c = core.clone();
    let first_recent = tokio::task::spawn_blocking(move || c.store.event_index_at(cutoff))
        .await
        .map_err(|e| ServerError::Internal(format!("event pruning task: {e}")))??;
    let span = core.store.snapshot().event_span();
    let Some(through) = events_to_prune(span, first_recent, core.config.event_max) else {
        return Ok(0);
    };
    let mut first = span.first;
    while first <= through {
        let upto = through.min(first + PRUNE_CHUNK - 1);
        core.commit(vec![Write::PruneEvents { through: upto }])
            .await?;
        first = upto + 1;
    }
    tracing::debug!(through, "events pruned");
    Ok(through + 1 - span.first)
}

/// Forget resolved alerts older than the alerts' retention.
pub async fn prune_alerts(core: &Arc<Core>, now: UnixMillis) -> Result<usize, ServerError> {
    let cutoff = now.saturating_sub(core.config.alerts.retention.as_millis() as u64);
    let old: Vec<Write> = core
        .store
        .snapshot()
        .alerts()
        .filter(|a| a.resolved_at.is_some_and(|t| t < cutoff))
        .map(|a| Write::DeleteAlert(a.id.clone()))
        .collect();
    let n = old.len();
    if n > 0 {
        core.commit(old).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_allocations_of_purged_jobs_are_orphans() {
        use corral_scheduler::testing::{alloc, group, job};
        use corral_types::ClientStatus;
        let store =
            corral_store::StateStore::open(Box::new(corral_store::MemoryStore::new())).unwrap();
        let web = job("web", 1, vec![group("web", 2).build()]);
        let gone = job("gone", 1, vec![group("gone", 2).build()]);
        let mut done = alloc("a-done", &gone, "gone", 0, "n1");
        done.client = ClientStatus::Complete;
        let stopping = alloc("a-stopping", &gone, "gone", 1, "n1");
        let mut web_done = alloc("a-web", &web, "web", 0, "n1");
        web_done.client = ClientStatus::Failed;
        store
            .commit(vec![
                Write::Job(web),
                Write::Alloc(done),
                Write::Alloc(stopping),
                Write::Alloc(web_done),
            ])
            .unwrap();
        let snap = store.snapshot();
        assert_eq!(orphaned_allocs(&snap, 10), ["a-done"]);
        assert!(orphaned_allocs(&snap, 0).is_empty());
        // "gone" submitted again: what finished before it are orphans,
        // what the new job makes is not.
        let mut stopped = alloc("a-stopping", &gone, "gone", 1, "n1");
        stopped.client = ClientStatus::Complete;
        store
            .commit(vec![Write::Job(gone.clone()), Write::Alloc(stopped)])
            .unwrap();
        let mut new_done = alloc("a-new", &gone, "gone", 0, "n1");
        new_done.client = ClientStatus::Complete;
        store.commit(vec![Write::Alloc(new_done)]).unwrap();
        let mut got = orphaned_allocs(&store.snapshot(), 10);
        got.sort();
        assert_eq!(got, ["a-done", "a-stopping"]);
    }

    #[test]
    fn prunes_by_time_and_by_count_but_keeps_the_newest() {
        let span = EventSpan {
            first: 1,
            last: 100,
        };
        // Nothing old, under the cap.
        assert_eq!(events_to_prune(span, 1, 1000), None);
        // Events 1..=39 are older than the retention.
        assert_eq!(events_to_prune(span, 40, 1000), Some(39));
        // The cap of 10 wins over the time.
        assert_eq!(events_to_prune(span, 40, 10), Some(90));
        // Everything is old: all but the newest.
        assert_eq!(events_to_prune(span, 101, 1000), Some(99));
        // Already pruned that far.
        let later = EventSpan {
            first: 50,
            last: 100,
        };
        assert_eq!(events_to_prune(later, 40, 1000), None);
        assert_eq!(events_to_prune(EventSpan::default(), 5, 0), None);
    }
}
