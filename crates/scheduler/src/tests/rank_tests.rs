//! Ranking: bin-pack, spread algorithm, anti-affinity, spread over an
//! attribute; and the node walk.

use std::collections::BTreeMap;

use corral_types::{ClientStatus, Plan};

use crate::select::{NodeOrder, candidate_limit};
use crate::testing::{MemState, alloc, group, job, node};
use crate::{Algorithm, SchedulerConfig, StateView};

/// n1 is already half full with another job; n2 is empty.
fn half_full() -> MemState {
    let mut s = MemState::with_nodes([node("n1").build(), node("n2").build()]);
    let other = job(
        "other",
        1,
        vec![group("other", 1).cpu(2000).memory_mb(4096).build()],
    );
    s.allocs = vec![alloc("o1", &other, "other", 0, "n1")];
    s.add_job(other);
    s.add_job(job("web", 1, vec![group("web", 1).build()]));
    s
}

#[test]
fn binpack_prefers_the_fuller_node() {
    let plan = half_full().schedule("e1", "web");
    assert_eq!(plan.place[0].node_id, "n1");
}

#[test]
fn spread_algorithm_prefers_the_emptier_node() {
    let config = SchedulerConfig {
        algorithm: Algorithm::Spread,
    };
    let plan = half_full().schedule_with(&config, "e1", "web");
    assert_eq!(plan.place[0].node_id, "n2");
}

#[test]
fn binpack_ignores_nodes_that_do_not_fit() {
    let mut s = half_full();
    s.jobs.retain(|j| j.name != "web");
    s.add_job(job("web", 1, vec![group("web", 1).memory_mb(5000).build()]));
    assert_eq!(s.schedule("e1", "web").place[0].node_id, "n2");
}

#[test]
fn anti_affinity_spreads_a_group_over_nodes() {
    let mut s = MemState::with_nodes([node("n1").build(), node("n2").build()]);
    s.add_job(job("web", 1, vec![group("web", 2).build()]));
    let plan = s.schedule("e1", "web");
    assert_ne!(plan.place[0].node_id, plan.place[1].node_id);
}

#[test]
fn anti_affinity_yields_to_capacity() {
    // One node is the only one with room: both go there.
    let mut s = MemState::with_nodes([node("n1").build(), node("n2").memory_mb(100).build()]);
    s.add_job(job("web", 1, vec![group("web", 2).build()]));
    let plan = s.schedule("e1", "web");
    assert!(plan.place.iter().all(|a| a.node_id == "n1"));
}

fn per_zone(s: &MemState, plan: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in &plan.place {
        let zone = s
            .node(&a.node_id)
            .and_then(|n| n.labels.get("zone").cloned())
            .unwrap_or_default();
        *out.entry(zone).or_default() += 1;
    }
    out
}

#[test]
fn spread_evens_over_label_values() {
    // Zone a has three nodes, zone b one: bin-pack plus anti-affinity alone
    // would favour zone a; spread asks for 2 and 2.
    let nodes = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")]
        .map(|(id, z)| node(id).label("zone", z).build());
    let mut s = MemState::with_nodes(nodes);
    s.add_job(job(
        "web",
        1,
        vec![group("web", 4).spread("node.labels.zone").build()],
    ));
    let plan = s.schedule("e1", "web");
    let expected = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 2)]);
    assert_eq!(per_zone(&s, &plan), expected);
}

#[test]
fn spread_counts_existing_allocations() {
    let nodes = [("a1", "a"), ("b1", "b")].map(|(id, z)| node(id).label("zone", z).build());
    let mut s = MemState::with_nodes(nodes);
    let j = job(
        "web",
        1,
        vec![group("web", 4).spread("node.labels.zone").build()],
    );
    s.allocs = vec![alloc("x0", &j, "web", 0, "a1")];
    s.add_job(j);
    let plan = s.schedule("e1", "web");
    // 2 and 2 in the end.
    let expected = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
    assert_eq!(per_zone(&s, &plan), expected);
}

#[test]
fn spread_puts_nodes_without_the_attribute_last() {
    let mut s = MemState::with_nodes([node("n1").build(), node("n2").label("zone", "a").build()]);
    s.add_job(job(
        "web",
        1,
        vec![group("web", 2).spread("node.labels.zone").build()],
    ));
    let plan = s.schedule("e1", "web");
    assert!(plan.place.iter().all(|a| a.node_id == "n2"));
}

#[test]
fn rescheduling_a_converged_spread_job_is_a_noop() {
    let nodes = [("a1", "a"), ("b1", "b")].map(|(id, z)| node(id).label("zone", z).build());
    let mut s = MemState::with_nodes(nodes);
    s.add_job(job(
        "web",
        1,
        vec![group("web", 4).spread("node.labels.zone").build()],
    ));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    assert!(s.schedule("e2", "web").is_noop());
}

#[test]
fn candidate_limit_follows_nomad() {
    let got: Vec<usize> = [0, 1, 2, 3, 4, 5, 16, 17, 10_000]
        .map(candidate_limit)
        .into();
    assert_eq!(got, vec![2, 2, 2, 2, 2, 3, 4, 5, 14]);
}

#[test]
fn node_order_is_a_permutation() {
    for n in [1usize, 2, 3, 10, 12, 97, 100] {
        for seed in [0u64, 1, 42, u64::MAX, 0xdead_beef_cafe] {
            let order = NodeOrder::new(n, seed);
            let mut seen: Vec<usize> = (0..n).map(|k| order.at(k)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n={n} seed={seed}");
        }
    }
}

#[test]
fn large_cluster_walks_on_between_placements() {
    // 2,000 nodes, 50 placements: each scan stops after `limit` feasible
    // nodes and the next one resumes after it.
    let mut s = MemState::with_nodes((0..2000).map(|i| node(&format!("n{i:04}")).build()));
    s.add_job(job("web", 1, vec![group("web", 50).build()]));
    let plan = s.schedule("e1", "web");
    assert_eq!(plan.place.len(), 50);
    let nodes: std::collections::BTreeSet<&str> =
        plan.place.iter().map(|a| a.node_id.as_str()).collect();
    assert!(nodes.len() > 1, "placements walk on: {nodes:?}");
}
