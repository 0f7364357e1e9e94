//! Desired (the job's latest version) against actual (its allocations):
//! what to stop, what to update in place, which slots to fill.
//!
//! Per group, the allocations are sorted into slots (index `0..count`,
//! [`slots`]) and each slot goes through named steps ([`group`]): scale
//! down, canaries, duplicates, migration, update, fill. The rules:
//!
//! - a live allocation (desired run, not terminal) on a healthy node holds
//!   its slot; duplicates are stopped, the preferred one is kept;
//! - a live allocation on a down or missing node is stopped as lost and its
//!   slot filled again;
//! - a failed allocation of the same spec holds its slot until the group's
//!   reschedule policy replaces it: after its delay (growing with each
//!   reschedule of the slot), preferring another node, within its attempts
//!   (see [`reschedule`]); one that failed in a deployment still under way
//!   or failed is left to the deployment's rules. A spec change frees it
//!   at once: the new version may fix it;
//! - complete and lost allocations free their slot: a service should run;
//! - a live allocation on a draining node is migrated: a replacement is
//!   placed beside it (at most `update.max_parallel` migrations in flight
//!   per group) and the old one is stopped once the replacement runs, or
//!   when the node's drain deadline passes. A replacement that failed is not
//!   tried again: the old allocation runs until the deadline;
//! - a replacement for a lost or migrating allocation runs the current
//!   version only when the rollout may replace that allocation now; during
//!   a canary phase, or under a paused or failed deployment, it keeps the
//!   version it replaces (as Nomad's `downgradeNonCanary`), so a drain never
//!   rolls out what nobody promoted;
//! - a spec change rolls: at most `update.max_parallel` slots of a group
//!   run a new-version allocation that is not healthy yet (0 = all at
//!   once, without a deployment); the others keep their old allocation
//!   until then. Under a deployment (see [`crate::deployment`]) health
//!   comes from the agent's checks; canaries run beside the old allocation
//!   of their slot until promoted; a paused or failed deployment replaces
//!   nothing more, and a failed one's unpromoted canaries are stopped;
//! - every version that has not run yet gets a deployment when a group has
//!   `max_parallel > 0` (Nomad's rule), so it becomes stable only once its
//!   allocations are healthy; allocations kept in place join it.

mod group;
mod reschedule;
mod slots;
mod spec;

use corral_types::{
    Allocation, ClientStatus, Deployment, DeploymentStatus, GroupSpec, InPlaceUpdate, Job,
    NodeStatus, RescheduleEvent, StopAlloc, UnixMillis,
};

use crate::StateView;
use crate::deployment;
use spec::SpecCache;

/// One slot to fill.
#[derive(Debug, Clone)]
pub struct PlaceRequest<'a> {
    /// The job version placed: the current one, or the version of the
    /// allocation replaced when the rollout may not replace it yet.
    pub job: &'a Job,
    /// The group as that version has it.
    pub group: &'a GroupSpec,
    pub index: u32,
    pub previous: Option<String>,
    /// A live allocation replaced for a spec change. It is stopped only if
    /// the replacement finds a node (as Nomad does), so a full cluster keeps
    /// the old version running instead of nothing.
    pub replaces: Option<&'a Allocation>,
    /// Stop reason for `replaces`.
    pub reason: String,
    /// The deployment the new allocation belongs to.
    pub deployment_id: Option<String>,
    pub canary: bool,
    /// Placed by the reschedule policy: the slot's history, this one last.
    pub reschedules: Vec<RescheduleEvent>,
    /// A node to place it elsewhere than if another fits (where it failed).
    pub avoid_node: Option<String>,
}

/// The reconciler's verdict; placements are ordered by group (spec order)
/// then index.
#[derive(Debug, Clone, Default)]
pub struct Reconciled<'a> {
    pub stops: Vec<StopAlloc>,
    pub in_place: Vec<InPlaceUpdate>,
    pub places: Vec<PlaceRequest<'a>>,
    /// Deployments to create or end.
    pub deployments: Vec<Deployment>,
    /// When a failed allocation's reschedule delay ends: the job needs
    /// another look then.
    pub wake_at: Option<UnixMillis>,
}

impl Reconciled<'_> {
    /// Stop `a`; marked lost when its node is gone, since no agent will
    /// ever report on it.
    fn stop(&mut self, state: &dyn StateView, a: &Allocation, reason: &str) {
        self.stops.push(StopAlloc {
            id: a.id.clone(),
            reason: reason.to_owned(),
            client: node_lost(state, a).map(|_| ClientStatus::Lost),
        });
    }
}

/// Why the allocation's node can no longer run it, if it cannot.
pub fn node_lost(state: &dyn StateView, a: &Allocation) -> Option<&'static str> {
    match state.node(&a.node_id) {
        None => Some("node missing"),
        Some(n) if n.status == NodeStatus::Down => Some("node down"),
        Some(_) => None,
    }
}

/// Whether the allocation sits on a draining node, and if so whether the
/// node's drain deadline has passed.
fn draining(state: &dyn StateView, a: &Allocation, now: UnixMillis) -> Option<bool> {
    let n = state.node(&a.node_id)?;
    n.draining
        .then(|| n.drain_deadline.is_some_and(|d| now >= d))
}

pub fn reconcile<'a>(
    state: &'a dyn StateView,
    job_name: &str,
    now: UnixMillis,
    new_id: &mut dyn FnMut() -> String,
) -> Reconciled<'a> {
    let mut allocs = state.allocs_by_job(job_name);
    allocs.sort_by(|a, b| {
        (&a.group, a.index, a.create_index, &a.id).cmp(&(&b.group, b.index, b.create_index, &b.id))
    });
    let mut out = Reconciled::default();
    mark_lost_stragglers(state, &allocs, &mut out);
    let latest = state.latest_deployment(job_name);
    let job = match state.job(job_name) {
        Some(j) if !j.stopped => j,
        _ => {
            stop_everything(state, &allocs, latest, now, &mut out);
            return out;
        }
    };

    // A newer version supersedes a deployment still rolling out.
    if let Some(d) = latest.filter(|d| d.is_active() && d.job_version != job.version) {
        let why = format!("superseded by job version {}", job.version);
        out.deployments
            .push(end_deployment(d, DeploymentStatus::Cancelled, &why, now));
    }
    let mut specs = SpecCache::default();
    let created = match latest.filter(|d| d.job_version == job.version) {
        Some(_) => None,
        None => needs_deployment(state, job, &allocs, &mut specs).map(|destructive| {
            deployment::new_deployment(job, &destructive, new_id(), job.reverts_to, now)
        }),
    };
    let current = created
        .as_ref()
        .or(latest.filter(|d| d.job_version == job.version));

    for a in allocs.iter().filter(|a| a.is_live()) {
        if !job.spec.groups.iter().any(|g| g.name == a.group) {
            out.stop(state, a, "group removed");
        }
    }
    for g in &job.spec.groups {
        let mine: Vec<&'a Allocation> = allocs
            .iter()
            .copied()
            .filter(|a| a.group == g.name)
            .collect();
        let rollout = deployment::group_rollout(current, job, &g.name);
        let ctx = group::GroupCtx {
            state,
            job,
            g,
            rollout,
            now,
        };
        group::reconcile_group(&ctx, &mine, &mut specs, &mut out);
    }
    out.deployments.extend(created);
    out
}

/// Already stopped but still possibly running on a node that is gone:
/// record them as lost so they stop showing as running.
fn mark_lost_stragglers(state: &dyn StateView, allocs: &[&Allocation], out: &mut Reconciled) {
    for a in allocs.iter().filter(|a| !a.is_live() && a.may_run()) {
        if let Some(why) = node_lost(state, a) {
            let reason = if a.desired_reason.is_empty() {
                why
            } else {
                &a.desired_reason
            };
            out.stop(state, a, reason);
        }
    }
}

/// The job is stopped or gone: stop what lives and cancel its rollout.
fn stop_everything(
    state: &dyn StateView,
    allocs: &[&Allocation],
    latest: Option<&Deployment>,
    now: UnixMillis,
    out: &mut Reconciled,
) {
    for a in allocs.iter().filter(|a| a.is_live()) {
        out.stop(state, a, "job stopped");
    }
    if let Some(d) = latest.filter(|d| d.is_active()) {
        out.deployments.push(end_deployment(
            d,
            DeploymentStatus::Cancelled,
            "job stopped",
            now,
        ));
    }
}

/// `d` ended with `status`.
fn end_deployment(
    d: &Deployment,
    status: DeploymentStatus,
    why: &str,
    now: UnixMillis,
) -> Deployment {
    let mut d = d.clone();
    d.status = status;
    d.description = why.to_string();
    d.modified_at = now;
    d
}

/// Whether the job's current version needs a deployment, and if so which
/// groups replace live allocations (they may get canaries). Every version
/// that has not run yet gets one when a group rolls (`max_parallel > 0`):
/// a version is stable only once its allocations proved healthy, whatever
/// the change (new job, spec, count, a job started again after a stop). A
/// version that ran before (a job that lost everything in an outage) gets
/// its allocations back without one.
fn needs_deployment(
    state: &dyn StateView,
    job: &Job,
    allocs: &[&Allocation],
    specs: &mut SpecCache,
) -> Option<Vec<String>> {
    let rolling: Vec<&GroupSpec> = job
        .spec
        .groups
        .iter()
        .filter(|g| g.update.max_parallel > 0 && g.count > 0)
        .collect();
    let ran = allocs
        .iter()
        .any(|a| a.job_version == job.version && a.create_index >= job.create_index);
    if rolling.is_empty() || ran {
        return None;
    }
    let destructive = rolling.into_iter().filter(|g| {
        allocs.iter().any(|a| {
            a.group == g.name
                && a.is_live()
                && a.index < g.count
                && node_lost(state, a).is_none()
                && specs.changed(state, job, g, a)
        })
    });
    Some(destructive.map(|g| g.name.clone()).collect())
}
