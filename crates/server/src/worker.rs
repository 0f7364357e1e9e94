//! Scheduler workers: take an evaluation, compute a plan on an immutable
//! snapshot with the pure scheduler, hand it to the plan applier, and try
//! again on fresher state when the applier refused part of it.

use std::sync::Arc;

use corral_scheduler::PlanContext;
use corral_store::Write;
use corral_types::{EvalStatus, EvalTrigger, Evaluation};
use tokio::sync::oneshot;

use crate::applier::PlanRequest;
use crate::core::{Core, new_id, now_ms};
use crate::metrics::EvalOutcome;

/// How often a worker re-plans after the applier refused nodes (the state
/// moved under it) before it leaves the rest to a blocked evaluation.
const MAX_ATTEMPTS: usize = 5;

pub async fn run(core: Arc<Core>, worker: usize) {
    while let Some(eval) = core.broker.dequeue().await {
        let job = eval.job.clone();
        let id = eval.id.clone();
        let taken = std::time::Instant::now();
        if let Err(e) = process(&core, eval).await {
            tracing::error!(worker, job = %job, error = %e, "evaluation failed");
            core.metrics.eval_done(EvalOutcome::Failed);
        }
        core.metrics.eval_processing.observe(taken.elapsed());
        if let Some(waited) = core.broker.ack(&job, &id) {
            core.metrics.eval_latency.observe(waited);
        }
        core.metrics
            .evals_processed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn process(core: &Arc<Core>, mut eval: Evaluation) -> Result<(), crate::ServerError> {
    let job = eval.job.clone();
    for attempt in 1..=MAX_ATTEMPTS {
        let snapshot = core.store.snapshot();
        let now = now_ms();
        let plan = {
            let mut next_id = new_id;
            let mut ctx = PlanContext {
                new_id: &mut next_id,
                now,
            };
            corral_scheduler::schedule(snapshot.as_ref(), &eval, &mut ctx)
        };
        let last = attempt == MAX_ATTEMPTS;
        let wake_at = plan.wake_at;
        let (tx, rx) = oneshot::channel();
        let failed = plan.failed.clone();
        eval.modified_at = now;
        eval.snapshot_index = snapshot.index();
        eval.failed_placements = failed.clone();
        eval.status = if failed.is_empty() {
            EvalStatus::Complete
        } else {
            EvalStatus::Blocked
        };
        eval.status_description = if failed.is_empty() {
            String::new()
        } else {
            "waiting for capacity: retried when nodes or resources change".into()
        };
        core.applier
            .send(PlanRequest {
                plan,
                eval: eval.clone(),
                // On the last attempt the applier commits what fits and
                // blocks the evaluation for the rest.
                partial_ok: last,
                reply: tx,
            })
            .await
            .map_err(|_| crate::ServerError::ShuttingDown)?;
        let result = rx.await.map_err(|_| crate::ServerError::ShuttingDown)??;
        if result.refused_nodes.is_empty() || last {
            if !result.refused_nodes.is_empty() {
                // The state kept moving under this evaluation (other plans
                // took the room it chose). What was refused gets a fresh
                // evaluation now: blocking would wait for a capacity change
                // that may never come, as there is room elsewhere.
                let follow = Core::new_eval(&eval.job, EvalTrigger::Retry, now_ms());
                core.commit(vec![Write::Eval(follow.clone())]).await?;
                core.enqueue([follow]);
                core.metrics.eval_done(EvalOutcome::Retried);
            } else if eval.status == EvalStatus::Blocked {
                core.broker.block(eval);
                core.metrics.eval_done(EvalOutcome::Blocked);
            } else {
                core.metrics.eval_done(EvalOutcome::Complete);
            }
            if let Some(at) = wake_at {
                wake_later(core, &job, at).await?;
            }
            return Ok(());
        }
        tracing::debug!(attempt, refused = ?result.refused_nodes, "plan partly refused; re-planning");
    }
    Ok(())
}

/// The job needs another look at `at` (a reschedule delay ends): an
/// evaluation stored now and held by the broker until then, unless one
/// is held already for that time or earlier (which looks again anyway).
async fn wake_later(
    core: &Arc<Core>,
    job: &str,
    at: corral_types::UnixMillis,
) -> Result<(), crate::ServerError> {
    if core.broker.delayed_until(job).is_some_and(|t| t <= at) {
        return Ok(());
    }
    let mut e = Core::new_eval(job, EvalTrigger::Reschedule, now_ms());
    e.wait_until = Some(at);
    core.commit(vec![Write::Eval(e.clone())]).await?;
    core.enqueue([e]);
    Ok(())
}
