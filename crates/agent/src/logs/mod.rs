//! Task logs on this node. The files themselves (layout, format,
//! rotation, the start of each run, the exec capture, reading) are
//! [`corral_runtime::logs`], re-exported here; this adds the agent's
//! periodic upkeep: CRI log rotation and deleting logs past retention.
//!
//! The allocation's directory stays after the allocation stops (only its
//! record goes, see [`crate::layout::AllocDir::forget`]);
//! [`crate::layout::sweep`] deletes it once the retention has passed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::driver::Driver;
use crate::node::Shared;

pub use corral_runtime::logs::*;

/// How often the agent checks container logs for rotation by default
/// (the kubelet's period).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How long logs of a stopped allocation are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often [`crate::layout::sweep`] runs for a retention: a quarter of it, between a
/// second and ten minutes.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The agent's log upkeep until `shutdown`: every `check` it asks each
/// driver to rotate the logs it does not write itself (containers), and
/// every [`sweep_interval`] it deletes the directories of allocations stopped
/// more than `retention` ago.
pub async fn upkeep(
    shared: Arc<Shared>,
    drivers: Vec<Arc<dyn Driver>>,
    node_id: String,
    check: Duration,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut rotate = tokio::time::interval(check.max(Duration::from_millis(100)));
    rotate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeps = tokio::time::interval(sweep_interval(retention));
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = rotate.tick() => {
                for d in &drivers {
                    match d.rotate_logs(&node_id).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(driver = %d.kind(), rotated = n, "rotated task logs"),
                        Err(e) => tracing::warn!(driver = %d.kind(), error = %e, "cannot rotate task logs"),
                    }
                }
            }
            _ = sweeps.tick() => {
                let s = shared.clone();
                let allocs = s.dirs.allocs();
                let _ = tokio::task::spawn_blocking(move || {
                    crate::layout::sweep(&allocs, retention, |id| s.is_active(id))
                })
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
