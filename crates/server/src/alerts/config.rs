//! Alert settings (`[server.alerts]` in the config file; defaults and
//! reasons in docs/CONFIG.md).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Off: no rule runs (stored alerts stay as they are).
    pub enabled: bool,
    /// How often the rules are evaluated.
    pub eval_interval: Duration,
    /// Webhook URLs: each alert that fires or resolves is POSTed to
    /// every one as JSON.
    pub webhooks: Vec<String>,
    /// Attempts after the first failed one.
    pub webhook_retries: u32,
    /// The wait before the first retry; it doubles each time (at most a
    /// minute).
    pub webhook_backoff: Duration,
    pub webhook_timeout: Duration,
    /// Resolved alerts stay listed (`corral alerts --all`) this long.
    pub retention: Duration,
    pub crash_loop: CrashLoopRule,
    pub oom_kill: OomKillRule,
    pub node_down: ConditionRule,
    pub deployment_failed: ToggleRule,
    pub memory: ThresholdRule,
    pub disk: ThresholdRule,
    /// A volume whose job's spec asks for backups: its last backup
    /// failed, or its newest is older than twice the spec's `every`.
    pub volume_backup: ToggleRule,
}

/// `restarts` restarts of one task (across its job's allocations) within
/// `window`. Resolves after a `window` without restarts, when a newer
/// version of the job runs without restarting, or when the job stops.
#[derive(Debug, Clone)]
pub struct CrashLoopRule {
    pub enabled: bool,
    pub restarts: u32,
    pub window: Duration,
}

/// Fires at an OOM kill; further kills of the same task while it fires
/// are counted in it. Resolves after `quiet` without another kill.
#[derive(Debug, Clone)]
pub struct OomKillRule {
    pub enabled: bool,
    pub quiet: Duration,
}

/// A condition that must hold for `for_duration` before the alert fires;
/// it resolves as soon as the condition is gone.
#[derive(Debug, Clone)]
pub struct ConditionRule {
    pub enabled: bool,
    pub for_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct ToggleRule {
    pub enabled: bool,
}

/// A share (0..1) above which a condition holds, for `for_duration`.
#[derive(Debug, Clone)]
pub struct ThresholdRule {
    pub enabled: bool,
    pub threshold: f64,
    pub for_duration: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            eval_interval: Duration::from_secs(5),
            webhooks: Vec::new(),
            webhook_retries: 5,
            webhook_backoff: Duration::from_secs(1),
            webhook_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            crash_loop: CrashLoopRule {
                enabled: true,
                restarts: 3,
                window: Duration::from_secs(600),
            },
            oom_kill: OomKillRule {
                enabled: true,
                quiet: Duration::from_secs(600),
            },
            node_down: ConditionRule {
                enabled: true,
                for_duration: Duration::ZERO,
            },
            deployment_failed: ToggleRule { enabled: true },
            memory: ThresholdRule {
                enabled: true,
                threshold: 0.9,
                for_duration: Duration::from_secs(300),
            },
            disk: ThresholdRule {
                enabled: true,
                threshold: 0.9,
                for_duration: Duration::ZERO,
            },
            volume_backup: ToggleRule { enabled: true },
        }
    }
}

impl AlertsConfig {
    /// How far back the event history matters to the rules (replayed
    /// after a server restart).
    pub fn lookback(&self) -> Duration {
        self.crash_loop.window.max(self.oom_kill.quiet)
    }
}
