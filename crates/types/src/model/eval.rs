use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};

/// A reason to reconcile one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: String,
    pub job: String,
    pub trigger: EvalTrigger,
    pub status: EvalStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_description: String,
    /// Why placements failed, when they did (kept on blocked evaluations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_placements: Vec<PlacementFailure>,
    /// For a blocked evaluation: the node/capacity index it last saw.
    #[serde(default)]
    pub snapshot_index: Index,
    /// Not to be processed before this time (a reschedule delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub modified_at: UnixMillis,
    pub create_index: Index,
    pub modify_index: Index,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalTrigger {
    JobRegister,
    JobDeregister,
    NodeUpdate,
    NodeDrain,
    AllocFailed,
    /// An allocation that should run ended without failing (its agent
    /// stopped it): its slot is filled again.
    AllocStopped,
    /// A blocked evaluation woken by new capacity.
    Unblocked,
    /// The plan applier refused part of a plan until the worker gave up
    /// re-planning: the rest gets a fresh evaluation.
    Retry,
    /// A deployment moved on: an allocation became healthy, canaries were
    /// promoted, or the deployment ended.
    Deployment,
    /// A failed allocation's reschedule delay ended.
    Reschedule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStatus {
    Pending,
    Complete,
    /// Some placements failed; retried when nodes or capacity change.
    Blocked,
    Failed,
    Canceled,
}

impl EvalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalStatus::Pending => "pending",
            EvalStatus::Complete => "complete",
            EvalStatus::Blocked => "blocked",
            EvalStatus::Failed => "failed",
            EvalStatus::Canceled => "canceled",
        }
    }
}

/// Why a group's allocations could not all be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementFailure {
    pub group: String,
    /// How many allocations are missing.
    pub missing: u32,
    pub nodes_evaluated: u32,
    /// Reason -> number of nodes filtered for it, e.g.
    /// `("memory exhausted", 3)`, `("constraint node.labels.zone = a", 1)`.
    pub reasons: Vec<(String, u32)>,
}

impl std::fmt::Display for PlacementFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "group {:?}: {} allocation{} not placed",
            self.group,
            self.missing,
            if self.missing == 1 { "" } else { "s" }
        )?;
        if self.nodes_evaluated == 0 {
            return write!(f, ": no nodes are registered");
        }
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} node{}: {r}", if *n == 1 { "" } else { "s" }))
            .collect();
        write!(f, " ({})", parts.join("; "))
    }
}
