//! Volume records: agents claim a volume for an allocation (creating it,
//! taking it over on the same node, or ending a move), report its
//! snapshots; users delete them. Every check happens inside the store's
//! write, so two claims cannot both win.

use std::sync::Arc;

use corral_store::{State, Write};
use corral_types::api::{VolumeClaim, VolumeReport};
use corral_types::{GroupSpec, NodeStatus, Volume, now_ms};

use crate::ServerError;
use crate::core::Core;
use crate::error::Resource;

/// Apply a claim; the volume as stored after it.
pub async fn claim(core: &Arc<Core>, id: &str, c: VolumeClaim) -> Result<Volume, ServerError> {
    let id = id.to_owned();
    let now = now_ms();
    let (_, v) = core
        .write(move |state, _| {
            let v = claimed(state, &id, &c, now)?;
            Ok((vec![Write::Volume(v.clone())], v))
        })
        .await?;
    Ok(v)
}

fn claimed(state: &State, id: &str, c: &VolumeClaim, now: u64) -> Result<Volume, ServerError> {
    let alloc = state
        .alloc(&c.alloc)
        .ok_or_else(|| ServerError::not_found(Resource::Allocation, &c.alloc))?;
    if alloc.node_id != c.node {
        return Err(ServerError::Conflict(format!(
            "allocation {} runs on node {}, not {}",
            alloc.id, alloc.node_id, c.node
        )));
    }
    if !alloc.is_live() {
        return Err(ServerError::Conflict(format!(
            "allocation {} is not meant to run any more; it cannot take volume {id}",
            alloc.id
        )));
    }
    let job = corral_scheduler::StateView::job_version(state, &alloc.job, alloc.job_version)
        .ok_or_else(|| ServerError::not_found(Resource::Job, &alloc.job))?;
    let group = job
        .spec
        .groups
        .iter()
        .find(|g| g.name == alloc.group)
        .ok_or_else(|| ServerError::Internal(format!("group {} missing", alloc.group)))?;
    let spec = group
        .volumes
        .iter()
        .find(|v| GroupSpec::volume_id(&alloc.job, v, alloc.index) == id)
        .ok_or_else(|| {
            ServerError::BadRequest(format!(
                "allocation {} has no volume {id} in its spec",
                alloc.id
            ))
        })?;
    let Some(cur) = state.volume(id) else {
        if c.generation.is_some() {
            return Err(ServerError::Conflict(format!(
                "volume {id} does not exist any more (deleted?)"
            )));
        }
        return Ok(Volume {
            origin: None,
            backup_error: Default::default(),
            backups: Default::default(),
            restored_from: Default::default(),
            id: id.to_owned(),
            job: alloc.job.clone(),
            group: alloc.group.clone(),
            name: spec.name.clone(),
            slot: spec.per_alloc.then_some(alloc.index),
            size: spec.size,
            provider: c.provider.clone(),
            node_id: c.node.clone(),
            generation: 1,
            alloc_id: Some(alloc.id.clone()),
            moved_from: None,
            last_move_downtime_ms: None,
            snapshots: Vec::new(),
            used: None,
            created_at: now,
            modified_at: now,
            create_index: 0,
            modify_index: 0,
        });
    };
    if cur.restoring() {
        return Err(ServerError::Conflict(format!(
            "volume {id} is still being restored from volume {}; the allocation waits for it",
            cur.origin.as_ref().map_or("?", |o| o.volume.as_str())
        )));
    }
    if c.generation != Some(cur.generation) {
        return Err(ServerError::Conflict(format!(
            "volume {id} is at generation {}, the claim saw {:?}; read it again",
            cur.generation, c.generation
        )));
    }
    // Never two writers: the allocation holding it must have stopped.
    if let Some(holder) = cur.alloc_id.as_deref().filter(|h| *h != alloc.id)
        && state.alloc(holder).is_some_and(|h| h.may_run())
    {
        return Err(ServerError::Conflict(format!(
            "volume {id} is still in use by allocation {holder}; it is taken over once that one has stopped"
        )));
    }
    if c.restored_from.is_some() {
        recoverable(state, cur, spec, now)?;
    }
    let mut v = (**cur).clone();
    v.alloc_id = Some(alloc.id.clone());
    // A volume restored under a new id learns its group from the first
    // allocation that takes it.
    if v.group.is_empty() {
        v.group = alloc.group.clone();
    }
    v.size = v.size.max(spec.size);
    v.modified_at = now;
    if cur.node_id != c.node {
        // A restore marks the record, so the lost node's copy is set
        // aside when it returns (not deleted as after a clean move); the
        // next clean move clears it.
        v.restored_from = c.restored_from.clone();
        v.moved_from = Some(cur.node_id.clone());
        v.node_id = c.node.clone();
        v.generation += 1;
        v.last_move_downtime_ms = c.downtime_ms;
        v.provider = c.provider.clone();
        // Snapshots stay with the node that took them.
        v.snapshots.clear();
    }
    Ok(v)
}

/// The holder's report: snapshots and use. Reports from a node that no
/// longer holds the volume (a stale copy) change nothing.
pub async fn report(core: &Arc<Core>, id: &str, r: VolumeReport) -> Result<Volume, ServerError> {
    let id = id.to_owned();
    let now = now_ms();
    let (_, v) = core
        .write(move |state, _| {
            let cur = state
                .volume(&id)
                .ok_or_else(|| ServerError::not_found(Resource::Volume, &id))?;
            if cur.node_id != r.node || cur.generation != r.generation {
                return Err(ServerError::Conflict(format!(
                    "volume {id} is held by node {} at generation {}, not by {} at {}",
                    cur.node_id, cur.generation, r.node, r.generation
                )));
            }
            let size = r.size.map_or(cur.size, |s| s.max(cur.size));
            // The holder reports only a copy that is whole: one restored
            // under a new id is done.
            let restoring = cur.restoring();
            if cur.snapshots == r.snapshots && cur.used == r.used && cur.size == size && !restoring
            {
                return Ok((Vec::new(), (**cur).clone()));
            }
            let mut v = (**cur).clone();
            v.snapshots = r.snapshots;
            v.used = r.used;
            v.size = size;
            if let Some(o) = v.origin.as_mut() {
                o.done = true;
            }
            v.modified_at = now;
            Ok((vec![Write::Volume(v.clone())], v))
        })
        .await?;
    Ok(v)
}

/// Why volume `v` may not be changed under its allocation now, if so.
pub fn in_use(state: &State, v: &Volume) -> Option<String> {
    let holder = v.alloc_id.as_deref()?;
    let a = state.alloc(holder)?;
    a.may_run().then(|| {
        format!(
            "volume {} is in use by allocation {} ({}); stop it first with `corral stop {}`",
            v.id,
            a.id,
            a.name(),
            a.job
        )
    })
}

/// Forget the record (its node has deleted the data).
pub async fn forget(core: &Arc<Core>, id: &str) -> Result<(), ServerError> {
    let id = id.to_owned();
    core.write(move |state, _| {
        let v = state
            .volume(&id)
            .ok_or_else(|| ServerError::not_found(Resource::Volume, &id))?;
        if let Some(why) = in_use(state, v) {
            return Err(ServerError::Conflict(why));
        }
        Ok((vec![Write::DeleteVolume(id.clone())], ()))
    })
    .await?;
    Ok(())
}

/// Refuse a job version that shrinks an existing volume (images and
/// filesystems grow in place, they do not shrink) or backs up to a target
/// the server does not know.
pub fn check(
    state: &State,
    jobs: &[corral_types::spec::LocatedJob],
    targets: &corral_volumes::backup::BackupTargets,
) -> Result<(), ServerError> {
    let mut errors = Vec::new();
    for j in jobs {
        for (gi, g) in j.spec.groups.iter().enumerate() {
            for (vi, spec) in g.volumes.iter().enumerate() {
                if let Some(b) = &spec.backup
                    && targets.get(&b.to).is_none()
                {
                    let known: Vec<&str> = targets.0.keys().map(String::as_str).collect();
                    errors.push(format!(
                        "job {}: groups[{gi}].volumes[{vi}].backup.to: the server has no backup target `{}`; {}",
                        j.spec.name,
                        b.to,
                        if known.is_empty() {
                            "define one as [server.backup_targets.NAME] in the server config (see docs/VOLUMES.md)".to_owned()
                        } else {
                            format!("its targets are {}", known.join(", "))
                        }
                    ));
                }
                let biggest = state
                    .volumes()
                    .filter(|v| {
                        // A volume restored under a new id has no group
                        // until an allocation takes it.
                        v.job == j.spec.name
                            && (v.group == g.name || v.group.is_empty())
                            && v.name == spec.name
                    })
                    .max_by_key(|v| v.size);
                if let Some(v) = biggest
                    && v.size > spec.size
                {
                    errors.push(format!(
                        "job {}: groups[{gi}].volumes[{vi}].size: volume {} is {} and cannot shrink to {}; keep size at {} or more, or delete the volume first (`corral volume delete {} --yes`)",
                        j.spec.name, v.id, v.size, spec.size, v.size, v.id
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServerError::BadRequest(errors.join("\n")))
    }
}

/// The volume's spec in its job's current version, if the job still has it.
pub fn current_spec<'s>(state: &'s State, v: &Volume) -> Option<&'s corral_types::VolumeSpec> {
    let job = state.job(&v.job)?;
    job.spec
        .groups
        .iter()
        .find(|g| g.name == v.group)?
        .volumes
        .iter()
        .find(|s| s.name == v.name)
}

/// Whether a lost node's volume may be restored from a backup now: its
/// node is down for longer than the spec's grace, the spec says
/// `on_node_loss: restore`, and there is a backup. `Err` says why not
/// (what the waiting allocation shows).
fn recoverable(
    state: &State,
    v: &Volume,
    spec: &corral_types::VolumeSpec,
    now: u64,
) -> Result<corral_types::VolumeBackup, ServerError> {
    let node = state.node_by_id(&v.node_id);
    let name = node.map_or(v.node_id.as_str(), |n| n.name.as_str());
    let down_since = node.and_then(|n| {
        (n.status == corral_types::NodeStatus::Down)
            .then_some(n.down_since.unwrap_or(n.last_heartbeat))
    });
    let Some(since) = down_since.or(node.is_none().then_some(0)) else {
        return Err(ServerError::Conflict(format!(
            "volume {} is on node {name}, which is up: it is moved, not restored",
            v.id
        )));
    };
    if spec.on_node_loss == corral_types::OnNodeLoss::Wait {
        return Err(ServerError::Conflict(format!(
            "volume {} is on node {name}, which is down; waiting for it to come back (on_node_loss: wait)",
            v.id
        )));
    }
    let Some(newest) = v.backups.iter().max_by_key(|b| b.taken_at) else {
        return Err(ServerError::Conflict(format!(
            "volume {} is on node {name}, which is down, and has no backup to restore; waiting for the node",
            v.id
        )));
    };
    let due = spec.node_loss_grace.after(since);
    if now < due {
        return Err(ServerError::Conflict(format!(
            "volume {} is on node {name}, which is down; restoring backup {} (taken {}) at {} unless the node is back",
            v.id,
            short(&newest.id),
            corral_types::civil::utc(newest.taken_at),
            corral_types::civil::utc(due)
        )));
    }
    Ok(newest.clone())
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What an agent restores for allocation `r.alloc` when the volume's node
/// is lost, or why it must wait.
pub fn recovery(
    core: &Core,
    id: &str,
    r: &corral_types::api::VolumeRecover,
) -> Result<corral_types::api::VolumeRecovery, ServerError> {
    let state = core.store.snapshot();
    let v = state
        .volume(id)
        .ok_or_else(|| ServerError::not_found(Resource::Volume, id))?;
    if !state
        .alloc(&r.alloc)
        .is_some_and(|a| a.node_id == r.node && a.is_live())
    {
        return Err(ServerError::Conflict(format!(
            "allocation {} may not take volume {id}",
            r.alloc
        )));
    }
    let spec = current_spec(&state, v).ok_or_else(|| {
        ServerError::Conflict(format!("job {} no longer has volume {}", v.job, v.name))
    })?;
    let backup = recoverable(&state, v, spec, now_ms())?;
    let target = core
        .config
        .backup_targets
        .get(&backup.target)
        .ok_or_else(|| {
            ServerError::Conflict(format!(
                "backup {} of volume {id} is in target `{}`, which the server config no longer has",
                short(&backup.id),
                backup.target
            ))
        })?;
    Ok(corral_types::api::VolumeRecovery {
        backup,
        target: target.to_wire(),
        generation: v.generation,
    })
}

/// Record a backup run's outcome on the volume (if it is still the same
/// copy).
pub async fn record_backup(
    core: &Arc<Core>,
    id: &str,
    generation: u64,
    outcome: Result<corral_types::api::VolumeBackupDone, String>,
) -> Result<(), ServerError> {
    let id = id.to_owned();
    let now = now_ms();
    core.write(move |state, _| {
        let Some(cur) = state.volume(&id) else {
            return Ok((Vec::new(), ()));
        };
        if cur.generation != generation {
            return Ok((Vec::new(), ()));
        }
        let mut v = (**cur).clone();
        match outcome {
            Ok(done) => {
                // Keep what was recorded of older backups (how long they
                // took); restic lists only their ids and times.
                let before = std::mem::take(&mut v.backups);
                v.backups = done
                    .kept
                    .into_iter()
                    .map(|k| before.iter().find(|b| b.id == k.id).cloned().unwrap_or(k))
                    .collect();
                if !v.backups.iter().any(|b| b.id == done.backup.id) {
                    v.backups.push(done.backup);
                }
                v.backups.sort_by_key(|b| b.taken_at);
                v.backup_error = None;
            }
            Err(e) => v.backup_error = Some(e),
        }
        v.modified_at = now;
        Ok((vec![Write::Volume(v)], ()))
    })
    .await?;
    Ok(())
}

/// How long an agent may take for a snapshot, a restore, a delete or a
/// backup (restic over a slow link).
const AGENT_ANSWER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Ask the agent holding `v` (`/v1/agent/volumes/{id}/{action}`).
pub async fn agent_call(
    core: &Core,
    v: &Volume,
    method: reqwest::Method,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, ServerError> {
    let node = core
        .store
        .snapshot()
        .node_by_id(&v.node_id)
        .map(|n| (**n).clone())
        .ok_or_else(|| ServerError::not_found(Resource::Node, &v.node_id))?;
    if node.status == NodeStatus::Down {
        return Err(ServerError::Agent {
            node: node.name.clone(),
            message: format!("is down; volume {} lives there", v.id),
        });
    }
    let mut path = format!("/v1/agent/volumes/{}", v.id);
    if !action.is_empty() {
        path = format!("{path}/{action}");
    }
    let generation = v.generation.to_string();
    agent_request(
        core,
        &node,
        method,
        &path,
        &[("generation", &generation)],
        body,
        AGENT_ANSWER,
    )
    .await
}

/// GET `path` on `node`'s agent, as JSON (quick questions).
pub async fn agent_get(
    core: &Core,
    node: &corral_types::Node,
    path: &str,
) -> Result<serde_json::Value, ServerError> {
    let quick = std::time::Duration::from_secs(10);
    agent_request(core, node, reqwest::Method::GET, path, &[], None, quick).await
}

/// One request to `node`'s agent with the cluster's token; its JSON
/// answer. A 409 stays a conflict (the agent's reason), anything else
/// that is not a success is the agent's error.
pub(crate) async fn agent_request(
    core: &Core,
    node: &corral_types::Node,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<serde_json::Value>,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, ServerError> {
    let agent_err = |message: String| ServerError::Agent {
        node: node.name.clone(),
        message,
    };
    let url = format!("{}{path}", node.address.trim_end_matches('/'));
    let mut req = core
        .http
        .request(method, &url)
        .query(query)
        .timeout(timeout);
    if let Some(t) = &core.config.api_token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| agent_err(format!("cannot reach the agent at {}: {e}", node.address)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| agent_err(format!("reading the agent's answer: {e}")))?;
    if !status.is_success() {
        return Err(if status == reqwest::StatusCode::CONFLICT {
            ServerError::Conflict(text.trim().to_owned())
        } else {
            agent_err(text.trim().to_owned())
        });
    }
    serde_json::from_str(&text).map_err(|e| agent_err(format!("answer is not JSON: {e}")))
}
