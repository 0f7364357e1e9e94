//! Rotation of container logs. containerd writes each container's CRI log
//! file; like the kubelet, the agent checks the running containers of its
//! node periodically, renames a file that reached its task's `max_size`
//! (see [`crate::logs::rotate`]) and asks the runtime to reopen the log,
//! which then starts a new file under the old name.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;

use super::CriDriver;
use super::container::log_policy;
use super::sandbox::LABEL_NODE;
use crate::driver::DriverError;

impl CriDriver {
    /// Rotates the log of every running container of `node_id` that
    /// reached its size; returns how many were rotated.
    pub async fn rotate_container_logs(&self, node_id: &str) -> Result<usize, DriverError> {
        let running = self
            .client
            .list_containers(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                label_selector: HashMap::from([(LABEL_NODE.to_string(), node_id.to_string())]),
                ..Default::default()
            })
            .await
            .map_err(|e| DriverError::Unavailable {
                driver: corral_types::DriverKind::Container,
                reason: e.to_string(),
            })?;
        let mut rotated = 0;
        for c in running {
            let status = match self.client.container_status(&c.id).await {
                Ok(s) => s,
                // Gone meanwhile.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e, "cannot check a container log");
                    continue;
                }
            };
            if status.log_path.is_empty() {
                continue;
            }
            let policy = log_policy(&status.annotations);
            let path = Path::new(&status.log_path);
            let size = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if size < policy.max_size.0 {
                continue;
            }
            // Room first: after the rename, the rotated files plus the new
            // current one make `max_files` (at least 2, as the kubelet
            // requires; the renamed file is never deleted before the runtime
            // writes elsewhere).
            let max_files = policy.max_files.max(2);
            if let Err(e) = crate::logs::prune(path, max_files - 1) {
                tracing::warn!(container = %c.id, error = %e, "cannot delete old container logs");
            }
            let renamed = match crate::logs::rename_current(path) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(container = %c.id, file = %path.display(), error = %e, "cannot rotate a container log");
                    continue;
                }
            };
            if let Err(e) = self.client.reopen_container_log(&c.id).await {
                // The runtime still writes to the renamed file: give it
                // its name back, as the kubelet does.
                tracing::warn!(container = %c.id, error = %e, "cannot reopen a container log; undoing its rotation");
                if let Err(e) = std::fs::rename(&renamed, path) {
                    tracing::warn!(container = %c.id, error = %e, "cannot undo a log rotation");
                }
                continue;
            }
            rotated += 1;
        }
        Ok(rotated)
    }
}
