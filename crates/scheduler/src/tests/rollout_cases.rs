//! The cases of issue 12 (rollouts and drains that did not do what they
//! reported), each as the scheduler sees it, plus multi-group changes.

use corral_types::{
    Allocation, ClientStatus, ConstraintOp, DeploymentStatus, GroupSpec, NodeStatus, Plan,
};

use crate::testing::*;

fn set_status(s: &mut MemState, version: u64, status: DeploymentStatus) {
    for d in s
        .deployments
        .iter_mut()
        .filter(|d| d.job_version == version)
    {
        d.status = status;
    }
}

fn promote(s: &mut MemState, version: u64) {
    for d in s
        .deployments
        .iter_mut()
        .filter(|d| d.job_version == version)
    {
        for g in d.groups.values_mut() {
            g.promoted = true;
        }
    }
}

fn set_health(s: &mut MemState, id: &str, healthy: bool) {
    if let Some(a) = s.allocs.iter_mut().find(|a| a.id == id) {
        a.client = ClientStatus::Running;
        a.health = Some(corral_types::AllocHealth {
            healthy,
            at: 1_000,
            message: String::new(),
        });
    }
}

/// Schedule and apply (new allocations running and healthy) until a no-op.
fn converge(s: &mut MemState, tag: &str) -> Vec<Plan> {
    let mut plans = Vec::new();
    for round in 0..20 {
        let plan = s.schedule(&format!("{tag}{round}"), "J");
        if plan.is_noop() {
            return plans;
        }
        s.apply(&plan, ClientStatus::Running);
        plans.push(plan);
    }
    panic!("no fixed point: {:#?}", plans.last());
}

fn g(name: &str, count: u32, marker: &str) -> corral_types::GroupSpec {
    let mut g = group(name, count)
        .env("MARK", marker)
        .cpu(50)
        .memory_mb(16)
        .build();
    g.update.min_healthy_time = corral_types::units::Millis(1_000);
    g
}

fn pinned(mut g: GroupSpec, node: &str) -> GroupSpec {
    g.constraints.push(corral_types::Constraint {
        attr: "node.name".into(),
        op: ConstraintOp::Eq,
        values: vec![node.into()],
    });
    g
}

fn two_nodes() -> MemState {
    MemState::with_nodes(["dev", "n2"].map(|id| node(id).build()))
}

fn live(s: &MemState, group: &str) -> Vec<Allocation> {
    s.live("J", group).into_iter().cloned().collect()
}

/// Case 1 and its class: a change to any one group (first, middle, last)
/// replaces that group's allocations and only those.
#[test]
fn a_change_to_any_group_deploys_that_group() {
    for changed in 0..3 {
        let names = ["a", "b", "c"];
        let mut s = two_nodes();
        s.add_job(job("J", 1, names.map(|n| g(n, 2, "v1")).to_vec()));
        converge(&mut s, "v1-");
        set_status(&mut s, 1, DeploymentStatus::Successful);
        let groups = names
            .iter()
            .enumerate()
            .map(|(i, n)| g(n, 2, if i == changed { "v2" } else { "v1" }))
            .collect();
        s.add_job(job("J", 2, groups));
        let plan = s.schedule("v2", "J");
        assert_eq!(plan.deployments.len(), 1, "group {changed}: {plan:#?}");
        let d = &plan.deployments[0];
        assert_eq!(d.groups[names[changed]].desired_total, 2);
        assert!(
            plan.place.iter().all(|a| a.group == names[changed]),
            "group {changed}: {plan:#?}"
        );
        assert_eq!(plan.place.len(), 1, "max_parallel 1");
        assert_eq!(plan.in_place.len(), 4, "the two others stay in place");
        converge(&mut s, "v2-");
        for (i, n) in names.iter().enumerate() {
            let runs = live(&s, n);
            assert_eq!(runs.len(), 2);
            assert!(runs.iter().all(|a| a.job_version == 2));
            for a in &runs {
                if i == changed {
                    assert!(a.previous.is_some(), "{n} replaced");
                } else {
                    assert!(a.previous.is_none(), "{n} kept in place");
                }
            }
        }
    }
}

/// Destructive and in-place changes in one version, a group added and one
/// removed: each group gets what its own change needs.
#[test]
fn mixed_group_changes() {
    let mut s = two_nodes();
    s.add_job(job(
        "J",
        1,
        vec![g("a", 2, "v1"), g("b", 1, "v1"), g("c", 1, "v1")],
    ));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    // a: count change (in place), b: env change (replace), c: removed, d: new.
    s.add_job(job(
        "J",
        2,
        vec![g("a", 3, "v1"), g("b", 1, "v2"), g("d", 1, "v2")],
    ));
    let plan = s.schedule("v2", "J");
    let stopped: Vec<&str> = plan.stop.iter().map(|x| x.reason.as_str()).collect();
    assert!(stopped.contains(&"group removed"), "{stopped:?}");
    let mut placed: Vec<(&str, u32)> = plan
        .place
        .iter()
        .map(|a| (a.group.as_str(), a.index))
        .collect();
    placed.sort();
    assert_eq!(placed, vec![("a", 2), ("b", 0), ("d", 0)]);
    assert_eq!(plan.in_place.len(), 2);
    converge(&mut s, "v2-");
    assert!(live(&s, "c").is_empty());
    for (n, count) in [("a", 3), ("b", 1), ("d", 1)] {
        let l = live(&s, n);
        assert_eq!(l.len(), count, "{n}");
        assert!(l.iter().all(|a| a.job_version == 2));
    }
}

/// v1 on n2 (pinned), v2 pinned to dev with one canary, placed.
fn canary_waiting(count: u32, max_parallel: u32) -> MemState {
    let mut s = two_nodes();
    let mut v1 = pinned(g("g", count, "v1"), "n2");
    v1.update.max_parallel = max_parallel;
    s.add_job(job("J", 1, vec![v1]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    let mut v2 = pinned(g("g", count, "v2"), "dev");
    v2.update.canary = 1;
    v2.update.max_parallel = max_parallel;
    s.add_job(job("J", 2, vec![v2]));
    let plan = s.schedule("v2", "J");
    assert_eq!(plan.place.len(), 1);
    assert!(plan.place[0].canary && plan.place[0].node_id == "dev");
    s.apply(&plan, ClientStatus::Running);
    s
}

fn drain(s: &mut MemState, node: &str) {
    if let Some(n) = s.node_mut(node) {
        n.draining = true;
    }
}

/// Cases 2 and 3: a drain while a canary waits places nothing of the
/// unpromoted version (the old version's replacement cannot go anywhere
/// here: it is pinned to the draining node), and after promotion the
/// drained slots roll to the new version.
#[test]
fn a_drain_with_a_canary_waiting_neither_stalls_nor_promotes() {
    for max_parallel in [1, 2] {
        let mut s = canary_waiting(2, max_parallel);
        drain(&mut s, "n2");
        let plan = s.schedule("drain", "J");
        assert!(
            plan.place.iter().all(|a| a.job_version == 1),
            "max_parallel {max_parallel}: {plan:#?}"
        );
        assert!(plan.stop.is_empty(), "{plan:#?}");
        assert!(!plan.failed.is_empty(), "the old version has nowhere to go");
        s.apply(&plan, ClientStatus::Running);
        assert_eq!(
            live(&s, "g").iter().filter(|a| a.job_version == 1).count(),
            2
        );
        promote(&mut s, 2);
        converge(&mut s, "promoted-");
        let l = live(&s, "g");
        assert_eq!(l.len(), 2, "{l:#?}");
        assert!(l.iter().all(|a| a.job_version == 2 && a.node_id == "dev"));
    }
}

/// Case 2 with count 1: once promoted, the canary replaces the draining
/// old allocation at once.
#[test]
fn a_promoted_canary_replaces_a_draining_old_allocation() {
    let mut s = canary_waiting(1, 1);
    drain(&mut s, "n2");
    let plan = s.schedule("drain", "J");
    s.apply(&plan, ClientStatus::Running);
    promote(&mut s, 2);
    let plan = s.schedule("promoted", "J");
    assert_eq!(plan.stop.len(), 1, "{plan:#?}");
    assert_eq!(plan.stop[0].reason, "replaced by a promoted canary");
    assert!(plan.place.is_empty());
}

/// Case 3 where the old version can move: the migration keeps version 1.
#[test]
fn a_migration_during_a_canary_phase_keeps_the_old_version() {
    let mut s = MemState::with_nodes(["dev", "n2", "n3"].map(|id| node(id).build()));
    s.add_job(job("J", 1, vec![pinned(g("g", 2, "v1"), "n2")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    // v1 may now go anywhere but dev; v2 has a canary.
    let mut v2 = g("g", 2, "v2");
    v2.update.canary = 1;
    v2.update.max_parallel = 2;
    s.add_job(job("J", 2, vec![v2]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Running);
    if let Some(j) = s.jobs.iter_mut().find(|j| j.version == 1) {
        j.spec.groups[0].constraints.clear();
    }
    drain(&mut s, "n2");
    let plan = s.schedule("drain", "J");
    assert_eq!(plan.place.len(), 2, "{plan:#?}");
    assert!(
        plan.place
            .iter()
            .all(|a| a.job_version == 1 && !a.canary && a.deployment_id.is_none())
    );
}

/// Case 4: a migration replacement that fails is not placed again and
/// again; the old allocation runs until the drain deadline.
#[test]
fn a_failed_migration_replacement_is_not_retried() {
    let mut s = two_nodes();
    let mut v1 = g("g", 2, "v1");
    v1.restart.attempts = 0;
    s.add_job(job("J", 1, vec![pinned(v1, "n2")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    // v2 fails, its deployment failed without a revert.
    s.add_job(job("J", 2, vec![g("g", 2, "v2-exit-1")]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Failed);
    set_status(&mut s, 2, DeploymentStatus::Failed);
    // The old version may now move anywhere.
    if let Some(j) = s.jobs.iter_mut().find(|j| j.version == 1) {
        j.spec.groups[0].constraints.clear();
    }
    drain(&mut s, "n2");
    let before = s.allocs.len();
    for round in 0..10 {
        let plan = s.schedule(&format!("drain{round}"), "J");
        assert!(plan.place.iter().all(|a| a.job_version == 1), "{plan:#?}");
        // Every replacement fails at once.
        s.apply(&plan, ClientStatus::Failed);
    }
    // v2's rollout replaced g[0] before it failed: one v1 left to migrate.
    assert!(
        s.allocs.len() <= before + 1,
        "{} allocations after 10 evaluations (from {before})",
        s.allocs.len()
    );
    // The deadline passes: the old ones stop, the failed ones hold.
    if let Some(n) = s.node_mut("n2") {
        n.drain_deadline = Some(500);
    }
    let plan = s.schedule("deadline", "J");
    assert_eq!(plan.stop.len(), 1, "{plan:#?}");
    assert_eq!(plan.stop[0].reason, "node drain deadline reached");
    assert!(plan.place.is_empty(), "{plan:#?}");
}

/// Case 5: allocations an earlier rollout left in flight count against the
/// new deployment's `max_parallel`, and join it with their health decided
/// again.
#[test]
fn a_new_deployment_counts_the_previous_ones_allocations_in_flight() {
    let mut s = two_nodes();
    s.add_job(job("J", 1, vec![g("g", 3, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    s.add_job(job("J", 2, vec![g("g", 3, "v2")]));
    let plan = s.schedule("v2", "J");
    assert_eq!(plan.place.len(), 1);
    s.apply(&plan, ClientStatus::Pending);
    let in_flight = plan.place[0].id.clone();
    // v2's first allocation is unhealthy (its check fails).
    set_health(&mut s, &in_flight, false);
    s.add_job(job("J", 3, vec![g("g", 4, "v2")]));
    let plan = s.schedule("v3", "J");
    let d3 = plan
        .deployments
        .iter()
        .find(|d| d.job_version == 3)
        .expect("v3 gets a deployment");
    assert!(
        plan.stop.is_empty(),
        "no v1 replaced while g[0] is unproven: {plan:#?}"
    );
    let adopted = plan
        .in_place
        .iter()
        .find(|u| u.id == in_flight)
        .expect("adopted");
    assert_eq!(adopted.deployment_id.as_deref(), Some(d3.id.as_str()));
    s.apply(&plan, ClientStatus::Pending);
    let a = s.alloc(&in_flight).expect("alloc");
    assert!(a.health.is_none(), "decided again under v3's deployment");
    assert!(s.schedule("again", "J").stop.is_empty(), "still in flight");
}

/// Case 6: a job started again after a stop gets a deployment (its checks
/// decide), and so does a count change over a rollout in flight.
#[test]
fn a_version_that_never_ran_gets_a_deployment() {
    let mut s = two_nodes();
    s.add_job(job("J", 1, vec![g("g", 2, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    if let Some(j) = s.jobs.iter_mut().find(|j| j.version == 1) {
        j.stopped = true;
    }
    let plan = s.schedule("stop", "J");
    s.apply(&plan, ClientStatus::Running);
    for a in s.allocs.iter_mut() {
        a.client = ClientStatus::Complete;
    }
    s.add_job(job("J", 2, vec![g("g", 2, "v2")]));
    let plan = s.schedule("v2", "J");
    assert_eq!(plan.deployments.len(), 1, "{plan:#?}");
    assert!(plan.place.iter().all(|a| a.deployment_id.is_some()));

    // A version that ran and lost everything in an outage needs none.
    s.apply(&plan, ClientStatus::Running);
    set_status(&mut s, 2, DeploymentStatus::Successful);
    for n in s.nodes.iter_mut() {
        n.status = NodeStatus::Down;
    }
    let plan = s.schedule("outage", "J");
    s.apply(&plan, ClientStatus::Running);
    s.nodes.push(node("n3").build());
    s.deployments.clear();
    let plan = s.schedule("back", "J");
    assert_eq!(plan.place.len(), 2);
    assert!(plan.deployments.is_empty(), "{plan:#?}");
}

/// The shape of a job's history that case 6 broke: v2's rollout in flight,
/// then a count change. v3 gets a deployment that adopts v2's allocation.
#[test]
fn a_count_change_over_a_rollout_in_flight_is_deployed() {
    let mut s = two_nodes();
    s.add_job(job("J", 1, vec![g("g", 2, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    s.add_job(job("J", 2, vec![g("g", 2, "v2")]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Running);
    // Both replaced, neither healthy yet.
    let ids: Vec<String> = live(&s, "g").iter().map(|a| a.id.clone()).collect();
    for id in &ids {
        if let Some(a) = s.allocs.iter_mut().find(|a| &a.id == id) {
            a.health = None;
            a.job_version = 2;
        }
    }
    s.add_job(job("J", 3, vec![g("g", 3, "v2")]));
    let plan = s.schedule("v3", "J");
    assert!(
        plan.deployments.iter().any(|d| d.job_version == 3),
        "{plan:#?}"
    );
    assert!(
        plan.in_place
            .iter()
            .all(|u| u.deployment_id.is_some() && u.job_version == 3)
    );
}

/// A lost allocation's replacement during a canary phase keeps its
/// version; outside one it takes the current version within the budget.
#[test]
fn a_lost_replacement_keeps_the_old_version_until_promotion() {
    let mut s = MemState::with_nodes(["dev", "n2", "n3"].map(|id| node(id).build()));
    s.add_job(job("J", 1, vec![g("g", 2, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    let mut v2 = g("g", 2, "v2");
    v2.update.canary = 1;
    s.add_job(job("J", 2, vec![v2]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Running);
    let canary_node = plan.place[0].node_id.clone();
    let victim = live(&s, "g")
        .into_iter()
        .find(|a| !a.canary && a.node_id != canary_node)
        .expect("an old one away from the canary");
    if let Some(n) = s.node_mut(&victim.node_id) {
        n.status = NodeStatus::Down;
    }
    let plan = s.schedule("lost", "J");
    assert_eq!(plan.place.len(), 1, "{plan:#?}");
    assert_eq!(plan.place[0].job_version, 1);
}

/// v1 (count 2) everywhere; v2 with one canary placed (on its node).
fn canary_placed() -> (MemState, Allocation) {
    let mut s = MemState::with_nodes(["dev", "n2", "n3"].map(|id| node(id).build()));
    s.add_job(job("J", 1, vec![g("g", 2, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    let mut v2 = g("g", 2, "v2");
    v2.update.canary = 1;
    s.add_job(job("J", 2, vec![v2]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Running);
    let canary = plan.place[0].clone();
    assert!(canary.canary);
    (s, canary)
}

/// Found by a hostile run: a canary on a draining node blocked the drain
/// forever. It moves like any allocation (a new canary beside it, the old
/// one stopped once that runs), and goes at the deadline.
#[test]
fn a_canary_on_a_draining_node_moves() {
    let (mut s, canary) = canary_placed();
    drain(&mut s, &canary.node_id);
    let plan = s.schedule("drain", "J");
    assert_eq!(plan.place.len(), 1, "{plan:#?}");
    let moved = &plan.place[0];
    assert!(moved.canary && moved.job_version == 2);
    assert_eq!(moved.previous.as_deref(), Some(canary.id.as_str()));
    assert!(
        plan.stop.is_empty(),
        "the old canary runs until the new one does"
    );
    s.apply(&plan, ClientStatus::Pending);
    assert!(s.schedule("pending", "J").is_noop());
    set_health(&mut s, &moved.id, true);
    let plan = s.schedule("running", "J");
    assert!(plan.stop.iter().any(|x| x.id == canary.id), "{plan:#?}");
    // (A v1 allocation on the same node may be migrating, in version 1.)
    assert!(plan.place.iter().all(|a| !a.canary && a.job_version == 1));

    // Past the deadline: stopped, and a new canary placed at once.
    let (mut s, canary) = canary_placed();
    if let Some(n) = s.node_mut(&canary.node_id) {
        n.draining = true;
        n.drain_deadline = Some(500);
    }
    let plan = s.schedule("deadline", "J");
    assert!(
        plan.stop
            .iter()
            .any(|x| x.id == canary.id && x.reason == "node drain deadline reached"),
        "{plan:#?}"
    );
    assert!(
        plan.place
            .iter()
            .any(|a| a.canary && a.node_id != canary.node_id)
    );
}

/// Found by a hostile run: a failed old-version allocation was replaced by
/// the new version while the deployment was paused or failed, and beyond
/// max_parallel while it ran.
#[test]
fn a_failed_old_allocation_is_replaced_only_as_the_rollout_allows() {
    for status in [DeploymentStatus::Paused, DeploymentStatus::Failed] {
        let mut s = two_nodes();
        s.add_job(job("J", 1, vec![g("g", 3, "v1")]));
        converge(&mut s, "v1-");
        set_status(&mut s, 1, DeploymentStatus::Successful);
        s.add_job(job("J", 2, vec![g("g", 3, "v2")]));
        let plan = s.schedule("v2", "J");
        s.apply(&plan, ClientStatus::Pending);
        set_status(&mut s, 2, status);
        let old = live(&s, "g")
            .into_iter()
            .find(|a| a.job_version == 1)
            .expect("a v1 allocation");
        if let Some(a) = s.allocs.iter_mut().find(|a| a.id == old.id) {
            a.client = ClientStatus::Failed;
        }
        let plan = s.schedule("crash", "J");
        assert!(
            plan.place.iter().all(|a| a.job_version != 2),
            "{status:?}: {plan:#?}"
        );
    }
    // Running, max_parallel 1, one replacement in flight: a crash of
    // another v1 waits for the budget.
    let mut s = two_nodes();
    s.add_job(job("J", 1, vec![g("g", 3, "v1")]));
    converge(&mut s, "v1-");
    set_status(&mut s, 1, DeploymentStatus::Successful);
    s.add_job(job("J", 2, vec![g("g", 3, "v2")]));
    let plan = s.schedule("v2", "J");
    s.apply(&plan, ClientStatus::Pending);
    for a in s
        .allocs
        .iter_mut()
        .filter(|a| a.job_version == 1 && a.is_live())
    {
        a.client = ClientStatus::Failed;
    }
    let plan = s.schedule("crash", "J");
    assert!(plan.place.is_empty(), "{plan:#?}");
}

/// Found by a hostile run: promoting a canary past its node's drain
/// deadline stopped the healthy old allocation of its slot too.
#[test]
fn a_promoted_canary_past_its_drain_deadline_does_not_take_the_old_one_along() {
    let (mut s, canary) = canary_placed();
    promote(&mut s, 2);
    if let Some(n) = s.node_mut(&canary.node_id) {
        n.draining = true;
        n.drain_deadline = Some(500);
    }
    let old = live(&s, "g")
        .into_iter()
        .find(|a| a.index == canary.index && !a.canary)
        .expect("the slot's old allocation");
    let plan = s.schedule("promoted", "J");
    assert!(plan.stop.iter().any(|x| x.id == canary.id), "{plan:#?}");
    // The old one is replaced as a rolling update (stopped only once its
    // replacement found a node), not stopped for nothing.
    if plan.stop.iter().any(|x| x.id == old.id) {
        assert!(
            plan.place
                .iter()
                .any(|a| a.previous.as_deref() == Some(old.id.as_str())),
            "{plan:#?}"
        );
    }
}
