use std::sync::Arc;

use crate::error::Resource;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use corral_types::Index;
use corral_types::api::{JobListEntry, JobVersionView, JobView};
use corral_types::spec::{SourceFormat, parse_jobs_located};
use serde::Deserialize;

use super::{Blocking, block_until};
use crate::core::Core;
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
    let jobs = parse_jobs_located(text, &file, format).map_err(ServerError::Spec)?;
    use axum::response::IntoResponse;
    if q.plan {
        let state = core.store.snapshot();
        ops::claims::check(&state, &jobs, &core.config.domain)?;
        // What `corral run` refuses, the plan refuses too (a shrink).
        ops::volumes::check(&state, &jobs, &core.config.backup_targets)?;
        let specs: Vec<_> = jobs.into_iter().map(|j| j.spec).collect();
        return Ok(Json(ops::plan::plan(&core, &specs)).into_response());
    }
    ops::jobs::submit(&core, jobs)
        .await
        .map(|r| Json(r).into_response())
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
        .ok_or_else(|| ServerError::not_found(Resource::Job, &name))?;
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
        return Err(ServerError::not_found(Resource::Job, &name));
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

/// `POST /v1/jobs/{name}/scale` with `{"group": G, "count": N}`.
pub async fn scale(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    Json(req): Json<corral_types::api::ScaleRequest>,
) -> Result<Json<corral_types::api::SubmitResponse>, ServerError> {
    crate::ops::scale::scale(&core, &name, req.group, req.count)
        .await
        .map(Json)
}
