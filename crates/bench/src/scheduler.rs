//! The scheduler simulator: Nomad's C1M scenario on two cores. N simulated
//! nodes in five classes register and heartbeat at the real interval; M
//! jobs of K allocations, each constrained to one class, are submitted at
//! once; the real store, broker, workers and plan applier place them; the
//! simulated agents acknowledge each allocation as running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corral_server::{Core, Server, ServerConfig};
use corral_store::{MemoryStore, SqliteStore, StateStore, Write};
use corral_types::units::{Bytes, MilliCpu, Millis};
use corral_types::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Sqlite,
    Memory,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub nodes: usize,
    pub jobs: usize,
    pub allocs_per_job: u32,
    pub classes: usize,
    pub store: StoreKind,
    pub workers: usize,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 10_000,
            jobs: 1_000,
            allocs_per_job: 100,
            classes: 5,
            store: StoreKind::Sqlite,
            workers: 2,
            timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub placements: u64,
    /// From the first submission to the last placement committed.
    pub place_seconds: f64,
    pub placements_per_second: f64,
    /// Placement rate in each tenth of the run (flat = no slowdown as the
    /// cluster fills).
    pub rate_by_decile: Vec<f64>,
    /// Queue wait included (every job is submitted at once).
    pub eval_p50_ms: f64,
    pub eval_p99_ms: f64,
    /// From a worker taking the evaluation to its plan committed.
    pub eval_processing_p50_ms: f64,
    pub eval_processing_p99_ms: f64,
    pub plan_apply_p50_ms: f64,
    pub plan_apply_p99_ms: f64,
    pub plans_refused: u64,
    pub first_running_seconds: f64,
    pub running_95_seconds: f64,
    pub running_100_seconds: f64,
    pub register_seconds: f64,
    pub peak_rss_bytes: u64,
    pub store_bytes: u64,
}

impl Report {
    pub fn render(&self) -> String {
        let s = &self.scenario;
        let mut out = format!("{:.0} placements/s\n", self.placements_per_second);
        out += &format!(
            "  scenario: {} nodes in {} classes, {} jobs x {} allocations, {:?} store, {} workers\n",
            s.nodes, s.classes, s.jobs, s.allocs_per_job, s.store, s.workers
        );
        out += &format!(
            "  placed {} in {:.2}s; rate by tenth of the run: {}\n",
            self.placements,
            self.place_seconds,
            self.rate_by_decile
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        out += &format!(
            "  evaluation processing p50 {:.1} ms, p99 {:.1} ms (with queueing behind {} simultaneous submissions: p50 {:.0} ms, p99 {:.0} ms)\n",
            self.eval_processing_p50_ms,
            self.eval_processing_p99_ms,
            s.jobs,
            self.eval_p50_ms,
            self.eval_p99_ms
        );
        out += &format!(
            "  plan apply p50 {:.2} ms, p99 {:.2} ms; {} plans partly refused\n",
            self.plan_apply_p50_ms, self.plan_apply_p99_ms, self.plans_refused
        );
        out += &format!(
            "  running: first after {:.2}s, 95% after {:.2}s, 100% after {:.2}s\n",
            self.first_running_seconds, self.running_95_seconds, self.running_100_seconds
        );
        out += &format!(
            "  {} nodes registered in {:.2}s; peak memory {:.0} MiB; store on disk {:.1} MiB\n",
            s.nodes,
            self.register_seconds,
            self.peak_rss_bytes as f64 / (1 << 20) as f64,
            self.store_bytes as f64 / (1 << 20) as f64
        );
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the server: {0}")]
    Server(#[from] corral_server::ServerError),
    #[error("store: {0}")]
    Store(#[from] corral_store::StoreError),
    #[error("benchmark timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

fn node(i: usize, classes: usize, now: u64) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("class".to_string(), format!("c{}", i % classes));
    let mut n = Node {
        id: format!("sim-{i:06}"),
        name: format!("sim-{i}"),
        address: "sim://".into(),
        status: NodeStatus::Ready,
        eligible: true,
        draining: false,
        drain_deadline: None,
        resources: Resources {
            disk: Default::default(),
            cpu: MilliCpu(4000),
            memory: Bytes(16 << 30),
        },
        attributes: BTreeMap::from([("os".to_string(), "linux".to_string())]),
        labels,
        drivers: vec!["exec".into()],
        port_range: (20000, 32000),
        last_heartbeat: now,
        registered_at: now,
        down_since: None,
        class: 0,
        create_index: 0,
        modify_index: 0,
    };
    n.class = n.computed_class();
    n
}

fn job_spec(j: usize, s: &Scenario) -> JobSpec {
    JobSpec {
        name: format!("job-{j:05}"),
        groups: vec![GroupSpec {
            reschedule: Default::default(),
            volumes: Default::default(),
            name: "g".into(),
            count: s.allocs_per_job,
            restart: RestartPolicy::default(),
            constraints: vec![Constraint {
                attr: "node.labels.class".into(),
                op: ConstraintOp::Eq,
                values: vec![format!("c{}", j % s.classes)],
            }],
            spread: None,
            update: UpdatePolicy::default(),
            network: NetworkMode::Bridge,
            services: Vec::new(),
            tasks: vec![TaskSpec {
                name: "t".into(),
                driver: DriverKind::Exec,
                image: None,
                command: vec!["/bin/true".into()],
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                resources: alloc_resources(s),
                ports: BTreeMap::new(),
                kill_timeout: Millis::from_secs(5),
                restart: None,
                pull_policy: PullPolicy::IfNotPresent,
                security: SecuritySpec::default(),
                checks: Vec::new(),
                logs: Default::default(),
            }],
        }],
        update: UpdatePolicy::default(),
    }
}

/// Resources per allocation: 100m and 64 MiB, smaller when the scenario
/// would not fit otherwise, so the cluster ends at most ~60% full.
fn alloc_resources(s: &Scenario) -> Resources {
    let total = (s.jobs as u64 * s.allocs_per_job as u64).max(1);
    let cpu = (4000 * s.nodes as u64 * 6 / 10 / total).clamp(1, 100);
    let memory = ((16u64 << 30) * s.nodes as u64 * 6 / 10 / total).clamp(1 << 20, 64 << 20);
    Resources {
        disk: Default::default(),
        cpu: MilliCpu(cpu),
        memory: Bytes(memory),
    }
}

pub async fn run(s: Scenario) -> Result<Report, BenchError> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.workers = s.workers;
    let store: Box<dyn corral_store::Store> = match s.store {
        StoreKind::Sqlite => Box::new(SqliteStore::open(&dir.path().join("state.db"))?),
        StoreKind::Memory => Box::new(MemoryStore::new()),
    };
    let shutdown = CancellationToken::new();
    let server = Server::start_with(config, StateStore::open(store)?, shutdown.clone()).await?;
    let core = server.core.clone();
    let waiter = tokio::spawn(server.wait());

    // Register the fleet (batched: registration is not what is measured).
    let started = Instant::now();
    let now = corral_server::core::now_ms();
    let ids: Vec<String> = (0..s.nodes).map(|i| format!("sim-{i:06}")).collect();
    for chunk in (0..s.nodes).collect::<Vec<_>>().chunks(1000) {
        let writes = chunk
            .iter()
            .map(|i| Write::Node(node(*i, s.classes, now)))
            .collect();
        core.commit(writes).await?;
    }
    for id in &ids {
        core.heartbeats.beat(id);
    }
    let register_seconds = started.elapsed().as_secs_f64();

    let stop = CancellationToken::new();
    let beats = tokio::spawn(heartbeat_fleet(core.clone(), ids.clone(), stop.clone()));
    let total = s.jobs as u64 * s.allocs_per_job as u64;
    let t0 = Instant::now();
    let acks = tokio::spawn(ack_fleet(core.clone(), total, t0, stop.clone()));

    // Submit every job, 64 submissions in flight (the API's shape).
    let subs = futures::stream::iter((0..s.jobs).map(|j| {
        let core = core.clone();
        let spec = job_spec(j, &s);
        async move { corral_server::ops::jobs::submit(&core, vec![spec]).await }
    }))
    .buffer_unordered(64);
    use futures::StreamExt;
    let placed_before = core.metrics.placements.load(Ordering::Relaxed);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let sampler = {
        let core = core.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let placed = core.metrics.placements.load(Ordering::Relaxed) - placed_before;
                out.push((t0.elapsed().as_secs_f64(), placed));
                if placed >= total || stop.is_cancelled() {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let results: Vec<_> = subs.collect().await;
    for r in results {
        r?;
    }
    let deadline = t0 + s.timeout;
    loop {
        let placed = core.metrics.placements.load(Ordering::Relaxed) - placed_before;
        if placed >= total {
            break;
        }
        if Instant::now() > deadline {
            stop.cancel();
            return Err(BenchError::Timeout(
                s.timeout,
                format!("{placed} of {total} placed"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Ok(v) = sampler.await {
        samples = v;
    }
    let place_seconds = samples
        .last()
        .map(|(t, _)| *t)
        .unwrap_or_else(|| t0.elapsed().as_secs_f64());
    let running = tokio::time::timeout(s.timeout, acks).await;
    stop.cancel();
    let _ = beats.await;
    let (first, p95, p100) = match running {
        Ok(Ok(v)) => v,
        _ => {
            return Err(BenchError::Timeout(
                s.timeout,
                "allocations not all acknowledged".into(),
            ));
        }
    };
    let m = &core.metrics;
    let report = Report {
        placements: total,
        place_seconds,
        placements_per_second: total as f64 / place_seconds.max(1e-9),
        rate_by_decile: deciles(&samples, total),
        eval_p50_ms: m.eval_latency.quantile(0.5).as_secs_f64() * 1e3,
        eval_p99_ms: m.eval_latency.quantile(0.99).as_secs_f64() * 1e3,
        eval_processing_p50_ms: m.eval_processing.quantile(0.5).as_secs_f64() * 1e3,
        eval_processing_p99_ms: m.eval_processing.quantile(0.99).as_secs_f64() * 1e3,
        plan_apply_p50_ms: m.plan_apply.quantile(0.5).as_secs_f64() * 1e3,
        plan_apply_p99_ms: m.plan_apply.quantile(0.99).as_secs_f64() * 1e3,
        plans_refused: m.plans_refused.load(Ordering::Relaxed),
        first_running_seconds: first,
        running_95_seconds: p95,
        running_100_seconds: p100,
        register_seconds,
        peak_rss_bytes: crate::proc::peak_rss(std::process::id()).unwrap_or(0),
        store_bytes: crate::proc::dir_bytes(dir.path()),
        scenario: s,
    };
    shutdown.cancel();
    let _ = waiter.await;
    Ok(report)
}

/// Placements per second in each tenth of the placements.
fn deciles(samples: &[(f64, u64)], total: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut prev = (0.0, 0u64);
    for d in 1..=10u64 {
        let target = total * d / 10;
        let Some(&(t, n)) = samples.iter().find(|(_, n)| *n >= target) else {
            break;
        };
        let dt = (t - prev.0).max(1e-3);
        out.push((n - prev.1) as f64 / dt);
        prev = (t, n);
    }
    out
}

/// Every node beats once per TTL/2, spread evenly over time, as agents do.
async fn heartbeat_fleet(core: Arc<Core>, ids: Vec<String>, stop: CancellationToken) {
    let tick = Duration::from_millis(100);
    let mut next = 0usize;
    loop {
        let period = core.heartbeats.ttl() / 2;
        let per_tick =
            ((ids.len() as f64) * tick.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
        for _ in 0..per_tick.max(1) {
            let id = &ids[next % ids.len()];
            next += 1;
            let _ = corral_server::ops::nodes::heartbeat(&core, id);
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The simulated agents: each new allocation is reported running by its
/// node (one update request per node per round, as agents batch).
/// Returns the times of the first, 95% and 100% running.
async fn ack_fleet(
    core: Arc<Core>,
    total: u64,
    t0: Instant,
    stop: CancellationToken,
) -> (f64, f64, f64) {
    let mut acked = 0u64;
    let mut first = None;
    let mut p95 = None;
    // Follow the event log from where we are (what `/v1/events` streams;
    // recent events are answered from memory) instead of rescanning every
    // allocation each round.
    let mut cursor = core.store.snapshot().event_span().last;
    while acked < total && !stop.is_cancelled() {
        let c = core.clone();
        let from = cursor;
        let events = tokio::task::spawn_blocking(move || c.store.events_after(from, 50_000))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let state = core.store.snapshot();
        let mut by_node: BTreeMap<String, Vec<AllocUpdate>> = BTreeMap::new();
        for ev in events {
            // An event is in memory a moment before its commit's state is
            // published: take it on the next round.
            if ev.state_index > state.index() {
                break;
            }
            cursor = cursor.max(ev.index);
            let (EventType::AllocationPlaced, Some(id)) = (ev.kind, ev.alloc.as_deref()) else {
                continue;
            };
            let Some(a) = state.alloc(id) else {
                continue;
            };
            if a.client == ClientStatus::Pending && a.desired == DesiredStatus::Run {
                by_node
                    .entry(a.node_id.clone())
                    .or_default()
                    .push(AllocUpdate {
                        volume_sync: Default::default(),
                        id: a.id.clone(),
                        client: ClientStatus::Running,
                        tasks: BTreeMap::new(),
                        message: String::new(),
                        checks: BTreeMap::new(),
                        // Simulated tasks are healthy at once (a real agent
                        // waits min_healthy_time).
                        health: a
                            .deployment_id
                            .is_some()
                            .then(|| corral_types::AllocHealth {
                                healthy: true,
                                at: a.created_at,
                                message: String::new(),
                            }),
                    });
            }
        }
        let n: u64 = by_node.values().map(|v| v.len() as u64).sum();
        let reports = by_node.into_iter().map(|(node, updates)| {
            let core = core.clone();
            async move { corral_server::ops::nodes::update_allocations(&core, &node, updates).await }
        });
        for r in futures::future::join_all(reports).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "simulated agent report failed");
            }
        }
        acked += n;
        let t = t0.elapsed().as_secs_f64();
        if n > 0 && first.is_none() {
            first = Some(t);
        }
        if p95.is_none() && acked * 100 >= total * 95 {
            p95 = Some(t);
        }
    }
    let t = t0.elapsed().as_secs_f64();
    (first.unwrap_or(t), p95.unwrap_or(t), t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run end to end: every allocation placed and acknowledged,
    /// each node within capacity, each job on its class.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_scenario_places_everything_within_capacity() {
        let s = Scenario {
            nodes: 50,
            jobs: 20,
            allocs_per_job: 10,
            ..Scenario::default()
        };
        let r = run(s).await.expect("runs");
        assert_eq!(r.placements, 200);
        assert!(r.placements_per_second > 0.0);
        assert!(r.running_100_seconds >= r.first_running_seconds);
        assert!(
            r.render()
                .lines()
                .next()
                .is_some_and(|l| l.ends_with("placements/s"))
        );
    }
}
