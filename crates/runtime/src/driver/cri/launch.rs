//! The part of a container start that must not be cut short: create,
//! start, apply the CPU quota. containerd goes on with a call whose
//! client went away (a CreateContainer dropped after 10 ms still created
//! its container, after a listing had shown nothing), so these calls run
//! in a task of their own, to their end, while holding the task's lock:
//! `clear_task`, which takes the same lock, then finds what they made.
//! The same holds for RunPodSandbox and the allocation's pod lock.

use std::future::Future;
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::OwnedMutexGuard;

use super::client::{CriClient, CriError};
use super::container::state_of;

/// Runs `fut` to its end even when the caller's future is dropped,
/// holding `guard` until then. `None` when the task panicked.
pub async fn run_to_end<T: Send + 'static>(
    guard: OwnedMutexGuard<()>,
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    tokio::spawn(async move {
        let _held = guard;
        fut.await
    })
    .await
    .ok()
}

/// Why a launch failed, for the task's message.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the container: {0}")]
    Create(#[source] CriError),
    #[error("cannot start the container: {0}")]
    Start(#[source] CriError),
    #[error("cannot apply the cpu limit: {0}")]
    Limits(#[source] CriError),
}

/// What CreateContainer needs, and the CPU quota to apply once it runs.
pub struct Launch {
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    pub sandbox_config: cri::PodSandboxConfig,
    pub limits: Option<cri::LinuxContainerResources>,
}

/// Creates and starts the container, then applies its CPU quota; on a
/// failure nothing of it is left. Returns the container id.
pub async fn launch(client: CriClient, l: Launch) -> Result<String, LaunchError> {
    let id = client
        .create_container(&l.sandbox_id, l.config, l.sandbox_config)
        .await
        .map_err(LaunchError::Create)?;
    if let Err(e) = client.start_container(&id).await {
        let _ = client.remove_container(&id).await;
        return Err(LaunchError::Start(e));
    }
    // A task that already exited needs no limit (containerd refuses to
    // update it, with various messages): only a running one is a failure.
    if let Some(limits) = l.limits
        && let Err(e) = client.update_container_resources(&id, limits).await
        && !exited_meanwhile(&e.to_string())
        && still_running(&client, &id).await
    {
        let _ = client.stop_container(&id, 0).await;
        let _ = client.remove_container(&id).await;
        return Err(LaunchError::Limits(e));
    }
    Ok(id)
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

/// Whether a container is still running after an update failed.
/// containerd handles a task's exit event asynchronously, so the status
/// can say "running" for a moment after the shim is gone: look a few
/// times before calling the failure real.
async fn still_running(client: &CriClient, container_id: &str) -> bool {
    for _ in 0..10 {
        match client.container_status(container_id).await {
            Ok(st) if state_of(&st) == cri::ContainerState::ContainerRunning => {}
            _ => return false,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}
