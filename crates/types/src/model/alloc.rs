use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};
use crate::spec::Resources;

/// One instance of a group placed on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: String,
    pub job: String,
    pub job_version: u64,
    pub group: String,
    /// Stable slot number within the group (`web[0]`, `web[1]`, ...); a
    /// replacement keeps the index of the allocation it replaces.
    pub index: u32,
    pub node_id: String,
    pub resources: Resources,
    /// Host ports assigned by the scheduler, by `task.port` name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// The allocation this one replaces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The deployment that placed this allocation (spec changes rolled out
    /// with health checks), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Placed as a canary: runs beside the old version of its slot until
    /// the deployment is promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// The failed allocations of this slot rescheduled before it, oldest
    /// first; the last is the one this allocation replaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reschedules: Vec<RescheduleEvent>,

    // Desired state: written by the server only.
    pub desired: DesiredStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desired_reason: String,

    // Observed state: written by the agent only (and by the server when the
    // node is lost, as Nomad does).
    pub client: ClientStatus,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskState>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_message: String,
    /// Health checks by check name, as the agent last saw them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, CheckState>,
    /// Deployment health, decided once per allocation by the agent (or via
    /// the API in `manual` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AllocHealth>,
    /// How far its agent got with the group's volumes (moves take a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_sync: Option<super::VolumeSync>,

    pub created_at: UnixMillis,
    pub modified_at: UnixMillis,
    pub create_index: Index,
    pub modify_index: Index,
}

/// One failed allocation replaced by the reschedule policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescheduleEvent {
    /// When the replacement was placed.
    pub at: UnixMillis,
    pub prev_alloc: String,
    pub prev_node: String,
    /// How long after the failure it was placed, in milliseconds.
    pub delay_ms: u64,
}

impl Allocation {
    /// When it failed: its last task's end, else its last update.
    pub fn failed_at(&self) -> UnixMillis {
        self.tasks
            .values()
            .filter_map(|t| t.finished_at)
            .max()
            .unwrap_or(self.modified_at)
    }

    /// `job.group[index]`, the name people read.
    pub fn name(&self) -> String {
        format!("{}.{}[{}]", self.job, self.group, self.index)
    }

    /// Whether the allocation still holds (or will hold) node resources.
    pub fn is_live(&self) -> bool {
        self.desired == DesiredStatus::Run && !self.client.is_terminal()
    }

    /// Whether the allocation's process could still be running on its node.
    pub fn may_run(&self) -> bool {
        !self.client.is_terminal()
    }

    /// Whether its agent has the group's volumes copied here (the old
    /// allocation of a move may stop now).
    pub fn volumes_copied(&self) -> bool {
        self.volume_sync
            .as_ref()
            .is_some_and(|s| s.phase >= super::VolumePhase::Copied)
    }

    pub fn is_healthy(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.healthy)
    }

    pub fn is_unhealthy(&self) -> bool {
        self.health.as_ref().is_some_and(|h| !h.healthy)
    }

    /// What the allocation is doing, as people read it (see [`AllocState`]).
    pub fn state(&self) -> AllocState {
        match self.client {
            ClientStatus::Pending if self.restarting_task().is_some() => AllocState::Restarting,
            s => s.into(),
        }
    }

    /// Why the allocation is not running, in one line: the last message of
    /// the task that keeps it from running or that ended it (`task T:
    /// ...`), else the allocation's own message. Empty while it runs and
    /// once it completed.
    pub fn reason(&self) -> String {
        let task = |(name, t): (&String, &TaskState)| format!("task {name}: {}", t.message);
        match self.state() {
            AllocState::Running | AllocState::Complete => String::new(),
            AllocState::Restarting => self.restarting_task().map(task).unwrap_or_default(),
            AllocState::Pending => self
                .tasks
                .iter()
                .find(|(_, t)| t.state == TaskLifecycle::Pending && !t.message.is_empty())
                .map(task)
                .unwrap_or_else(|| self.client_message.clone()),
            AllocState::Failed => {
                if self.client_message.is_empty() {
                    self.tasks
                        .iter()
                        .find(|(_, t)| t.failed)
                        .map(task)
                        .unwrap_or_default()
                } else {
                    self.client_message.clone()
                }
            }
            AllocState::Lost => {
                if self.client_message.is_empty() {
                    self.desired_reason.clone()
                } else {
                    self.client_message.clone()
                }
            }
        }
    }

    /// The first task waiting out its restart delay.
    fn restarting_task(&self) -> Option<(&String, &TaskState)> {
        self.tasks
            .iter()
            .find(|(_, t)| t.state == TaskLifecycle::Restarting)
    }
}

/// What an allocation is doing, as people read it: its observed
/// [`ClientStatus`], with an allocation that is pending because a task
/// waits out its restart delay told apart from one still being started
/// (Nomad keeps both `pending` and says which in the task's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocState {
    /// Not started yet on its node: waiting for the allocation it replaces
    /// to stop, or its tasks being started (an image pulled).
    Pending,
    /// A task exited (or failed to start) and waits out its restart delay:
    /// nothing of it runs until then.
    Restarting,
    Running,
    Complete,
    Failed,
    Lost,
}

impl AllocState {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocState::Pending => "pending",
            AllocState::Restarting => "restarting",
            AllocState::Running => "running",
            AllocState::Complete => "complete",
            AllocState::Failed => "failed",
            AllocState::Lost => "lost",
        }
    }
}

/// The state a status alone tells (a pending allocation is `pending`).
impl From<ClientStatus> for AllocState {
    fn from(s: ClientStatus) -> AllocState {
        match s {
            ClientStatus::Pending => AllocState::Pending,
            ClientStatus::Running => AllocState::Running,
            ClientStatus::Complete => AllocState::Complete,
            ClientStatus::Failed => AllocState::Failed,
            ClientStatus::Lost => AllocState::Lost,
        }
    }
}

impl std::fmt::Display for AllocState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an allocation became healthy for its deployment, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocHealth {
    pub healthy: bool,
    pub at: UnixMillis,
    /// Why unhealthy (failed check, task died, deadline passed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One health check's latest result on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    pub task: String,
    pub status: CheckStatus,
    /// Last output or error, truncated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    pub consecutive_failures: u32,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Not run yet, or within its grace period.
    Pending,
    Passing,
    Failing,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pending => "pending",
            CheckStatus::Passing => "passing",
            CheckStatus::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredStatus {
    Run,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Pending,
    Running,
    Complete,
    Failed,
    Lost,
}

impl ClientStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ClientStatus::Complete | ClientStatus::Failed | ClientStatus::Lost
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Pending => "pending",
            ClientStatus::Running => "running",
            ClientStatus::Complete => "complete",
            ClientStatus::Failed => "failed",
            ClientStatus::Lost => "lost",
        }
    }
}

impl std::fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskState {
    pub state: TaskLifecycle,
    /// Restarts decided by the restart policy, counted at the exit it
    /// answers (before the delay), as Nomad counts them.
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Dead because the restart policy gave up (not because it was asked
    /// to stop).
    #[serde(default)]
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskLifecycle {
    #[default]
    Pending,
    Running,
    /// Exited and waiting for its restart delay.
    Restarting,
    Dead,
}

impl TaskLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskLifecycle::Pending => "pending",
            TaskLifecycle::Running => "running",
            TaskLifecycle::Restarting => "restarting",
            TaskLifecycle::Dead => "dead",
        }
    }
}

/// What an agent reports about one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocUpdate {
    pub id: String,
    pub client: ClientStatus,
    pub tasks: BTreeMap<String, TaskState>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub checks: BTreeMap<String, CheckState>,
    /// Set once, when the agent decides the allocation's deployment health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AllocHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_sync: Option<super::VolumeSync>,
}
