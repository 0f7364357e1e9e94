//! Host ports. Bridge groups get ports from the node's range; host groups
//! use the declared numbers as they are. Picks start at a hash of the
//! allocation id rather than the lowest free port, so a port just released
//! by a stopped allocation is not handed straight to its replacement
//! (connections and router entries to the old one may linger).

use std::collections::BTreeMap;

use corral_types::{GroupSpec, NetworkMode, Node};

use crate::feasible::Reason;
use crate::hash::fnv1a;
use crate::usage::NodeUsage;

/// Whether the node has the ports the group needs.
pub fn check<'a>(group: &GroupSpec, node: &Node, usage: &NodeUsage) -> Result<(), Reason<'a>> {
    match group.network {
        NetworkMode::Bridge => {
            let need = group.ports().count();
            if need > 0 && free_in_range(node, usage) < need {
                return Err(Reason::PortsExhausted);
            }
            Ok(())
        }
        NetworkMode::Host => {
            let mut mine: Vec<u16> = Vec::new();
            for (_, _, port) in group.ports() {
                if usage.port_used(port) || mine.contains(&port) {
                    return Err(Reason::PortInUse(port));
                }
                mine.push(port);
            }
            Ok(())
        }
    }
}

fn range_len(node: &Node) -> usize {
    let (lo, hi) = node.port_range;
    if lo > hi { 0 } else { usize::from(hi - lo) + 1 }
}

fn free_in_range(node: &Node, usage: &NodeUsage) -> usize {
    let (lo, hi) = node.port_range;
    if lo > hi {
        return 0;
    }
    range_len(node) - usage.ports.range(lo..=hi).count()
}

/// Host ports for a new allocation on `node`, keyed `task.port`. Call only
/// after [`check`] passed; a port that cannot be found is left out (which
/// the plan applier's re-check does not catch, so `check` must be right).
pub fn assign(
    group: &GroupSpec,
    node: &Node,
    usage: &NodeUsage,
    alloc_id: &str,
) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    match group.network {
        NetworkMode::Host => {
            for (task, name, port) in group.ports() {
                out.insert(GroupSpec::port_key(task, name), port);
            }
        }
        NetworkMode::Bridge => {
            let len = range_len(node);
            if len == 0 {
                return out;
            }
            let (lo, _) = node.port_range;
            let start = (fnv1a(&[alloc_id]) % len as u64) as usize;
            // One walk around the range for all ports: no port is tried twice.
            let mut step = 0;
            for (task, name, _) in group.ports() {
                while step < len {
                    let p = lo + ((start + step) % len) as u16;
                    step += 1;
                    if !usage.port_used(p) {
                        out.insert(GroupSpec::port_key(task, name), p);
                        break;
                    }
                }
            }
        }
    }
    out
}
