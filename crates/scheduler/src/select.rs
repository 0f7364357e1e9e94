//! Choosing a node for each placement. Like Nomad, nodes are not all scored
//! for every placement: they are visited in a pseudo-random order derived
//! from the eval id and group, and the best of the first `limit` feasible
//! ones wins (`limit = max(2, ceil(log2(nodes)))`; every node when the
//! group has a spread). The walk resumes where the previous placement of
//! the group stopped, so successive placements look at different nodes.
//! A placement fails only after every node was visited.

use std::collections::BTreeMap;

use corral_types::{
    Allocation, ClientStatus, DesiredStatus, GroupSpec, Job, Node, Plan, Resources, StopAlloc,
};

use crate::config::SchedulerConfig;
use crate::failure::placement_failure;
use crate::feasible::{self, Reason, StaticFilter};
use crate::hash::fnv1a;
use crate::ports;
use crate::rank::{self, Score, SpreadCounts};
use crate::reconcile::PlaceRequest;
use crate::usage::{FixedMap, NodeUsage, PlanUsage};
use crate::{PlanContext, StateView};

/// Fill the requested slots, appending to `plan.place`, `plan.stop` (for
/// replaced allocations) and `plan.failed` (in spec order).
///
/// Replacements go first (those that do not grow before those that do),
/// and failed ones are retried while others make progress, then fresh
/// slots: each replacement frees its old allocation's room, and this order
/// lets the same plan use that room rather than the next one.
pub fn place_all<'a>(
    config: &SchedulerConfig,
    state: &'a dyn StateView,
    job: &'a Job,
    eval_id: &str,
    requests: Vec<PlaceRequest<'a>>,
    ctx: &mut PlanContext<'_>,
    plan: &mut Plan,
) {
    let nodes = state.nodes();
    let stopped = plan.stop.iter().map(|s| s.id.clone());
    let mut usage = PlanUsage::new(state, &job.name, stopped);
    // One placer per group and version: a replacement may keep an older
    // version (see `reconcile`), with that version's resources and rules.
    let mut placers: BTreeMap<(&str, u64), GroupPlacer<'a, '_>> = BTreeMap::new();
    let mut place = |req: &PlaceRequest<'a>, usage: &mut PlanUsage<'a>, plan: &mut Plan| {
        placers
            .entry(key(req))
            .or_insert_with(|| {
                GroupPlacer::new(config, state, req.job, req.group, &nodes, eval_id, usage)
            })
            .place(req, state, usage, ctx, plan)
    };

    let (mut pending, fresh): (Vec<_>, Vec<_>) =
        requests.into_iter().partition(|r| r.replaces.is_some());
    pending.sort_by_key(grows);
    loop {
        let before = pending.len();
        pending.retain(|req| !place(req, &mut usage, plan));
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    let mut missed: Vec<(&str, u64)> = pending.iter().map(key).collect();
    for req in &fresh {
        if !place(req, &mut usage, plan) {
            missed.push(key(req));
        }
    }
    for k in missed {
        if let Some(p) = placers.get_mut(&k) {
            p.missing += 1;
        }
    }
    // Failures in spec order, the current version's first.
    for g in &job.spec.groups {
        let mine: Vec<(&str, u64)> = placers
            .keys()
            .filter(|(name, _)| *name == g.name)
            .copied()
            .collect();
        for k in mine.into_iter().rev() {
            if let Some(p) = placers.remove(&k) {
                p.finish(plan);
            }
        }
    }
}

fn key<'a>(req: &PlaceRequest<'a>) -> (&'a str, u64) {
    (req.group.name.as_str(), req.job.version)
}

/// What a static verdict is cached under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StaticKey {
    Class(u64),
    Position(usize),
}

/// Whether a replacement needs more than the allocation it replaces frees.
fn grows(req: &PlaceRequest<'_>) -> bool {
    let Some(old) = req.replaces else {
        return true;
    };
    let need = feasible::group_need(req.group);
    need.cpu.0 > old.resources.cpu.0
        || need.memory.0 > old.resources.memory.0
        || req.group.ports().count() > old.ports.len()
}

/// Nomad's candidate limit: enough nodes for a good choice, few enough to
/// stay fast on large clusters.
pub fn candidate_limit(nodes: usize) -> usize {
    let log2 = nodes.next_power_of_two().trailing_zeros() as usize;
    log2.max(2)
}

/// A deterministic pseudo-shuffle of `0..n`: step `k` visits
/// `(offset + k * stride) % n`, with `stride` coprime to `n` so every node
/// comes up once per `n` steps. O(1) memory, unlike a real shuffle.
#[derive(Debug, Clone, Copy)]
pub struct NodeOrder {
    n: usize,
    offset: usize,
    stride: usize,
}

impl NodeOrder {
    pub fn new(n: usize, seed: u64) -> Self {
        if n == 0 {
            return NodeOrder {
                n,
                offset: 0,
                stride: 1,
            };
        }
        let offset = (seed % n as u64) as usize;
        let mut stride = ((seed >> 32) % n as u64) as usize;
        while gcd(stride, n) != 1 {
            stride += 1;
        }
        NodeOrder { n, offset, stride }
    }

    pub fn at(&self, k: usize) -> usize {
        if self.n == 0 {
            return 0;
        }
        let v = (self.offset as u128 + k as u128 * self.stride as u128) % self.n as u128;
        v as usize
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Placement state of one group within one plan.
struct GroupPlacer<'a, 'n> {
    config: &'n SchedulerConfig,
    job: &'a Job,
    group: &'a GroupSpec,
    need: Resources,
    nodes: &'n [&'a Node],
    filter: StaticFilter<'a>,
    /// Static verdicts, computed on first visit: by node class when the
    /// group's constraints allow it, else by node position.
    statics: FixedMap<StaticKey, Result<(), Reason<'a>>>,
    order: NodeOrder,
    cursor: usize,
    limit: usize,
    spread: Option<SpreadCounts>,
    /// A plain placement found no node; later plain ones cannot either.
    exhausted: bool,
    missing: u32,
    scan: Vec<Reason<'a>>,
    /// Nodes visited and their reasons, from the last failed scan.
    last_failure: Option<(u32, Vec<String>)>,
}

impl<'a, 'n> GroupPlacer<'a, 'n> {
    fn new(
        config: &'n SchedulerConfig,
        state: &'a dyn StateView,
        job: &'a Job,
        group: &'a GroupSpec,
        nodes: &'n [&'a Node],
        eval_id: &str,
        usage: &PlanUsage<'_>,
    ) -> Self {
        let spread = group.spread.as_ref().map(|s| {
            let mut counts = SpreadCounts::new(&s.attr);
            for a in state.allocs_by_job(&job.name) {
                if a.group == group.name
                    && a.is_live()
                    && !usage.is_stopped(&a.id)
                    && let Some(node) = state.node(&a.node_id)
                {
                    counts.add(node);
                }
            }
            counts
        });
        GroupPlacer {
            config,
            job,
            group,
            need: feasible::group_need(group),
            nodes,
            filter: StaticFilter::new(group),
            statics: FixedMap::default(),
            order: NodeOrder::new(nodes.len(), fnv1a(&[eval_id, &group.name])),
            cursor: 0,
            limit: candidate_limit(nodes.len()),
            spread,
            exhausted: false,
            missing: 0,
            scan: Vec::new(),
            last_failure: None,
        }
    }

    /// Try to fill one slot; false when no node can take it (a replaced
    /// allocation then keeps its room).
    fn place(
        &mut self,
        req: &PlaceRequest<'a>,
        state: &dyn StateView,
        usage: &mut PlanUsage<'_>,
        ctx: &mut PlanContext<'_>,
        plan: &mut Plan,
    ) -> bool {
        if req.replaces.is_none() && self.exhausted {
            return false;
        }
        // A replacement may take the place of the allocation it replaces.
        if let Some(old) = req.replaces {
            usage.release(old);
            self.spread_update(state, old, false);
        }
        let held = self.holder(req, state, usage);
        let Some(pos) = held.or_else(|| self.select(usage, req.avoid_node.as_deref())) else {
            match req.replaces {
                Some(old) => {
                    usage.add(old);
                    self.spread_update(state, old, true);
                }
                None => self.exhausted = true,
            }
            return false;
        };
        let node = self.nodes[pos];
        let id = (ctx.new_id)();
        let ports = ports::assign(self.group, node, usage.node(&node.id), &id);
        let alloc = new_alloc(self.job, self.group, req, node, id, ports, ctx);
        usage.add(&alloc);
        if let Some(s) = self.spread.as_mut() {
            s.add(node);
        }
        if let Some(old) = req.replaces {
            plan.stop.push(StopAlloc {
                id: old.id.clone(),
                reason: req.reason.clone(),
                client: None,
            });
        }
        plan.place.push(alloc);
        true
    }

    /// The node holding the slot's volume, when it can take the allocation:
    /// storage stays where it is unless it has to move.
    fn holder(
        &mut self,
        req: &PlaceRequest<'a>,
        state: &dyn StateView,
        usage: &mut PlanUsage<'_>,
    ) -> Option<usize> {
        let node_id = self.group.volumes.iter().find_map(|v| {
            let id = GroupSpec::volume_id(&self.job.name, v, req.index);
            state.volume(&id).map(|vol| vol.node_id.as_str())
        })?;
        let pos = self.nodes.iter().position(|n| n.id == node_id)?;
        let node = self.nodes[pos];
        feasible::check_status(node).ok()?;
        self.filter.check(node).ok()?;
        feasible::check_usage(self.group, self.need, node, usage.node(&node.id)).ok()?;
        Some(pos)
    }

    fn spread_update(&mut self, state: &dyn StateView, a: &Allocation, add: bool) {
        if let (Some(s), Some(node)) = (self.spread.as_mut(), state.node(&a.node_id)) {
            if add { s.add(node) } else { s.remove(node) }
        }
    }

    /// Walk the nodes from the cursor; the best of the first `limit`
    /// feasible ones, or none (with the reasons kept for the report).
    /// `avoid` (where a rescheduled allocation failed) scores lower than
    /// any other feasible node, so it is taken only when alone.
    fn select(&mut self, usage: &mut PlanUsage<'_>, avoid: Option<&str>) -> Option<usize> {
        let n = self.nodes.len();
        let limit = if self.spread.is_some() { n } else { self.limit };
        self.scan.clear();
        let mut best: Option<(usize, Score)> = None;
        let (mut found, mut visited) = (0, 0);
        while visited < n && found < limit {
            let pos = self.order.at(self.cursor + visited);
            visited += 1;
            let node = self.nodes[pos];
            let filter = &self.filter;
            let key = if filter.by_class && node.class != 0 {
                StaticKey::Class(node.class)
            } else {
                StaticKey::Position(pos)
            };
            let verdict = feasible::check_status(node).and_then(|()| {
                *self
                    .statics
                    .entry(key)
                    .or_insert_with(|| filter.check_class(node))
            });
            let scored = verdict.and_then(|()| {
                let u = usage.node(&node.id);
                feasible::check_usage(self.group, self.need, node, u)?;
                let mut score = self.score(node, u);
                if avoid == Some(node.id.as_str()) {
                    score.fit -= rank::RESCHEDULE_PENALTY;
                }
                Ok(score)
            });
            match scored {
                Err(r) => self.scan.push(r),
                Ok(score) => {
                    found += 1;
                    if best.is_none_or(|(_, b)| score.is_better_than(&b)) {
                        best = Some((pos, score));
                    }
                }
            }
        }
        self.cursor = (self.cursor + visited) % n.max(1);
        if best.is_none() {
            let reasons = self.scan.iter().map(ToString::to_string).collect();
            self.last_failure = Some((visited as u32, reasons));
        }
        best.map(|(pos, _)| pos)
    }

    fn score(&self, node: &Node, u: &NodeUsage) -> Score {
        let fit = rank::fit(self.config.algorithm, node, u, self.need)
            - rank::anti_affinity(u.group_count(&self.group.name), self.group.count);
        let spread = self.spread.as_ref().map_or(0, |s| s.penalty(node));
        Score { spread, fit }
    }

    fn finish(self, plan: &mut Plan) {
        if self.missing == 0 {
            return;
        }
        let (evaluated, reasons) = self.last_failure.unwrap_or_default();
        plan.failed.push(placement_failure(
            &self.group.name,
            self.missing,
            evaluated,
            reasons,
        ));
    }
}

/// A fresh allocation as the scheduler proposes it; the store sets the
/// indexes when it commits.
fn new_alloc(
    job: &Job,
    group: &GroupSpec,
    req: &PlaceRequest<'_>,
    node: &Node,
    id: String,
    ports: BTreeMap<String, u16>,
    ctx: &PlanContext<'_>,
) -> Allocation {
    Allocation {
        volume_sync: Default::default(),
        reschedules: req.reschedules.clone(),
        id,
        job: job.name.clone(),
        job_version: job.version,
        group: group.name.clone(),
        index: req.index,
        node_id: node.id.clone(),
        resources: feasible::group_need(group),
        ports,
        previous: req.previous.clone(),
        deployment_id: req.deployment_id.clone(),
        canary: req.canary,
        desired: DesiredStatus::Run,
        desired_reason: String::new(),
        client: ClientStatus::Pending,
        tasks: BTreeMap::new(),
        client_message: String::new(),
        checks: BTreeMap::new(),
        health: None,
        created_at: ctx.now,
        modified_at: ctx.now,
        create_index: 0,
        modify_index: 0,
    }
}
