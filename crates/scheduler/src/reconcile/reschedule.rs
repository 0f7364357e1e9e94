//! The reschedule policy (Nomad's): whether, and when, a failed allocation
//! is replaced.
//!
//! - One that failed in a deployment still under way (or one that failed)
//!   is the deployment's: its health rules decide (fail, revert), and a
//!   replacement would hide the failure.
//! - Without `unlimited`, at most `attempts` reschedules of the slot within
//!   the last `interval`; then the failed allocation holds its slot.
//! - The wait after the failure is `delay`, grown by `delay_function` with
//!   each earlier reschedule of the slot, at most `max_delay`.

use corral_types::{
    Allocation, Deployment, DeploymentStatus, RescheduleEvent, ReschedulePolicy, UnixMillis,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not rescheduled (attempts used up, or the deployment decides).
    Hold,
    /// Rescheduled at this time: look again then.
    Wait(UnixMillis),
    /// Rescheduled now; the event to record on the replacement.
    Now(RescheduleEvent),
}

pub fn decide(
    policy: &ReschedulePolicy,
    failed: &Allocation,
    latest: Option<&Deployment>,
    now: UnixMillis,
) -> Decision {
    if let (Some(d), Some(id)) = (latest, failed.deployment_id.as_deref())
        && d.id == id
        && (d.is_active() || d.status == DeploymentStatus::Failed)
    {
        return Decision::Hold;
    }
    if !policy.unlimited {
        let since = now.saturating_sub(policy.interval.0);
        let recent = failed.reschedules.iter().filter(|e| e.at >= since).count();
        if recent >= policy.attempts as usize {
            return Decision::Hold;
        }
    }
    let delay = policy.delay_after(failed.reschedules.len());
    let due = failed.failed_at().saturating_add(delay.0);
    if now < due {
        return Decision::Wait(due);
    }
    Decision::Now(RescheduleEvent {
        at: now,
        prev_alloc: failed.id.clone(),
        prev_node: failed.node_id.clone(),
        delay_ms: delay.0,
    })
}
