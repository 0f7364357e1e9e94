//! Rescheduling end to end (issue 17) on real `corral` processes: a server
//! and two agents, each in its own network namespace. A task that can run
//! only on the node it was not first placed on fails there (its restart
//! policy gives up at once); after the reschedule delay a replacement is
//! placed on the other node, where it runs, carrying the slot's history;
//! the events say so. A policy with `attempts: 0` leaves the failed
//! allocation in its slot.
//!
//! Needs root (namespaces, cgroups); skipped otherwise, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use corral_testkit::eventually;
use corral_testkit::jobs::{stop_and_wait, wait_running};
use corral_testkit::netns::{self, Cluster, ClusterOptions};
use corral_types::ClientStatus;

const D: Duration = Duration::from_secs(60);

/// A task that runs only where `<dir>/good-<node id>` exists, and fails at
/// once elsewhere (no restarts).
fn picky_job(name: &str, dir: &Path, reschedule: &str) -> String {
    format!(
        "name: {name}
driver: exec
command: [/bin/sh, -c, 'test -e {}/good-$CORRAL_NODE_ID || {{ echo not on this node; exit 3; }}; exec sleep 3600']
resources: {{cpu: 20m, memory: 16M}}
kill_timeout: 1s
restart: {{attempts: 0, mode: fail}}
reschedule: {reschedule}
update: {{max_parallel: 0}}
",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_on_one_node_is_rescheduled_to_the_other() {
    let test = "reschedule";
    if !netns::can_run(test) {
        return;
    }
    let cl = Cluster::start_with(test, ClusterOptions::new(2)).await;
    let c = cl.client.clone();
    let dir = cl.dir().to_path_buf();
    c.submit(&picky_job("picky", &dir, "{delay: 2s}"), "picky.yaml")
        .await
        .unwrap();
    // It fails where it was placed.
    let failed = eventually("the first allocation failed", D, || async {
        let j = c.job("picky", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .iter()
            .find(|a| a.status == ClientStatus::Failed)
            .cloned()
            .ok_or_else(|| format!("{:?}", j.allocations))
    })
    .await;
    // Only the other node may run it.
    let nodes = c.nodes().await.unwrap();
    let other = nodes.iter().find(|n| n.id != failed.node_id).unwrap();
    std::fs::write(dir.join(format!("good-{}", other.id)), "").unwrap();

    let j = wait_running(&c, "picky", 1, D).await;
    let r = j
        .allocations
        .iter()
        .find(|a| a.status == ClientStatus::Running)
        .unwrap();
    assert_eq!(r.node_id, other.id, "rescheduled onto the other node");
    assert_eq!(
        (r.index, r.previous.as_deref()),
        (0, Some(failed.id.as_str()))
    );
    assert_eq!(r.reschedules.len(), 1, "{r:?}");
    let ev = &r.reschedules[0];
    assert_eq!(
        (ev.prev_alloc.as_str(), ev.prev_node.as_str(), ev.delay_ms),
        (failed.id.as_str(), failed.node_id.as_str(), 2_000)
    );
    let failed_at = failed
        .tasks
        .values()
        .filter_map(|t| t.finished_at)
        .max()
        .unwrap();
    assert!(
        ev.at >= failed_at + 2_000,
        "placed {} ms after the failure, before the 2 s delay",
        ev.at.saturating_sub(failed_at)
    );
    eprintln!(
        "[{test}] failed on {} , rescheduled to {} {} ms after the failure (delay 2 s)",
        failed.node,
        r.node,
        ev.at - failed_at
    );
    // The failed one stays as it was, for its history.
    let f = c.alloc(&failed.id).await.unwrap();
    assert_eq!(f.status, ClientStatus::Failed);
    let q = corral_client::EventQuery {
        topics: vec!["allocation".into()],
        ..Default::default()
    };
    let events = c.events(&q).await.unwrap();
    let e = events
        .iter()
        .find(|e| e.kind.as_str() == "allocation.rescheduled")
        .expect("an allocation.rescheduled event");
    assert!(
        e.message.contains(&other.name) && e.message.contains(&failed.node),
        "{}",
        e.message
    );
    // It really runs there: one process of the job, on the good node.
    assert_eq!(cl.job_procs("picky").len(), 1);
    stop_and_wait(&c, "picky", D).await;

    // `attempts: 0`: the failed allocation keeps its slot.
    c.submit(
        &picky_job(
            "never",
            Path::new("/nonexistent"),
            "{attempts: 0, delay: 1s}",
        ),
        "never.yaml",
    )
    .await
    .unwrap();
    eventually("the allocation failed", D, || async {
        let j = c.job("never", None).await.map_err(|e| e.to_string())?;
        if j.allocations
            .iter()
            .any(|a| a.status == ClientStatus::Failed)
        {
            Ok(())
        } else {
            Err(format!("{:?}", j.allocations))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let j = c.job("never", None).await.unwrap();
    assert_eq!(j.allocations.len(), 1, "{:?}", j.allocations);
}
