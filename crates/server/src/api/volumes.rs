//! `/v1/volumes`: the records (list, one, snapshots), the agents' claims
//! and reports, and what users ask of a volume's node (snapshot now,
//! restore, delete), forwarded to the agent that holds it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_types::api::{VolumeClaim, VolumeReport, VolumeRestoreRequest};
use corral_types::{NodeStatus, Volume, VolumeSnapshot};
use serde::Deserialize;

use crate::ServerError;
use crate::core::Core;
use crate::error::Resource;
use crate::ops::volumes as ops;

/// How long an agent may take for a snapshot, a restore or a delete.
const AGENT_ANSWER: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    job: Option<String>,
}

pub async fn list(State(core): State<Arc<Core>>, Query(q): Query<ListQuery>) -> Json<Vec<Volume>> {
    let s = core.store.snapshot();
    Json(
        s.volumes()
            .filter(|v| q.job.as_ref().is_none_or(|j| &v.job == j))
            .map(|v| (**v).clone())
            .collect(),
    )
}

fn find(core: &Core, id: &str) -> Result<Volume, ServerError> {
    core.store
        .snapshot()
        .volume(id)
        .map(|v| (**v).clone())
        .ok_or_else(|| ServerError::not_found(Resource::Volume, id))
}

pub async fn get(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<Volume>, ServerError> {
    find(&core, &id).map(Json)
}

pub async fn snapshots(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<VolumeSnapshot>>, ServerError> {
    find(&core, &id).map(|v| Json(v.snapshots))
}

pub async fn claim(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(c): Json<VolumeClaim>,
) -> Result<Json<Volume>, ServerError> {
    ops::claim(&core, &id, c).await.map(Json)
}

pub async fn report(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(r): Json<VolumeReport>,
) -> Result<Json<Volume>, ServerError> {
    ops::report(&core, &id, r).await.map(Json)
}

/// Take a snapshot now, on the volume's node.
pub async fn snapshot(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let v = find(&core, &id)?;
    let resp = agent_call(&core, &v, reqwest::Method::POST, "snapshot", None).await?;
    Ok(Json(resp))
}

/// Replace the volume's data with a snapshot's; refused while in use.
pub async fn restore(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(r): Json<VolumeRestoreRequest>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let v = find(&core, &id)?;
    if let Some(why) = ops::in_use(&core.store.snapshot(), &v) {
        return Err(ServerError::Conflict(why));
    }
    if !v.snapshots.iter().any(|s| s.name == r.snapshot) {
        return Err(ServerError::BadRequest(format!(
            "volume {id} has no snapshot {:?}; list them with `corral volume snapshots {id}`",
            r.snapshot
        )));
    }
    let body = serde_json::to_value(&r).map_err(|e| ServerError::Internal(e.to_string()))?;
    let resp = agent_call(&core, &v, reqwest::Method::POST, "restore", Some(body)).await?;
    Ok(Json(resp))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// Forget the record even when its node cannot delete the data (it
    /// is down): the copy is quarantined if that node comes back.
    #[serde(default)]
    force: bool,
}

/// Delete the volume's data on its node, then the record.
pub async fn delete(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let v = find(&core, &id)?;
    if let Some(why) = ops::in_use(&core.store.snapshot(), &v) {
        return Err(ServerError::Conflict(why));
    }
    match agent_call(&core, &v, reqwest::Method::DELETE, "", None).await {
        Ok(_) => {}
        Err(e @ ServerError::Agent { .. }) if !q.force => {
            return Err(ServerError::Conflict(format!(
                "{e}; bring the node back, or forget the volume with `corral volume delete {id} --yes --force` (its copy there is then set aside when the node returns)"
            )));
        }
        Err(ServerError::Agent { .. }) => {}
        Err(e) => return Err(e),
    }
    ops::forget(&core, &id).await?;
    Ok(Json(serde_json::json!({ "deleted": id })))
}

/// Ask the agent holding `v` (`/v1/agent/volumes/{id}/{action}`).
async fn agent_call(
    core: &Core,
    v: &Volume,
    method: reqwest::Method,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, ServerError> {
    let node = core
        .store
        .snapshot()
        .node_by_id(&v.node_id)
        .map(|n| (**n).clone())
        .ok_or_else(|| ServerError::not_found(Resource::Node, &v.node_id))?;
    let agent_err = |message: String| ServerError::Agent {
        node: node.name.clone(),
        message,
    };
    if node.status == NodeStatus::Down {
        return Err(agent_err(format!("is down; volume {} lives there", v.id)));
    }
    let mut url = format!(
        "{}/v1/agent/volumes/{}",
        node.address.trim_end_matches('/'),
        v.id
    );
    if !action.is_empty() {
        url = format!("{url}/{action}");
    }
    let mut req = core
        .http
        .request(method, &url)
        .query(&[("generation", v.generation)])
        .timeout(AGENT_ANSWER);
    if let Some(t) = &core.config.api_token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| agent_err(format!("cannot reach the agent at {}: {e}", node.address)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| agent_err(format!("reading the agent's answer: {e}")))?;
    if !status.is_success() {
        return Err(if status == reqwest::StatusCode::CONFLICT {
            ServerError::Conflict(text.trim().to_owned())
        } else {
            agent_err(text.trim().to_owned())
        });
    }
    serde_json::from_str(&text).map_err(|e| agent_err(format!("answer is not JSON: {e}")))
}
