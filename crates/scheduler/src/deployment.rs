//! When a job version gets a deployment, and what the deployment allows the
//! reconciler to do per group (Nomad's deployment semantics).
//!
//! A deployment is created for a job version when one of its groups with
//! `update.max_parallel > 0` needs new allocations because of a spec change,
//! or when the job is new. It tracks the new allocations' health; the
//! server's deployment watcher moves its status along. The reconciler reads
//! it to decide how many old allocations to replace at once, where canaries
//! go, and when to stop.

use std::collections::BTreeMap;

use corral_types::{
    Allocation, Deployment, DeploymentStatus, GroupDeployment, GroupSpec, Job, UnixMillis,
};

/// What the reconciler may do for one group under the job's deployment.
#[derive(Debug, Clone, Copy)]
pub struct GroupRollout<'a> {
    pub deployment: &'a Deployment,
    pub group: &'a GroupDeployment,
}

impl GroupRollout<'_> {
    /// Canaries placed but not yet promoted: the old version keeps every
    /// slot and nothing else is replaced.
    pub fn canary_phase(&self) -> bool {
        self.group.desired_canaries > 0 && !self.group.promoted
    }

    /// Whether new allocations may replace old ones now.
    pub fn may_replace(&self) -> bool {
        self.deployment.status == DeploymentStatus::Running && !self.canary_phase()
    }

    /// Whether `a` was placed by this deployment.
    pub fn owns(&self, a: &Allocation) -> bool {
        a.deployment_id.as_deref() == Some(self.deployment.id.as_str())
    }
}

/// The group's view of the job's current deployment, if it has one.
pub fn group_rollout<'a>(
    deployment: Option<&'a Deployment>,
    job: &Job,
    group: &str,
) -> Option<GroupRollout<'a>> {
    let d = deployment?;
    if d.job != job.name || d.job_version != job.version {
        return None;
    }
    d.groups.get(group).map(|g| GroupRollout {
        deployment: d,
        group: g,
    })
}

/// A new running deployment for `job`. `destructive` names the groups whose
/// live allocations need replacing (they get canaries, if asked for).
pub fn new_deployment(
    job: &Job,
    destructive: &[String],
    id: String,
    reverts_to: Option<u64>,
    now: UnixMillis,
) -> Deployment {
    let groups: BTreeMap<String, GroupDeployment> = job
        .spec
        .groups
        .iter()
        .filter(|g| g.update.max_parallel > 0)
        .map(|g| (g.name.clone(), group_deployment(g, destructive, now)))
        .collect();
    let canaries = groups.values().any(|g| g.desired_canaries > 0);
    Deployment {
        id,
        job: job.name.clone(),
        job_version: job.version,
        status: DeploymentStatus::Running,
        description: if canaries {
            "deployment is running; canaries need promotion".to_string()
        } else {
            "deployment is running".to_string()
        },
        groups,
        reverts_to,
        created_at: now,
        modified_at: now,
        create_index: 0,
        modify_index: 0,
    }
}

fn group_deployment(g: &GroupSpec, destructive: &[String], now: UnixMillis) -> GroupDeployment {
    let canaries = if destructive.contains(&g.name) {
        g.update.canary.min(g.count)
    } else {
        0
    };
    let deadline = g.update.progress_deadline;
    GroupDeployment {
        desired_total: g.count,
        desired_canaries: canaries,
        placed_canaries: Vec::new(),
        promoted: canaries == 0,
        auto_promote: g.update.auto_promote,
        auto_revert: g.update.auto_revert,
        max_parallel: g.update.max_parallel,
        progress_deadline: deadline,
        placed: 0,
        healthy: 0,
        unhealthy: 0,
        require_progress_by: (deadline.0 > 0).then(|| deadline.after(now)),
    }
}
