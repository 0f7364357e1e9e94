//! Garbage collection of finished records (Nomad's core GC), run by
//! `maintenance` with the configured thresholds and by `PUT /v1/system/gc`
//! (`corral system gc`) with none. What goes, once older than its
//! threshold:
//!
//! - terminal allocations of jobs that still exist, except the newest of
//!   each slot the job still has (the scheduler reads it: a slot whose
//!   allocation failed for good must not be placed again; `corral logs
//!   JOB` shows it when nothing runs), any allocation a running one
//!   replaces (drain migrations follow `previous`) and those of a
//!   deployment still under way (its watcher counts them);
//! - evaluations that are complete, failed or cancelled, except each
//!   job's newest (`corral status` shows it);
//! - deployments that ended, except each job's newest (the scheduler and
//!   `corral deploy status` read it) and any a running allocation
//!   belongs to;
//! - nodes down for the node threshold with nothing that may still run
//!   on them, together with their terminal allocations but a failed one
//!   holding its slot (the scheduler treats its node as missing). Their
//!   firing
//!   `node_down` alert resolves ("the node was removed") and their metric
//!   series go with them.
//!
//! Job versions are never collected: `corral job history` shows them all.
//! Allocations of purged jobs are `maintenance::delete_orphans`' work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_store::{State, Write};
pub use corral_types::api::GcReport;
use corral_types::{ClientStatus, DesiredStatus, EvalStatus, NodeStatus, UnixMillis};

use crate::ServerError;
use crate::config::GcConfig;
use crate::core::Core;

/// At most this many records are deleted per commit, so a large backlog
/// never holds the writer long.
const CHUNK: usize = 20_000;

/// The deletes due on `state` at `now`; pure, so it is tested without a
/// server.
pub fn garbage(state: &State, now: UnixMillis, t: &GcConfig) -> (Vec<Write>, GcReport) {
    let older = |at: UnixMillis, threshold: Duration| {
        now.saturating_sub(at) >= u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX)
    };
    let mut report = GcReport::default();
    let mut writes = Vec::new();

    // One pass over the allocations: what running ones still point at, and
    // each slot's newest.
    let mut replaced: HashSet<&str> = HashSet::new();
    let mut deployed: HashSet<&str> = HashSet::new();
    let mut newest: HashMap<(&str, &str, u32), (u64, &str)> = HashMap::new();
    for a in state.allocs() {
        if a.may_run() {
            replaced.extend(a.previous.as_deref());
            deployed.extend(a.deployment_id.as_deref());
        }
        let slot = (a.job.as_str(), a.group.as_str(), a.index);
        let e = newest
            .entry(slot)
            .or_insert((a.create_index, a.id.as_str()));
        if a.create_index > e.0 {
            *e = (a.create_index, a.id.as_str());
        }
    }

    // Nodes first: their terminal allocations go with them.
    let mut gone_nodes: HashSet<&str> = HashSet::new();
    for n in state.nodes_iter() {
        let since = n.down_since.unwrap_or(n.last_heartbeat);
        if n.status == NodeStatus::Down
            && older(since, t.node)
            && state.node_allocs(&n.id).iter().all(|a| !a.may_run())
        {
            gone_nodes.insert(n.id.as_str());
            writes.push(Write::DeleteNode(n.id.clone()));
            report.nodes += 1;
        }
    }

    for a in state.allocs() {
        if a.may_run() {
            continue;
        }
        let on_gone_node = gone_nodes.contains(a.node_id.as_str());
        // Purged jobs' allocations are left to the orphan sweep (or go
        // with their node).
        let collect = match state.job(&a.job) {
            None => on_gone_node,
            Some(job) => {
                let slot_kept = job
                    .spec
                    .groups
                    .iter()
                    .any(|g| g.name == a.group && a.index < g.count);
                let is_newest = newest
                    .get(&(a.job.as_str(), a.group.as_str(), a.index))
                    .is_some_and(|(_, id)| *id == a.id);
                // The watcher counts an active deployment's allocations,
                // finished ones included (placed, unhealthy).
                let in_rollout = a
                    .deployment_id
                    .as_deref()
                    .and_then(|d| state.deployment(d))
                    .is_some_and(|d| d.is_active());
                // A failed allocation holding its slot stays even when its
                // node goes: without it the failing spec would be placed
                // again.
                let holds_slot = is_newest
                    && slot_kept
                    && (!on_gone_node
                        || (a.desired == DesiredStatus::Run && a.client == ClientStatus::Failed));
                let keep = holds_slot || replaced.contains(a.id.as_str()) || in_rollout;
                (on_gone_node || older(a.modified_at, t.alloc)) && !keep
            }
        };
        if collect {
            writes.push(Write::DeleteAlloc(a.id.clone()));
            report.allocations += 1;
        }
    }

    for e in state.evals() {
        if matches!(e.status, EvalStatus::Pending | EvalStatus::Blocked)
            || !older(e.modified_at, t.eval)
        {
            continue;
        }
        let newest_of_job = state.job(&e.job).is_some()
            && state
                .job_evals(&e.job)
                .iter()
                .max_by_key(|x| (x.create_index, x.modify_index))
                .is_some_and(|x| x.id == e.id);
        if !newest_of_job {
            writes.push(Write::DeleteEval(e.id.clone()));
            report.evaluations += 1;
        }
    }

    for d in state.deployments() {
        if d.is_active() || !older(d.modified_at, t.deployment) || deployed.contains(d.id.as_str())
        {
            continue;
        }
        let newest_of_job = state
            .latest_deployment(&d.job)
            .is_some_and(|l| l.id == d.id);
        if !newest_of_job {
            writes.push(Write::DeleteDeployment(d.id.clone()));
            report.deployments += 1;
        }
    }
    (writes, report)
}

/// Whether a delete `garbage` chose still holds on `state` (what it
/// deletes cannot come back to life, but a node can).
fn still_garbage(state: &State, w: &Write) -> bool {
    match w {
        Write::DeleteNode(id) => state.node_by_id(id).is_some_and(|n| {
            n.status == NodeStatus::Down && state.node_allocs(id).iter().all(|a| !a.may_run())
        }),
        Write::DeleteAlloc(id) => state.alloc(id).is_some_and(|a| !a.may_run()),
        Write::DeleteEval(id) => state
            .eval(id)
            .is_some_and(|e| !matches!(e.status, EvalStatus::Pending | EvalStatus::Blocked)),
        Write::DeleteDeployment(id) => state.deployment(id).is_some_and(|d| !d.is_active()),
        _ => false,
    }
}

/// Collect garbage older than `thresholds` as of `now`.
pub async fn collect(
    core: &Arc<Core>,
    now: UnixMillis,
    thresholds: GcConfig,
) -> Result<GcReport, ServerError> {
    // A walk over every allocation (a million at the benchmark's scale):
    // off the async workers.
    let snapshot = core.store.snapshot();
    // A node that went down shortly before counted in the TTL agents were
    // handed; a restarted server derives that TTL from the nodes it knows.
    // Keep it until every agent has beaten since (even when forced), so a
    // restart right after a collection marks no healthy node down.
    let mut thresholds = thresholds;
    thresholds.node = thresholds
        .node
        .max(core.heartbeats.window(snapshot.nodes_iter().count()));
    let (mut writes, _) = tokio::task::spawn_blocking(move || garbage(&snapshot, now, &thresholds))
        .await
        .map_err(|e| ServerError::Internal(format!("the garbage scan failed: {e}")))?;
    let mut report = GcReport::default();
    let mut nodes = Vec::new();
    while !writes.is_empty() {
        let rest = writes.split_off(writes.len().min(CHUNK));
        let chunk = std::mem::replace(&mut writes, rest);
        // The scan ran on a snapshot: a node may have registered again
        // since. Each delete is checked again on the state it commits on.
        let (_, done) = core
            .write(move |state, _| {
                let chunk: Vec<Write> = chunk
                    .into_iter()
                    .filter(|w| still_garbage(state, w))
                    .collect();
                let done = chunk.clone();
                Ok((chunk, done))
            })
            .await?;
        for w in done {
            match w {
                Write::DeleteAlloc(_) => report.allocations += 1,
                Write::DeleteEval(_) => report.evaluations += 1,
                Write::DeleteDeployment(_) => report.deployments += 1,
                Write::DeleteNode(id) => {
                    report.nodes += 1;
                    nodes.push(id);
                }
                _ => {}
            }
        }
    }
    for n in &nodes {
        core.usage.forget_node(n);
        core.heartbeats.forget(n);
    }
    if report != GcReport::default() {
        tracing::info!(?report, "garbage collected");
    }
    Ok(report)
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
