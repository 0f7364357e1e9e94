//! Named points where a test can have the agent killed (SIGKILL, as a
//! crash or an OOM kill would): `CORRAL_AGENT_KILL_AT=<point>` kills the
//! process the first time it passes `<point>`. The kill-point sweep
//! (`crates/testkit/tests/kill_points.rs`) runs a job through each point
//! and checks that the restarted agent ends exactly where it would have
//! without the kill. Unset (always, outside that test), a point costs one
//! load of a static.

use std::sync::OnceLock;

/// The environment variable naming the point.
pub const ENV: &str = "CORRAL_AGENT_KILL_AT";

/// Every point, in the order a task's life passes them.
pub const POINTS: &[&str] = &[
    // The driver started the task; its handle is not saved yet.
    "start.before_handle",
    // The handle is saved; the start is not reported yet.
    "start.after_handle",
    // A task exited and the restart decision is saved; the run that ended
    // is not destroyed yet.
    "exit.after_decision",
    // Waiting out a restart delay.
    "restart.waiting",
    // A stop signalled the task, which exited; not destroyed yet.
    "stop.after_signal",
    // The health verdict is decided; not persisted nor reported yet.
    "health.decided",
    // A task failed and the allocation's failure is saved; the other
    // tasks are not stopped yet.
    "alloc.after_failure",
    // Every task is dead and the last report is kept; the record and the
    // drivers' setup are not removed yet, the report not sent.
    "alloc.after_final",
];

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var(ENV).ok().filter(|p| !p.is_empty()))
        .as_deref()
}

/// Kills this process with SIGKILL if the test armed `point`.
pub fn reached(point: &'static str) {
    if armed() == Some(point) {
        tracing::warn!(point, "kill point reached: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // The signal is delivered before kill returns for this process;
        // never go on past a kill point.
        std::process::abort();
    }
}
