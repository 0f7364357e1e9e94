//! The allocation's observed status: the fold of its tasks' states, and
//! the reports sent to the server when something worth telling changed.

use std::collections::BTreeMap;

use corral_types::{
    AllocHealth, AllocUpdate, CheckStatus, ClientStatus, TaskLifecycle, TaskState, VolumeSync,
};
use tokio::sync::{mpsc, watch};

use crate::checks::{self, CheckStates};
use crate::layout::AllocDir;

/// The allocation's observed status from its tasks' states.
pub fn fold(tasks: &BTreeMap<String, TaskState>, failed: bool, finished: bool) -> ClientStatus {
    if finished || tasks.values().all(|t| t.state == TaskLifecycle::Dead) {
        return if failed || tasks.values().any(|t| t.failed) {
            ClientStatus::Failed
        } else {
            ClientStatus::Complete
        };
    }
    // A task waiting for its restart runs nothing: as Nomad, the
    // allocation is pending until every task runs again (a task that never
    // starts is never reported running). A failed allocation whose other
    // tasks are still being stopped is not running either.
    if failed
        || tasks
            .values()
            .any(|t| matches!(t.state, TaskLifecycle::Pending | TaskLifecycle::Restarting))
    {
        ClientStatus::Pending
    } else {
        ClientStatus::Running
    }
}

/// What was last reported for the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    client: ClientStatus,
    tasks: BTreeMap<String, TaskState>,
    checks: CheckStates,
    health: Option<AllocHealth>,
    message: String,
    volume_sync: Option<VolumeSync>,
}

/// Reports the allocation's status when it changed, persisting the task
/// states first (a restarted agent starts from them).
pub struct Reporter {
    pub id: String,
    pub dir: AllocDir,
    pub updates: mpsc::UnboundedSender<AllocUpdate>,
    pub states: BTreeMap<String, watch::Receiver<TaskState>>,
    pub checks: watch::Receiver<CheckStates>,
    pub health: watch::Receiver<Option<AllocHealth>>,
    pub volume_sync: watch::Receiver<Option<VolumeSync>>,
    last: Option<Sent>,
}

impl Reporter {
    pub fn new(
        id: String,
        dir: AllocDir,
        updates: mpsc::UnboundedSender<AllocUpdate>,
        states: BTreeMap<String, watch::Receiver<TaskState>>,
        checks: watch::Receiver<CheckStates>,
        health: watch::Receiver<Option<AllocHealth>>,
        volume_sync: watch::Receiver<Option<VolumeSync>>,
    ) -> Reporter {
        Reporter {
            id,
            dir,
            updates,
            states,
            checks,
            health,
            volume_sync,
            last: None,
        }
    }

    /// Whether the checks changed enough to be worth a report (a status
    /// changed, a passing check started failing), not every probe.
    pub fn checks_worth_reporting(&self) -> bool {
        self.last
            .as_ref()
            .is_none_or(|s| checks::worth_reporting(&s.checks, &self.checks.borrow()))
    }

    /// The update as things stand.
    pub fn current(&self, failure: Option<&str>, finished: bool) -> AllocUpdate {
        let tasks: BTreeMap<String, TaskState> = self
            .states
            .iter()
            .map(|(k, v)| (k.clone(), v.borrow().clone()))
            .collect();
        let mut checks = self.checks.borrow().clone();
        // A check vouches only for a task that runs (its loop may not
        // have seen the stop yet).
        for c in checks.values_mut() {
            if tasks
                .get(&c.task)
                .is_some_and(|t| t.state != TaskLifecycle::Running)
            {
                c.status = CheckStatus::Pending;
                c.consecutive_failures = 0;
            }
        }
        AllocUpdate {
            volume_sync: self.volume_sync.borrow().clone(),
            id: self.id.clone(),
            client: fold(&tasks, failure.is_some(), finished),
            tasks,
            message: failure.unwrap_or_default().to_string(),
            checks,
            health: self.health.borrow().clone(),
        }
    }

    /// Persists the task states that changed and reports, when anything
    /// changed.
    pub fn send(&mut self, failure: Option<&str>, finished: bool) {
        let u = self.current(failure, finished);
        // Only what changed since the last report (which carried every
        // state): a check's change rewrites no task file.
        let before = self.last.as_ref().map(|l| &l.tasks);
        for (name, s) in &u.tasks {
            if before.and_then(|b| b.get(name)) == Some(s) {
                continue;
            }
            if let Err(e) = self.dir.save_task_state(name, s) {
                tracing::warn!(alloc = %self.id, task = %name, error = %e, "cannot persist the task state");
            }
        }
        self.report(u);
    }

    /// The last report: the allocation's state on disk is gone already
    /// (its last report is kept instead).
    pub fn send_final(&mut self, failure: Option<&str>) {
        let u = self.current(failure, true);
        self.report(u);
    }

    fn report(&mut self, u: AllocUpdate) {
        let sent = Sent {
            client: u.client,
            tasks: u.tasks.clone(),
            checks: u.checks.clone(),
            health: u.health.clone(),
            message: u.message.clone(),
            volume_sync: u.volume_sync.clone(),
        };
        if self.last.as_ref() != Some(&sent) {
            let _ = self.updates.send(u);
            self.last = Some(sent);
        }
    }
}
