//! Built-in alerts.
//!
//! [`run`] follows the event log (see `crate::events`) into the pure rule
//! [`Engine`](rules::Engine) and evaluates it every `eval_interval`
//! against the latest state, the tasks' memory samples (`crate::usage`)
//! and the data dir's disk usage. What fires, is seen again or resolves
//! is stored as [`Alert`](corral_types::Alert) records (so alerts survive
//! a restart, and their firing and resolution become events through the
//! state diff), then handed to the [`sinks`]: the log and webhooks.
//!
//! Rules and defaults (`[server.alerts]`, docs/CONFIG.md): crash loop (3
//! restarts of a task in 10m), OOM kill, node down, deployment failed or
//! reverted, memory above 90% of the limit in every sample over 5m, data dir above 90%
//! full, a volume's backups failing or late (older than twice its spec's
//! `every`). After a restart the engine replays the events of the last
//! `lookback` so its windows are whole again; events already counted in
//! a stored alert are skipped.

pub mod config;
pub mod disk;
pub mod rules;
pub mod sinks;

use std::sync::Arc;
use std::time::Duration;

use corral_store::Write;

pub use config::AlertsConfig;
use rules::{AlertChange, Engine, Inputs, MemorySample, Transition};
use sinks::Sinks;

use crate::core::{Core, now_ms};

/// Events read per page.
const PAGE: usize = 4096;
/// After a commit, wait this long before reading its events, so a burst
/// of commits is read in one go.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub async fn run(core: Arc<Core>) {
    let cfg = core.config.alerts.clone();
    if !cfg.enabled {
        return;
    }
    let sinks = Sinks::start(&cfg, core.http.clone(), core.shutdown.clone());
    let mut engine = Engine::new(cfg.clone());
    let mut after = replay_from(&core, cfg.lookback()).await;
    let mut commits = core.index.subscribe();
    let mut tick = tokio::time::interval(cfg.eval_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                after = feed(&core, &mut engine, after).await;
                evaluate(&core, &mut engine, &sinks).await;
            }
            r = commits.changed() => {
                if r.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                    _ = core.shutdown.cancelled() => return,
                }
                commits.borrow_and_update();
                after = feed(&core, &mut engine, after).await;
            }
            _ = core.shutdown.cancelled() => return,
        }
    }
}

/// The event index to read after: the first event of the last `lookback`.
async fn replay_from(core: &Arc<Core>, lookback: Duration) -> u64 {
    let since = now_ms().saturating_sub(lookback.as_millis() as u64);
    let c = core.clone();
    match tokio::task::spawn_blocking(move || c.store.event_index_at(since)).await {
        Ok(Ok(i)) => i.saturating_sub(1),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "alerts: cannot find where to replay events from; starting at the newest");
            core.store.snapshot().event_span().last
        }
        Err(e) => {
            tracing::warn!(error = %e, "alerts: replay lookup failed; starting at the newest");
            core.store.snapshot().event_span().last
        }
    }
}

/// Hand every event after `after` to the engine; returns the last index
/// read.
async fn feed(core: &Arc<Core>, engine: &mut Engine, mut after: u64) -> u64 {
    loop {
        let page = if core.store.events_in_memory(after) {
            core.store.events_after(after, PAGE)
        } else {
            let c = core.clone();
            match tokio::task::spawn_blocking(move || c.store.events_after(after, PAGE)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: event read failed");
                    return after;
                }
            }
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot read events");
                return after;
            }
        };
        let Some(last) = page.last() else {
            return after;
        };
        let snapshot = core.store.snapshot();
        for e in &page {
            engine.observe(e, &snapshot);
        }
        after = last.index;
        if page.len() < PAGE {
            return after;
        }
    }
}

async fn evaluate(core: &Arc<Core>, engine: &mut Engine, sinks: &Sinks) {
    let state = core.store.snapshot();
    let memory = memory_samples(core);
    let disk = match disk::usage(&core.config.data_dir) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!(error = %e, "alerts: no disk usage");
            None
        }
    };
    let changes = engine.evaluate(&Inputs {
        now: now_ms(),
        state: &state,
        memory: &memory,
        disk,
    });
    if changes.is_empty() {
        return;
    }
    let writes = changes
        .iter()
        .map(|c| Write::Alert(c.alert.clone()))
        .collect();
    match core.commit(writes).await {
        Ok(index) => sinks.notify(&as_stored(changes, &core.store.snapshot(), index)),
        Err(e) => tracing::warn!(error = %e, "alerts: cannot store alert changes"),
    }
}

/// The changes with the alerts as the commit at `index` stored them (the
/// store stamps `create_index` and `modify_index`): what the webhooks and
/// the log are told is what `GET /v1/alerts` answers.
pub fn as_stored(
    changes: Vec<AlertChange>,
    state: &corral_store::State,
    index: u64,
) -> Vec<AlertChange> {
    changes
        .into_iter()
        .map(|mut c| {
            match state.alert(&c.alert.id) {
                Some(a) if a.modify_index == index => c.alert = (**a).clone(),
                // Gone already (pruned) or changed again: stamp it as the
                // store did.
                _ => {
                    if c.transition == Transition::Fired {
                        c.alert.create_index = index;
                    }
                    c.alert.modify_index = index;
                }
            }
            c
        })
        .collect()
}

/// The memory rule's input: every running task's latest sample.
pub fn memory_samples(core: &Core) -> Vec<MemorySample> {
    core.usage
        .all()
        .into_iter()
        .map(|s| MemorySample {
            alloc_id: s.alloc_id,
            task: s.task,
            node_id: s.node_id,
            memory_bytes: s.memory_bytes,
            limit_bytes: s.memory_limit_bytes,
            at: s.at,
            run: s.started_at,
        })
        .collect()
}

/// Alerts as `GET /v1/alerts` lists them: firing first (newest first),
/// then, with `all`, the resolved ones (most recently resolved first).
pub fn listing(state: &corral_store::State, all: bool) -> Vec<corral_types::Alert> {
    let mut firing: Vec<_> = state
        .alerts()
        .filter(|a| a.is_firing())
        .map(|a| (**a).clone())
        .collect();
    firing.sort_by(|a, b| b.fired_at.cmp(&a.fired_at).then(a.id.cmp(&b.id)));
    if all {
        let mut resolved: Vec<_> = state
            .alerts()
            .filter(|a| !a.is_firing())
            .map(|a| (**a).clone())
            .collect();
        resolved.sort_by(|a, b| b.resolved_at.cmp(&a.resolved_at).then(a.id.cmp(&b.id)));
        firing.extend(resolved);
    }
    firing
}

#[cfg(test)]
mod tests;
