//! Rollouts and drains report what really runs (issue 12): a real server
//! on SQLite, real exec agents ("dev" and "n2") running real processes in
//! real cgroups, and every verdict checked against the processes on the
//! machine (by a marker in their command line), not only the API.
//!
//! Needs root (cgroups).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use corral_client::Client;
use corral_testkit::procs::{is_root, live_with_marker};
use corral_testkit::{TestCluster, eventually};
use corral_types::api::DeploymentAction;
use corral_types::{Deployment, DeploymentStatus};

const D: Duration = Duration::from_secs(60);

fn require_root() {
    if !is_root() {
        panic!("this test drives real cgroups and must run as root (CI runs it as root)");
    }
}

/// A server with agents `dev` and `n2`.
async fn two_nodes() -> TestCluster {
    let mut cl = TestCluster::start().await;
    cl.add_agent("dev", BTreeMap::new()).await;
    cl.add_agent("n2", BTreeMap::new()).await;
    cl
}

/// A task that runs until stopped, found by `marker` in its command line.
fn looping(marker: &str) -> String {
    format!(
        "{{name: app, driver: exec, command: [/bin/sh, -c, 'while true; do sleep 1; done', {marker}], resources: {{cpu: 20m, memory: 16M}}, kill_timeout: 1s}}"
    )
}

fn marker(test: &str, v: &str) -> String {
    format!("MARK-{test}-{}-{v}", std::process::id())
}

async fn submit(c: &Client, text: &str) -> u64 {
    match c.submit(text, "J.yaml").await {
        Ok(r) => r.jobs[0].version,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// The deployment of `version`, once `ok` holds for it.
async fn deployment_where(
    c: &Client,
    job: &str,
    version: u64,
    what: &str,
    ok: impl Fn(&Deployment) -> bool,
) -> Deployment {
    eventually(&format!("deployment of v{version} {what}"), D, || async {
        let all = c.deployments(job).await.map_err(|e| e.to_string())?;
        let d = all
            .into_iter()
            .find(|d| d.job_version == version)
            .ok_or("no deployment yet")?;
        if ok(&d) {
            Ok(d)
        } else {
            Err(format!("{} {}: {}", d.status, d.job_version, d.description))
        }
    })
    .await
}

/// Waits for the deployment of `version` to end; it must end `want`.
async fn ended(c: &Client, job: &str, version: u64, want: DeploymentStatus) -> Deployment {
    let d = deployment_where(c, job, version, "to end", |d| d.status.is_terminal()).await;
    assert_eq!(d.status, want, "{}", d.description);
    d
}

async fn wait_procs(marker: &str, n: usize) {
    corral_testkit::procs::wait_procs(marker, n, D).await
}

async fn finish(cl: TestCluster, job: &str) {
    corral_testkit::jobs::stop_and_wait(&cl.client, job, D).await;
    cl.shutdown().await;
}

/// Case 1: v2 changes only the second group; its process is replaced
/// before the deployment says successful, the first group's keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_later_group_deploys() {
    require_root();
    let cl = two_nodes().await;
    let c = &cl.client;
    let (a1, b1, b2) = (
        marker("later", "a1"),
        marker("later", "b1"),
        marker("later", "b2"),
    );
    let spec = |b: &str| {
        format!(
            "name: later
groups:
  - name: a
    update: {{min_healthy_time: 1s}}
    tasks: [{}]
  - name: b
    update: {{min_healthy_time: 1s}}
    tasks: [{}]
",
            looping(&a1),
            looping(b)
        )
    };
    let v1 = submit(c, &spec(&b1)).await;
    ended(c, "later", v1, DeploymentStatus::Successful).await;
    let a_pid = live_with_marker(&a1);
    assert_eq!(a_pid.len(), 1);
    let v2 = submit(c, &spec(&b2)).await;
    ended(c, "later", v2, DeploymentStatus::Successful).await;
    assert_eq!(live_with_marker(&b1).len(), 0, "b's v1 still runs");
    assert_eq!(live_with_marker(&b2).len(), 1, "b's v2 does not run");
    assert_eq!(live_with_marker(&a1), a_pid, "a was restarted");
    finish(cl, "later").await;
}

/// Cases 2 and 3: a drain while a canary waits moves nothing of the new
/// version and promotes nothing; after a promotion the drained slots roll
/// to the new version, and success is reported only once no old process
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_a_canary_waiting_neither_promotes_nor_stalls() {
    require_root();
    let cl = two_nodes().await;
    let c = &cl.client;
    let (m1, m2) = (marker("canary", "v1"), marker("canary", "v2"));
    let spec = |m: &str, node: &str, canary: u32| {
        format!(
            "name: canary
groups:
  - name: g
    count: 2
    update: {{max_parallel: 2, canary: {canary}, min_healthy_time: 1s, healthy_deadline: 10s, progress_deadline: 60s}}
    constraints: [{{attr: node.name, value: {node}}}]
    tasks: [{}]
",
            looping(m)
        )
    };
    let v1 = submit(c, &spec(&m1, "n2", 0)).await;
    ended(c, "canary", v1, DeploymentStatus::Successful).await;
    wait_procs(&m1, 2).await;
    let v2 = submit(c, &spec(&m2, "dev", 1)).await;
    deployment_where(c, "canary", v2, "waiting for promotion", |d| {
        d.description.contains("promote")
    })
    .await;
    let n2 = c
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "n2")
        .unwrap();
    c.drain(&n2.id, true, Some("1h")).await.unwrap();
    // Give the scheduler time to do the wrong thing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(live_with_marker(&m2).len(), 1, "only the canary runs v2");
    assert_eq!(live_with_marker(&m1).len(), 2, "v1 has nowhere to go");
    let d = c.deployment("canary", None).await.unwrap();
    assert_eq!(d.status, DeploymentStatus::Running, "{}", d.description);
    assert!(!d.promoted(), "promoted by nobody: {d:?}");

    c.deployment_action("canary", DeploymentAction::Promote)
        .await
        .unwrap();
    ended(c, "canary", v2, DeploymentStatus::Successful).await;
    assert_eq!(live_with_marker(&m1).len(), 0, "successful beside v1");
    assert_eq!(live_with_marker(&m2).len(), 2);
    c.drain(&n2.id, false, None).await.unwrap();
    finish(cl, "canary").await;
}

/// Case 5: a count change while a rollout is in flight, with the in-flight
/// allocation failing its check: the new deployment counts it, replaces
/// nothing more meanwhile, fails, and rolls back. It never says successful.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployment_inherits_the_allocations_in_flight() {
    require_root();
    let cl = two_nodes().await;
    let c = &cl.client;
    let (m1, m2) = (marker("inflight", "v1"), marker("inflight", "v2"));
    // v2's check fails for index 0 only.
    let spec = |m: &str, count: u32, check: &str| {
        format!(
            "name: inflight
groups:
  - name: g
    count: {count}
    update: {{max_parallel: 1, min_healthy_time: 3s, healthy_deadline: 8s, progress_deadline: 60s, auto_revert: true}}
    tasks:
      - name: app
        driver: exec
        command: [/bin/sh, -c, 'while true; do sleep 1; done', {m}]
        resources: {{cpu: 20m, memory: 16M}}
        kill_timeout: 1s
        check: {{type: exec, command: [/bin/sh, -c, '{check}'], interval: 500ms, timeout: 400ms}}
"
        )
    };
    let v1 = submit(c, &spec(&m1, 3, "true")).await;
    ended(c, "inflight", v1, DeploymentStatus::Successful).await;
    let bad = "test $CORRAL_ALLOC_INDEX != 0";
    let v2 = submit(c, &spec(&m2, 3, bad)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v3 = submit(c, &spec(&m2, 4, bad)).await;
    assert_eq!(v3, v2 + 1);
    // Until v3's deployment ends, at most one v1 slot is replaced: v1
    // keeps two of its three processes throughout.
    let d = eventually("v3's deployment to end", D, || async {
        assert!(
            live_with_marker(&m1).len() >= 2,
            "a second v1 slot was replaced while g[0] was unproven"
        );
        let all = c.deployments("inflight").await.map_err(|e| e.to_string())?;
        let d = all
            .into_iter()
            .find(|d| d.job_version == v3)
            .ok_or("no deployment for v3")?;
        if d.status.is_terminal() {
            Ok(d)
        } else {
            Err(d.description)
        }
    })
    .await;
    assert_eq!(d.status, DeploymentStatus::Failed, "{}", d.description);
    let history = c.job_versions("inflight").await.unwrap();
    assert!(!history.iter().any(|v| v.version == v3 && v.stable));
    let revert = history
        .iter()
        .find(|v| v.reverts_to == Some(v1))
        .expect("rolled back to v1");
    ended(c, "inflight", revert.version, DeploymentStatus::Successful).await;
    wait_procs(&m2, 0).await;
    assert_eq!(live_with_marker(&m1).len(), 3);
    finish(cl, "inflight").await;
}

/// Case 6: a job started again after a stop is deployed with its checks: a
/// failing version does not become stable, and `corral run` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_becomes_stable_only_through_its_checks() {
    require_root();
    let cl = two_nodes().await;
    let c = &cl.client;
    let (m1, m2) = (marker("stable", "v1"), marker("stable", "v2"));
    let spec = |m: &str, check: &str| {
        format!(
            "name: stable
groups:
  - name: g
    count: 1
    update: {{min_healthy_time: 1s, healthy_deadline: 5s, progress_deadline: 60s, auto_revert: true}}
    tasks:
      - name: app
        driver: exec
        command: [/bin/sh, -c, 'while true; do sleep 1; done', {m}]
        resources: {{cpu: 20m, memory: 16M}}
        kill_timeout: 1s
        check: {{type: exec, command: [/bin/sh, -c, '{check}'], interval: 500ms, timeout: 400ms}}
"
        )
    };
    let v1 = submit(c, &spec(&m1, "true")).await;
    ended(c, "stable", v1, DeploymentStatus::Successful).await;
    c.stop("stable", false).await.unwrap();
    wait_procs(&m1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stable.yaml");
    std::fs::write(&file, spec(&m2, "false")).unwrap();
    let out = std::process::Command::new(corral_testkit::netns::corral_bin())
        .args(["--api", &cl.url(), "run", file.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "corral run said success:\n{err}");
    let history = c.job_versions("stable").await.unwrap();
    let v2 = history.iter().find(|v| v.version == v1 + 1).unwrap();
    assert!(!v2.stable, "a version whose check fails became stable");
    let d = ended(c, "stable", v2.version, DeploymentStatus::Failed).await;
    assert!(
        d.description.contains("rolling back to version 1"),
        "{}",
        d.description
    );
    finish(cl, "stable").await;
}

/// A job holding static host port `port` with a task that ignores SIGTERM
/// (busybox httpd serving `ok-TAG` from a directory named by its marker).
fn port_job(root: &std::path::Path, test: &str, port: u16, tag: &str) -> String {
    let dir = root.join(marker(test, tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("ok-{tag}")), "ok").unwrap();
    format!(
        "name: port
groups:
  - name: g
    count: 1
    network: host
    restart: {{attempts: 0, mode: fail}}
    update: {{min_healthy_time: 1s, healthy_deadline: 20s, progress_deadline: 60s}}
    tasks:
      - name: app
        driver: exec
        command: [/bin/sh, -c, \"trap '' TERM; exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h {}\"]
        ports: {{http: {port}}}
        resources: {{cpu: 20m, memory: 16M}}
        kill_timeout: 3s
        check: {{type: http, port: http, path: /ok-{tag}, interval: 300ms, timeout: 250ms}}
",
        dir.display()
    )
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Found by a hostile run: `corral stop` then `corral run` again placed
/// the new allocation (no `previous`) while the old one still held the
/// port. A new allocation waits for whatever stopping allocation on its
/// node holds a port it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_again_after_a_stop_waits_for_the_port() {
    require_root();
    let mut cl = TestCluster::start().await;
    cl.add_agent("dev", BTreeMap::new()).await;
    let c = &cl.client;
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    let v1 = submit(c, &port_job(root.path(), "again", port, "v1")).await;
    ended(c, "port", v1, DeploymentStatus::Successful).await;
    c.stop("port", false).await.unwrap();
    let v2 = submit(c, &port_job(root.path(), "again", port, "v2")).await;
    ended(c, "port", v2, DeploymentStatus::Successful).await;
    assert_eq!(live_with_marker(&marker("again", "v1")).len(), 0);
    assert_eq!(live_with_marker(&marker("again", "v2")).len(), 1);
    finish(cl, "port").await;
}

/// Case 7: a replacement on the same node whose old allocation ignores
/// SIGTERM and holds a static host port starts once the old one is gone,
/// and the rollout succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_node_replacement_waits_for_the_port() {
    require_root();
    let mut cl = TestCluster::start().await;
    cl.add_agent("dev", BTreeMap::new()).await;
    let c = &cl.client;
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    let spec = |tag: &str| port_job(root.path(), "port", port, tag);
    let v1 = submit(c, &spec("v1")).await;
    ended(c, "port", v1, DeploymentStatus::Successful).await;
    wait_procs(&marker("port", "v1"), 1).await;
    let v2 = submit(c, &spec("v2")).await;
    ended(c, "port", v2, DeploymentStatus::Successful).await;
    assert_eq!(live_with_marker(&marker("port", "v1")).len(), 0);
    assert_eq!(live_with_marker(&marker("port", "v2")).len(), 1);
    finish(cl, "port").await;
}

/// Found by a hostile run: with slot 1's old allocation failed, the
/// rollout replaced slot 0 and then nothing more (no report brought an
/// evaluation), and failed at its progress deadline with a slot empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_old_allocation_in_a_later_slot_is_replaced_by_the_rollout() {
    require_root();
    let cl = two_nodes().await;
    let c = &cl.client;
    let (m1, m2) = (marker("failslot", "v1"), marker("failslot", "v2"));
    let spec = |m: &str| {
        format!(
            "name: failslot
groups:
  - name: g
    count: 2
    restart: {{attempts: 0, mode: fail}}
    update: {{max_parallel: 1, min_healthy_time: 1s, healthy_deadline: 10s, progress_deadline: 40s}}
    tasks: [{}]
",
            looping(m)
        )
    };
    let v1 = submit(c, &spec(&m1)).await;
    ended(c, "failslot", v1, DeploymentStatus::Successful).await;
    // Kill slot 1's process: its allocation fails for good.
    for pid in live_with_marker(&m1) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        if env.split('\0').any(|kv| kv == "CORRAL_ALLOC_INDEX=1") {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
    eventually("slot 1 failed", D, || async {
        let j = c.job("failslot", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .any(|a| a.index == 1 && a.status == corral_types::ClientStatus::Failed)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let v2 = submit(c, &spec(&m2)).await;
    ended(c, "failslot", v2, DeploymentStatus::Successful).await;
    assert_eq!(live_with_marker(&m2).len(), 2);
    assert_eq!(live_with_marker(&m1).len(), 0);
    finish(cl, "failslot").await;
}
