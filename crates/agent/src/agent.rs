//! The node agent: register, heartbeat, watch this node's allocations with
//! a blocking query, run each through an [`AllocRunner`], and report their
//! observed state back. After a restart it adopts the allocations it finds
//! on disk before it asks the server anything, so nothing runs twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_client::Client;
use corral_types::api::AllocUpdates;
use corral_types::{AllocUpdate, Allocation, DesiredStatus, DriverKind, NodeRegistration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alloc_runner::{AllocRunner, RunnerEnv};
use crate::config::AgentConfig;
use crate::driver::Driver;
use crate::driver::exec::ExecDriver;
use crate::layout::{AllocRecord, NodeDir};
use crate::metrics::TaskMetrics;
pub use crate::node::{Drivers, Shared};
use crate::{fingerprint, http};

/// How an agent's user points it at the server (named in its errors).
pub const SERVER_ADDR_SETTING: &str =
    "set --server or CORRAL_SERVER (or `server` in the [agent] config) to the server's address";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for the agent's HTTP endpoint: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no task driver works on this node: {0}")]
    NoDrivers(String),
    #[error("the agent's token is empty: set the cluster's API token, or none")]
    EmptyToken,
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// An empty token would guard the agent's endpoint with nothing a client
/// can send: refused before anything starts.
fn check_token(config: &AgentConfig) -> Result<(), AgentError> {
    if config.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(AgentError::EmptyToken);
    }
    Ok(())
}

/// A running agent.
pub struct Agent {
    pub node_id: String,
    /// The address the server reaches this agent at.
    pub address: String,
    /// Its task metrics (`corral dev` serves them on the API's `/metrics`).
    pub metrics: Arc<TaskMetrics>,
    /// Where the node DNS listens, when it is on.
    pub dns_addr: Option<std::net::SocketAddr>,
    tasks: TaskTracker,
}

impl Agent {
    /// Start the agent: detect the node, bind the HTTP endpoint, adopt
    /// what runs, then register and follow the server until `shutdown`.
    pub async fn start(
        config: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<Agent, AgentError> {
        check_token(&config)?;
        let drivers = default_drivers(&config).await?;
        Self::start_with(config, drivers, shutdown).await
    }

    pub async fn start_with(
        config: AgentConfig,
        drivers: Drivers,
        shutdown: CancellationToken,
    ) -> Result<Agent, AgentError> {
        check_token(&config)?;
        let dir_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| AgentError::DataDir { path, source }
        };
        let dirs = NodeDir::new(&config.data_dir);
        std::fs::create_dir_all(dirs.allocs()).map_err(dir_err(&config.data_dir))?;
        let node_id = dirs.node_id().map_err(dir_err(&config.data_dir))?;
        let facts = fingerprint::detect();
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AgentError::Listen {
                addr: config.http_addr,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| AgentError::Listen {
            addr: config.http_addr,
            source,
        })?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let node_name = config.name.clone().unwrap_or(facts.hostname);
        let metrics = Arc::new(TaskMetrics::new(&node_name));
        let volumes = match &config.volumes {
            Some(vc) => {
                let client = Client::new(&config.server, config.token.clone())
                    .with_addr_setting(SERVER_ADDR_SETTING);
                let v = crate::volumes::NodeVolumes::new(
                    vc,
                    client,
                    config.token.clone(),
                    node_id.clone(),
                )
                .map_err(dir_err(&vc.dir))?;
                tracing::info!(dir = %vc.dir.display(), provider = %v.kind_name(), "volumes on");
                Some(Arc::new(v))
            }
            None => None,
        };
        let shared =
            Arc::new(Shared::new(dirs.clone(), metrics.clone()).with_volumes(volumes.clone()));
        let tasks = TaskTracker::new();
        {
            let app = http::router(shared.clone(), config.token.clone());
            let sd = shutdown.clone();
            tasks.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { sd.cancelled().await })
                    .await;
            });
        }
        let mut resources = facts.resources;
        resources.disk.0 = volumes.as_ref().map_or(0, |v| v.capacity());
        resources.cpu.0 = resources.cpu.0.saturating_sub(config.reserved_cpu_millis);
        resources.memory.0 = resources
            .memory
            .0
            .saturating_sub(config.reserved_memory_bytes);
        let mut driver_names: Vec<String> =
            drivers.keys().map(|k| k.as_str().to_string()).collect();
        driver_names.sort();
        let registration = NodeRegistration {
            id: node_id.clone(),
            name: node_name,
            address: address.clone(),
            resources,
            attributes: facts.attributes,
            labels: config.labels.clone(),
            drivers: driver_names,
            port_range: config.port_range,
        };
        let client = Client::new(&config.server, config.token.clone())
            .with_addr_setting(SERVER_ADDR_SETTING);
        // Before any allocation runs: their pods are given its address.
        let dns = match &config.dns {
            Some(dns) => match crate::dns::NodeDns::start(
                dns,
                Arc::new(client.clone()),
                config.watch_wait,
                &tasks,
                shutdown.clone(),
            ) {
                Ok(d) => Some(d),
                Err(e) if dns.optional => {
                    tracing::warn!(error = %e, "running without node DNS; pods keep the runtime's default resolver");
                    None
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let env = Arc::new(RunnerEnv {
            shared: shared.clone(),
            drivers,
            updates: updates_tx,
            node_id: node_id.clone(),
            pod_dns: dns.as_ref().and_then(|d| d.pod_dns.clone()),
        });
        let runners_cancel = CancellationToken::new();
        let runners = TaskTracker::new();
        // Adopt what a previous agent process left running.
        let mut adopted = HashMap::new();
        let (records, unreadable) = dirs.records();
        clear_unreadable(&env.drivers, unreadable).await;
        let keep: HashSet<String> = records.iter().map(|r| r.alloc.id.clone()).collect();
        for d in env.drivers.values() {
            match d.remove_orphans(&node_id, &keep).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(driver = %d.kind(), removed = n, "removed orphans no allocation wants")
                }
                Err(e) => tracing::warn!(driver = %d.kind(), error = %e, "cannot remove orphans"),
            }
        }
        // Their runners start at the first answer from the server: a task
        // that died while the agent was away must not be restarted if its
        // allocation was replaced meanwhile (node marked down). Until then
        // what still runs keeps running, unwatched.
        for rec in records {
            adopted.insert(rec.alloc.id.clone(), rec);
        }
        let loop_ = NodeLoop {
            config,
            client,
            registration,
            env,
            runners: HashMap::new(),
            adopt: adopted,
            finished: dirs.finished().into_iter().collect(),
            tracker: runners,
            runners_cancel,
            shutdown: shutdown.clone(),
        };
        tasks.spawn(crate::logs::upkeep(
            shared.clone(),
            loop_.env.drivers.values().cloned().collect(),
            node_id.clone(),
            loop_.config.log_check_interval,
            loop_.config.log_retention,
            shutdown.clone(),
        ));
        tasks.spawn(report(
            loop_.client.clone(),
            node_id.clone(),
            updates_rx,
            shutdown.clone(),
        ));
        tasks.spawn(push_usage(
            loop_.client.clone(),
            node_id.clone(),
            metrics.clone(),
            loop_.config.stats_interval,
            shutdown.clone(),
        ));
        if let Some(v) = volumes {
            tasks.spawn(crate::volumes::upkeep::run(
                v,
                std::time::Duration::from_secs(30),
                shutdown.clone(),
            ));
        }
        tasks.spawn(loop_.run());
        tasks.close();
        Ok(Agent {
            node_id,
            address,
            metrics,
            dns_addr: dns.map(|d| d.addr),
            tasks,
        })
    }

    /// Wait until the agent has shut down.
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

/// Allocations whose record cannot be read cannot be adopted: what runs
/// of them is stopped, and their last report says why (the server learns
/// it once it lists them).
async fn clear_unreadable(drivers: &Drivers, dirs: Vec<crate::layout::AllocDir>) {
    for dir in dirs {
        let Some(id) = dir.id().map(str::to_string) else {
            continue;
        };
        for d in drivers.values() {
            if let Err(e) = d.clear_alloc(&id).await {
                tracing::warn!(alloc = %id, driver = %d.kind(), error = %e, "cannot clear an allocation whose record is unreadable");
            }
        }
        let last = AllocUpdate { volume_sync: Default::default(),
            id: id.clone(),
            client: corral_types::ClientStatus::Failed,
            tasks: Default::default(),
            message: "its record on the node was unreadable after an agent restart; what ran of it was stopped".into(),
            checks: Default::default(),
            health: None,
        };
        if let Err(e) = dir.save_final(&last).and_then(|()| dir.forget()) {
            tracing::warn!(alloc = %id, error = %e, "cannot retire an allocation whose record is unreadable");
        }
    }
}

/// The drivers whose fingerprint passes on this node.
pub async fn default_drivers(config: &AgentConfig) -> Result<Drivers, AgentError> {
    let mut drivers: Drivers = HashMap::new();
    let mut why = Vec::new();
    for name in &config.drivers {
        let d: Arc<dyn Driver> = match DriverKind::parse(name) {
            Some(DriverKind::Exec) => match ExecDriver::detect() {
                Ok(d) => Arc::new(d.with_capture_exe(config.capture_exe.clone())),
                Err(e) => {
                    why.push(format!("exec: {e}"));
                    continue;
                }
            },
            Some(DriverKind::Container) => match container_driver(config).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "container driver not available");
                    why.push(format!("container: {e}"));
                    continue;
                }
            },
            None => {
                why.push(format!("{name}: unknown driver (exec or container)"));
                continue;
            }
        };
        match d.fingerprint().await {
            Ok(()) => {
                drivers.insert(d.kind(), d);
            }
            Err(e) => {
                tracing::warn!(driver = %name, error = %e, "driver not available");
                why.push(e.to_string());
            }
        }
    }
    if drivers.is_empty() {
        return Err(AgentError::NoDrivers(why.join("; ")));
    }
    Ok(drivers)
}

/// The container driver on the node's containerd, with the sandbox image
/// made and imported when it is missing.
pub async fn container_driver(config: &AgentConfig) -> Result<Arc<dyn Driver>, String> {
    use crate::driver::cri::{CriConfig, CriDriver};
    let socket = &config.cri_socket;
    if !crate::containerd::probe(socket).await {
        return Err(format!(
            "no CRI runtime answers at {}: start containerd (apt-get install containerd runc containernetworking-plugins) or use `corral dev`, which starts a private one",
            socket.display()
        ));
    }
    let mut cfg = CriConfig::new(socket.clone());
    cfg.sandbox_image = Some(config.sandbox_image.clone());
    let driver = CriDriver::connect(cfg).await.map_err(|e| e.to_string())?;
    let present = driver
        .ensure_image_present(&config.sandbox_image)
        .await
        .map_err(|e| e.to_string())?;
    if !present && config.sandbox_image == crate::image::PAUSE_IMAGE {
        let busybox = std::path::Path::new(crate::image::BUSYBOX);
        let tar = crate::image::build_into(
            &crate::image::pause_image(busybox),
            &NodeDir::new(&config.data_dir).images(),
        )
        .map_err(|e| {
            format!("cannot build the sandbox image (is busybox-static installed?): {e}")
        })?;
        crate::containerd::import_image(socket, &tar)
            .await
            .map_err(|e| format!("cannot import the sandbox image: {e}"))?;
        tracing::info!(image = %config.sandbox_image, "built and imported the sandbox image");
    } else if !present {
        return Err(format!(
            "the sandbox image {} is not on this node; import it with `corral image import`",
            config.sandbox_image
        ));
    }
    Ok(Arc::new(driver))
}

struct NodeLoop {
    config: AgentConfig,
    client: Client,
    registration: NodeRegistration,
    env: Arc<RunnerEnv>,
    runners: HashMap<String, AllocRunner>,
    /// Allocations found on disk, adopted at the first sync.
    adopt: HashMap<String, AllocRecord>,
    /// Allocations that ended on this node, with their last report: never
    /// run again, and their report is sent again while the server has not
    /// taken it.
    finished: HashMap<String, AllocUpdate>,
    tracker: TaskTracker,
    runners_cancel: CancellationToken,
    shutdown: CancellationToken,
}

impl NodeLoop {
    async fn run(mut self) {
        let ttl = self.register().await;
        let node = self.registration.id.clone();
        let reconnected = Arc::new(tokio::sync::Notify::new());
        // Beats go on until the runners finished (a stop in progress at
        // shutdown is finished and reported; the node must not go down
        // meanwhile).
        let beats_stop = CancellationToken::new();
        let beats = tokio::spawn(heartbeat(
            self.client.clone(),
            self.registration.clone(),
            ttl,
            reconnected.clone(),
            beats_stop.clone(),
        ));
        let mut index = 0;
        // The server was unreachable: when it answers again (a restart,
        // maybe having forgotten the TTLs it handed out), beat soon rather
        // than at the next TTL/2.
        let mut unreachable = false;
        loop {
            let wait = self.config.watch_wait;
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = self.client.node_allocations(&node, index, wait) => match r {
                    Ok(resp) => {
                        if std::mem::take(&mut unreachable) {
                            reconnected.notify_one();
                        }
                        let new = resp.index;
                        if new != index {
                            self.sync(resp);
                        }
                        index = new;
                    }
                    Err(e) if e.is_not_found() => {
                        self.register().await;
                        index = 0;
                    }
                    Err(e) => {
                        unreachable = true;
                        tracing::warn!(error = %e, "cannot fetch allocations; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = self.shutdown.cancelled() => break,
                        }
                    }
                },
            }
        }
        if self.config.stop_on_shutdown {
            for r in self.runners.values() {
                r.stop_now();
            }
        } else {
            // Runners detach and leave their tasks running: a restarted
            // agent adopts them.
            self.runners_cancel.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
        beats_stop.cancel();
        let _ = beats.await;
    }

    /// Register until it works (or shutdown); returns the heartbeat TTL.
    async fn register(&self) -> Duration {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.client.register(&self.registration).await {
                Ok(r) => {
                    tracing::info!(node = %self.registration.id, "registered with the server");
                    return Duration::from_millis(r.heartbeat_ttl_ms);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => return Duration::from_secs(10),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The allocations still stopping on this node that `alloc` must wait
    /// for (Nomad's previous-allocation watcher, widened to ports): the one
    /// it replaces, and any holding a host port it needs (a job stopped and
    /// run again, a node back with what it ran before). A canary's old
    /// allocation is not stopping: canaries do not wait.
    fn stopping_in_the_way(&self, alloc: &Allocation) -> Vec<tokio::sync::watch::Receiver<bool>> {
        let ports: HashSet<u16> = alloc.ports.values().copied().collect();
        self.runners
            .iter()
            .filter(|(_, r)| r.is_stopping() && !r.is_finished())
            .filter(|(id, r)| {
                alloc.previous.as_deref() == Some(id.as_str())
                    || r.ports().iter().any(|p| ports.contains(p))
            })
            .map(|(_, r)| r.finished())
            .collect()
    }

    /// Forget the runners that ended, keeping how each ended.
    fn reap(&mut self) {
        let ended: Vec<String> = self
            .runners
            .iter()
            .filter(|(_, r)| r.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.runners.remove(&id);
            // No last report: it was stopped before it ran here.
            let last = self
                .env
                .shared
                .alloc_dir(&id)
                .load_final()
                .unwrap_or_else(|| stopped_before_start(&id));
            self.finished.insert(id, last);
        }
    }

    /// Make the runners match the server's view of this node.
    fn sync(&mut self, resp: corral_types::api::NodeAllocations) {
        self.reap();
        // First answer since start: adopt what the previous agent process
        // ran; what the server no longer wants, or what had ended here
        // when the agent died (its last report kept), is adopted only to
        // be stopped and cleaned up.
        for (id, rec) in std::mem::take(&mut self.adopt) {
            let ended = self.env.shared.alloc_dir(&id).load_final().is_some();
            let wanted = !ended
                && resp
                    .allocations
                    .iter()
                    .any(|a| a.id == id && a.desired == DesiredStatus::Run);
            tracing::info!(alloc = %id, wanted, "adopting allocation from disk");
            let runner = AllocRunner::spawn(
                &self.tracker,
                self.env.clone(),
                rec.alloc,
                rec.group,
                true,
                self.runners_cancel.child_token(),
                Vec::new(),
            );
            if !wanted {
                runner.stop();
            }
            self.runners.insert(id, runner);
        }
        // Stops first, so that what starts next knows what is stopping.
        let listed: HashSet<&str> = resp.allocations.iter().map(|a| a.id.as_str()).collect();
        // Anything we run that the server no longer lists was replaced
        // (node lost) or garbage-collected: stop it.
        for (id, r) in &self.runners {
            if !listed.contains(id.as_str()) {
                tracing::info!(alloc = %id, "allocation no longer wanted here: stopping it");
                r.stop();
            }
        }
        for alloc in resp
            .allocations
            .iter()
            .filter(|a| a.desired == DesiredStatus::Stop)
        {
            match self.runners.get(&alloc.id) {
                Some(r) => r.stop(),
                // Ended here already, or never ran here: say so (again) if
                // the server has not taken it, so it stops waiting.
                None if !alloc.client.is_terminal() => {
                    let last = self
                        .finished
                        .get(&alloc.id)
                        .cloned()
                        .unwrap_or_else(|| stopped_before_start(&alloc.id));
                    let _ = self.env.updates.send(last);
                }
                None => {}
            }
        }
        let runs: Vec<Allocation> = resp
            .allocations
            .iter()
            .filter(|a| a.desired == DesiredStatus::Run)
            .cloned()
            .collect();
        for alloc in runs {
            let id = alloc.id.clone();
            if let Some(r) = self.runners.get(&id) {
                r.update(alloc);
                continue;
            }
            // It ended here: it never runs a second time. The server may
            // not have its last report yet (a kill lost it).
            if let Some(last) = self.finished.get(&id) {
                if !alloc.client.is_terminal() {
                    let _ = self.env.updates.send(last.clone());
                }
                continue;
            }
            let Some(job) = resp
                .jobs
                .iter()
                .find(|j| j.name == alloc.job && j.version == alloc.job_version)
            else {
                tracing::error!(alloc = %id, "server sent no job spec for the allocation");
                continue;
            };
            let Some(group) = job
                .spec
                .groups
                .iter()
                .find(|g| g.name == alloc.group)
                .cloned()
            else {
                tracing::error!(alloc = %id, group = %alloc.group, "group missing from the job spec");
                continue;
            };
            let waits = self.stopping_in_the_way(&alloc);
            let runner = AllocRunner::spawn(
                &self.tracker,
                self.env.clone(),
                alloc,
                group,
                false,
                self.runners_cancel.child_token(),
                waits,
            );
            self.runners.insert(id, runner);
        }
        self.finished.retain(|id, _| listed.contains(id.as_str()));
    }
}

/// The report of an allocation stopped before it ran on this node.
fn stopped_before_start(id: &str) -> AllocUpdate {
    AllocUpdate {
        volume_sync: Default::default(),
        id: id.to_string(),
        client: corral_types::ClientStatus::Complete,
        tasks: Default::default(),
        message: "stopped before it started on this node".into(),
        checks: Default::default(),
        health: None,
    }
}

/// Beat within the TTL the server hands out; register again when the
/// server no longer knows us (it marked us down, or lost its state). A
/// failed beat is retried within a second or two, not a TTL/2 later; after
/// the server was unreachable, the next beat comes within a few seconds,
/// staggered by node so a restarted server is not hit by every node at
/// once.
async fn heartbeat(
    client: Client,
    reg: NodeRegistration,
    mut ttl: Duration,
    reconnected: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut next = ttl / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = reconnected.notified() => {
                tokio::select! {
                    _ = tokio::time::sleep(stagger(&reg.id, (ttl / 2).min(RECONNECT_BEAT_WITHIN))) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            _ = shutdown.cancelled() => return,
        }
        let r = match client.heartbeat(&reg.id).await {
            Err(e) if e.is_not_found() => {
                tracing::warn!(
                    "the server does not know this node (marked down?): registering again"
                );
                client.register(&reg).await
            }
            r => r,
        };
        match r {
            Ok(r) => {
                ttl = Duration::from_millis(r.heartbeat_ttl_ms.max(200));
                next = ttl / 2;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                next = (ttl / 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// How soon after the server is back a node beats (staggered within it).
const RECONNECT_BEAT_WITHIN: Duration = Duration::from_secs(5);

/// A delay in `[0, window)` that is the same for a node each time and
/// spread over nodes (FNV-1a of its id).
fn stagger(node: &str, window: Duration) -> Duration {
    let h = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(h % ms)
}

/// How long after shutdown the last reports may take to reach the server.
const FINAL_REPORT_WITHIN: Duration = Duration::from_secs(10);

/// Send observed state to the server in batches; keep the newest per
/// allocation and retry until it is accepted. After `shutdown` it goes on
/// until the runners are gone (their channel closes: a stop finished at
/// shutdown is reported), for at most [`FINAL_REPORT_WITHIN`] once they
/// are.
async fn report(
    client: Client,
    node: String,
    mut rx: mpsc::UnboundedReceiver<AllocUpdate>,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<String, AllocUpdate> = HashMap::new();
    // Set once the runners are gone: the last moment to try.
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(u) => {
                    pending.insert(u.id.clone(), u);
                }
                None => return,
            }
        }
        // Gather what arrives in the next moment into the same request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(u) = rx.try_recv() {
            pending.insert(u.id.clone(), u);
        }
        let batch = AllocUpdates {
            updates: pending.values().cloned().collect(),
        };
        match client.update_allocations(&node, &batch).await {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot report allocation status; retrying");
                if shutdown.is_cancelled() && rx.is_closed() {
                    let at = *give_up
                        .get_or_insert_with(|| tokio::time::Instant::now() + FINAL_REPORT_WITHIN);
                    if tokio::time::Instant::now() >= at {
                        tracing::warn!(
                            n = pending.len(),
                            "shutting down with reports the server did not take"
                        );
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Push the running tasks' usage to the server every `every`; nothing
/// while no task runs (one empty push tells the server the last one
/// stopped). A failed push is not retried: the next one replaces it.
async fn push_usage(
    client: Client,
    node: String,
    metrics: Arc<TaskMetrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut server_has_tasks = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let tasks = metrics.usage().await;
        if tasks.is_empty() && !server_has_tasks {
            continue;
        }
        let empty = tasks.is_empty();
        match client
            .push_stats(&node, &corral_types::api::NodeStats { tasks })
            .await
        {
            Ok(()) => server_has_tasks = !empty,
            Err(e) => tracing::debug!(error = %e, "cannot push task usage"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `token = ""` would leave nothing anyone can authenticate with: the
    /// agent refuses to start, before it looks for drivers or binds.
    #[tokio::test]
    async fn an_empty_token_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = AgentConfig::new("http://127.0.0.1:1", dir.path().to_path_buf());
        config.token = Some(" ".into());
        let r = Agent::start(config, CancellationToken::new()).await;
        assert!(matches!(r, Err(AgentError::EmptyToken)), "{:?}", r.err());
    }
}
