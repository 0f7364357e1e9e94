//! End to end with a real server (SQLite) and a real agent running exec
//! tasks as real processes in real cgroups. Needs root (cgroups).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use corral_client::{Client, LogQuery};
use corral_testkit::procs::{is_root, live_with_marker};
use corral_testkit::{TestCluster, eventually};
use corral_types::api::JobView;
use corral_types::{ClientStatus, DesiredStatus};

const D: Duration = Duration::from_secs(30);

fn job(name: &str, marker: &str, count: u32, foo_value: &str) -> String {
    format!(
        "name: {name}
driver: exec
command: [/bin/sh, -c, 'echo \"FOO=$FOO index=$CORRAL_ALLOC_INDEX\"; while true; do sleep 1; done', {marker}]
env:
  FOO: {foo_value}
count: {count}
resources: {{cpu: 50m, memory: 32M}}
kill_timeout: 2s
"
    )
}

fn running(j: &JobView) -> Vec<String> {
    j.allocations
        .iter()
        .filter(|a| {
            a.desired == DesiredStatus::Run
                && a.status == ClientStatus::Running
                && a.job_version == j.version
        })
        .map(|a| a.id.clone())
        .collect()
}

async fn wait_running(c: &Client, name: &str, n: usize) -> JobView {
    eventually(&format!("{n} allocations of {name} running"), D, || async {
        let j = c.job(name, None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        let stopping = j
            .allocations
            .iter()
            .filter(|a| a.desired == DesiredStatus::Stop && !a.status.is_terminal())
            .count();
        if r.len() == n && stopping == 0 {
            Ok(j)
        } else {
            Err(format!(
                "{} running, {stopping} stopping: {:?}",
                r.len(),
                j.allocations
                    .iter()
                    .map(|a| (&a.name, a.status, a.desired))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await
}

async fn wait_procs(marker: &str, n: usize) {
    corral_testkit::procs::wait_procs(marker, n, D).await
}

async fn log_of(c: &Client, alloc: &str) -> String {
    eventually("log output", D, || async {
        let r = c
            .logs(alloc, &LogQuery::default())
            .await
            .map_err(|e| e.to_string())?;
        let text = r.text().await.map_err(|e| e.to_string())?;
        if text.is_empty() {
            Err("empty log".into())
        } else {
            Ok(text)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_scale_env_change_and_stop() {
    if !is_root() {
        panic!("this test drives real cgroups and must run as root (CI runs it as root)");
    }
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let marker = format!("marker-{}", std::process::id());

    // count: 3 -> three processes, each with its env.
    c.submit(&job("web", &marker, 3, "bar"), "web.yaml")
        .await
        .unwrap();
    let j = wait_running(c, "web", 3).await;
    wait_procs(&marker, 3).await;
    for id in running(&j) {
        let log = log_of(c, &id).await;
        assert!(log.contains("FOO=bar"), "{log}");
    }
    let first: BTreeSet<String> = running(&j).into_iter().collect();

    // Scale to 5: the three survivors are untouched.
    c.submit(&job("web", &marker, 5, "bar"), "web.yaml")
        .await
        .unwrap();
    let j = wait_running(c, "web", 5).await;
    let now: BTreeSet<String> = running(&j).into_iter().collect();
    assert!(
        first.is_subset(&now),
        "survivors replaced: {first:?} vs {now:?}"
    );
    wait_procs(&marker, 5).await;

    // Scale to 1: index 0 stays, the rest stop.
    c.submit(&job("web", &marker, 1, "bar"), "web.yaml")
        .await
        .unwrap();
    let j = wait_running(c, "web", 1).await;
    let idx0 = j
        .allocations
        .iter()
        .find(|a| a.index == 0 && a.desired == DesiredStatus::Run)
        .unwrap();
    assert!(
        first.contains(&idx0.id),
        "index 0 must survive a scale-down"
    );
    wait_procs(&marker, 1).await;

    // Change env: the allocation is replaced and the new one sees it.
    c.submit(&job("web", &marker, 1, "baz"), "web.yaml")
        .await
        .unwrap();
    let j = wait_running(c, "web", 1).await;
    let new_id = running(&j)[0].clone();
    assert_ne!(new_id, idx0.id, "an env change replaces the allocation");
    assert!(log_of(c, &new_id).await.contains("FOO=baz"));
    wait_procs(&marker, 1).await;
    let replaced = j.allocations.iter().find(|a| a.id == idx0.id).unwrap();
    assert_eq!(replaced.desired, DesiredStatus::Stop);

    // Stop: nothing of the job is left running, no cgroup left behind.
    c.stop("web", false).await.unwrap();
    wait_procs(&marker, 0).await;
    eventually("allocations complete", D, || async {
        let j = c.job("web", None).await.map_err(|e| e.to_string())?;
        if j.allocations.iter().all(|a| a.status.is_terminal()) {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                j.allocations.iter().map(|a| a.status).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/memory/corral")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| j.allocations.iter().any(|a| n.starts_with(&a.id)))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_attempts_then_failed() {
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let spec = "name: crash
driver: exec
command: [/bin/sh, -c, 'echo crashing >&2; exit 3']
restart: {attempts: 2, interval: 1m, delay: 200ms, mode: fail}
resources: {cpu: 50m, memory: 16M}
";
    c.submit(spec, "crash.yaml").await.unwrap();
    let a = eventually("allocation failed", D, || async {
        let j = c.job("crash", None).await.map_err(|e| e.to_string())?;
        match j.allocations.first() {
            Some(a) if a.status == ClientStatus::Failed => Ok(a.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let t = &a.tasks["crash"];
    assert_eq!(t.restarts, 2, "attempts: 2 means two restarts: {t:?}");
    assert_eq!(t.exit_code, Some(3));
    // It stays failed: no further restarts, no replacement.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = c.job("crash", None).await.unwrap();
    assert_eq!(j.allocations.len(), 1);
    assert_eq!(j.allocations[0].tasks["crash"].restarts, 2);
    // It never became healthy: its agent (or, when the allocation failed
    // before the agent decided, the server) marks it unhealthy, and its
    // first deployment fails on it.
    let d = eventually("deployment failed", D, || async {
        let d = c
            .deployment("crash", None)
            .await
            .map_err(|e| e.to_string())?;
        if d.status == corral_types::DeploymentStatus::Failed {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert!(
        d.description.contains("crash.crash[0] is unhealthy"),
        "{}",
        d.description
    );
    let a = c.alloc(&a.id).await.unwrap();
    assert_eq!(a.health.map(|h| h.healthy), Some(false));
    let stderr = c
        .logs(
            &a.id,
            &LogQuery {
                stream: Some("stderr".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        stderr.matches("crashing").count(),
        3,
        "three runs: {stderr}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_placement_says_why_and_resumes_when_a_node_joins() {
    let mut cluster = TestCluster::start().await;
    let c = cluster.client.clone();
    let marker = format!("blocked-{}", std::process::id());
    c.submit(&job("late", &marker, 2, "bar"), "late.yaml")
        .await
        .unwrap();
    let e = eventually("evaluation blocked", D, || async {
        let j = c.job("late", None).await.map_err(|e| e.to_string())?;
        match j.latest_eval {
            Some(e) if e.status == "blocked" => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        e.failures[0].contains("no nodes are registered"),
        "{:?}",
        e.failures
    );

    // Too big for any node: the reason names the resource.
    let big =
        "name: big\ndriver: exec\ncommand: [/bin/true]\nresources: {cpu: 500m, memory: 100000G}\n";
    cluster.add_agent("node-0", Default::default()).await;
    wait_running(&c, "late", 2).await;
    c.submit(big, "big.yaml").await.unwrap();
    let e = eventually("big blocked", D, || async {
        let j = c.job("big", None).await.map_err(|e| e.to_string())?;
        match j.latest_eval {
            Some(e) if e.status == "blocked" => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        e.failures,
        vec!["group \"big\": 1 allocation not placed (1 node: memory exhausted)".to_string()]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_store_nothing_through_the_api() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../types/tests/bad");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
        if ext != "yaml" && ext != "json" {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let err = c.submit(&text, &name).await.expect_err(&name);
        assert_eq!(err.status(), Some(400), "{name}: {err}");
        let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let first = expected.lines().next().unwrap();
        assert!(
            err.to_string().contains(first),
            "{name}: {err}\nexpected {first}"
        );
        n += 1;
    }
    assert!(n >= 30, "corpus too small: {n}");
    assert!(
        c.jobs().await.unwrap().is_empty(),
        "a bad spec stored a job"
    );
    assert!(
        c.evals(None).await.unwrap().is_empty(),
        "a bad spec stored an evaluation"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_changes_and_stores_nothing() {
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let p = c
        .plan(&job("p", "plan-marker", 3, "bar"), "p.yaml")
        .await
        .unwrap();
    assert_eq!(p.jobs[0].place.len(), 3);
    assert_eq!(p.jobs[0].version, 1);
    assert!(p.jobs[0].failures.is_empty());
    assert!(c.jobs().await.unwrap().is_empty());
    assert!(c.allocs(None).await.unwrap().is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_loses_nothing_and_tasks_keep_running() {
    let mut cluster = TestCluster::with_agent().await;
    let c = cluster.client.clone();
    let marker = format!("restart-{}", std::process::id());
    c.submit(&job("keep", &marker, 2, "bar"), "keep.yaml")
        .await
        .unwrap();
    let before = wait_running(&c, "keep", 2).await;
    let pids = live_with_marker(&marker);
    cluster.restart_server().await;
    let after = wait_running(&c, "keep", 2).await;
    assert_eq!(running(&before), running(&after));
    assert_eq!(after.version, 1);
    assert_eq!(live_with_marker(&marker), pids, "tasks were restarted");
    let versions = c.job_versions("keep").await.unwrap();
    assert_eq!(versions.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_allocations_replacement_first() {
    let mut cluster = TestCluster::start().await;
    cluster.add_agent("node-0", Default::default()).await;
    let c = cluster.client.clone();
    let marker = format!("drain-{}", std::process::id());
    // Only node-0 exists: everything lands there.
    c.submit(&job("mover", &marker, 3, "bar"), "mover.yaml")
        .await
        .unwrap();
    wait_running(&c, "mover", 3).await;
    cluster.add_agent("node-1", Default::default()).await;
    let n0 = cluster.agents[0].node_id.clone();
    let n1 = cluster.agents[1].node_id.clone();
    c.drain(&n0, true, Some("5m")).await.unwrap();

    // Sample while the drain runs: never fewer than 3 running, and the
    // old allocation only stops after its replacement runs.
    let mut min_running = usize::MAX;
    let mut max_running = 0;
    let start = std::time::Instant::now();
    loop {
        let j = c.job("mover", None).await.unwrap();
        // Allocations meant to run that do (one being stopped may still
        // run for its kill_timeout: it no longer counts).
        let running = j
            .allocations
            .iter()
            .filter(|a| a.status == ClientStatus::Running && a.desired == DesiredStatus::Run)
            .count();
        min_running = min_running.min(running);
        max_running = max_running.max(running);
        let on_n1 = j
            .allocations
            .iter()
            .filter(|a| {
                a.node_id == n1
                    && a.status == ClientStatus::Running
                    && a.desired == DesiredStatus::Run
            })
            .count();
        let on_n0 = j
            .allocations
            .iter()
            .filter(|a| a.node_id == n0 && !a.status.is_terminal())
            .count();
        if on_n1 == 3 && on_n0 == 0 {
            break;
        }
        assert!(
            start.elapsed() < corral_testkit::patience(Duration::from_secs(60)),
            "drain did not finish: {on_n1} on node-1, {on_n0} on node-0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        min_running >= 3,
        "running dropped to {min_running} during the drain"
    );
    assert!(
        max_running <= 4,
        "max_parallel 1 allows one extra copy at a time, saw {max_running} running"
    );
    let j = c.job("mover", None).await.unwrap();
    for a in j.allocations.iter().filter(|a| a.node_id == n0) {
        assert_eq!(a.desired_reason, "node drained");
    }
    wait_procs(&marker, 3).await;
    let node = eventually("drain complete", D, || async {
        let n = c.node(&n0).await.map_err(|e| e.to_string())?;
        if n.status == "ineligible" {
            Ok(n)
        } else {
            Err(n.status)
        }
    })
    .await;
    assert!(!node.draining);
    c.stop("mover", false).await.unwrap();
    wait_procs(&marker, 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_rolls_one_at_a_time() {
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let marker = format!("roll-{}", std::process::id());
    c.submit(&job("roll", &marker, 3, "v1"), "roll.yaml")
        .await
        .unwrap();
    wait_running(c, "roll", 3).await;
    c.submit(&job("roll", &marker, 3, "v2"), "roll.yaml")
        .await
        .unwrap();
    // Default update policy: max_parallel 1, so at every sample at least
    // count - 1 allocations run, and at most one new one is starting.
    let start = std::time::Instant::now();
    let mut min_running = usize::MAX;
    loop {
        let j = c.job("roll", None).await.unwrap();
        let running = j
            .allocations
            .iter()
            .filter(|a| a.status == ClientStatus::Running && a.desired == DesiredStatus::Run)
            .count();
        let starting = j
            .allocations
            .iter()
            .filter(|a| a.status == ClientStatus::Pending && a.desired == DesiredStatus::Run)
            .count();
        assert!(starting <= 1, "max_parallel 1 but {starting} starting");
        min_running = min_running.min(running);
        if j.version == 2
            && running == 3
            && j.allocations
                .iter()
                .filter(|a| a.desired == DesiredStatus::Run)
                .all(|a| a.job_version == 2)
        {
            break;
        }
        assert!(
            start.elapsed() < corral_testkit::patience(Duration::from_secs(60)),
            "rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        min_running >= 2,
        "running dropped to {min_running}: below count - max_parallel"
    );
    for id in running(&c.job("roll", None).await.unwrap()) {
        assert!(log_of(c, &id).await.contains("FOO=v2"));
    }
    cluster.shutdown().await;
}

/// A purged job starts again from version 1: its old deployments must not
/// pass for the new versions' (they did, and version 2 never rolled out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_job_submitted_again_rolls_out_again() {
    if !is_root() {
        panic!("this test drives real cgroups and must run as root (CI runs it as root)");
    }
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let marker = format!("repurge-{}", std::process::id());
    let spec = |foo: &str| {
        format!(
            "{}update: {{min_healthy_time: 200ms}}\n",
            job("repurge", &marker, 1, foo)
        )
    };
    for round in 0..2 {
        for foo in ["v1", "v2"] {
            c.submit(&spec(foo), "repurge.yaml").await.unwrap();
            let j = wait_running(c, "repurge", 1).await;
            // Only this round's allocations: the first version's and, after
            // the update, its replacement (the purge took the rest).
            let mine = if foo == "v1" { 1 } else { 2 };
            assert_eq!(
                j.allocations.len(),
                mine,
                "round {round}: {:?}",
                j.allocations
            );
            let id = running(&j).remove(0);
            assert!(
                log_of(c, &id).await.contains(&format!("FOO={foo}")),
                "round {round}: {foo} is not what runs"
            );
        }
        c.stop("repurge", true).await.unwrap();
        wait_procs(&marker, 0).await;
        // What was still running at the purge is kept until it has
        // stopped (then maintenance or the next submission deletes it).
        eventually("the purged job's allocations stopped", D, || async {
            let left = c.allocs(Some("repurge")).await.map_err(|e| e.to_string())?;
            if left.iter().all(|a| a.status.is_terminal()) {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        })
        .await;
    }
    // Purged and submitted again at once, before the purge's evaluation
    // may have stopped anything: the old allocation (version 1 too) must
    // not pass for the new job's.
    c.submit(&spec("v3"), "repurge.yaml").await.unwrap();
    wait_running(c, "repurge", 1).await;
    c.stop("repurge", true).await.unwrap();
    c.submit(&spec("v4"), "repurge.yaml").await.unwrap();
    eventually("the new job's own allocation running v4", D, || async {
        let j = c.job("repurge", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        if r.len() != 1 {
            return Err(format!("{} running", r.len()));
        }
        let log = log_of(c, &r[0]).await;
        if log.contains("FOO=v4") {
            Ok(())
        } else {
            Err(format!("{} runs {log:?}", r[0]))
        }
    })
    .await;
    cluster.shutdown().await;
}

/// Issue 13, case 10: a task that never starts (its command is missing)
/// is never reported running while it waits for its restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_never_starts_is_not_reported_running() {
    if !is_root() {
        panic!("this test drives real cgroups and must run as root (CI runs it as root)");
    }
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    c.submit(
        "name: nope
driver: exec
command: [/nonexistent/corral-test-binary]
count: 1
restart: {attempts: 3, delay: 1s, mode: fail}
resources: {cpu: 20m, memory: 16M}
",
        "nope.yaml",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let j = c.job("nope", None).await.unwrap();
        for a in &j.allocations {
            seen.push(a.status);
            assert_ne!(a.status, ClientStatus::Running, "reported running: {a:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!seen.is_empty(), "no allocation seen");
    c.stop("nope", true).await.unwrap();
    cluster.shutdown().await;
}

/// Issue 13, case 3 (the counter half): an agent restarted while a task
/// that never starts waits for its next try keeps the task's restart
/// count; it used to go back to 0. (The restart window still starts
/// afresh: the task gets its attempts again, which is left open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_keeps_the_restart_count_of_a_task_that_never_started() {
    if !is_root() {
        panic!("this test drives real cgroups and must run as root (CI runs it as root)");
    }
    let mut cluster = TestCluster::start().await;
    cluster
        .add_agent_with("node-0", |c| c.stop_on_shutdown = false)
        .await;
    let c = cluster.client.clone();
    c.submit(
        "name: never
driver: exec
command: [/nonexistent/corral-test-binary]
count: 1
restart: {attempts: 3, interval: 10m, delay: 2s, mode: fail}
resources: {cpu: 20m, memory: 16M}
",
        "never.yaml",
    )
    .await
    .unwrap();
    let restarts = |j: &JobView| {
        j.allocations
            .first()
            .and_then(|a| a.tasks.values().next())
            .map_or(0, |t| t.restarts)
    };
    eventually("two restarts", D, || async {
        let j = c.job("never", None).await.map_err(|e| e.to_string())?;
        (restarts(&j) >= 2)
            .then_some(())
            .ok_or(format!("{} restarts", restarts(&j)))
    })
    .await;
    // Like kill -9: the agent goes, its runners detach.
    cluster.take_agent("node-0").unwrap().shutdown().await;
    cluster
        .add_agent_with("node-0", |c| c.stop_on_shutdown = false)
        .await;
    let lowest = std::sync::atomic::AtomicU32::new(u32::MAX);
    let j = eventually("the allocation failed", D, || async {
        let j = c.job("never", None).await.map_err(|e| e.to_string())?;
        lowest.fetch_min(restarts(&j), std::sync::atomic::Ordering::SeqCst);
        let failed = j
            .allocations
            .first()
            .is_some_and(|a| a.status == ClientStatus::Failed);
        failed
            .then_some(j)
            .ok_or_else(|| "not failed yet".to_string())
    })
    .await;
    let lowest = lowest.into_inner();
    assert!(lowest >= 2, "the restart count went back to {lowest}");
    assert!(restarts(&j) >= 3, "{:?}", j.allocations);
    c.stop("never", true).await.unwrap();
    cluster.shutdown().await;
}
