//! The reschedule policy: a failed allocation is replaced after its delay
//! (growing with each reschedule of its slot), preferring another node,
//! within its attempts; a deployment's own failures are left to it.

use corral_types::units::Millis;
use corral_types::{
    ClientStatus, DelayFunction, DeploymentStatus, RescheduleEvent, ReschedulePolicy,
};

use crate::testing::{MemState, alloc, group, job, node};

const SEC: u64 = 1_000;
/// When the allocations in these tests failed.
const FAILED: u64 = 100_000_000;

/// `web` (count 1) whose only allocation failed on `n1` at `FAILED`,
/// after `earlier` reschedules of its slot; nodes n1 and n2. Another job
/// runs on n1, so bin-pack alone would choose n1: n2 wins by the
/// reschedule penalty.
fn failed_on_n1(policy: ReschedulePolicy, earlier: &[u64]) -> MemState {
    let mut s = MemState::with_nodes(["n1", "n2"].map(|id| node(id).build()));
    let other = job("other", 1, vec![group("other", 1).cpu(1000).build()]);
    s.allocs.push(alloc("o", &other, "other", 0, "n1"));
    s.add_job(other);
    let mut g = group("web", 1).build();
    g.reschedule = policy;
    let j = job("web", 1, vec![g]);
    let mut failed = alloc("f", &j, "web", 0, "n1");
    failed.client = ClientStatus::Failed;
    failed.modified_at = FAILED;
    failed.reschedules = earlier
        .iter()
        .enumerate()
        .map(|(i, at)| RescheduleEvent {
            at: *at,
            prev_alloc: format!("old{i}"),
            prev_node: "n2".into(),
            delay_ms: 0,
        })
        .collect();
    s.allocs.push(failed);
    s.add_job(j);
    s
}

#[test]
fn delays_grow_as_the_policy_says() {
    let p = |f: DelayFunction| ReschedulePolicy {
        delay: Millis(30 * SEC),
        delay_function: f,
        max_delay: Millis(300 * SEC),
        ..Default::default()
    };
    let secs = |f| {
        (0..7)
            .map(|n| p(f).delay_after(n).0 / SEC)
            .collect::<Vec<_>>()
    };
    assert_eq!(secs(DelayFunction::Constant), [30, 30, 30, 30, 30, 30, 30]);
    assert_eq!(
        secs(DelayFunction::Exponential),
        [30, 60, 120, 240, 300, 300, 300]
    );
    assert_eq!(
        secs(DelayFunction::Fibonacci),
        [30, 30, 60, 90, 150, 240, 300]
    );
    // No overflow however many reschedules came before.
    assert_eq!(p(DelayFunction::Exponential).delay_after(500).0, 300 * SEC);
    assert_eq!(p(DelayFunction::Fibonacci).delay_after(500).0, 300 * SEC);
}

#[test]
fn a_failed_allocation_is_replaced_after_its_delay_on_another_node() {
    let s = failed_on_n1(ReschedulePolicy::default(), &[]);
    // Within the delay (30 s by default): nothing placed, a look asked for
    // when it ends.
    let plan = s.schedule_at("e1", "web", FAILED + 10 * SEC);
    assert!(plan.place.is_empty() && plan.stop.is_empty(), "{plan:#?}");
    assert_eq!(plan.wake_at, Some(FAILED + 30 * SEC));
    // Once it ended: a replacement in the slot, on the other node, with
    // the history.
    let plan = s.schedule_at("e2", "web", FAILED + 30 * SEC);
    assert_eq!(plan.place.len(), 1, "{plan:#?}");
    let r = &plan.place[0];
    assert_eq!((r.index, r.previous.as_deref()), (0, Some("f")));
    assert_eq!(r.node_id, "n2");
    assert_eq!(
        r.reschedules,
        [RescheduleEvent {
            at: FAILED + 30 * SEC,
            prev_alloc: "f".into(),
            prev_node: "n1".into(),
            delay_ms: 30 * SEC,
        }]
    );
    assert_eq!(plan.wake_at, None);
    // The failed one is left as it is (its history), not stopped.
    assert!(plan.stop.is_empty());
}

#[test]
fn the_failed_node_is_used_when_it_is_the_only_one() {
    let mut s = failed_on_n1(ReschedulePolicy::default(), &[]);
    s.nodes.retain(|n| n.id == "n1");
    let plan = s.schedule_at("e1", "web", FAILED + 30 * SEC);
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].node_id, "n1");
}

#[test]
fn each_reschedule_of_a_slot_waits_longer() {
    // Two reschedules before: exponential 30 s -> 120 s.
    let s = failed_on_n1(ReschedulePolicy::default(), &[1, 2]);
    let plan = s.schedule_at("e1", "web", FAILED + 60 * SEC);
    assert!(plan.place.is_empty());
    assert_eq!(plan.wake_at, Some(FAILED + 120 * SEC));
    let plan = s.schedule_at("e2", "web", FAILED + 120 * SEC);
    assert_eq!(plan.place[0].reschedules.len(), 3);
    assert_eq!(plan.place[0].reschedules[2].delay_ms, 120 * SEC);
}

#[test]
fn attempts_are_counted_within_the_interval() {
    let limited = ReschedulePolicy {
        attempts: 2,
        interval: Millis(3600 * SEC),
        unlimited: false,
        delay_function: DelayFunction::Constant,
        ..Default::default()
    };
    let now = FAILED + 30 * SEC;
    // Two reschedules in the last hour: it holds its slot, no look later.
    let s = failed_on_n1(limited, &[now - 600 * SEC, now - 60 * SEC]);
    let plan = s.schedule_at("e1", "web", now);
    assert!(plan.is_noop() && plan.wake_at.is_none(), "{plan:#?}");
    // One of them is older than the interval: one more is allowed.
    let s = failed_on_n1(limited, &[now - 7200 * SEC, now - 60 * SEC]);
    let plan = s.schedule_at("e2", "web", now);
    assert_eq!(plan.place.len(), 1);
    // attempts: 0 never reschedules.
    let never = ReschedulePolicy {
        attempts: 0,
        ..limited
    };
    let s = failed_on_n1(never, &[]);
    assert!(s.schedule_at("e3", "web", now + 3600 * SEC).is_noop());
}

#[test]
fn a_deployments_failure_is_left_to_the_deployment() {
    let mut s = failed_on_n1(ReschedulePolicy::default(), &[]);
    let j = s.jobs.iter().find(|j| j.name == "web").unwrap().clone();
    let mut d = crate::deployment::new_deployment(&j, &[], "d1".into(), None, 0);
    s.allocs[1].deployment_id = Some("d1".into());
    let later = FAILED + 3600 * SEC;
    for (status, replaced) in [
        (DeploymentStatus::Running, false),
        (DeploymentStatus::Failed, false),
        (DeploymentStatus::Successful, true),
    ] {
        d.status = status;
        s.deployments = vec![d.clone()];
        let plan = s.schedule_at("e1", "web", later);
        assert_eq!(!plan.place.is_empty(), replaced, "{status:?}: {plan:#?}");
    }
}

#[test]
fn a_spec_change_replaces_a_failed_allocation_at_once() {
    let mut s = failed_on_n1(ReschedulePolicy::default(), &[]);
    let mut g = group("web", 1).env("FIX", "1").build();
    g.update.max_parallel = 0;
    s.add_job(job("web", 2, vec![g]));
    let plan = s.schedule_at("e1", "web", FAILED + SEC);
    assert_eq!(plan.place.len(), 1);
    assert!(plan.place[0].reschedules.is_empty());
    assert_eq!(plan.stop.len(), 1);
}
