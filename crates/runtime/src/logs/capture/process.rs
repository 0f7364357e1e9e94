//! The capture process of a run: `corral logmon <spec>`, started by the
//! exec driver (hidden from the CLI's help). It copies the run's FIFOs to
//! the task's log until every writer is gone, then removes the FIFOs and
//! exits. It leads its own session, outside the task's cgroup and process
//! group, so neither a stop of the task nor the agent's death (or a
//! Ctrl-C in the agent's terminal) ends it. It exits at once when another
//! copier holds the run. SIGTERM or SIGINT end it early, writing what it
//! read of an unfinished line as a `P` part; the agent then starts another
//! one, which continues the line.

use std::future::Future;

use super::copy::{Readers, copy};
use super::lock::{self, Taken};
use super::{CaptureError, CaptureSpec};
use crate::logs::writer;

/// The binary's subcommand that runs [`run`].
pub const SUBCOMMAND: &str = "logmon";

/// The capture process's work; `spec` is the [`CaptureSpec`] as JSON.
/// Needs a tokio runtime (one thread is plenty).
pub async fn run(spec: &str) -> Result<(), CaptureError> {
    let spec: CaptureSpec = serde_json::from_str(spec)?;
    // Fails only for a group leader: then it already is out of the
    // agent's process group.
    let _ = rustix::process::setsid();
    let io = |what, source| CaptureError::Io {
        what,
        path: spec.stdout_fifo.clone(),
        source,
    };
    let held = match lock::take(&spec.stdout_fifo).map_err(|e| io("cannot lock", e))? {
        Taken::Held { _fd } => _fd,
        Taken::Gone => return Ok(()),
        Taken::Busy => {
            tracing::info!(fifo = %spec.stdout_fifo.display(), "another copier has the task's output");
            return Ok(());
        }
    };
    let Some(readers) = Readers::open(&spec).map_err(|e| io("cannot open", e))? else {
        return Ok(());
    };
    let w = writer::shared(&spec.file, spec.policy).map_err(|source| CaptureError::Io {
        what: "cannot open the log",
        path: spec.file.clone(),
        source,
    })?;
    if copy(&spec, readers, &w, stop_signal()).await {
        // Gone before the lock goes: whoever takes it next sees the end.
        spec.remove_fifos();
    }
    drop(held);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (never, when they cannot be watched).
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}
