//! Node endpoints, for operators (list, status, eligibility) and for
//! agents (register, heartbeat, their allocations, status updates).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use corral_store::Write;
use corral_types::api::{AllocUpdates, NodeAllocations, NodeView};
use corral_types::{
    DesiredStatus, EvalTrigger, HeartbeatResponse, Node, NodeRegistration, NodeStatus,
};
use serde::Deserialize;

use super::{Blocking, block_until, by_prefix};
use crate::ServerError;
use crate::core::{Core, now_ms};
use crate::views;

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
    let by_name = s.nodes_iter().find(|n| n.name == id);
    let n = by_prefix(
        "node",
        &id,
        s.node_by_id(&id).or(by_name),
        s.nodes_iter().map(|n| (n.id.as_str(), n)),
    )?;
    Ok(Json(views::node_view(&s, n)))
}

/// An agent (re)joins. The node keeps its eligibility across restarts;
/// its status becomes ready, which may unblock evaluations.
pub async fn register(
    State(core): State<Arc<Core>>,
    Json(reg): Json<NodeRegistration>,
) -> Result<Json<HeartbeatResponse>, ServerError> {
    if reg.id.is_empty() || reg.name.is_empty() {
        return Err(ServerError::BadRequest(
            "node registration needs `id` and `name`".into(),
        ));
    }
    let now = now_ms();
    let id = reg.id.clone();
    let (index, evals) = core
        .write(move |state, _| {
            let prev = state.node_by_id(&reg.id);
            let was_down = prev.is_some_and(|n| n.status == NodeStatus::Down);
            let node = Node {
                id: reg.id.clone(),
                name: reg.name,
                address: reg.address,
                status: NodeStatus::Ready,
                eligible: prev.is_none_or(|n| n.eligible),
                draining: prev.is_some_and(|n| n.draining),
                resources: reg.resources,
                attributes: reg.attributes,
                labels: reg.labels,
                drivers: reg.drivers,
                port_range: reg.port_range,
                last_heartbeat: now,
                registered_at: prev.map(|n| n.registered_at).unwrap_or(now),
                create_index: 0,
                modify_index: 0,
            };
            let mut writes = vec![Write::Node(node)];
            // A node back from the dead may still run allocations that were
            // replaced; an evaluation per job lets the scheduler settle them.
            let evals: Vec<_> = if was_down {
                crate::heartbeat::jobs_on_node(state, &reg.id)
                    .into_iter()
                    .map(|j| Core::new_eval(&j, EvalTrigger::NodeUpdate, now))
                    .collect()
            } else {
                vec![]
            };
            writes.extend(evals.iter().cloned().map(Write::Eval));
            Ok::<_, ServerError>((writes, evals))
        })
        .await?;
    let ttl = core.heartbeats.beat(&id);
    core.enqueue(evals);
    core.capacity_changed();
    tracing::info!(node = %id, "node registered");
    Ok(Json(HeartbeatResponse {
        heartbeat_ttl_ms: ttl.as_millis() as u64,
        index,
    }))
}

pub async fn heartbeat(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
) -> Result<Json<HeartbeatResponse>, ServerError> {
    let s = core.store.snapshot();
    let node = s
        .node_by_id(&id)
        .ok_or_else(|| ServerError::not_found("node", &id))?;
    if node.status == NodeStatus::Down {
        // Marked down while it was away: it must register again so the
        // server re-evaluates what it still runs.
        return Err(ServerError::not_found("node", &id));
    }
    let ttl = core.heartbeats.beat(&id);
    Ok(Json(HeartbeatResponse {
        heartbeat_ttl_ms: ttl.as_millis() as u64,
        index: s.index(),
    }))
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
    let i = id.clone();
    core.write(move |state, _| {
        let node = state
            .node_by_id(&i)
            .ok_or_else(|| ServerError::not_found("node", &i))?;
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
        .ok_or_else(|| ServerError::not_found("node", &id))?;
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
        return Err(ServerError::not_found("node", &id));
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
    .await;
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

/// Observed state from the agent. Terminal states the server decided
/// (lost) are not overwritten; allocations on other nodes are refused.
pub async fn update_allocations(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    Json(body): Json<AllocUpdates>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let now = now_ms();
    let node = id.clone();
    let (index, freed) = core
        .write(move |state, _| {
            let mut writes = Vec::new();
            let mut freed = false;
            let mut seen = BTreeMap::new();
            for u in body.updates {
                seen.insert(u.id.clone(), u);
            }
            for (_, u) in seen {
                let Some(cur) = state.alloc(&u.id) else {
                    continue;
                };
                if cur.node_id != node || cur.client.is_terminal() {
                    continue;
                }
                if cur.client == u.client && cur.tasks == u.tasks && cur.client_message == u.message
                {
                    continue;
                }
                let mut a = (**cur).clone();
                a.client = u.client;
                a.tasks = u.tasks;
                a.client_message = u.message;
                a.modified_at = now;
                freed |= a.client.is_terminal();
                writes.push(Write::Alloc(a));
            }
            Ok::<_, ServerError>((writes, freed))
        })
        .await?;
    if freed {
        core.capacity_changed();
    }
    Ok(Json(serde_json::json!({ "index": index })))
}
