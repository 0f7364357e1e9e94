//! A volume as the control plane knows it: who holds its live copy, at
//! which generation, and which allocation may write it.
//!
//! The agent holding a volume mounts it read-write only for the allocation
//! named here at the generation named here; a move bumps the generation,
//! so a copy left behind on another node is stale and is never mounted.

use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};
use crate::units::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// `<job>.<name>` or, per slot, `<job>.<name>.<index>`.
    pub id: String,
    pub job: String,
    pub group: String,
    /// The volume's name in the spec.
    pub name: String,
    /// The slot, for a `per_alloc` volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    pub size: Bytes,
    /// The provider that holds it (`btrfs-image`, `ext4-image`, `host`).
    pub provider: String,
    /// The node with the live copy.
    pub node_id: String,
    /// Bumped by every move: a copy of an older generation is stale.
    pub generation: u64,
    /// The allocation that may mount it read-write now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_id: Option<String>,
    /// The node it last moved from (that copy is removed by its agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// How long the last move kept the allocation from running (the final
    /// incremental copy), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_move_downtime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<VolumeSnapshot>,
    /// Backups kept in the spec's backup target, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<VolumeBackup>,
    /// Why the last scheduled backup failed (cleared by the next success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_error: Option<String>,
    /// Set when the live copy was restored from a backup because its node
    /// was lost: which backup, so the writes after it are known lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<VolumeBackup>,
    /// Made by `corral volume restore --as` from another volume's snapshot
    /// or backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<VolumeOrigin>,
    /// What its agent last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Bytes>,
    pub created_at: UnixMillis,
    pub modified_at: UnixMillis,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

/// Where a volume made from another one's snapshot or backup came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOrigin {
    pub volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<VolumeBackup>,
    /// Its node has all the data (its first report): until then no
    /// allocation may claim it.
    #[serde(default)]
    pub done: bool,
    /// Why the last attempt failed, when it did and an allocation waits
    /// for the volume (the record stays until it is restored again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Volume {
    /// Still being filled from its origin: not to be mounted yet.
    pub fn restoring(&self) -> bool {
        self.origin.as_ref().is_some_and(|o| !o.done)
    }
}

/// The parts of a volume id `<job>.<name>[.<index>]`, or why it is not
/// one.
pub fn parse_volume_id(id: &str) -> Result<(String, String, Option<u32>), String> {
    let parts: Vec<&str> = id.split('.').collect();
    let (job, name, slot) = match parts.as_slice() {
        [job, name] => (*job, *name, None),
        [job, name, index] => {
            // Canonical only (`0`, `12`; not `00` or `+1`): the id a slot
            // looks up is spelled that way.
            let slot = index
                .parse::<u32>()
                .ok()
                .filter(|n| n.to_string() == *index)
                .ok_or_else(|| {
                    format!("volume id `{id}`: `{index}` is not an allocation index (0, 1, ...)")
                })?;
            (*job, *name, Some(slot))
        }
        _ => {
            return Err(format!(
                "`{id}` is not a volume id; use `<job>.<volume>` or, for a per_alloc volume, `<job>.<volume>.<index>` (e.g. `db-copy.data`)"
            ));
        }
    };
    for (what, part) in [("job", job), ("volume name", name)] {
        if let Some(problem) = crate::spec::name_problem(part) {
            return Err(format!("volume id `{id}`: {what}: {problem}"));
        }
    }
    Ok((job.to_owned(), name.to_owned(), slot))
}

/// A snapshot its agent took and keeps on the volume's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub name: String,
    pub created_at: UnixMillis,
    /// Taken by the schedule in the spec (pruned by its `keep`), or by hand.
    #[serde(default)]
    pub scheduled: bool,
    /// How long taking it took, in milliseconds.
    #[serde(default)]
    pub took_ms: u64,
}

/// How far a new allocation got with the volumes it needs, as its agent
/// reports it (observed state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumePhase {
    /// Copying the volume from the node that holds it while the old
    /// allocation still runs there.
    Copying,
    /// The full copy is here: the old allocation may stop now.
    Copied,
    /// The old allocation stopped; sending what changed since the copy.
    Finishing,
    /// Mounted here, at the current generation.
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSync {
    pub phase: VolumePhase,
    /// Bytes received so far (while copying).
    #[serde(default)]
    pub bytes: u64,
}

/// A restic backup of the volume (file level, from a read-only snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBackup {
    /// restic's snapshot id.
    pub id: String,
    /// The backup target (a name from the server config).
    pub target: String,
    /// When the snapshot it was made from was taken: writes after this
    /// are not in it.
    pub taken_at: UnixMillis,
    #[serde(default)]
    pub took_ms: u64,
    /// Bytes restic added to the repository for it.
    #[serde(default)]
    pub bytes_added: u64,
}

#[cfg(test)]
mod tests {
    use super::parse_volume_id;

    #[test]
    fn volume_ids_parse_into_job_name_and_slot() {
        assert_eq!(
            parse_volume_id("db.data"),
            Ok(("db".into(), "data".into(), None))
        );
        assert_eq!(
            parse_volume_id("db-copy.data.2"),
            Ok(("db-copy".into(), "data".into(), Some(2)))
        );
        for bad in [
            "db",
            "db.",
            ".data",
            "db.data.x",
            "db.data.+1",
            "a.b.1.2",
            "Db.data",
            "db.da/ta",
            "db.../x",
        ] {
            let e = parse_volume_id(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
