//! Desired (the job's latest version) against actual (its allocations):
//! what to stop, what to update in place, which slots to fill.
//!
//! Slot rules, per group and index `0..count`:
//! - a live allocation (desired run, not terminal) on a healthy node holds
//!   its slot; duplicates are stopped, the preferred one is kept;
//! - a live allocation on a down or missing node is stopped as lost and its
//!   slot filled again;
//! - a failed allocation of the same spec holds its slot: the restart
//!   policy gave up, and placing the same spec again would loop (rescheduling
//!   is a later policy). A spec change frees it: the new version may fix it;
//! - complete and lost allocations free their slot: a service should run;
//! - a live allocation on a draining node is migrated: a replacement is
//!   placed beside it (at most `update.max_parallel` migrations in flight
//!   per group) and the old one is stopped once the replacement runs, or
//!   when the node's drain deadline passes;
//! - a spec change rolls: at most `update.max_parallel` slots of a group
//!   run a new-version allocation that is not healthy yet (0 = all at
//!   once, without a deployment); the others keep their old allocation
//!   until then. Under a deployment (see [`crate::deployment`]) health
//!   comes from the agent's checks; canaries run beside the old allocation
//!   of their slot until promoted; a paused or failed deployment replaces
//!   nothing more, and a failed one's unpromoted canaries are stopped.

use std::collections::BTreeMap;

use corral_types::{
    Allocation, ClientStatus, Deployment, DeploymentStatus, DesiredStatus, GroupSpec, Job,
    NodeStatus, StopAlloc, UnixMillis,
};

use crate::StateView;
use crate::deployment::{self, GroupRollout};

/// One slot to fill.
#[derive(Debug, Clone)]
pub struct PlaceRequest<'a> {
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
}

/// The reconciler's verdict; placements are ordered by group (spec order)
/// then index.
#[derive(Debug, Clone, Default)]
pub struct Reconciled<'a> {
    pub stops: Vec<StopAlloc>,
    pub in_place: Vec<(String, u64)>,
    pub places: Vec<PlaceRequest<'a>>,
    /// Deployments to create or end.
    pub deployments: Vec<Deployment>,
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

    // Already stopped but still possibly running on a node that is gone:
    // record them as lost so they stop showing as running.
    for a in allocs.iter().filter(|a| !a.is_live() && a.may_run()) {
        if node_lost(state, a).is_some() {
            let reason = if a.desired_reason.is_empty() {
                node_lost(state, a).unwrap_or_default()
            } else {
                &a.desired_reason
            };
            out.stop(state, a, reason);
        }
    }

    let latest = state.latest_deployment(job_name);
    let job = match state.job(job_name) {
        Some(j) if !j.stopped => j,
        _ => {
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
        reconcile_group(state, job, g, &mine, rollout, now, &mut specs, &mut out);
    }
    out.deployments.extend(created);
    out
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
/// groups replace live allocations (they may get canaries): a group with a
/// rolling update policy has live allocations of an older spec, or the job
/// is new (nothing live and never a deployment: a first rollout, so the
/// version can become stable; a job that lost everything in an outage
/// gets its allocations back without one).
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
    if rolling.is_empty() {
        return None;
    }
    if !allocs.iter().any(|a| a.is_live()) {
        return state.latest_deployment(&job.name).is_none().then(Vec::new);
    }
    let destructive: Vec<&GroupSpec> = rolling
        .into_iter()
        .filter(|g| {
            allocs.iter().any(|a| {
                a.group == g.name
                    && a.is_live()
                    && a.index < g.count
                    && node_lost(state, a).is_none()
                    && specs.changed(state, job, g, a)
            })
        })
        .collect();
    if destructive.is_empty() {
        return None;
    }
    Some(destructive.into_iter().map(|g| g.name.clone()).collect())
}

/// What one slot (index) of a group holds.
#[derive(Default)]
struct Slot<'a> {
    /// Being migrated off a draining node (its replacement was asked for,
    /// or waits for a free migration slot): leave it alone.
    migrating: bool,
    live: Vec<&'a Allocation>,
    lost: Vec<&'a Allocation>,
    failed: Vec<&'a Allocation>,
    complete: Vec<&'a Allocation>,
}

#[allow(clippy::too_many_arguments)]
fn reconcile_group<'a>(
    state: &'a dyn StateView,
    job: &'a Job,
    g: &'a GroupSpec,
    allocs: &[&'a Allocation],
    rollout: Option<GroupRollout<'_>>,
    now: UnixMillis,
    specs: &mut SpecCache,
    out: &mut Reconciled<'a>,
) {
    let mut slots: BTreeMap<u32, Slot<'a>> = BTreeMap::new();
    for &a in allocs {
        let slot = slots.entry(a.index).or_default();
        if a.is_live() {
            if let Some(why) = node_lost(state, a) {
                out.stop(state, a, why);
                slot.lost.push(a);
            } else {
                slot.live.push(a);
            }
        } else if a.desired == DesiredStatus::Run && a.client == ClientStatus::Failed {
            slot.failed.push(a);
        } else if a.desired == DesiredStatus::Run && a.client == ClientStatus::Complete {
            slot.complete.push(a);
        }
    }
    let updated = format!("job updated to version {}", job.version);
    // New allocations join the deployment while it is under way, so their
    // health is tracked.
    let deployment_id = rollout
        .filter(|r| r.deployment.is_active())
        .map(|r| r.deployment.id.clone());

    // Migrations off draining nodes, before anything else looks at the
    // slot: the draining allocation keeps running until its replacement
    // does (or the deadline passes), so it must not count as a duplicate.
    let limit = match g.update.max_parallel {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut in_flight = slots
        .values()
        .filter(|s| {
            s.live.iter().any(|a| draining(state, a, now).is_some())
                && s.live.iter().any(|a| draining(state, a, now).is_none())
        })
        .count();
    for (&index, slot) in slots.range_mut(..g.count) {
        let Some(pos) = slot
            .live
            .iter()
            .position(|a| draining(state, a, now).is_some())
        else {
            continue;
        };
        let old = slot.live[pos];
        let forced = draining(state, old, now) == Some(true);
        // Its own replacement, not any other allocation sharing the slot
        // (a canary beside it is not one).
        let replacement = slot
            .live
            .iter()
            .find(|a| {
                a.previous.as_deref() == Some(old.id.as_str())
                    && !a.canary
                    && draining(state, a, now).is_none()
            })
            .copied();
        match replacement {
            Some(r) if r.client == ClientStatus::Running || forced => {
                // This migration is done: it frees its place in flight.
                out.stop(state, old, "node drained");
                slot.live.remove(pos);
                in_flight = in_flight.saturating_sub(1);
            }
            // Migration in flight: both stay until the new one runs.
            Some(_) => {
                slot.live.remove(pos);
            }
            None if forced => {
                out.stop(state, old, "node drain deadline reached");
                slot.live.remove(pos);
                slot.lost.push(old);
            }
            None if in_flight < limit => {
                in_flight += 1;
                out.places.push(PlaceRequest {
                    group: g,
                    index,
                    previous: Some(old.id.clone()),
                    replaces: None,
                    reason: String::new(),
                    deployment_id: deployment_id.clone(),
                    canary: false,
                });
                // The slot is being filled: nothing else to do for it.
                slot.live.clear();
                slot.migrating = true;
            }
            // Wait for a migration slot; the old allocation keeps running.
            None => slot.migrating = true,
        }
    }

    for (_, slot) in slots.range(g.count..) {
        for a in &slot.live {
            out.stop(state, a, "scaled down");
        }
    }
    // Rolling update budget: new-version allocations not yet healthy (or,
    // without a deployment, not yet running) count against max_parallel.
    let in_flight = slots
        .range(..g.count)
        .filter(|(_, s)| {
            s.live.iter().any(|a| match rollout {
                Some(r) => r.owns(a) && !a.canary && !a.is_healthy(),
                None => {
                    a.job_version == job.version
                        && a.client == ClientStatus::Pending
                        && a.previous.is_some()
                }
            })
        })
        .count();
    // An unhealthy allocation fails the deployment (the watcher decides
    // it a moment later): replace nothing more meanwhile.
    let unhealthy = rollout.is_some_and(|r| {
        allocs
            .iter()
            .any(|a| r.owns(a) && a.desired == DesiredStatus::Run && a.is_unhealthy())
    });
    let mut rolling_budget = match (rollout, g.update.max_parallel) {
        (Some(r), _) if !r.may_replace() || unhealthy => 0,
        (_, 0) => usize::MAX,
        (_, n) => (n as usize).saturating_sub(in_flight),
    };
    let canary_phase = rollout.filter(|r| r.canary_phase());
    let mut canaries_wanted = canary_phase
        .filter(|r| r.deployment.status == DeploymentStatus::Running)
        .map(|r| {
            let live = slots
                .range(..g.count)
                .flat_map(|(_, s)| &s.live)
                .filter(|a| a.canary && r.owns(a))
                .count();
            (r.group.desired_canaries as usize).saturating_sub(live)
        })
        .unwrap_or(0);
    for index in 0..g.count {
        let empty = Slot::default();
        let slot = slots.get(&index).unwrap_or(&empty);
        if slot.migrating {
            continue;
        }
        let place = |previous: Option<&Allocation>| PlaceRequest {
            group: g,
            index,
            previous: previous.map(|a| a.id.clone()),
            replaces: None,
            reason: String::new(),
            deployment_id: deployment_id.clone(),
            canary: false,
        };
        // Before promotion a canary sits beside its slot's old allocation;
        // a deployment that ended without promotion stops its canaries.
        let mut live: Vec<&Allocation> = slot.live.clone();
        let mut has_canary = false;
        if let Some(r) = canary_phase {
            let (canaries, rest): (Vec<&Allocation>, Vec<&Allocation>) =
                live.iter().partition(|a| a.canary && r.owns(a));
            has_canary = !canaries.is_empty();
            if !r.deployment.is_active() {
                for a in &canaries {
                    out.stop(state, a, "canary of a failed deployment");
                }
            }
            live = rest;
        }
        if let Some(keep) = preferred(job, &live) {
            let why = if keep.canary {
                "replaced by a promoted canary"
            } else {
                "duplicate index"
            };
            for a in live.iter().filter(|a| a.id != keep.id) {
                out.stop(state, a, why);
            }
            if keep.job_version != job.version {
                if specs.changed(state, job, g, keep) {
                    if canaries_wanted > 0 && !has_canary {
                        canaries_wanted -= 1;
                        out.places.push(PlaceRequest {
                            canary: true,
                            ..place(Some(keep))
                        });
                    } else if rolling_budget > 0 {
                        // Past the budget the old version keeps running
                        // until a replacement in flight becomes healthy
                        // (its report brings a new evaluation).
                        rolling_budget -= 1;
                        out.places.push(PlaceRequest {
                            replaces: Some(keep),
                            reason: updated.clone(),
                            ..place(Some(keep))
                        });
                    }
                } else {
                    out.in_place.push((keep.id.clone(), job.version));
                }
            }
        } else if !slot.failed.is_empty() {
            if slot.failed.iter().all(|a| specs.changed(state, job, g, a)) {
                for a in &slot.failed {
                    out.stop(state, a, &updated);
                }
                out.places.push(place(slot.failed.last().copied()));
            }
        } else if !has_canary {
            let previous = slot.lost.last().or(slot.complete.last()).copied();
            out.places.push(place(previous));
        }
    }
}

/// Which of several live allocations sharing a slot to keep: the current
/// version, then running over pending, then the oldest.
fn preferred<'a>(job: &Job, live: &[&'a Allocation]) -> Option<&'a Allocation> {
    let key = |a: &Allocation| {
        (
            a.job_version != job.version,
            a.client != ClientStatus::Running,
            a.create_index,
        )
    };
    live.iter()
        .copied()
        .min_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id)))
}

/// Whether an allocation's version of the group differs from the current
/// one enough to need a new allocation, memoised per version.
#[derive(Default)]
struct SpecCache {
    by_version: BTreeMap<u64, bool>,
}

impl SpecCache {
    fn changed(&mut self, state: &dyn StateView, job: &Job, g: &GroupSpec, a: &Allocation) -> bool {
        if a.job_version == job.version {
            return false;
        }
        *self.by_version.entry(a.job_version).or_insert_with(|| {
            // A version that is gone cannot be compared: replace, so the
            // allocation surely runs the current spec.
            state
                .job_version(&job.name, a.job_version)
                .and_then(|old| old.spec.groups.iter().find(|x| x.name == g.name))
                .is_none_or(|old| old.needs_replacement(g))
        })
    }
}
