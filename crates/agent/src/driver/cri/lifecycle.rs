//! The pod sandbox lifecycle of the CRI driver: create (idempotent), find
//! again after an agent restart, remove with its cgroups, list the
//! sandboxes of this node for orphan removal.

use std::collections::HashMap;
use std::time::Instant;

use corral_types::PullPolicy;
use k8s_cri::v1 as cri;

use super::client::CriError;
use super::image::ImageError;
use super::pod::PodOptions;
use super::sandbox::{self, LABEL_ALLOC, LABEL_NODE};
use super::{CriDriver, SANDBOX, SandboxRef, SandboxSummary, failed, image, lock};
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

    /// The ready sandbox of the allocation: known, or found by its label
    /// (after an agent restart). Its config is rebuilt then: containerd
    /// 1.6 crashes on a CreateContainer without the sandbox config.
    pub(super) async fn sandbox_of(
        &self,
        alloc: &AllocContext,
        task: &str,
    ) -> Result<SandboxRef, DriverError> {
        let alloc_id = &alloc.alloc_id;
        if let Some(s) = lock(&self.sandboxes).get(alloc_id) {
            return Ok(s.clone());
        }
        let found = self
            .alloc_sandboxes(alloc_id)
            .await
            .map_err(|e| failed(alloc_id, task, e))?
            .into_iter()
            .find(|sb| sb.state == cri::PodSandboxState::SandboxReady as i32)
            .ok_or_else(|| {
                failed(
                    alloc_id,
                    task,
                    "the allocation has no ready pod sandbox (was it prepared?)",
                )
            })?;
        let opts = PodOptions {
            network_host: sandbox::is_network_host(&found),
            ..PodOptions::load(alloc)
        };
        let config =
            sandbox::sandbox_config(alloc, &opts).map_err(|e| failed(alloc_id, task, e))?;
        let s = SandboxRef {
            network_host: opts.network_host,
            id: found.id,
            config,
        };
        lock(&self.sandboxes).insert(alloc_id.to_string(), s.clone());
        Ok(s)
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

    /// Creates the sandbox with explicit pod options (the trait method
    /// reads them from the allocation record).
    pub async fn prepare_pod(
        &self,
        alloc: &AllocContext,
        opts: &PodOptions,
    ) -> Result<String, DriverError> {
        let alloc_id = &alloc.alloc_id;
        let config =
            sandbox::sandbox_config(alloc, opts).map_err(|e| failed(alloc_id, SANDBOX, e))?;
        // Idempotent: a ready sandbox of this allocation is reused, a dead
        // one (same name, which the runtime reserves) is removed first.
        let existing = self
            .alloc_sandboxes(alloc_id)
            .await
            .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        for sb in existing {
            if sb.state == cri::PodSandboxState::SandboxReady as i32 {
                tracing::info!(alloc = %alloc_id, sandbox = %sb.id, "reusing the pod sandbox");
                let s = SandboxRef {
                    id: sb.id.clone(),
                    config,
                    network_host: opts.network_host,
                };
                lock(&self.sandboxes).insert(alloc_id.clone(), s);
                return Ok(sb.id);
            }
            self.stop_and_remove_sandbox(&sb.id)
                .await
                .map_err(|e| failed(alloc_id, SANDBOX, e))?;
        }
        self.check_sandbox_image(alloc_id).await?;
        let logs = sandbox::log_directory(&alloc.alloc_dir);
        std::fs::create_dir_all(&logs).map_err(|source| DriverError::Io {
            alloc_id: alloc_id.clone(),
            task: SANDBOX.into(),
            what: format!("cannot create {}", logs.display()),
            source,
        })?;
        let started = Instant::now();
        let id = self
            .client
            .run_pod_sandbox(config.clone())
            .await
            .map_err(|e| {
                failed(
                    alloc_id,
                    SANDBOX,
                    format!("cannot create the pod sandbox: {e}"),
                )
            })?;
        tracing::info!(alloc = %alloc_id, sandbox = %id, ports = config.port_mappings.len(),
            ms = started.elapsed().as_millis() as u64, "pod sandbox running");
        lock(&self.sandboxes).insert(
            alloc_id.clone(),
            SandboxRef {
                id: id.clone(),
                config,
                network_host: opts.network_host,
            },
        );
        Ok(id)
    }

    /// Stops and removes every sandbox of the allocation (the one this
    /// driver knows and any other the runtime lists with its label), then
    /// the pod's cgroups.
    pub(super) async fn cleanup_pod(&self, alloc_id: &str) -> Result<(), DriverError> {
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
        Ok(())
    }
}
