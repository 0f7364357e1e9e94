//! The `container` driver: containerd (or any CRI runtime) through the
//! Kubernetes CRI API.
//!
//! - one pod sandbox per allocation, created in `prepare_alloc` (network,
//!   port mappings, cgroup parent `/corral/pod<alloc id>`, CRI logs in
//!   `<alloc_dir>/logs/`, see [`crate::logs`]) and removed in
//!   `cleanup_alloc` with the cgroups runc leaves behind;
//! - one container per task run, named after the task, its `attempt` one
//!   more than the previous container of the task in the sandbox; the
//!   image is pulled first when the pull policy or its absence says so;
//! - the handle state ([`CriState`]) holds the sandbox and container ids, so
//!   `wait`, `stop`, `destroy` and `recover` work from the handle alone;
//! - exits are noticed by listing all containers (every 200 ms by default,
//!   one call for the node, see [`exit`]) and cached until `destroy`.
//!
//! Files: [`client`] (the CRI connection), [`pod`] (what the sandbox needs
//! from the group), [`sandbox`] (its config, its cgroups), `lifecycle`
//! (creating, finding and removing sandboxes), [`container`], [`image`],
//! [`exit`], `logs` (rotating container logs).

pub mod client;
pub mod container;
pub mod exit;
pub mod image;
mod lifecycle;
mod logs;
pub mod pod;
pub mod sandbox;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral_types::DriverKind;
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};

use self::client::{CriClient, CriError, DEFAULT_RPC_TIMEOUT};
use self::container::{ContainerParams, container_config, state_of};
use self::exit::{ExitWatcher, Tracked};
use self::pod::PodOptions;
use self::sandbox::LABEL_TASK;
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

#[derive(Debug)]
pub struct CriDriver {
    client: CriClient,
    cfg: CriConfig,
    /// Whether memory limits can forbid swap (v1 `memsw` or v2).
    limit_swap: bool,
    /// alloc id -> its sandbox.
    sandboxes: Mutex<HashMap<String, SandboxRef>>,
    /// Exits of the containers started or recovered.
    exits: ExitWatcher,
    /// Sandbox images already checked.
    checked_images: Mutex<HashSet<String>>,
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
    /// Whether a container is still running after an update failed.
    /// containerd handles a task's exit event asynchronously, so the status
    /// can say "running" for a moment after the shim is gone: look a few
    /// times before calling the failure real.
    async fn still_running(&self, container_id: &str) -> bool {
        for _ in 0..10 {
            match self.client.container_status(container_id).await {
                Ok(st) if state_of(&st) == cri::ContainerState::ContainerRunning => {}
                _ => return false,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

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
            sandboxes: Mutex::new(HashMap::new()),
            checked_images: Mutex::new(HashSet::new()),
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

    /// Removes what is left of earlier runs of the task in the sandbox and
    /// returns the attempt number of the next one.
    async fn next_attempt(
        &self,
        alloc_id: &str,
        task: &str,
        sandbox_id: &str,
    ) -> Result<u32, DriverError> {
        let previous = self
            .client
            .list_containers(cri::ContainerFilter {
                pod_sandbox_id: sandbox_id.to_string(),
                label_selector: HashMap::from([(LABEL_TASK.to_string(), task.to_string())]),
                ..Default::default()
            })
            .await
            .map_err(|e| failed(alloc_id, task, e))?;
        let mut next = 0;
        for c in previous {
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            next = next.max(attempt.saturating_add(1));
            if c.state == cri::ContainerState::ContainerRunning as i32 {
                tracing::warn!(alloc = %alloc_id, task, container = %c.id,
                    "an earlier container of the task still runs: stopping it");
                let _ = self.client.stop_container(&c.id, 0).await;
            }
            match self.client.remove_container(&c.id).await {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(alloc = %alloc_id, task, error = %e, "cannot remove an earlier container")
                }
                _ => {}
            }
        }
        Ok(next)
    }

    fn track(&self, handle_id: &str, container_id: &str) -> Tracked {
        self.exits.track(handle_id, container_id)
    }
}

/// containerd's ways of saying the container's process is already gone
/// (its own status may lag behind by a moment).
fn exited_meanwhile(err: &str) -> bool {
    // "ttrpc: closed": the shim went away with the task it served.
    [
        "stopped container",
        "not running",
        "deleted process",
        "ttrpc: closed",
    ]
    .iter()
    .any(|m| err.contains(m))
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
        let opts = PodOptions::load(alloc);
        self.prepare_pod(alloc, &opts).await.map(|_| ())
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
        let attempt = self.next_attempt(alloc_id, task, &sb.id).await?;
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
        let container_id = self
            .client
            .create_container(&sb.id, config, sb.config.clone())
            .await
            .map_err(|e| failed(alloc_id, task, format!("cannot create the container: {e}")))?;
        let t_start = Instant::now();
        if let Err(e) = self.client.start_container(&container_id).await {
            let _ = self.client.remove_container(&container_id).await;
            return Err(failed(
                alloc_id,
                task,
                format!("cannot start the container: {e}"),
            ));
        }
        // A task that already exited needs no limit (containerd refuses to
        // update it, with various messages): only a running one is a failure.
        if let Some(limits) = limits
            && let Err(e) = self
                .client
                .update_container_resources(&container_id, limits)
                .await
            && !exited_meanwhile(&e.to_string())
            && self.still_running(&container_id).await
        {
            let _ = self.client.stop_container(&container_id, 0).await;
            let _ = self.client.remove_container(&container_id).await;
            return Err(failed(
                alloc_id,
                task,
                format!("cannot apply the cpu limit: {e}"),
            ));
        }
        if let Err(e) = crate::logs::record_start(&ctx.alloc.alloc_dir, task, run_started) {
            tracing::warn!(alloc = %alloc_id, task, error = %e, "cannot record the start of the run in its log");
        }
        tracing::info!(alloc = %alloc_id, task, container = %container_id, image, attempt,
            prepare_ms = (t_create - t0).as_millis() as u64,
            create_ms = (t_start - t_create).as_millis() as u64,
            start_ms = t_start.elapsed().as_millis() as u64, "container started");

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

    async fn recover(&self, handle: &TaskHandle) -> Result<bool, DriverError> {
        let st = Self::state_of(handle)?;
        let status = match self.client.container_status(&st.container_id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(DriverError::failed(handle, e.to_string())),
        };
        if state_of(&status) != cri::ContainerState::ContainerRunning {
            return Ok(false);
        }
        self.track(&handle.id, &st.container_id);
        tracing::info!(alloc = %handle.alloc_id, task = %handle.task, container = %st.container_id,
            "re-attached to the running container");
        Ok(true)
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
