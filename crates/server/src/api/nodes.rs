//! Node endpoints, for operators (list, status, eligibility) and for
//! agents (register, heartbeat, their allocations, status updates).

use crate::error::Resource;
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_store::Write;
use corral_types::api::{AllocUpdates, NodeAllocations, NodeView};
use corral_types::{DesiredStatus, HeartbeatResponse, NodeRegistration};
use serde::Deserialize;

use super::{Blocking, block_until};
use crate::core::Core;
use crate::views;
use crate::{ServerError, ops};

pub async fn list(State(core): State<Arc<Core>>) -> Json<Vec<NodeView>> {
    let s = core.store.snapshot();
    Json(s.nodes_iter().map(|n| views::node_view(&s, n)).collect())
}

/// By id, unique id prefix, or name.
pub async fn get(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ServerError> {
    let s = core.store.snapshot();
    let n = ops::nodes::resolve(&s, &id)?;
    Ok(Json(views::node_view(&s, n)))
}

/// An agent (re)joins.
pub async fn register(
    State(core): State<Arc<Core>>,
    Json(reg): Json<NodeRegistration>,
) -> Result<Json<HeartbeatResponse>, ServerError> {
    ops::nodes::register(&core, reg).await.map(Json)
}

pub async fn heartbeat(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<HeartbeatResponse>, ServerError> {
    ops::nodes::heartbeat(&core, &id).map(Json)
}

#[derive(Debug, Deserialize)]
pub struct DrainBody {
    #[serde(default = "yes")]
    enable: bool,
    /// How long before what is left is stopped, e.g. `5m` (default 1h).
    #[serde(default)]
    deadline: Option<String>,
}

fn yes() -> bool {
    true
}

pub async fn drain(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<DrainBody>,
) -> Result<Json<NodeView>, ServerError> {
    let deadline = match body.deadline.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(d) => corral_types::units::parse_duration(d)
            .map_err(|e| ServerError::BadRequest(format!("deadline: {e}")))?
            .as_std(),
    };
    let node_id = ops::nodes::resolve(&core.store.snapshot(), &id)?.id.clone();
    ops::nodes::drain(&core, &node_id, body.enable, deadline).await?;
    let s = core.store.snapshot();
    let n = s
        .node_by_id(&node_id)
        .ok_or_else(|| ServerError::not_found(Resource::Node, &node_id))?;
    Ok(Json(views::node_view(&s, n)))
}

#[derive(Debug, Deserialize)]
pub struct EligibilityBody {
    eligible: bool,
}

pub async fn eligibility(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<EligibilityBody>,
) -> Result<Json<NodeView>, ServerError> {
    let id = ops::nodes::resolve(&core.store.snapshot(), &id)?.id.clone();
    let i = id.clone();
    core.write(move |state, _| {
        let node = state
            .node_by_id(&i)
            .ok_or_else(|| ServerError::not_found(Resource::Node, &i))?;
        let mut n = (**node).clone();
        n.eligible = body.eligible;
        Ok((vec![Write::Node(n)], ()))
    })
    .await?;
    if body.eligible {
        core.capacity_changed();
    }
    let s = core.store.snapshot();
    let n = s
        .node_by_id(&id)
        .ok_or_else(|| ServerError::not_found(Resource::Node, &id))?;
    Ok(Json(views::node_view(&s, n)))
}

/// The agent's blocking query: every allocation on the node that it
/// should run or stop, plus the job versions they need.
pub async fn allocations(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Query(q): Query<Blocking>,
) -> Result<Json<NodeAllocations>, ServerError> {
    if core.store.snapshot().node_by_id(&id).is_none() {
        return Err(ServerError::not_found(Resource::Node, &id));
    }
    let c = core.clone();
    let n = id.clone();
    let index = block_until(&core, &q, move || {
        let s = c.store.snapshot();
        let allocs = s.node_allocs(&n);
        allocs
            .iter()
            .map(|a| a.modify_index)
            .max()
            .unwrap_or(0)
            .max(s.node_by_id(&n).map(|n| n.create_index).unwrap_or(0))
    })
    .await?;
    let s = core.store.snapshot();
    let allocations: Vec<_> = s
        .node_allocs(&id)
        .into_iter()
        .filter(|a| !a.client.is_terminal())
        .map(|a| (**a).clone())
        .collect();
    let versions: BTreeSet<(String, u64)> = allocations
        .iter()
        .filter(|a| a.desired == DesiredStatus::Run)
        .map(|a| (a.job.clone(), a.job_version))
        .collect();
    let jobs = versions
        .iter()
        .filter_map(|(n, v)| s.job_versions(n).into_iter().find(|j| j.version == *v))
        .map(|j| (*j).clone())
        .collect();
    Ok(Json(NodeAllocations {
        index,
        allocations,
        jobs,
    }))
}

/// Observed state from the agent.
pub async fn update_allocations(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<AllocUpdates>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let index = ops::nodes::update_allocations(&core, &id, body.updates).await?;
    Ok(Json(serde_json::json!({ "index": index })))
}
