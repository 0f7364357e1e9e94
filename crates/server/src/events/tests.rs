//! The diff → events function on real states (an in-memory store), and
//! the SSE stream's resume.

use std::sync::{Arc, Mutex};

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::units::Bytes;
use corral_types::{
    Alert, AlertRule, AlertStatus, CheckState, CheckStatus, ClientStatus, DeploymentStatus,
    DesiredStatus, Event, EventTopic, EventType, NodeStatus, TaskState, Volume, VolumeBackup,
    VolumeSnapshot,
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

fn volume(id: &str, node: &str) -> Volume {
    Volume {
        origin: None,
        id: id.into(),
        job: "db".into(),
        group: "db".into(),
        name: "data".into(),
        slot: None,
        size: Bytes(1 << 30),
        provider: "btrfs-image".into(),
        node_id: node.into(),
        generation: 1,
        alloc_id: Some("a0".into()),
        moved_from: None,
        last_move_downtime_ms: None,
        snapshots: Vec::new(),
        backups: Vec::new(),
        backup_error: None,
        restored_from: None,
        used: None,
        created_at: T,
        modified_at: T,
        create_index: 0,
        modify_index: 0,
    }
}

fn backup(id: &str, taken_at: u64) -> VolumeBackup {
    VolumeBackup {
        id: id.into(),
        target: "s3".into(),
        taken_at,
        took_ms: 2500,
        bytes_added: 3 << 20,
    }
}

#[test]
fn volumes_created_snapshotted_backed_up_moved_and_deleted() {
    let f = Fixture::new();
    for (id, name) in [("n1", "alpha"), ("n2", "beta")] {
        let mut n = node(id).build();
        n.name = name.into();
        f.change(vec![Write::Node(n)]);
    }
    let mut v = volume("db.data", "n1");
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeCreated]);
    assert_eq!(ev[0].topic, EventTopic::Volume);
    assert_eq!(ev[0].volume.as_deref(), Some("db.data"));
    assert_eq!(ev[0].job.as_deref(), Some("db"));
    assert_eq!(ev[0].node.as_deref(), Some("n1"));
    assert_eq!(ev[0].alloc.as_deref(), Some("a0"));
    assert_eq!(
        ev[0].message,
        "volume db.data created on node alpha (1GiB, btrfs-image)"
    );

    // A usage report alone is no event.
    v.used = Some(Bytes(5 << 20));
    assert!(f.change(vec![Write::Volume(v.clone())]).is_empty());

    // Two snapshots in one report: one event each; the next report
    // repeats one and adds none.
    let snap = |name: &str, scheduled: bool, took_ms: u64| VolumeSnapshot {
        name: name.into(),
        created_at: T,
        scheduled,
        took_ms,
    };
    v.snapshots = vec![
        snap("hourly-1", true, 120),
        snap("before-upgrade", false, 80),
    ];
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(
        kinds(&ev),
        [
            EventType::VolumeSnapshotTaken,
            EventType::VolumeSnapshotTaken
        ]
    );
    assert_eq!(
        ev[0].message,
        "volume db.data: scheduled snapshot hourly-1 taken on node alpha in 120ms"
    );
    assert!(ev[1].message.contains("manual snapshot before-upgrade"));
    // The schedule prunes the oldest: no event for what went.
    v.snapshots = vec![snap("before-upgrade", false, 80)];
    assert!(f.change(vec![Write::Volume(v.clone())]).is_empty());

    // A backup fails, fails again with the same error (no event), with
    // another (an event), then succeeds.
    v.backup_error = Some("restic: repository is locked".into());
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeBackupFailed]);
    assert_eq!(
        ev[0].message,
        "volume db.data: backup failed: restic: repository is locked"
    );
    v.modified_at += 1;
    assert!(f.change(vec![Write::Volume(v.clone())]).is_empty());
    v.backup_error = Some("restic: connection refused".into());
    assert_eq!(
        kinds(&f.change(vec![Write::Volume(v.clone())])),
        [EventType::VolumeBackupFailed]
    );
    v.backup_error = None;
    v.backups = vec![backup("b1", 1_700_000_100_000)];
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeBackupDone]);
    assert_eq!(
        ev[0].message,
        "volume db.data backed up to s3 (backup b1 of its state at 2023-11-14 22:15:00Z, 3MiB added, in 2500ms)"
    );
    // Retention drops b1 as b2 comes: one event, for b2.
    v.backups = vec![backup("b2", 1_700_000_200_000)];
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeBackupDone]);
    assert!(ev[0].message.contains("backup b2"), "{}", ev[0].message);

    // A move: a new node and generation, the snapshots stay behind.
    v.node_id = "n2".into();
    v.moved_from = Some("n1".into());
    v.generation = 2;
    v.last_move_downtime_ms = Some(1500);
    v.alloc_id = Some("a1".into());
    v.snapshots.clear();
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeMoved]);
    assert_eq!(ev[0].node.as_deref(), Some("n2"));
    assert_eq!(ev[0].alloc.as_deref(), Some("a1"));
    assert_eq!(
        ev[0].message,
        "volume db.data moved from node alpha to node beta (generation 2); its allocation waited 1500ms for the last copy"
    );

    let ev = f.change(vec![Write::DeleteVolume("db.data".into())]);
    assert_eq!(kinds(&ev), [EventType::VolumeDeleted]);
    assert_eq!(
        ev[0].message,
        "volume db.data deleted (its live copy was on node beta)"
    );
    assert_eq!(ev[0].volume.as_deref(), Some("db.data"));
}

#[test]
fn a_volume_restored_after_its_node_was_lost_says_what_is_lost() {
    let f = Fixture::new();
    for (id, name) in [("n1", "alpha"), ("n2", "beta")] {
        let mut n = node(id).build();
        n.name = name.into();
        f.change(vec![Write::Node(n)]);
    }
    let mut v = volume("db.data", "n1");
    v.backups = vec![backup("b7", 1_700_000_100_000)];
    f.change(vec![Write::Volume(v.clone())]);

    // Restored on another node: one event (not also a move), naming the
    // backup and the time after which writes are lost.
    v.node_id = "n2".into();
    v.moved_from = Some("n1".into());
    v.generation = 2;
    v.alloc_id = Some("a1".into());
    v.restored_from = Some(backup("b7", 1_700_000_100_000));
    let ev = f.change(vec![Write::Volume(v.clone())]);
    assert_eq!(kinds(&ev), [EventType::VolumeRestored]);
    assert_eq!(ev[0].node.as_deref(), Some("n2"));
    assert_eq!(
        ev[0].message,
        "volume db.data restored on node beta after node alpha was lost, from backup b7 of s3 taken at 2023-11-14 22:15:00Z: writes after that time are lost"
    );
    // Later reports keep `restored_from`: no second event.
    v.used = Some(Bytes(1));
    assert!(f.change(vec![Write::Volume(v.clone())]).is_empty());
    // A later plain move is a move.
    v.node_id = "n1".into();
    v.moved_from = Some("n2".into());
    v.generation = 3;
    assert_eq!(
        kinds(&f.change(vec![Write::Volume(v)])),
        [EventType::VolumeMoved]
    );
}
