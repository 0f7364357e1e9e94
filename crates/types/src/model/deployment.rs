use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};
use crate::units::Millis;

/// The rollout of one job version whose groups needed new allocations
/// (Nomad's deployment). Created by the scheduler, moved along by the
/// server's deployment watcher, steered by users (promote, fail, pause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub job: String,
    pub job_version: u64,
    pub status: DeploymentStatus,
    #[serde(default)]
    pub description: String,
    pub groups: BTreeMap<String, GroupDeployment>,
    /// The version this deployment rolls back to, when it is an automatic
    /// revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<u64>,
    pub created_at: UnixMillis,
    pub modified_at: UnixMillis,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

impl Deployment {
    pub fn is_active(&self) -> bool {
        matches!(
            self.status,
            DeploymentStatus::Running | DeploymentStatus::Paused
        )
    }

    /// Whether every group with canaries has been promoted.
    pub fn promoted(&self) -> bool {
        self.groups
            .values()
            .all(|g| g.desired_canaries == 0 || g.promoted)
    }
}

/// Per group: what the rollout wants and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeployment {
    /// `count` of the group in this version.
    pub desired_total: u32,
    pub desired_canaries: u32,
    /// Canary allocation ids placed and not stopped (a canary moved off a
    /// draining node counts once).
    #[serde(default)]
    pub placed_canaries: Vec<String>,
    pub promoted: bool,
    pub auto_promote: bool,
    pub auto_revert: bool,
    pub max_parallel: u32,
    pub progress_deadline: Millis,
    /// New-version allocations placed by this deployment.
    pub placed: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    /// When the deployment fails unless another allocation becomes healthy
    /// (reset on each one); `None` when there is no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_progress_by: Option<UnixMillis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Running,
    Paused,
    Successful,
    Failed,
    Cancelled,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Paused => "paused",
            DeploymentStatus::Successful => "successful",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Successful | DeploymentStatus::Failed | DeploymentStatus::Cancelled
        )
    }
}

impl std::fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
