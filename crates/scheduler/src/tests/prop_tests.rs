//! Properties over random clusters and jobs: no over-commit, nothing on
//! unschedulable nodes, and convergence to a fixed point where each group
//! has `min(count, what fits)` live allocations.

use std::collections::BTreeSet;

use corral_types::{
    ClientStatus, ConstraintOp, DriverKind, GroupSpec, Job, NetworkMode, Node, NodeStatus, Plan,
};
use proptest::prelude::*;

use crate::feasible::group_need;
use crate::testing::{MemState, group, job, node};
use crate::{StateView, fits};

const ZONES: [&str; 3] = ["a", "b", "c"];

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        (1u64..=8, 1u64..=16),
        (
            0u8..20,
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.05),
        ),
        (0usize..4, 0u16..6, prop::bool::weighted(0.7)),
    )
        .prop_map(
            move |((cpu, mem), (status, eligible, draining), (zone, ports, exec))| {
                let status = match status {
                    0..=17 => NodeStatus::Ready,
                    18 => NodeStatus::Down,
                    _ => NodeStatus::Initializing,
                };
                let drivers: &[&str] = if exec {
                    &["container", "exec"]
                } else {
                    &["container"]
                };
                let mut b = node(&format!("n{i}"))
                    .cpu(cpu * 500)
                    .memory_mb(mem * 512)
                    .status(status)
                    .eligible(eligible)
                    .draining(draining)
                    .drivers(drivers)
                    .ports(20000, 20000 + ports);
                if let Some(z) = ZONES.get(zone) {
                    b = b.label("zone", z);
                }
                b.build()
            },
        )
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (0usize..12).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_group(name: String) -> impl Strategy<Value = GroupSpec> {
    (
        (0u32..=6, 1u64..=6, 1u64..=6),
        (0usize..=2, any::<bool>(), prop::bool::weighted(0.2)),
        (0u8..7, 0usize..3, any::<bool>(), prop::bool::weighted(0.2)),
    )
        .prop_map(
            move |((count, cpu, mem), (ports, host, exec), (cons, zone, distinct, spread))| {
                let mut g = group(&name, count).cpu(cpu * 150).memory_mb(mem * 200);
                for p in 0..ports {
                    g = g.port(&format!("p{p}"), 8080 + p as u16);
                }
                if host {
                    g = g.network(NetworkMode::Host);
                }
                if exec {
                    g = g.driver(DriverKind::Exec);
                }
                let z = ZONES[zone];
                g = match cons {
                    0 => g.constraint("node.labels.zone", ConstraintOp::Eq, &[z]),
                    1 => g.constraint("node.labels.zone", ConstraintOp::Ne, &[z]),
                    2 => g.constraint("node.labels.zone", ConstraintOp::In, &[z, "b"]),
                    _ => g,
                };
                if distinct {
                    g = g.distinct_hosts();
                }
                if spread {
                    g = g.spread("node.labels.zone");
                }
                g.build()
            },
        )
}

fn arb_job(name: &'static str) -> impl Strategy<Value = Job> {
    (1usize..=3).prop_flat_map(move |n| {
        (0..n)
            .map(|i| arb_group(format!("g{i}")))
            .collect::<Vec<_>>()
            .prop_map(move |groups| job(name, 1, groups))
    })
}

/// Every placement passes the plan applier's re-check, and only lands on
/// schedulable nodes.
fn check_plan(s: &MemState, plan: &Plan) -> Result<(), TestCaseError> {
    let stops: Vec<&str> = plan.stop.iter().map(|st| st.id.as_str()).collect();
    let targets: BTreeSet<&str> = plan.place.iter().map(|a| a.node_id.as_str()).collect();
    for id in targets {
        let n = s
            .node(id)
            .ok_or_else(|| TestCaseError::fail("unknown node"))?;
        prop_assert!(n.schedulable(), "placed on {}", n.display_status());
        let adds: Vec<_> = plan.place.iter().filter(|a| a.node_id == id).collect();
        prop_assert_eq!(fits(s, n, &adds, &stops), Ok(()));
    }
    Ok(())
}

/// No node holds more than its capacity or a host port twice.
fn check_no_overcommit(s: &MemState) -> Result<(), TestCaseError> {
    for n in &s.nodes {
        let live: Vec<_> = s
            .allocs_by_node(&n.id)
            .into_iter()
            .filter(|a| a.is_live())
            .collect();
        let cpu: u64 = live.iter().map(|a| a.resources.cpu.0).sum();
        let mem: u64 = live.iter().map(|a| a.resources.memory.0).sum();
        prop_assert!(cpu <= n.resources.cpu.0, "cpu over-committed on {}", n.id);
        prop_assert!(
            mem <= n.resources.memory.0,
            "memory over-committed on {}",
            n.id
        );
        let ports: Vec<u16> = live
            .iter()
            .flat_map(|a| a.ports.values().copied())
            .collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        prop_assert_eq!(unique.len(), ports.len(), "duplicate port on {}", &n.id);
    }
    Ok(())
}

/// Independent oracle: could `g` take one more allocation on `n`?
fn could_place(s: &MemState, g: &GroupSpec, n: &Node) -> bool {
    if !n.schedulable()
        || g.tasks
            .iter()
            .any(|t| !n.drivers.contains(&t.driver.to_string()))
    {
        return false;
    }
    let zone = n.labels.get("zone").map(String::as_str);
    for c in &g.constraints {
        let v = c.values.iter().map(String::as_str);
        let ok = match c.op {
            ConstraintOp::Eq => zone == Some(c.values[0].as_str()),
            ConstraintOp::Ne => zone != Some(c.values[0].as_str()),
            ConstraintOp::In => zone.is_some_and(|z| v.clone().any(|x| x == z)),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    let live: Vec<_> = s
        .allocs_by_node(&n.id)
        .into_iter()
        .filter(|a| a.is_live())
        .collect();
    if g.distinct_hosts() && live.iter().any(|a| a.job == "web" && a.group == g.name) {
        return false;
    }
    let need = group_need(g);
    let cpu: u64 = live.iter().map(|a| a.resources.cpu.0).sum();
    let mem: u64 = live.iter().map(|a| a.resources.memory.0).sum();
    if cpu + need.cpu.0 > n.resources.cpu.0 || mem + need.memory.0 > n.resources.memory.0 {
        return false;
    }
    let used: BTreeSet<u16> = live
        .iter()
        .flat_map(|a| a.ports.values().copied())
        .collect();
    let declared: Vec<u16> = g.ports().map(|(_, _, p)| p).collect();
    match g.network {
        NetworkMode::Host => declared.iter().all(|p| !used.contains(p)),
        NetworkMode::Bridge => {
            let (lo, hi) = n.port_range;
            let free = (lo..=hi).filter(|p| !used.contains(p)).count();
            free >= declared.len()
        }
    }
}

/// Schedule `job` and apply until a no-op; the number of plans applied.
fn converge(s: &mut MemState, job: &str, tag: &str) -> Result<(usize, Plan), TestCaseError> {
    for round in 0..40 {
        let plan = s.schedule(&format!("{tag}{round}"), job);
        check_plan(s, &plan)?;
        if plan.is_noop() {
            return Ok((round, plan));
        }
        s.apply(&plan, ClientStatus::Running);
        check_no_overcommit(s)?;
    }
    Err(TestCaseError::fail("no fixed point after 40 plans"))
}

/// At a fixed point: every group has `min(count, what fits)` allocations of
/// the current version, reported failures match what is missing, and
/// nothing live remains on a down node.
fn check_groups(s: &MemState, web: &Job, last: &Plan) -> Result<(), TestCaseError> {
    for g in &web.spec.groups {
        let live = s.live("web", &g.name);
        let on_down = live.iter().filter(|a| {
            s.node(&a.node_id)
                .is_none_or(|n| n.status == NodeStatus::Down)
        });
        prop_assert_eq!(on_down.count(), 0, "live allocation on a down node");
        let indexes: BTreeSet<u32> = live.iter().map(|a| a.index).collect();
        prop_assert_eq!(indexes.len(), live.len(), "duplicate index");
        prop_assert!(indexes.iter().all(|i| *i < g.count));
        let current = live.iter().filter(|a| a.job_version == web.version).count();
        let missing = g.count - current as u32;
        let failed = last.failed.iter().find(|f| f.group == g.name);
        // Allocations on a draining node whose migration found no room are
        // reported as not placed while they keep running.
        let draining = live
            .iter()
            .filter(|a| s.node(&a.node_id).is_some_and(|n| n.draining))
            .count() as u32;
        let reported = failed.map_or(0, |f| f.missing);
        // A rolling update stops at the first replacement that finds no
        // room (the rest keep the old version): it reports at least that
        // one, never more than what is missing.
        let rolling = live.iter().any(|a| a.job_version != web.version);
        prop_assert!(
            reported <= missing + draining
                && (missing == 0 || reported > 0)
                && (rolling || reported >= missing),
            "reported {} missing, {} really missing, {} draining",
            reported,
            missing,
            draining
        );
        // With no old version still holding room, "what fits" is simple.
        if missing > 0 && current == live.len() {
            let fits_somewhere = s.nodes.iter().any(|n| could_place(s, g, n));
            prop_assert!(!fits_somewhere, "group {} left {missing} unplaced", g.name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn plans_are_safe_and_converge(
        nodes in arb_nodes(),
        background in prop::option::weighted(0.5, arb_job("bg")),
        web in arb_job("web"),
        flips in prop::collection::vec((0usize..12, 0u8..4), 0..4),
    ) {
        let mut s = MemState::with_nodes(nodes);
        if let Some(bg) = background {
            s.add_job(bg);
            converge(&mut s, "bg", "bg")?;
        }
        s.add_job(web.clone());
        let (rounds, last) = converge(&mut s, "web", "w")?;
        prop_assert!(rounds <= 1, "fresh job took {rounds} plans");
        check_groups(&s, &web, &last)?;

        // Nodes change under the job: down, ineligible, draining, back.
        let mut draining_allocs = 0;
        for (i, what) in flips {
            if let Some(n) = s.nodes.get_mut(i) {
                match what {
                    0 => n.status = NodeStatus::Down,
                    1 => n.eligible = false,
                    2 => {
                        n.draining = true;
                        let id = n.id.clone();
                        draining_allocs += s.allocs.iter().filter(|a| a.node_id == id && a.is_live()).count();
                    }
                    _ => n.status = NodeStatus::Ready,
                }
            }
        }
        let (rounds, last) = converge(&mut s, "web", "r")?;
        // A migration off a draining node takes two plans (place, then stop
        // the old one once the new one runs), one group at a time.
        prop_assert!(rounds <= 1 + 2 * draining_allocs, "took {rounds} plans after node changes");
        check_groups(&s, &web, &last)?;
    }

    #[test]
    fn updates_are_safe_and_converge(
        nodes in arb_nodes(),
        v1 in arb_job("web"),
        v2 in arb_job("web"),
    ) {
        let mut s = MemState::with_nodes(nodes);
        s.add_job(v1);
        converge(&mut s, "web", "a")?;
        let mut v2 = v2;
        v2.version = 2;
        s.add_job(v2.clone());
        let (rounds, last) = converge(&mut s, "web", "b")?;
        // A rolling update moves max_parallel slots per plan (placements
        // are applied as running, so each plan frees the budget again).
        let bound = v2
            .spec
            .groups
            .iter()
            .map(|g| match g.update.max_parallel {
                0 => 1,
                n => (g.count as usize).div_ceil(n as usize),
            })
            .max()
            .unwrap_or(1)
            + 1;
        prop_assert!(rounds <= bound, "update took {rounds} plans (bound {bound})");
        check_groups(&s, &v2, &last)?;
    }
}
