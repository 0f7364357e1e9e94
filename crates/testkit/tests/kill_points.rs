//! The kill-point sweep (issue 13): a real `corral server` and one real
//! `corral agent` (exec driver, in its own network namespace). For every
//! named kill point of the agent (`corral_agent::killpoint::POINTS`) a job
//! is driven through it with `CORRAL_AGENT_KILL_AT=<point>`: the agent
//! SIGKILLs itself there, is started again without it, and the test checks
//! that everything ends exactly where it would have without the kill: the
//! processes on the machine, the restart counts, the allocation's status,
//! the log lines and the checks' status.
//!
//! Two jobs cover the points:
//! - `svc`: one task that runs until stopped, with an exec check and a
//!   deployment: it must end running once, with 0 restarts, the check
//!   passing, the deployment successful; stopped, nothing is left;
//! - `fail`: task `bad` exits 3 after a second (2 restarts allowed, mode
//!   fail) beside task `good` that runs until stopped: it must end failed,
//!   `bad` with exactly 2 restarts and 3 runs in its log, `good` stopped,
//!   no process left, and nothing started again afterwards.
//!
//! Needs root (namespaces, cgroups); skipped otherwise, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_agent::killpoint;
use corral_client::{Client, LogQuery};
use corral_testkit::eventually;
use corral_testkit::netns::{Cluster, ClusterOptions};
use corral_types::api::{AllocView, JobView};
use corral_types::{CheckStatus, ClientStatus, DeploymentStatus, TaskLifecycle};
use tokio::sync::Semaphore;

/// Generous: the machine is shared.
const D: Duration = Duration::from_secs(60);

/// Two clusters at a time: each is a server, an agent and a few tasks.
static TWO: Semaphore = Semaphore::const_new(2);

fn svc_job() -> String {
    "name: svc
groups:
  - name: g
    update: {min_healthy_time: 1s, healthy_deadline: 1m}
    tasks:
      - name: app
        driver: exec
        command: [/bin/sh, -c, 'echo MARK $$; exec sleep 600']
        resources: {cpu: 20m, memory: 16M}
        kill_timeout: 1s
        checks:
          - {name: alive, type: exec, command: [/bin/true], interval: 1s, timeout: 900ms}
"
    .to_string()
}

fn fail_job() -> String {
    "name: fail
groups:
  - name: g
    restart: {attempts: 2, interval: 1h, delay: 1s, mode: fail}
    tasks:
      - name: bad
        driver: exec
        command: [/bin/sh, -c, 'echo MARK $$; sleep 1; exit 3']
        resources: {cpu: 20m, memory: 16M}
      - name: good
        driver: exec
        command: [/bin/sh, -c, 'echo MARK $$; exec sleep 600']
        resources: {cpu: 20m, memory: 16M}
        kill_timeout: 1s
"
    .to_string()
}

/// The `svc` task's own processes (not `true`): a probe of its exec check
/// runs in its environment too and must not count.
fn svc_procs(cl: &Cluster) -> Vec<corral_testkit::netns::TaskProc> {
    cl.job_procs("svc")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .is_ok_and(|c| c.trim() != "true")
        })
        .collect()
}

/// Which job drives a point, and whether it is stopped to reach it.
fn scenario(point: &str) -> (&'static str, bool) {
    match point {
        "start.before_handle" | "start.after_handle" | "health.decided" => ("svc", false),
        "stop.after_signal" => ("svc", true),
        _ => ("fail", false),
    }
}

fn can_run(test: &str) -> bool {
    if corral_testkit::procs::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CORRAL_REQUIRE_ROOT_TESTS").is_none(),
        "{test} must run as root"
    );
    eprintln!("{test}: skipped (needs root)");
    false
}

async fn job(c: &Client, name: &str) -> Result<JobView, String> {
    c.job(name, None).await.map_err(|e| e.to_string())
}

fn only_alloc(j: &JobView) -> Result<&AllocView, String> {
    match j.allocations.as_slice() {
        [a] => Ok(a),
        other => Err(format!("{} allocations", other.len())),
    }
}

/// The `MARK <pid>` lines of a task's log.
async fn marks(c: &Client, alloc: &str, task: &str) -> Vec<i32> {
    let q = LogQuery {
        task: Some(task.into()),
        ..Default::default()
    };
    let text = match c.logs(alloc, &q).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => panic!("logs of {alloc}/{task}: {e}"),
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("MARK "))
        .map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|_| panic!("a cut MARK line: {p:?}"))
        })
        .collect()
}

/// Waits until the agent killed itself at its kill point.
async fn wait_self_kill(cl: &mut Cluster, point: &str) {
    let t = Instant::now();
    loop {
        if let Some(status) = cl.agent_exit(0) {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the agent ended otherwise than at {point}: {status}\n{}",
                cl.logs_tail(40)
            );
            return;
        }
        assert!(
            t.elapsed() < D,
            "the agent never reached {point}\n{}",
            cl.logs_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sweep(point: &'static str) {
    let test = format!("kill_point_{point}");
    if !can_run(&test) {
        return;
    }
    let _two = TWO.acquire().await.unwrap();
    let mut opts = ClusterOptions::new(1);
    opts.agent_env = vec![(killpoint::ENV.into(), point.into())];
    let mut cl = Cluster::start_with(&test, opts).await;
    let c = cl.client.clone();
    let (name, stop) = scenario(point);
    let text = if name == "svc" { svc_job() } else { fail_job() };
    c.submit(&text, "job.yaml").await.unwrap();
    if stop {
        eventually("svc running", D, || async {
            let j = job(&c, name).await?;
            let a = only_alloc(&j)?;
            (a.status == ClientStatus::Running)
                .then_some(())
                .ok_or(a.status.as_str().to_string())
        })
        .await;
        c.stop(name, false).await.unwrap();
    }
    wait_self_kill(&mut cl, point).await;
    cl.agent_env.clear();
    cl.restart_agent(0);
    match (name, stop) {
        ("svc", false) => svc_runs_once(&cl, &c).await,
        ("svc", true) => svc_stopped(&cl, &c).await,
        _ => fail_ends_failed(&cl, &c).await,
    }
    cl.assert_no_duplicates(name).await;
}

/// Running once, never restarted, check passing, deployment successful;
/// then stopped with nothing left.
async fn svc_runs_once(cl: &Cluster, c: &Client) {
    let a = eventually("svc healthy and passing", D, || async {
        let j = job(c, "svc").await?;
        let a = only_alloc(&j)?.clone();
        let passing = a.checks.get("alive").map(|s| s.status) == Some(CheckStatus::Passing);
        if a.status == ClientStatus::Running && passing {
            Ok(a)
        } else {
            Err(format!("{} checks {:?}", a.status.as_str(), a.checks))
        }
    })
    .await;
    eventually("the deployment succeeds", D, || async {
        let ds = c.deployments("svc").await.map_err(|e| e.to_string())?;
        match ds.first() {
            Some(d) if d.status == DeploymentStatus::Successful => Ok(()),
            Some(d) if d.status.is_terminal() => {
                panic!("deployment {}: {}", d.status, d.description)
            }
            d => Err(format!("{d:?}")),
        }
    })
    .await;
    assert_eq!(a.tasks["app"].restarts, 0, "{:?}", a.tasks["app"]);
    let procs = svc_procs(cl);
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[0].alloc_id, a.id);
    // Its run printed once; a run the kill cut short printed at most once
    // and runs no more.
    let pids = marks(c, &a.id, "app").await;
    assert_eq!(
        pids.iter().filter(|p| **p == procs[0].pid).count(),
        1,
        "{pids:?}"
    );
    assert!(pids.len() <= 2, "{pids:?}");
    c.stop("svc", false).await.unwrap();
    svc_stopped(cl, c).await;
}

/// Complete, nothing left, nothing started again.
async fn svc_stopped(cl: &Cluster, c: &Client) {
    let a = eventually("svc complete", D, || async {
        let j = job(c, "svc").await?;
        let a = only_alloc(&j)?.clone();
        (a.status == ClientStatus::Complete)
            .then_some(a.clone())
            .ok_or(a.status.as_str().to_string())
    })
    .await;
    let before = marks(c, &a.id, "app").await;
    eventually("no svc process", D, || async {
        let p = svc_procs(cl);
        p.is_empty().then_some(()).ok_or(format!("{p:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(svc_procs(cl).is_empty());
    assert_eq!(marks(c, &a.id, "app").await, before, "started again");
    assert_eq!(a.tasks["app"].state, TaskLifecycle::Dead);
}

/// Failed; `bad` ran exactly three times (two restarts), `good` stopped,
/// no process left and nothing starts again.
async fn fail_ends_failed(cl: &Cluster, c: &Client) {
    let a = eventually("fail failed", D, || async {
        let j = job(c, "fail").await?;
        let a = only_alloc(&j)?.clone();
        (a.status == ClientStatus::Failed)
            .then_some(a.clone())
            .ok_or(format!("{} {:?}", a.status.as_str(), a.tasks))
    })
    .await;
    eventually("no fail process", D, || async {
        let p = cl.job_procs("fail");
        p.is_empty().then_some(()).ok_or(format!("{p:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(cl.job_procs("fail").is_empty());
    let bad = &a.tasks["bad"];
    assert_eq!(bad.restarts, 2, "{bad:?}");
    assert!(bad.failed, "{bad:?}");
    assert_eq!(bad.exit_code, Some(3), "{bad:?}");
    assert_eq!(bad.state, TaskLifecycle::Dead);
    let runs: BTreeSet<i32> = marks(c, &a.id, "bad").await.into_iter().collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(marks(c, &a.id, "bad").await.len(), 3);
    assert_eq!(a.tasks["good"].state, TaskLifecycle::Dead);
    assert_eq!(marks(c, &a.id, "good").await.len(), 1);
    let j = job(c, "fail").await.unwrap();
    assert_eq!(j.allocations.len(), 1, "replaced or started again");
}

#[test]
fn every_kill_point_is_swept() {
    let swept = [
        "start.before_handle",
        "start.after_handle",
        "exit.after_decision",
        "restart.waiting",
        "stop.after_signal",
        "health.decided",
        "alloc.after_failure",
        "alloc.after_final",
    ];
    assert_eq!(killpoint::POINTS, swept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_start_before_handle() {
    sweep("start.before_handle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_start_after_handle() {
    sweep("start.after_handle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_exit_after_decision() {
    sweep("exit.after_decision").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_restart_waiting() {
    sweep("restart.waiting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_stop_after_signal() {
    sweep("stop.after_signal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_health_decided() {
    sweep("health.decided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_alloc_after_failure() {
    sweep("alloc.after_failure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_alloc_after_final() {
    sweep("alloc.after_final").await;
}

/// Issue 13, case 1: the agent dies during a task's first start (the task
/// runs, no handle is saved), the job is stopped meanwhile, the agent
/// comes back: the task's process must not run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cut_short_and_then_stopped_leaves_no_process() {
    let test = "a_start_cut_short_and_then_stopped_leaves_no_process";
    if !can_run(test) {
        return;
    }
    let _two = TWO.acquire().await.unwrap();
    let mut opts = ClusterOptions::new(1);
    opts.agent_env = vec![(killpoint::ENV.into(), "start.before_handle".into())];
    let mut cl = Cluster::start_with(test, opts).await;
    let c = cl.client.clone();
    c.submit(&svc_job(), "job.yaml").await.unwrap();
    wait_self_kill(&mut cl, "start.before_handle").await;
    assert_eq!(svc_procs(&cl).len(), 1, "the start ran the task");
    c.stop("svc", false).await.unwrap();
    cl.agent_env.clear();
    cl.restart_agent(0);
    svc_stopped(&cl, &c).await;
}

/// Found by a hostile run: an allocation whose record is corrupt after an
/// agent kill cannot be adopted; its processes must not run on unowned
/// (they did, while the server showed it complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_leaves_no_process_behind() {
    let test = "a_corrupt_record_leaves_no_process_behind";
    if !can_run(test) {
        return;
    }
    let _two = TWO.acquire().await.unwrap();
    let mut cl = Cluster::start_with(test, ClusterOptions::new(1)).await;
    let c = cl.client.clone();
    c.submit(&svc_job(), "job.yaml").await.unwrap();
    let id = eventually("svc running", D, || async {
        let j = job(&c, "svc").await?;
        let a = only_alloc(&j)?;
        (a.status == ClientStatus::Running)
            .then(|| a.id.clone())
            .ok_or(a.status.as_str().to_string())
    })
    .await;
    cl.kill_agent(0);
    let record = cl.hosts[0]
        .data_dir()
        .join("allocs")
        .join(&id)
        .join("alloc.json");
    std::fs::write(&record, "{\"alloc\": garbage").unwrap();
    assert_eq!(svc_procs(&cl).len(), 1);
    c.stop("svc", false).await.unwrap();
    cl.restart_agent(0);
    eventually("no svc process", D, || async {
        let p = svc_procs(&cl);
        p.is_empty().then_some(()).ok_or(format!("{p:?}"))
    })
    .await;
    let a = eventually("svc ended", D, || async {
        let j = job(&c, "svc").await?;
        let a = only_alloc(&j)?.clone();
        a.status
            .is_terminal()
            .then_some(a.clone())
            .ok_or(a.status.as_str().to_string())
    })
    .await;
    assert_eq!(a.status, ClientStatus::Failed, "{}", a.message);
    assert!(a.message.contains("unreadable"), "{}", a.message);
}
