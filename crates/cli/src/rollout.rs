//! How a deployment's progress reads: pure functions of the deployment and
//! of "now", so the lines `corral run`, `corral deploy status` and the
//! progress bars show are tested with fixed timestamps.
//!
//! Canaries: before promotion a group places only canaries, so its healthy
//! count is the canaries' (Nomad's accounting); after promotion the
//! canaries are part of the group's total and are shown as "promoted".

use corral_types::{Deployment, DeploymentStatus, GroupDeployment, UnixMillis};

/// Placed canaries that are healthy (meaningful before promotion).
pub fn canaries_healthy(g: &GroupDeployment) -> u32 {
    g.healthy.min(g.placed_canaries.len() as u32)
}

/// Groups whose canaries still wait for promotion.
fn unpromoted(d: &Deployment) -> impl Iterator<Item = &GroupDeployment> {
    d.groups
        .values()
        .filter(|g| g.desired_canaries > 0 && !g.promoted)
}

/// The deployment is running, every canary is healthy, and a user has to
/// promote it (some group with canaries lacks `auto_promote`, so the
/// server will not). `corral run` stops following here, as Nomad's does.
pub fn awaiting_promotion(d: &Deployment) -> bool {
    if d.status != DeploymentStatus::Running {
        return false;
    }
    let mut any = false;
    let mut manual = false;
    for g in unpromoted(d) {
        any = true;
        manual |= !g.auto_promote;
        if canaries_healthy(g) < g.desired_canaries {
            return false;
        }
    }
    any && manual
}

/// "1h05m", "9m12s", "45s"; rounded up to the second so a live countdown
/// never shows 0s while time is left.
pub fn fmt_left(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Time left to the group's progress deadline: `Some("in 9m12s")`,
/// `Some("passed")`, or `None` when it has none or the deployment is not
/// running (a paused or finished deployment has no clock).
pub fn deadline(status: DeploymentStatus, g: &GroupDeployment, now: UnixMillis) -> Option<String> {
    if status != DeploymentStatus::Running {
        return None;
    }
    let by = g.require_progress_by?;
    Some(if by > now {
        format!("in {}", fmt_left(by - now))
    } else {
        "passed".to_string()
    })
}

/// The part of a group's progress after "healthy/desired": placed,
/// unhealthy, canaries, deadline.
pub fn group_detail(status: DeploymentStatus, g: &GroupDeployment, now: UnixMillis) -> String {
    let mut parts = vec![format!("{} placed", g.placed)];
    if g.unhealthy > 0 {
        parts.push(format!("{} unhealthy", g.unhealthy));
    }
    if g.desired_canaries > 0 {
        if g.promoted {
            let n = g.desired_canaries;
            let noun = if n == 1 { "canary" } else { "canaries" };
            parts.push(format!("{n} {noun} promoted"));
        } else {
            parts.push(format!(
                "canaries {}/{} healthy ({} placed, {})",
                canaries_healthy(g),
                g.desired_canaries,
                g.placed_canaries.len(),
                if g.auto_promote {
                    "auto-promote"
                } else {
                    "not promoted"
                }
            ));
        }
    }
    if let Some(d) = deadline(status, g, now) {
        parts.push(format!("deadline {d}"));
    }
    parts.join(", ")
}

/// `web: version 2 running` (with `(rollback to version 1)` for an
/// automatic revert, and the description unless it is simply running).
pub fn headline(job: &str, d: &Deployment) -> String {
    let mut s = format!("{job}: version {} {}", d.job_version, d.status);
    if let Some(v) = d.reverts_to {
        s.push_str(&format!(" (rollback to version {v})"));
    }
    if d.status != DeploymentStatus::Running && !d.description.is_empty() {
        s.push_str(&format!(" - {}", reason(d)));
    }
    s
}

/// The description without a leading "failed: " (or whatever the status
/// is) that would repeat the status; the status itself when empty.
pub fn reason(d: &Deployment) -> String {
    let prefix = format!("{}: ", d.status);
    let r = d
        .description
        .strip_prefix(prefix.as_str())
        .unwrap_or(&d.description);
    if r.is_empty() {
        d.status.to_string()
    } else {
        r.to_string()
    }
}

/// One line for the whole deployment, printed without a terminal each time
/// the deployment changes:
/// `web: version 2 running: web 1/3 healthy, 2 placed, deadline in 9m12s`.
pub fn plain_line(job: &str, d: &Deployment, now: UnixMillis) -> String {
    let groups: Vec<String> = d
        .groups
        .iter()
        .map(|(name, g)| {
            format!(
                "{name} {}/{} healthy, {}",
                g.healthy,
                g.desired_total,
                group_detail(d.status, g, now)
            )
        })
        .collect();
    format!("{}: {}", headline(job, d), groups.join("; "))
}

/// What the plain output compares to decide whether to print a new line:
/// everything shown except the clock.
pub fn signature(d: &Deployment) -> String {
    let mut s = format!("{} {} {} {:?}", d.id, d.status, d.description, d.reverts_to);
    for (name, g) in &d.groups {
        s.push_str(&format!(
            " {name}:{}/{}/{}/{}/{}/{}/{}/{:?}",
            g.desired_total,
            g.placed,
            g.healthy,
            g.unhealthy,
            g.placed_canaries.len(),
            g.promoted,
            g.desired_canaries,
            g.require_progress_by
        ));
    }
    s
}

/// "3/3 healthy", or per group when there are several.
pub fn healthy_summary(d: &Deployment) -> String {
    if d.groups.len() == 1
        && let Some(g) = d.groups.values().next()
    {
        return format!("{}/{} healthy", g.healthy, g.desired_total);
    }
    let parts: Vec<String> = d
        .groups
        .iter()
        .map(|(n, g)| format!("{n} {}/{}", g.healthy, g.desired_total))
        .collect();
    format!("{} healthy", parts.join(", "))
}

/// `corral deploy status`'s table columns.
pub const STATUS_HEADER: [&str; 8] = [
    "group",
    "desired",
    "placed",
    "healthy",
    "unhealthy",
    "canaries",
    "promoted",
    "deadline",
];

/// One row of `corral deploy status` per group.
pub fn status_rows(d: &Deployment, now: UnixMillis) -> Vec<Vec<String>> {
    d.groups
        .iter()
        .map(|(name, g)| {
            let (canaries, promoted) = if g.desired_canaries == 0 {
                ("-".to_string(), "-".to_string())
            } else {
                (
                    format!("{}/{}", g.placed_canaries.len(), g.desired_canaries),
                    if g.promoted { "yes" } else { "no" }.to_string(),
                )
            };
            vec![
                name.clone(),
                g.desired_total.to_string(),
                g.placed.to_string(),
                g.healthy.to_string(),
                g.unhealthy.to_string(),
                canaries,
                promoted,
                deadline(d.status, g, now).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}
