//! The pod sandbox lifecycle of the CRI driver: create (idempotent), find
//! again after an agent restart, remove with its cgroups, list the
//! sandboxes of this node for orphan removal.

use std::collections::HashMap;
use std::time::Instant;

use corral_types::PullPolicy;
use k8s_cri::v1 as cri;
use tokio::sync::OwnedMutexGuard;

use super::client::CriError;
use super::image::ImageError;
use super::launch::run_to_end;
use super::pod::PodOptions;
use super::sandbox::{self, LABEL_ALLOC, LABEL_NODE};
use super::{
    AsyncLock, CriDriver, SANDBOX, SandboxRef, SandboxSummary, container, failed, image, lock,
};
use crate::driver::{AllocContext, DriverError};

impl CriDriver {
    /// Whether the runtime has the image (e.g. the sandbox image).
    pub async fn ensure_image_present(&self, image: &str) -> Result<bool, ImageError> {
        image::is_present(&self.client, image).await
    }

    /// Sandboxes labelled with this node id, ready or not (to remove the
    /// orphans of allocations this node no longer runs).
    pub async fn list_node_sandboxes(
        &self,
        node_id: &str,
    ) -> Result<Vec<SandboxSummary>, CriError> {
        let items = self
            .client
            .list_pod_sandbox(cri::PodSandboxFilter {
                label_selector: HashMap::from([(LABEL_NODE.to_string(), node_id.to_string())]),
                ..Default::default()
            })
            .await?;
        Ok(items
            .into_iter()
            .map(|sb| SandboxSummary {
                alloc_id: sb.labels.get(LABEL_ALLOC).cloned().unwrap_or_default(),
                name: sb.metadata.map(|m| m.name).unwrap_or_default(),
                ready: sb.state == cri::PodSandboxState::SandboxReady as i32,
                created_at: sb.created_at,
                id: sb.id,
            })
            .collect())
    }

    /// Stops and removes a sandbox (and its containers); a missing one is
    /// fine. Its cgroups go too when it carries an alloc id.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let alloc_id = self
            .client
            .list_pod_sandbox(cri::PodSandboxFilter {
                id: id.to_string(),
                ..Default::default()
            })
            .await?
            .into_iter()
            .find_map(|sb| sb.labels.get(LABEL_ALLOC).cloned());
        self.stop_and_remove_sandbox(id).await?;
        if let Some(a) = alloc_id {
            lock(&self.sandboxes).retain(|k, v| !(k == &a && v.id == id));
            self.remove_cgroups(&a).await;
        }
        Ok(())
    }

    async fn stop_and_remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let started = Instant::now();
        match self.client.stop_pod_sandbox(id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        match self.client.remove_pod_sandbox(id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        // A teardown interrupted earlier (an agent killed during a stop)
        // is not finished by the runtime's retry: finish it.
        self.clear_network_of(id).await;
        tracing::info!(sandbox = %id, ms = started.elapsed().as_millis() as u64, "pod sandbox removed");
        Ok(())
    }

    async fn remove_cgroups(&self, alloc_id: &str) {
        let root = self.cfg.cgroup_root.clone();
        let a = alloc_id.to_string();
        let failed = tokio::task::spawn_blocking(move || sandbox::remove_pod_cgroups(&root, &a))
            .await
            .unwrap_or_default();
        for (dir, e) in failed {
            tracing::warn!(alloc = %alloc_id, dir = %dir.display(), error = %e, "cannot remove a pod cgroup");
        }
    }

    /// Sandboxes of an allocation, as the runtime lists them.
    async fn alloc_sandboxes(&self, alloc_id: &str) -> Result<Vec<cri::PodSandbox>, CriError> {
        self.client
            .list_pod_sandbox(cri::PodSandboxFilter {
                label_selector: HashMap::from([(LABEL_ALLOC.to_string(), alloc_id.to_string())]),
                ..Default::default()
            })
            .await
    }

    /// The lock that makes sandbox checks, creations and removals of one
    /// allocation happen one at a time.
    fn pod_lock(&self, alloc_id: &str) -> AsyncLock {
        lock(&self.pod_locks)
            .entry(alloc_id.to_string())
            .or_default()
            .clone()
    }

    /// Whether the runtime says the sandbox is ready (its pause process
    /// runs); a sandbox it does not know is not.
    async fn is_ready(&self, id: &str) -> Result<bool, CriError> {
        match self.client.pod_sandbox_status(id).await {
            Ok(r) => Ok(r
                .status
                .is_some_and(|s| s.state == cri::PodSandboxState::SandboxReady as i32)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The ready sandbox of the allocation, checked with the runtime at
    /// every call (its pause process may have died, or a reboot left it
    /// behind): known, found by its label after an agent restart, or
    /// created anew in place of a dead one.
    pub(super) async fn sandbox_of(
        &self,
        alloc: &AllocContext,
        task: &str,
    ) -> Result<SandboxRef, DriverError> {
        let alloc_id = &alloc.alloc_id;
        let held = self.pod_lock(alloc_id).lock_owned().await;
        let cached = lock(&self.sandboxes).get(alloc_id).cloned();
        if let Some(s) = cached {
            if self
                .is_ready(&s.id)
                .await
                .map_err(|e| failed(alloc_id, task, e))?
            {
                return Ok(s);
            }
            tracing::warn!(alloc = %alloc_id, sandbox = %s.id,
                "the pod sandbox is not ready any more (its pause process died?)");
            lock(&self.sandboxes).remove(alloc_id);
        }
        self.ensure_pod(alloc, &alloc.pod, held).await
    }

    /// Checks once per image that the sandbox image is there, pulling it
    /// when it is not (which works only for images in a registry).
    async fn check_sandbox_image(&self, alloc_id: &str) -> Result<(), DriverError> {
        let Some(img) = self.cfg.sandbox_image.clone() else {
            return Ok(());
        };
        if lock(&self.checked_images).contains(&img) {
            return Ok(());
        }
        image::ensure(
            &self.client,
            &img,
            PullPolicy::IfNotPresent,
            self.cfg.pull_timeout,
        )
        .await
        .map_err(|e| {
            failed(
                alloc_id,
                SANDBOX,
                format!("the sandbox image {img} is not present and cannot be pulled: {e}"),
            )
        })?;
        lock(&self.checked_images).insert(img);
        Ok(())
    }

    /// Makes sure the allocation has a ready sandbox, with explicit pod
    /// options (the trait method takes those of the [`AllocContext`]):
    /// idempotent, also after an agent restart or a host reboot.
    pub async fn prepare_pod(
        &self,
        alloc: &AllocContext,
        opts: &PodOptions,
    ) -> Result<String, DriverError> {
        let held = self.pod_lock(&alloc.alloc_id).lock_owned().await;
        self.ensure_pod(alloc, opts, held).await.map(|s| s.id)
    }

    /// Adopts the allocation's ready sandbox, or removes its dead ones
    /// (their name is reserved by the runtime) and creates a new one.
    /// `held` is the allocation's pod lock.
    async fn ensure_pod(
        &self,
        alloc: &AllocContext,
        opts: &PodOptions,
        held: OwnedMutexGuard<()>,
    ) -> Result<SandboxRef, DriverError> {
        let alloc_id = &alloc.alloc_id;
        let existing = self
            .alloc_sandboxes(alloc_id)
            .await
            .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        if let Some(sb) = existing
            .iter()
            .find(|sb| sb.state == cri::PodSandboxState::SandboxReady as i32)
        {
            // Its network mode is what it was created with.
            let opts = PodOptions {
                network_host: sandbox::is_network_host(sb),
                ..opts.clone()
            };
            let s = SandboxRef {
                id: sb.id.clone(),
                config: sandbox::sandbox_config(alloc, &opts)
                    .map_err(|e| failed(alloc_id, SANDBOX, e))?,
                network_host: opts.network_host,
            };
            tracing::info!(alloc = %alloc_id, sandbox = %sb.id, "using the ready pod sandbox");
            lock(&self.sandboxes).insert(alloc_id.clone(), s.clone());
            return Ok(s);
        }
        for sb in &existing {
            tracing::info!(alloc = %alloc_id, sandbox = %sb.id,
                "removing a pod sandbox that is not ready, to create a new one");
            self.retire_sandbox(alloc_id, &sb.id)
                .await
                .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        }
        self.create_pod(alloc, opts, held).await
    }

    /// Stops a dead sandbox, keeps the exits of its containers (their
    /// runners, or a `recover` after an agent restart, learn how they
    /// ended) and removes it.
    async fn retire_sandbox(&self, alloc_id: &str, id: &str) -> Result<(), CriError> {
        match self.client.stop_pod_sandbox(id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        let containers = self
            .client
            .list_containers(cri::ContainerFilter {
                pod_sandbox_id: id.to_string(),
                ..Default::default()
            })
            .await?;
        for c in containers {
            let Ok(st) = self.client.container_status(&c.id).await else {
                continue;
            };
            if container::state_of(&st) != cri::ContainerState::ContainerExited {
                continue;
            }
            let exit = container::exit_of(&st);
            self.exits.resolve(&c.id, &exit);
            lock(&self.removed_exits).insert(c.id, (alloc_id.to_string(), exit));
        }
        self.stop_and_remove_sandbox(id).await
    }

    /// RunPodSandbox, after checking the sandbox image and creating the
    /// log directory. The call runs to its end, holding the pod lock, even
    /// when the caller is dropped: `cleanup_alloc` then finds the sandbox.
    async fn create_pod(
        &self,
        alloc: &AllocContext,
        opts: &PodOptions,
        held: OwnedMutexGuard<()>,
    ) -> Result<SandboxRef, DriverError> {
        let alloc_id = &alloc.alloc_id;
        let config =
            sandbox::sandbox_config(alloc, opts).map_err(|e| failed(alloc_id, SANDBOX, e))?;
        self.check_sandbox_image(alloc_id).await?;
        let logs = sandbox::log_directory(&alloc.alloc_dir);
        std::fs::create_dir_all(&logs).map_err(|source| DriverError::Io {
            alloc_id: alloc_id.clone(),
            task: SANDBOX.into(),
            what: format!("cannot create {}", logs.display()),
            source,
        })?;
        let (client, cache, alloc_key) = (
            self.client.clone(),
            self.sandboxes.clone(),
            alloc_id.clone(),
        );
        let network_host = opts.network_host;
        let create = async move {
            let started = Instant::now();
            let id = client.run_pod_sandbox(config.clone()).await?;
            tracing::info!(alloc = %alloc_key, sandbox = %id, ports = config.port_mappings.len(),
                ms = started.elapsed().as_millis() as u64, "pod sandbox running");
            let s = SandboxRef {
                id,
                config,
                network_host,
            };
            lock(&cache).insert(alloc_key, s.clone());
            Ok::<_, CriError>(s)
        };
        run_to_end(held, create)
            .await
            .ok_or_else(|| failed(alloc_id, SANDBOX, "creating the pod sandbox panicked"))?
            .map_err(|e| {
                failed(
                    alloc_id,
                    SANDBOX,
                    format!("cannot create the pod sandbox: {e}"),
                )
            })
    }

    /// Stops and removes every sandbox of the allocation (the one this
    /// driver knows and any other the runtime lists with its label), then
    /// the pod's cgroups.
    pub(super) async fn cleanup_pod(&self, alloc_id: &str) -> Result<(), DriverError> {
        let pod = self.pod_lock(alloc_id);
        let _one = pod.lock().await;
        // Containers still being created (a start dropped half-way) end
        // first, so that the sandbox takes them along.
        let launches: Vec<_> = lock(&self.task_locks)
            .iter()
            .filter(|((a, _), _)| a == alloc_id)
            .map(|(_, l)| l.clone())
            .collect();
        for l in launches {
            drop(l.lock().await);
        }
        let mut ids: Vec<String> = lock(&self.sandboxes)
            .remove(alloc_id)
            .map(|s| s.id)
            .into_iter()
            .collect();
        let listed = self
            .alloc_sandboxes(alloc_id)
            .await
            .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        ids.extend(listed.into_iter().map(|sb| sb.id));
        ids.sort();
        ids.dedup();
        for id in &ids {
            self.stop_and_remove_sandbox(id)
                .await
                .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        }
        self.remove_cgroups(alloc_id).await;
        self.forget_alloc(alloc_id);
        Ok(())
    }

    /// Drops what the driver kept about an allocation that is gone.
    fn forget_alloc(&self, alloc_id: &str) {
        lock(&self.attempts).retain(|(a, _), _| a != alloc_id);
        lock(&self.task_locks).retain(|(a, _), _| a != alloc_id);
        lock(&self.removed_exits).retain(|_, (a, _)| a != alloc_id);
        lock(&self.pod_locks).remove(alloc_id);
    }
}
