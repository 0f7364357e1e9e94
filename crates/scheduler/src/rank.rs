//! Scoring feasible nodes. A score is compared lexicographically: first the
//! group's `spread` (fewest allocations on the node's attribute value wins,
//! so an explicit spread request always beats packing), then the fit
//! (bin-pack or spread algorithm) minus the job anti-affinity penalty.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use corral_types::{Node, Resources};

use crate::config::Algorithm;
use crate::usage::NodeUsage;

/// How well `need` fits on the node after the usage so far, in `[0, 1]`.
/// Nomad's formula: with `free` the fraction left after placing,
/// `10^free_cpu + 10^free_mem` is 2 on a full node and 20 on an empty one;
/// bin-pack prefers the low end, spread the high end.
pub fn fit(algorithm: Algorithm, node: &Node, usage: &NodeUsage, need: Resources) -> f64 {
    let free_cpu = free_fraction(node.resources.cpu.0, usage.cpu.saturating_add(need.cpu.0));
    let free_mem = free_fraction(
        node.resources.memory.0,
        usage.memory.saturating_add(need.memory.0),
    );
    let total = 10f64.powf(free_cpu) + 10f64.powf(free_mem);
    let raw = match algorithm {
        Algorithm::Binpack => 20.0 - total,
        Algorithm::Spread => total - 2.0,
    };
    raw.clamp(0.0, 18.0) / 18.0
}

fn free_fraction(capacity: u64, used: u64) -> f64 {
    if capacity == 0 {
        return 0.0;
    }
    (1.0 - used as f64 / capacity as f64).clamp(0.0, 1.0)
}

/// Penalty for each allocation of the same job and group already on the
/// node, relative to the group's count (Nomad's job anti-affinity): spreads
/// a job over nodes so one node failure does not take all of it.
pub fn anti_affinity(collisions: u32, desired: u32) -> f64 {
    f64::from(collisions) / f64::from(desired.max(1))
}

/// Subtracted from the fit of the node a rescheduled allocation failed on:
/// more than any fit difference (fit is in `[0, 1]`), so another feasible
/// node always wins (Nomad's reschedule penalty).
pub const RESCHEDULE_PENALTY: f64 = 2.0;

/// Allocations of one group per value of the spread attribute (snapshot
/// plus this plan).
#[derive(Debug, Clone, Default)]
pub struct SpreadCounts {
    attr: String,
    counts: BTreeMap<String, u32>,
}

impl SpreadCounts {
    pub fn new(attr: &str) -> Self {
        SpreadCounts {
            attr: attr.to_owned(),
            counts: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, node: &Node) {
        if let Some(v) = node.lookup(&self.attr) {
            *self.counts.entry(v.to_owned()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, node: &Node) {
        if let Some(v) = node.lookup(&self.attr)
            && let Some(n) = self.counts.get_mut(v)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Lower is better: the count on the node's value; nodes without the
    /// attribute come last (they cannot make the spread even).
    pub fn penalty(&self, node: &Node) -> u64 {
        match node.lookup(&self.attr) {
            Some(v) => u64::from(self.counts.get(v).copied().unwrap_or(0)),
            None => u64::MAX,
        }
    }
}

/// A feasible node's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// From [`SpreadCounts::penalty`]; 0 when the group has no spread.
    pub spread: u64,
    /// Fit minus anti-affinity.
    pub fit: f64,
}

impl Score {
    /// Total order: lower spread penalty first, then higher fit.
    pub fn cmp_better(&self, other: &Score) -> Ordering {
        other
            .spread
            .cmp(&self.spread)
            .then(self.fit.total_cmp(&other.fit))
    }

    pub fn is_better_than(&self, other: &Score) -> bool {
        self.cmp_better(other) == Ordering::Greater
    }
}
