//! The watcher's decision for one deployment, a pure function of the state
//! so it is tested without a server.

use corral_store::State;
use corral_types::{Allocation, Deployment, DeploymentStatus, Job, UnixMillis};

/// What should happen to one active deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The deployment as it should be stored (counters, status,
    /// description); equal to the current one when nothing changed.
    pub deployment: Deployment,
    /// The job's allocations need another scheduling pass (promotion,
    /// failure).
    pub reschedule: bool,
    /// The version to roll back to (its spec becomes a new version).
    pub revert_to: Option<Job>,
    /// The job version became stable.
    pub stable: bool,
}

/// Judge `d` against the latest state at `now`.
pub fn judge(state: &State, d: &Deployment, now: UnixMillis) -> Option<Verdict> {
    let paused = d.status == DeploymentStatus::Paused;
    if d.status != DeploymentStatus::Running && !paused {
        return None;
    }
    let job = state.job(&d.job)?;
    // A newer version or a stop: the scheduler cancels it.
    if job.version != d.job_version || job.stopped {
        return None;
    }
    let allocs = state.job_allocs(&d.job);
    let mut next = d.clone();
    let mut reschedule = false;
    let mut failure: Option<String> = None;
    let mut all_done = true;
    let mut waiting_promotion = Vec::new();
    for (name, g) in next.groups.iter_mut() {
        let Some(spec) = job.spec.groups.iter().find(|x| &x.name == name) else {
            continue;
        };
        let owned: Vec<&Allocation> = allocs
            .iter()
            .map(|a| a.as_ref())
            .filter(|a| a.group == *name && a.deployment_id.as_deref() == Some(d.id.as_str()))
            .collect();
        // Healthy: live allocations of this version whose health is proven
        // (by this deployment, or by an earlier one for allocations it
        // adopted in place), or that run and were never under a deployment.
        // An allocation an earlier rollout left undecided is not healthy.
        // Slots, not allocations: a migration briefly runs two copies.
        let healthy = allocs
            .iter()
            .filter(|a| {
                a.group == *name
                    && a.is_live()
                    && a.job_version == d.job_version
                    && a.index < spec.count
            })
            .filter(|a| {
                a.is_healthy()
                    || (a.deployment_id.is_none()
                        && a.client == corral_types::ClientStatus::Running)
            })
            .map(|a| a.index)
            .collect::<std::collections::BTreeSet<u32>>()
            .len() as u32;
        // Done means the group runs this version only: an older allocation
        // still running (a drained or replaced one not stopped yet) keeps
        // the deployment open.
        let older_running = allocs
            .iter()
            .any(|a| a.group == *name && a.job_version != d.job_version && a.may_run());
        g.placed = owned.len() as u32;
        g.unhealthy = owned.iter().filter(|a| a.is_unhealthy()).count() as u32;
        // A canary moved off a draining node is replaced, not one more.
        g.placed_canaries = owned
            .iter()
            .filter(|a| a.canary && a.desired == corral_types::DesiredStatus::Run)
            .map(|a| a.id.clone())
            .collect();
        if healthy > g.healthy
            && let Some(by) = g.require_progress_by.as_mut()
        {
            *by = g.progress_deadline.after(now);
        }
        g.healthy = healthy;
        if let Some(bad) = owned
            .iter()
            .find(|a| a.is_unhealthy() && a.desired == corral_types::DesiredStatus::Run)
        {
            let why = bad
                .health
                .as_ref()
                .map(|h| h.message.as_str())
                .unwrap_or_default();
            failure.get_or_insert_with(|| format!("allocation {} is unhealthy: {why}", bad.name()));
        }
        // Canaries healthy: promote when asked to do it automatically.
        // Counted live and healthy (a canary lost or failed does not count).
        let healthy_canaries = healthy_canaries(owned.iter().copied());
        let canaries_ready = g.desired_canaries > 0 && healthy_canaries >= g.desired_canaries;
        // No allocation of another version in the group at all: nothing to
        // compare canaries with, nothing to wait for. Old allocations that
        // crashed, were drained or stopped still wait for a person: a
        // canary is promoted by someone, or by `auto_promote`.
        let nothing_to_canary = !allocs
            .iter()
            .any(|a| a.group == *name && a.job_version != d.job_version && !a.canary);
        if !g.promoted && g.desired_canaries > 0 && nothing_to_canary {
            g.promoted = true;
            reschedule = true;
        } else if !g.promoted && canaries_ready {
            if g.auto_promote {
                g.promoted = true;
                reschedule = true;
            } else {
                waiting_promotion.push(name.clone());
            }
        }
        let done = g.promoted && healthy >= g.desired_total && !older_running;
        all_done &= done;
        // Healthy canaries waiting for a person do not run out of time.
        let waiting = waiting_promotion.last() == Some(name);
        if !done
            && !waiting
            && failure.is_none()
            && let Some(by) = g.require_progress_by
            && now > by
        {
            failure = Some(format!(
                "group {name} has {} of {} allocations healthy, and none more became healthy within the progress deadline ({})",
                g.healthy, g.desired_total, g.progress_deadline
            ));
        }
    }
    if paused {
        // Paused, the counters still follow the allocations; nothing else
        // moves (no promotion, deadline or success: resume restarts those).
        let mut counted = d.clone();
        for (name, g) in counted.groups.iter_mut() {
            if let Some(n) = next.groups.get(name) {
                g.placed = n.placed;
                g.healthy = n.healthy;
                g.unhealthy = n.unhealthy;
                g.placed_canaries.clone_from(&n.placed_canaries);
            }
        }
        if counted != *d {
            counted.modified_at = now;
        }
        return Some(Verdict {
            deployment: counted,
            reschedule: false,
            revert_to: None,
            stable: false,
        });
    }
    let mut revert_to = None;
    let mut stable = false;
    if let Some(why) = failure {
        next.status = DeploymentStatus::Failed;
        reschedule = true;
        let auto_revert = next.groups.values().any(|g| g.auto_revert);
        next.description = format!("failed: {why}");
        if auto_revert {
            match last_stable(state, job) {
                Some(target) => {
                    next.description =
                        format!("failed: {why}; rolling back to version {}", target.version);
                    revert_to = Some(target);
                }
                None => next
                    .description
                    .push_str("; no stable version to roll back to"),
            }
        }
    } else if all_done {
        next.status = DeploymentStatus::Successful;
        next.description = "deployment completed successfully".to_string();
        stable = true;
    } else if !waiting_promotion.is_empty() {
        next.description = format!(
            "canaries of {} are healthy; promote with `corral deploy promote {}`",
            waiting_promotion.join(", "),
            d.job
        );
    }
    if next != *d {
        next.modified_at = now;
    }
    Some(Verdict {
        deployment: next,
        reschedule,
        revert_to,
        stable,
    })
}

/// Canaries among `owned` (a deployment's allocations of one group) that
/// count toward promotion: live and healthy.
pub(crate) fn healthy_canaries<'a>(owned: impl Iterator<Item = &'a Allocation>) -> u32 {
    owned
        .filter(|a| a.canary && a.is_live() && a.is_healthy())
        .count() as u32
}

/// The newest stable version older than the current one whose spec
/// differs from it.
pub(crate) fn last_stable(state: &State, job: &Job) -> Option<Job> {
    state
        .job_versions(&job.name)
        .into_iter()
        .rev()
        .find(|j| j.version < job.version && j.stable)
        // Already on the stable spec: going further back is not a rollback
        // anyone asked for.
        .filter(|j| j.spec != job.spec)
        .map(|j| (*j).clone())
}
