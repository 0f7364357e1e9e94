//! Node filters. Each returns the first reason a node cannot take one more
//! allocation of a group, checked in a fixed order (cheap and static first)
//! so failure reports are stable: status, drivers, constraints, then what
//! depends on the plan so far: distinct_hosts, cpu, memory, ports.

use std::fmt;

use corral_types::{Constraint, ConstraintOp, DriverKind, GroupSpec, Node, NodeStatus, Resources};
use regex::Regex;

use crate::ports;
use crate::usage::NodeUsage;

/// Why a node was filtered out. Rendered with `Display` in failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    NodeDown,
    NodeNotReady,
    Ineligible,
    Draining,
    DriverMissing(DriverKind),
    Constraint(&'a Constraint),
    DistinctHosts,
    Cpu,
    Memory,
    /// Volume space (the node's volumes directory) is taken.
    Disk,
    PortsExhausted,
    PortInUse(u16),
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NodeDown => f.write_str("node down"),
            Reason::NodeNotReady => f.write_str("node not ready"),
            Reason::Ineligible => f.write_str("node ineligible"),
            Reason::Draining => f.write_str("node draining"),
            Reason::DriverMissing(d) => write!(f, "driver {d} missing"),
            Reason::Constraint(c) => write!(f, "constraint {c}"),
            Reason::DistinctHosts => f.write_str("distinct_hosts"),
            Reason::Cpu => f.write_str("cpu exhausted"),
            Reason::Memory => f.write_str("memory exhausted"),
            Reason::Disk => f.write_str("volume space exhausted"),
            Reason::PortsExhausted => f.write_str("ports exhausted"),
            Reason::PortInUse(p) => write!(f, "port {p} in use"),
        }
    }
}

/// What one allocation of the group asks for: the sum of its tasks.
/// (Not `GroupSpec::resources`, which starts its sum from
/// `Resources::default()` and so adds a phantom 100m/256MiB per group.)
pub fn group_need(group: &GroupSpec) -> Resources {
    let mut r = Resources::ZERO;
    for t in &group.tasks {
        r.cpu.0 = r.cpu.0.saturating_add(t.resources.cpu.0);
        r.memory.0 = r.memory.0.saturating_add(t.resources.memory.0);
    }
    for v in &group.volumes {
        r.disk.0 = r.disk.0.saturating_add(v.size.0);
    }
    r
}

/// Whether the node takes new allocations at all.
pub fn check_status(node: &Node) -> Result<(), Reason<'static>> {
    match node.status {
        NodeStatus::Down => Err(Reason::NodeDown),
        NodeStatus::Initializing => Err(Reason::NodeNotReady),
        NodeStatus::Ready if !node.eligible => Err(Reason::Ineligible),
        NodeStatus::Ready if node.draining => Err(Reason::Draining),
        NodeStatus::Ready => Ok(()),
    }
}

/// The checks that depend only on the node and the group spec, with the
/// group's regexps compiled once.
pub struct StaticFilter<'a> {
    drivers: Vec<DriverKind>,
    constraints: Vec<(&'a Constraint, Option<Regex>)>,
    /// No constraint looks at what is unique to a node, so nodes of one
    /// class share a verdict.
    pub by_class: bool,
}

impl<'a> StaticFilter<'a> {
    pub fn new(group: &'a GroupSpec) -> Self {
        let mut drivers: Vec<DriverKind> = group.tasks.iter().map(|t| t.driver).collect();
        drivers.sort();
        drivers.dedup();
        let constraints = group
            .constraints
            .iter()
            .filter(|c| c.op != ConstraintOp::DistinctHosts)
            .map(|c| {
                // An invalid pattern (validation should have refused it)
                // matches no node: the constraint shows up as the reason.
                let re = match c.op {
                    ConstraintOp::Regexp => Regex::new(first(c)).ok(),
                    _ => None,
                };
                (c, re)
            })
            .collect();
        let by_class = group.constraints.iter().all(|c| !targets_unique(&c.attr));
        StaticFilter {
            drivers,
            constraints,
            by_class,
        }
    }

    /// Status, drivers, then constraints in spec order.
    pub fn check(&self, node: &Node) -> Result<(), Reason<'a>> {
        check_status(node)?;
        self.check_class(node)
    }

    /// Drivers and constraints: what the node's class decides.
    pub fn check_class(&self, node: &Node) -> Result<(), Reason<'a>> {
        for d in &self.drivers {
            if !node.drivers.iter().any(|nd| nd == d.as_str()) {
                return Err(Reason::DriverMissing(*d));
            }
        }
        for (c, re) in &self.constraints {
            if !constraint_holds(c, re.as_ref(), node) {
                return Err(Reason::Constraint(c));
            }
        }
        Ok(())
    }
}

/// Whether a constraint attribute is unique per node (its verdict cannot
/// be shared by a class).
fn targets_unique(attr: &str) -> bool {
    let rest = attr.strip_prefix("node.").unwrap_or(attr);
    let rest = rest.strip_prefix("attr.").unwrap_or(rest);
    matches!(rest, "name" | "id") || corral_types::UNIQUE_ATTRIBUTES.contains(&rest)
}

fn first(c: &Constraint) -> &str {
    c.values.first().map(String::as_str).unwrap_or("")
}

/// One attribute constraint against a node. A missing attribute fails `=`,
/// `regexp` and `in`, and passes `!=` (it is indeed not equal).
pub fn constraint_holds(c: &Constraint, re: Option<&Regex>, node: &Node) -> bool {
    let value = node.lookup(&c.attr);
    match c.op {
        ConstraintOp::Eq => value == Some(first(c)),
        ConstraintOp::Ne => value != Some(first(c)),
        ConstraintOp::Regexp => match (value, re) {
            (Some(v), Some(re)) => re.is_match(v),
            _ => false,
        },
        ConstraintOp::In => value.is_some_and(|v| c.values.iter().any(|x| x == v)),
        // Not an attribute rule; checked against the plan's usage.
        ConstraintOp::DistinctHosts => true,
    }
}

/// The checks that depend on what the node already holds (snapshot plus
/// this plan): distinct_hosts, cpu, memory, ports.
pub fn check_usage<'a>(
    group: &'a GroupSpec,
    need: Resources,
    node: &Node,
    usage: &NodeUsage,
) -> Result<(), Reason<'a>> {
    if group.distinct_hosts() && usage.group_count(&group.name) > 0 {
        return Err(Reason::DistinctHosts);
    }
    check_resources(need, node, usage)?;
    ports::check(group, node, usage)
}

/// Whether `need` fits in what the node has left.
pub fn check_resources(
    need: Resources,
    node: &Node,
    usage: &NodeUsage,
) -> Result<(), Reason<'static>> {
    if usage.cpu.saturating_add(need.cpu.0) > node.resources.cpu.0 {
        return Err(Reason::Cpu);
    }
    if usage.memory.saturating_add(need.memory.0) > node.resources.memory.0 {
        return Err(Reason::Memory);
    }
    if need.disk.0 > 0 && usage.disk.saturating_add(need.disk.0) > node.resources.disk.0 {
        return Err(Reason::Disk);
    }
    Ok(())
}
