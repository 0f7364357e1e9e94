//! Node operations shared by the HTTP handlers and in-process callers
//! (the scheduler simulator): registration, heartbeats, observed state.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_store::Write;
use corral_types::{
    AllocUpdate, EvalTrigger, HeartbeatResponse, Index, Node, NodeRegistration, NodeStatus,
};

use crate::ServerError;
use crate::core::{Core, now_ms};

/// An agent (re)joins. The node keeps its eligibility across restarts;
/// its status becomes ready, which may unblock evaluations.
pub async fn register(
    core: &Arc<Core>,
    reg: NodeRegistration,
) -> Result<HeartbeatResponse, ServerError> {
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
            let mut node = Node {
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
                class: 0,
                create_index: 0,
                modify_index: 0,
            };
            node.class = node.computed_class();
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
    Ok(HeartbeatResponse {
        heartbeat_ttl_ms: ttl.as_millis() as u64,
        index,
    })
}

pub fn heartbeat(core: &Arc<Core>, id: &str) -> Result<HeartbeatResponse, ServerError> {
    let s = core.store.snapshot();
    let node = s
        .node_by_id(id)
        .ok_or_else(|| ServerError::not_found("node", id))?;
    if node.status == NodeStatus::Down {
        // Marked down while it was away: it must register again so the
        // server re-evaluates what it still runs.
        return Err(ServerError::not_found("node", id));
    }
    let ttl = core.heartbeats.beat(id);
    Ok(HeartbeatResponse {
        heartbeat_ttl_ms: ttl.as_millis() as u64,
        index: s.index(),
    })
}

/// Observed state from the agent. Terminal states the server decided
/// (lost) are not overwritten; allocations on other nodes are refused.
pub async fn update_allocations(
    core: &Arc<Core>,
    node: &str,
    updates: Vec<AllocUpdate>,
) -> Result<Index, ServerError> {
    let now = now_ms();
    let node = node.to_string();
    let (index, freed) = core
        .write(move |state, _| {
            let mut writes = Vec::new();
            let mut freed = false;
            let mut seen = BTreeMap::new();
            for u in updates {
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
    Ok(index)
}
