//! Job operations shared by the HTTP handlers and in-process callers.

use crate::error::Resource;
use std::sync::Arc;

use corral_store::{State, Write};
use corral_types::api::{SubmitResponse, SubmittedJob};
use corral_types::spec::LocatedJob;
use corral_types::{DesiredStatus, EvalTrigger, Index, Job, JobSpec};

use crate::ServerError;
use crate::core::{Core, now_ms};

/// Store the new versions of `specs` and their evaluations in one
/// transaction (all or nothing), then queue the evaluations.
pub async fn submit(
    core: &Arc<Core>,
    jobs: Vec<impl Into<LocatedJob> + Send + 'static>,
) -> Result<SubmitResponse, ServerError> {
    let now = now_ms();
    let jobs: Vec<LocatedJob> = jobs.into_iter().map(Into::into).collect();
    let domain = core.config.domain.clone();
    let targets = core.config.backup_targets.clone();
    let (index, jobs) = core
        .write(move |state, _| {
            // Checked inside the write: two submissions racing for one
            // route cannot both pass.
            super::claims::check(state, &jobs, &domain)?;
            super::volumes::check(state, &jobs, &targets)?;
            let mut writes = Vec::new();
            let mut out = Vec::new();
            for LocatedJob { spec, claims } in jobs {
                let latest = state.job(&spec.name);
                let (version, unchanged) = next_version(latest.map(|j| &**j), &spec);
                let eval = Core::new_eval(&spec.name, EvalTrigger::JobRegister, now);
                out.push((
                    SubmittedJob {
                        name: spec.name.clone(),
                        version,
                        changed: !unchanged,
                        eval_id: eval.id.clone(),
                    },
                    eval.clone(),
                ));
                if latest.is_none() {
                    // Allocations of an earlier job of this name (purged,
                    // maybe before its allocations were even told to stop)
                    // must not pass for the new job's: the finished ones
                    // go, the others stop (maintenance deletes them once
                    // they have).
                    writes.extend(forget_finished(state, &spec.name));
                    for a in state.job_allocs(&spec.name) {
                        if a.may_run() && a.desired != DesiredStatus::Stop {
                            let mut a = (**a).clone();
                            a.desired = DesiredStatus::Stop;
                            a.desired_reason = "its job was purged".into();
                            a.modified_at = now;
                            writes.push(Write::Alloc(a));
                        }
                    }
                }
                if !unchanged {
                    let mut job = new_version(spec, version, now);
                    job.claims = claims;
                    writes.push(Write::Job(job));
                }
                writes.push(Write::Eval(eval));
            }
            Ok::<_, ServerError>((writes, out))
        })
        .await?;
    let (jobs, evals): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    core.enqueue(evals);
    Ok(SubmitResponse { index, jobs })
}

/// The version a submitted spec gets, and whether it is unchanged: the
/// latest version again when the spec is the same and the job runs, else
/// one more (a stopped job submitted again is a new version).
pub(crate) fn next_version(latest: Option<&Job>, spec: &JobSpec) -> (u64, bool) {
    let unchanged = latest.is_some_and(|j| &j.spec == spec && !j.stopped);
    let version = match latest {
        Some(j) if unchanged => j.version,
        Some(j) => j.version + 1,
        None => 1,
    };
    (version, unchanged)
}

/// A new version of a job, as submitted at `now`.
pub(crate) fn new_version(spec: JobSpec, version: u64, now: u64) -> Job {
    Job {
        name: spec.name.clone(),
        version,
        spec,
        stopped: false,
        stable: false,
        reverts_to: None,
        submitted_at: now,
        claims: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// Deletes of the allocations of job `name` that can no longer run.
fn forget_finished(state: &State, name: &str) -> Vec<Write> {
    state
        .job_allocs(name)
        .into_iter()
        .filter(|a| !a.may_run())
        .map(|a| Write::DeleteAlloc(a.id.clone()))
        .collect()
}

/// Stop (keep the job and its history) or purge (forget every version);
/// either way an evaluation stops its allocations.
pub async fn stop(
    core: &Arc<Core>,
    name: &str,
    purge: bool,
) -> Result<(Index, String), ServerError> {
    let now = now_ms();
    let n = name.to_string();
    let (index, eval) = core
        .write(move |state, _| {
            let Some(job) = state.job(&n) else {
                return Err(ServerError::not_found(Resource::Job, &n));
            };
            let eval = Core::new_eval(&n, EvalTrigger::JobDeregister, now);
            let mut writes = Vec::new();
            if purge {
                writes.push(Write::PurgeJob(n.clone()));
                // What already finished goes with the job; what still
                // stops is deleted by maintenance once it has.
                writes.extend(forget_finished(state, &n));
            } else if !job.stopped {
                let mut j = (**job).clone();
                j.stopped = true;
                writes.push(Write::Job(j));
            }
            writes.push(Write::Eval(eval.clone()));
            Ok((writes, eval))
        })
        .await?;
    let eval_id = eval.id.clone();
    core.enqueue([eval]);
    Ok((index, eval_id))
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
