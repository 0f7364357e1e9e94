//! Read-side projections: the API's views built from a state snapshot.

use corral_store::State;
use corral_types::api::{AllocView, EvalView, GroupSummary, JobListEntry, JobView, NodeView};
use corral_types::{
    AllocState, Allocation, ClientStatus, DesiredStatus, Job, JobStatus, Node, Resources,
};

pub fn group_summaries(state: &State, job: &Job) -> Vec<GroupSummary> {
    let allocs = state.job_allocs(&job.name);
    job.spec
        .groups
        .iter()
        .map(|g| {
            let mut s = GroupSummary {
                name: g.name.clone(),
                count: if job.stopped { 0 } else { g.count },
                pending: 0,
                running: 0,
                complete: 0,
                failed: 0,
                lost: 0,
            };
            for a in allocs.iter().filter(|a| a.group == g.name) {
                // Superseded allocations that ended are history, not state.
                if a.desired == DesiredStatus::Stop && a.client.is_terminal() {
                    continue;
                }
                match a.client {
                    ClientStatus::Pending => s.pending += 1,
                    ClientStatus::Running => s.running += 1,
                    ClientStatus::Complete => s.complete += 1,
                    ClientStatus::Failed => s.failed += 1,
                    ClientStatus::Lost => s.lost += 1,
                }
            }
            s
        })
        .collect()
}

/// Derived job status (see [`JobStatus`]) and why it is not running: dead
/// when stopped and nothing runs; running when every group has its count
/// running; otherwise the worst of what keeps a slot from running: a
/// failed allocation nothing replaces, an allocation restarting, then
/// anything pending (being placed, waiting, starting).
pub fn job_status(state: &State, job: &Job, groups: &[GroupSummary]) -> (JobStatus, String) {
    let running: u32 = groups.iter().map(|g| g.running + g.pending).sum();
    if job.stopped {
        let status = if running == 0 {
            JobStatus::Dead
        } else {
            JobStatus::Pending
        };
        return (status, String::new());
    }
    if groups.iter().all(|g| g.running >= g.count) {
        return (JobStatus::Running, String::new());
    }
    let all = state.job_allocs(&job.name);
    // Superseded allocations that ended are history, as in the group
    // summaries.
    let current: Vec<&Allocation> = all
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| {
            !(a.desired == DesiredStatus::Stop && a.client.is_terminal())
                && job
                    .spec
                    .groups
                    .iter()
                    .any(|g| g.name == a.group && a.index < g.count)
        })
        .collect();
    let named = |a: &Allocation| {
        let why = a.reason();
        if why.is_empty() {
            a.name()
        } else {
            format!("{}: {why}", a.name())
        }
    };
    // A failed allocation holds its slot (no rescheduling) unless
    // something live was placed in it.
    let failed = current.iter().find(|a| {
        a.client == ClientStatus::Failed
            && !all
                .iter()
                .any(|b| b.group == a.group && b.index == a.index && b.may_run())
    });
    if let Some(a) = failed {
        return (JobStatus::Failed, named(a));
    }
    if let Some(a) = current
        .iter()
        .find(|a| a.is_live() && a.state() == AllocState::Restarting)
    {
        return (JobStatus::Restarting, named(a));
    }
    let why = current
        .iter()
        .find(|a| a.is_live() && a.client == ClientStatus::Pending && !a.reason().is_empty())
        .map(|a| named(a))
        .or_else(|| {
            let e = state
                .job_evals(&job.name)
                .into_iter()
                .max_by_key(|e| (e.create_index, e.modify_index))?;
            e.failed_placements
                .first()
                .map(|f| format!("cannot place: {f}"))
        })
        .unwrap_or_default();
    (JobStatus::Pending, why)
}

pub fn job_list_entry(state: &State, job: &Job) -> JobListEntry {
    let groups = group_summaries(state, job);
    let (status, reason) = job_status(state, job, &groups);
    JobListEntry {
        name: job.name.clone(),
        version: job.version,
        status,
        reason,
        stopped: job.stopped,
        submitted_at: job.submitted_at,
        groups,
    }
}

pub fn alloc_view(state: &State, a: &Allocation) -> AllocView {
    AllocView::new(a, state.node_by_id(&a.node_id).map(|n| n.as_ref()))
}

pub fn job_view(state: &State, job: &Job) -> JobView {
    let groups = group_summaries(state, job);
    let mut allocs: Vec<&Allocation> = state
        .job_allocs(&job.name)
        .into_iter()
        .map(|a| a.as_ref())
        .collect();
    allocs.sort_by(|a, b| {
        (&a.group, a.index, a.create_index).cmp(&(&b.group, b.index, b.create_index))
    });
    let latest_eval = state
        .job_evals(&job.name)
        .into_iter()
        .max_by_key(|e| (e.create_index, e.modify_index))
        .map(|e| EvalView::from(e.as_ref()));
    let (status, reason) = job_status(state, job, &groups);
    JobView {
        name: job.name.clone(),
        version: job.version,
        status,
        reason,
        stopped: job.stopped,
        submitted_at: job.submitted_at,
        spec: job.spec.clone(),
        groups,
        allocations: allocs.into_iter().map(|a| alloc_view(state, a)).collect(),
        latest_eval,
        index: state.index(),
    }
}

pub fn node_view(state: &State, n: &Node) -> NodeView {
    let mut allocated = Resources::ZERO;
    let mut count = 0;
    for a in state.node_allocs(&n.id) {
        if a.is_live() {
            allocated.cpu.0 += a.resources.cpu.0;
            allocated.memory.0 += a.resources.memory.0;
            allocated.disk.0 += a.resources.disk.0;
            count += 1;
        }
    }
    NodeView {
        id: n.id.clone(),
        name: n.name.clone(),
        address: n.address.clone(),
        status: n.display_status().to_string(),
        eligible: n.eligible,
        draining: n.draining,
        resources: n.resources,
        allocated,
        allocations: count,
        attributes: n.attributes.clone(),
        labels: n.labels.clone(),
        drivers: n.drivers.clone(),
        last_heartbeat: n.last_heartbeat,
        registered_at: n.registered_at,
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
