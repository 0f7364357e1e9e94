use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use corral_scheduler::{PlanContext, StateView};
use corral_types::api::{
    JobListEntry, JobPlan, JobVersionView, JobView, PlanResponse, PlannedAlloc, PlannedStop,
};
use corral_types::spec::{SourceFormat, parse_jobs};
use corral_types::{Allocation, EvalTrigger, Index, Job, JobSpec, Node};
use serde::Deserialize;

use super::{Blocking, block_until};
use crate::core::{Core, now_ms};
use crate::views;
use crate::{ServerError, ops};

#[derive(Debug, Deserialize)]
pub struct SubmitQuery {
    /// Names the source in errors and gives the default job name.
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    plan: bool,
}

/// `POST /v1/jobs`: validate every job in the body, then store the new
/// versions and their evaluations in one transaction (all or nothing).
pub async fn submit(
    State(core): State<Arc<Core>>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ServerError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ServerError::BadRequest("the job spec is not UTF-8 text".into()))?;
    let file = q.filename.unwrap_or_else(|| "job.yaml".into());
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let format = if is_json {
        SourceFormat::Json
    } else {
        SourceFormat::detect(&file, text)
    };
    let specs = parse_jobs(text, &file, format).map_err(ServerError::Spec)?;
    use axum::response::IntoResponse;
    if q.plan {
        return Ok(Json(plan(&core, &specs)).into_response());
    }
    ops::jobs::submit(&core, specs)
        .await
        .map(|r| Json(r).into_response())
}

/// The scheduler's answer for the submitted specs, on the current state,
/// without storing anything.
fn plan(core: &Arc<Core>, specs: &[JobSpec]) -> PlanResponse {
    let snapshot = core.store.snapshot();
    let now = now_ms();
    let mut jobs = Vec::new();
    for spec in specs {
        let latest = snapshot.job(&spec.name);
        let unchanged = latest.is_some_and(|j| &j.spec == spec && !j.stopped);
        let version = match latest {
            Some(j) if unchanged => j.version,
            Some(j) => j.version + 1,
            None => 1,
        };
        let job = Job {
            name: spec.name.clone(),
            version,
            spec: spec.clone(),
            stopped: false,
            stable: false,
            reverts_to: None,
            submitted_at: now,
            create_index: 0,
            modify_index: 0,
        };
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

pub async fn list(State(core): State<Arc<Core>>) -> Json<Vec<JobListEntry>> {
    let s = core.store.snapshot();
    Json(s.jobs().map(|j| views::job_list_entry(&s, j)).collect())
}

/// `GET /v1/jobs/{name}`, optionally blocking until the job or its
/// allocations change.
pub async fn get(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    Query(q): Query<Blocking>,
) -> Result<Json<JobView>, ServerError> {
    let n = name.clone();
    let c = core.clone();
    block_until(&core, &q, move || job_index(&c, &n)).await?;
    let s = core.store.snapshot();
    let job = s
        .job(&name)
        .ok_or_else(|| ServerError::not_found("job", &name))?;
    Ok(Json(views::job_view(&s, job)))
}

/// The highest modify index among a job, its allocations and evaluations.
pub(super) fn job_index(core: &Core, name: &str) -> Index {
    let s = core.store.snapshot();
    let job = s.job(name).map(|j| j.modify_index).unwrap_or(0);
    let allocs = s
        .job_allocs(name)
        .iter()
        .map(|a| a.modify_index)
        .max()
        .unwrap_or(0);
    let evals = s
        .job_evals(name)
        .iter()
        .map(|e| e.modify_index)
        .max()
        .unwrap_or(0);
    job.max(allocs).max(evals)
}

pub async fn versions(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<JobVersionView>>, ServerError> {
    let s = core.store.snapshot();
    let mut v: Vec<JobVersionView> = s
        .job_versions(&name)
        .iter()
        .map(|j| JobVersionView::from(j.as_ref()))
        .collect();
    if v.is_empty() {
        return Err(ServerError::not_found("job", &name));
    }
    v.reverse();
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
pub struct StopQuery {
    #[serde(default)]
    purge: bool,
}

/// `DELETE /v1/jobs/{name}`: stop (keep the job and its history) or purge
/// (forget every version); either way its allocations are stopped.
pub async fn stop(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let (index, eval_id) = ops::jobs::stop(&core, &name, q.purge).await?;
    Ok(Json(
        serde_json::json!({"index": index, "eval_id": eval_id}),
    ))
}
