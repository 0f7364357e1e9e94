//! Node liveness. Heartbeats only touch memory (10,000 nodes beating must
//! not mean 10,000 disk writes); only a status change is written. A node
//! whose TTL plus grace passes is marked down, its allocations become lost
//! and their jobs get evaluations, which place replacements elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_store::{State, Write};
use corral_types::{EvalTrigger, NodeStatus};

use crate::ServerConfig;
use crate::ServerError;
use crate::core::{Core, now_ms};

pub struct Heartbeats {
    deadlines: Mutex<HashMap<String, Instant>>,
    min_ttl: Duration,
    per_second: f64,
    grace: Duration,
}

impl Heartbeats {
    pub fn new(config: &ServerConfig) -> Heartbeats {
        Heartbeats {
            deadlines: Mutex::new(HashMap::new()),
            min_ttl: config.heartbeat_min_ttl,
            per_second: config.max_heartbeats_per_second,
            grace: config.heartbeat_grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        match self.deadlines.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The TTL handed to agents: at least `min_ttl`, longer as the cluster
    /// grows so the server sees at most `per_second` heartbeats a second.
    pub fn ttl(&self) -> Duration {
        let nodes = self.lock().len();
        self.ttl_for(nodes)
    }

    /// The TTL for a cluster of `nodes`. Agents beat twice per TTL (at
    /// TTL/2, so one late beat is not a missed one): a TTL of
    /// `2 * nodes / per_second` keeps the server at `per_second`.
    fn ttl_for(&self, nodes: usize) -> Duration {
        let secs = 2.0 * nodes.max(1) as f64 / self.per_second;
        // A day at most: a rate that small is a typo, and deadlines stay
        // far from what an `Instant` can hold.
        let day = Duration::from_secs(86_400);
        let spread = Duration::try_from_secs_f64(secs).unwrap_or(day).min(day);
        self.min_ttl.max(spread)
    }

    /// How long after a change in the node count every agent has been
    /// handed a TTL computed without it (a beat comes every TTL/2 of a TTL
    /// for at most `nodes`), plus the grace.
    pub fn window(&self, nodes: usize) -> Duration {
        self.ttl_for(nodes) + self.grace
    }

    /// Record a heartbeat; returns the TTL the agent should beat within.
    pub fn beat(&self, node: &str) -> Duration {
        let ttl = self.ttl();
        self.lock()
            .insert(node.to_string(), Instant::now() + ttl + self.grace);
        ttl
    }

    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }

    /// After a server start every known ready node gets the failover grace
    /// on top of the longest TTL it may have been handed: the TTL for every
    /// node the store knows (down ones included, they may have counted).
    /// The map is still empty here, so `ttl()` would give the minimum, and
    /// agents told to beat every 60s would be marked down long before
    /// their next beat (Nomad resets every timer to its max TTL likewise).
    pub fn restore(&self, state: &State, config: &ServerConfig) {
        let ttl = self.ttl_for(state.nodes_iter().count());
        let until = Instant::now() + config.failover_grace + ttl + self.grace;
        let mut d = self.lock();
        for n in state.nodes_iter() {
            if n.status != NodeStatus::Down {
                d.insert(n.id.clone(), until);
            }
        }
    }

    /// The server itself did not run for `gap` (a stalled or suspended
    /// process, a VM paused): the nodes were not the ones missing, so every
    /// deadline moves by that much, plus the failover grace for agents to
    /// get their beats through.
    pub fn stalled(&self, gap: Duration, failover_grace: Duration) {
        let by = gap + failover_grace;
        for d in self.lock().values_mut() {
            *d += by;
        }
    }

    /// Nodes whose deadline passed.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

pub async fn monitor(core: Arc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut forced = std::collections::HashSet::new();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.shutdown.cancelled() => return,
        }
        // Ticks come every 500 ms; one much later means this process did
        // not run meanwhile, and no heartbeat could reach it.
        let gap = last.elapsed();
        last = Instant::now();
        if gap > STALL {
            tracing::warn!(?gap, "the server stalled: node deadlines move by as much");
            core.heartbeats.stalled(gap, core.config.failover_grace);
        }
        crate::ops::nodes::drain_tick(&core, &mut forced).await;
        for node in core.heartbeats.expired(Instant::now()) {
            core.heartbeats.forget(&node);
            if let Err(e) = mark_down(&core, &node).await {
                tracing::error!(node = %node, error = %e, "cannot mark node down");
            }
        }
    }
}

/// A gap between the monitor's ticks past which the server counts as
/// having stalled.
const STALL: Duration = Duration::from_secs(5);

/// Mark a node down and create an evaluation for every job with work on it.
pub async fn mark_down(core: &Arc<Core>, node_id: &str) -> Result<(), crate::ServerError> {
    let id = node_id.to_string();
    let now = now_ms();
    let (_, evals) = core
        .write(move |state, _| {
            let Some(node) = state.node_by_id(&id) else {
                return Ok::<_, ServerError>((vec![], vec![]));
            };
            if node.status == NodeStatus::Down {
                return Ok((vec![], vec![]));
            }
            let mut n = (**node).clone();
            n.status = NodeStatus::Down;
            n.down_since = Some(now);
            let mut writes = vec![Write::Node(n)];
            let evals = jobs_on_node(state, &id)
                .into_iter()
                .map(|job| Core::new_eval(&job, EvalTrigger::NodeUpdate, now))
                .collect::<Vec<_>>();
            writes.extend(evals.iter().cloned().map(Write::Eval));
            Ok((writes, evals))
        })
        .await?;
    tracing::warn!(node = %node_id, jobs = evals.len(), "node missed its heartbeat: marked down");
    core.enqueue(evals);
    Ok(())
}

/// Jobs with allocations that may still run on a node.
pub fn jobs_on_node(state: &State, node: &str) -> BTreeSet<String> {
    state
        .node_allocs(node)
        .into_iter()
        .filter(|a| a.may_run())
        .map(|a| a.job.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use corral_scheduler::testing::node;
    use corral_store::{MemoryStore, StateStore, Write};

    use crate::test_server::TestServer;

    /// 60 nodes at one heartbeat a second were handed a 60s TTL. A
    /// server started on their state (a restart right after a round of
    /// heartbeats) must not mark them down before they could beat again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_keeps_the_ttl_nodes_were_handed() {
        let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
        let nodes: Vec<Write> = (0..60)
            .map(|i| Write::Node(node(&format!("n{i}")).build()))
            .collect();
        store.commit(nodes).expect("nodes");
        let server = TestServer::start_on(store, |c| c.max_heartbeats_per_second = 1.0).await;
        let hb = &server.core.heartbeats;
        // 60 nodes beating every TTL/2 at one a second: a 120s TTL.
        assert_eq!(hb.ttl(), Duration::from_secs(120));
        // Failover grace 15s + TTL 120s + grace 5s: nobody expires before
        // the agents' next beat (at most 60s away) has had its time.
        let soon = Instant::now() + Duration::from_secs(130);
        assert!(hb.expired(soon).is_empty(), "{:?}", hb.expired(soon));
        assert_eq!(hb.expired(soon + Duration::from_secs(15)).len(), 60);
        server.stop().await;
    }

    /// Found by a hostile run: a server suspended for 30s marked every
    /// node down when it resumed. The stall moves every deadline.
    #[test]
    fn a_stalled_server_moves_every_deadline() {
        let c = crate::ServerConfig::new("/tmp/x".into());
        let hb = super::Heartbeats::new(&c);
        hb.beat("n1");
        let later = Instant::now() + Duration::from_secs(30);
        assert_eq!(hb.expired(later).len(), 1);
        hb.stalled(Duration::from_secs(30), c.failover_grace);
        assert!(hb.expired(later).is_empty());
        assert_eq!(hb.expired(later + Duration::from_secs(30)).len(), 1);
    }

    /// Found by a hostile run: agents beat at TTL/2, so a TTL of
    /// `nodes / rate` sent twice the configured rate. And settings that
    /// make healthy nodes flap are refused.
    #[test]
    fn the_ttl_keeps_the_configured_rate_and_bad_settings_are_refused() {
        let mut c = crate::ServerConfig::new("/tmp/x".into());
        c.max_heartbeats_per_second = 10.0;
        let hb = super::Heartbeats::new(&c);
        for nodes in [100usize, 1000, 10_000] {
            let ttl = hb.ttl_for(nodes).as_secs_f64();
            let rate = nodes as f64 / (ttl / 2.0);
            assert!((rate - 10.0).abs() < 0.01, "{nodes} nodes: {rate}/s");
        }
        c.max_heartbeats_per_second = 1e-12;
        let hb = super::Heartbeats::new(&c);
        assert_eq!(hb.ttl_for(10), Duration::from_secs(86_400), "capped");
        for (ttl, rate) in [
            (0, 50.0),
            (500, 50.0),
            (5000, 0.0),
            (5000, -5.0),
            (5000, f64::NAN),
        ] {
            let mut c = crate::ServerConfig::new("/tmp/x".into());
            c.heartbeat_min_ttl = Duration::from_millis(ttl);
            c.max_heartbeats_per_second = rate;
            assert!(c.validate().is_err(), "accepted ttl {ttl}ms, rate {rate}");
        }
    }
}
