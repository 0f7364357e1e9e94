//! A server restart does not mark healthy nodes down: after it, every node
//! gets at least the TTL it was handed before. In-process server and exec
//! agents (nothing runs on them).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use corral_testkit::{TestCluster, eventually};
use tokio::sync::Mutex;

/// One restart test at a time: each runs ten agents on two cores, and the
/// deadlines they check are a few seconds.
static ONE: Mutex<()> = Mutex::const_new(());

/// Polls the nodes until `until`; fails as soon as one is down.
async fn no_node_down_until(c: &corral_client::Client, until: Instant) {
    while Instant::now() < until {
        let nodes = c.nodes().await.unwrap();
        let down: Vec<&str> = nodes
            .iter()
            .filter(|n| n.status == "down")
            .map(|n| n.name.as_str())
            .collect();
        assert!(down.is_empty(), "marked down after the restart: {down:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ten nodes at one heartbeat a second are handed a 20s TTL and beat
/// every 10s. Before the fix, the restarted server gave each of them the
/// minimum (1s TTL + 1s failover grace + 1s grace) and marked down those
/// whose next beat was more than 3s away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_marks_no_healthy_node_down() {
    let _one = ONE.lock().await;
    let mut cluster = TestCluster::start_with(|c| {
        c.max_heartbeats_per_second = 1.0;
        c.heartbeat_min_ttl = Duration::from_secs(1);
        c.heartbeat_grace = Duration::from_secs(1);
        c.failover_grace = Duration::from_secs(1);
    })
    .await;
    for i in 0..10 {
        cluster
            .add_agent(&format!("node-{i}"), Default::default())
            .await;
    }
    let c = cluster.client.clone();
    eventually("ten ready nodes", Duration::from_secs(30), || async {
        let nodes = c.nodes().await.map_err(|e| e.to_string())?;
        let ready = nodes.iter().filter(|n| n.status == "ready").count();
        (ready == 10).then_some(()).ok_or(format!("{ready} ready"))
    })
    .await;
    // Every agent has been handed a longer TTL than the minimum (beats
    // come every TTL/2 of the previous answer).
    tokio::time::sleep(Duration::from_secs(6)).await;

    cluster.restart_server().await;
    let restarted = Instant::now();
    // Past every node's next beat (5s) and past the old, wrong deadline
    // (3s), with room to spare.
    no_node_down_until(&c, restarted + Duration::from_secs(9)).await;
    cluster.shutdown().await;
}

/// Found by a hostile run: a server restarted after down nodes were
/// garbage-collected computed a shorter TTL than the one it had handed
/// out, and marked every healthy node down. Here the restarted server is
/// told a higher heartbeat rate (the same effect: it believes a shorter
/// TTL was handed out). Agents beat within seconds of reaching a server
/// again, so none goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_beat_soon_after_the_server_comes_back() {
    let _one = ONE.lock().await;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let rate = Arc::new(AtomicU64::new(0.5f64.to_bits()));
    let r = rate.clone();
    let mut cluster = TestCluster::start_with(move |c| {
        c.max_heartbeats_per_second = f64::from_bits(r.load(Ordering::SeqCst));
        c.heartbeat_min_ttl = Duration::from_secs(1);
        c.heartbeat_grace = Duration::from_secs(1);
        c.failover_grace = Duration::from_secs(12);
    })
    .await;
    for i in 0..10 {
        cluster
            .add_agent(&format!("node-{i}"), Default::default())
            .await;
    }
    // 10 nodes at 0.5/s: a 40s TTL, a beat every 20s. Let them all have
    // it (registration answers came with shorter ones).
    tokio::time::sleep(Duration::from_secs(12)).await;
    rate.store(1000f64.to_bits(), Ordering::SeqCst);
    cluster.restart_server().await;
    let restarted = Instant::now();
    // The restarted server allows 12s + 1s + 1s; the old beat schedule
    // comes up to 20s later (about 3 nodes in 10 would be marked down),
    // a beat after reconnecting within about 6s.
    let c = cluster.client.clone();
    no_node_down_until(&c, restarted + Duration::from_secs(25)).await;
    cluster.shutdown().await;
}
