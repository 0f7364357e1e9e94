//! The plan applier's re-check (Nomad's `evaluateNodePlan`): a worker
//! planned on a snapshot, other plans may have been committed since, so
//! before committing, each node's part of the plan is checked again against
//! the latest state.

use corral_types::{Allocation, Node};

use crate::StateView;
use crate::feasible::{check_resources, check_status};

/// Whether `allocs_to_add` still fit on `node` given the live allocations
/// in `state`, once `allocs_removed` (ids) are gone. Checks that the node
/// still takes allocations, cpu, memory and host port collisions. Adding
/// nothing always fits (stops and in-place updates need no room).
pub fn fits(
    state: &dyn StateView,
    node: &Node,
    allocs_to_add: &[&Allocation],
    allocs_removed: &[&str],
) -> Result<(), String> {
    if allocs_to_add.is_empty() {
        return Ok(());
    }
    check_status(node).map_err(|r| format!("node {}: {r}", node.name))?;
    // The state's usage less what is removed; an added allocation already
    // in the state (an update) counts once.
    let mut usage = state.node_usage(&node.id);
    let mut taken_off: Vec<&str> = Vec::new();
    let ids = allocs_removed
        .iter()
        .copied()
        .chain(allocs_to_add.iter().map(|a| a.id.as_str()));
    for id in ids {
        if taken_off.contains(&id) {
            continue;
        }
        if let Some(cur) = state.alloc(id)
            && cur.node_id == node.id
            && cur.is_live()
        {
            usage.remove(cur, "");
            taken_off.push(id);
        }
    }
    for a in allocs_to_add {
        check_resources(a.resources, node, &usage)
            .map_err(|r| format!("node {}: {r}", node.name))?;
        let mut mine: Vec<u16> = Vec::new();
        for p in a.ports.values() {
            if usage.port_used(*p) || mine.contains(p) {
                return Err(format!("node {}: port {p} in use", node.name));
            }
            mine.push(*p);
        }
        usage.add(a, "");
    }
    Ok(())
}
