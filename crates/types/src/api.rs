//! The HTTP API's public shapes, kept apart from the stored model so the
//! two can evolve separately (Nomad's `api/` vs `structs/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    AllocState, AllocUpdate, Allocation, ClientStatus, DesiredStatus, Evaluation, Index, Job,
    JobStatus, Node, TaskState, UnixMillis,
};
use crate::spec::{JobSpec, Resources, SpecError};

/// Whether an `Authorization` header value carries `Bearer <token>`. The
/// comparison takes the same time wherever the bytes differ, so response
/// times do not reveal how much of a guess was right. An empty token
/// matches nothing (servers and agents refuse one at start).
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let Some(given) = header.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    // The length is no secret worth hiding; the bytes are.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answer of `PUT /v1/system/gc`: how many records one garbage
/// collection deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub allocations: usize,
    pub evaluations: usize,
    pub deployments: usize,
    pub nodes: usize,
}

/// Error body of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: String,
    /// What to do about it, when we know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Spec validation errors, each with file, line, column and field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_errors: Vec<SpecError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubmitResponse {
    pub index: Index,
    pub jobs: Vec<SubmittedJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubmittedJob {
    pub name: String,
    pub version: u64,
    /// False when the spec equals the current version (nothing new stored).
    pub changed: bool,
    pub eval_id: String,
}

/// `?plan=true`: what a submission would do, nothing stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanResponse {
    pub jobs: Vec<JobPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobPlan {
    pub name: String,
    /// The version the job would get (the current one if unchanged).
    pub version: u64,
    pub changed: bool,
    pub place: Vec<PlannedAlloc>,
    pub stop: Vec<PlannedStop>,
    pub in_place: u32,
    /// Placement failures, as sentences.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedAlloc {
    pub name: String,
    pub node: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedStop {
    pub id: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    pub count: u32,
    pub pending: u32,
    pub running: u32,
    pub complete: u32,
    pub failed: u32,
    pub lost: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobListEntry {
    pub name: String,
    pub version: u64,
    pub status: JobStatus,
    /// Why the job is not running, in one line: an allocation's reason
    /// (`web.web[0]: task app: ...`) or why it cannot be placed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub stopped: bool,
    pub submitted_at: UnixMillis,
    pub groups: Vec<GroupSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    pub version: u64,
    pub status: JobStatus,
    /// As [`JobListEntry::reason`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub stopped: bool,
    pub submitted_at: UnixMillis,
    pub spec: JobSpec,
    pub groups: Vec<GroupSummary>,
    pub allocations: Vec<AllocView>,
    /// The newest evaluation of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_eval: Option<EvalView>,
    pub index: Index,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobVersionView {
    pub version: u64,
    pub stopped: bool,
    /// Its deployment succeeded: a revert target.
    #[serde(default)]
    pub stable: bool,
    /// The earlier version whose spec this one restored (a revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<u64>,
    pub submitted_at: UnixMillis,
    pub spec: JobSpec,
}

impl From<&Job> for JobVersionView {
    fn from(j: &Job) -> Self {
        JobVersionView {
            version: j.version,
            stopped: j.stopped,
            stable: j.stable,
            reverts_to: j.reverts_to,
            submitted_at: j.submitted_at,
            spec: j.spec.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocView {
    pub id: String,
    pub name: String,
    pub job: String,
    pub job_version: u64,
    pub group: String,
    pub index: u32,
    /// Node name (the id when the node is gone).
    pub node: String,
    pub node_id: String,
    /// Observed state: pending|running|complete|failed|lost.
    pub status: ClientStatus,
    /// What people are told: `status`, except `restarting` while it is
    /// pending because a task waits out its restart delay.
    pub state: AllocState,
    /// Why it is not running, in one line (the task's last message, or
    /// the allocation's); empty while it runs or once it completed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub desired: DesiredStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desired_reason: String,
    pub tasks: BTreeMap<String, TaskState>,
    /// `task.port` -> `host:port` to reach it.
    pub ports: BTreeMap<String, String>,
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The deployment that placed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub canary: bool,
    /// Deployment health, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::AllocHealth>,
    /// Health checks by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, crate::CheckState>,
    /// How far its agent got with the group's volumes (a move's progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_sync: Option<crate::VolumeSync>,
    /// The failed allocations of its slot rescheduled before it, oldest
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reschedules: Vec<crate::RescheduleEvent>,
    pub created_at: UnixMillis,
    pub modified_at: UnixMillis,
}

impl AllocView {
    pub fn new(a: &Allocation, node: Option<&Node>) -> AllocView {
        let host = node
            .and_then(|n| {
                n.address
                    .split("://")
                    .nth(1)
                    .and_then(|h| h.rsplit_once(':').map(|(h, _)| h.to_string()))
            })
            .unwrap_or_else(|| "127.0.0.1".into());
        AllocView {
            id: a.id.clone(),
            name: a.name(),
            job: a.job.clone(),
            job_version: a.job_version,
            group: a.group.clone(),
            index: a.index,
            node: node
                .map(|n| n.name.clone())
                .unwrap_or_else(|| a.node_id.clone()),
            node_id: a.node_id.clone(),
            status: a.client,
            state: a.state(),
            reason: a.reason(),
            desired: a.desired,
            desired_reason: a.desired_reason.clone(),
            tasks: a.tasks.clone(),
            ports: a
                .ports
                .iter()
                .map(|(k, p)| (k.clone(), format!("{host}:{p}")))
                .collect(),
            resources: a.resources,
            message: a.client_message.clone(),
            previous: a.previous.clone(),
            deployment_id: a.deployment_id.clone(),
            canary: a.canary,
            health: a.health.clone(),
            checks: a.checks.clone(),
            volume_sync: a.volume_sync.clone(),
            reschedules: a.reschedules.clone(),
            created_at: a.created_at,
            modified_at: a.modified_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EvalView {
    pub id: String,
    pub status: String,
    pub trigger: String,
    pub description: String,
    pub failures: Vec<String>,
    pub modify_index: Index,
}

impl From<&Evaluation> for EvalView {
    fn from(e: &Evaluation) -> Self {
        EvalView {
            id: e.id.clone(),
            status: e.status.as_str().to_string(),
            trigger: serde_json::to_value(e.trigger)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            description: e.status_description.clone(),
            failures: e.failed_placements.iter().map(|f| f.to_string()).collect(),
            modify_index: e.modify_index,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub address: String,
    /// ready|down|draining|ineligible|initializing
    pub status: String,
    pub eligible: bool,
    pub draining: bool,
    pub resources: Resources,
    pub allocated: Resources,
    pub allocations: u32,
    pub attributes: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub drivers: Vec<String>,
    pub last_heartbeat: UnixMillis,
    pub registered_at: UnixMillis,
}

/// An agent's blocking query answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeAllocations {
    pub index: Index,
    pub allocations: Vec<Allocation>,
    /// Job specs the allocations need, by (name, version).
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocUpdates {
    pub updates: Vec<AllocUpdate>,
}

/// `POST /v1/jobs/{name}/revert`: store the spec of an earlier version as a
/// new version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevertRequest {
    pub version: u64,
}

/// `POST /v1/jobs/{name}/scale`: store the current spec with one group's
/// count changed as a new version (`group` may be left out when the job
/// has one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScaleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub count: u32,
}

/// What `POST /v1/jobs/{name}/deployment/{action}` can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentAction {
    Promote,
    Fail,
    Pause,
    Resume,
}

impl DeploymentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentAction::Promote => "promote",
            DeploymentAction::Fail => "fail",
            DeploymentAction::Pause => "pause",
            DeploymentAction::Resume => "resume",
        }
    }
}

/// One task's resource usage as its agent measured it. Agents push these
/// for their running tasks to `POST /v1/nodes/{id}/stats` (every 10 s);
/// the server keeps the latest per task in memory (for alerts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub alloc_id: String,
    pub task: String,
    pub memory_bytes: u64,
    /// 0 when the task has no memory limit.
    pub memory_limit_bytes: u64,
    /// CPU time since the task's current run started.
    pub cpu_seconds: f64,
    /// When it was measured.
    pub at: UnixMillis,
    /// When the measured run started (the agent's clock, as `at`): samples
    /// of two runs are not compared (a CPU rate across a restart), and a
    /// sample of a run that ended is not taken for the task's current one.
    /// Absent from agents before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<UnixMillis>,
}

/// Body of `POST /v1/nodes/{id}/stats`: every running task of the node
/// (an empty list once the last one stopped).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeStats {
    pub tasks: Vec<TaskUsage>,
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn bearer_tokens_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        for wrong in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer S3cret"),
            Some("bearer s3cret"),
            Some("Bearer "),
        ] {
            assert!(!bearer_matches(wrong, "s3cret"), "{wrong:?}");
        }
        assert!(!bearer_matches(Some("Bearer "), ""));
    }
}

/// `POST /v1/volumes/{id}/claim` (agents): allocation `alloc` on `node`
/// takes volume `id` read-write. Compare-and-set on `generation`: the
/// generation the agent saw (`None`: the volume does not exist yet).
/// A claim from another node than the holder is the end of a move: the
/// generation goes up and the old copy is stale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeClaim {
    pub node: String,
    pub alloc: String,
    #[serde(default)]
    pub generation: Option<u64>,
    pub provider: String,
    /// How long the move kept the allocation from starting, if it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// The copy was restored from this backup (its node was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<crate::model::VolumeBackup>,
}

/// `POST /v1/volumes/{id}/report` (agents): the holder's snapshots and use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeReport {
    pub node: String,
    pub generation: u64,
    pub snapshots: Vec<crate::model::VolumeSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<crate::units::Bytes>,
    /// The size the provider gives it now (it grows in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<crate::units::Bytes>,
}

/// `POST /v1/volumes/{id}/restore`: replace the volume's data with a
/// snapshot's or a backup's (the volume must not be in use), or, with
/// `as`, make a new volume of that id from it (the volume may be in use).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRestoreRequest {
    /// A snapshot's name, or a backup's id (at least its first 8 digits).
    pub snapshot: String,
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_volume: Option<String>,
}

/// `POST /v1/agent/volumes/{id}/backup` (server to agent): back the
/// volume up to `target` (its config table, secrets included: this
/// travels only between the server and its agents) and apply `keep`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeBackupJob {
    /// The target's name (`backup.to`).
    pub to: String,
    pub target: serde_json::Value,
    pub keep: crate::spec::BackupKeep,
    /// The volume has backups there already: a repository that is not
    /// there any more is an error, not one to make afresh.
    #[serde(default)]
    pub expect_repository: bool,
}

/// The agent's answer: the new backup and every backup the target keeps
/// for the volume after `keep` was applied, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeBackupDone {
    pub backup: crate::model::VolumeBackup,
    pub kept: Vec<crate::model::VolumeBackup>,
}

/// `POST /v1/volumes/{id}/recover` (agents): allocation `alloc` on `node`
/// needs a volume whose node is lost; the server answers with the backup
/// to restore (and its target) once `on_node_loss: restore` allows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecover {
    pub node: String,
    pub alloc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecovery {
    pub backup: crate::model::VolumeBackup,
    pub target: serde_json::Value,
    /// The generation to claim (the lost copy's).
    pub generation: u64,
}

/// `GET /v1/volumes/quarantined`: a stale copy a node set aside.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantinedCopy {
    pub node_id: String,
    pub node: String,
    /// `<volume id>.gen<G>-<unix ms>` under the node's `<volumes_dir>/.quarantine`.
    pub name: String,
}

/// `POST /v1/agent/volumes/{id}/restore` (server to agent): put the data
/// back as it was at `snapshot`, or restore `backup` from `target` (its
/// config table, secrets included).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRestoreJob {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::model::VolumeBackup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<serde_json::Value>,
}

/// `POST /v1/agent/volumes/{id}/restore-new` (server to agent): make
/// volume `id` here, of `size`, from volume `source`'s snapshot (held here
/// at `source_generation`) or backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRestoreNew {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_generation: Option<u64>,
    pub size: crate::units::Bytes,
    #[serde(flatten)]
    pub from: VolumeRestoreJob,
}
