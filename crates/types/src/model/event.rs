//! Events and alerts. Every state change the server commits becomes an
//! [`Event`] in the same transaction (derived by diffing the state before
//! and after the commit), numbered by a gapless sequence of its own so a
//! reader that resumes from an index can tell nothing was skipped. Alerts
//! are stored objects (one active per rule and subject) whose firing and
//! resolution are events too.

use serde::{Deserialize, Serialize};

use super::{Index, UnixMillis};

/// One thing that happened. Compact on purpose: busy clusters write tens
/// of thousands per second, so absent ids are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event's own sequence number: 1, 2, 3, ... without gaps.
    pub index: u64,
    /// The state index of the commit that produced it.
    pub state_index: Index,
    pub time: UnixMillis,
    pub topic: EventTopic,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The task (restarts, OOM kills) or the check (check events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The alert's id (alert events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The volume's id (volume events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub message: String,
}

impl Event {
    /// An event of `kind` (its topic follows) with no ids yet; the store
    /// stamps `index` and `state_index`.
    pub fn new(kind: EventType, time: UnixMillis, message: impl Into<String>) -> Event {
        Event {
            index: 0,
            state_index: 0,
            time,
            topic: kind.topic(),
            kind,
            job: None,
            alloc: None,
            node: None,
            deployment: None,
            task: None,
            check: None,
            alert: None,
            volume: None,
            message: message.into(),
        }
    }

    pub fn job(mut self, job: &str) -> Event {
        self.job = Some(job.to_string());
        self
    }

    pub fn alloc(mut self, alloc: &str) -> Event {
        self.alloc = Some(alloc.to_string());
        self
    }

    pub fn node(mut self, node: &str) -> Event {
        self.node = Some(node.to_string());
        self
    }

    pub fn deployment(mut self, deployment: &str) -> Event {
        self.deployment = Some(deployment.to_string());
        self
    }

    pub fn task(mut self, task: &str) -> Event {
        self.task = Some(task.to_string());
        self
    }

    pub fn check(mut self, check: &str) -> Event {
        self.check = Some(check.to_string());
        self
    }

    pub fn alert(mut self, alert: &str) -> Event {
        self.alert = Some(alert.to_string());
        self
    }

    pub fn volume(mut self, volume: &str) -> Event {
        self.volume = Some(volume.to_string());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTopic {
    Job,
    Allocation,
    Node,
    Deployment,
    Check,
    Alert,
    Volume,
}

impl EventTopic {
    pub const ALL: [EventTopic; 7] = [
        EventTopic::Job,
        EventTopic::Allocation,
        EventTopic::Node,
        EventTopic::Deployment,
        EventTopic::Check,
        EventTopic::Alert,
        EventTopic::Volume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventTopic::Job => "job",
            EventTopic::Allocation => "allocation",
            EventTopic::Node => "node",
            EventTopic::Deployment => "deployment",
            EventTopic::Check => "check",
            EventTopic::Alert => "alert",
            EventTopic::Volume => "volume",
        }
    }

    /// `job`, `allocation` (or `alloc`), `node`, `deployment`, `check`,
    /// `alert`, `volume`.
    pub fn parse(s: &str) -> Option<EventTopic> {
        let s = s.trim();
        if s == "alloc" {
            return Some(EventTopic::Allocation);
        }
        EventTopic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as `topic.what` (`allocation.oom_killed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A new job version was stored.
    #[serde(rename = "job.registered")]
    JobRegistered,
    #[serde(rename = "job.stopped")]
    JobStopped,
    /// Every version was removed.
    #[serde(rename = "job.purged")]
    JobPurged,
    #[serde(rename = "allocation.placed")]
    AllocationPlaced,
    /// Placed by the reschedule policy after its slot's allocation failed.
    #[serde(rename = "allocation.rescheduled")]
    AllocationRescheduled,
    /// The agent reports it running.
    #[serde(rename = "allocation.started")]
    AllocationStarted,
    /// A task's restart count went up.
    #[serde(rename = "allocation.restarted")]
    AllocationRestarted,
    #[serde(rename = "allocation.oom_killed")]
    AllocationOomKilled,
    #[serde(rename = "allocation.failed")]
    AllocationFailed,
    /// Every task ended successfully (or after a stop).
    #[serde(rename = "allocation.completed")]
    AllocationCompleted,
    /// Its node went down.
    #[serde(rename = "allocation.lost")]
    AllocationLost,
    /// The server wants it stopped (reason in the message).
    #[serde(rename = "allocation.stopped")]
    AllocationStopped,
    /// Registered, or ready again after being down.
    #[serde(rename = "node.up")]
    NodeUp,
    #[serde(rename = "node.down")]
    NodeDown,
    #[serde(rename = "node.draining")]
    NodeDraining,
    /// The drain ended (done, or disabled).
    #[serde(rename = "node.drained")]
    NodeDrained,
    #[serde(rename = "node.eligibility")]
    NodeEligibility,
    #[serde(rename = "node.removed")]
    NodeRemoved,
    #[serde(rename = "deployment.created")]
    DeploymentCreated,
    /// The number of healthy allocations changed.
    #[serde(rename = "deployment.progress")]
    DeploymentProgress,
    #[serde(rename = "deployment.promoted")]
    DeploymentPromoted,
    #[serde(rename = "deployment.paused")]
    DeploymentPaused,
    #[serde(rename = "deployment.resumed")]
    DeploymentResumed,
    #[serde(rename = "deployment.successful")]
    DeploymentSuccessful,
    #[serde(rename = "deployment.failed")]
    DeploymentFailed,
    #[serde(rename = "deployment.cancelled")]
    DeploymentCancelled,
    /// The job went back to an earlier version (automatically after a
    /// failed deployment, or by `corral job revert`).
    #[serde(rename = "deployment.reverted")]
    DeploymentReverted,
    #[serde(rename = "check.failing")]
    CheckFailing,
    #[serde(rename = "check.passing")]
    CheckPassing,
    #[serde(rename = "alert.firing")]
    AlertFiring,
    #[serde(rename = "alert.resolved")]
    AlertResolved,
    /// Its first claim: made on a node.
    #[serde(rename = "volume.created")]
    VolumeCreated,
    /// Its live copy moved to another node (a new generation).
    #[serde(rename = "volume.moved")]
    VolumeMoved,
    /// Its node was lost and it was restored on another node from a
    /// backup: what was written after the backup's snapshot is lost.
    #[serde(rename = "volume.restored")]
    VolumeRestored,
    /// Its agent took a snapshot (one event per snapshot).
    #[serde(rename = "volume.snapshot_taken")]
    VolumeSnapshotTaken,
    /// A backup was written to its target (one event per backup).
    #[serde(rename = "volume.backup_done")]
    VolumeBackupDone,
    /// A scheduled backup failed (or failed again with another error).
    #[serde(rename = "volume.backup_failed")]
    VolumeBackupFailed,
    #[serde(rename = "volume.deleted")]
    VolumeDeleted,
}

impl EventType {
    pub fn topic(self) -> EventTopic {
        use EventType::*;
        match self {
            JobRegistered | JobStopped | JobPurged => EventTopic::Job,
            AllocationPlaced
            | AllocationRescheduled
            | AllocationStarted
            | AllocationRestarted
            | AllocationOomKilled
            | AllocationFailed
            | AllocationCompleted
            | AllocationLost
            | AllocationStopped => EventTopic::Allocation,
            NodeUp | NodeDown | NodeDraining | NodeDrained | NodeEligibility | NodeRemoved => {
                EventTopic::Node
            }
            DeploymentCreated | DeploymentProgress | DeploymentPromoted | DeploymentPaused
            | DeploymentResumed | DeploymentSuccessful | DeploymentFailed | DeploymentCancelled
            | DeploymentReverted => EventTopic::Deployment,
            CheckFailing | CheckPassing => EventTopic::Check,
            AlertFiring | AlertResolved => EventTopic::Alert,
            VolumeCreated | VolumeMoved | VolumeRestored | VolumeSnapshotTaken
            | VolumeBackupDone | VolumeBackupFailed | VolumeDeleted => EventTopic::Volume,
        }
    }

    pub fn as_str(self) -> &'static str {
        use EventType::*;
        match self {
            JobRegistered => "job.registered",
            JobStopped => "job.stopped",
            JobPurged => "job.purged",
            AllocationPlaced => "allocation.placed",
            AllocationRescheduled => "allocation.rescheduled",
            AllocationStarted => "allocation.started",
            AllocationRestarted => "allocation.restarted",
            AllocationOomKilled => "allocation.oom_killed",
            AllocationFailed => "allocation.failed",
            AllocationCompleted => "allocation.completed",
            AllocationLost => "allocation.lost",
            AllocationStopped => "allocation.stopped",
            NodeUp => "node.up",
            NodeDown => "node.down",
            NodeDraining => "node.draining",
            NodeDrained => "node.drained",
            NodeEligibility => "node.eligibility",
            NodeRemoved => "node.removed",
            DeploymentCreated => "deployment.created",
            DeploymentProgress => "deployment.progress",
            DeploymentPromoted => "deployment.promoted",
            DeploymentPaused => "deployment.paused",
            DeploymentResumed => "deployment.resumed",
            DeploymentSuccessful => "deployment.successful",
            DeploymentFailed => "deployment.failed",
            DeploymentCancelled => "deployment.cancelled",
            DeploymentReverted => "deployment.reverted",
            CheckFailing => "check.failing",
            CheckPassing => "check.passing",
            AlertFiring => "alert.firing",
            AlertResolved => "alert.resolved",
            VolumeCreated => "volume.created",
            VolumeMoved => "volume.moved",
            VolumeRestored => "volume.restored",
            VolumeSnapshotTaken => "volume.snapshot_taken",
            VolumeBackupDone => "volume.backup_done",
            VolumeBackupFailed => "volume.backup_failed",
            VolumeDeleted => "volume.deleted",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A raised alert. At most one is active (firing) per rule and subject;
/// a resolved one stays listed for a while (`corral alerts --all`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `rule/subject/fired_at`: unique per firing.
    pub id: String,
    pub rule: AlertRule,
    /// What the alert is about, unique within the rule: `job/group/task`,
    /// a node id, a job name, `alloc/task`, `data_dir`, a volume id.
    pub subject: String,
    pub status: AlertStatus,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The job version that was failing (crash loop, deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_version: Option<u64>,
    /// How often the condition was seen while firing (restarts, OOM
    /// kills).
    pub count: u32,
    pub fired_at: UnixMillis,
    /// The last time the condition was seen.
    pub last_seen_at: UnixMillis,
    /// The index of the last event counted into the alert (event rules:
    /// crash loop, OOM kill, deployment), so a replay after a restart
    /// skips what was counted; event indexes are gapless and monotonic,
    /// unlike event times. 0: none, or stored before this field existed.
    #[serde(default)]
    pub last_event_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<UnixMillis>,
    /// Why it resolved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resolution: String,
    #[serde(default)]
    pub create_index: Index,
    #[serde(default)]
    pub modify_index: Index,
}

impl Alert {
    pub fn is_firing(&self) -> bool {
        self.status == AlertStatus::Firing
    }

    /// The de-duplication key: one active alert per rule and subject.
    pub fn key(&self) -> (AlertRule, &str) {
        (self.rule, &self.subject)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// A task restarted too often in a window.
    CrashLoop,
    OomKill,
    NodeDown,
    /// A deployment failed, or the job was rolled back.
    DeploymentFailed,
    /// A task's memory stayed above a share of its limit.
    MemoryHigh,
    /// The server's data dir is nearly full.
    DiskFull,
    /// A volume whose spec asks for backups has none recent enough, or
    /// its last backup failed.
    VolumeBackup,
}

impl AlertRule {
    pub const ALL: [AlertRule; 7] = [
        AlertRule::CrashLoop,
        AlertRule::OomKill,
        AlertRule::NodeDown,
        AlertRule::DeploymentFailed,
        AlertRule::MemoryHigh,
        AlertRule::DiskFull,
        AlertRule::VolumeBackup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::CrashLoop => "crash_loop",
            AlertRule::OomKill => "oom_kill",
            AlertRule::NodeDown => "node_down",
            AlertRule::DeploymentFailed => "deployment_failed",
            AlertRule::MemoryHigh => "memory_high",
            AlertRule::DiskFull => "disk_full",
            AlertRule::VolumeBackup => "volume_backup",
        }
    }
}

impl std::fmt::Display for AlertRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_serialize_as_topic_dot_what() {
        for t in [
            EventType::AllocationOomKilled,
            EventType::DeploymentReverted,
            EventType::AlertFiring,
            EventType::NodeEligibility,
            EventType::VolumeSnapshotTaken,
            EventType::VolumeRestored,
        ] {
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert!(t.as_str().starts_with(t.topic().as_str()));
        }
    }

    #[test]
    fn events_leave_out_absent_ids() {
        let e = Event::new(EventType::NodeDown, 5, "node n1 is down").node("n1");
        let json = serde_json::to_string(&e).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"index":0,"state_index":0,"time":5,"topic":"node","type":"node.down","node":"n1","message":"node n1 is down"}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, e);
    }

    #[test]
    fn topics_parse() {
        assert_eq!(EventTopic::parse("alloc"), Some(EventTopic::Allocation));
        assert_eq!(EventTopic::parse(" node "), Some(EventTopic::Node));
        assert_eq!(EventTopic::parse("nodes"), None);
        assert_eq!(EventTopic::parse("volume"), Some(EventTopic::Volume));
    }
}
