//! Waiting on jobs through the API: allocations running, failed, stopped;
//! logs containing a line. Every wait fails with the job's allocations in
//! the message.

use std::time::Duration;

use corral_client::{Client, LogQuery};
use corral_types::api::{AllocView, JobView};
use corral_types::{ClientStatus, DesiredStatus, TaskLifecycle};

use crate::eventually;

/// Allocations of the job's current version that run (desired run).
pub fn running(j: &JobView) -> Vec<&AllocView> {
    j.allocations
        .iter()
        .filter(|a| {
            a.desired == DesiredStatus::Run
                && a.status == ClientStatus::Running
                && a.job_version == j.version
        })
        .collect()
}

/// The allocations in one line, for failure messages.
pub fn summary(j: &JobView) -> String {
    format!(
        "{:?}",
        j.allocations
            .iter()
            .map(|a| (&a.name, a.status, a.desired, &a.message, &a.tasks))
            .collect::<Vec<_>>()
    )
}

/// Waits until exactly `n` allocations of the job run with every task
/// running.
pub async fn wait_running(c: &Client, name: &str, n: usize, deadline: Duration) -> JobView {
    eventually(
        &format!("{n} allocations of {name} running"),
        deadline,
        || async {
            let j = c.job(name, None).await.map_err(|e| e.to_string())?;
            let all_tasks_running = running(&j).iter().all(|a| {
                !a.tasks.is_empty() && a.tasks.values().all(|t| t.state == TaskLifecycle::Running)
            });
            if running(&j).len() == n && all_tasks_running {
                Ok(j)
            } else {
                Err(summary(&j))
            }
        },
    )
    .await
}

/// The first allocation of the job in `status`.
pub async fn wait_alloc(
    c: &Client,
    name: &str,
    status: ClientStatus,
    deadline: Duration,
) -> AllocView {
    eventually(
        &format!("an allocation of {name} {status:?}"),
        deadline,
        || async {
            let j = c.job(name, None).await.map_err(|e| e.to_string())?;
            j.allocations
                .iter()
                .find(|a| a.status == status)
                .cloned()
                .ok_or_else(|| summary(&j))
        },
    )
    .await
}

/// Stops the job and waits until every allocation is terminal.
pub async fn stop_and_wait(c: &Client, name: &str, deadline: Duration) {
    c.stop(name, false)
        .await
        .unwrap_or_else(|e| panic!("stop {name}: {e}"));
    eventually(
        &format!("allocations of {name} terminal"),
        deadline,
        || async {
            let j = c.job(name, None).await.map_err(|e| e.to_string())?;
            if j.allocations.iter().all(|a| a.status.is_terminal()) {
                Ok(())
            } else {
                Err(summary(&j))
            }
        },
    )
    .await;
}

/// One stream (`stdout`, `stderr`) of an allocation's log.
pub async fn log_text(c: &Client, alloc: &str, stream: &str) -> Result<String, String> {
    let q = LogQuery {
        stream: Some(stream.into()),
        ..Default::default()
    };
    let r = c.logs(alloc, &q).await.map_err(|e| e.to_string())?;
    r.text().await.map_err(|e| e.to_string())
}

/// The log once it contains `want`.
pub async fn log_containing(
    c: &Client,
    alloc: &str,
    stream: &str,
    want: &str,
    deadline: Duration,
) -> String {
    eventually(
        &format!("{stream} of {alloc} has {want:?}"),
        deadline,
        || async {
            let text = log_text(c, alloc, stream).await?;
            if text.contains(want) {
                Ok(text)
            } else {
                Err(format!("log so far: {text:?}"))
            }
        },
    )
    .await
}
