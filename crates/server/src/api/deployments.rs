//! Deployments of a job and what users do to them; `revert` stores an
//! earlier version's spec as a new version.

use crate::error::Resource;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_types::Deployment;
use corral_types::api::{DeploymentAction, RevertRequest, SubmitResponse};

use super::{Blocking, block_until};
use crate::ServerError;
use crate::core::Core;
use crate::deployments::ops;

fn no_deployment(job: &str) -> ServerError {
    ServerError::NotFound {
        what: crate::error::Resource::DeploymentOfJob,
        id: job.to_string(),
    }
}

/// `GET /v1/jobs/{name}/deployment`: the newest one; blocks with `?index=`
/// until the state moves past it.
pub async fn latest(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    Query(q): Query<Blocking>,
) -> Result<Json<Deployment>, ServerError> {
    let c = core.clone();
    let n = name.clone();
    block_until(&core, &q, move || {
        let d = c
            .store
            .snapshot()
            .latest_deployment(&n)
            .map(|d| d.modify_index)
            .unwrap_or(0);
        super::jobs::job_index(&c, &n).max(d)
    })
    .await?;
    let s = core.store.snapshot();
    s.latest_deployment(&name)
        .map(|d| Json((**d).clone()))
        .ok_or_else(|| no_deployment(&name))
}

/// `GET /v1/jobs/{name}/deployments`: newest first.
pub async fn list(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Deployment>>, ServerError> {
    let s = core.store.snapshot();
    if s.job(&name).is_none() {
        return Err(ServerError::not_found(Resource::Job, &name));
    }
    let mut v: Vec<Deployment> = s
        .job_deployments(&name)
        .into_iter()
        .map(|d| (**d).clone())
        .collect();
    v.reverse();
    Ok(Json(v))
}

/// `POST /v1/jobs/{name}/deployment/{action}`.
pub async fn act(
    State(core): State<Arc<Core>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Deployment>, ServerError> {
    let action = match action.as_str() {
        "promote" => DeploymentAction::Promote,
        "fail" => DeploymentAction::Fail,
        "pause" => DeploymentAction::Pause,
        "resume" => DeploymentAction::Resume,
        other => {
            return Err(ServerError::BadRequest(format!(
                "unknown deployment action {other:?}: use promote, fail, pause or resume"
            )));
        }
    };
    ops::act(&core, &name, action).await.map(Json)
}

/// `POST /v1/jobs/{name}/revert` with `{"version": N}`.
pub async fn revert(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    Json(req): Json<RevertRequest>,
) -> Result<Json<SubmitResponse>, ServerError> {
    ops::revert(&core, &name, req.version).await.map(Json)
}

#[derive(Debug, serde::Deserialize)]
pub struct HealthRequest {
    healthy: bool,
}

/// `POST /v1/allocations/{id}/health` with `{"healthy": bool}`.
pub async fn set_health(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(req): Json<HealthRequest>,
) -> Result<Json<corral_types::api::AllocView>, ServerError> {
    let a = ops::set_health(&core, &id, req.healthy).await?;
    let s = core.store.snapshot();
    Ok(Json(corral_types::api::AllocView::new(
        &a,
        s.node_by_id(&a.node_id).map(|n| n.as_ref()),
    )))
}
