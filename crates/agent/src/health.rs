//! Deployment health of an allocation, decided on its node (Nomad's alloc
//! health watcher).
//!
//! Only allocations placed by a deployment (`deployment_id` set) get a
//! verdict, once per deployment, never changed afterwards. With the
//! group's `update` policy:
//!
//! - `health_check: checks` (the default): healthy once every task runs
//!   and every check passes, without a break, for `min_healthy_time`; a
//!   group without checks needs its tasks running only;
//! - `task_states`: every task running for `min_healthy_time`;
//! - `manual`: the agent never decides (the API does).
//!
//! Unhealthy at once when a task dies or restarts before the allocation is
//! healthy, or when it is not healthy `healthy_deadline` after the watch
//! started; the message says why (which task, which check and its last
//! output). [`HealthTracker`] is the decision as a pure function of times
//! and states; [`spawn`] feeds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_types::units::Millis;
use corral_types::{
    AllocHealth, Allocation, CheckStatus, HealthCheckMode, TaskLifecycle, TaskState, UpdatePolicy,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::checks::CheckStates;
use crate::driver::now_unix_ms;

/// When the watch for a deployment started (unix ms): persisted, so an
/// agent restart does not give the allocation a new `healthy_deadline`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchStart {
    pub deployment: String,
    pub at: u64,
}

/// Where [`watch`] publishes.
pub struct Outputs {
    /// The verdict (`None` until decided).
    pub verdict: Arc<watch::Sender<Option<AllocHealth>>>,
    /// When the watch of the current deployment started.
    pub started: Arc<watch::Sender<Option<WatchStart>>>,
}

/// How the verdict is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRules {
    /// Checks count (mode `checks` and the group has checks).
    pub use_checks: bool,
    pub min_healthy_time: u64,
    pub healthy_deadline: u64,
}

impl HealthRules {
    /// The rules of a group's update policy; `None` for `manual`.
    pub fn of(update: &UpdatePolicy, has_checks: bool) -> Option<HealthRules> {
        let use_checks = match update.health_check {
            HealthCheckMode::Manual => return None,
            HealthCheckMode::Checks => has_checks,
            HealthCheckMode::TaskStates => false,
        };
        Some(HealthRules {
            use_checks,
            min_healthy_time: update.min_healthy_time.0,
            healthy_deadline: update.healthy_deadline.0,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy(String),
}

/// The decision for one allocation and one deployment. Times are
/// milliseconds on any monotonic clock.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    rules: HealthRules,
    started: u64,
    /// Since when everything has been fine, without a break.
    fine_since: Option<u64>,
    /// Restart counters when the watch started.
    baseline: BTreeMap<String, u32>,
}

impl HealthTracker {
    pub fn new(rules: HealthRules, now: u64, tasks: &BTreeMap<String, TaskState>) -> Self {
        HealthTracker {
            rules,
            started: now,
            fine_since: None,
            baseline: tasks.iter().map(|(k, t)| (k.clone(), t.restarts)).collect(),
        }
    }

    /// The verdict at `now`, if there is one yet.
    pub fn observe(
        &mut self,
        now: u64,
        tasks: &BTreeMap<String, TaskState>,
        checks: &CheckStates,
    ) -> Option<Verdict> {
        for (name, t) in tasks {
            let restarted = t.restarts > self.baseline.get(name).copied().unwrap_or(0);
            let why = match t.state {
                TaskLifecycle::Dead => Some("died"),
                TaskLifecycle::Restarting => Some("restarted"),
                _ if restarted => Some("restarted"),
                _ => None,
            };
            if let Some(what) = why {
                let mut m = format!("task {name} {what} before the allocation was healthy");
                if !t.message.is_empty() {
                    m.push_str(": ");
                    m.push_str(&t.message);
                }
                return Some(Verdict::Unhealthy(m));
            }
        }
        let fine = tasks.values().all(|t| t.state == TaskLifecycle::Running)
            && (!self.rules.use_checks
                || checks.values().all(|c| c.status == CheckStatus::Passing));
        if fine {
            let since = *self.fine_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.rules.min_healthy_time {
                return Some(Verdict::Healthy);
            }
        } else {
            self.fine_since = None;
        }
        if now >= self.deadline() {
            return Some(Verdict::Unhealthy(format!(
                "not healthy within the healthy_deadline of {}: {}",
                Millis(self.rules.healthy_deadline),
                self.why_not(now, tasks, checks)
            )));
        }
        None
    }

    /// When the verdict may change with nothing else changing: the end of
    /// `min_healthy_time` or the deadline.
    pub fn next_wakeup(&self) -> u64 {
        let deadline = self.deadline();
        match self.fine_since {
            Some(s) => deadline.min(s.saturating_add(self.rules.min_healthy_time)),
            None => deadline,
        }
    }

    fn deadline(&self) -> u64 {
        self.started.saturating_add(self.rules.healthy_deadline)
    }

    fn why_not(
        &self,
        now: u64,
        tasks: &BTreeMap<String, TaskState>,
        checks: &CheckStates,
    ) -> String {
        let mut reasons = Vec::new();
        for (name, t) in tasks {
            if t.state != TaskLifecycle::Running {
                reasons.push(format!("task {name} is {}", t.state.as_str()));
            }
        }
        if self.rules.use_checks {
            for (name, c) in checks {
                match c.status {
                    CheckStatus::Passing => {}
                    CheckStatus::Pending => reasons.push(if c.output.is_empty() {
                        format!("check {name} is pending")
                    } else {
                        format!("check {name} is pending (last output: {})", c.output)
                    }),
                    CheckStatus::Failing => reasons.push(format!(
                        "check {name} is failing ({} consecutive failure{}): {}",
                        c.consecutive_failures,
                        if c.consecutive_failures == 1 { "" } else { "s" },
                        if c.output.is_empty() {
                            "no output"
                        } else {
                            &c.output
                        }
                    )),
                }
            }
        }
        if reasons.is_empty()
            && let Some(since) = self.fine_since
        {
            reasons.push(format!(
                "healthy for only {} of the min_healthy_time of {}",
                Millis(now.saturating_sub(since)),
                Millis(self.rules.min_healthy_time)
            ));
        }
        if reasons.is_empty() {
            reasons.push("it never was healthy".into());
        }
        reasons.join("; ")
    }
}

/// Watches one allocation: publishes its verdict (`None` until decided)
/// for the deployment it belongs to, and again for each new deployment.
/// It stops deciding once `stop` fires (a stopped allocation is not
/// unhealthy). A verdict already in the allocation (decided before an
/// agent restart, or by the server) is kept, not decided again.
pub async fn watch(
    mut alloc: watch::Receiver<Allocation>,
    update: UpdatePolicy,
    tasks: BTreeMap<String, watch::Receiver<TaskState>>,
    checks: watch::Receiver<CheckStates>,
    has_checks: bool,
    outs: Outputs,
    stop: CancellationToken,
) {
    let Outputs {
        verdict: out,
        started,
    } = outs;
    // Unix milliseconds advanced by tokio's clock: a start persisted
    // before an agent restart compares with it; paused time drives tests.
    let (base_unix, base) = (now_unix_ms(), Instant::now());
    let clock = || base_unix + base.elapsed().as_millis() as u64;
    let rules = HealthRules::of(&update, has_checks);
    let mut deployment = {
        let a = alloc.borrow_and_update();
        out.send_replace(a.health.clone().filter(|_| a.deployment_id.is_some()));
        a.deployment_id.clone()
    };
    let mut changes = futures::stream::select_all(
        tasks
            .values()
            .map(|rx| WatchStream::from_changes(rx.clone()).map(|_| ()).boxed())
            .chain(std::iter::once(
                WatchStream::from_changes(checks.clone())
                    .map(|_| ())
                    .boxed(),
            )),
    );
    let snapshot = || -> BTreeMap<String, TaskState> {
        tasks
            .iter()
            .map(|(k, v)| (k.clone(), v.borrow().clone()))
            .collect()
    };
    // Follows the allocation; `true` when it joined another deployment.
    let joined_another = |a: &Allocation, deployment: &mut Option<String>| {
        if a.deployment_id == *deployment {
            return false;
        }
        *deployment = a.deployment_id.clone();
        out.send_replace(a.health.clone().filter(|_| a.deployment_id.is_some()));
        true
    };
    let mut changes_open = true;
    loop {
        let undecided = out.borrow().is_none();
        if let (Some(rules), Some(d), true) = (rules, &deployment, undecided) {
            // The deadline runs from the first watch of this deployment.
            let since = match &*started.borrow() {
                Some(s) if s.deployment == *d => s.at.min(clock()),
                _ => clock(),
            };
            started.send_replace(Some(WatchStart {
                deployment: d.clone(),
                at: since,
            }));
            let mut tracker = HealthTracker::new(rules, since, &snapshot());
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let verdict = tracker.observe(clock(), &snapshot(), &checks.borrow());
                if let Some(v) = verdict {
                    let (healthy, message) = match v {
                        Verdict::Healthy => (true, String::new()),
                        Verdict::Unhealthy(m) => (false, m),
                    };
                    tracing::info!(deployment = ?deployment, healthy, %message,
                        "allocation health decided");
                    crate::killpoint::reached("health.decided");
                    out.send_replace(Some(AllocHealth {
                        healthy,
                        at: now_unix_ms(),
                        message,
                    }));
                    break;
                }
                let wake =
                    base + Duration::from_millis(tracker.next_wakeup().saturating_sub(base_unix));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                    c = changes.next(), if changes_open => changes_open = c.is_some(),
                    r = alloc.changed() => {
                        if r.is_err() {
                            return;
                        }
                        let a = alloc.borrow_and_update().clone();
                        if joined_another(&a, &mut deployment) {
                            break;
                        }
                    }
                }
            }
            continue;
        }
        // Nothing to decide until the allocation joins another deployment.
        tokio::select! {
            _ = stop.cancelled() => return,
            r = alloc.changed() => {
                if r.is_err() {
                    return;
                }
                let a = alloc.borrow_and_update().clone();
                joined_another(&a, &mut deployment);
            }
        }
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
