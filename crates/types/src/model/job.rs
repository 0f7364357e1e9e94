use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};
use crate::spec::JobSpec;

/// One stored version of a job. Every version is kept; the job's current
/// version is the highest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub version: u64,
    pub spec: JobSpec,
    /// Desired: the user asked to stop the job.
    pub stopped: bool,
    /// Set when this version's deployment succeeded (or it needed none and
    /// every allocation ran): an automatic revert goes back to the latest
    /// stable version.
    #[serde(default)]
    pub stable: bool,
    /// This version re-submits the spec of an earlier one (`job revert`, or
    /// an automatic revert after a failed deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<u64>,
    pub submitted_at: UnixMillis,
    /// Where this version's service names and routes were written, so a
    /// later job claiming the same is told where (empty for versions not
    /// submitted from a file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<crate::spec::ServiceClaim>,
    pub create_index: Index,
    pub modify_index: Index,
}

/// Derived for display: what the job's allocations add up to. When not
/// every slot runs, the worst of what keeps them from running decides:
/// failed, then restarting, then pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Allocations still being placed or started (or, for a stopped job,
    /// still stopping).
    Pending,
    /// Every group has its count running.
    Running,
    /// Not every slot runs, and one of the job's allocations waits out a
    /// task's restart delay.
    Restarting,
    /// Not every slot runs, and a slot holds a failed allocation with
    /// nothing placed to replace it: the restart policy gave up, and it
    /// stays so until a new version (or a stop).
    Failed,
    /// Stopped by the user, or every allocation ended.
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Restarting => "restarting",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
        }
    }
}
