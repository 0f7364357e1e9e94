//! The health decision on a fake clock, and the watcher on paused time.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_types::units::Millis;
use corral_types::{
    AllocHealth, Allocation, CheckState, CheckStatus, HealthCheckMode, TaskLifecycle, TaskState,
    UpdatePolicy,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::checks::CheckStates;

const MIN: u64 = 10_000;
const DEADLINE: u64 = 60_000;

fn rules(use_checks: bool) -> HealthRules {
    HealthRules {
        use_checks,
        min_healthy_time: MIN,
        healthy_deadline: DEADLINE,
    }
}

fn task(state: TaskLifecycle, restarts: u32) -> TaskState {
    TaskState {
        state,
        restarts,
        message: match state {
            TaskLifecycle::Restarting => "exited with code 1; restarting in 15s".into(),
            TaskLifecycle::Dead => "exceeded 2 restarts".into(),
            _ => String::new(),
        },
        ..TaskState::default()
    }
}

fn tasks(states: &[(&str, TaskLifecycle, u32)]) -> BTreeMap<String, TaskState> {
    states
        .iter()
        .map(|(n, s, r)| (n.to_string(), task(*s, *r)))
        .collect()
}

fn check(status: CheckStatus, failures: u32, output: &str) -> CheckState {
    CheckState {
        task: "app".into(),
        status,
        output: output.into(),
        consecutive_failures: failures,
        at: 0,
    }
}

fn checks(states: &[(&str, CheckStatus)]) -> CheckStates {
    states
        .iter()
        .map(|(n, s)| (n.to_string(), check(*s, 0, "")))
        .collect()
}

use TaskLifecycle::{Dead, Pending, Restarting, Running};

#[test]
fn rules_follow_the_mode() {
    let mut u = UpdatePolicy::default();
    assert_eq!(
        HealthRules::of(&u, true),
        Some(HealthRules {
            use_checks: true,
            min_healthy_time: 10_000,
            healthy_deadline: 300_000
        })
    );
    // A group without checks: tasks only.
    assert!(!HealthRules::of(&u, false).expect("rules").use_checks);
    u.health_check = HealthCheckMode::TaskStates;
    assert!(!HealthRules::of(&u, true).expect("rules").use_checks);
    u.health_check = HealthCheckMode::Manual;
    assert_eq!(HealthRules::of(&u, true), None);
}

#[test]
fn healthy_after_min_healthy_time_without_a_break() {
    let mut t = HealthTracker::new(rules(true), 0, &tasks(&[("app", Pending, 0)]));
    let up = tasks(&[("app", Running, 0)]);
    assert_eq!(
        t.observe(500, &tasks(&[("app", Pending, 0)]), &checks(&[])),
        None
    );
    assert_eq!(t.next_wakeup(), DEADLINE);
    // Running, the check still pending: not fine yet.
    assert_eq!(
        t.observe(1_000, &up, &checks(&[("c", CheckStatus::Pending)])),
        None
    );
    let passing = checks(&[("c", CheckStatus::Passing)]);
    assert_eq!(t.observe(2_000, &up, &passing), None);
    assert_eq!(t.next_wakeup(), 12_000);
    // A failing probe in between starts the clock again.
    assert_eq!(
        t.observe(8_000, &up, &checks(&[("c", CheckStatus::Failing)])),
        None
    );
    assert_eq!(t.observe(9_000, &up, &passing), None);
    assert_eq!(t.observe(18_999, &up, &passing), None);
    assert_eq!(t.observe(19_000, &up, &passing), Some(Verdict::Healthy));
}

#[test]
fn task_states_mode_ignores_checks() {
    let mut t = HealthTracker::new(rules(false), 0, &tasks(&[("app", Running, 0)]));
    let up = tasks(&[("app", Running, 0), ("side", Running, 0)]);
    let failing = checks(&[("c", CheckStatus::Failing)]);
    assert_eq!(t.observe(0, &up, &failing), None);
    assert_eq!(t.observe(MIN, &up, &failing), Some(Verdict::Healthy));
}

#[test]
fn a_task_that_dies_or_restarts_first_is_unhealthy() {
    let start = tasks(&[("app", Running, 2), ("side", Running, 0)]);
    let none = checks(&[]);
    let mut t = HealthTracker::new(rules(false), 0, &start);
    // Restarts from before the watch do not count.
    assert_eq!(t.observe(1, &start, &none), None);
    assert_eq!(
        t.observe(2, &tasks(&[("app", Restarting, 2), ("side", Running, 0)]), &none),
        Some(Verdict::Unhealthy(
            "task app restarted before the allocation was healthy: exited with code 1; restarting in 15s"
                .into()
        ))
    );
    // A restart seen only by its counter (the Restarting state missed).
    let mut t = HealthTracker::new(rules(false), 0, &start);
    assert_eq!(
        t.observe(
            2,
            &tasks(&[("app", Running, 3), ("side", Running, 0)]),
            &none
        ),
        Some(Verdict::Unhealthy(
            "task app restarted before the allocation was healthy".into()
        ))
    );
    let mut t = HealthTracker::new(rules(false), 0, &start);
    assert_eq!(
        t.observe(2, &tasks(&[("app", Running, 2), ("side", Dead, 0)]), &none),
        Some(Verdict::Unhealthy(
            "task side died before the allocation was healthy: exceeded 2 restarts".into()
        ))
    );
}

#[test]
fn the_deadline_says_what_was_wrong() {
    let up = tasks(&[("app", Running, 0), ("side", Pending, 0)]);
    let mut c = checks(&[("web-http", CheckStatus::Passing)]);
    c.insert(
        "web-tcp".into(),
        check(
            CheckStatus::Failing,
            7,
            "TCP connect 10.0.0.2:80: connection refused",
        ),
    );
    c.insert(
        "web-exec".into(),
        check(CheckStatus::Pending, 0, "exit code 1"),
    );
    let mut t = HealthTracker::new(rules(true), 1_000, &up);
    assert_eq!(t.observe(DEADLINE, &up, &c), None);
    assert_eq!(
        t.observe(DEADLINE + 1_000, &up, &c),
        Some(Verdict::Unhealthy(
            "not healthy within the healthy_deadline of 1m: task side is pending; check web-exec is pending (last output: exit code 1); check web-tcp is failing (7 consecutive failures): TCP connect 10.0.0.2:80: connection refused".into()
        ))
    );
    // Fine, but not for long enough.
    let up = tasks(&[("app", Running, 0)]);
    let mut t = HealthTracker::new(rules(false), 0, &up);
    assert_eq!(t.observe(55_000, &up, &c), None);
    assert_eq!(t.next_wakeup(), DEADLINE);
    assert_eq!(
        t.observe(DEADLINE, &up, &c),
        Some(Verdict::Unhealthy(
            "not healthy within the healthy_deadline of 1m: healthy for only 5s of the min_healthy_time of 10s".into()
        ))
    );
}

struct World {
    alloc: watch::Sender<Allocation>,
    task: watch::Sender<TaskState>,
    checks: watch::Sender<CheckStates>,
    out: watch::Receiver<Option<AllocHealth>>,
    stop: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

fn allocation(deployment: Option<&str>) -> Allocation {
    let mut a: Allocation = serde_json::from_value(serde_json::json!({
        "id": "a1", "job": "shop", "job_version": 1, "group": "web", "index": 0,
        "node_id": "n1", "desired": "run", "client": "pending",
        "resources": {"cpu": 100, "memory": 1000000},
        "created_at": 0, "modified_at": 0, "create_index": 0, "modify_index": 0
    }))
    .expect("allocation");
    a.deployment_id = deployment.map(str::to_string);
    a
}

fn world(alloc: Allocation, mode: HealthCheckMode) -> World {
    let update = UpdatePolicy {
        min_healthy_time: Millis::from_secs(10),
        healthy_deadline: Millis::from_secs(60),
        health_check: mode,
        ..UpdatePolicy::default()
    };
    let (alloc, alloc_rx) = watch::channel(alloc);
    let (task, task_rx) = watch::channel(TaskState::default());
    let (checks, checks_rx) = watch::channel(CheckStates::from([(
        "web-http".to_string(),
        check(CheckStatus::Pending, 0, ""),
    )]));
    let (out_tx, out) = watch::channel(None);
    let stop = CancellationToken::new();
    let join = tokio::spawn(watch(
        alloc_rx,
        update,
        BTreeMap::from([("app".to_string(), task_rx)]),
        checks_rx,
        true,
        Outputs {
            verdict: std::sync::Arc::new(out_tx),
            started: std::sync::Arc::new(watch::channel(None).0),
        },
        stop.clone(),
    ));
    World {
        alloc,
        task,
        checks,
        out,
        stop,
        join,
    }
}

impl World {
    fn running_and_passing(&self) {
        self.task.send_replace(task(Running, 0));
        self.checks.send_modify(|m| {
            m.insert(
                "web-http".into(),
                check(CheckStatus::Passing, 0, "HTTP 200 OK"),
            );
        });
    }
}

#[tokio::test(start_paused = true)]
async fn the_watcher_decides_once_per_deployment() {
    let mut w = world(allocation(Some("d1")), HealthCheckMode::Checks);
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.running_and_passing();
    let h = w
        .out
        .wait_for(Option::is_some)
        .await
        .expect("decided")
        .clone()
        .expect("health");
    assert!(h.healthy, "{h:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(12));
    // Never flips afterwards.
    w.task.send_replace(task(Restarting, 0));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(w.out.borrow().as_ref().map(|h| h.healthy), Some(true));
    // A new deployment (an in-place update): decided again.
    let mut a = allocation(Some("d2"));
    w.task.send_replace(task(Running, 0));
    a.client = corral_types::ClientStatus::Running;
    w.alloc.send_replace(a);
    w.out.wait_for(Option::is_none).await.expect("reset");
    w.checks.send_modify(|m| {
        m.insert(
            "web-http".into(),
            check(CheckStatus::Failing, 4, "HTTP 503"),
        );
    });
    let h = w
        .out
        .wait_for(Option::is_some)
        .await
        .expect("decided")
        .clone()
        .expect("health");
    assert!(!h.healthy);
    assert!(
        h.message
            .ends_with("check web-http is failing (4 consecutive failures): HTTP 503"),
        "{}",
        h.message
    );
    w.stop.cancel();
    w.join.await.expect("join");
}

#[tokio::test(start_paused = true)]
async fn no_verdict_without_a_deployment_in_manual_mode_or_once_stopped() {
    let mut w = world(allocation(None), HealthCheckMode::Checks);
    w.running_and_passing();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(*w.out.borrow(), None);
    // Joining a deployment starts the watch.
    w.alloc.send_replace(allocation(Some("d1")));
    w.out.wait_for(Option::is_some).await.expect("decided");

    let w = world(allocation(Some("d1")), HealthCheckMode::Manual);
    w.running_and_passing();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(*w.out.borrow(), None);

    // Stopped: the tasks die, and that is no verdict.
    let w = world(allocation(Some("d1")), HealthCheckMode::Checks);
    w.stop.cancel();
    w.task.send_replace(task(Dead, 0));
    w.join.await.expect("join");
    assert_eq!(*w.out.borrow(), None);
}

#[tokio::test(start_paused = true)]
async fn a_verdict_from_before_an_agent_restart_is_kept() {
    let mut a = allocation(Some("d1"));
    a.health = Some(AllocHealth {
        healthy: false,
        at: 5,
        message: "task app died".into(),
    });
    let w = world(a, HealthCheckMode::Checks);
    w.running_and_passing();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        w.out.borrow().as_ref().map(|h| (h.healthy, h.at)),
        Some((false, 5))
    );
}
