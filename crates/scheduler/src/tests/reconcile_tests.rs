//! Reconcile scenarios: desired against actual, through `schedule`.

use corral_types::{
    ClientStatus, ConstraintOp, DeploymentStatus, DesiredStatus, NodeStatus, Plan, StopAlloc,
};

use crate::testing::{MemState, alloc, group, job, node};

fn cluster() -> MemState {
    MemState::with_nodes(["n1", "n2", "n3"].map(|id| node(id).build()))
}

/// A cluster running `web` v1 with `count` allocations (all running).
fn running(count: u32) -> MemState {
    let mut s = cluster();
    s.add_job(job("web", 1, vec![group("web", count).build()]));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    s
}

fn indexes(plan: &Plan) -> Vec<u32> {
    plan.place.iter().map(|a| a.index).collect()
}

fn stop(id: &str, reason: &str) -> StopAlloc {
    StopAlloc {
        id: id.to_owned(),
        reason: reason.to_owned(),
        client: None,
    }
}

#[test]
fn places_count_allocations() {
    let mut s = cluster();
    s.add_job(job("web", 1, vec![group("web", 3).cpu(250).build()]));
    let plan = s.schedule("e1", "web");
    assert_eq!(indexes(&plan), vec![0, 1, 2]);
    assert!(plan.stop.is_empty() && plan.in_place.is_empty() && plan.failed.is_empty());
    assert_eq!((plan.eval_id.as_str(), plan.job.as_str()), ("e1", "web"));
    assert_eq!(plan.snapshot_index, s.index);
    // A new job gets a deployment (its first id), so the version can
    // become stable; every placement belongs to it.
    assert_eq!(plan.deployments.len(), 1);
    assert_eq!(plan.deployments[0].id, "e1-1");
    assert!(
        plan.place
            .iter()
            .all(|a| a.deployment_id.as_deref() == Some("e1-1"))
    );
    let a = &plan.place[0];
    assert_eq!(a.id, "e1-2");
    assert_eq!((a.job_version, a.group.as_str()), (1, "web"));
    assert_eq!(
        (a.desired, a.client),
        (DesiredStatus::Run, ClientStatus::Pending)
    );
    assert_eq!(a.resources.cpu.0, 250);
    assert_eq!(
        (a.created_at, a.modified_at, a.create_index),
        (1000, 1000, 0)
    );
    assert!(a.previous.is_none() && a.tasks.is_empty());
}

#[test]
fn converged_job_is_a_noop() {
    let s = running(3);
    assert!(s.schedule("e2", "web").is_noop());
}

#[test]
fn scale_up_keeps_survivors() {
    let mut s = running(3);
    let before: Vec<String> = s.live("web", "web").iter().map(|a| a.id.clone()).collect();
    s.add_job(job("web", 2, vec![group("web", 5).build()]));
    let plan = s.schedule("e2", "web");
    assert!(plan.stop.is_empty());
    assert_eq!(indexes(&plan), vec![3, 4]);
    let moved: Vec<&str> = plan.in_place.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(moved, before);
    assert!(plan.in_place.iter().all(|u| u.job_version == 2));
    s.apply(&plan, ClientStatus::Running);
    let after: Vec<String> = s.live("web", "web").iter().map(|a| a.id.clone()).collect();
    assert_eq!(after[..3], before[..]);
    assert_eq!(after.len(), 5);
}

#[test]
fn scale_down_stops_highest_indexes() {
    let mut s = running(5);
    let live: Vec<(u32, String)> = s
        .live("web", "web")
        .iter()
        .map(|a| (a.index, a.id.clone()))
        .collect();
    s.add_job(job("web", 2, vec![group("web", 1).build()]));
    let plan = s.schedule("e2", "web");
    let expected: Vec<StopAlloc> = live[1..]
        .iter()
        .map(|(_, id)| stop(id, "scaled down"))
        .collect();
    assert_eq!(plan.stop, expected);
    let moved: Vec<(String, u64)> = plan
        .in_place
        .iter()
        .map(|u| (u.id.clone(), u.job_version))
        .collect();
    assert_eq!(moved, vec![(live[0].1.clone(), 2)]);
    assert!(plan.place.is_empty());
}

#[test]
fn env_change_replaces_all_with_same_indexes() {
    let mut s = running(3);
    let old: Vec<String> = s.live("web", "web").iter().map(|a| a.id.clone()).collect();
    // max_parallel 0: everything at once.
    let mut g = group("web", 3).env("FOO", "baz").build();
    g.update.max_parallel = 0;
    s.add_job(job("web", 2, vec![g]));
    let plan = s.schedule("e2", "web");
    let reason = "job updated to version 2";
    let expected: Vec<StopAlloc> = old.iter().map(|id| stop(id, reason)).collect();
    assert_eq!(plan.stop, expected);
    assert_eq!(indexes(&plan), vec![0, 1, 2]);
    let previous: Vec<String> = plan
        .place
        .iter()
        .filter_map(|a| a.previous.clone())
        .collect();
    assert_eq!(previous, old);
    assert!(plan.place.iter().all(|a| a.job_version == 2));
    assert!(plan.in_place.is_empty());
    s.apply(&plan, ClientStatus::Running);
    assert!(s.schedule("e3", "web").is_noop());
}

#[test]
fn count_only_change_is_in_place() {
    let mut s = running(3);
    let mut g = group("web", 4).build();
    g.update.max_parallel = 3; // policy-only changes are in place too
    s.add_job(job("web", 2, vec![g]));
    let plan = s.schedule("e2", "web");
    assert!(plan.stop.is_empty());
    assert_eq!(plan.in_place.len(), 3);
    assert_eq!(indexes(&plan), vec![3]);
}

#[test]
fn node_down_marks_lost_and_replaces() {
    let mut s = running(3);
    let victim = s.live("web", "web")[1].clone();
    if let Some(n) = s.node_mut(&victim.node_id) {
        n.status = NodeStatus::Down;
    }
    let plan = s.schedule("e2", "web");
    assert_eq!(
        plan.stop,
        vec![StopAlloc {
            id: victim.id.clone(),
            reason: "node down".to_owned(),
            client: Some(ClientStatus::Lost),
        }]
    );
    assert_eq!(indexes(&plan), vec![1]);
    assert_eq!(plan.place[0].previous.as_deref(), Some(victim.id.as_str()));
    assert_ne!(plan.place[0].node_id, victim.node_id);
    s.apply(&plan, ClientStatus::Running);
    assert!(s.schedule("e3", "web").is_noop());
}

#[test]
fn missing_node_counts_as_lost() {
    let mut s = running(1);
    let victim = s.live("web", "web")[0].clone();
    s.nodes.retain(|n| n.id != victim.node_id);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.stop[0].reason, "node missing");
    assert_eq!(plan.stop[0].client, Some(ClientStatus::Lost));
    assert_eq!(indexes(&plan), vec![0]);
}

#[test]
fn stopped_allocation_on_down_node_is_marked_lost() {
    let mut s = running(1);
    let id = s.live("web", "web")[0].id.clone();
    let node_id = s.live("web", "web")[0].node_id.clone();
    if let Some(a) = s.allocs.iter_mut().find(|a| a.id == id) {
        a.desired = DesiredStatus::Stop;
        a.desired_reason = "scaled down".to_owned();
    }
    s.jobs[0].spec.groups[0].count = 0;
    if let Some(n) = s.node_mut(&node_id) {
        n.status = NodeStatus::Down;
    }
    let plan = s.schedule("e2", "web");
    assert_eq!(
        plan.stop,
        vec![StopAlloc {
            id,
            reason: "scaled down".to_owned(),
            client: Some(ClientStatus::Lost),
        }]
    );
}

#[test]
fn job_stopped_stops_everything() {
    let mut s = running(3);
    let down = s.live("web", "web")[2].node_id.clone();
    if let Some(n) = s.node_mut(&down) {
        n.status = NodeStatus::Down;
    }
    let mut v2 = job("web", 2, vec![group("web", 3).build()]);
    v2.stopped = true;
    s.add_job(v2);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.stop.len(), 3);
    assert!(plan.stop.iter().all(|st| st.reason == "job stopped"));
    let lost = plan
        .stop
        .iter()
        .filter(|st| st.client == Some(ClientStatus::Lost));
    assert_eq!(lost.count(), 1);
    assert!(plan.place.is_empty() && plan.in_place.is_empty());
}

#[test]
fn job_missing_stops_everything() {
    let mut s = running(2);
    s.jobs.clear();
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.stop.len(), 2);
    assert!(plan.stop.iter().all(|st| st.reason == "job stopped"));
}

#[test]
fn removed_group_is_stopped() {
    let mut s = cluster();
    s.add_job(job(
        "shop",
        1,
        vec![group("web", 1).build(), group("db", 1).build()],
    ));
    let plan = s.schedule("e1", "shop");
    s.apply(&plan, ClientStatus::Running);
    let db = s.live("shop", "db")[0].id.clone();
    s.add_job(job("shop", 2, vec![group("web", 1).build()]));
    let plan = s.schedule("e2", "shop");
    assert_eq!(plan.stop, vec![stop(&db, "group removed")]);
    assert_eq!(plan.in_place.len(), 1);
    assert!(plan.place.is_empty());
}

#[test]
fn duplicate_index_keeps_one() {
    let mut s = cluster();
    let j = job("web", 1, vec![group("web", 1).build()]);
    let mut older = alloc("a-old", &j, "web", 0, "n1");
    older.create_index = 1;
    let mut newer = alloc("a-new", &j, "web", 0, "n2");
    newer.create_index = 5;
    s.allocs = vec![newer, older];
    s.add_job(j);
    let plan = s.schedule("e1", "web");
    assert_eq!(plan.stop, vec![stop("a-new", "duplicate index")]);
    assert!(plan.place.is_empty());
}

#[test]
fn failed_allocation_holds_its_slot_until_the_spec_changes() {
    let mut s = cluster();
    let j = job("web", 1, vec![group("web", 2).build()]);
    let mut failed = alloc("a-failed", &j, "web", 0, "n1");
    failed.client = ClientStatus::Failed;
    s.allocs = vec![failed, alloc("a-ok", &j, "web", 1, "n2")];
    s.add_job(j);
    assert!(s.schedule("e1", "web").is_noop());

    // A count-only change does not retry the failed spec.
    s.add_job(job("web", 2, vec![group("web", 3).build()]));
    let plan = s.schedule("e2", "web");
    assert_eq!(indexes(&plan), vec![2]);
    assert!(plan.stop.is_empty());

    // A new spec may fix it: the failed one is superseded.
    s.add_job(job("web", 3, vec![group("web", 2).env("FIX", "1").build()]));
    let plan = s.schedule("e3", "web");
    let mut replaced: Vec<(u32, Option<&str>)> = plan
        .place
        .iter()
        .map(|a| (a.index, a.previous.as_deref()))
        .collect();
    replaced.sort();
    // Under v3's deployment the failed slot takes the one replacement
    // max_parallel allows (a new version is unproven either way); the
    // running one follows once it is healthy.
    assert_eq!(replaced, vec![(0, Some("a-failed"))]);
    assert!(
        plan.stop
            .contains(&stop("a-failed", "job updated to version 3"))
    );
    s.apply(&plan, ClientStatus::Running);
    let plan = s.schedule("e4", "web");
    let replaced: Vec<(u32, Option<&str>)> = plan
        .place
        .iter()
        .map(|a| (a.index, a.previous.as_deref()))
        .collect();
    assert_eq!(replaced, vec![(1, Some("a-ok"))]);
}

#[test]
fn complete_allocation_frees_its_slot() {
    let mut s = cluster();
    let j = job("web", 1, vec![group("web", 1).build()]);
    let mut done = alloc("a-done", &j, "web", 0, "n1");
    done.client = ClientStatus::Complete;
    s.allocs = vec![done];
    s.add_job(j);
    let plan = s.schedule("e1", "web");
    assert_eq!(indexes(&plan), vec![0]);
    assert_eq!(plan.place[0].previous.as_deref(), Some("a-done"));
    assert!(plan.stop.is_empty());
}

#[test]
fn update_that_does_not_fit_keeps_the_old_allocation() {
    let mut s = MemState::with_nodes([node("n1").memory_mb(1024).build()]);
    s.add_job(job("web", 1, vec![group("web", 1).memory_mb(600).build()]));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    // Fits only once the old one is gone: replaced on the same node.
    s.add_job(job("web", 2, vec![group("web", 1).memory_mb(900).build()]));
    let plan = s.schedule("e2", "web");
    assert_eq!((plan.stop.len(), plan.place.len()), (1, 1));
    assert_eq!(plan.place[0].node_id, "n1");
    // Does not fit at all: nothing stopped, the failure is reported.
    s.add_job(job("web", 3, vec![group("web", 1).memory_mb(2000).build()]));
    let plan = s.schedule("e3", "web");
    assert!(plan.stop.is_empty() && plan.place.is_empty());
    assert_eq!(
        plan.failed[0].to_string(),
        "group \"web\": 1 allocation not placed (1 node: memory exhausted)"
    );
}

#[test]
fn failure_message_counts_nodes_per_reason() {
    let mut nodes: Vec<_> = ["n1", "n2", "n3"]
        .map(|id| node(id).memory_mb(512).label("zone", "a").build())
        .into();
    nodes.push(node("n4").label("zone", "b").build());
    let mut s = MemState::with_nodes(nodes);
    let g =
        group("web", 2)
            .memory_mb(1024)
            .constraint("node.labels.zone", ConstraintOp::Eq, &["a"]);
    s.add_job(job("web", 1, vec![g.build()]));
    let plan = s.schedule("e1", "web");
    assert!(plan.place.is_empty());
    assert_eq!(plan.failed.len(), 1);
    assert_eq!(plan.failed[0].nodes_evaluated, 4);
    assert_eq!(
        plan.failed[0].to_string(),
        "group \"web\": 2 allocations not placed (3 nodes: memory exhausted; 1 node: constraint node.labels.zone = a)"
    );
}

#[test]
fn no_nodes_reports_so() {
    let mut s = MemState::default();
    s.add_job(job("web", 1, vec![group("web", 1).build()]));
    let plan = s.schedule("e1", "web");
    assert_eq!(
        plan.failed[0].to_string(),
        "group \"web\": 1 allocation not placed: no nodes are registered"
    );
}

#[test]
fn same_eval_same_plan() {
    let mut s = MemState::with_nodes((0..20).map(|i| node(&format!("n{i:02}")).build()));
    s.add_job(job(
        "web",
        1,
        vec![group("web", 7).port("http", 80).build()],
    ));
    assert_eq!(s.schedule("e1", "web"), s.schedule("e1", "web"));
}

/// Allocations of `web` on node `n`, live ones.
fn live_on<'a>(s: &'a MemState, n: &str) -> Vec<&'a corral_types::Allocation> {
    s.live("web", "web")
        .into_iter()
        .filter(|a| a.node_id == n)
        .collect()
}

#[test]
fn drain_migrates_max_parallel_at_a_time_and_stops_the_old_once_the_new_runs() {
    // Three allocations on n1 (only node at first), then n2 joins and n1 drains.
    let mut s = MemState::with_nodes([node("n1").build()]);
    s.add_job(job("web", 1, vec![group("web", 3).build()]));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    s.nodes.push(node("n2").build());
    s.node_mut("n1").unwrap().draining = true;

    // max_parallel 1: one replacement, nothing stopped yet.
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 1, "{plan:?}");
    assert_eq!(plan.place[0].node_id, "n2");
    assert!(plan.place[0].previous.is_some());
    assert!(
        plan.stop.is_empty(),
        "the old one runs until its replacement does"
    );
    s.apply(&plan, ClientStatus::Pending);

    // Replacement still pending: nothing more happens.
    assert!(s.schedule("e3", "web").is_noop());

    // Replacement running: the old one stops and the next migration starts.
    let replacement = plan.place[0].id.clone();
    s.allocs
        .iter_mut()
        .find(|a| a.id == replacement)
        .unwrap()
        .client = ClientStatus::Running;
    let plan = s.schedule("e4", "web");
    assert_eq!(plan.stop.len(), 1, "{plan:#?}\n{:#?}", s.allocs);
    assert_eq!(plan.stop[0].reason, "node drained");
    assert_eq!(plan.place.len(), 1);
    s.apply(&plan, ClientStatus::Running);
    let plan = s.schedule("e5", "web");
    s.apply(&plan, ClientStatus::Running);
    let plan = s.schedule("e6", "web");
    s.apply(&plan, ClientStatus::Running);
    assert!(live_on(&s, "n1").is_empty(), "drained");
    assert_eq!(live_on(&s, "n2").len(), 3);
    assert!(s.schedule("e7", "web").is_noop());
}

#[test]
fn drain_deadline_stops_what_is_left() {
    let mut s = MemState::with_nodes([node("n1").build()]);
    s.add_job(job("web", 1, vec![group("web", 2).build()]));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    s.nodes.push(node("n2").build());
    let n1 = s.node_mut("n1").unwrap();
    n1.draining = true;
    n1.drain_deadline = Some(500); // before the test clock (1000)
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.stop.len(), 2, "{plan:?}");
    assert!(
        plan.stop
            .iter()
            .all(|s| s.reason == "node drain deadline reached")
    );
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|a| a.node_id == "n2"));
}

#[test]
fn a_spec_change_rolls_max_parallel_at_a_time() {
    let mut s = running(4);
    let mut g = group("web", 4).env("FOO", "v2").build();
    g.update.max_parallel = 2;
    s.add_job(job("web", 2, vec![g]));
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 2, "two at a time");
    assert_eq!(plan.stop.len(), 2, "each replaced one stops");
    // A spec change gets a deployment; version 1's, never marked done in
    // this test (that is the server's watcher), is superseded.
    let statuses: Vec<(u64, DeploymentStatus)> = plan
        .deployments
        .iter()
        .map(|d| (d.job_version, d.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (1, DeploymentStatus::Cancelled),
            (2, DeploymentStatus::Running)
        ]
    );
    s.apply(&plan, ClientStatus::Pending);
    // Both still starting: nothing more moves.
    assert!(s.schedule("e3", "web").is_noop());
    // One runs but is not healthy yet: still nothing.
    let first = plan.place[0].id.clone();
    s.allocs.iter_mut().find(|a| a.id == first).unwrap().client = ClientStatus::Running;
    assert!(s.schedule("e3b", "web").is_noop());
    // It becomes healthy: one more slot rolls.
    set_health(&mut s, &first, true);
    let plan = s.schedule("e4", "web");
    assert_eq!(plan.place.len(), 1);
    s.apply(&plan, ClientStatus::Running);
    for a in s.allocs.iter_mut() {
        if a.client == ClientStatus::Pending {
            a.client = ClientStatus::Running;
        }
    }
    let pending: Vec<String> = s
        .allocs
        .iter()
        .filter(|a| a.job_version == 2 && a.health.is_none())
        .map(|a| a.id.clone())
        .collect();
    for id in pending {
        set_health(&mut s, &id, true);
    }
    let plan = s.schedule("e5", "web");
    assert_eq!(plan.place.len(), 1, "the last old one");
    s.apply(&plan, ClientStatus::Running);
    assert!(s.schedule("e6", "web").is_noop());
    assert!(s.live("web", "web").iter().all(|a| a.job_version == 2));
}

fn set_health(s: &mut MemState, id: &str, healthy: bool) {
    let a = s.allocs.iter_mut().find(|a| a.id == id).unwrap();
    a.health = Some(corral_types::AllocHealth {
        healthy,
        at: 1_000,
        message: String::new(),
    });
}
