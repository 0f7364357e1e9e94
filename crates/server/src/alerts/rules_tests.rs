//! Each rule with a fake clock, on a real in-memory state.

use std::time::Duration;

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{
    AlertRule, AlertStatus, Allocation, ClientStatus, DeploymentStatus, DesiredStatus, Event,
    EventType, Job, NodeStatus, TaskState,
};

use super::*;

const T0: UnixMillis = 1_800_000_000_000;
const MIN: u64 = 60_000;

struct World {
    store: StateStore,
    engine: Engine,
    memory: Vec<MemorySample>,
    disk: Option<DiskUsage>,
    /// The index the next unnumbered event gets, as the store numbers
    /// them.
    next_index: u64,
}

impl World {
    fn new(edit: impl FnOnce(&mut AlertsConfig)) -> World {
        let mut cfg = AlertsConfig::default();
        edit(&mut cfg);
        World {
            store: StateStore::open(Box::new(MemoryStore::new())).expect("store"),
            engine: Engine::new(cfg),
            memory: Vec::new(),
            disk: None,
            next_index: 1,
        }
    }

    fn commit(&self, w: Vec<Write>) {
        self.store.commit(w).expect("commit");
    }

    /// Observe `e`, numbered next unless it has an index (a replay).
    fn see(&mut self, mut e: Event) {
        if e.index == 0 {
            e.index = self.next_index;
        }
        self.next_index = self.next_index.max(e.index + 1);
        let s = self.store.snapshot();
        self.engine.observe(&e, &s);
    }

    /// Evaluate at `now` without storing the result: a failed commit.
    fn eval_lost(&mut self, now: UnixMillis) -> Vec<AlertChange> {
        let s = self.store.snapshot();
        self.engine.evaluate(&Inputs {
            now,
            state: &s,
            memory: &self.memory,
            disk: self.disk.clone(),
        })
    }

    /// Evaluate at `now` and store the result, as the alert loop does.
    fn eval(&mut self, now: UnixMillis) -> Vec<AlertChange> {
        let changes = self.eval_lost(now);
        self.commit(
            changes
                .iter()
                .map(|c| Write::Alert(c.alert.clone()))
                .collect(),
        );
        changes
    }

    fn firing(&self) -> Vec<Alert> {
        crate::alerts::listing(&self.store.snapshot(), false)
    }
}

fn transitions(c: &[AlertChange]) -> Vec<(AlertRule, Transition)> {
    c.iter().map(|c| (c.alert.rule, c.transition)).collect()
}

fn web(version: u64) -> Job {
    job(
        "web",
        version,
        vec![group("web", 1).env("V", &version.to_string()).build()],
    )
}

fn restarted(alloc: &str, task: &str, at: UnixMillis) -> Event {
    Event::new(EventType::AllocationRestarted, at, "restarted")
        .job("web")
        .alloc(alloc)
        .node("n1")
        .task(task)
}

fn with_job(w: &World) -> Job {
    let v1 = web(1);
    w.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v1.clone()),
        Write::Alloc(running(alloc("a0", &v1, "web", 0, "n1"))),
    ]);
    v1
}

/// `a` with its task `web` running, as its agent reports it.
fn running(mut a: Allocation) -> Allocation {
    a.tasks.insert(
        "web".into(),
        TaskState {
            state: corral_types::TaskLifecycle::Running,
            started_at: Some(T0 - MIN),
            ..TaskState::default()
        },
    );
    a
}

/// Task `web` of `a0` using `used` of `limit`, measured at `at` in the run
/// that started at `T0 - MIN`.
fn mem(used: u64, limit: u64, at: UnixMillis) -> MemorySample {
    MemorySample {
        alloc_id: "a0".into(),
        task: "web".into(),
        node_id: "n1".into(),
        memory_bytes: used,
        limit_bytes: limit,
        at,
        run: Some(T0 - MIN),
    }
}

#[test]
fn crash_loop_fires_at_three_restarts_in_the_window_then_resolves_when_quiet() {
    let mut w = World::new(|_| {});
    with_job(&w);
    w.see(restarted("a0", "web", T0));
    w.see(restarted("a0", "web", T0 + MIN));
    assert!(w.eval(T0 + MIN).is_empty(), "two restarts are not a loop");
    w.see(restarted("a0", "web", T0 + 2 * MIN));
    let c = w.eval(T0 + 2 * MIN);
    assert_eq!(transitions(&c), [(AlertRule::CrashLoop, Transition::Fired)]);
    let a = &c[0].alert;
    assert_eq!(a.subject, "web/web/web");
    assert_eq!((a.count, a.job_version), (3, Some(1)));
    assert_eq!(a.job.as_deref(), Some("web"));
    assert_eq!(a.task.as_deref(), Some("web"));
    assert_eq!(a.fired_at, T0 + 2 * MIN);
    assert!(
        a.summary.contains("restarted 3 times in the last 10m"),
        "{}",
        a.summary
    );

    // Nothing new: nothing to write.
    assert!(w.eval(T0 + 3 * MIN).is_empty());
    // Another restart: the same alert, counted, no second one.
    w.see(restarted("a0", "web", T0 + 4 * MIN));
    let c = w.eval(T0 + 4 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::CrashLoop, Transition::Updated)]
    );
    assert_eq!(c[0].alert.count, 4);
    assert_eq!(w.firing().len(), 1);

    // Ten minutes without a restart.
    assert!(w.eval(T0 + 14 * MIN - 1).is_empty());
    let c = w.eval(T0 + 14 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::CrashLoop, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "no restart for 10m");
    assert_eq!(c[0].alert.resolved_at, Some(T0 + 14 * MIN));
    assert!(w.firing().is_empty());
}

#[test]
fn restarts_spread_wider_than_the_window_are_no_loop() {
    let mut w = World::new(|c| c.crash_loop.window = Duration::from_secs(300));
    with_job(&w);
    for i in 0..5 {
        let t = T0 + i * 3 * MIN;
        w.see(restarted("a0", "web", t));
        assert!(w.eval(t).is_empty(), "restart {i}");
    }
}

#[test]
fn crash_loop_resolves_when_a_new_version_runs_fine() {
    let mut w = World::new(|_| {});
    let v1 = with_job(&w);
    for i in 0..3 {
        w.see(restarted("a0", "web", T0 + i * 1000));
    }
    assert_eq!(w.eval(T0 + 3000).len(), 1);

    // Version 2 placed but not running yet: still firing.
    let v2 = web(2);
    let mut a1 = alloc("a1", &v2, "web", 0, "n1");
    a1.client = ClientStatus::Pending;
    let mut a0 = alloc("a0", &v1, "web", 0, "n1");
    a0.desired = DesiredStatus::Stop;
    a0.client = ClientStatus::Complete;
    w.commit(vec![
        Write::Job(v2.clone()),
        Write::Alloc(a0),
        Write::Alloc(a1.clone()),
    ]);
    assert!(w.eval(T0 + 4000).is_empty());
    // Running without a restart: resolved once it ran a minute (a task
    // that crashes a second after it starts must not resolve it between
    // two crashes).
    a1.client = ClientStatus::Running;
    a1.tasks.insert(
        "web".into(),
        TaskState {
            state: corral_types::TaskLifecycle::Running,
            started_at: Some(T0 + 5000),
            ..TaskState::default()
        },
    );
    w.commit(vec![Write::Alloc(a1)]);
    assert!(w.eval(T0 + 6000).is_empty());
    let c = w.eval(T0 + 65_000);
    assert_eq!(
        transitions(&c),
        [(AlertRule::CrashLoop, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "version 2 has run for 1m without a restart"
    );
    // The old restarts, still in the window, do not fire it again.
    assert!(w.eval(T0 + 66_000).is_empty());
}

#[test]
fn failed_allocations_count_as_restarts_and_a_stopped_job_resolves() {
    let mut w = World::new(|_| {});
    let v1 = web(1);
    w.commit(vec![Write::Job(v1.clone())]);
    for i in 0..3u64 {
        let id = format!("a{i}");
        let mut a = alloc(&id, &v1, "web", 0, "n1");
        a.client = ClientStatus::Failed;
        a.tasks.insert(
            "web".into(),
            TaskState {
                failed: true,
                ..TaskState::default()
            },
        );
        w.commit(vec![Write::Alloc(a)]);
        w.see(
            Event::new(EventType::AllocationFailed, T0 + i, "failed")
                .job("web")
                .alloc(&id),
        );
    }
    assert_eq!(
        transitions(&w.eval(T0 + 10)),
        [(AlertRule::CrashLoop, Transition::Fired)]
    );
    let mut stopped = v1;
    stopped.stopped = true;
    w.commit(vec![Write::Job(stopped)]);
    let c = w.eval(T0 + 20);
    assert_eq!(c[0].alert.resolution, "the job was stopped");
}

#[test]
fn replayed_events_are_not_counted_twice() {
    let mut w = World::new(|_| {});
    with_job(&w);
    let events: Vec<Event> = (0..3u64)
        .map(|i| {
            let mut e = restarted("a0", "web", T0 + i);
            e.index = i + 1;
            e
        })
        .collect();
    for e in &events {
        w.see(e.clone());
    }
    assert_eq!(w.eval(T0 + 10).len(), 1);
    // A restarted server replays the same events into a new engine.
    w.engine = Engine::new(AlertsConfig::default());
    for e in &events {
        w.see(e.clone());
    }
    assert!(w.eval(T0 + 20).is_empty());
    assert_eq!(w.firing()[0].count, 3);
}

#[test]
fn oom_fires_per_kill_counts_repeats_and_resolves_after_a_quiet_period() {
    let mut w = World::new(|c| c.oom_kill.quiet = Duration::from_secs(120));
    with_job(&w);
    let kill = |t| {
        Event::new(EventType::AllocationOomKilled, t, "oom")
            .job("web")
            .alloc("a0")
            .node("n1")
            .task("web")
    };
    w.see(kill(T0));
    let c = w.eval(T0);
    assert_eq!(transitions(&c), [(AlertRule::OomKill, Transition::Fired)]);
    let first_id = c[0].alert.id.clone();
    assert_eq!(c[0].alert.alloc.as_deref(), Some("a0"));
    w.see(kill(T0 + MIN));
    let c = w.eval(T0 + MIN);
    assert_eq!(transitions(&c), [(AlertRule::OomKill, Transition::Updated)]);
    assert_eq!(c[0].alert.count, 2);
    assert!(w.eval(T0 + 3 * MIN - 1).is_empty());
    let c = w.eval(T0 + 3 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::OomKill, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "no OOM kill for 2m");
    // A later kill is a new alert.
    w.see(kill(T0 + 10 * MIN));
    let c = w.eval(T0 + 10 * MIN);
    assert_eq!(transitions(&c), [(AlertRule::OomKill, Transition::Fired)]);
    assert_ne!(c[0].alert.id, first_id);
}

#[test]
fn node_down_waits_for_its_duration_and_resolves_when_back() {
    let mut w = World::new(|c| c.node_down.for_duration = Duration::from_secs(60));
    let mut n = node("n1").build();
    n.status = NodeStatus::Down;
    w.commit(vec![Write::Node(n.clone())]);
    assert!(w.eval(T0).is_empty());
    assert!(w.eval(T0 + MIN - 1).is_empty());
    let c = w.eval(T0 + MIN);
    assert_eq!(transitions(&c), [(AlertRule::NodeDown, Transition::Fired)]);
    assert_eq!(c[0].alert.node.as_deref(), Some("n1"));
    assert!(w.eval(T0 + 2 * MIN).is_empty(), "de-duplicated");
    n.status = NodeStatus::Ready;
    w.commit(vec![Write::Node(n)]);
    let c = w.eval(T0 + 3 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::NodeDown, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "node n1 is back");
}

#[test]
fn a_failed_and_reverted_deployment_is_one_alert_until_the_job_is_stable_again() {
    let mut w = World::new(|_| {});
    let v2 = web(2);
    let mut d1 =
        corral_scheduler::deployment::new_deployment(&v2, &["web".into()], "d1".into(), None, T0);
    d1.status = DeploymentStatus::Failed;
    w.commit(vec![Write::Job(v2.clone()), Write::Deployment(d1.clone())]);
    w.see(
        Event::new(
            EventType::DeploymentFailed,
            T0,
            "deployment of web version 2 failed",
        )
        .job("web")
        .deployment("d1"),
    );
    w.see(
        Event::new(
            EventType::DeploymentReverted,
            T0,
            "deployment of web version 2 failed; rolling back to version 1",
        )
        .job("web")
        .deployment("d1"),
    );
    let c = w.eval(T0 + 1);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DeploymentFailed, Transition::Fired)]
    );
    assert!(
        c[0].alert.summary.contains("rolling back"),
        "{}",
        c[0].alert.summary
    );
    assert_eq!(c[0].alert.job_version, Some(2));

    // The rollback rolling out does not resolve it; the rolled-back
    // version being stable does (issue 14, case 3: however it got there).
    let mut v3 = web(3);
    v3.reverts_to = Some(1);
    let mut back = corral_scheduler::deployment::new_deployment(
        &v3,
        &["web".into()],
        "d2".into(),
        Some(1),
        T0,
    );
    w.commit(vec![
        Write::Job(v3.clone()),
        Write::Deployment(back.clone()),
    ]);
    assert!(w.eval(T0 + 2).is_empty());
    back.status = DeploymentStatus::Successful;
    v3.stable = true;
    w.commit(vec![Write::Job(v3), Write::Deployment(back)]);
    let c = w.eval(T0 + 3);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DeploymentFailed, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "version 3 (the spec of version 1) is stable"
    );
}

/// Issue 14, case 3: every allocation of version 1 failed, and version 2
/// runs fine and is stable without a deployment of its own (a version
/// that needed none, as with `max_parallel: 0`): the alert resolves.
#[test]
fn a_failed_deployment_resolves_when_a_later_version_is_stable_without_a_deployment() {
    let mut w = World::new(|_| {});
    let v1 = web(1);
    let mut d1 =
        corral_scheduler::deployment::new_deployment(&v1, &["web".into()], "d1".into(), None, T0);
    d1.status = DeploymentStatus::Failed;
    w.commit(vec![Write::Job(v1), Write::Deployment(d1)]);
    w.see(
        Event::new(
            EventType::DeploymentFailed,
            T0,
            "deployment of web version 1 failed",
        )
        .job("web")
        .deployment("d1"),
    );
    let c = w.eval(T0 + 1);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DeploymentFailed, Transition::Fired)]
    );
    assert_eq!(c[0].alert.job_version, Some(1));
    // Version 2 submitted: not stable yet, the alert stays.
    let mut v2 = web(2);
    w.commit(vec![Write::Job(v2.clone())]);
    assert!(w.eval(T0 + 2).is_empty());
    // Every slot runs it: stable, with no deployment.
    v2.stable = true;
    w.commit(vec![Write::Job(v2)]);
    let c = w.eval(T0 + 3);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DeploymentFailed, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "version 2 is stable");
    // Resolved once: nothing more.
    assert!(w.eval(T0 + 4).is_empty());
}

/// A stable version no newer than the failed one fixes nothing.
#[test]
fn a_stable_version_older_than_the_failed_one_does_not_resolve_it() {
    let mut w = World::new(|_| {});
    let mut v1 = web(1);
    v1.stable = true;
    let v2 = web(2);
    let mut d2 =
        corral_scheduler::deployment::new_deployment(&v2, &["web".into()], "d2".into(), None, T0);
    d2.status = DeploymentStatus::Failed;
    w.commit(vec![Write::Job(v1), Write::Job(v2), Write::Deployment(d2)]);
    w.see(
        Event::new(
            EventType::DeploymentFailed,
            T0,
            "deployment of web version 2 failed",
        )
        .job("web")
        .deployment("d2"),
    );
    assert_eq!(
        transitions(&w.eval(T0 + 1)),
        [(AlertRule::DeploymentFailed, Transition::Fired)]
    );
    assert!(w.eval(T0 + 2).is_empty());
}

#[test]
fn memory_above_the_threshold_for_five_minutes() {
    let mut w = World::new(|_| {});
    with_job(&w);
    w.memory = vec![mem(95, 100, T0)];
    assert!(w.eval(T0).is_empty());
    // Dipping below restarts the clock.
    w.memory = vec![mem(50, 100, T0 + 2 * MIN)];
    assert!(w.eval(T0 + 2 * MIN).is_empty());
    w.memory = vec![mem(91, 100, T0 + 3 * MIN)];
    assert!(w.eval(T0 + 3 * MIN).is_empty());
    w.memory = vec![mem(92, 100, T0 + 8 * MIN - 1)];
    assert!(w.eval(T0 + 8 * MIN - 1).is_empty());
    w.memory = vec![mem(91, 100, T0 + 8 * MIN)];
    let c = w.eval(T0 + 8 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::MemoryHigh, Transition::Fired)]
    );
    assert_eq!(c[0].alert.subject, "a0/web");
    assert_eq!(
        c[0].alert.summary,
        "task web of web.web[0] uses 91% of its memory limit (100B), above 90% in every sample for 5m"
    );
    w.memory = vec![mem(40, 100, T0 + 9 * MIN)];
    let c = w.eval(T0 + 9 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::MemoryHigh, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "memory use is down to 40% of the limit"
    );
    // No limit, no alert.
    w.memory = vec![mem(1000, 0, T0 + 20 * MIN)];
    assert!(w.eval(T0 + 20 * MIN).is_empty());
    w.memory = vec![mem(1000, 0, T0 + 30 * MIN)];
    assert!(w.eval(T0 + 30 * MIN).is_empty());
}

/// Issue 14, case 4: one sample, however long the rule keeps seeing it
/// (the next push is 10 s away, or never comes), proves nothing held for
/// `for`: the time counts between samples, not between evaluations.
#[test]
fn one_stale_sample_never_fires_memory_high() {
    let mut w = World::new(|c| c.memory.for_duration = Duration::from_secs(5));
    with_job(&w);
    w.memory = vec![mem(95, 100, T0)];
    for later in [0, 5_000, 9_000, 60_000] {
        assert!(w.eval(T0 + later).is_empty(), "at +{later} ms");
    }
    // A second sample 10 s after the first: it held for 10 s.
    w.memory = vec![mem(96, 100, T0 + 10_000)];
    let c = w.eval(T0 + 61_000);
    assert_eq!(
        transitions(&c),
        [(AlertRule::MemoryHigh, Transition::Fired)]
    );
    assert!(
        c[0].alert.summary.ends_with("in every sample for 10s"),
        "{}",
        c[0].alert.summary
    );
}

/// Issue 14, case 4: a sample of a run that exited counts for nothing:
/// not toward firing, not as the task's current use.
#[test]
fn samples_of_a_run_that_ended_are_dropped() {
    let mut w = World::new(|c| c.memory.for_duration = Duration::from_secs(5));
    let v1 = with_job(&w);
    w.memory = vec![mem(95, 100, T0)];
    assert!(w.eval(T0).is_empty());
    // The run exits; the node's last push still holds its sample (and
    // one of it taken later, at its end).
    let mut a0 = running(alloc("a0", &v1, "web", 0, "n1"));
    a0.client = ClientStatus::Pending;
    a0.tasks.get_mut("web").expect("task").state = corral_types::TaskLifecycle::Restarting;
    w.commit(vec![Write::Alloc(a0.clone())]);
    w.memory = vec![mem(99, 100, T0 + 10_000)];
    assert!(w.eval(T0 + 10_000).is_empty());
    assert!(w.eval(T0 + 20_000).is_empty());
    // Running again, a new run: the old run's samples are not its.
    a0.client = ClientStatus::Running;
    a0.tasks.insert(
        "web".into(),
        TaskState {
            state: corral_types::TaskLifecycle::Running,
            started_at: Some(T0 + 30_000),
            ..TaskState::default()
        },
    );
    w.commit(vec![Write::Alloc(a0)]);
    w.memory = vec![mem(99, 100, T0 + 31_000)];
    assert!(w.eval(T0 + 31_000).is_empty());
    // The new run's own samples count from its first.
    let new_run = |at| MemorySample {
        run: Some(T0 + 30_000),
        ..mem(97, 100, at)
    };
    w.memory = vec![new_run(T0 + 40_000)];
    assert!(w.eval(T0 + 40_000).is_empty());
    w.memory = vec![new_run(T0 + 50_000)];
    assert_eq!(
        transitions(&w.eval(T0 + 50_000)),
        [(AlertRule::MemoryHigh, Transition::Fired)]
    );
}

/// A firing alert whose run ended resolves at once, even while the node's
/// last push still holds the run's sample.
#[test]
fn memory_high_resolves_when_its_run_ends() {
    let mut w = World::new(|c| c.memory.for_duration = Duration::from_secs(5));
    let v1 = with_job(&w);
    w.memory = vec![mem(95, 100, T0)];
    assert!(w.eval(T0).is_empty());
    w.memory = vec![mem(95, 100, T0 + 10_000)];
    assert_eq!(w.eval(T0 + 10_000).len(), 1);
    let mut a0 = running(alloc("a0", &v1, "web", 0, "n1"));
    a0.client = ClientStatus::Pending;
    a0.tasks.get_mut("web").expect("task").state = corral_types::TaskLifecycle::Restarting;
    w.commit(vec![Write::Alloc(a0)]);
    let c = w.eval(T0 + 11_000);
    assert_eq!(
        transitions(&c),
        [(AlertRule::MemoryHigh, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "the task no longer runs");
}

#[test]
fn disk_full_fires_and_resolves() {
    let mut w = World::new(|_| {});
    let disk = |used| DiskUsage {
        path: "/var/lib/corral/server".into(),
        used,
    };
    w.disk = Some(disk(0.5));
    assert!(w.eval(T0).is_empty());
    w.disk = Some(disk(0.93));
    let c = w.eval(T0 + 1);
    assert_eq!(transitions(&c), [(AlertRule::DiskFull, Transition::Fired)]);
    assert_eq!(
        c[0].alert.summary,
        "the server's data dir /var/lib/corral/server is 93% full"
    );
    // Unknown usage keeps it as it is.
    w.disk = None;
    assert!(w.eval(T0 + 2).is_empty());
    w.disk = Some(disk(0.7));
    let c = w.eval(T0 + 3);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DiskFull, Transition::Resolved)]
    );
}

#[test]
fn a_disabled_rule_resolves_what_it_raised() {
    let mut w = World::new(|_| {});
    w.disk = Some(DiskUsage {
        path: "/d".into(),
        used: 0.99,
    });
    assert_eq!(w.eval(T0).len(), 1);
    let mut cfg = AlertsConfig::default();
    cfg.disk.enabled = false;
    w.engine = Engine::new(cfg);
    let c = w.eval(T0 + 1);
    assert_eq!(
        transitions(&c),
        [(AlertRule::DiskFull, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.status, AlertStatus::Resolved);
    assert_eq!(c[0].alert.resolution, "the disk rule was disabled");
}

#[test]
fn events_are_told_apart_by_index_not_time() {
    let mut w = World::new(|_| {});
    with_job(&w);
    for i in 0..3 {
        w.see(restarted("a0", "web", T0 + i * 1000));
    }
    let c = w.eval(T0 + 3000);
    assert_eq!(transitions(&c), [(AlertRule::CrashLoop, Transition::Fired)]);
    assert_eq!(c[0].alert.last_event_index, 3);
    // The clock stepped back a second: a new restart all the same.
    w.see(restarted("a0", "web", T0 + 1000));
    let c = w.eval(T0 + 4000);
    assert_eq!(
        transitions(&c),
        [(AlertRule::CrashLoop, Transition::Updated)]
    );
    assert_eq!((c[0].alert.count, c[0].alert.last_event_index), (4, 4));

    // Two OOM kills committed in the same millisecond, evaluated apart.
    let kill = Event::new(EventType::AllocationOomKilled, T0 + 5000, "oom")
        .job("web")
        .alloc("a0")
        .node("n1")
        .task("web");
    w.see(kill.clone());
    let c = w.eval(T0 + 5000);
    assert_eq!(transitions(&c), [(AlertRule::OomKill, Transition::Fired)]);
    w.see(kill);
    let c = w.eval(T0 + 5000);
    assert_eq!(transitions(&c), [(AlertRule::OomKill, Transition::Updated)]);
    assert_eq!(c[0].alert.count, 2);
}

#[test]
fn alerts_stored_without_an_event_index_still_skip_replayed_events() {
    let mut w = World::new(|_| {});
    with_job(&w);
    let events: Vec<Event> = (0..3u64)
        .map(|i| {
            let mut e = restarted("a0", "web", T0 + i);
            e.index = i + 1;
            e
        })
        .collect();
    for e in &events {
        w.see(e.clone());
    }
    assert_eq!(w.eval(T0 + 10).len(), 1);
    // Stored by a server from before `last_event_index`: the field is
    // absent from its JSON.
    let mut json = serde_json::to_value(&w.firing()[0]).expect("json");
    json.as_object_mut()
        .and_then(|o| o.remove("last_event_index"))
        .expect("the field is stored");
    let old: Alert = serde_json::from_value(json).expect("an old alert reads");
    assert_eq!(old.last_event_index, 0);
    w.commit(vec![Write::Alert(old)]);

    // A restart replays the same events: still not counted twice.
    w.engine = Engine::new(AlertsConfig::default());
    for e in &events {
        w.see(e.clone());
    }
    assert!(w.eval(T0 + 20).is_empty());
    // A new one is, and from then on the index decides.
    w.see(restarted("a0", "web", T0 + 30));
    let c = w.eval(T0 + 30);
    assert_eq!((c[0].alert.count, c[0].alert.last_event_index), (4, 4));
}

#[test]
fn queued_kills_and_failures_survive_a_failed_commit() {
    let mut w = World::new(|_| {});
    with_job(&w);
    let v2 = web(2);
    let mut d1 =
        corral_scheduler::deployment::new_deployment(&v2, &["web".into()], "d1".into(), None, T0);
    d1.status = DeploymentStatus::Failed;
    w.commit(vec![Write::Job(v2), Write::Deployment(d1)]);
    w.see(
        Event::new(EventType::AllocationOomKilled, T0, "oom")
            .job("web")
            .alloc("a0")
            .node("n1")
            .task("web"),
    );
    w.see(
        Event::new(EventType::DeploymentFailed, T0, "deployment failed")
            .job("web")
            .deployment("d1"),
    );
    let rules = [
        (AlertRule::OomKill, Transition::Fired),
        (AlertRule::DeploymentFailed, Transition::Fired),
    ];
    assert_eq!(transitions(&w.eval_lost(T0 + 1)), rules);
    // The commit failed: the next evaluation raises them again.
    assert_eq!(transitions(&w.eval(T0 + 2)), rules);
    // Stored now: counted once.
    assert!(w.eval(T0 + 3).is_empty());
    assert_eq!(w.firing().iter().map(|a| a.count).sum::<u32>(), 2);
}

#[test]
fn memory_high_stays_firing_without_samples_until_the_task_stops() {
    let mut w = World::new(|_| {});
    let v1 = with_job(&w);
    w.memory = vec![mem(95, 100, T0)];
    assert!(w.eval(T0).is_empty());
    w.memory = vec![mem(95, 100, T0 + 5 * MIN)];
    assert_eq!(w.eval(T0 + 5 * MIN).len(), 1);
    // A server restart: a new engine, no samples yet, the task runs on.
    w.engine = Engine::new(AlertsConfig::default());
    w.memory.clear();
    assert!(w.eval(T0 + 6 * MIN).is_empty());
    assert_eq!(w.firing().len(), 1);
    // Stopped: resolved.
    let mut a0 = alloc("a0", &v1, "web", 0, "n1");
    a0.desired = DesiredStatus::Stop;
    w.commit(vec![Write::Alloc(a0)]);
    let c = w.eval(T0 + 7 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::MemoryHigh, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "the task no longer runs");
}

/// A stop resolves the job's failed deployment and crash loop even when
/// the job runs again before the next evaluation (the state then shows it
/// running, not stopped); a failure after the stop opens a new alert, and
/// what was queued before the stop does not count toward it.
#[test]
fn a_stop_resolves_even_when_the_job_runs_again_before_the_rules_look() {
    let mut w = World::new(|_| {});
    let v2 = web(2);
    let mut d1 =
        corral_scheduler::deployment::new_deployment(&v2, &["web".into()], "d1".into(), None, T0);
    d1.status = DeploymentStatus::Failed;
    w.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v2.clone()),
        Write::Deployment(d1),
        Write::Alloc(running(alloc("a0", &v2, "web", 0, "n1"))),
    ]);
    w.see(
        Event::new(
            EventType::DeploymentFailed,
            T0,
            "deployment of web version 2 failed",
        )
        .job("web")
        .deployment("d1"),
    );
    for i in 0..3 {
        w.see(restarted("a0", "web", T0 + i));
    }
    let mut fired: Vec<_> = transitions(&w.eval(T0 + 10));
    fired.sort_by_key(|(r, _)| r.as_str());
    assert_eq!(
        fired,
        [
            (AlertRule::CrashLoop, Transition::Fired),
            (AlertRule::DeploymentFailed, Transition::Fired)
        ]
    );
    // One restart more, then stopped and run again (version 3, its own
    // deployment under way) before the rules look.
    w.see(restarted("a0", "web", T0 + 11));
    w.see(Event::new(EventType::JobStopped, T0 + 12, "job web stopped").job("web"));
    let v3 = web(3);
    w.commit(vec![Write::Job(v3)]);
    w.see(Event::new(EventType::JobRegistered, T0 + 13, "job web registered").job("web"));
    let c = w.eval(T0 + 14);
    let mut resolved: Vec<_> = c
        .iter()
        .filter(|c| c.transition == Transition::Resolved)
        .map(|c| (c.alert.rule, c.alert.resolution.clone()))
        .collect();
    resolved.sort_by_key(|(r, _)| r.as_str());
    assert_eq!(
        resolved,
        [
            (AlertRule::CrashLoop, "the job was stopped".to_string()),
            (
                AlertRule::DeploymentFailed,
                "the job was stopped".to_string()
            )
        ],
        "{c:?}"
    );
    assert!(w.firing().is_empty(), "{:?}", w.firing());
    // Two restarts after the stop are no loop (the three before it were
    // the old run's); a third is, as a new alert.
    w.see(restarted("a0", "web", T0 + 15));
    w.see(restarted("a0", "web", T0 + 16));
    assert!(w.eval(T0 + 17).is_empty());
    w.see(restarted("a0", "web", T0 + 18));
    assert_eq!(
        transitions(&w.eval(T0 + 19)),
        [(AlertRule::CrashLoop, Transition::Fired)]
    );
}

/// Job `db` (version `version`) with volume `data`, backed up every
/// hour when `backup`.
fn db(version: u64, backup: bool) -> Job {
    let mut j = job(
        "db",
        version,
        vec![group("db", 1).env("V", &version.to_string()).build()],
    );
    j.spec.groups[0].volumes.push(corral_types::VolumeSpec {
        hooks: Default::default(),
        name: "data".into(),
        size: corral_types::units::Bytes(1 << 30),
        mount: "/data".into(),
        read_only: false,
        per_alloc: false,
        snapshots: None,
        backup: backup.then(|| corral_types::BackupPolicy {
            every: Millis(60 * MIN),
            keep: Default::default(),
            to: "s3".into(),
        }),
        on_node_loss: Default::default(),
        node_loss_grace: corral_types::spec::default_node_loss_grace(),
    });
    j
}

fn db_volume(created_at: UnixMillis) -> Volume {
    Volume {
        origin: None,
        id: "db.data".into(),
        job: "db".into(),
        group: "db".into(),
        name: "data".into(),
        slot: None,
        size: corral_types::units::Bytes(1 << 30),
        provider: "btrfs-image".into(),
        node_id: "n1".into(),
        generation: 1,
        alloc_id: Some("a0".into()),
        moved_from: None,
        last_move_downtime_ms: None,
        snapshots: Vec::new(),
        backups: Vec::new(),
        backup_error: None,
        restored_from: None,
        used: None,
        created_at,
        modified_at: created_at,
        create_index: 0,
        modify_index: 0,
    }
}

fn backup(id: &str, taken_at: UnixMillis) -> corral_types::VolumeBackup {
    corral_types::VolumeBackup {
        id: id.into(),
        target: "s3".into(),
        taken_at,
        took_ms: 1000,
        bytes_added: 1,
    }
}

#[test]
fn volume_backup_fires_when_backups_are_late_or_fail_and_resolves_on_success() {
    let mut w = World::new(|_| {});
    let v1 = db(1, true);
    let mut v = db_volume(T0);
    w.commit(vec![Write::Job(v1), Write::Volume(v.clone())]);
    // No backup yet, but not twice the schedule old either.
    assert!(w.eval(T0 + 60 * MIN).is_empty());
    assert!(w.eval(T0 + 120 * MIN).is_empty());
    let c = w.eval(T0 + 121 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Fired)]
    );
    let a = &c[0].alert;
    assert_eq!(a.subject, "db.data");
    assert_eq!(a.job.as_deref(), Some("db"));
    assert_eq!(a.node.as_deref(), Some("n1"));
    assert_eq!(
        a.summary,
        "volume db.data: no backup yet, 121m after it was made (backups every 1h)"
    );
    // Seen again: still the one alert.
    assert!(w.eval(T0 + 122 * MIN).is_empty());

    // A backup succeeds.
    v.backups = vec![backup("b1", T0 + 122 * MIN)];
    w.commit(vec![Write::Volume(v.clone())]);
    let c = w.eval(T0 + 123 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "backup b1 of volume db.data succeeded"
    );

    // Then none for more than two hours.
    assert!(w.eval(T0 + 242 * MIN).is_empty());
    let c = w.eval(T0 + 243 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Fired)]
    );
    assert_eq!(
        c[0].alert.summary,
        "volume db.data: its newest backup (b1) is 121m old, more than twice its schedule (every 1h)"
    );
    v.backups.push(backup("b2", T0 + 244 * MIN));
    w.commit(vec![Write::Volume(v.clone())]);
    assert_eq!(
        transitions(&w.eval(T0 + 245 * MIN)),
        [(AlertRule::VolumeBackup, Transition::Resolved)]
    );

    // A failed backup fires at once, however recent the last good one.
    v.backup_error = Some("restic: repository is locked".into());
    w.commit(vec![Write::Volume(v.clone())]);
    let c = w.eval(T0 + 246 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Fired)]
    );
    assert_eq!(
        c[0].alert.summary,
        "volume db.data: its last backup failed: restic: repository is locked"
    );
    assert_eq!(w.firing().len(), 1);
    // The next success clears the error.
    v.backup_error = None;
    v.backups.push(backup("b3", T0 + 300 * MIN));
    w.commit(vec![Write::Volume(v)]);
    let c = w.eval(T0 + 301 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "backup b3 of volume db.data succeeded"
    );
}

#[test]
fn volume_backup_follows_the_current_spec_the_job_and_the_volume() {
    let mut w = World::new(|_| {});
    // No backup policy: an old volume without backups is fine.
    let mut v = db_volume(T0);
    w.commit(vec![Write::Job(db(1, false)), Write::Volume(v.clone())]);
    assert!(w.eval(T0 + 600 * MIN).is_empty());
    // A version that asks for backups: late at once.
    w.commit(vec![Write::Job(db(2, true))]);
    assert_eq!(
        transitions(&w.eval(T0 + 601 * MIN)),
        [(AlertRule::VolumeBackup, Transition::Fired)]
    );
    // A version that no longer does resolves it.
    w.commit(vec![Write::Job(db(3, false))]);
    let c = w.eval(T0 + 602 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Resolved)]
    );
    assert_eq!(
        c[0].alert.resolution,
        "the spec of job db no longer asks for backups of volume db.data"
    );

    // A stopped job's volume is left alone.
    w.commit(vec![Write::Job(db(4, true))]);
    v.backup_error = Some("boom".into());
    w.commit(vec![Write::Volume(v.clone())]);
    assert_eq!(w.eval(T0 + 603 * MIN).len(), 1);
    let mut stopped = db(4, true);
    stopped.stopped = true;
    w.commit(vec![Write::Job(stopped)]);
    let c = w.eval(T0 + 604 * MIN);
    assert_eq!(c[0].alert.resolution, "job db was stopped");

    // Deleted while firing; and the rule disabled.
    w.commit(vec![Write::Job(db(5, true))]);
    assert_eq!(w.eval(T0 + 605 * MIN).len(), 1);
    w.commit(vec![Write::DeleteVolume("db.data".into())]);
    let c = w.eval(T0 + 606 * MIN);
    assert_eq!(c[0].alert.resolution, "volume db.data was deleted");
    w.commit(vec![Write::Volume(v)]);
    assert_eq!(w.eval(T0 + 607 * MIN).len(), 1);
    let mut cfg = AlertsConfig::default();
    cfg.volume_backup.enabled = false;
    w.engine = Engine::new(cfg);
    let c = w.eval(T0 + 608 * MIN);
    assert_eq!(
        transitions(&c),
        [(AlertRule::VolumeBackup, Transition::Resolved)]
    );
    assert_eq!(c[0].alert.resolution, "the volume backup rule was disabled");
}
