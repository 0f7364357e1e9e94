//! `/v1/volumes`: the records (list, one, snapshots), the agents' claims
//! and reports, and what users ask of a volume's node (snapshot now,
//! restore, delete), forwarded to the agent that holds it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_types::api::{VolumeClaim, VolumeReport, VolumeRestoreRequest};
use corral_types::{Volume, VolumeSnapshot};
use serde::Deserialize;

use crate::ServerError;
use crate::core::Core;
use crate::error::Resource;
use crate::ops::volume_restore as restore;
use crate::ops::volumes as ops;

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
    let resp = ops::agent_call(&core, &v, reqwest::Method::POST, "snapshot", None).await?;
    Ok(Json(resp))
}

/// Replace the volume's data with a snapshot's or a backup's (refused
/// while in use), or make a new volume from it (`as`).
pub async fn restore(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(r): Json<VolumeRestoreRequest>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let v = find(&core, &id)?;
    if let Some(new_id) = &r.as_volume {
        let job = restore::source(&core, &v, &r.snapshot)?;
        let made = restore::restore_as(&core, &v, job, new_id).await?;
        let node = core
            .store
            .snapshot()
            .node_by_id(&made.node_id)
            .map_or(made.node_id.clone(), |n| n.name.clone());
        return Ok(Json(serde_json::json!({
            "volume": made.id,
            "restored": r.snapshot,
            "from": id,
            "node": node,
            "size": made.size,
        })));
    }
    if let Some(why) = ops::in_use(&core.store.snapshot(), &v) {
        return Err(ServerError::Conflict(format!(
            "{why}; or restore it as a new volume beside it with `corral volume restore {id} {} --as <job>.<volume>`",
            r.snapshot
        )));
    }
    let job = restore::source(&core, &v, &r.snapshot)?;
    let body = serde_json::to_value(&job).map_err(|e| ServerError::Internal(e.to_string()))?;
    let resp = ops::agent_call(&core, &v, reqwest::Method::POST, "restore", Some(body)).await?;
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
    // An allocation waiting for a restore would start empty without it.
    if v.restoring()
        && let Some(a) = restore::awaited_by(&core.store.snapshot(), &id)
    {
        let (src, what) = v
            .origin
            .as_ref()
            .map_or(("VOL".into(), "SNAPSHOT|BACKUP".into()), |o| {
                let what = o
                    .snapshot
                    .clone()
                    .or_else(|| o.backup.as_ref().map(|b| b.id.chars().take(8).collect()))
                    .unwrap_or_else(|| "SNAPSHOT|BACKUP".into());
                (o.volume.clone(), what)
            });
        return Err(ServerError::Conflict(format!(
            "volume {id} is being restored and allocation {a} waits for it; restore it again with `corral volume restore {src} {what} --as {id}`, or stop its job first (`corral stop {}`)",
            v.job
        )));
    }
    match ops::agent_call(&core, &v, reqwest::Method::DELETE, "", None).await {
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

/// Back the volume up now (to its spec's target).
pub async fn backup(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<corral_types::VolumeBackup>, ServerError> {
    crate::backups::run_now(&core, &id).await.map(Json)
}

/// An agent asks what to restore for a lost node's volume.
pub async fn recover(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(r): Json<corral_types::api::VolumeRecover>,
) -> Result<Json<corral_types::api::VolumeRecovery>, ServerError> {
    ops::recovery(&core, &id, &r).map(Json)
}

/// Stale copies set aside on every node that answers (`corral volume ls
/// --quarantined`); nodes that are down are skipped.
pub async fn quarantined(
    State(core): State<Arc<Core>>,
) -> Result<Json<Vec<corral_types::api::QuarantinedCopy>>, ServerError> {
    let nodes: Vec<_> = core
        .store
        .snapshot()
        .nodes_iter()
        .filter(|n| n.status != corral_types::NodeStatus::Down)
        .map(|n| (**n).clone())
        .collect();
    // Every node at once: one slow or silent node costs its timeout once.
    let core = &core;
    let asks = nodes.iter().map(|n| async move {
        (
            n,
            ops::agent_get(core, n, "/v1/agent/volumes/quarantined").await,
        )
    });
    let mut out = Vec::new();
    for (n, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(v) => {
                let names: Vec<String> = serde_json::from_value(v).unwrap_or_default();
                out.extend(
                    names
                        .into_iter()
                        .map(|name| corral_types::api::QuarantinedCopy {
                            node_id: n.id.clone(),
                            node: n.name.clone(),
                            name,
                        }),
                );
            }
            Err(e) => {
                tracing::debug!(node = %n.name, error = %e, "cannot list quarantined volumes")
            }
        }
    }
    Ok(Json(out))
}
