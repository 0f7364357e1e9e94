//! Node operations shared by the HTTP handlers and in-process callers
//! (the scheduler simulator): registration, heartbeats, observed state.

use crate::error::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use corral_store::{State, Write};
use corral_types::units::Millis;
use corral_types::{
    AllocUpdate, Allocation, ClientStatus, EvalTrigger, HeartbeatResponse, Index, Node,
    NodeRegistration, NodeStatus,
};

use crate::ServerError;
use crate::core::{Core, now_ms};

/// The node a user means: by exact id, else by name, else by unique id
/// prefix. Names need not be unique (a rebuilt machine registers under
/// its old name with a new id, the old one stays down): a name that two
/// nodes carry is refused with their ids rather than guessed, and so is
/// one name that is also a prefix of another node's id.
pub fn resolve<'a>(state: &'a State, key: &str) -> Result<&'a Arc<Node>, ServerError> {
    if let Some(n) = state.node_by_id(key) {
        return Ok(n);
    }
    let named: Vec<&Arc<Node>> = state.nodes_iter().filter(|n| n.name == key).collect();
    if named.is_empty() {
        return crate::api::by_prefix(
            crate::error::Resource::Node,
            key,
            None,
            state.nodes_iter().map(|n| (n.id.as_str(), n)),
        );
    }
    // A name can look like another node's short id (the one `node ls`
    // shows): neither reading may win silently.
    let candidates: Vec<&Arc<Node>> = state
        .nodes_iter()
        .filter(|n| n.name == key || n.id.starts_with(key))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        several => Err(ServerError::BadRequest(format!(
            "node name {key:?} is ambiguous: {} nodes answer to it by name or id prefix ({}); give the node's full id instead",
            several.len(),
            several
                .iter()
                .map(|n| format!("{} ({})", n.id, n.display_status()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

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
    // Both appear in URL paths (`corral node drain NAME`), where the API
    // refuses anything else.
    crate::api::valid_id("id", &reg.id)?;
    crate::api::valid_id("name", &reg.name)?;
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
                drain_deadline: prev.and_then(|n| n.drain_deadline),
                resources: reg.resources,
                attributes: reg.attributes,
                labels: reg.labels,
                drivers: reg.drivers,
                port_range: reg.port_range,
                last_heartbeat: now,
                registered_at: prev.map(|n| n.registered_at).unwrap_or(now),
                down_since: None,
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
        .ok_or_else(|| ServerError::not_found(Resource::Node, id))?;
    if node.status == NodeStatus::Down {
        // Marked down while it was away: it must register again so the
        // server re-evaluates what it still runs.
        return Err(ServerError::not_found(Resource::Node, id));
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
    let (index, (freed, evals)) = core
        .write(move |state, _| {
            let mut writes = Vec::new();
            let mut freed = false;
            let mut migrations = std::collections::BTreeSet::new();
            let mut stopped = std::collections::BTreeSet::new();
            let mut failed = std::collections::BTreeSet::new();
            let mut seen = BTreeMap::new();
            let mut rolling = Rolling::default();
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
                // Health is decided once; a later report cannot flip it. A
                // deployment's allocation that failed before its agent
                // decided is unhealthy (as Nomad): otherwise the rollout
                // would count it as neither and move on.
                let health = cur.health.clone().or(u.health).or_else(|| {
                    (cur.deployment_id.is_some() && u.client == ClientStatus::Failed).then(|| {
                        corral_types::AllocHealth {
                            healthy: false,
                            at: now,
                            message: if u.message.is_empty() {
                                "the allocation failed before it became healthy".to_string()
                            } else {
                                format!("the allocation failed: {}", u.message)
                            },
                        }
                    })
                });
                if cur.client == u.client
                    && cur.tasks == u.tasks
                    && cur.client_message == u.message
                    && cur.checks == u.checks
                    && cur.health == health
                    && cur.volume_sync == u.volume_sync
                {
                    continue;
                }
                let mut a = (**cur).clone();
                a.client = u.client;
                a.tasks = u.tasks;
                a.client_message = u.message;
                a.checks = u.checks;
                // A move's copy is done: the allocation it replaces on the
                // draining node may stop now, so the copy can finish.
                let copied = !cur.volumes_copied()
                    && u.volume_sync
                        .as_ref()
                        .is_some_and(|s| s.phase >= corral_types::VolumePhase::Copied);
                a.volume_sync = u.volume_sync;
                if copied && replaces_draining(state, &a) {
                    migrations.insert(a.job.clone());
                }
                // A rolling deployment moves on when one of its allocations
                // is decided healthy. (Nothing waits on the health of a new
                // job's allocations: every slot was placed at once. The
                // watcher re-evaluates on promotion and on failure.)
                if a.health.is_none()
                    && health.is_some()
                    && a.deployment_id.is_some()
                    && rolling.get(state, &a)
                {
                    migrations.insert(a.job.clone());
                }
                a.health = health;
                a.modified_at = now;
                freed |= a.client.is_terminal();
                // A migration off a draining node, or a rolling update,
                // moves on when a replacement runs (or fails).
                if cur.client != a.client
                    && a.client != ClientStatus::Pending
                    && (replaces_draining(state, &a) || rolling.get(state, &a))
                {
                    migrations.insert(a.job.clone());
                }
                // An allocation that should run ended without failing: its
                // agent stopped it (a `corral dev` shut down, a node's
                // tasks stopped with it). The restart policy never ends
                // an allocation that way, so its slot is filled again.
                if cur.client != a.client
                    && a.client == ClientStatus::Complete
                    && a.desired == corral_types::DesiredStatus::Run
                {
                    stopped.insert(a.job.clone());
                }
                // Its restart policy gave up: the reschedule policy decides
                // (the plan asks for a later look when it must wait).
                if cur.client != a.client
                    && a.client == ClientStatus::Failed
                    && a.desired == corral_types::DesiredStatus::Run
                {
                    failed.insert(a.job.clone());
                }
                writes.push(Write::Alloc(a));
            }
            // One evaluation per job: a migration's does the refill and the
            // reschedule too.
            let refill: Vec<_> = stopped.difference(&migrations).cloned().collect();
            let reschedule: Vec<_> = failed
                .iter()
                .filter(|j| !migrations.contains(*j) && !stopped.contains(*j))
                .cloned()
                .collect();
            let evals: Vec<_> = migrations
                .into_iter()
                .map(|j| Core::new_eval(&j, EvalTrigger::NodeDrain, now))
                .chain(
                    refill
                        .into_iter()
                        .map(|j| Core::new_eval(&j, EvalTrigger::AllocStopped, now)),
                )
                .chain(
                    reschedule
                        .into_iter()
                        .map(|j| Core::new_eval(&j, EvalTrigger::AllocFailed, now)),
                )
                .collect();
            writes.extend(evals.iter().cloned().map(Write::Eval));
            Ok::<_, ServerError>((writes, (freed, evals)))
        })
        .await?;
    core.enqueue(evals);
    if freed {
        core.capacity_changed();
    }
    Ok(index)
}

/// Whether an allocation's group still has live allocations of an older
/// job version (a rolling update is under way), asked once per group of a
/// report: a node reports many allocations of the same job at once.
#[derive(Default)]
struct Rolling(BTreeMap<(String, String), bool>);

impl Rolling {
    fn get(&mut self, state: &State, a: &Allocation) -> bool {
        *self
            .0
            .entry((a.job.clone(), a.group.clone()))
            .or_insert_with(|| {
                let Some(job) = state.job(&a.job) else {
                    return false;
                };
                // Older allocations still to replace: live ones, and failed
                // ones holding their slot (replaced within the rolling budget
                // too: the report that frees the budget must bring the
                // evaluation that replaces them).
                state.job_allocs(&a.job).iter().any(|o| {
                    o.group == a.group
                        && o.job_version != job.version
                        && (o.is_live()
                            || (o.desired == corral_types::DesiredStatus::Run
                                && o.client == ClientStatus::Failed))
                })
            })
    }
}

/// Whether the allocation replaces one on a draining node.
fn replaces_draining(state: &State, a: &Allocation) -> bool {
    a.previous
        .as_deref()
        .and_then(|p| state.alloc(p))
        .and_then(|old| state.node_by_id(&old.node_id))
        .is_some_and(|n| n.draining)
}

/// Start (or end) a drain: allocations move off the node, at most
/// `max_parallel` per group at a time, each replacement running before
/// the allocation it replaces stops; at the deadline the rest stop.
pub async fn drain(
    core: &Arc<Core>,
    id: &str,
    enable: bool,
    deadline: Duration,
) -> Result<(), ServerError> {
    let now = now_ms();
    let id = id.to_string();
    let (_, evals) = core
        .write(move |state, _| {
            let node = state
                .node_by_id(&id)
                .ok_or_else(|| ServerError::not_found(Resource::Node, &id))?;
            let mut n = (**node).clone();
            n.draining = enable;
            n.drain_deadline = enable.then(|| Millis::from_std(deadline).after(now));
            // Nomad's behaviour: a node being drained gets no new work, and
            // ending a drain makes it eligible again.
            n.eligible = !enable;
            let mut writes = vec![Write::Node(n)];
            let evals: Vec<_> = if enable {
                crate::heartbeat::jobs_on_node(state, &id)
                    .into_iter()
                    .map(|j| Core::new_eval(&j, EvalTrigger::NodeDrain, now))
                    .collect()
            } else {
                vec![]
            };
            writes.extend(evals.iter().cloned().map(Write::Eval));
            Ok((writes, evals))
        })
        .await?;
    core.enqueue(evals);
    if !enable {
        core.capacity_changed();
    }
    Ok(())
}

/// The drainer's tick: force drains whose deadline passed, and finish
/// drains with nothing left (the node stays ineligible, as in Nomad).
pub async fn drain_tick(core: &Arc<Core>, forced: &mut std::collections::HashSet<String>) {
    let now = now_ms();
    let snap = core.store.snapshot();
    for node in snap.nodes_iter().filter(|n| n.draining) {
        let live = snap.node_allocs(&node.id).iter().any(|a| a.is_live());
        if !live {
            let id = node.id.clone();
            let r = core
                .write(move |state, _| {
                    let Some(n) = state.node_by_id(&id) else {
                        return Ok((vec![], ()));
                    };
                    let mut n = (**n).clone();
                    n.draining = false;
                    n.drain_deadline = None;
                    n.eligible = false;
                    Ok((vec![Write::Node(n)], ()))
                })
                .await;
            match r {
                Ok(_) => {
                    tracing::info!(node = %node.name, "drain complete; the node stays ineligible")
                }
                Err(e) => tracing::warn!(node = %node.name, error = %e, "cannot finish the drain"),
            }
            forced.remove(&node.id);
            continue;
        }
        if node.drain_deadline.is_some_and(|d| now >= d) && forced.insert(node.id.clone()) {
            let jobs = crate::heartbeat::jobs_on_node(&snap, &node.id);
            let evals: Vec<_> = jobs
                .iter()
                .map(|j| Core::new_eval(j, EvalTrigger::NodeDrain, now))
                .collect();
            match core
                .commit(evals.iter().cloned().map(Write::Eval).collect())
                .await
            {
                Ok(_) => core.enqueue(evals),
                Err(e) => tracing::warn!(node = %node.name, error = %e, "cannot force the drain"),
            }
        }
    }
}

#[cfg(test)]
#[path = "nodes_tests.rs"]
mod tests;
