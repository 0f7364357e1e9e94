//! The diff → events function on real states (an in-memory store), and
//! the SSE stream's resume.

use std::sync::{Arc, Mutex};

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{
    Alert, AlertRule, AlertStatus, CheckState, CheckStatus, ClientStatus, DeploymentStatus,
    DesiredStatus, Event, EventTopic, EventType, NodeStatus, TaskState,
};

use super::{EventFilter, diff};

const T: u64 = 1_700_000_000_000;

struct Fixture {
    store: StateStore,
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Fixture {
    /// A store whose hook runs [`diff`] at time `T` and keeps a copy.
    fn new() -> Fixture {
        let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        store.set_event_hook(Arc::new(move |d| {
            let events = diff(d, T);
            if let Ok(mut v) = s.lock() {
                *v = events.clone();
            }
            events
        }));
        Fixture { store, seen }
    }

    /// Commit `writes` and return the events of that change.
    fn change(&self, writes: Vec<Write>) -> Vec<Event> {
        if let Ok(mut v) = self.seen.lock() {
            v.clear();
        }
        self.store.commit(writes).expect("commit");
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn kinds(events: &[Event]) -> Vec<EventType> {
    events.iter().map(|e| e.kind).collect()
}

#[test]
fn a_job_registered_placed_started_and_stopped() {
    let f = Fixture::new();
    let n1 = node("n1").build();
    assert_eq!(kinds(&f.change(vec![Write::Node(n1)])), [EventType::NodeUp]);

    let v1 = job("web", 1, vec![group("web", 2).build()]);
    let mut a0 = alloc("a0", &v1, "web", 0, "n1");
    a0.client = ClientStatus::Pending;
    let mut a1 = alloc("a1", &v1, "web", 1, "n1");
    a1.client = ClientStatus::Pending;
    let ev = f.change(vec![
        Write::Job(v1.clone()),
        Write::Alloc(a0.clone()),
        Write::Alloc(a1.clone()),
    ]);
    assert_eq!(
        kinds(&ev),
        [
            EventType::JobRegistered,
            EventType::AllocationPlaced,
            EventType::AllocationPlaced
        ]
    );
    assert_eq!(ev[0].job.as_deref(), Some("web"));
    assert_eq!(ev[0].topic, EventTopic::Job);
    assert_eq!(ev[1].alloc.as_deref(), Some("a0"));
    assert_eq!(ev[1].node.as_deref(), Some("n1"));
    assert_eq!(ev[1].message, "web.web[0] placed");
    assert!(ev.iter().all(|e| e.time == T));

    // The agent reports one running: one event, for that one.
    a0.client = ClientStatus::Running;
    let ev = f.change(vec![Write::Alloc(a0.clone())]);
    assert_eq!(kinds(&ev), [EventType::AllocationStarted]);
    assert_eq!(ev[0].alloc.as_deref(), Some("a0"));

    // The same report again changes nothing.
    assert!(f.change(vec![Write::Alloc(a0.clone())]).is_empty());

    let mut stopped = v1.clone();
    stopped.stopped = true;
    a0.desired = DesiredStatus::Stop;
    a0.desired_reason = "job stopped".into();
    let ev = f.change(vec![Write::Job(stopped), Write::Alloc(a0.clone())]);
    assert_eq!(
        kinds(&ev),
        [EventType::JobStopped, EventType::AllocationStopped]
    );
    assert_eq!(ev[1].message, "web.web[0] stopping: job stopped");

    a0.client = ClientStatus::Complete;
    assert_eq!(
        kinds(&f.change(vec![Write::Alloc(a0)])),
        [EventType::AllocationCompleted]
    );
    let ev = f.change(vec![Write::PurgeJob("web".into())]);
    assert_eq!(kinds(&ev), [EventType::JobPurged]);
}

#[test]
fn restarts_oom_kills_failures_and_checks() {
    let f = Fixture::new();
    let v1 = job("web", 1, vec![group("web", 1).build()]);
    let mut a = alloc("a0", &v1, "web", 0, "n1");
    f.change(vec![Write::Job(v1.clone()), Write::Alloc(a.clone())]);

    let task = |restarts: u32, oom: bool, finished: u64| TaskState {
        state: corral_types::TaskLifecycle::Running,
        restarts,
        exit_code: (!oom).then_some(1),
        oom_killed: oom,
        finished_at: Some(finished),
        ..TaskState::default()
    };
    // An exit that was an OOM kill (before the restart is counted).
    a.tasks.insert("web".into(), task(0, true, 10));
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::AllocationOomKilled]);
    assert_eq!(ev[0].task.as_deref(), Some("web"));
    // The restart: counted, but the same kill is not reported again.
    a.tasks.insert("web".into(), task(1, true, 10));
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::AllocationRestarted]);
    assert!(ev[0].message.contains("restart 1"), "{}", ev[0].message);
    // A second kill (a new exit) and its restart in one report.
    a.tasks.insert("web".into(), task(2, true, 20));
    assert_eq!(
        kinds(&f.change(vec![Write::Alloc(a.clone())])),
        [
            EventType::AllocationRestarted,
            EventType::AllocationOomKilled
        ]
    );
    // A plain crash: restarted only.
    a.tasks.insert("web".into(), task(3, false, 30));
    assert_eq!(
        kinds(&f.change(vec![Write::Alloc(a.clone())])),
        [EventType::AllocationRestarted]
    );
    // Three restarts in one report: three events.
    a.tasks.insert("web".into(), task(6, false, 60));
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    let msgs: Vec<&str> = ev.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "web.web[0] task web restarted (restart 4)",
            "web.web[0] task web restarted (restart 5)",
            "web.web[0] task web restarted (restart 6); it exited with code 1",
        ]
    );

    // Checks: one event per check whose status changed.
    let check = |status: CheckStatus| CheckState {
        task: "web".into(),
        status,
        output: "HTTP 500".into(),
        consecutive_failures: 1,
        at: 1,
    };
    a.checks.insert("http".into(), check(CheckStatus::Pending));
    a.checks.insert("tcp".into(), check(CheckStatus::Passing));
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::CheckPassing]);
    assert_eq!(ev[0].check.as_deref(), Some("tcp"));
    assert_eq!(ev[0].topic, EventTopic::Check);
    a.checks.insert("http".into(), check(CheckStatus::Failing));
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::CheckFailing]);
    assert_eq!(ev[0].message, "check http of web.web[0] failing: HTTP 500");
    a.checks.insert("http".into(), check(CheckStatus::Passing));
    assert_eq!(
        kinds(&f.change(vec![Write::Alloc(a.clone())])),
        [EventType::CheckPassing]
    );

    // The restart policy gives up.
    let mut t = task(6, false, 40);
    t.state = corral_types::TaskLifecycle::Dead;
    t.failed = true;
    t.message = "exceeded 2 restarts".into();
    a.tasks.insert("web".into(), t);
    a.client = ClientStatus::Failed;
    let ev = f.change(vec![Write::Alloc(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::AllocationFailed]);
    assert_eq!(
        ev[0].message,
        "web.web[0] failed: task web: exceeded 2 restarts"
    );
}

#[test]
fn nodes_down_up_draining_eligibility_lost() {
    let f = Fixture::new();
    let mut n = node("n1").build();
    f.change(vec![Write::Node(n.clone())]);
    let v1 = job("web", 1, vec![group("web", 1).build()]);
    let mut a = alloc("a0", &v1, "web", 0, "n1");
    f.change(vec![Write::Job(v1), Write::Alloc(a.clone())]);

    n.status = NodeStatus::Down;
    a.client = ClientStatus::Lost;
    a.desired = DesiredStatus::Stop;
    a.desired_reason = "node down".into();
    let ev = f.change(vec![Write::Node(n.clone()), Write::Alloc(a)]);
    assert_eq!(
        kinds(&ev),
        [
            EventType::AllocationStopped,
            EventType::AllocationLost,
            EventType::NodeDown
        ]
    );
    assert_eq!(ev[2].node.as_deref(), Some("n1"));

    n.status = NodeStatus::Ready;
    assert_eq!(
        kinds(&f.change(vec![Write::Node(n.clone())])),
        [EventType::NodeUp]
    );
    n.draining = true;
    assert_eq!(
        kinds(&f.change(vec![Write::Node(n.clone())])),
        [EventType::NodeDraining]
    );
    n.draining = false;
    n.eligible = false;
    assert_eq!(
        kinds(&f.change(vec![Write::Node(n.clone())])),
        [EventType::NodeDrained, EventType::NodeEligibility]
    );
    // A heartbeat-only change (not a status) is no event.
    n.last_heartbeat += 1;
    assert!(f.change(vec![Write::Node(n)]).is_empty());
    assert_eq!(
        kinds(&f.change(vec![Write::DeleteNode("n1".into())])),
        [EventType::NodeRemoved]
    );
}

#[test]
fn deployments_progress_promote_pause_fail_and_revert() {
    let f = Fixture::new();
    let v1 = job("web", 1, vec![group("web", 2).build()]);
    let mut v2 = job("web", 2, vec![group("web", 2).env("V", "2").build()]);
    v2.spec.groups[0].update.canary = 1;
    let mut d = corral_scheduler::deployment::new_deployment(
        &v2,
        &["web".to_string()],
        "d1".into(),
        None,
        T,
    );
    for g in d.groups.values_mut() {
        g.desired_canaries = 1;
        g.promoted = false;
        g.auto_revert = true;
    }
    f.change(vec![Write::Job(v1)]);
    let ev = f.change(vec![Write::Job(v2.clone()), Write::Deployment(d.clone())]);
    assert_eq!(
        kinds(&ev),
        [EventType::JobRegistered, EventType::DeploymentCreated]
    );
    assert_eq!(ev[1].deployment.as_deref(), Some("d1"));
    assert!(ev[1].message.contains("1 canaries"), "{}", ev[1].message);

    if let Some(g) = d.groups.get_mut("web") {
        g.healthy = 1;
    }
    let ev = f.change(vec![Write::Deployment(d.clone())]);
    assert_eq!(kinds(&ev), [EventType::DeploymentProgress]);
    assert_eq!(ev[0].message, "deployment of web version 2: 1 of 2 healthy");

    for g in d.groups.values_mut() {
        g.promoted = true;
    }
    assert_eq!(
        kinds(&f.change(vec![Write::Deployment(d.clone())])),
        [EventType::DeploymentPromoted]
    );
    d.status = DeploymentStatus::Paused;
    assert_eq!(
        kinds(&f.change(vec![Write::Deployment(d.clone())])),
        [EventType::DeploymentPaused]
    );
    d.status = DeploymentStatus::Running;
    assert_eq!(
        kinds(&f.change(vec![Write::Deployment(d.clone())])),
        [EventType::DeploymentResumed]
    );

    // Failed with a rollback: the failure, the revert, the new version,
    // the rollback's deployment; one "reverted" only.
    d.status = DeploymentStatus::Failed;
    d.description = "failed: allocation unhealthy; rolling back to version 1".into();
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.reverts_to = Some(1);
    let ev = f.change(vec![Write::Deployment(d.clone()), Write::Job(v3)]);
    assert_eq!(
        kinds(&ev),
        [
            EventType::JobRegistered,
            EventType::DeploymentFailed,
            EventType::DeploymentReverted
        ]
    );
    assert_eq!(
        ev[1].message,
        "deployment of web version 2 failed: allocation unhealthy; rolling back to version 1"
    );
    assert_eq!(
        ev[2].message,
        "deployment of web version 2 failed; rolling back to version 1"
    );

    // A revert by hand (no failed deployment in the change).
    let mut v4 = v2.clone();
    v4.version = 4;
    v4.reverts_to = Some(2);
    let ev = f.change(vec![Write::Job(v4)]);
    assert_eq!(
        kinds(&ev),
        [EventType::JobRegistered, EventType::DeploymentReverted]
    );
    assert_eq!(ev[1].deployment.as_deref(), Some("d1"));
    assert_eq!(
        ev[1].message,
        "job web reverted to version 2 (as version 4)"
    );
}

#[test]
fn alerts_fire_and_resolve_once() {
    let f = Fixture::new();
    let mut a = Alert {
        id: "node_down/n1@1".into(),
        rule: AlertRule::NodeDown,
        subject: "n1".into(),
        status: AlertStatus::Firing,
        summary: "node n1 is down".into(),
        job: None,
        alloc: None,
        node: Some("n1".into()),
        deployment: None,
        task: None,
        job_version: None,
        count: 1,
        fired_at: 1,
        last_seen_at: 1,
        last_event_index: 0,
        resolved_at: None,
        resolution: String::new(),
        create_index: 0,
        modify_index: 0,
    };
    let ev = f.change(vec![Write::Alert(a.clone())]);
    assert_eq!(kinds(&ev), [EventType::AlertFiring]);
    assert_eq!(ev[0].alert.as_deref(), Some("node_down/n1@1"));
    assert_eq!(ev[0].node.as_deref(), Some("n1"));
    a.count = 2;
    assert!(f.change(vec![Write::Alert(a.clone())]).is_empty());
    a.status = AlertStatus::Resolved;
    a.resolution = "node n1 is back".into();
    let ev = f.change(vec![Write::Alert(a)]);
    assert_eq!(kinds(&ev), [EventType::AlertResolved]);
    assert_eq!(ev[0].message, "alert node_down resolved: node n1 is back");
}

#[test]
fn the_diff_follows_the_change_not_the_state() {
    // 20,000 allocations, then one changes: one event, quickly (a full
    // scan of 20,000 allocations would still be fast, so the check is on
    // the output; the bench measures the cost).
    let f = Fixture::new();
    let v1 = job("web", 1, vec![group("web", 20_000).build()]);
    let allocs: Vec<Write> = (0..20_000)
        .map(|i| Write::Alloc(alloc(&format!("a{i:05}"), &v1, "web", i, "n1")))
        .collect();
    assert_eq!(f.change(allocs).len(), 20_000);
    let mut one = alloc("a12345", &v1, "web", 12345, "n1");
    one.client = ClientStatus::Failed;
    let started = std::time::Instant::now();
    let ev = f.change(vec![Write::Alloc(one)]);
    assert_eq!(kinds(&ev), [EventType::AllocationFailed]);
    assert!(started.elapsed() < std::time::Duration::from_millis(200));
}

#[test]
fn filters_by_topic_and_job() {
    let mut f = EventFilter::default();
    let e = Event::new(EventType::AllocationStarted, T, "x").job("web");
    assert!(f.matches(&e));
    f.add_topics("node, alloc").expect("topics");
    assert!(f.matches(&e));
    f.jobs.insert("api".into());
    assert!(!f.matches(&e));
    assert!(!f.matches(&Event::new(EventType::NodeUp, T, "n")));
    let err = f.add_topics("nodes").expect_err("unknown topic");
    assert!(err.contains("use job, allocation, node"), "{err}");
}
