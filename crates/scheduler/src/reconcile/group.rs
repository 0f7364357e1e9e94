//! One group's reconcile, as named steps over its slots: scale down, then
//! per slot in range: set canaries aside, keep one allocation and stop the
//! duplicates, then migrate (draining node), update (older version) or
//! fill (nothing live).

use std::collections::BTreeMap;

use corral_types::{
    Allocation, ClientStatus, DeploymentStatus, DesiredStatus, GroupSpec, InPlaceUpdate, Job,
    UnixMillis,
};

use super::slots::{self, Slot};
use super::spec::{SpecCache, old_group};
use super::{PlaceRequest, Reconciled, draining};
use crate::StateView;
use crate::deployment::GroupRollout;

/// What one group is reconciled against.
pub(super) struct GroupCtx<'a, 'd> {
    pub state: &'a dyn StateView,
    pub job: &'a Job,
    pub g: &'a GroupSpec,
    pub rollout: Option<GroupRollout<'d>>,
    pub now: UnixMillis,
}

/// What the group may still start in this plan.
#[derive(Debug)]
struct Budget {
    /// Migrations in flight (replacement placed, not running yet).
    migrations: usize,
    migration_limit: usize,
    /// Rolling replacements (or current-version replacements of lost and
    /// migrating allocations) still allowed.
    rolling: usize,
    canaries: usize,
}

/// What the per-slot steps read and write as they go.
struct Work<'a, 'r> {
    budget: Budget,
    specs: &'r mut SpecCache,
    out: &'r mut Reconciled<'a>,
}

pub(super) fn reconcile_group<'a>(
    ctx: &GroupCtx<'a, '_>,
    allocs: &[&'a Allocation],
    specs: &mut SpecCache,
    out: &mut Reconciled<'a>,
) {
    let mut slots = slots::classify(ctx.state, allocs, out);
    ctx.scale_down(&slots, out);
    let budget = ctx.budget(&slots, allocs, specs);
    let mut w = Work { budget, specs, out };
    for index in 0..ctx.g.count {
        let slot = slots.remove(&index).unwrap_or_default();
        ctx.reconcile_slot(index, slot, &mut w);
    }
}

impl<'a> GroupCtx<'a, '_> {
    fn draining(&self, a: &Allocation) -> Option<bool> {
        draining(self.state, a, self.now)
    }

    /// New allocations of the current version join the deployment while it
    /// is under way, so their health is tracked.
    fn deployment_id(&self) -> Option<String> {
        self.rollout
            .filter(|r| r.deployment.is_active())
            .map(|r| r.deployment.id.clone())
    }

    fn scale_down(&self, slots: &BTreeMap<u32, Slot<'a>>, out: &mut Reconciled<'a>) {
        for (_, slot) in slots.range(self.g.count..) {
            for a in &slot.live {
                out.stop(self.state, a, "scaled down");
            }
        }
    }

    fn budget(
        &self,
        slots: &BTreeMap<u32, Slot<'a>>,
        allocs: &[&'a Allocation],
        specs: &mut SpecCache,
    ) -> Budget {
        let limit = match self.g.update.max_parallel {
            0 => usize::MAX,
            n => n as usize,
        };
        let in_range = || slots.range(..self.g.count).map(|(_, s)| s);
        let migrations = in_range()
            .filter(|s| {
                s.live
                    .iter()
                    .any(|r| r.client != ClientStatus::Running && self.migrates(r, &s.live))
            })
            .count();
        let in_flight = in_range()
            .filter(|s| s.live.iter().any(|a| self.unsettled(a, specs)))
            .count();
        // An unhealthy allocation fails the deployment (the watcher decides
        // it a moment later): replace nothing more meanwhile.
        let unhealthy = self.rollout.is_some_and(|r| {
            allocs
                .iter()
                .any(|a| r.owns(a) && a.desired == DesiredStatus::Run && a.is_unhealthy())
        });
        let rolling = match (self.rollout, self.g.update.max_parallel) {
            (Some(r), _) if !r.may_replace() || unhealthy => 0,
            (_, 0) => usize::MAX,
            (_, n) => (n as usize).saturating_sub(in_flight),
        };
        let canaries = self
            .rollout
            .filter(|r| r.canary_phase() && r.deployment.status == DeploymentStatus::Running)
            .map(|r| {
                // Slots holding a canary: one moving off a draining node
                // and its replacement count once; one past the drain
                // deadline is stopped, and not at all.
                let held = in_range()
                    .filter(|s| {
                        s.live
                            .iter()
                            .any(|a| a.canary && r.owns(a) && self.draining(a) != Some(true))
                    })
                    .count();
                (r.group.desired_canaries as usize).saturating_sub(held)
            })
            .unwrap_or(0);
        Budget {
            migrations,
            migration_limit: limit,
            rolling,
            canaries,
        }
    }

    /// Whether `r` (not on a draining node) is the migration replacement of
    /// a live allocation of its slot that is on one (a canary of a canary;
    /// a canary beside its slot's old allocation replaces nothing yet).
    fn migrates(&self, r: &Allocation, live: &[&Allocation]) -> bool {
        self.draining(r).is_none()
            && live.iter().any(|d| {
                self.draining(d).is_some()
                    && r.canary == d.canary
                    && r.previous.as_deref() == Some(d.id.as_str())
            })
    }

    /// A new-version allocation whose health is not proven yet: it counts
    /// against `max_parallel`. Under a deployment that includes those the
    /// deployment placed and those it adopts in place (an earlier rollout
    /// may have left them undecided or unhealthy).
    fn unsettled(&self, a: &Allocation, specs: &mut SpecCache) -> bool {
        match self.rollout {
            Some(r) => {
                !a.is_healthy()
                    && ((r.owns(a) && !a.canary)
                        // Adopted in place, a canary of an earlier rollout
                        // loses its canary mark and joins this one
                        // undecided: it counts as well.
                        || (a.job_version != self.job.version
                            && !specs.changed(self.state, self.job, self.g, a)))
            }
            None => {
                a.job_version == self.job.version
                    && a.client == ClientStatus::Pending
                    && a.previous.is_some()
            }
        }
    }

    fn reconcile_slot(&self, index: u32, mut slot: Slot<'a>, w: &mut Work<'a, '_>) {
        let has_canary = self.set_aside_canaries(index, &mut slot, w);
        let Some(keep) = self.preferred(&slot.live) else {
            return self.fill(index, &slot, has_canary, w);
        };
        self.stop_duplicates(keep, &slot, w.out);
        match self.draining(keep) {
            Some(forced) => self.migrate(index, keep, forced, &slot, w),
            None => self.update(index, keep, has_canary, w),
        }
    }

    /// Before promotion a canary sits beside its slot's old allocation and
    /// is left out of the slot; a deployment that ended without promotion
    /// stops its canaries. Whether the slot has a canary of a rollout still
    /// under way.
    fn set_aside_canaries(&self, index: u32, slot: &mut Slot<'a>, w: &mut Work<'a, '_>) -> bool {
        let Some(r) = self.rollout.filter(|r| r.canary_phase()) else {
            return false;
        };
        let (canaries, rest): (Vec<&Allocation>, Vec<&Allocation>) =
            slot.live.iter().partition(|a| a.canary && r.owns(a));
        slot.live = rest;
        if !r.deployment.is_active() {
            for a in &canaries {
                w.out.stop(self.state, a, "canary of a failed deployment");
            }
            return false;
        }
        let mut held = false;
        for &c in &canaries {
            held |= self.move_canary(index, c, &canaries, slot, w);
        }
        held
    }

    /// A canary on a draining node moves like any allocation: a replacement
    /// canary beside it (within the migration budget), the old one stopped
    /// once the replacement runs, or at the deadline. Whether `c` (or its
    /// replacement) still holds the slot's canary place.
    fn move_canary(
        &self,
        index: u32,
        c: &'a Allocation,
        canaries: &[&'a Allocation],
        slot: &Slot<'a>,
        w: &mut Work<'a, '_>,
    ) -> bool {
        match self.draining(c) {
            None => return true,
            Some(true) => {
                w.out.stop(self.state, c, "node drain deadline reached");
                return false;
            }
            Some(false) => {}
        }
        let replacement = canaries
            .iter()
            .find(|x| x.previous.as_deref() == Some(c.id.as_str()) && self.draining(x).is_none());
        match replacement {
            Some(x) if x.client == ClientStatus::Running => {
                w.out.stop(self.state, c, "node drained");
            }
            Some(_) => {}
            None if slot.terminal_replacement_of(c).is_some() => {}
            None if w.budget.migrations < w.budget.migration_limit => {
                w.budget.migrations += 1;
                w.out.places.push(PlaceRequest {
                    canary: true,
                    ..self.fresh(index, Some(c))
                });
            }
            None => {}
        }
        true
    }

    /// Which of several live allocations sharing a slot to keep: not one
    /// past its node's drain deadline, then the current version, then one
    /// off draining nodes, then running over pending, then the oldest.
    fn preferred(&self, live: &[&'a Allocation]) -> Option<&'a Allocation> {
        let key = |a: &Allocation| {
            (
                self.draining(a) == Some(true),
                a.job_version != self.job.version,
                self.draining(a).is_some(),
                a.client != ClientStatus::Running,
                a.create_index,
            )
        };
        live.iter()
            .copied()
            .min_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id)))
    }

    /// Stop every live allocation of the slot but `keep`, except the
    /// draining one `keep` replaces while `keep` does not run yet.
    fn stop_duplicates(&self, keep: &Allocation, slot: &Slot<'a>, out: &mut Reconciled<'a>) {
        for a in slot.live.iter().filter(|a| a.id != keep.id) {
            let migrated = self.draining(a).is_some()
                && keep.previous.as_deref() == Some(a.id.as_str())
                && self.draining(keep).is_none();
            // A replacement with volumes needs the old one stopped before it
            // can run (one writer): it says when its copy is done.
            let waits = keep.client != ClientStatus::Running && !keep.volumes_copied();
            if migrated && waits && self.draining(a) == Some(false) {
                continue;
            }
            let why = if self.draining(a) == Some(true) {
                "node drain deadline reached"
            } else if keep.canary {
                "replaced by a promoted canary"
            } else if migrated {
                "node drained"
            } else {
                "duplicate index"
            };
            out.stop(self.state, a, why);
        }
    }

    /// `keep` sits on a draining node: place its replacement beside it (at
    /// most `max_parallel` in flight), or stop it once the deadline passed.
    /// A replacement that already failed is not tried again: the old one
    /// runs until the deadline, and then the failed one holds the slot.
    fn migrate(
        &self,
        index: u32,
        keep: &'a Allocation,
        forced: bool,
        slot: &Slot<'a>,
        w: &mut Work<'a, '_>,
    ) {
        let tried = slot.terminal_replacement_of(keep);
        if forced {
            w.out.stop(self.state, keep, "node drain deadline reached");
            if tried.is_none_or(|r| r.client != ClientStatus::Failed) {
                let place = self.replacement(index, keep, w);
                w.out.places.push(place);
            }
            return;
        }
        if tried.is_some() || w.budget.migrations >= w.budget.migration_limit {
            return;
        }
        w.budget.migrations += 1;
        let place = self.replacement(index, keep, w);
        w.out.places.push(place);
    }

    /// `keep` runs an older version: update it in place (same spec: it joins
    /// the deployment), or replace it by a canary or within the rolling
    /// budget. Past the budget the old version keeps running until a
    /// replacement in flight becomes healthy (its report brings a new
    /// evaluation).
    fn update(&self, index: u32, keep: &'a Allocation, has_canary: bool, w: &mut Work<'a, '_>) {
        let (budget, out) = (&mut w.budget, &mut w.out);
        if keep.job_version == self.job.version {
            return;
        }
        if !w.specs.changed(self.state, self.job, self.g, keep) {
            out.in_place.push(InPlaceUpdate {
                id: keep.id.clone(),
                job_version: self.job.version,
                deployment_id: self.deployment_id(),
            });
        } else if budget.canaries > 0 && !has_canary {
            budget.canaries -= 1;
            out.places.push(PlaceRequest {
                canary: true,
                ..self.fresh(index, Some(keep))
            });
        } else if budget.rolling > 0 {
            budget.rolling -= 1;
            out.places.push(PlaceRequest {
                replaces: Some(keep),
                reason: format!("job updated to version {}", self.job.version),
                ..self.fresh(index, Some(keep))
            });
        }
    }

    /// Nothing live in the slot but maybe a canary: a failed allocation
    /// holds it unless the spec changed; a lost or finished one is replaced;
    /// a slot that only ever held a canary, or nothing, waits for promotion
    /// during a canary phase (Nomad).
    fn fill(&self, index: u32, slot: &Slot<'a>, has_canary: bool, w: &mut Work<'a, '_>) {
        let canary_phase = self.rollout.is_some_and(|r| r.canary_phase());
        if let Some(last) = slot.failed.last().filter(|_| !has_canary) {
            // Before promotion the new version runs as canaries only.
            // A spec change frees it, when the rollout may replace it now.
            let may = match self.rollout {
                None => true,
                Some(r) => r.may_replace() && w.budget.rolling > 0,
            };
            if may
                && slot
                    .failed
                    .iter()
                    .all(|a| w.specs.changed(self.state, self.job, self.g, a))
            {
                if self.rollout.is_some() {
                    w.budget.rolling -= 1;
                }
                let why = format!("job updated to version {}", self.job.version);
                for a in &slot.failed {
                    w.out.stop(self.state, a, &why);
                }
                w.out.places.push(self.fresh(index, Some(last)));
            } else {
                self.reschedule(index, last, w);
            }
            return;
        }
        // What the slot ran before: its old allocation rather than a canary
        // lost with it, so the slot keeps something to compare with.
        let gone = || slot.lost.iter().chain(&slot.complete).rev().copied();
        let place = match gone().find(|a| !a.canary) {
            Some(old) => self.replacement(index, old, w),
            None if has_canary || canary_phase => return,
            None => match slot.lost.last().or(slot.complete.last()).copied() {
                Some(canary) => self.replacement(index, canary, w),
                None => self.fresh(index, None),
            },
        };
        w.out.places.push(place);
    }

    /// A current-version allocation for the slot.
    fn fresh(&self, index: u32, previous: Option<&Allocation>) -> PlaceRequest<'a> {
        PlaceRequest {
            job: self.job,
            group: self.g,
            index,
            previous: previous.map(|a| a.id.clone()),
            replaces: None,
            reason: String::new(),
            deployment_id: self.deployment_id(),
            canary: false,
            reschedules: Vec::new(),
            avoid_node: None,
        }
    }

    /// A failed allocation whose restart policy gave up: replaced by the
    /// group's reschedule policy once its delay is over.
    fn reschedule(&self, index: u32, failed: &'a Allocation, w: &mut Work<'a, '_>) {
        let latest = self.state.latest_deployment(&self.job.name);
        match super::reschedule::decide(&self.g.reschedule, failed, latest, self.now) {
            super::reschedule::Decision::Hold => {}
            super::reschedule::Decision::Wait(at) => {
                w.out.wake_at = Some(w.out.wake_at.map_or(at, |t| t.min(at)));
            }
            super::reschedule::Decision::Now(event) => {
                let mut reschedules = failed.reschedules.clone();
                reschedules.push(event);
                // An older version's failure is replaced by its own version
                // while the rollout may not replace it yet (a canary phase,
                // a paused deployment), even when the specs are the same:
                // nothing of the new version spreads before promotion.
                let held = self
                    .rollout
                    .is_some_and(|r| !(r.may_replace() && w.budget.rolling > 0));
                let base = if held && failed.job_version < self.job.version {
                    match old_group(self.state, self.job, failed.job_version, &self.g.name) {
                        Some((job, group)) => PlaceRequest {
                            job,
                            group,
                            deployment_id: None,
                            ..self.fresh(index, Some(failed))
                        },
                        None => return,
                    }
                } else {
                    self.replacement(index, failed, w)
                };
                w.out.places.push(PlaceRequest {
                    reschedules,
                    avoid_node: Some(failed.node_id.clone()),
                    ..base
                });
            }
        }
    }

    /// The replacement of `old` (lost, finished or migrating): the current
    /// version when the rollout may replace `old` now (within its budget),
    /// else `old`'s own version, so nothing unpromoted or failed spreads.
    fn replacement(
        &self,
        index: u32,
        old: &'a Allocation,
        w: &mut Work<'a, '_>,
    ) -> PlaceRequest<'a> {
        let current = self.fresh(index, Some(old));
        if !w.specs.changed(self.state, self.job, self.g, old) {
            return current;
        }
        match self.rollout {
            None => return current,
            Some(r) if r.may_replace() && w.budget.rolling > 0 => {
                w.budget.rolling -= 1;
                return current;
            }
            Some(_) => {}
        }
        match old_group(self.state, self.job, old.job_version, &self.g.name) {
            Some((job, group)) => PlaceRequest {
                job,
                group,
                deployment_id: None,
                ..current
            },
            None => current,
        }
    }
}
