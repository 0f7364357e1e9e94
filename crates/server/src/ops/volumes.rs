//! Volume records: agents claim a volume for an allocation (creating it,
//! taking it over on the same node, or ending a move), report its
//! snapshots; users delete them. Every check happens inside the store's
//! write, so two claims cannot both win.

use std::sync::Arc;

use corral_store::{State, Write};
use corral_types::api::{VolumeClaim, VolumeReport};
use corral_types::{GroupSpec, Volume, now_ms};

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
    let mut v = (**cur).clone();
    v.alloc_id = Some(alloc.id.clone());
    v.size = v.size.max(spec.size);
    v.modified_at = now;
    if cur.node_id != c.node {
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
            if cur.snapshots == r.snapshots && cur.used == r.used {
                return Ok((Vec::new(), (**cur).clone()));
            }
            let mut v = (**cur).clone();
            v.snapshots = r.snapshots;
            v.used = r.used;
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

/// Refuse a job version that shrinks an existing volume: images and
/// filesystems grow in place, they do not shrink.
pub fn check_sizes(
    state: &State,
    jobs: &[corral_types::spec::LocatedJob],
) -> Result<(), ServerError> {
    let mut errors = Vec::new();
    for j in jobs {
        for (gi, g) in j.spec.groups.iter().enumerate() {
            for (vi, spec) in g.volumes.iter().enumerate() {
                let biggest = state
                    .volumes()
                    .filter(|v| v.job == j.spec.name && v.group == g.name && v.name == spec.name)
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
