//! What users do to deployments and versions: promote, fail, pause,
//! resume, revert.

use crate::error::Resource;
use std::sync::Arc;

use corral_scheduler::StateView;
use corral_store::Write;
use corral_types::api::{DeploymentAction, SubmitResponse, SubmittedJob};
use corral_types::{Deployment, DeploymentStatus, EvalTrigger};

use super::watcher::revert_version;
use crate::ServerError;
use crate::core::{Core, now_ms};

/// Apply `action` to the job's newest deployment, in one write with the
/// evaluation that acts on it.
pub async fn act(
    core: &Arc<Core>,
    job: &str,
    action: DeploymentAction,
) -> Result<Deployment, ServerError> {
    let now = now_ms();
    let name = job.to_string();
    let (_, (d, eval)) = core
        .write(move |state, _| {
            let cur = state
                .latest_deployment(&name)
                .ok_or_else(|| ServerError::NotFound {
                    what: crate::error::Resource::DeploymentOfJob,
                    id: name.clone(),
                })?;
            let mut d = (**cur).clone();
            let mut revert = None;
            let not = |what: &str| {
                ServerError::Conflict(format!(
                    "deployment {} of {} version {} is {}: it cannot be {what}",
                    short(&d.id),
                    d.job,
                    d.job_version,
                    d.status
                ))
            };
            match action {
                DeploymentAction::Promote => {
                    if d.status != DeploymentStatus::Running {
                        return Err(not("promoted"));
                    }
                    if d.promoted() {
                        return Err(ServerError::Conflict(format!(
                            "deployment of {} version {} has no canaries waiting for promotion",
                            d.job, d.job_version
                        )));
                    }
                    // As Nomad: promoting unhealthy canaries would stop
                    // the old allocations for nothing that works.
                    let not_ready: Vec<String> = d
                        .groups
                        .iter()
                        .filter(|(_, g)| !g.promoted && g.desired_canaries > 0)
                        .filter(|(name, g)| {
                            let allocs = state.job_allocs(&d.job);
                            let owned = allocs.iter().map(|a| a.as_ref()).filter(|a| {
                                a.group == **name
                                    && a.deployment_id.as_deref() == Some(d.id.as_str())
                            });
                            super::watch::healthy_canaries(owned) < g.desired_canaries
                        })
                        .map(|(name, g)| format!("{name} ({} canaries wanted)", g.desired_canaries))
                        .collect();
                    if !not_ready.is_empty() {
                        return Err(ServerError::Conflict(format!(
                            "the canaries of {} are not all healthy yet: promote once `corral deploy status {}` shows them healthy, or fail the deployment",
                            not_ready.join(", "),
                            d.job
                        )));
                    }
                    for g in d.groups.values_mut() {
                        g.promoted = true;
                        if let Some(by) = g.require_progress_by.as_mut() {
                            *by = g.progress_deadline.after(now);
                        }
                    }
                    d.description = "promoted; rolling out".into();
                }
                DeploymentAction::Fail => {
                    if !d.is_active() {
                        return Err(not("failed"));
                    }
                    // As Nomad: failing by hand also rolls back when the
                    // group asks for auto_revert.
                    d.status = DeploymentStatus::Failed;
                    d.description = "failed by user".into();
                    if d.groups.values().any(|g| g.auto_revert)
                        && let Some(latest) = state.job(&d.job)
                        && latest.version == d.job_version
                    {
                        match super::watch::last_stable(state, latest) {
                            Some(target) => {
                                d.description = format!(
                                    "failed by user; rolling back to version {}",
                                    target.version
                                );
                                revert = Some(revert_version(latest, &target, now));
                            }
                            None => d
                                .description
                                .push_str("; no stable version to roll back to"),
                        }
                    }
                }
                DeploymentAction::Pause => {
                    if d.status != DeploymentStatus::Running {
                        return Err(not("paused"));
                    }
                    d.status = DeploymentStatus::Paused;
                    d.description = "paused by user".into();
                }
                DeploymentAction::Resume => {
                    if d.status != DeploymentStatus::Paused {
                        return Err(not("resumed"));
                    }
                    d.status = DeploymentStatus::Running;
                    d.description = "resumed by user".into();
                    // The deadline does not run while paused.
                    for g in d.groups.values_mut() {
                        if let Some(by) = g.require_progress_by.as_mut() {
                            *by = g.progress_deadline.after(now);
                        }
                    }
                }
            }
            d.modified_at = now;
            let eval = Core::new_eval(&d.job, EvalTrigger::Deployment, now);
            let mut writes = vec![Write::Deployment(d.clone()), Write::Eval(eval.clone())];
            writes.extend(revert.map(Write::Job));
            Ok((writes, (d, eval)))
        })
        .await?;
    core.enqueue([eval]);
    Ok(d)
}

/// Store the spec of `version` as the job's next version.
pub async fn revert(
    core: &Arc<Core>,
    job: &str,
    version: u64,
) -> Result<SubmitResponse, ServerError> {
    let now = now_ms();
    let name = job.to_string();
    let domain = core.config.domain.clone();
    let (index, (submitted, eval)) = core
        .write(move |state, _| {
            let latest = state
                .job(&name)
                .ok_or_else(|| ServerError::not_found(Resource::Job, &name))?;
            let target = state.job_version(&name, version).ok_or_else(|| {
                ServerError::BadRequest(format!(
                    "job {name} has no version {version}; see `corral job history {name}`"
                ))
            })?;
            if target.spec == latest.spec && !latest.stopped {
                return Err(ServerError::Conflict(format!(
                    "job {name} version {} already runs the spec of version {version}",
                    latest.version
                )));
            }
            let job = revert_version(latest, target, now);
            // The old version's names and routes may have been taken by
            // another job since.
            let located = corral_types::spec::LocatedJob {
                spec: job.spec.clone(),
                claims: crate::ops::claims::of_job(&job),
            };
            crate::ops::claims::check(state, std::slice::from_ref(&located), &domain)?;
            let eval = Core::new_eval(&name, EvalTrigger::JobRegister, now);
            let submitted = SubmittedJob {
                name: name.clone(),
                version: job.version,
                changed: true,
                eval_id: eval.id.clone(),
            };
            Ok((
                vec![Write::Job(job), Write::Eval(eval.clone())],
                (submitted, eval),
            ))
        })
        .await?;
    core.enqueue([eval]);
    Ok(SubmitResponse {
        index,
        jobs: vec![submitted],
    })
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Set an allocation's deployment health by hand (`health_check: manual`,
/// or overriding the agent before it decided). Decided once, like the
/// agent's verdict.
pub async fn set_health(
    core: &Arc<Core>,
    alloc: &str,
    healthy: bool,
) -> Result<corral_types::Allocation, ServerError> {
    let now = now_ms();
    let id = alloc.to_string();
    let (_, (a, eval)) = core
        .write(move |state, _| {
            let cur = state
                .alloc(&id)
                .ok_or_else(|| ServerError::not_found(Resource::Allocation, &id))?;
            let Some(dep) = cur
                .deployment_id
                .as_deref()
                .and_then(|d| state.deployment(d))
            else {
                return Err(ServerError::Conflict(format!(
                    "allocation {} was not placed by a deployment: its health is not tracked",
                    cur.name()
                )));
            };
            if !dep.is_active() {
                return Err(ServerError::Conflict(format!(
                    "the deployment of allocation {} is {}: health can no longer change it",
                    cur.name(),
                    dep.status
                )));
            }
            if let Some(h) = &cur.health {
                return Err(ServerError::Conflict(format!(
                    "allocation {} is already {}",
                    cur.name(),
                    if h.healthy { "healthy" } else { "unhealthy" }
                )));
            }
            let mut a = (**cur).clone();
            a.health = Some(corral_types::AllocHealth {
                healthy,
                at: now,
                message: if healthy {
                    String::new()
                } else {
                    "marked unhealthy by user".into()
                },
            });
            a.modified_at = now;
            let eval = Core::new_eval(&a.job, EvalTrigger::Deployment, now);
            Ok((
                vec![Write::Alloc(a.clone()), Write::Eval(eval.clone())],
                (a, eval),
            ))
        })
        .await?;
    core.enqueue([eval]);
    Ok(a)
}
