//! The `container` driver: containerd (or any CRI runtime) through the
//! Kubernetes CRI API.
//!
//! - one pod sandbox per allocation, created in `prepare_alloc` (network,
//!   port mappings, cgroup parent `/corral/pod<alloc id>`, CRI logs in
//!   `<alloc_dir>/logs/`, see [`crate::logs`]) and removed in
//!   `cleanup_alloc` with the cgroups runc leaves behind. `prepare_alloc`
//!   is idempotent (a ready sandbox is adopted), and every start checks
//!   that the sandbox is still ready: one whose pause process died (or
//!   that a host reboot left behind) is removed and a new one created, as
//!   the kubelet does; the containers of the dead one end with it;
//! - one container per task run, named after the task, its `attempt`
//!   counting the task's runs in the allocation (0, 1, 2, ...: the driver
//!   keeps the count, since each run's container is removed before the
//!   next starts); the image is pulled first when the pull policy or its
//!   absence says so. Dropping a `start` at any await leaves nothing that
//!   `clear_task` and `cleanup_alloc` cannot find by its labels;
//! - the handle state ([`CriState`]) holds the sandbox and container ids, so
//!   `wait`, `stop`, `destroy` and `recover` work from the handle alone;
//!   `recover` also takes back a container that exited while the agent was
//!   away, with its exit code and OOM flag;
//! - exits are noticed by listing all containers (every 200 ms by default,
//!   one call for the node, see [`exit`]) and cached until `destroy`;
//! - what an interrupted network teardown leaves (the bridge plugin's
//!   masquerade chain, portmap's DNAT chain, host-local leases) is removed
//!   after each sandbox removal and, for sandboxes the runtime no longer
//!   has, when the agent starts (`remove_orphans`; see [`cni`]).
//!
//! Files: [`client`] (the CRI connection), [`pod`] (what the sandbox needs
//! from the group), [`sandbox`] (its config, its cgroups), `lifecycle`
//! (creating, finding and removing sandboxes), [`container`], [`image`],
//! [`exit`], `logs` (rotating container logs), [`cni`] and `sweep` (network
//! leftovers), `launch` (the calls that run to their end).

pub mod client;
pub mod cni;
pub mod container;
pub mod exit;
pub mod image;
mod launch;
mod lifecycle;
mod logs;
pub mod pod;
pub mod sandbox;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral_types::DriverKind;
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};

use self::client::{CriClient, CriError, DEFAULT_RPC_TIMEOUT};
use self::container::{ContainerParams, container_config, state_of};
use self::exit::{ExitWatcher, Tracked};
use self::launch::{Launch, launch, run_to_end};
use self::sandbox::{LABEL_ALLOC, LABEL_TASK};
use super::{
    AllocContext, Driver, DriverError, ExecOutput, ExitResult, TaskContext, TaskHandle, TaskStats,
    now_unix_ms,
};

pub use self::image::{DEFAULT_PULL_TIMEOUT, ImageError};

/// Task name used in errors about the pod sandbox itself.
const SANDBOX: &str = "(pod sandbox)";

/// How the driver reaches the runtime and how patient it is.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// The runtime's CRI socket (containerd: its grpc address).
    pub socket: PathBuf,
    /// The runtime's sandbox (pause) image, when known: checked (and pulled
    /// if it can be) before the first sandbox, for a clear error.
    pub sandbox_image: Option<String>,
    pub pull_timeout: Duration,
    /// Deadline of every other call.
    pub rpc_timeout: Duration,
    /// How often a running container's status is polled for its exit.
    pub poll_interval: Duration,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
}

impl CriConfig {
    pub fn new(socket: impl Into<PathBuf>) -> CriConfig {
        CriConfig {
            socket: socket.into(),
            sandbox_image: None,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            poll_interval: Duration::from_millis(200),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// Driver-specific part of a container [`TaskHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriState {
    pub sandbox_id: String,
    pub container_id: String,
    pub attempt: u32,
    pub image: String,
}

/// A sandbox of this node, as listed by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSummary {
    pub id: String,
    pub alloc_id: String,
    pub name: String,
    pub ready: bool,
    /// Unix time in nanoseconds.
    pub created_at: i64,
}

/// The sandbox of an allocation, as this driver knows it.
#[derive(Debug, Clone)]
struct SandboxRef {
    id: String,
    config: cri::PodSandboxConfig,
    network_host: bool,
}

/// A lock held across awaits (and by a task that runs a call to its end).
type AsyncLock = Arc<tokio::sync::Mutex<()>>;

#[derive(Debug)]
pub struct CriDriver {
    client: CriClient,
    cfg: CriConfig,
    /// Whether memory limits can forbid swap (v1 `memsw` or v2).
    limit_swap: bool,
    /// alloc id -> its sandbox.
    /// Shared with the task that creates a sandbox to its end.
    sandboxes: Arc<Mutex<HashMap<String, SandboxRef>>>,
    /// Exits of the containers started or recovered.
    exits: ExitWatcher,
    /// Sandbox images already checked.
    checked_images: Mutex<HashSet<String>>,
    /// (alloc id, task) -> attempt number of the task's next container.
    /// Kept here: the runner removes a run's container before the next
    /// run starts, so the runtime no longer lists the previous attempt.
    attempts: Mutex<HashMap<(String, String), u32>>,
    /// One sandbox check, creation or removal at a time per allocation
    /// (its tasks start concurrently).
    pod_locks: Mutex<HashMap<String, AsyncLock>>,
    /// Held while a task's container is being created and started, to its
    /// end (see [`launch`]); `clear_task` waits for it.
    task_locks: Mutex<HashMap<(String, String), AsyncLock>>,
    /// Exits of containers removed with a dead sandbox: container id ->
    /// (alloc id, exit), for `recover` after an agent restart.
    removed_exits: Mutex<HashMap<String, (String, ExitResult)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(alloc_id: &str, task: &str, reason: impl std::fmt::Display) -> DriverError {
    DriverError::Failed {
        alloc_id: alloc_id.to_string(),
        task: task.to_string(),
        reason: reason.to_string(),
    }
}

impl CriDriver {
    /// Connects to the runtime now and checks that it answers.
    pub async fn connect(cfg: CriConfig) -> Result<CriDriver, DriverError> {
        let unavailable = |e: CriError| DriverError::Unavailable {
            driver: DriverKind::Container,
            reason: e.to_string(),
        };
        let client = CriClient::connect(&cfg.socket)
            .await
            .map_err(unavailable)?
            .with_timeout(cfg.rpc_timeout);
        let v = client
            .version_within(Duration::from_secs(5))
            .await
            .map_err(unavailable)?;
        tracing::info!(socket = %cfg.socket.display(), runtime = %v.runtime_name,
            version = %v.runtime_version, api = %v.runtime_api_version, "connected to the CRI runtime");
        Ok(Self::with_client(client, cfg))
    }

    /// Without connecting first (the channel connects on first use).
    pub fn connect_lazy(cfg: CriConfig) -> CriDriver {
        let client = CriClient::connect_lazy(&cfg.socket).with_timeout(cfg.rpc_timeout);
        Self::with_client(client, cfg)
    }

    fn with_client(client: CriClient, cfg: CriConfig) -> CriDriver {
        let limit_swap = cfg
            .cgroup_root
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
            || cfg.cgroup_root.join("cgroup.controllers").exists();
        CriDriver {
            exits: ExitWatcher::new(client.clone(), cfg.poll_interval),
            client,
            cfg,
            limit_swap,
            sandboxes: Arc::new(Mutex::new(HashMap::new())),
            checked_images: Mutex::new(HashSet::new()),
            attempts: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
            task_locks: Mutex::new(HashMap::new()),
            removed_exits: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &CriClient {
        &self.client
    }

    pub fn config(&self) -> &CriConfig {
        &self.cfg
    }

    /// Decodes the CRI state of a handle.
    pub fn state_of(handle: &TaskHandle) -> Result<CriState, DriverError> {
        let bad = |reason: String| DriverError::BadHandle {
            alloc_id: handle.alloc_id.clone(),
            task: handle.task.clone(),
            reason,
        };
        if handle.driver != DriverKind::Container {
            return Err(bad(format!(
                "it belongs to the {} driver, not container",
                handle.driver
            )));
        }
        let st: CriState = serde_json::from_value(handle.state.clone())
            .map_err(|e| bad(format!("cannot decode the container state: {e}")))?;
        if st.container_id.is_empty() {
            return Err(bad("no container id".into()));
        }
        Ok(st)
    }

    /// Removes what is left of earlier runs of the task (in any sandbox
    /// of the allocation) and returns the attempt number of the next one:
    /// one more than any run this driver counted or the runtime lists.
    async fn next_attempt(&self, alloc_id: &str, task: &str) -> Result<u32, DriverError> {
        let previous = self
            .task_containers(alloc_id, task)
            .await
            .map_err(|e| failed(alloc_id, task, e))?;
        let listed = previous
            .iter()
            .filter_map(|c| c.metadata.as_ref())
            .map(|m| m.attempt.saturating_add(1))
            .max()
            .unwrap_or(0);
        for c in &previous {
            if c.state == cri::ContainerState::ContainerRunning as i32 {
                tracing::warn!(alloc = %alloc_id, task, container = %c.id,
                    "an earlier container of the task still runs: stopping it");
            }
            if let Err(e) = self.kill_and_remove(c).await {
                tracing::warn!(alloc = %alloc_id, task, error = %e, "cannot remove an earlier container");
            }
        }
        // Counted before the container exists: a start dropped half-way
        // still uses up its number, so no two containers share one.
        let mut attempts = lock(&self.attempts);
        let next = attempts
            .entry((alloc_id.to_string(), task.to_string()))
            .or_insert(0);
        let attempt = (*next).max(listed);
        *next = attempt.saturating_add(1);
        Ok(attempt)
    }

    fn task_lock(&self, alloc_id: &str, task: &str) -> AsyncLock {
        lock(&self.task_locks)
            .entry((alloc_id.to_string(), task.to_string()))
            .or_default()
            .clone()
    }

    /// After a recover: the task's next container comes after `attempt`.
    fn count_attempt(&self, alloc_id: &str, task: &str, attempt: u32) {
        let mut attempts = lock(&self.attempts);
        let next = attempts
            .entry((alloc_id.to_string(), task.to_string()))
            .or_insert(0);
        *next = (*next).max(attempt.saturating_add(1));
    }

    /// The containers labelled with the allocation and task, in any state.
    async fn task_containers(
        &self,
        alloc_id: &str,
        task: &str,
    ) -> Result<Vec<cri::Container>, CriError> {
        self.client
            .list_containers(cri::ContainerFilter {
                label_selector: HashMap::from([
                    (LABEL_ALLOC.to_string(), alloc_id.to_string()),
                    (LABEL_TASK.to_string(), task.to_string()),
                ]),
                ..Default::default()
            })
            .await
    }

    /// Kills (no grace) and removes a container; one already gone is fine.
    async fn kill_and_remove(&self, c: &cri::Container) -> Result<(), CriError> {
        if c.state == cri::ContainerState::ContainerRunning as i32 {
            match self.client.stop_container(&c.id, 0).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        match self.client.remove_container(&c.id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        self.exits.forget_container(&c.id);
        Ok(())
    }

    /// The exit of a container removed with its dead sandbox, once.
    fn removed_exit(&self, container_id: &str) -> Option<ExitResult> {
        lock(&self.removed_exits)
            .remove(container_id)
            .map(|(_, e)| e)
    }

    fn track(&self, handle_id: &str, container_id: &str) -> Tracked {
        self.exits.track(handle_id, container_id)
    }
}

#[async_trait]
impl Driver for CriDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Container
    }

    async fn remove_orphans(
        &self,
        node_id: &str,
        keep: &std::collections::HashSet<String>,
    ) -> Result<usize, DriverError> {
        let unavailable = |e: CriError| DriverError::Unavailable {
            driver: DriverKind::Container,
            reason: e.to_string(),
        };
        let mut removed = 0;
        for sb in self
            .list_node_sandboxes(node_id)
            .await
            .map_err(unavailable)?
        {
            if !keep.contains(&sb.alloc_id) {
                tracing::info!(alloc = %sb.alloc_id, sandbox = %sb.id, "removing an orphan pod sandbox");
                self.remove_sandbox(&sb.id).await.map_err(unavailable)?;
                removed += 1;
            }
        }
        match self.sweep_cni_leftovers().await {
            Ok(s) if s.nat + s.leases > 0 => {
                tracing::info!(
                    nat = s.nat,
                    leases = s.leases,
                    "removed CNI leftovers of pod sandboxes the runtime no longer has"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sweep CNI leftovers"),
        }
        Ok(removed)
    }

    async fn fingerprint(&self) -> Result<(), DriverError> {
        self.client
            .version_within(Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|e| DriverError::Unavailable {
                driver: DriverKind::Container,
                reason: e.to_string(),
            })
    }

    async fn prepare_alloc(&self, alloc: &AllocContext) -> Result<(), DriverError> {
        self.prepare_pod(alloc, &alloc.pod).await.map(|_| ())
    }

    async fn cleanup_alloc(&self, alloc: &AllocContext) -> Result<(), DriverError> {
        self.cleanup_pod(&alloc.alloc_id).await
    }

    async fn start(&self, ctx: &TaskContext) -> Result<TaskHandle, DriverError> {
        let alloc_id = &ctx.alloc.alloc_id;
        let task = &ctx.task.name;
        let image = match ctx.task.image.as_deref().map(str::trim) {
            Some(i) if !i.is_empty() => i.to_string(),
            _ => {
                return Err(DriverError::InvalidTask {
                    alloc_id: alloc_id.clone(),
                    task: task.clone(),
                    reason: "the container driver needs an image".into(),
                });
            }
        };
        let t0 = Instant::now();
        let sb = self.sandbox_of(&ctx.alloc, task).await?;
        image::ensure(
            &self.client,
            &image,
            ctx.task.pull_policy,
            self.cfg.pull_timeout,
        )
        .await
        .map_err(|e| failed(alloc_id, task, e))?;
        let attempt = self.next_attempt(alloc_id, task).await?;
        let config = container_config(&ContainerParams {
            ctx,
            image: &image,
            attempt,
            network_host: sb.network_host,
            limit_swap: self.limit_swap,
        })
        .map_err(|reason| DriverError::InvalidTask {
            alloc_id: alloc_id.clone(),
            task: task.clone(),
            reason,
        })?;
        // The CPU quota is applied once the container runs: runc's setup
        // inside a 10m quota takes seconds (measured: 4.5 s to start at
        // cpu 10m, 0.3 s at 1000m), and the limit is for the task, not its
        // setup. Memory and shares apply from the start.
        let mut config = config;
        let limits = config
            .linux
            .as_mut()
            .and_then(|l| l.resources.as_mut())
            .filter(|r| r.cpu_quota > 0)
            .map(|r| {
                let full = r.clone();
                r.cpu_quota = 0;
                full
            });
        let t_create = Instant::now();
        // Every line of this run is written after this.
        let run_started = crate::logs::Timestamp::now();
        let l = Launch {
            sandbox_id: sb.id.clone(),
            config,
            sandbox_config: sb.config.clone(),
            limits,
        };
        let held = self.task_lock(alloc_id, task).lock_owned().await;
        let container_id = run_to_end(held, launch(self.client.clone(), l))
            .await
            .ok_or_else(|| failed(alloc_id, task, "the container start panicked"))?
            .map_err(|e| failed(alloc_id, task, e))?;
        if let Err(e) = crate::logs::record_start(&ctx.alloc.alloc_dir, task, run_started) {
            tracing::warn!(alloc = %alloc_id, task, error = %e, "cannot record the start of the run in its log");
        }
        tracing::info!(alloc = %alloc_id, task, container = %container_id, image, attempt,
            prepare_ms = (t_create - t0).as_millis() as u64,
            launch_ms = t_create.elapsed().as_millis() as u64, "container started");

        let state = CriState {
            sandbox_id: sb.id,
            container_id: container_id.clone(),
            attempt,
            image,
        };
        let short: String = container_id.chars().take(12).collect();
        let handle = TaskHandle {
            driver: DriverKind::Container,
            task: task.clone(),
            alloc_id: alloc_id.clone(),
            id: format!("{alloc_id}.{task}.{attempt}.{short}"),
            started_at_ms: now_unix_ms(),
            state: serde_json::to_value(&state)
                .map_err(|e| failed(alloc_id, task, format!("cannot encode the handle: {e}")))?,
        };
        self.track(&handle.id, &container_id);
        Ok(handle)
    }

    async fn wait(&self, handle: &TaskHandle) -> Result<ExitResult, DriverError> {
        let st = Self::state_of(handle)?;
        let tracked = self.track(&handle.id, &st.container_id);
        tracked
            .wait()
            .await
            .ok_or_else(|| DriverError::failed(handle, "the exit watcher ended without a result"))
    }

    async fn stop(&self, handle: &TaskHandle, timeout: Duration) -> Result<(), DriverError> {
        let st = Self::state_of(handle)?;
        let grace = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let grace = i64::try_from(grace.max(1)).unwrap_or(i64::MAX);
        match self.client.stop_container(&st.container_id, grace).await {
            Err(e) if !e.is_not_found() => return Err(DriverError::failed(handle, e.to_string())),
            _ => {}
        }
        self.exits.poke();
        Ok(())
    }

    async fn destroy(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        let st = Self::state_of(handle)?;
        if let Err(e) = self.client.remove_container(&st.container_id).await
            && !e.is_not_found()
        {
            // A container that still runs: kill it, then remove it.
            tracing::debug!(container = %st.container_id, error = %e, "remove failed; stopping first");
            match self.client.stop_container(&st.container_id, 0).await {
                Err(e) if !e.is_not_found() => {
                    return Err(DriverError::failed(handle, e.to_string()));
                }
                _ => {}
            }
            match self.client.remove_container(&st.container_id).await {
                Err(e) if !e.is_not_found() => {
                    return Err(DriverError::failed(handle, e.to_string()));
                }
                _ => {}
            }
        }
        self.exits.forget(&handle.id);
        Ok(())
    }

    async fn clear_task(&self, alloc: &AllocContext, task: &str) -> Result<(), DriverError> {
        let alloc_id = &alloc.alloc_id;
        // A start dropped half-way may still be creating its container.
        let lock = self.task_lock(alloc_id, task);
        let _held = lock.lock().await;
        let containers = self
            .task_containers(alloc_id, task)
            .await
            .map_err(|e| failed(alloc_id, task, e))?;
        for c in &containers {
            tracing::info!(alloc = %alloc_id, task, container = %c.id, "removing a container of the task");
            self.kill_and_remove(c)
                .await
                .map_err(|e| failed(alloc_id, task, e))?;
        }
        Ok(())
    }

    /// Running: re-attached. Exited (also when its dead sandbox was just
    /// replaced): tracked with its exit, which `wait` answers at once.
    async fn recover(&self, handle: &TaskHandle) -> Result<bool, DriverError> {
        let st = Self::state_of(handle)?;
        self.count_attempt(&handle.alloc_id, &handle.task, st.attempt);
        let status = match self.client.container_status(&st.container_id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                let Some(exit) = self.removed_exit(&st.container_id) else {
                    return Ok(false);
                };
                self.exits
                    .track_exited(&handle.id, &st.container_id, exit.clone());
                tracing::info!(alloc = %handle.alloc_id, task = %handle.task, container = %st.container_id,
                    exit = %exit.message, "the container exited while the agent was away (its pod sandbox died)");
                return Ok(true);
            }
            Err(e) => return Err(DriverError::failed(handle, e.to_string())),
        };
        match state_of(&status) {
            cri::ContainerState::ContainerRunning => {
                self.track(&handle.id, &st.container_id);
                tracing::info!(alloc = %handle.alloc_id, task = %handle.task, container = %st.container_id,
                    "re-attached to the running container");
                Ok(true)
            }
            cri::ContainerState::ContainerExited => {
                let exit = container::exit_of(&status);
                tracing::info!(alloc = %handle.alloc_id, task = %handle.task, container = %st.container_id,
                    exit = %exit.message, "the container exited while the agent was away");
                self.exits.track_exited(&handle.id, &st.container_id, exit);
                Ok(true)
            }
            // Created but never started, or unknown: nothing to follow.
            _ => Ok(false),
        }
    }

    async fn rotate_logs(&self, node_id: &str) -> Result<usize, DriverError> {
        self.rotate_container_logs(node_id).await
    }

    async fn stats(&self, handle: &TaskHandle) -> Result<TaskStats, DriverError> {
        let st = Self::state_of(handle)?;
        let s = self
            .client
            .container_stats(&st.container_id)
            .await
            .map_err(|e| DriverError::failed(handle, e.to_string()))?;
        Ok(TaskStats {
            memory_bytes: s
                .memory
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value)
                .unwrap_or(0),
            cpu_usage_ns: s
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value)
                .unwrap_or(0),
        })
    }

    /// CRI ExecSync in the task's container.
    async fn exec(
        &self,
        handle: &TaskHandle,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let st = Self::state_of(handle)?;
        if command.is_empty() {
            return Err(DriverError::InvalidTask {
                alloc_id: handle.alloc_id.clone(),
                task: handle.task.clone(),
                reason: "the command to run in the task is empty".into(),
            });
        }
        let r = self
            .client
            .exec_sync(&st.container_id, command, timeout)
            .await
            .map_err(|e| DriverError::failed(handle, e.to_string()))?;
        Ok(ExecOutput::from_streams(r.exit_code, &r.stdout, &r.stderr))
    }

    /// The pod IP from PodSandboxStatus; `None` for a sandbox in the
    /// node's network namespace.
    async fn task_ip(&self, handle: &TaskHandle) -> Result<Option<IpAddr>, DriverError> {
        let st = Self::state_of(handle)?;
        let r = self
            .client
            .pod_sandbox_status(&st.sandbox_id)
            .await
            .map_err(|e| DriverError::failed(handle, e.to_string()))?;
        let Some(status) = r.status else {
            return Err(DriverError::failed(
                handle,
                "the runtime returned no pod sandbox status",
            ));
        };
        let host = status
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == cri::NamespaceMode::Node as i32);
        if host {
            return Ok(None);
        }
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        ip.parse::<IpAddr>().map(Some).map_err(|_| {
            DriverError::failed(
                handle,
                format!("the pod sandbox has no usable IP address ({ip:?})"),
            )
        })
    }
}
