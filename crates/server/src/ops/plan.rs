//! The dry run of a submission (`corral run --plan`, `POST /v1/jobs?plan`):
//! the scheduler's answer for the specs on the current state, with nothing
//! stored.

use std::sync::Arc;

use corral_scheduler::{PlanContext, StateView};
use corral_types::api::{JobPlan, PlanResponse, PlannedAlloc, PlannedStop};
use corral_types::{Allocation, EvalTrigger, Index, Job, JobSpec, Node};

use super::jobs::{new_version, next_version};
use crate::core::{Core, now_ms};

/// The scheduler's answer for the submitted specs, on the current state,
/// without storing anything.
pub fn plan(core: &Arc<Core>, specs: &[JobSpec]) -> PlanResponse {
    let snapshot = core.store.snapshot();
    let now = now_ms();
    let mut jobs = Vec::new();
    for spec in specs {
        let (version, unchanged) = next_version(snapshot.job(&spec.name).map(|j| &**j), spec);
        let job = new_version(spec.clone(), version, now);
        let overlay = Overlay {
            base: snapshot.as_ref(),
            job: &job,
        };
        let eval = Core::new_eval(&spec.name, EvalTrigger::JobRegister, now);
        let mut n = 0u32;
        let mut ids = || {
            n += 1;
            format!("planned-{n}")
        };
        let mut ctx = PlanContext {
            new_id: &mut ids,
            now,
        };
        let p = corral_scheduler::schedule(&overlay, &eval, &mut ctx);
        let node_name = |id: &str| {
            snapshot
                .node_by_id(id)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        jobs.push(JobPlan {
            name: spec.name.clone(),
            version,
            changed: !unchanged,
            place: p
                .place
                .iter()
                .map(|a| PlannedAlloc {
                    name: a.name(),
                    node: node_name(&a.node_id),
                })
                .collect(),
            stop: p
                .stop
                .iter()
                .map(|s| PlannedStop {
                    id: s.id.clone(),
                    name: snapshot
                        .alloc(&s.id)
                        .map(|a| a.name())
                        .unwrap_or_else(|| s.id.clone()),
                    reason: s.reason.clone(),
                })
                .collect(),
            in_place: p.in_place.len() as u32,
            failures: p.failed.iter().map(|f| f.to_string()).collect(),
        });
    }
    PlanResponse { jobs }
}

/// The current state with one job replaced by its would-be version.
struct Overlay<'a> {
    base: &'a corral_store::State,
    job: &'a Job,
}

impl StateView for Overlay<'_> {
    fn index(&self) -> Index {
        StateView::index(self.base)
    }
    fn job(&self, name: &str) -> Option<&Job> {
        if name == self.job.name {
            Some(self.job)
        } else {
            StateView::job(self.base, name)
        }
    }
    fn job_version(&self, name: &str, version: u64) -> Option<&Job> {
        if name == self.job.name && version == self.job.version {
            Some(self.job)
        } else {
            self.base.job_version(name, version)
        }
    }
    fn allocs_by_job(&self, job: &str) -> Vec<&Allocation> {
        self.base.allocs_by_job(job)
    }
    fn allocs_by_node(&self, node_id: &str) -> Vec<&Allocation> {
        self.base.allocs_by_node(node_id)
    }
    fn alloc(&self, id: &str) -> Option<&Allocation> {
        StateView::alloc(self.base, id)
    }
    fn node_usage(&self, node_id: &str) -> corral_scheduler::usage::NodeUsage {
        self.base.node_usage(node_id)
    }
    fn nodes(&self) -> Vec<&Node> {
        self.base.nodes()
    }
    fn node(&self, id: &str) -> Option<&Node> {
        self.base.node(id)
    }
    fn latest_deployment(&self, job: &str) -> Option<&corral_types::Deployment> {
        StateView::latest_deployment(self.base, job)
    }
}
