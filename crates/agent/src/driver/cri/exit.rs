//! Watching containers for their exit: one poller per started (or
//! recovered) task, whose result stays cached until the task is destroyed,
//! so `wait` is cancel-safe and can be called again and again.

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::client::CriClient;
use super::container::{exit_of, state_of};
use crate::driver::ExitResult;

/// Log a failing status call once, then every this many failures.
const WARN_EVERY: u32 = 50;

#[derive(Debug, Clone)]
pub struct Tracked {
    pub exit: watch::Receiver<Option<ExitResult>>,
    /// Wakes the poller up at once (after a stop).
    pub poke: Arc<Notify>,
    pub poller: AbortHandle,
}

impl Tracked {
    pub fn spawn(client: CriClient, container_id: String, interval: Duration) -> Tracked {
        let (tx, rx) = watch::channel(None);
        let poke = Arc::new(Notify::new());
        let p = poke.clone();
        let task = tokio::spawn(poll(client, container_id, tx, p, interval));
        Tracked {
            exit: rx,
            poke,
            poller: task.abort_handle(),
        }
    }

    /// Resolves with the exit, now or later.
    pub async fn wait(&self) -> Option<ExitResult> {
        let mut rx = self.exit.clone();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
    }
}

async fn poll(
    client: CriClient,
    container_id: String,
    tx: watch::Sender<Option<ExitResult>>,
    poke: Arc<Notify>,
    interval: Duration,
) {
    let mut failures = 0u32;
    loop {
        match client.container_status(&container_id).await {
            Ok(st) if state_of(&st) == cri::ContainerState::ContainerExited => {
                tx.send_replace(Some(exit_of(&st)));
                return;
            }
            Ok(_) => failures = 0,
            Err(e) if e.is_not_found() => {
                tx.send_replace(Some(ExitResult {
                    message: "the container is gone (removed outside corral)".into(),
                    ..ExitResult::default()
                }));
                return;
            }
            Err(e) => {
                if failures.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(container = %container_id, error = %e, failures,
                        "cannot get the container status; retrying");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = poke.notified() => {}
        }
    }
}
