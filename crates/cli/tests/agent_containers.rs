//! The real `corral agent` process with the container driver on a private
//! containerd, killed with SIGKILL: its containers keep running, and the
//! next agent process on the same data dir adopts them (same containers,
//! same start times, same allocations, no restart, no duplicate).
//!
//! Needs root, containerd, runc, ctr, the CNI plugins and busybox-static;
//! skipped with a message when missing, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use corral_agent::image::DEMO_IMAGE;
use corral_client::Client;
use corral_testkit::containers::{ContainerNode, can_run};
use corral_testkit::jobs::{running, stop_and_wait, summary, wait_running};
use corral_testkit::{TestCluster, eventually};
use corral_types::TaskLifecycle;

const D: Duration = Duration::from_secs(60);

/// `corral agent` as a child process (killed if the test panics).
struct AgentProcess {
    child: tokio::process::Child,
    log: PathBuf,
}

impl AgentProcess {
    fn spawn(server: &str, data_dir: &Path, socket: &Path, log: PathBuf) -> AgentProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("agent")
            .args(["--server", server, "--name", "node-0"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cri-socket")
            .arg(socket)
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        AgentProcess { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Waits until the node is ready with the container driver.
async fn wait_node(c: &Client, agent: &AgentProcess) -> String {
    eventually("node-0 ready with the container driver", D, || async {
        let nodes = c.nodes().await.map_err(|e| e.to_string())?;
        match nodes.iter().find(|n| n.name == "node-0") {
            Some(n) if n.status == "ready" && n.drivers.iter().any(|d| d == "container") => {
                Ok(n.id.clone())
            }
            other => Err(format!(
                "{:?}; agent log:\n{}",
                other.map(|n| (&n.status, &n.drivers)),
                agent.log_tail()
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_process_leaves_containers_for_the_next_to_adopt() {
    if !can_run("agent kill -9") {
        return;
    }
    let node = ContainerNode::start("agent-kill").await;
    node.import_demo().await;
    let cluster = TestCluster::start().await;
    let c = cluster.client.clone();
    let data_dir = node.dir.path().join("agent");
    let log = node.dir.path().join("agent.log");
    let agent = AgentProcess::spawn(&cluster.url(), &data_dir, node.socket(), log.clone());
    let node_id = wait_node(&c, &agent).await;

    c.submit(
        &format!("name: kept\nimage: {DEMO_IMAGE}\nenv: {{FOO: kept}}\ncount: 2\n"),
        "kept.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(&c, "kept", 2, D).await;
    let allocs: BTreeSet<String> = running(&j).iter().map(|a| a.id.clone()).collect();
    let before = node.running_containers().await;
    assert_eq!(before.len(), 2, "{before:?}");
    let mut started = BTreeMap::new();
    for k in &before {
        started.insert(k.id.clone(), node.started_at(&k.id).await);
    }
    let ctr_before: BTreeSet<String> = node.ctr_containers().await.into_iter().collect();
    assert_eq!(
        ctr_before.len(),
        4,
        "2 containers + 2 sandboxes: {ctr_before:?}"
    );

    // kill -9 of the agent: the containers do not notice.
    let pid = agent.pid();
    let t = Instant::now();
    agent.kill9().await;
    eprintln!("agent {pid} killed with SIGKILL");
    assert_eq!(node.running_containers().await, before);

    // The next agent process on the same data dir adopts them.
    let agent = AgentProcess::spawn(&cluster.url(), &data_dir, node.socket(), log);
    assert_eq!(
        wait_node(&c, &agent).await,
        node_id,
        "same data dir, same node"
    );
    eventually("tasks re-attached by the new agent process", D, || async {
        let j = c.job("kept", None).await.map_err(|e| e.to_string())?;
        let r = running(&j);
        let reattached = r.iter().all(|a| {
            a.tasks
                .values()
                .all(|t| t.state == TaskLifecycle::Running && t.message.contains("re-attached"))
        });
        let ids: BTreeSet<String> = r.iter().map(|a| a.id.clone()).collect();
        if ids == allocs && reattached {
            Ok(())
        } else {
            Err(format!("{}; agent log:\n{}", summary(&j), agent.log_tail()))
        }
    })
    .await;
    eprintln!(
        "agent killed and its containers re-attached in {} ms",
        t.elapsed().as_millis()
    );
    // Give a wrong restart or a second container time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = c.job("kept", None).await.unwrap();
    assert_eq!(j.allocations.len(), 2, "no replacement: {}", summary(&j));
    for a in running(&j) {
        assert_eq!(a.tasks["kept"].restarts, 0, "{:?}", a.tasks);
    }
    let after = node.running_containers().await;
    assert_eq!(after, before, "the same containers, nothing new");
    for k in &after {
        assert_eq!(
            node.started_at(&k.id).await,
            started[&k.id],
            "{} restarted",
            k.id
        );
    }
    let ctr_after: BTreeSet<String> = node.ctr_containers().await.into_iter().collect();
    assert_eq!(
        ctr_after, ctr_before,
        "no duplicate containers or sandboxes"
    );

    // The adopted containers still obey: stopping the job removes them.
    stop_and_wait(&c, "kept", D).await;
    node.wait_clean(D).await;
    agent.kill9().await;
    cluster.shutdown().await;
    node.finish().await;
}
