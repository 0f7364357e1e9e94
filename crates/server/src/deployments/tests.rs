//! The watcher's verdicts on a real in-memory store.

use corral_scheduler::testing::{alloc, group, job};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{
    AllocHealth, Allocation, ClientStatus, Deployment, DeploymentStatus, Job, UnixMillis,
};

use super::judge;
use super::watcher::pass;

const T0: UnixMillis = 1_000_000;

fn store() -> StateStore {
    StateStore::open(Box::new(MemoryStore::new())).unwrap()
}

fn version(v: u64, count: u32, edit: impl FnOnce(&mut corral_types::GroupSpec)) -> Job {
    let mut g = group("web", count).env("V", &v.to_string()).build();
    edit(&mut g);
    job("web", v, vec![g])
}

fn deployment(j: &Job, canaries: u32) -> Deployment {
    let destructive = if canaries > 0 {
        vec!["web".to_string()]
    } else {
        vec![]
    };
    let mut d =
        corral_scheduler::deployment::new_deployment(j, &destructive, "d1".into(), None, T0);
    for g in d.groups.values_mut() {
        g.desired_canaries = canaries;
        g.promoted = canaries == 0;
    }
    d
}

fn owned(id: &str, j: &Job, index: u32, healthy: Option<bool>, canary: bool) -> Allocation {
    let mut a = alloc(id, j, "web", index, "n1");
    a.deployment_id = Some("d1".into());
    a.canary = canary;
    a.health = healthy.map(|h| AllocHealth {
        healthy: h,
        at: T0,
        message: if h {
            String::new()
        } else {
            "check web-http failing: 500".into()
        },
    });
    a
}

fn commit(s: &StateStore, w: Vec<Write>) {
    s.commit(w).unwrap();
}

#[test]
fn all_healthy_succeeds_and_marks_the_version_stable() {
    let s = store();
    let v1 = version(1, 2, |_| {});
    let d = deployment(&v1, 0);
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v1, 0, Some(true), false)),
            Write::Alloc(owned("a1", &v1, 1, None, false)),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    assert_eq!(v.deployment.groups["web"].healthy, 1);
    commit(
        &s,
        vec![Write::Alloc(owned("a1", &v1, 1, Some(true), false))],
    );
    let (writes, _) = pass(&s.snapshot(), 0, T0 + 2);
    commit(&s, writes);
    let snap = s.snapshot();
    assert_eq!(
        snap.deployment("d1").unwrap().status,
        DeploymentStatus::Successful
    );
    assert!(snap.job("web").unwrap().stable);
}

#[test]
fn an_unhealthy_allocation_fails_it_and_auto_revert_rolls_back_to_the_stable_version() {
    let s = store();
    let mut v1 = version(1, 2, |_| {});
    v1.stable = true;
    let v2 = version(2, 2, |g| g.update.auto_revert = true);
    let d = {
        let mut d = deployment(&v2, 0);
        d.job_version = 2;
        d
    };
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(alloc("old", &v1, "web", 1, "n1")),
            Write::Alloc(owned("new", &v2, 0, Some(false), false)),
        ],
    );
    let (writes, evals) = pass(&s.snapshot(), 0, T0 + 1);
    assert_eq!(evals.len(), 1);
    commit(&s, writes);
    let snap = s.snapshot();
    let d = snap.deployment("d1").unwrap();
    assert_eq!(d.status, DeploymentStatus::Failed);
    assert!(
        d.description
            .contains("web.web[0] is unhealthy: check web-http failing")
            && d.description.contains("rolling back to version 1"),
        "{}",
        d.description
    );
    let v3 = snap.job("web").unwrap();
    assert_eq!((v3.version, v3.reverts_to), (3, Some(1)));
    assert_eq!(v3.spec, v1.spec);
}

#[test]
fn without_auto_revert_a_failure_stays_on_the_new_version() {
    let s = store();
    let mut v1 = version(1, 2, |_| {});
    v1.stable = true;
    let v2 = version(2, 2, |_| {});
    let mut d = deployment(&v2, 0);
    d.job_version = 2;
    commit(
        &s,
        vec![
            Write::Job(v1),
            Write::Job(v2),
            Write::Deployment(d),
            Write::Alloc(owned("new", &version(2, 2, |_| {}), 0, Some(false), false)),
        ],
    );
    let (writes, _) = pass(&s.snapshot(), 0, T0 + 1);
    commit(&s, writes);
    let snap = s.snapshot();
    assert_eq!(snap.job("web").unwrap().version, 2);
    assert_eq!(
        snap.deployment("d1").unwrap().status,
        DeploymentStatus::Failed
    );
}

#[test]
fn no_progress_within_the_deadline_fails_it() {
    let s = store();
    let v1 = version(1, 2, |g| {
        g.update.progress_deadline = corral_types::units::Millis(10_000)
    });
    let d = deployment(&v1, 0);
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v1, 0, None, false)),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 9_000).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    let v = judge(&s.snapshot(), &d, T0 + 10_001).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Failed);
    assert!(
        v.deployment.description.contains("progress deadline (10s)"),
        "{}",
        v.deployment.description
    );
}

#[test]
fn progress_moves_the_deadline() {
    let s = store();
    let v1 = version(1, 2, |g| {
        g.update.progress_deadline = corral_types::units::Millis(10_000)
    });
    let d = deployment(&v1, 0);
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v1, 0, Some(true), false)),
            Write::Alloc(owned("a1", &v1, 1, None, false)),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 8_000).unwrap();
    assert_eq!(
        v.deployment.groups["web"].require_progress_by,
        Some(T0 + 18_000)
    );
    assert!(
        judge(&s.snapshot(), &v.deployment, T0 + 15_000)
            .is_some_and(|v| v.deployment.status == DeploymentStatus::Running)
    );
}

#[test]
fn healthy_canaries_wait_for_promotion_unless_auto_promote() {
    for auto in [false, true] {
        let s = store();
        let mut v1 = version(1, 3, |_| {});
        v1.stable = true;
        let v2 = version(2, 3, |g| {
            g.update.canary = 1;
            g.update.auto_promote = auto;
        });
        let mut d = deployment(&v2, 1);
        d.job_version = 2;
        for g in d.groups.values_mut() {
            g.auto_promote = auto;
        }
        let mut writes = vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("c0", &v2, 0, Some(true), true)),
        ];
        for i in 0..3 {
            writes.push(Write::Alloc(alloc(&format!("old{i}"), &v1, "web", i, "n1")));
        }
        commit(&s, writes);
        let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
        assert_eq!(v.deployment.groups["web"].promoted, auto);
        assert_eq!(v.reschedule, auto);
        assert_eq!(v.deployment.status, DeploymentStatus::Running);
        if !auto {
            assert!(
                v.deployment
                    .description
                    .contains("corral deploy promote web"),
                "{}",
                v.deployment.description
            );
        }
    }
}

#[test]
fn allocations_kept_in_place_count_as_ready() {
    let s = store();
    let v1 = version(1, 2, |_| {});
    let d = deployment(&v1, 0);
    let mut kept = alloc("kept", &v1, "web", 1, "n1");
    kept.client = ClientStatus::Running;
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v1, 0, Some(true), false)),
            Write::Alloc(kept),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Successful);
}

#[test]
fn a_version_without_a_deployment_becomes_stable_once_everything_runs_it() {
    let s = store();
    let v2 = version(2, 2, |g| g.update.max_parallel = 0);
    commit(
        &s,
        vec![
            Write::Job(v2.clone()),
            Write::Alloc(alloc("a0", &v2, "web", 0, "n1")),
        ],
    );
    let (writes, _) = pass(&s.snapshot(), 0, T0);
    assert!(writes.is_empty(), "one slot still empty");
    let started = |id: &str, index: u32, at: u64| {
        let mut a = alloc(id, &v2, "web", index, "n1");
        for t in &v2.spec.groups[0].tasks {
            a.tasks.insert(
                t.name.clone(),
                corral_types::TaskState {
                    state: corral_types::TaskLifecycle::Running,
                    started_at: Some(at),
                    ..Default::default()
                },
            );
        }
        a
    };
    commit(
        &s,
        vec![
            Write::Alloc(started("a0", 0, T0)),
            Write::Alloc(started("a1", 1, T0)),
        ],
    );
    // Running, but not for min_healthy_time yet (a task that crashes a
    // second after it starts would look like this between crashes).
    let (writes, _) = pass(&s.snapshot(), 0, T0 + 1000);
    assert!(writes.is_empty(), "stable after a second");
    let healthy_after = v2.spec.groups[0].update.min_healthy_time.0;
    let (writes, _) = pass(&s.snapshot(), 0, T0 + healthy_after);
    commit(&s, writes);
    assert!(s.snapshot().job("web").unwrap().stable);
}

#[test]
fn a_lost_canary_is_not_a_healthy_one() {
    let s = store();
    let mut v1 = version(1, 3, |_| {});
    v1.stable = true;
    let v2 = version(2, 3, |g| {
        g.update.canary = 1;
        g.update.auto_promote = true;
    });
    let mut d = deployment(&v2, 1);
    d.job_version = 2;
    for g in d.groups.values_mut() {
        g.auto_promote = true;
    }
    let mut lost = owned("c0", &v2, 0, None, true);
    lost.client = ClientStatus::Lost;
    let mut writes = vec![
        Write::Job(v1.clone()),
        Write::Job(v2.clone()),
        Write::Deployment(d.clone()),
        Write::Alloc(lost),
    ];
    for i in 0..3 {
        writes.push(Write::Alloc(alloc(&format!("old{i}"), &v1, "web", i, "n1")));
    }
    commit(&s, writes);
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert!(!v.deployment.groups["web"].promoted, "no healthy canary");
}

#[test]
fn canaries_waiting_for_a_person_do_not_run_out_of_time() {
    let s = store();
    let mut v1 = version(1, 2, |_| {});
    v1.stable = true;
    let v2 = version(2, 2, |g| {
        g.update.canary = 1;
        g.update.progress_deadline = corral_types::units::Millis(10_000);
    });
    let mut d = deployment(&v2, 1);
    d.job_version = 2;
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("c0", &v2, 0, Some(true), true)),
            Write::Alloc(alloc("old0", &v1, "web", 0, "n1")),
            Write::Alloc(alloc("old1", &v1, "web", 1, "n1")),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 60_000).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    assert!(v.deployment.description.contains("promote"));
}

#[test]
fn with_no_older_allocation_left_there_is_nothing_to_canary() {
    let s = store();
    let v3 = version(3, 2, |g| g.update.canary = 1);
    let mut d = deployment(&v3, 1);
    d.job_version = 3;
    commit(
        &s,
        vec![
            Write::Job(v3.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(alloc("a0", &v3, "web", 0, "n1")),
            Write::Alloc(alloc("a1", &v3, "web", 1, "n1")),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert!(v.deployment.groups["web"].promoted);
    assert_eq!(v.deployment.status, DeploymentStatus::Successful);
}

#[test]
fn a_failed_rollback_does_not_reach_further_back() {
    let s = store();
    let mut v1 = version(1, 1, |_| {});
    v1.stable = true;
    let mut v2 = version(2, 1, |g| g.update.auto_revert = true);
    v2.stable = true;
    // v4 re-runs v2's spec (a rollback after v3) and fails too.
    let mut v4 = v2.clone();
    v4.version = 4;
    v4.stable = false;
    let mut v3 = version(3, 1, |g| g.update.auto_revert = true);
    v3.stable = false;
    let mut d = deployment(&v4, 0);
    d.job_version = 4;
    commit(
        &s,
        vec![
            Write::Job(v1),
            Write::Job(v2),
            Write::Job(v3),
            Write::Job(v4.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v4, 0, Some(false), false)),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Failed);
    assert!(
        v.revert_to.is_none(),
        "{:?}",
        v.revert_to.map(|j| j.version)
    );
    assert!(
        v.deployment.description.contains("no stable version"),
        "{}",
        v.deployment.description
    );
}

/// Issue 12, case 2 (count 1): a deployment is not successful while an
/// allocation of an older version still runs beside the healthy new one.
#[test]
fn an_older_allocation_still_running_keeps_it_open() {
    let s = store();
    let mut v1 = version(1, 1, |_| {});
    v1.stable = true;
    let v2 = version(2, 1, |_| {});
    let mut d = deployment(&v2, 0);
    d.job_version = 2;
    let mut old = alloc("old", &v1, "web", 0, "n1");
    old.desired = corral_types::DesiredStatus::Stop;
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("new", &v2, 0, Some(true), false)),
            Write::Alloc(old.clone()),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    old.client = ClientStatus::Complete;
    commit(&s, vec![Write::Alloc(old)]);
    let v = judge(&s.snapshot(), &d, T0 + 2).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Successful);
}

/// Issue 12, case 5: an allocation of this version that an earlier
/// deployment placed and never proved healthy is not counted healthy.
#[test]
fn an_allocation_left_undecided_by_an_earlier_deployment_is_not_healthy() {
    let s = store();
    let v3 = version(3, 1, |_| {});
    let mut d = deployment(&v3, 0);
    d.job_version = 3;
    let mut a = owned("a", &v3, 0, None, false);
    a.deployment_id = Some("d2".into());
    commit(
        &s,
        vec![
            Write::Job(v3.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(a),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    assert_eq!(v.deployment.groups["web"].healthy, 0);
}

/// Found by a hostile run: an old allocation that crashed (or was drained
/// away) left "nothing to compare" and the canary was promoted with
/// nobody promoting. It waits for a person.
#[test]
fn a_canary_whose_old_allocation_crashed_still_waits_for_promotion() {
    let s = store();
    let mut v1 = version(1, 1, |_| {});
    v1.stable = true;
    let v2 = version(2, 1, |g| g.update.canary = 1);
    let mut d = deployment(&v2, 1);
    d.job_version = 2;
    let mut old = alloc("old", &v1, "web", 0, "n1");
    old.client = ClientStatus::Failed;
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("c0", &v2, 0, Some(true), true)),
            Write::Alloc(old),
        ],
    );
    let v = judge(&s.snapshot(), &d, T0 + 1).unwrap();
    assert!(!v.deployment.groups["web"].promoted);
    assert_eq!(v.deployment.status, DeploymentStatus::Running);
    assert!(!v.stable);
}

/// Found by a hostile run: scaled to 0, the version was stable while the
/// old processes were still stopping.
#[test]
fn a_version_without_a_deployment_waits_for_older_allocations_to_stop() {
    let s = store();
    let v1 = version(1, 1, |_| {});
    let v2 = version(2, 0, |_| {});
    let mut old = alloc("old", &v1, "web", 0, "n1");
    old.desired = corral_types::DesiredStatus::Stop;
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Job(v2.clone()),
            Write::Alloc(old.clone()),
        ],
    );
    let (writes, _) = pass(&s.snapshot(), 0, T0);
    assert!(writes.is_empty(), "stable while v1 still runs: {writes:?}");
    old.client = ClientStatus::Complete;
    commit(&s, vec![Write::Alloc(old)]);
    let (writes, _) = pass(&s.snapshot(), 0, T0);
    commit(&s, writes);
    assert!(s.snapshot().job("web").unwrap().stable);
}

/// Paused, a deployment's counters follow its allocations, but it neither
/// promotes, fails (unhealthy allocation, progress deadline) nor
/// succeeds: those wait for resume.
#[test]
fn a_paused_deployment_counts_but_does_not_move() {
    let s = store();
    let v1 = version(1, 2, |_| {});
    // One canary and no other version: a running deployment promotes.
    let mut d = deployment(&v1, 1);
    d.status = DeploymentStatus::Paused;
    d.description = "paused by user".into();
    commit(
        &s,
        vec![
            Write::Job(v1.clone()),
            Write::Deployment(d.clone()),
            Write::Alloc(owned("a0", &v1, 0, Some(true), true)),
            Write::Alloc(owned("a1", &v1, 1, Some(false), false)),
        ],
    );
    let late = T0 + 24 * 3_600_000;
    let v = judge(&s.snapshot(), &d, late).expect("judged while paused");
    let g = &v.deployment.groups["web"];
    assert_eq!((g.placed, g.healthy, g.unhealthy), (2, 1, 1));
    assert_eq!(g.placed_canaries, vec!["a0".to_string()]);
    assert_eq!(v.deployment.status, DeploymentStatus::Paused);
    assert_eq!(v.deployment.description, "paused by user");
    assert!(!g.promoted);
    assert_eq!(g.require_progress_by, d.groups["web"].require_progress_by);
    assert!(!v.reschedule && !v.stable && v.revert_to.is_none());
    assert_eq!(v.deployment.modified_at, late);

    // All healthy: still paused, the version not stable.
    commit(
        &s,
        vec![Write::Alloc(owned("a1", &v1, 1, Some(true), false))],
    );
    let v = judge(&s.snapshot(), &v.deployment, late + 1).expect("judged");
    assert_eq!(v.deployment.groups["web"].healthy, 2);
    assert_eq!(v.deployment.status, DeploymentStatus::Paused);
    assert!(!v.stable && !v.reschedule);
}
