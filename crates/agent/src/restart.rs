//! The restart policy of a task, as a pure state machine (no clock, no IO):
//! the caller passes the time of each exit.
//!
//! Semantics (Nomad's, plus a backoff):
//!
//! - Every exit counts, successful or not. corral jobs are service jobs:
//!   they keep `count` copies running, so a task that exits with code 0 is
//!   restarted too, and that restart counts against `attempts` like any
//!   other.
//! - A start failure (e.g. the binary does not exist) is an exit too.
//! - Counting happens in a window of `interval` that opens at the first
//!   counted exit; an exit after the window has closed opens a new window
//!   and the count starts again from 1.
//! - Within a window, up to `attempts` restarts are allowed. The n-th restart
//!   of a window waits `delay * 2^(n-1)` (backoff: 15s, 30s, 60s, ...),
//!   capped at [`MAX_BACKOFF`] (or at `delay` itself when `delay` is
//!   larger). A new window starts again from `delay`.
//! - One exit more than `attempts` within a window:
//!   - mode `fail`: no more restarts, the task is dead and failed;
//!   - mode `delay`: wait until the window closes (`interval` after its
//!     first counted exit), then restart with a fresh window.

use std::time::Duration;

use corral_types::{RestartMode, RestartPolicy};

use crate::driver::ExitResult;
use crate::layout::RestartRecord;

/// Upper bound of the backoff (unless `delay` itself is larger).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start the task again after this delay.
    Restart { after: Duration },
    /// Give up: the task is dead and failed.
    Fail { reason: String },
}

#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// When the current window opened (ms, caller's clock).
    window_start: Option<u64>,
    /// Exits counted in the current window.
    in_window: u32,
    /// Restarts decided so far (all windows).
    restarts: u32,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        Self::with_restarts(policy, 0)
    }

    /// Continues a restart counter; the window starts afresh.
    pub fn with_restarts(policy: RestartPolicy, restarts: u32) -> Self {
        RestartTracker {
            policy,
            window_start: None,
            in_window: 0,
            restarts,
        }
    }

    /// Continues where a persisted record left off (an agent restart):
    /// counter, window and the exits counted in it. The record's times
    /// must be on the clock the caller passes to [`Self::on_exit`].
    pub fn restore(policy: RestartPolicy, rec: &RestartRecord) -> Self {
        RestartTracker {
            policy,
            window_start: rec.window_start,
            in_window: if rec.window_start.is_some() {
                rec.in_window
            } else {
                0
            },
            restarts: rec.restarts,
        }
    }

    /// What to persist; `due` is when a decided restart starts, if one
    /// waits (the caller fills in what the exit was).
    pub fn record(&self, due: Option<u64>) -> RestartRecord {
        RestartRecord {
            restarts: self.restarts,
            window_start: self.window_start,
            in_window: self.in_window,
            due,
            exited: None,
            gave_up: None,
            stopping_since: None,
            exit_code: None,
            oom_killed: false,
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Restarts decided so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Decides what happens after an exit at `now_ms` (any monotonic
    /// millisecond clock).
    pub fn on_exit(&mut self, now_ms: u64, exit: &ExitResult) -> RestartDecision {
        let interval = self.policy.interval.0;
        match self.window_start {
            Some(start) if now_ms < start.saturating_add(interval) => {}
            _ => {
                self.window_start = Some(now_ms);
                self.in_window = 0;
            }
        }
        let start = self.window_start.unwrap_or(now_ms);
        self.in_window += 1;

        if self.in_window > self.policy.attempts {
            match self.policy.mode {
                RestartMode::Fail => {
                    return RestartDecision::Fail {
                        reason: format!(
                            "exceeded {} restart{} in {} and the restart mode is fail; last exit: {}",
                            self.policy.attempts,
                            if self.policy.attempts == 1 { "" } else { "s" },
                            self.policy.interval,
                            exit.message
                        ),
                    };
                }
                RestartMode::Delay => {
                    let after = start.saturating_add(interval).saturating_sub(now_ms);
                    // The next exit opens a new window.
                    self.window_start = None;
                    self.in_window = 0;
                    self.restarts += 1;
                    return RestartDecision::Restart {
                        after: Duration::from_millis(after),
                    };
                }
            }
        }
        self.restarts += 1;
        RestartDecision::Restart {
            after: self.backoff(self.in_window),
        }
    }

    /// A restart a user asked for: at once, counted in the restarts, not
    /// in the policy's window (Nomad's `alloc restart`).
    pub fn on_requested(&mut self) -> RestartDecision {
        self.restarts += 1;
        RestartDecision::Restart {
            after: Duration::ZERO,
        }
    }

    /// `delay * 2^(n-1)`, capped at `max(MAX_BACKOFF, delay)`.
    fn backoff(&self, n: u32) -> Duration {
        let delay = self.policy.delay.as_std();
        let cap = MAX_BACKOFF.max(delay);
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        delay.checked_mul(factor).unwrap_or(cap).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::units::Millis;

    fn policy(attempts: u32, interval_s: u64, delay_s: u64, mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            attempts,
            interval: Millis::from_secs(interval_s),
            delay: Millis::from_secs(delay_s),
            mode,
        }
    }

    fn fail() -> ExitResult {
        ExitResult::from_status(Some(1), None, false)
    }

    fn restart(s: u64) -> RestartDecision {
        RestartDecision::Restart {
            after: Duration::from_secs(s),
        }
    }

    /// A user's restart is immediate and leaves the window alone: the
    /// policy still allows its attempts afterwards.
    #[test]
    fn a_requested_restart_does_not_use_an_attempt() {
        let mut t = RestartTracker::new(policy(1, 600, 2, RestartMode::Fail));
        assert_eq!(t.on_requested(), restart(0));
        assert_eq!(t.on_requested(), restart(0));
        assert_eq!(t.restarts(), 2);
        assert_eq!(t.on_exit(1_000, &fail()), restart(2));
        assert!(matches!(
            t.on_exit(2_000, &fail()),
            RestartDecision::Fail { .. }
        ));
        assert_eq!(t.restarts(), 3);
    }

    /// An agent restart in the middle of a window continues it: the
    /// attempts already used stay used, and the backoff goes on.
    #[test]
    fn a_restored_tracker_continues_its_window_and_backoff() {
        let p = policy(3, 600, 2, RestartMode::Fail);
        let mut t = RestartTracker::new(p);
        assert_eq!(t.on_exit(1_000, &fail()), restart(2));
        assert_eq!(t.on_exit(5_000, &fail()), restart(4));
        let rec = t.record(Some(9_000));
        assert_eq!(rec.due, Some(9_000));
        let mut back = RestartTracker::restore(p, &rec);
        assert_eq!(back.restarts(), 2);
        assert_eq!(back.on_exit(20_000, &fail()), restart(8));
        assert!(matches!(
            back.on_exit(30_000, &fail()),
            RestartDecision::Fail { .. }
        ));
        // Past the window, a restored tracker opens a new one.
        let mut late = RestartTracker::restore(p, &rec);
        assert_eq!(late.on_exit(1_000 + 600_000, &fail()), restart(2));
    }

    #[test]
    fn attempts_then_fail() {
        let mut t = RestartTracker::new(policy(2, 1800, 15, RestartMode::Fail));
        assert_eq!(t.on_exit(0, &fail()), restart(15));
        assert_eq!(t.on_exit(20_000, &fail()), restart(30));
        match t.on_exit(60_000, &fail()) {
            RestartDecision::Fail { reason } => {
                assert_eq!(
                    reason,
                    "exceeded 2 restarts in 30m and the restart mode is fail; last exit: exited with code 1"
                );
            }
            d => panic!("expected fail, got {d:?}"),
        }
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn zero_attempts_fails_at_once() {
        let mut t = RestartTracker::new(policy(0, 60, 1, RestartMode::Fail));
        assert!(matches!(
            t.on_exit(0, &fail()),
            RestartDecision::Fail { .. }
        ));
        assert_eq!(t.restarts(), 0);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut t = RestartTracker::new(policy(10, 3600, 60, RestartMode::Fail));
        let got: Vec<_> = (0..6).map(|i| t.on_exit(i * 1000, &fail())).collect();
        assert_eq!(
            got,
            vec![
                restart(60),
                restart(120),
                restart(240),
                restart(300),
                restart(300),
                restart(300)
            ]
        );
        // A delay above the cap is used as is, never doubled.
        let mut t = RestartTracker::new(policy(3, 3600, 600, RestartMode::Fail));
        assert_eq!(t.on_exit(0, &fail()), restart(600));
        assert_eq!(t.on_exit(1000, &fail()), restart(600));
    }

    #[test]
    fn a_new_window_resets_count_and_backoff() {
        let mut t = RestartTracker::new(policy(2, 60, 10, RestartMode::Fail));
        assert_eq!(t.on_exit(0, &fail()), restart(10));
        assert_eq!(t.on_exit(30_000, &fail()), restart(20));
        // 60 s after the first counted exit: a fresh window.
        assert_eq!(t.on_exit(60_000, &fail()), restart(10));
        assert_eq!(t.on_exit(70_000, &fail()), restart(20));
        assert!(matches!(
            t.on_exit(80_000, &fail()),
            RestartDecision::Fail { .. }
        ));
        assert_eq!(t.restarts(), 4);
    }

    #[test]
    fn delay_mode_waits_out_the_interval_then_starts_over() {
        let mut t = RestartTracker::new(policy(2, 600, 5, RestartMode::Delay));
        assert_eq!(t.on_exit(100_000, &fail()), restart(5));
        assert_eq!(t.on_exit(110_000, &fail()), restart(10));
        // Third exit in the window, 50 s after it opened: wait the 550 s left.
        assert_eq!(t.on_exit(150_000, &fail()), restart(550));
        // After the wait the count starts again, with the base delay.
        assert_eq!(t.on_exit(700_500, &fail()), restart(5));
        assert_eq!(t.on_exit(701_000, &fail()), restart(10));
        assert_eq!(
            t.on_exit(702_000, &fail()),
            RestartDecision::Restart {
                after: Duration::from_millis(598_500)
            }
        );
        assert_eq!(t.restarts(), 6);
    }

    #[test]
    fn successful_exits_are_restarted_and_counted() {
        let ok = ExitResult::from_status(Some(0), None, false);
        let mut t = RestartTracker::new(policy(1, 60, 1, RestartMode::Fail));
        assert_eq!(t.on_exit(0, &ok), restart(1));
        match t.on_exit(5_000, &ok) {
            RestartDecision::Fail { reason } => assert!(reason.ends_with("exited with code 0")),
            d => panic!("expected fail, got {d:?}"),
        }
    }

    #[test]
    fn counter_continues_from_a_given_value() {
        let mut t = RestartTracker::with_restarts(policy(2, 60, 0, RestartMode::Fail), 7);
        assert_eq!(t.on_exit(0, &fail()), restart(0));
        assert_eq!(t.restarts(), 8);
    }
}
