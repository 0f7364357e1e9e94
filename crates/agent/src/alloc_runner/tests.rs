//! An allocation with health checks on the fake driver: what it reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_types::{AllocUpdate, Allocation, CheckStatus, DriverKind, GroupSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AllocRunner, RunnerEnv};
use crate::driver::ExecOutput;
use crate::driver::fake::{FakeCall, FakeDriver};
use crate::metrics::TaskMetrics;
use crate::node::Shared;

fn group(check: &str) -> GroupSpec {
    let yaml = format!(
        "
name: shop
groups:
  - name: web
    update: {{min_healthy_time: 2s, healthy_deadline: 1m}}
    restart: {{attempts: 3, interval: 1h, delay: 1s}}
    service: {{name: web, check: {check}}}
    tasks: [{{name: app, driver: exec, command: [/bin/app]}}]
"
    );
    let jobs =
        corral_types::spec::parse_jobs(&yaml, "j.yaml", corral_types::spec::SourceFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}"));
    jobs[0].groups[0].clone()
}

/// The group with an exec check that passes.
fn web() -> GroupSpec {
    group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}")
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

struct Run {
    driver: Arc<FakeDriver>,
    updates: mpsc::UnboundedReceiver<AllocUpdate>,
    runner: AllocRunner,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

fn start(group: GroupSpec, alloc: Allocation) -> Run {
    start_after(group, alloc, Vec::new())
}

fn start_after(
    group: GroupSpec,
    alloc: Allocation,
    previous: Vec<tokio::sync::watch::Receiver<bool>>,
) -> Run {
    start_full(group, alloc, previous, false, |_, _| {})
}

/// Adopts `alloc` as a restarted agent would, with what `before` left in
/// its directory and on its driver.
fn adopt(
    group: GroupSpec,
    alloc: Allocation,
    before: impl FnOnce(&crate::layout::AllocDir, &FakeDriver),
) -> Run {
    start_full(group, alloc, Vec::new(), true, before)
}

fn start_full(
    group: GroupSpec,
    alloc: Allocation,
    previous: Vec<tokio::sync::watch::Receiver<bool>>,
    recovering: bool,
    before: impl FnOnce(&crate::layout::AllocDir, &FakeDriver),
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new());
    let alloc_dir = crate::layout::NodeDir::new(dir.path()).alloc(&alloc.id);
    std::fs::create_dir_all(alloc_dir.path()).expect("alloc dir");
    before(&alloc_dir, &driver);
    let mut drivers: crate::node::Drivers = HashMap::new();
    drivers.insert(DriverKind::Exec, driver.clone());
    let (tx, updates) = mpsc::unbounded_channel();
    let env = Arc::new(RunnerEnv {
        shared: Arc::new(Shared::new(
            crate::layout::NodeDir::new(dir.path()),
            Arc::new(TaskMetrics::new("n1")),
        )),
        drivers,
        updates: tx,
        node_id: "n1".into(),
        pod_dns: None,
    });
    let tracker = TaskTracker::new();
    let runner = AllocRunner::spawn(
        &tracker,
        env,
        alloc,
        group,
        recovering,
        CancellationToken::new(),
        previous,
    );
    Run {
        driver,
        updates,
        runner,
        tracker,
        _dir: dir,
    }
}

impl Run {
    /// Updates until one passes `want`; all of them.
    async fn until(&mut self, want: impl Fn(&AllocUpdate) -> bool) -> Vec<AllocUpdate> {
        let mut seen = Vec::new();
        loop {
            let u = tokio::time::timeout(Duration::from_secs(300), self.updates.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching update; seen: {seen:#?}"))
                .expect("update");
            let done = want(&u);
            seen.push(u);
            if done {
                return seen;
            }
        }
    }

    async fn stop(self) {
        self.runner.stop();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[tokio::test(start_paused = true)]
async fn checks_and_health_are_reported_on_change_only() {
    let mut r = start(web(), allocation(Some("d1")));
    let seen = r
        .until(|u| u.health.as_ref().is_some_and(|h| h.healthy))
        .await;
    // Pending at first, then passing, then healthy.
    assert_eq!(seen[0].checks["web-exec"].status, CheckStatus::Pending);
    assert!(
        seen.iter()
            .any(|u| u.checks.get("web-exec").map(|c| c.status) == Some(CheckStatus::Passing))
    );
    let last = seen.last().expect("an update");
    assert_eq!(last.checks["web-exec"].output, "ok");
    assert_eq!(last.checks["web-exec"].task, "app");
    // Passing probes every second change nothing worth a report.
    let probes = r.driver.execs();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(r.driver.execs() >= probes + 9);
    assert!(r.updates.try_recv().is_err(), "an update without a change");
    // A failing probe is reported, and the verdict goes with every update.
    r.driver.set_exec_default(Ok(ExecOutput {
        exit_code: 1,
        output: "sick".into(),
    }));
    let seen = r
        .until(|u| u.checks["web-exec"].status == CheckStatus::Failing)
        .await;
    let u = seen.last().expect("an update");
    assert_eq!(u.checks["web-exec"].output, "exit code 1: sick");
    assert!(u.health.as_ref().is_some_and(|h| h.healthy));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn check_restart_makes_a_deployment_allocation_unhealthy() {
    let mut r = start(
        group(
            "{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms, check_restart: {limit: 2}}",
        ),
        allocation(Some("d1")),
    );
    r.driver.set_exec_default(Ok(ExecOutput {
        exit_code: 3,
        output: "broken".into(),
    }));
    let seen = r.until(|u| u.health.is_some()).await;
    let h = seen.last().and_then(|u| u.health.clone()).expect("health");
    assert!(!h.healthy);
    assert_eq!(
        h.message,
        "task app restarted before the allocation was healthy: check `web-exec` failed 2 times in a row (last: exit code 3: broken); check_restart restarts the task; restarting in 1s"
    );
    let seen = r.until(|u| u.tasks["app"].restarts == 1).await;
    let u = seen.last().expect("an update");
    assert!(
        u.tasks["app"]
            .message
            .starts_with("restarted (restart 1) after: check `web-exec` failed 2 times in a row"),
        "{}",
        u.tasks["app"].message
    );
    assert_eq!(r.driver.starts(), 2);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_deployment_there_is_no_verdict() {
    let mut r = start(web(), allocation(None));
    r.until(|u| u.checks["web-exec"].status == CheckStatus::Passing)
        .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    while let Ok(u) = r.updates.try_recv() {
        assert_eq!(u.health, None);
    }
    r.stop().await;
}

/// Issue 12, case 7: a replacement on the same node starts only once the
/// allocation it replaces has stopped (its port and files are free).
#[tokio::test(start_paused = true)]
async fn a_replacement_waits_for_the_allocation_it_replaces() {
    let (prev_tx, prev_rx) = tokio::sync::watch::channel(false);
    let mut r = start_after(web(), allocation(None), vec![prev_rx]);
    // It says why it is pending (issue 14, case 2).
    let waiting = r.until(|_| true).await;
    assert_eq!(waiting[0].client, corral_types::ClientStatus::Pending);
    assert_eq!(waiting[0].message, super::WAITING_FOR_PREVIOUS);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(r.driver.starts(), 0, "started beside the old allocation");
    prev_tx.send_replace(true);
    let seen = r
        .until(|u| u.client == corral_types::ClientStatus::Running)
        .await;
    // Once started, the waiting is over.
    assert!(seen.iter().all(|u| u.message.is_empty()), "{seen:#?}");
    assert_eq!(r.driver.starts(), 1);
    r.stop().await;
}

/// Stopped while it waits: it reports complete and never starts.
#[tokio::test(start_paused = true)]
async fn a_replacement_stopped_while_waiting_never_starts() {
    let (_prev_tx, prev_rx) = tokio::sync::watch::channel(false);
    let mut r = start_after(web(), allocation(None), vec![prev_rx]);
    r.runner.stop();
    let seen = r
        .until(|u| u.client == corral_types::ClientStatus::Complete)
        .await;
    assert!(
        seen.iter()
            .all(|u| u.client != corral_types::ClientStatus::Running)
    );
    assert_eq!(r.driver.starts(), 0);
    r.stop().await;
}

/// Issue 13, case 10: a task waiting for its restart (or one that never
/// starts) runs nothing; the allocation is pending, not running.
#[test]
fn a_restarting_task_makes_the_allocation_pending() {
    use corral_types::{ClientStatus, TaskLifecycle, TaskState};
    let state = |s: TaskLifecycle| TaskState {
        state: s,
        ..TaskState::default()
    };
    let tasks = |states: &[TaskLifecycle]| {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("t{i}"), state(*s)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    use TaskLifecycle::*;
    assert_eq!(
        super::fold(&tasks(&[Restarting]), false, false),
        ClientStatus::Pending
    );
    assert_eq!(
        super::fold(&tasks(&[Running, Restarting]), false, false),
        ClientStatus::Pending
    );
    assert_eq!(
        super::fold(&tasks(&[Running, Running]), false, false),
        ClientStatus::Running
    );
    assert_eq!(
        super::fold(&tasks(&[Dead, Running]), false, false),
        ClientStatus::Running
    );
}

/// Issue 13, case 3: a task with no process to re-attach to after an agent
/// restart (it never started, or waited for a restart) starts again with
/// the restarts it had, not from zero.
#[tokio::test(start_paused = true)]
async fn a_task_without_a_handle_keeps_its_restart_count_across_an_agent_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new());
    let mut drivers: crate::node::Drivers = HashMap::new();
    drivers.insert(DriverKind::Exec, driver.clone());
    let (tx, mut updates) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        crate::layout::NodeDir::new(dir.path()),
        Arc::new(TaskMetrics::new("n1")),
    ));
    let alloc = allocation(None);
    let alloc_dir = shared.alloc_dir(&alloc.id);
    std::fs::create_dir_all(alloc_dir.path()).expect("alloc dir");
    let before = corral_types::TaskState {
        state: corral_types::TaskLifecycle::Restarting,
        restarts: 2,
        ..corral_types::TaskState::default()
    };
    alloc_dir.save_task_state("app", &before).expect("state");
    let env = Arc::new(RunnerEnv {
        shared,
        drivers,
        updates: tx,
        node_id: "n1".into(),
        pod_dns: None,
    });
    let tracker = TaskTracker::new();
    let runner = AllocRunner::spawn(
        &tracker,
        env,
        alloc,
        web(),
        true,
        CancellationToken::new(),
        Vec::new(),
    );
    let running = loop {
        let u = tokio::time::timeout(Duration::from_secs(300), updates.recv())
            .await
            .expect("an update")
            .expect("open");
        if u.client == corral_types::ClientStatus::Running {
            break u;
        }
    };
    assert_eq!(running.tasks["app"].restarts, 2, "{running:#?}");
    assert_eq!(driver.starts(), 1);
    runner.stop();
    tracker.close();
    tracker.wait().await;
}

fn handle(id: &str) -> crate::driver::TaskHandle {
    crate::driver::TaskHandle {
        driver: DriverKind::Exec,
        task: "app".into(),
        alloc_id: "a1".into(),
        id: id.into(),
        started_at_ms: 1234,
        state: serde_json::json!({}),
    }
}

fn running_state(restarts: u32) -> corral_types::TaskState {
    corral_types::TaskState {
        state: corral_types::TaskLifecycle::Running,
        restarts,
        started_at: Some(1234),
        ..corral_types::TaskState::default()
    }
}

/// Issue 13, case 1: an agent killed during a task's first start saved no
/// handle; the allocation is then stopped. Whatever the start left (the
/// task's cgroup, a container) is cleared, handle or not.
#[tokio::test(start_paused = true)]
async fn a_task_without_a_handle_is_cleared_even_when_the_allocation_is_stopped() {
    let mut r = adopt(web(), allocation(None), |_, _| {});
    r.runner.stop();
    r.until(|u| u.client == corral_types::ClientStatus::Complete)
        .await;
    let calls = r.driver.calls();
    assert!(
        calls.contains(&FakeCall::ClearTask {
            alloc_id: "a1".into(),
            task: "app".into()
        }),
        "{calls:?}"
    );
    r.stop().await;
}

/// Issue 13, case 2: a task of the allocation failed and the agent died
/// before it stopped the others. After the restart the failure stands:
/// the live sibling is stopped and the allocation reports failed.
#[tokio::test(start_paused = true)]
async fn a_failure_decided_before_an_agent_restart_stands() {
    let mut r = adopt(web(), allocation(None), |dir, _| {
        dir.save_handle("app", &handle("live-1")).expect("handle");
        dir.save_task_state("app", &running_state(0))
            .expect("state");
        dir.save_failure("task bad: exceeded 0 restarts")
            .expect("failure");
    });
    let seen = r.until(|u| u.client.is_terminal()).await;
    let last = seen.last().expect("an update");
    assert_eq!(last.client, corral_types::ClientStatus::Failed, "{seen:#?}");
    assert_eq!(last.message, "task bad: exceeded 0 restarts");
    assert!(
        seen.iter()
            .all(|u| u.client != corral_types::ClientStatus::Running),
        "{seen:#?}"
    );
    assert_eq!(r.driver.running(), 0);
    assert_eq!(r.driver.starts(), 0);
    r.stop().await;
}

/// Issue 13, case 3: the restart window and a pending backoff survive an
/// agent restart. Two of three attempts were used in the window and a
/// restart was due in 30 s: it waits those 30 s, and the next exit is the
/// last one allowed.
#[tokio::test(start_paused = true)]
async fn the_restart_window_and_a_pending_delay_survive_an_agent_restart() {
    let now = crate::driver::now_unix_ms();
    let mut r = adopt(web(), allocation(None), |dir, driver| {
        let mut s = running_state(2);
        s.state = corral_types::TaskLifecycle::Restarting;
        dir.save_task_state("app", &s).expect("state");
        dir.save_restarts(
            "app",
            &crate::layout::RestartRecord {
                restarts: 3,
                window_start: Some(now - 10_000),
                in_window: 3,
                due: Some(now + 30_000),
                ..Default::default()
            },
        )
        .expect("restarts");
        driver.set_default(crate::driver::fake::FakeRun::Exit {
            after: Duration::from_secs(5),
            exit: crate::driver::ExitResult::from_status(Some(1), None, false),
        });
    });
    let t0 = tokio::time::Instant::now();
    let seen = r
        .until(|u| u.tasks["app"].state == corral_types::TaskLifecycle::Running)
        .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(29),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(seen.last().expect("update").tasks["app"].restarts, 3);
    // group(): attempts 3 in 1h: the window is full, the next exit fails.
    let seen = r.until(|u| u.client.is_terminal()).await;
    let last = seen.last().expect("an update");
    assert_eq!(last.client, corral_types::ClientStatus::Failed, "{seen:#?}");
    assert_eq!(r.driver.starts(), 1);
    r.stop().await;
}

/// Issue 13, case 9: a stop does not wait for a start that hangs (an image
/// pull from a registry that never answers); what the start left is
/// cleared.
#[tokio::test(start_paused = true)]
async fn a_stop_does_not_wait_for_a_hanging_start() {
    let mut r = start_full(web(), allocation(None), Vec::new(), false, |_, driver| {
        driver.set_default(crate::driver::fake::FakeRun::StartHangs)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t0 = tokio::time::Instant::now();
    r.runner.stop();
    r.until(|u| u.client == corral_types::ClientStatus::Complete)
        .await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(r.driver.calls().contains(&FakeCall::ClearTask {
        alloc_id: "a1".into(),
        task: "app".into()
    }));
    r.stop().await;
}

/// Issue 13, case 6: a check says nothing about a task that does not run:
/// pending while the task waits for its restart, not its last status.
#[tokio::test(start_paused = true)]
async fn a_check_is_pending_while_its_task_restarts() {
    let mut r = start_full(web(), allocation(None), Vec::new(), false, |_, driver| {
        driver.push(crate::driver::fake::FakeRun::Exit {
            after: Duration::from_secs(10),
            exit: crate::driver::ExitResult::from_status(Some(1), None, false),
        });
    });
    r.until(|u| u.checks["web-exec"].status == CheckStatus::Passing)
        .await;
    let seen = r
        .until(|u| u.tasks["app"].state == corral_types::TaskLifecycle::Restarting)
        .await;
    let u = seen.last().expect("an update");
    assert_eq!(u.checks["web-exec"].status, CheckStatus::Pending, "{u:#?}");
    r.stop().await;
}

/// Issue 13, case 6: an agent restart that re-attaches to the same run
/// carries the check's status on: no flip to pending, so no second
/// `check.passing` event on the server.
#[tokio::test(start_paused = true)]
async fn a_reattached_task_keeps_its_check_status() {
    let mut r = adopt(web(), allocation(None), |dir, _| {
        dir.save_handle("app", &handle("live-1")).expect("handle");
        dir.save_task_state("app", &running_state(0))
            .expect("state");
        let mut t = crate::checks::CheckTracker::new(&crate::checks::plan(&web())[0].spec);
        t.record(0, crate::checks::Probe::Pass("ok".into()));
        let saved =
            crate::checks::SavedChecks::from([("web-exec".to_string(), t.save((Some(1234), 0)))]);
        dir.save_checks(&saved).expect("checks");
    });
    let seen = r
        .until(|u| u.tasks["app"].state == corral_types::TaskLifecycle::Running)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    while let Ok(u) = r.updates.try_recv() {
        assert_eq!(u.checks["web-exec"].status, CheckStatus::Passing, "{u:#?}");
    }
    for u in &seen {
        assert_eq!(u.checks["web-exec"].status, CheckStatus::Passing, "{u:#?}");
    }
    assert_eq!(r.driver.starts(), 0);
    r.stop().await;
}

/// Found by a hostile run: the healthy_deadline started over at every
/// agent restart (a node restarting more often than the deadline never
/// decided). 50 s of the 1 m deadline were spent before the restart: the
/// verdict comes about 10 s after it.
#[tokio::test(start_paused = true)]
async fn the_healthy_deadline_runs_on_across_an_agent_restart() {
    let now = crate::driver::now_unix_ms();
    let mut r = adopt(web(), allocation(Some("d1")), |dir, driver| {
        dir.save_handle("app", &handle("live-1")).expect("handle");
        dir.save_task_state("app", &running_state(0))
            .expect("state");
        dir.save_record(&crate::layout::AllocRecord {
            alloc: allocation(Some("d1")),
            group: web(),
            health_watch: Some(crate::health::WatchStart {
                deployment: "d1".into(),
                at: now - 50_000,
            }),
        })
        .expect("record");
        driver.set_exec_default(Ok(ExecOutput {
            exit_code: 1,
            output: "sick".into(),
        }));
    });
    let t0 = tokio::time::Instant::now();
    let seen = r.until(|u| u.health.is_some()).await;
    let h = seen.last().and_then(|u| u.health.clone()).expect("health");
    assert!(!h.healthy, "{h:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    r.stop().await;
}

/// Found by a hostile run: the failures counted towards check_restart
/// were persisted only when the status changed, so an agent restart
/// started the count over. Every counted failure is on disk.
#[tokio::test(start_paused = true)]
async fn check_restart_failures_are_persisted_as_they_are_counted() {
    let r = start(
        group(
            "{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms, check_restart: {limit: 9}}",
        ),
        allocation(None),
    );
    r.driver.set_exec_default(Ok(ExecOutput {
        exit_code: 3,
        output: "broken".into(),
    }));
    // Five probes, a second apart, every one failing.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let dir = crate::layout::NodeDir::new(r._dir.path()).alloc("a1");
    let saved: crate::checks::SavedChecks = dir.load_checks().expect("checks saved");
    let c = &saved["web-exec"];
    assert!(c.restart_failures >= 4 && c.failures >= 4, "{c:?}");
    r.stop().await;
}
