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
use corral_types::{
    Allocation, ClientStatus, DeploymentStatus, DesiredStatus, EvalStatus, Evaluation, Plan,
    PlanResult,
};
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
    // The job was purged (and maybe submitted again) or got a new version
    // after the plan's snapshot: what the plan places or starts belongs to
    // a job that is gone or moved on. Its nodes are refused (the worker
    // plans again on the newer state) and it creates nothing; its stops
    // still hold.
    //
    // Likewise when the user stopped the job, or paused or failed the
    // deployment the placements belong to, after the snapshot: the plan
    // would start what they just stopped. (A deployment the plan itself
    // creates is not in the state yet.)
    let stale = match state.job(&plan.job) {
        None => Some("the job was purged since the plan's snapshot"),
        Some(j) if j.create_index > plan.snapshot_index => {
            Some("the job changed since the plan's snapshot")
        }
        Some(j) if j.stopped && !plan.place.is_empty() => {
            Some("the job was stopped since the plan's snapshot")
        }
        Some(_) => plan
            .place
            .iter()
            .filter_map(|a| a.deployment_id.as_deref())
            .filter_map(|d| state.deployment(d))
            .any(|d| d.status != DeploymentStatus::Running && d.modify_index > plan.snapshot_index)
            .then_some("its deployment was paused or ended since the plan's snapshot"),
    };
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
    // A replacement that is refused keeps the allocation it would replace,
    // so the room it frees is not free after all: nodes that counted on it
    // are checked again, until no more is refused.
    let mut keep: Vec<&str> = Vec::new();
    let mut refused: std::collections::BTreeSet<&str> = Default::default();
    loop {
        let before = refused.len();
        for (node_id, allocs) in &by_node {
            if refused.contains(node_id) {
                continue;
            }
            let removed: Vec<&str> = stopped_on
                .get(node_id)
                .into_iter()
                .flatten()
                .copied()
                .filter(|id| !keep.contains(id))
                .collect();
            let verdict = match (stale, state.node_by_id(node_id)) {
                (Some(why), _) => Err(why.to_string()),
                (None, None) => Err(format!("node {node_id} is gone")),
                (None, Some(node)) => corral_scheduler::fits(state, node, allocs, &removed),
            };
            if let Err(reason) = verdict {
                tracing::debug!(node = %node_id, %reason, "plan refused for node");
                refused.insert(node_id);
                keep.extend(allocs.iter().filter_map(|a| a.previous.as_deref()));
            }
        }
        if refused.len() == before {
            break;
        }
    }
    let mut accepted: Vec<&Allocation> = Vec::new();
    for (node_id, allocs) in &by_node {
        if refused.contains(node_id) {
            result.refused_nodes.push(node_id.to_string());
        } else {
            accepted.extend(allocs.iter().copied());
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
    for u in plan.in_place.iter().filter(|_| stale.is_none()) {
        if let Some(cur) = state.alloc(&u.id) {
            let mut a = (**cur).clone();
            u.apply_to(&mut a);
            a.modified_at = now;
            writes.push(Write::Alloc(a));
        }
    }
    for d in &plan.deployments {
        match state.deployment(&d.id) {
            None if stale.is_some() => {}
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
    // This evaluation reconciled the whole job: a blocked one of the same
    // job waits for nothing any more (the broker already dropped it from
    // memory). Without this it stayed `blocked` in the store, and came
    // back after a restart.
    for old in state.job_evals(&eval.job) {
        if old.status == EvalStatus::Blocked && old.id != eval.id {
            let mut old = (**old).clone();
            old.status = EvalStatus::Canceled;
            old.status_description = format!("superseded by evaluation {}", eval.id);
            old.modified_at = now;
            writes.push(Write::Eval(old));
        }
    }
    eval.modified_at = now;
    writes.push(Write::Eval(eval));
    (writes, result)
}

#[cfg(test)]
mod tests {
    use corral_scheduler::testing::{alloc, group, job, node};
    use corral_store::{MemoryStore, StateStore, Write};
    use corral_types::{Plan, StopAlloc};

    use super::evaluate;

    /// Old allocation `o` fills node b; the plan replaces it by `r1` on
    /// node a and puts a fresh `r2` on b in its room. Node a filled up
    /// meanwhile, so `r1` is refused and `o` stays: then `r2` no longer
    /// fits on b either, and the partial commit must not overcommit b.
    #[test]
    fn a_refused_replacement_keeps_the_room_others_counted_on() {
        let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
        let j = job("web", 1, vec![group("web", 2).cpu(1000).build()]);
        let o = alloc("o", &j, "web", 0, "b");
        let x = alloc("x", &j, "web", 1, "a");
        s.commit(vec![
            Write::Node(node("a").cpu(1000).build()),
            Write::Node(node("b").cpu(1000).build()),
            Write::Job(j.clone()),
            Write::Alloc(o.clone()),
            Write::Alloc(x),
        ])
        .unwrap();
        let mut r1 = alloc("r1", &j, "web", 0, "a");
        r1.previous = Some("o".into());
        let r2 = alloc("r2", &j, "web", 1, "b");
        let plan = Plan {
            eval_id: "e1".into(),
            job: "web".into(),
            snapshot_index: s.snapshot().index(),
            place: vec![r1, r2],
            stop: vec![StopAlloc {
                id: "o".into(),
                reason: "updated".into(),
                client: None,
            }],
            in_place: vec![],
            failed: vec![],
            deployments: vec![],
            wake_at: None,
        };
        let eval = pending_eval();
        let (writes, result) = evaluate(&s.snapshot(), &plan, eval, 1, true);
        assert_eq!(result.refused_nodes, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(result.placed, 0);
        assert_eq!(result.stopped, 0);
        // Only the evaluation is written.
        assert_eq!(writes.len(), 1, "{writes:?}");
    }

    /// A plan worked out before its job was purged, or purged and
    /// submitted again, creates nothing: no allocation, no deployment.
    #[test]
    fn a_plan_for_a_job_purged_since_its_snapshot_creates_nothing() {
        let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
        let j = job("web", 1, vec![group("web", 1).build()]);
        s.commit(vec![Write::Node(node("a").build()), Write::Job(j.clone())])
            .unwrap();
        let snapshot = s.snapshot();
        let d = corral_scheduler::deployment::new_deployment(&j, &[], "d1".into(), None, 1);
        let plan = Plan {
            eval_id: "e1".into(),
            job: "web".into(),
            snapshot_index: snapshot.index(),
            place: vec![alloc("p", &j, "web", 0, "a")],
            deployments: vec![d],
            ..Plan::default()
        };
        // Still current: it all goes in.
        let (writes, result) = evaluate(&snapshot, &plan, pending_eval(), 1, false);
        assert_eq!(result.placed, 1);
        assert_eq!(writes.len(), 3, "{writes:?}");
        // Purged, then submitted again (a new version 1).
        s.commit(vec![Write::PurgeJob("web".into())]).unwrap();
        s.commit(vec![Write::Job(j.clone())]).unwrap();
        for last in [false, true] {
            let (writes, result) = evaluate(&s.snapshot(), &plan, pending_eval(), 1, last);
            assert_eq!(result.placed, 0);
            assert_eq!(result.refused_nodes, vec!["a".to_string()]);
            assert!(
                writes.iter().all(|w| matches!(w, Write::Eval(_))),
                "last attempt {last}: {writes:?}"
            );
        }
        // Purged and gone.
        s.commit(vec![Write::PurgeJob("web".into())]).unwrap();
        let (writes, _) = evaluate(&s.snapshot(), &plan, pending_eval(), 1, true);
        assert!(
            writes.iter().all(|w| matches!(w, Write::Eval(_))),
            "{writes:?}"
        );
    }

    /// A plan computed before `corral stop`, `deploy pause` or `deploy
    /// fail` places nothing; the same plan on an unchanged state places.
    #[test]
    fn a_plan_from_before_a_stop_or_a_pause_places_nothing() {
        use corral_types::DeploymentStatus;
        let setup = || {
            let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
            let v1 = job("web", 1, vec![group("web", 2).build()]);
            let mut v2 = job("web", 2, vec![group("web", 2).env("V", "2").build()]);
            v2.spec.groups[0].update.max_parallel = 1;
            let d = corral_scheduler::deployment::new_deployment(&v2, &[], "d2".into(), None, 1);
            s.commit(vec![
                Write::Node(node("a").build()),
                Write::Job(v1),
                Write::Job(v2.clone()),
                Write::Deployment(d.clone()),
            ])
            .unwrap();
            let mut p = alloc("p", &v2, "web", 0, "a");
            p.deployment_id = Some("d2".into());
            let plan = Plan {
                eval_id: "e1".into(),
                job: "web".into(),
                snapshot_index: s.snapshot().index(),
                place: vec![p],
                ..Plan::default()
            };
            (s, v2, d, plan)
        };
        let placed = |s: &StateStore, plan: &Plan| {
            let (writes, result) = evaluate(&s.snapshot(), plan, pending_eval(), 1, true);
            let allocs = writes
                .iter()
                .filter(|w| matches!(w, Write::Alloc(_)))
                .count();
            assert_eq!(allocs, result.placed);
            result.placed
        };

        // Ordinary: the deployment still runs, the counters moved on.
        let (s, _, mut d, plan) = setup();
        d.groups.values_mut().for_each(|g| g.healthy += 1);
        s.commit(vec![Write::Deployment(d)]).unwrap();
        assert_eq!(placed(&s, &plan), 1);

        for status in [DeploymentStatus::Paused, DeploymentStatus::Failed] {
            let (s, _, mut d, plan) = setup();
            d.status = status;
            s.commit(vec![Write::Deployment(d)]).unwrap();
            assert_eq!(placed(&s, &plan), 0, "deployment {status}");
        }

        let (s, mut v2, _, plan) = setup();
        v2.stopped = true;
        s.commit(vec![Write::Job(v2)]).unwrap();
        assert_eq!(placed(&s, &plan), 0, "job stopped");
    }

    /// A blocked evaluation is superseded by the next one of its job that
    /// commits: it is cancelled in the same transaction, not left
    /// `blocked` in the store until a restart brings it back.
    #[test]
    fn a_newer_evaluation_cancels_the_blocked_one() {
        let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
        let j = job("web", 1, vec![group("web", 1).build()]);
        let mut blocked = pending_eval();
        blocked.status = corral_types::EvalStatus::Blocked;
        let other = crate::core::Core::new_eval("db", corral_types::EvalTrigger::JobRegister, 1);
        let mut other_blocked = other.clone();
        other_blocked.status = corral_types::EvalStatus::Blocked;
        s.commit(vec![
            Write::Job(j),
            Write::Eval(blocked.clone()),
            Write::Eval(other_blocked),
        ])
        .unwrap();
        let plan = Plan {
            eval_id: "e2".into(),
            job: "web".into(),
            snapshot_index: s.snapshot().index(),
            ..Plan::default()
        };
        let newer = pending_eval();
        let (writes, _) = evaluate(&s.snapshot(), &plan, newer.clone(), 7, false);
        s.commit(writes).unwrap();
        let snap = s.snapshot();
        let old = snap.eval(&blocked.id).unwrap();
        assert_eq!(old.status, corral_types::EvalStatus::Canceled);
        assert!(old.status_description.contains(&newer.id));
        // Another job's blocked evaluation is not this one's business, and
        // an evaluation re-run after being unblocked does not cancel itself.
        assert_eq!(
            snap.eval(&other.id).unwrap().status,
            corral_types::EvalStatus::Blocked
        );
        let mut again = other.clone();
        again.status = corral_types::EvalStatus::Blocked;
        let plan = Plan {
            job: "db".into(),
            ..plan
        };
        let (writes, _) = evaluate(&snap, &plan, again, 8, false);
        assert_eq!(writes.len(), 1, "{writes:?}");
    }

    fn pending_eval() -> corral_types::Evaluation {
        crate::core::Core::new_eval("web", corral_types::EvalTrigger::JobRegister, 1)
    }
}
