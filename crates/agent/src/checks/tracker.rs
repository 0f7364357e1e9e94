//! One check's status as a pure state machine: probe results in, status
//! out. No clock, no IO: the caller passes times in milliseconds on any
//! monotonic clock (the runner uses tokio's, so paused time drives tests).
//!
//! Rules (the thresholds count like Kubernetes' probes; Nomad's
//! `success_before_passing` and `failures_before_critical` are these minus
//! one):
//!
//! - a check starts `pending`, and is `pending` again after each start of
//!   its task;
//! - `success_threshold` passes in a row make it `passing`;
//! - `failure_threshold` counted failures in a row make it `failing`;
//! - a failure within `grace` of the task's start is not counted (the
//!   status stays as it was), a pass always counts;
//! - `check_restart`: `limit` failures in a row, counting only those at
//!   least its own `grace` after the task's start, ask for a restart of the
//!   task; the count starts again after the request.

use corral_types::{CheckRestart, CheckSpec, CheckState, CheckStatus};
use serde::{Deserialize, Serialize};

/// Which run of a task a check measured: its start time and restart
/// count.
pub type RunId = (Option<u64>, u32);

/// A check's tracker as persisted, with the task run it measured, so a
/// restarted agent that re-attaches to the same run carries on with the
/// same status (no flip to pending, no second `check.passing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCheck {
    pub run: RunId,
    pub status: CheckStatus,
    pub passes: u32,
    pub failures: u32,
    pub restart_failures: u32,
    pub output: String,
    /// When the run started, on the tracker's clock.
    pub started_at: u64,
}

/// Longest output kept in a [`CheckState`] (bytes, cut at a character
/// boundary).
pub const OUTPUT_LIMIT: usize = 512;

/// The result of one probe: its output either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Pass(String),
    Fail(String),
}

/// What a recorded probe changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The status changed.
    pub status_changed: bool,
    /// `check_restart` asks for a restart of the task, for this reason.
    pub restart: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CheckTracker {
    name: String,
    success_threshold: u32,
    failure_threshold: u32,
    grace: u64,
    restart: Option<CheckRestart>,
    status: CheckStatus,
    passes: u32,
    failures: u32,
    restart_failures: u32,
    started_at: u64,
    output: String,
}

impl CheckTracker {
    pub fn new(spec: &CheckSpec) -> Self {
        CheckTracker {
            name: spec.name.clone(),
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            grace: spec.grace.0,
            restart: spec.check_restart,
            status: CheckStatus::Pending,
            passes: 0,
            failures: 0,
            restart_failures: 0,
            started_at: 0,
            output: String::new(),
        }
    }

    /// The check's task (re)started at `now`: pending again, counters
    /// reset, grace periods start. The last output is kept.
    pub fn task_started(&mut self, now: u64) {
        self.status = CheckStatus::Pending;
        self.passes = 0;
        self.failures = 0;
        self.restart_failures = 0;
        self.started_at = now;
    }

    /// The check's task stopped (exited, waits for a restart): a check
    /// says nothing about a task that does not run, so it is pending
    /// again until the next run proves itself.
    pub fn task_stopped(&mut self) {
        self.status = CheckStatus::Pending;
        self.passes = 0;
        self.failures = 0;
        self.restart_failures = 0;
    }

    /// What to persist, for the run `run`.
    pub fn save(&self, run: RunId) -> SavedCheck {
        SavedCheck {
            run,
            status: self.status,
            passes: self.passes,
            failures: self.failures,
            restart_failures: self.restart_failures,
            output: self.output.clone(),
            started_at: self.started_at,
        }
    }

    /// Carries on from a saved tracker of the same run.
    pub fn restore(&mut self, saved: &SavedCheck) {
        self.status = saved.status;
        self.passes = saved.passes;
        self.failures = saved.failures;
        self.restart_failures = saved.restart_failures;
        self.output = saved.output.clone();
        self.started_at = saved.started_at;
    }

    pub fn status(&self) -> CheckStatus {
        self.status
    }

    /// Counted failures in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe that finished at `now`.
    pub fn record(&mut self, now: u64, probe: Probe) -> Recorded {
        let before = self.status;
        let since_start = now.saturating_sub(self.started_at);
        let mut restart = None;
        match probe {
            Probe::Pass(output) => {
                self.output = cut(&output);
                self.passes = self.passes.saturating_add(1);
                self.failures = 0;
                self.restart_failures = 0;
                if self.passes >= self.success_threshold {
                    self.status = CheckStatus::Passing;
                }
            }
            Probe::Fail(output) => {
                self.output = cut(&output);
                self.passes = 0;
                if since_start >= self.grace {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures >= self.failure_threshold {
                        self.status = CheckStatus::Failing;
                    }
                }
                if let Some(r) = self.restart
                    && since_start >= r.grace.0
                {
                    self.restart_failures = self.restart_failures.saturating_add(1);
                    if self.restart_failures >= r.limit.max(1) {
                        self.restart_failures = 0;
                        restart = Some(format!(
                            "check `{}` failed {} time{} in a row (last: {}); check_restart restarts the task",
                            self.name,
                            r.limit,
                            if r.limit == 1 { "" } else { "s" },
                            if self.output.is_empty() {
                                "no output"
                            } else {
                                &self.output
                            }
                        ));
                    }
                }
            }
        }
        Recorded {
            status_changed: before != self.status,
            restart,
        }
    }

    /// The state to report; `task` is the check's task, `at` the unix time
    /// of the last probe.
    pub fn state(&self, task: &str, at: u64) -> CheckState {
        CheckState {
            task: task.to_string(),
            status: self.status,
            output: self.output.clone(),
            consecutive_failures: self.failures,
            at,
        }
    }
}

/// `s` cut to [`OUTPUT_LIMIT`] bytes at a character boundary, on one line.
pub fn cut(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(OUTPUT_LIMIT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < s.len() {
        out.push_str("...");
    }
    out
}
