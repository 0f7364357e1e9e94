//! An allocation with health checks on the fake driver: what it reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_types::{AllocUpdate, Allocation, CheckStatus, DriverKind, GroupSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AllocRunner, RunnerEnv};
use crate::agent::Shared;
use crate::driver::ExecOutput;
use crate::driver::fake::FakeDriver;
use crate::metrics::TaskMetrics;

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
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new());
    let mut drivers: crate::agent::Drivers = HashMap::new();
    drivers.insert(DriverKind::Exec, driver.clone());
    let (tx, updates) = mpsc::unbounded_channel();
    let env = Arc::new(RunnerEnv {
        shared: Arc::new(Shared::new(
            dir.path().to_path_buf(),
            Arc::new(TaskMetrics::new("n1")),
        )),
        drivers,
        updates: tx,
        node_id: "n1".into(),
    });
    let tracker = TaskTracker::new();
    let runner = AllocRunner::spawn(
        &tracker,
        env,
        alloc,
        group,
        false,
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
    let mut r = start(
        group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}"),
        allocation(Some("d1")),
    );
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
    let mut r = start(
        group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}"),
        allocation(None),
    );
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
    let mut r = start_after(
        group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}"),
        allocation(None),
        vec![prev_rx],
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(r.driver.starts(), 0, "started beside the old allocation");
    prev_tx.send_replace(true);
    r.until(|u| u.client == corral_types::ClientStatus::Running)
        .await;
    assert_eq!(r.driver.starts(), 1);
    r.stop().await;
}

/// Stopped while it waits: it reports complete and never starts.
#[tokio::test(start_paused = true)]
async fn a_replacement_stopped_while_waiting_never_starts() {
    let (_prev_tx, prev_rx) = tokio::sync::watch::channel(false);
    let mut r = start_after(
        group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}"),
        allocation(None),
        vec![prev_rx],
    );
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
    let mut drivers: crate::agent::Drivers = HashMap::new();
    drivers.insert(DriverKind::Exec, driver.clone());
    let (tx, mut updates) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        dir.path().to_path_buf(),
        Arc::new(TaskMetrics::new("n1")),
    ));
    let alloc = allocation(None);
    let alloc_dir = shared.alloc_dir(&alloc.id);
    std::fs::create_dir_all(&alloc_dir).expect("alloc dir");
    let before = corral_types::TaskState {
        state: corral_types::TaskLifecycle::Restarting,
        restarts: 2,
        ..corral_types::TaskState::default()
    };
    crate::persist::save_task_state(&alloc_dir, "app", &before).expect("state");
    let env = Arc::new(RunnerEnv {
        shared,
        drivers,
        updates: tx,
        node_id: "n1".into(),
    });
    let tracker = TaskTracker::new();
    let runner = AllocRunner::spawn(
        &tracker,
        env,
        alloc,
        group("{type: exec, command: [/bin/ok], interval: 1s, timeout: 500ms}"),
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
