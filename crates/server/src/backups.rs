//! Scheduled volume backups: every volume whose job's spec has `backup`
//! is backed up by the agent holding it once `every` has passed since its
//! newest backup (restic, from a read-only snapshot, to the target named
//! in the server config), and the target's retention applied. The server
//! keeps the schedule (it knows the targets and their secrets); the agent
//! does the work. One backup per volume at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_types::api::{VolumeBackupDone, VolumeBackupJob};
use corral_types::{NodeStatus, Volume, VolumeBackup, now_ms};

use crate::ServerError;
use crate::core::Core;
use crate::error::Resource;
use crate::ops::volumes as ops;

/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(10);
/// After a failure, the next try comes this much later (not at once).
const RETRY_AFTER: u64 = 5 * 60_000;

/// Volumes with a backup in flight.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    pub(crate) fn start(&self, id: &str) -> bool {
        self.0
            .lock()
            .map(|mut s| s.insert(id.to_owned()))
            .unwrap_or(false)
    }
    pub(crate) fn done(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(id);
        }
    }
}

pub async fn run(core: Arc<Core>) {
    let mut failed_at: std::collections::HashMap<String, u64> = Default::default();
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let now = now_ms();
        let state = core.store.snapshot();
        let due: Vec<Volume> = state
            .volumes()
            .filter(|v| {
                let Some(policy) = ops::current_spec(&state, v).and_then(|s| s.backup.as_ref())
                else {
                    return false;
                };
                let up = state
                    .node_by_id(&v.node_id)
                    .is_some_and(|n| n.status != NodeStatus::Down);
                let last = v.backups.iter().map(|b| b.taken_at).max().unwrap_or(0);
                let retry_ok = failed_at
                    .get(&v.id)
                    .is_none_or(|t| now >= t.saturating_add(RETRY_AFTER));
                up && retry_ok && now >= policy.every.after(last)
            })
            .map(|v| (**v).clone())
            .collect();
        for v in due {
            let c = core.clone();
            match backup(&c, &v).await {
                Ok(b) => {
                    failed_at.remove(&v.id);
                    tracing::info!(volume = %v.id, backup = %b.id, took_ms = b.took_ms, "volume backed up");
                }
                Err(e) => {
                    failed_at.insert(v.id.clone(), now);
                    tracing::warn!(volume = %v.id, error = %e, "volume backup failed");
                }
            }
        }
    }
}

/// `POST /v1/volumes/{id}/backup`: one backup now.
pub async fn run_now(core: &Arc<Core>, id: &str) -> Result<VolumeBackup, ServerError> {
    let v = core
        .store
        .snapshot()
        .volume(id)
        .map(|v| (**v).clone())
        .ok_or_else(|| ServerError::not_found(Resource::Volume, id))?;
    backup(core, &v).await
}

/// Ask the holding agent for a backup and record the outcome.
async fn backup(core: &Arc<Core>, v: &Volume) -> Result<VolumeBackup, ServerError> {
    let state = core.store.snapshot();
    let policy = ops::current_spec(&state, v)
        .and_then(|s| s.backup.clone())
        .ok_or_else(|| {
            ServerError::BadRequest(format!(
                "volume {} has no backup in its job's spec; add `backup: {{every: 24h, to: TARGET}}` to it",
                v.id
            ))
        })?;
    let target = core.config.backup_targets.get(&policy.to).ok_or_else(|| {
        ServerError::Conflict(format!(
            "the server config has no backup target `{}` any more",
            policy.to
        ))
    })?;
    if !core.backups.start(&v.id) {
        return Err(ServerError::Conflict(format!(
            "volume {} is being backed up already",
            v.id
        )));
    }
    let job = VolumeBackupJob {
        to: policy.to.clone(),
        target: target.to_wire(),
        keep: policy.keep,
        expect_repository: v.backups.iter().any(|b| b.target == policy.to),
    };
    let body = serde_json::to_value(&job).map_err(|e| ServerError::Internal(e.to_string()));
    let answer = match body {
        Ok(b) => ops::agent_call(core, v, reqwest::Method::POST, "backup", Some(b)).await,
        Err(e) => Err(e),
    };
    core.backups.done(&v.id);
    let outcome = answer.and_then(|a| {
        serde_json::from_value::<VolumeBackupDone>(a)
            .map_err(|e| ServerError::Internal(format!("the agent's backup answer: {e}")))
    });
    let recorded = ops::record_backup(
        core,
        &v.id,
        v.generation,
        outcome
            .as_ref()
            .map(|d| d.clone())
            .map_err(|e| e.to_string()),
    )
    .await;
    let done = outcome?;
    recorded?;
    Ok(done.backup)
}
