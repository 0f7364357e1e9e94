//! The agent's side of a run's capture: one copier at a time until the
//! output is all in the log. With a capture process: start one, start
//! another when it dies early (its FIFOs are still there), wait for one
//! that a previous agent started; copy in the agent when none can start.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::copy::{Readers, copy};
use super::lock::{self, Taken};
use super::{CaptureSpec, Copier, Drained, SUBCOMMAND, active};
use crate::logs::writer;

/// How often a copier held by someone else is checked for its end.
const WAIT: Duration = Duration::from_millis(100);
/// Pause before trying again after a failure.
const RETRY: Duration = Duration::from_millis(200);
/// A capture process that ends sooner than this (its FIFOs still there)
/// counts as failing fast.
const QUICK: Duration = Duration::from_secs(1);
/// Failing fast this many times in a row: copy in the agent instead.
const QUICK_FAILURES: u32 = 5;

/// Supervises the copy of a run until its output is all in the log.
pub(super) fn spawn(spec: CaptureSpec, copier: Copier) -> Drained {
    let (tx, rx) = watch::channel(false);
    let drained = Drained(rx);
    active().insert(spec.stdout_fifo.clone(), drained.clone());
    // Never read: keeps what the pipes hold while no copier has them open
    // (before the first one opens them, between a capture process's death
    // and the next one). Opened now: the task may be gone before the
    // supervision runs.
    let keep: Vec<File> = [&spec.stdout_fifo, &spec.stderr_fifo]
        .into_iter()
        .filter_map(|p| lock::open_reader(p).ok())
        .collect();
    tokio::spawn(async move {
        match &copier {
            Copier::InProcess => copy_here(&spec).await,
            Copier::Process(exe) => by_processes(&spec, exe).await,
        }
        drop(keep);
        spec.remove_fifos();
        active().remove(&spec.stdout_fifo);
        tx.send_replace(true);
    });
    drained
}

/// Copies in this process once no other copier (a capture process of
/// before) holds the run; returns when every writer is gone. Errors are
/// retried: giving up would leave the task blocked on a full pipe.
async fn copy_here(spec: &CaptureSpec) {
    let mut warned = false;
    while spec.fifos_exist() {
        match copy_once(spec).await {
            Ok(true) => return,
            Ok(false) => tokio::time::sleep(WAIT).await,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(fifo = %spec.stdout_fifo.display(), error = %e,
                        "cannot copy the task's output; trying again");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One copy to the end of the writers; false when another copier holds
/// the run.
async fn copy_once(spec: &CaptureSpec) -> std::io::Result<bool> {
    let held = match lock::take(&spec.stdout_fifo)? {
        Taken::Held { _fd } => _fd,
        Taken::Gone => return Ok(true),
        Taken::Busy => return Ok(false),
    };
    let Some(readers) = Readers::open(spec)? else {
        return Ok(true);
    };
    let w = writer::shared(&spec.file, spec.policy)?;
    copy(spec, readers, &w, std::future::pending()).await;
    // Gone before the lock goes: whoever takes it next sees the end.
    spec.remove_fifos();
    drop(held);
    Ok(true)
}

/// Keeps a capture process running for the run until its FIFOs are gone.
async fn by_processes(spec: &CaptureSpec, exe: &Path) {
    let mut quick = 0;
    while spec.fifos_exist() {
        if lock::copier_runs(&spec.stdout_fifo) {
            // Started by an agent before this one.
            tokio::time::sleep(WAIT).await;
            continue;
        }
        let started = Instant::now();
        let status = match start_process(exe, spec) {
            Ok(mut child) => child.wait().await,
            Err(e) => {
                tracing::warn!(exe = %exe.display(), error = %e,
                    "cannot start a capture process; copying in the agent");
                return copy_here(spec).await;
            }
        };
        if !spec.fifos_exist() {
            return;
        }
        tracing::warn!(fifo = %spec.stdout_fifo.display(), ?status,
            "the capture process of a task ended before its task; starting another");
        if started.elapsed() >= QUICK {
            quick = 0;
            continue;
        }
        quick += 1;
        if quick >= QUICK_FAILURES {
            tracing::warn!(fifo = %spec.stdout_fifo.display(),
                "the capture process keeps ending at once; copying in the agent");
            return copy_here(spec).await;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// `<exe> logmon <spec>`. Its stderr is the agent's: its warnings go where
/// the agent's do.
fn start_process(exe: &Path, spec: &CaptureSpec) -> std::io::Result<tokio::process::Child> {
    let json = serde_json::to_string(spec).map_err(std::io::Error::other)?;
    tokio::process::Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // It outlives the agent, by design.
        .kill_on_drop(false)
        .spawn()
}
