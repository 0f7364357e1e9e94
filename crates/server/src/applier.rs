//! The one plan applier. Workers plan on snapshots that may be stale; each
//! plan is re-checked, node by node, against the latest state (resources,
//! ports, node still schedulable) and committed with the evaluation's new
//! status in one transaction: optimistic concurrency, as Nomad's
//! plan_apply.go does.
//!
//! The re-check runs inside the store's single writer, one plan after the
//! other, each on the state including every plan before it. The loop does
//! not wait for one plan's fsync before handing over the next (Nomad
//! pipelines the same way), so plans that arrive together share a commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_store::{State, Write};
use corral_types::{Allocation, ClientStatus, DesiredStatus, Evaluation, Plan, PlanResult};
use tokio::sync::{mpsc, oneshot};

use crate::ServerError;
use crate::core::{Core, now_ms};

pub struct PlanRequest {
    pub plan: Plan,
    pub eval: Evaluation,
    /// Commit the parts that fit even if some nodes were refused.
    pub partial_ok: bool,
    pub reply: oneshot::Sender<Result<PlanResult, ServerError>>,
}

/// Plans whose commit may be in flight at once.
const IN_FLIGHT: usize = 32;

pub async fn run(core: Arc<Core>, mut rx: mpsc::Receiver<PlanRequest>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let req = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = core.shutdown.cancelled() => break,
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let core = core.clone();
        inflight.spawn(async move {
            let started = std::time::Instant::now();
            let result = apply(&core, req.plan, req.eval, req.partial_ok).await;
            core.metrics.plan_apply.observe(started.elapsed());
            if let Ok(r) = &result {
                use std::sync::atomic::Ordering::Relaxed;
                core.metrics.placements.fetch_add(r.placed as u64, Relaxed);
                if !r.refused_nodes.is_empty() {
                    core.metrics.plans_refused.fetch_add(1, Relaxed);
                }
            }
            let _ = req.reply.send(result);
            drop(permit);
        });
        // Reap finished ones so the set stays small.
        while inflight.try_join_next().is_some() {}
    }
    // Commits already started finish; their workers get their answers.
    while inflight.join_next().await.is_some() {}
}

async fn apply(
    core: &Arc<Core>,
    plan: Plan,
    eval: Evaluation,
    partial_ok: bool,
) -> Result<PlanResult, ServerError> {
    let now = now_ms();
    let (index, mut result) = core
        .write(move |state, _index| {
            Ok::<_, ServerError>(evaluate(state, &plan, eval, now, partial_ok))
        })
        .await?;
    result.index = index;
    if result.stopped > 0 {
        core.capacity_changed();
    }
    Ok(result)
}

/// Decide what of `plan` still holds on `state`; pure, so it is tested
/// without a store.
pub fn evaluate(
    state: &State,
    plan: &Plan,
    mut eval: Evaluation,
    now: u64,
    partial_ok: bool,
) -> (Vec<Write>, PlanResult) {
    let mut result = PlanResult::default();
    let mut by_node: BTreeMap<&str, Vec<&Allocation>> = BTreeMap::new();
    for a in &plan.place {
        by_node.entry(a.node_id.as_str()).or_default().push(a);
    }
    // What the plan stops, by node: each node's re-check looks at its own.
    let mut stopped_on: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &plan.stop {
        if let Some(a) = state.alloc(&s.id) {
            stopped_on
                .entry(a.node_id.as_str())
                .or_default()
                .push(s.id.as_str());
        }
    }
    let mut writes = Vec::new();
    let mut accepted: Vec<&Allocation> = Vec::new();
    // A replacement that is refused keeps the allocation it would replace.
    let mut keep: Vec<&str> = Vec::new();
    for (node_id, allocs) in &by_node {
        let verdict = match state.node_by_id(node_id) {
            None => Err(format!("node {node_id} is gone")),
            Some(node) => corral_scheduler::fits(
                state,
                node,
                allocs,
                stopped_on.get(node_id).map_or(&[][..], Vec::as_slice),
            ),
        };
        match verdict {
            Ok(()) => accepted.extend(allocs.iter().copied()),
            Err(reason) => {
                tracing::debug!(node = %node_id, %reason, "plan refused for node");
                result.refused_nodes.push(node_id.to_string());
                keep.extend(allocs.iter().filter_map(|a| a.previous.as_deref()));
            }
        }
    }
    if !result.refused_nodes.is_empty() && !partial_ok {
        // Nothing of this plan is committed: the worker re-plans on the
        // newer state (the eval stays pending).
        return (Vec::new(), result);
    }
    for a in accepted {
        writes.push(Write::Alloc(a.clone()));
        result.placed += 1;
    }
    for s in &plan.stop {
        let Some(cur) = state.alloc(&s.id) else {
            continue;
        };
        // Lost allocations are stopped whatever happens to their
        // replacement: their node is gone.
        if keep.contains(&s.id.as_str()) && s.client.is_none() {
            continue;
        }
        let mut a = (**cur).clone();
        if a.desired == DesiredStatus::Stop && s.client.is_none() {
            continue;
        }
        a.desired = DesiredStatus::Stop;
        a.desired_reason = s.reason.clone();
        if let Some(c) = s.client
            && !a.client.is_terminal()
        {
            a.client = c;
            if c == ClientStatus::Lost {
                a.client_message = "node down: allocation lost".into();
            }
        }
        a.modified_at = now;
        writes.push(Write::Alloc(a));
        result.stopped += 1;
    }
    for (id, version) in &plan.in_place {
        if let Some(cur) = state.alloc(id) {
            let mut a = (**cur).clone();
            a.job_version = *version;
            a.modified_at = now;
            writes.push(Write::Alloc(a));
        }
    }
    for d in &plan.deployments {
        match state.deployment(&d.id) {
            None => writes.push(Write::Deployment(d.clone())),
            // Ending one (superseded, job stopped): only if nobody ended it
            // first, and keeping the watcher's counters.
            Some(cur) if cur.is_active() && cur.status != d.status => {
                let mut cur = (**cur).clone();
                cur.status = d.status;
                cur.description = d.description.clone();
                cur.modified_at = now;
                writes.push(Write::Deployment(cur));
            }
            Some(_) => {}
        }
    }
    eval.modified_at = now;
    writes.push(Write::Eval(eval));
    (writes, result)
}
