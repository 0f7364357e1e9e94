//! Per-plan accounting: what each node has in use once this plan's stops
//! and placements are applied, so successive placements of one plan see
//! each other without copying the snapshot. Built lazily per node, because
//! a placement only visits a handful of nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use corral_types::Allocation;

use crate::StateView;

/// A fixed hasher (FNV-1a): deterministic, no OS randomness, and cheap for
/// the short keys hashed at every node visited.
pub(crate) type FixedState = BuildHasherDefault<crate::hash::Fnv>;
pub(crate) type FixedMap<K, V> = HashMap<K, V, FixedState>;
pub(crate) type FixedSet<K> = HashSet<K, FixedState>;

/// What the live allocations on one node hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Millicores.
    pub cpu: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes of volumes reserved.
    pub disk: u64,
    /// Host port -> number of holders. A count, not a set, so releasing one
    /// of two colliding holders keeps the port taken.
    pub ports: BTreeMap<u16, u32>,
    /// Live allocations of the job being scheduled, by group (for
    /// distinct_hosts and anti-affinity).
    pub groups: BTreeMap<String, u32>,
}

impl NodeUsage {
    /// Usage of the live allocations in `allocs`, skipping `skip` ids.
    pub fn from_allocs<'a>(
        allocs: impl IntoIterator<Item = &'a Allocation>,
        job: &str,
        skip: impl Fn(&str) -> bool,
    ) -> NodeUsage {
        let mut u = NodeUsage::default();
        for a in allocs {
            if a.is_live() && !skip(&a.id) {
                u.add(a, job);
            }
        }
        u
    }

    pub fn add(&mut self, a: &Allocation, job: &str) {
        self.cpu += a.resources.cpu.0;
        self.memory += a.resources.memory.0;
        self.disk += a.resources.disk.0;
        for p in a.ports.values() {
            *self.ports.entry(*p).or_default() += 1;
        }
        if a.job == job {
            *self.groups.entry(a.group.clone()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, a: &Allocation, job: &str) {
        self.cpu = self.cpu.saturating_sub(a.resources.cpu.0);
        self.memory = self.memory.saturating_sub(a.resources.memory.0);
        self.disk = self.disk.saturating_sub(a.resources.disk.0);
        for p in a.ports.values() {
            if let Some(n) = self.ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(p);
                }
            }
        }
        if a.job == job
            && let Some(n) = self.groups.get_mut(&a.group)
        {
            *n = n.saturating_sub(1);
        }
    }

    pub fn port_used(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }

    /// Live allocations of `group` (of the scheduled job) on the node.
    pub fn group_count(&self, group: &str) -> u32 {
        self.groups.get(group).copied().unwrap_or(0)
    }
}

/// Node usage as the snapshot plus this plan's decisions so far.
pub struct PlanUsage<'a> {
    state: &'a dyn StateView,
    job: String,
    /// Allocations this plan stops: they no longer hold anything.
    stopped: FixedSet<String>,
    /// The live ones among them, by node: taken off the state's usage.
    stopped_on: FixedMap<String, Vec<&'a Allocation>>,
    /// Live allocations of the job, by node and group.
    groups: FixedMap<String, BTreeMap<String, u32>>,
    /// Usage per node visited, and where each node's is in it (a visit
    /// looks up by `&str` and allocates nothing).
    usages: Vec<NodeUsage>,
    at: FixedMap<String, usize>,
}

impl<'a> PlanUsage<'a> {
    pub fn new(
        state: &'a dyn StateView,
        job: &str,
        stopped: impl IntoIterator<Item = String>,
    ) -> Self {
        let stopped: FixedSet<String> = stopped.into_iter().collect();
        let mut stopped_on: FixedMap<String, Vec<&'a Allocation>> = FixedMap::default();
        for id in &stopped {
            if let Some(a) = state.alloc(id)
                && a.is_live()
            {
                stopped_on.entry(a.node_id.clone()).or_default().push(a);
            }
        }
        let mut groups: FixedMap<String, BTreeMap<String, u32>> = FixedMap::default();
        for a in state.allocs_by_job(job) {
            if a.is_live() && !stopped.contains(&a.id) {
                *groups
                    .entry(a.node_id.clone())
                    .or_default()
                    .entry(a.group.clone())
                    .or_default() += 1;
            }
        }
        PlanUsage {
            state,
            job: job.to_owned(),
            stopped,
            stopped_on,
            groups,
            usages: Vec::new(),
            at: FixedMap::default(),
        }
    }

    /// Whether this plan already stops the allocation.
    pub fn is_stopped(&self, alloc_id: &str) -> bool {
        self.stopped.contains(alloc_id)
    }

    /// The node's usage: the state's, less what this plan stops, plus the
    /// job's group counts; taken on first use.
    pub fn node(&mut self, node_id: &str) -> &mut NodeUsage {
        if let Some(&i) = self.at.get(node_id)
            && i < self.usages.len()
        {
            return &mut self.usages[i];
        }
        let mut u = self.state.node_usage(node_id);
        for a in self.stopped_on.get(node_id).into_iter().flatten() {
            u.remove(a, "");
        }
        u.groups = self.groups.get(node_id).cloned().unwrap_or_default();
        self.at.insert(node_id.to_owned(), self.usages.len());
        self.usages.push(u);
        let last = self.usages.len() - 1;
        &mut self.usages[last]
    }

    /// Record a placement made by this plan.
    pub fn add(&mut self, a: &Allocation) {
        let job = self.job.clone();
        self.node(&a.node_id).add(a, &job);
    }

    /// Free what an allocation holds (a replacement about to be placed).
    pub fn release(&mut self, a: &Allocation) {
        let job = self.job.clone();
        self.node(&a.node_id).remove(a, &job);
    }
}
