use serde::{Deserialize, Serialize};

use super::{Allocation, Index, PlacementFailure};

/// What a scheduler worker proposes for one evaluation. The plan applier
/// re-checks it against the latest state before committing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub eval_id: String,
    pub job: String,
    /// The state index the plan was computed on.
    pub snapshot_index: Index,
    /// New allocations (fresh ids, desired run).
    pub place: Vec<Allocation>,
    /// Allocations to stop, with the reason.
    pub stop: Vec<StopAlloc>,
    /// Allocations whose job version moves forward in place (the group's
    /// spec is the same but for count or update policy).
    pub in_place: Vec<InPlaceUpdate>,
    /// Groups that could not be fully placed.
    pub failed: Vec<PlacementFailure>,
    /// Deployments created (a new job version to roll out) or ended
    /// (superseded by a newer version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<super::Deployment>,
    /// The job needs another evaluation at this time (a failed
    /// allocation's reschedule delay ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<super::UnixMillis>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.place.is_empty()
            && self.stop.is_empty()
            && self.in_place.is_empty()
            && self.deployments.is_empty()
    }
}

/// An allocation kept running under a newer job version whose spec for
/// its group is the same. Under a deployment it joins that deployment (as
/// Nomad's in-place updates do): health already proven is kept, anything
/// else is decided again, so a rollout never counts an allocation that an
/// earlier rollout left undecided or unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceUpdate {
    pub id: String,
    pub job_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

impl InPlaceUpdate {
    /// `a` as it is once the update is applied.
    pub fn apply_to(&self, a: &mut super::Allocation) {
        a.job_version = self.job_version;
        if self.deployment_id.is_some() && a.deployment_id != self.deployment_id {
            a.deployment_id = self.deployment_id.clone();
            a.canary = false;
            a.health = a.health.take().filter(|h| h.healthy);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAlloc {
    pub id: String,
    pub reason: String,
    /// Set when the server itself decides the observed state (node lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<super::ClientStatus>,
}

/// Plan applier's verdict per plan: what was committed, what was refused
/// because the state changed under the worker (the worker retries those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlanResult {
    pub index: Index,
    pub placed: usize,
    pub stopped: usize,
    /// Node ids whose part of the plan no longer fit.
    pub refused_nodes: Vec<String>,
}
