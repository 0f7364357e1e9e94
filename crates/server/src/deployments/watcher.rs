//! The deployment watcher: after every commit (and once a second, for
//! deadlines) it judges each running deployment against the latest state
//! and commits what changed in the same write that read it.

use std::sync::Arc;
use std::time::Duration;

use corral_scheduler::StateView;
use corral_store::{State, Write};
use corral_types::{Deployment, EvalTrigger, Evaluation, Index, Job, UnixMillis};

use super::judge;
use crate::ServerError;
use crate::core::{Core, now_ms};

pub async fn run(core: Arc<Core>) {
    let mut index = core.index.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Deployments whose job did not change since this index and whose
    // deadlines have not passed need no new look.
    let mut seen: Index = 0;
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            r = index.changed() => if r.is_err() { return },
        }
        // Let a burst of commits (a big rollout) settle into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Nothing to judge: no write at all.
        let snap = core.store.snapshot();
        let now = now_ms();
        if !snap.deployments().any(|d| d.is_active())
            && !snap.jobs().any(|j| settled(&snap, j, now))
        {
            continue;
        }
        let since = seen;
        match core
            .write(move |state, _| Ok::<_, ServerError>(pass(state, since, now)))
            .await
        {
            Ok((_, evals)) => {
                // Only once judged and committed: a failed write looks again.
                seen = snap.index();
                core.enqueue(evals);
            }
            Err(e) => tracing::warn!(error = %e, "deployment watcher: write failed"),
        }
    }
}

/// One pass over the running deployments: the writes and the evaluations
/// they create.
pub(crate) fn pass(state: &State, since: Index, now: UnixMillis) -> (Vec<Write>, Vec<Evaluation>) {
    let mut writes = Vec::new();
    let mut evals = Vec::new();
    let running: Vec<_> = state
        .deployments()
        .filter(|d| d.is_active() && (changed(state, d, since) || deadline_passed(d, now)))
        .cloned()
        .collect();
    for d in running {
        let Some(v) = judge(state, &d, now) else {
            continue;
        };
        if v.deployment == *d {
            continue;
        }
        if v.stable
            && let Some(job) = state.job_version(&d.job, d.job_version)
        {
            let mut job = job.clone();
            job.stable = true;
            writes.push(Write::Job(job));
        }
        if let Some(target) = &v.revert_to
            && let Some(latest) = state.job(&d.job)
        {
            writes.push(Write::Job(revert_version(latest, target, now)));
        }
        if v.reschedule || v.revert_to.is_some() {
            evals.push(Core::new_eval(&d.job, EvalTrigger::Deployment, now));
        }
        writes.push(Write::Deployment(v.deployment));
    }
    for j in state.jobs().filter(|j| settled(state, j, now)) {
        let mut j = (**j).clone();
        j.stable = true;
        writes.push(Write::Job(j));
    }
    writes.extend(evals.iter().cloned().map(Write::Eval));
    (writes, evals)
}

fn changed(state: &State, d: &Deployment, since: Index) -> bool {
    d.modify_index > since
        || state.job(&d.job).is_none_or(|j| j.modify_index > since)
        || state
            .job_allocs(&d.job)
            .iter()
            .any(|a| a.modify_index > since)
}

fn deadline_passed(d: &Deployment, now: UnixMillis) -> bool {
    d.groups
        .values()
        .any(|g| g.require_progress_by.is_some_and(|by| now > by))
}

/// A version rolled out without a deployment (a version that ran before, or
/// `max_parallel: 0`) becomes stable once every slot runs it, each task
/// for the group's `min_healthy_time` (a task that crashes a second after
/// it starts is no fix), and nothing older is left.
fn settled(state: &State, j: &Job, now: UnixMillis) -> bool {
    if j.stable || j.stopped {
        return false;
    }
    if state
        .job_deployments(&j.name)
        .iter()
        .any(|d| d.job_version == j.version)
    {
        return false;
    }
    let allocs = state.job_allocs(&j.name);
    // Older allocations told to stop count until their agent says they did.
    if allocs
        .iter()
        .any(|a| a.may_run() && a.job_version != j.version)
    {
        return false;
    }
    j.spec.groups.iter().all(|g| {
        let running = allocs
            .iter()
            .filter(|a| {
                a.group == g.name
                    && a.is_live()
                    && a.index < g.count
                    && a.client == corral_types::ClientStatus::Running
                    && g.tasks.iter().all(|t| {
                        a.tasks.get(&t.name).is_some_and(|ts| {
                            ts.state == corral_types::TaskLifecycle::Running
                                && ts.started_at.is_some_and(|s| {
                                    now.saturating_sub(s) >= g.update.min_healthy_time.0
                                })
                        })
                    })
            })
            .count();
        running >= g.count as usize
    })
}

/// The next version of `latest` carrying `target`'s spec.
pub(crate) fn revert_version(latest: &Job, target: &Job, now: UnixMillis) -> Job {
    Job {
        name: latest.name.clone(),
        version: latest.version + 1,
        spec: target.spec.clone(),
        stopped: false,
        stable: false,
        reverts_to: Some(target.version),
        submitted_at: now,
        claims: target.claims.clone(),
        create_index: 0,
        modify_index: 0,
    }
}
