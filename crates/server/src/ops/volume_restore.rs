//! `corral volume restore VOL SNAPSHOT|BACKUP [--as NEW]`: which snapshot
//! or backup a name means, and making a new volume from it.
//!
//! A new volume is recorded first, marked as being restored (no
//! allocation may claim it), then made by an agent: from a snapshot on the
//! node that holds the snapshot, from a backup on the source's node or,
//! when that node is down, on another one with room. The agent's first
//! report marks it done. A restore that fails takes its record back
//! unless an allocation waits for the volume: then the record stays,
//! marked restoring with the error, and the same command restores it
//! again (as it does after a crash interrupted one).

use std::sync::Arc;

use corral_store::Write;
use corral_types::api::{VolumeRestoreJob, VolumeRestoreNew};
use corral_types::{NodeStatus, Volume, VolumeBackup, VolumeOrigin, now_ms, parse_volume_id};

use crate::ServerError;
use crate::core::Core;
use crate::error::Resource;

/// What `name` names on volume `v`: one of its snapshots, or a backup by
/// its id or a unique prefix of at least 8 digits (with its target's
/// config, which travels only to the agent).
pub fn source(core: &Core, v: &Volume, name: &str) -> Result<VolumeRestoreJob, ServerError> {
    if v.snapshots.iter().any(|s| s.name == name) {
        return Ok(VolumeRestoreJob {
            snapshot: Some(name.to_owned()),
            backup: None,
            target: None,
        });
    }
    let found: Vec<&VolumeBackup> = v
        .backups
        .iter()
        .filter(|b| name.len() >= 8 && b.id.starts_with(name))
        .collect();
    let [backup] = found.as_slice() else {
        return Err(ServerError::BadRequest(format!(
            "volume {} has no snapshot or backup {name:?}; list them with `corral volume snapshots {}` and `corral volume status {}` (a backup by its id, at least 8 digits)",
            v.id, v.id, v.id
        )));
    };
    let target = core
        .config
        .backup_targets
        .get(&backup.target)
        .ok_or_else(|| {
            ServerError::Conflict(format!(
                "backup {name} is in target `{}`, which the server config does not have",
                backup.target
            ))
        })?;
    Ok(VolumeRestoreJob {
        snapshot: None,
        backup: Some((*backup).clone()),
        target: Some(target.to_wire()),
    })
}

/// Make volume `new_id` from `src`'s snapshot or backup; the new record
/// once its node has the data.
pub async fn restore_as(
    core: &Arc<Core>,
    src: &Volume,
    from: VolumeRestoreJob,
    new_id: &str,
) -> Result<Volume, ServerError> {
    let (job, name, slot) =
        parse_volume_id(new_id).map_err(|e| ServerError::BadRequest(format!("as: {e}")))?;
    let node_id = node_for(core, src, &from)?;
    let origin = VolumeOrigin {
        volume: src.id.clone(),
        snapshot: from.snapshot.clone(),
        backup: from.backup.clone(),
        done: false,
        error: None,
    };
    let now = now_ms();
    let record = Volume {
        id: new_id.to_owned(),
        job,
        // Unknown until a job claims it (any group of job `job` with a
        // volume `name`).
        group: String::new(),
        name,
        slot,
        size: src.size,
        provider: src.provider.clone(),
        node_id,
        generation: 1,
        alloc_id: None,
        moved_from: None,
        last_move_downtime_ms: None,
        snapshots: Vec::new(),
        backups: Vec::new(),
        backup_error: None,
        restored_from: None,
        origin: Some(origin),
        used: None,
        created_at: now,
        modified_at: now,
        create_index: 0,
        modify_index: 0,
    };
    // One restore of an id at a time; a record marked restoring that no
    // restore here is filling was interrupted (a crash) or failed, and
    // may be restored again.
    let guard = Restoring::start(core, new_id)?;
    let (_, record) = core
        .write(move |state, _| {
            match state.volume(&record.id) {
                None => {}
                Some(cur) if cur.restoring() && cur.alloc_id.is_none() => {}
                Some(_) => {
                    return Err(ServerError::Conflict(format!(
                        "volume {} exists; pick another id with --as, or delete it first with `corral volume delete {} --yes`",
                        record.id, record.id
                    )));
                }
            }
            Ok((vec![Write::Volume(record.clone())], record.clone()))
        })
        .await?;
    let body = VolumeRestoreNew {
        source: src.id.clone(),
        source_generation: from.snapshot.is_some().then_some(src.generation),
        size: src.size,
        from,
    };
    let body = serde_json::to_value(&body).map_err(|e| ServerError::Internal(e.to_string()))?;
    // Its own task: a client that hangs up does not leave a record
    // behind that nothing finishes or takes back.
    let task = {
        let core = core.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let made = super::volumes::agent_call(
                &core,
                &record,
                reqwest::Method::POST,
                "restore-new",
                Some(body),
            )
            .await;
            if let Err(e) = &made {
                give_up(&core, &record.id, e.to_string()).await;
            }
            made
        })
    };
    let answer = task
        .await
        .map_err(|e| ServerError::Internal(format!("restore task: {e}")))??;
    finished(core, new_id, &answer).await
}

/// The node to make the new volume on: a snapshot's own node (it must be
/// up); for a backup the source's node while it is up, otherwise the
/// schedulable node with volumes and the most room.
fn node_for(core: &Core, src: &Volume, from: &VolumeRestoreJob) -> Result<String, ServerError> {
    let state = core.store.snapshot();
    let up = |id: &str| {
        state
            .node_by_id(id)
            .is_some_and(|n| n.status == NodeStatus::Ready)
    };
    if up(&src.node_id) {
        return Ok(src.node_id.clone());
    }
    let holder = state
        .node_by_id(&src.node_id)
        .map_or(src.node_id.clone(), |n| n.name.clone());
    if from.snapshot.is_some() {
        return Err(ServerError::Conflict(format!(
            "the snapshot is on node {holder}, which is not up; restore one of the volume's backups instead (`corral volume status {}` lists them)",
            src.id
        )));
    }
    let free = |n: &corral_types::Node| {
        let used: u64 = state
            .node_allocs(&n.id)
            .iter()
            .filter(|a| a.may_run())
            .map(|a| a.resources.disk.0)
            .sum();
        n.resources.disk.0.saturating_sub(used)
    };
    state
        .nodes_iter()
        .filter(|n| n.status == NodeStatus::Ready && n.eligible && !n.draining)
        .filter(|n| free(n) >= src.size.0)
        .max_by_key(|n| (free(n), std::cmp::Reverse(n.name.clone())))
        .map(|n| n.id.clone())
        .ok_or_else(|| {
            ServerError::Conflict(format!(
                "node {holder} holding volume {} is not up, and no other ready node with volumes has {} free; add a node or free some room",
                src.id, src.size
            ))
        })
}

/// The record after the agent made the copy: marked done (its report
/// usually did that already) with the provider that holds it.
async fn finished(
    core: &Arc<Core>,
    id: &str,
    answer: &serde_json::Value,
) -> Result<Volume, ServerError> {
    let provider = answer
        .get("provider")
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let id = id.to_owned();
    let (_, v) = core
        .write(move |state, _| {
            let cur = state
                .volume(&id)
                .ok_or_else(|| ServerError::not_found(Resource::Volume, &id))?;
            let mut v = (**cur).clone();
            if let Some(o) = v.origin.as_mut() {
                o.done = true;
            }
            if let Some(p) = &provider {
                v.provider = p.clone();
            }
            if v == **cur {
                return Ok((Vec::new(), v));
            }
            v.modified_at = now_ms();
            Ok((vec![Write::Volume(v.clone())], v))
        })
        .await?;
    Ok(v)
}

/// A failed restore: its record goes, unless an allocation waits for the
/// volume. Then it stays marked restoring, with the error, so that
/// allocation keeps waiting (it must not start on an empty volume) until
/// the volume is restored again.
async fn give_up(core: &Arc<Core>, id: &str, error: String) {
    let id = id.to_owned();
    let undone = core
        .write(move |state, _| {
            let Some(cur) = state
                .volume(&id)
                .filter(|v| v.restoring() && v.alloc_id.is_none())
            else {
                return Ok((Vec::new(), ()));
            };
            if awaited_by(state, &id).is_none() {
                return Ok((vec![Write::DeleteVolume(id.clone())], ()));
            }
            let mut v = (**cur).clone();
            if let Some(o) = v.origin.as_mut() {
                o.error = Some(error.clone());
            }
            v.modified_at = now_ms();
            Ok((vec![Write::Volume(v)], ()))
        })
        .await;
    if let Err(e) = undone {
        tracing::warn!(error = %e, "cannot record the end of a failed restore");
    }
}

/// The live allocation that uses volume `id`, if one does: its name.
pub fn awaited_by(state: &corral_store::State, id: &str) -> Option<String> {
    let (job, _, _) = parse_volume_id(id).ok()?;
    state.job_allocs(&job).into_iter().find_map(|a| {
        if !a.is_live() {
            return None;
        }
        let version = corral_scheduler::StateView::job_version(state, &a.job, a.job_version)?;
        let g = version.spec.groups.iter().find(|g| g.name == a.group)?;
        g.volumes
            .iter()
            .any(|v| corral_types::GroupSpec::volume_id(&a.job, v, a.index) == id)
            .then(|| a.name())
    })
}

/// The id is being restored by this server; released when the restore
/// ends, however it ends.
struct Restoring {
    core: Arc<Core>,
    id: String,
}

impl Restoring {
    fn start(core: &Arc<Core>, id: &str) -> Result<Restoring, ServerError> {
        if !core.restores.start(id) {
            return Err(ServerError::Conflict(format!(
                "volume {id} is being restored already; wait for that restore to end (`corral volume status {id}`)"
            )));
        }
        Ok(Restoring {
            core: core.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for Restoring {
    fn drop(&mut self) {
        self.core.restores.done(&self.id);
    }
}
