//! The state diff → events function. Pure: a commit's [`Diff`] (the state
//! before and after, and the records written) and a time in, the events
//! of the change out, in a stable order (jobs, deployments,
//! allocations, nodes, volumes, alerts; each in write order).

use std::collections::BTreeSet;

use corral_store::State;
use corral_store::changes::{Change, Diff};
use corral_types::units::{Bytes, Millis};
use corral_types::{
    Alert, AlertStatus, Allocation, CheckStatus, ClientStatus, Deployment, DeploymentStatus,
    DesiredStatus, Event, EventType, Job, Node, NodeStatus, UnixMillis, Volume,
};

/// Restart events for one task in one report, at most.
const MAX_RESTART_EVENTS: u32 = 100;

/// Every event of a commit.
pub fn diff(d: &Diff<'_>, now: UnixMillis) -> Vec<Event> {
    let (before, after) = (d.before, d.after);
    let mut out = Vec::new();
    let mut deployment_events = Vec::new();
    // Jobs rolled back by a failed deployment in this change: their new
    // version (`reverts_to`) needs no second "reverted" event.
    let mut reverted = BTreeSet::new();
    for c in d.deployments() {
        deployment(c, now, &mut deployment_events, &mut reverted);
    }
    let mut purged: Option<&str> = None;
    for c in d.job_versions() {
        job(c, before, after, now, &reverted, &mut purged, &mut out);
    }
    out.append(&mut deployment_events);
    for c in d.allocs() {
        alloc(c, after, now, &mut out);
    }
    for c in d.nodes() {
        node(c, now, &mut out);
    }
    for c in d.volumes() {
        volume(c, before, after, now, &mut out);
    }
    for c in d.alerts() {
        alert(c, now, &mut out);
    }
    out
}

fn job<'a>(
    c: Change<'a, Job>,
    before: &State,
    after: &State,
    now: UnixMillis,
    reverted: &BTreeSet<String>,
    purged: &mut Option<&'a str>,
    out: &mut Vec<Event>,
) {
    match c {
        Change::Added(j) => {
            let mut msg = format!("job {} version {} registered", j.name, j.version);
            if let Some(to) = j.reverts_to {
                msg.push_str(&format!(" (the spec of version {to})"));
            }
            out.push(Event::new(EventType::JobRegistered, now, msg).job(&j.name));
            if let Some(to) = j.reverts_to
                && !reverted.contains(&j.name)
            {
                let mut e = Event::new(
                    EventType::DeploymentReverted,
                    now,
                    format!(
                        "job {} reverted to version {to} (as version {})",
                        j.name, j.version
                    ),
                )
                .job(&j.name);
                if let Some(d) = before.latest_deployment(&j.name) {
                    e = e.deployment(&d.id);
                }
                out.push(e);
            }
        }
        Change::Updated { old, new } => {
            if !old.stopped && new.stopped {
                out.push(
                    Event::new(
                        EventType::JobStopped,
                        now,
                        format!("job {} stopped", new.name),
                    )
                    .job(&new.name),
                );
            }
        }
        Change::Removed(j) => {
            // A purge removes every version: one event per job.
            if after.job(&j.name).is_none() && *purged != Some(j.name.as_str()) {
                *purged = Some(j.name.as_str());
                out.push(
                    Event::new(EventType::JobPurged, now, format!("job {} purged", j.name))
                        .job(&j.name),
                );
            }
        }
    }
}

fn deployment(
    c: Change<'_, Deployment>,
    now: UnixMillis,
    out: &mut Vec<Event>,
    reverted: &mut BTreeSet<String>,
) {
    let ev = |kind: EventType, d: &Deployment, msg: String| {
        Event::new(kind, now, msg).job(&d.job).deployment(&d.id)
    };
    match c {
        Change::Added(d) => {
            let canaries: u32 = d.groups.values().map(|g| g.desired_canaries).sum();
            let mut msg = format!("deployment of {} version {} started", d.job, d.job_version);
            if canaries > 0 {
                msg.push_str(&format!(" with {canaries} canaries"));
            }
            if let Some(to) = d.reverts_to {
                msg.push_str(&format!(" (rolling back to version {to})"));
            }
            out.push(ev(EventType::DeploymentCreated, d, msg));
        }
        Change::Updated { old, new } => {
            let what = format!("deployment of {} version {}", new.job, new.job_version);
            let promoted = new
                .groups
                .iter()
                .any(|(g, n)| n.promoted && old.groups.get(g).is_some_and(|o| !o.promoted));
            if promoted {
                out.push(ev(
                    EventType::DeploymentPromoted,
                    new,
                    format!("{what} promoted"),
                ));
            }
            let healthy = |d: &Deployment| -> (u32, u32, u32) {
                d.groups.values().fold((0, 0, 0), |(h, u, t), g| {
                    (h + g.healthy, u + g.unhealthy, t + g.desired_total)
                })
            };
            let (h0, u0, _) = healthy(old);
            let (h1, u1, total) = healthy(new);
            if (h0, u0) != (h1, u1) {
                let mut msg = format!("{what}: {h1} of {total} healthy");
                if u1 > 0 {
                    msg.push_str(&format!(", {u1} unhealthy"));
                }
                out.push(ev(EventType::DeploymentProgress, new, msg));
            }
            if old.status != new.status {
                // "failed: <why>" reads as "... failed: <why>", not
                // "... failed: failed: <why>".
                let described = |s: &str| {
                    let d = new.description.as_str();
                    if d.is_empty() {
                        format!("{what} {s}")
                    } else if d.starts_with(s) {
                        format!("{what} {d}")
                    } else {
                        format!("{what} {s}: {d}")
                    }
                };
                let kind = match (old.status, new.status) {
                    (DeploymentStatus::Running, DeploymentStatus::Paused) => {
                        Some((EventType::DeploymentPaused, described("paused")))
                    }
                    (DeploymentStatus::Paused, DeploymentStatus::Running) => {
                        Some((EventType::DeploymentResumed, described("resumed")))
                    }
                    (_, DeploymentStatus::Successful) => Some((
                        EventType::DeploymentSuccessful,
                        format!("{what} successful"),
                    )),
                    (_, DeploymentStatus::Failed) => {
                        Some((EventType::DeploymentFailed, described("failed")))
                    }
                    (_, DeploymentStatus::Cancelled) => {
                        Some((EventType::DeploymentCancelled, described("cancelled")))
                    }
                    _ => None,
                };
                if let Some((kind, msg)) = kind {
                    out.push(ev(kind, new, msg));
                }
                if new.status == DeploymentStatus::Failed
                    && let Some(i) = new.description.find("rolling back")
                {
                    reverted.insert(new.job.clone());
                    out.push(ev(
                        EventType::DeploymentReverted,
                        new,
                        format!("{what} failed; {}", &new.description[i..]),
                    ));
                }
            }
        }
        Change::Removed(_) => {}
    }
}

fn alloc(c: Change<'_, Allocation>, after: &State, now: UnixMillis, out: &mut Vec<Event>) {
    let node_name = |a: &Allocation| -> String {
        after
            .node_by_id(&a.node_id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| a.node_id.clone())
    };
    let ev = |kind: EventType, a: &Allocation, msg: String| {
        let e = Event::new(kind, now, msg)
            .job(&a.job)
            .alloc(&a.id)
            .node(&a.node_id);
        match &a.deployment_id {
            Some(d) => e.deployment(d),
            None => e,
        }
    };
    match c {
        Change::Added(a) => {
            if a.desired == DesiredStatus::Run {
                // The node is in the event's `node`; its name is looked up
                // only for rare events (a lookup per placement costs).
                if let Some(r) = a.reschedules.last() {
                    let from = after
                        .node_by_id(&r.prev_node)
                        .map_or(r.prev_node.as_str(), |n| n.name.as_str());
                    let msg = format!(
                        "{} rescheduled to node {} after allocation {} failed on node {from} (reschedule {}, {} after the failure)",
                        a.name(),
                        node_name(a),
                        r.prev_alloc.get(..8).unwrap_or(&r.prev_alloc),
                        a.reschedules.len(),
                        corral_types::units::Millis(r.delay_ms)
                    );
                    out.push(ev(EventType::AllocationRescheduled, a, msg));
                } else {
                    let mut msg = format!("{} placed", a.name());
                    if a.canary {
                        msg.push_str(" as a canary");
                    }
                    out.push(ev(EventType::AllocationPlaced, a, msg));
                }
            }
        }
        Change::Updated { old, new: a } => {
            if old.desired == DesiredStatus::Run && a.desired == DesiredStatus::Stop {
                let mut msg = format!("{} stopping", a.name());
                if !a.desired_reason.is_empty() {
                    msg.push_str(&format!(": {}", a.desired_reason));
                }
                out.push(ev(EventType::AllocationStopped, a, msg));
            }
            if old.tasks != a.tasks {
                for (name, t) in &a.tasks {
                    let o = old.tasks.get(name);
                    let from = o.map(|o| o.restarts).unwrap_or(0);
                    // One event per restart: a report may carry several
                    // (at most the last MAX_RESTART_EVENTS of them).
                    let first = (from + 1).max(t.restarts.saturating_sub(MAX_RESTART_EVENTS - 1));
                    for n in first..=t.restarts {
                        let mut msg = format!("{} task {name} restarted (restart {n})", a.name());
                        if n == t.restarts
                            && let Some(code) = t.exit_code
                        {
                            msg.push_str(&format!("; it exited with code {code}"));
                        }
                        out.push(ev(EventType::AllocationRestarted, a, msg).task(name));
                    }
                    // One event per kill: a new exit that was an OOM kill.
                    let new_kill = t.oom_killed
                        && o.is_none_or(|o| !o.oom_killed || o.finished_at != t.finished_at);
                    if new_kill {
                        out.push(
                            ev(
                                EventType::AllocationOomKilled,
                                a,
                                format!(
                                    "{} task {name} was killed for running out of memory (limit {})",
                                    a.name(),
                                    a.resources.memory
                                ),
                            )
                            .task(name),
                        );
                    }
                }
            }
            if old.client != a.client {
                let why = || {
                    if !a.client_message.is_empty() {
                        return format!(": {}", a.client_message);
                    }
                    a.tasks
                        .iter()
                        .find(|(_, t)| t.failed)
                        .map(|(n, t)| format!(": task {n}: {}", t.message))
                        .unwrap_or_default()
                };
                let kind = match a.client {
                    ClientStatus::Running => Some((
                        EventType::AllocationStarted,
                        format!("{} running", a.name()),
                    )),
                    ClientStatus::Failed => Some((
                        EventType::AllocationFailed,
                        format!("{} failed{}", a.name(), why()),
                    )),
                    ClientStatus::Complete => Some((
                        EventType::AllocationCompleted,
                        format!("{} completed", a.name()),
                    )),
                    ClientStatus::Lost => Some((
                        EventType::AllocationLost,
                        format!("{} lost: node {} is down", a.name(), node_name(a)),
                    )),
                    ClientStatus::Pending => None,
                };
                if let Some((kind, msg)) = kind {
                    out.push(ev(kind, a, msg));
                }
            }
            if old.checks != a.checks {
                for (name, c) in &a.checks {
                    let was = old.checks.get(name).map(|o| o.status);
                    if was == Some(c.status) {
                        continue;
                    }
                    let (kind, state) = match c.status {
                        CheckStatus::Failing => (EventType::CheckFailing, "failing"),
                        CheckStatus::Passing => (EventType::CheckPassing, "passing"),
                        CheckStatus::Pending => continue,
                    };
                    let mut msg = format!("check {name} of {} {state}", a.name());
                    if c.status == CheckStatus::Failing && !c.output.is_empty() {
                        msg.push_str(&format!(": {}", c.output));
                    }
                    out.push(ev(kind, a, msg).task(&c.task).check(name));
                }
            }
        }
        Change::Removed(_) => {}
    }
}

fn node(c: Change<'_, Node>, now: UnixMillis, out: &mut Vec<Event>) {
    let ev = |kind: EventType, n: &Node, msg: String| Event::new(kind, now, msg).node(&n.id);
    match c {
        Change::Added(n) => match n.status {
            NodeStatus::Ready => out.push(ev(
                EventType::NodeUp,
                n,
                format!("node {} registered", n.name),
            )),
            NodeStatus::Down => out.push(ev(
                EventType::NodeDown,
                n,
                format!("node {} is down", n.name),
            )),
            NodeStatus::Initializing => {}
        },
        Change::Updated { old, new: n } => {
            if old.status != n.status {
                match n.status {
                    NodeStatus::Ready => out.push(ev(
                        EventType::NodeUp,
                        n,
                        format!("node {} is ready", n.name),
                    )),
                    NodeStatus::Down => out.push(ev(
                        EventType::NodeDown,
                        n,
                        format!("node {} is down: its heartbeats stopped", n.name),
                    )),
                    NodeStatus::Initializing => {}
                }
            }
            if !old.draining && n.draining {
                out.push(ev(
                    EventType::NodeDraining,
                    n,
                    format!("node {} is draining", n.name),
                ));
            }
            if old.draining && !n.draining {
                out.push(ev(
                    EventType::NodeDrained,
                    n,
                    format!("node {}: drain ended", n.name),
                ));
            }
            if old.eligible != n.eligible {
                let what = if n.eligible { "eligible" } else { "ineligible" };
                out.push(ev(
                    EventType::NodeEligibility,
                    n,
                    format!("node {} is {what} for new allocations", n.name),
                ));
            }
        }
        Change::Removed(n) => out.push(ev(
            EventType::NodeRemoved,
            n,
            format!("node {} removed", n.name),
        )),
    }
}

/// Volume events: its creation, a move or a restore (a new node), each
/// new snapshot and backup, a backup failure, its deletion. Volumes
/// change rarely, so node names are looked up for every message.
fn volume(
    c: Change<'_, Volume>,
    before: &State,
    after: &State,
    now: UnixMillis,
    out: &mut Vec<Event>,
) {
    let node_name = |id: &str| -> String {
        after
            .node_by_id(id)
            .or_else(|| before.node_by_id(id))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let ev = |kind: EventType, v: &Volume, msg: String| {
        let e = Event::new(kind, now, msg)
            .job(&v.job)
            .node(&v.node_id)
            .volume(&v.id);
        match &v.alloc_id {
            Some(a) => e.alloc(a),
            None => e,
        }
    };
    let (old, v) = match c {
        Change::Added(v) => {
            out.push(ev(
                EventType::VolumeCreated,
                v,
                format!(
                    "volume {} created on node {} ({}, {}){}",
                    v.id,
                    node_name(&v.node_id),
                    v.size,
                    v.provider,
                    v.origin.as_ref().map_or_else(String::new, |o| {
                        let what = match (&o.snapshot, &o.backup) {
                            (Some(s), _) => format!("snapshot {s}"),
                            (None, Some(b)) => format!("backup {} of {}", b.id, b.target),
                            (None, None) => "a copy".to_owned(),
                        };
                        format!(" from {what} of volume {}", o.volume)
                    })
                ),
            ));
            (None, v)
        }
        Change::Updated { old, new } => (Some(old), new),
        Change::Removed(v) => {
            out.push(ev(
                EventType::VolumeDeleted,
                v,
                format!(
                    "volume {} deleted (its live copy was on node {})",
                    v.id,
                    node_name(&v.node_id)
                ),
            ));
            return;
        }
    };
    let restored = v
        .restored_from
        .as_ref()
        .filter(|b| old.is_none_or(|o| o.restored_from.as_ref() != Some(*b)));
    if let Some(b) = restored {
        let from = old
            .map(|o| o.node_id.as_str())
            .filter(|n| *n != v.node_id)
            .or(v.moved_from.as_deref());
        let lost = from
            .map(|n| format!(" after node {} was lost", node_name(n)))
            .unwrap_or_default();
        out.push(ev(
            EventType::VolumeRestored,
            v,
            format!(
                "volume {} restored on node {}{lost}, from backup {} of {} taken at {}: writes after that time are lost",
                v.id,
                node_name(&v.node_id),
                b.id,
                b.target,
                utc(b.taken_at)
            ),
        ));
    }
    let Some(old) = old else {
        return;
    };
    if restored.is_none() && old.node_id != v.node_id {
        let mut msg = format!(
            "volume {} moved from node {} to node {} (generation {})",
            v.id,
            node_name(&old.node_id),
            node_name(&v.node_id),
            v.generation
        );
        if let Some(ms) = v.last_move_downtime_ms {
            msg.push_str(&format!(
                "; its allocation waited {} for the last copy",
                Millis(ms)
            ));
        }
        out.push(ev(EventType::VolumeMoved, v, msg));
    }
    if old.snapshots != v.snapshots {
        for s in &v.snapshots {
            if old.snapshots.iter().any(|o| o.name == s.name) {
                continue;
            }
            let how = if s.scheduled { "scheduled" } else { "manual" };
            out.push(ev(
                EventType::VolumeSnapshotTaken,
                v,
                format!(
                    "volume {}: {how} snapshot {} taken on node {} in {}",
                    v.id,
                    s.name,
                    node_name(&v.node_id),
                    Millis(s.took_ms)
                ),
            ));
        }
    }
    if old.backups != v.backups {
        for b in &v.backups {
            if old.backups.iter().any(|o| o.id == b.id) {
                continue;
            }
            out.push(ev(
                EventType::VolumeBackupDone,
                v,
                format!(
                    "volume {} backed up to {} (backup {} of its state at {}, {} added, in {})",
                    v.id,
                    b.target,
                    b.id,
                    utc(b.taken_at),
                    Bytes(b.bytes_added),
                    Millis(b.took_ms)
                ),
            ));
        }
    }
    if let Some(err) = &v.backup_error
        && old.backup_error.as_ref() != Some(err)
    {
        out.push(ev(
            EventType::VolumeBackupFailed,
            v,
            format!("volume {}: backup failed: {err}", v.id),
        ));
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` of Unix milliseconds (as `corral events`
/// prints times).
fn utc(ms: UnixMillis) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = corral_types::civil::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn alert(c: Change<'_, Alert>, now: UnixMillis, out: &mut Vec<Event>) {
    let ev = |kind: EventType, a: &Alert, msg: String| {
        let mut e = Event::new(kind, now, msg).alert(&a.id);
        e.job = a.job.clone();
        e.alloc = a.alloc.clone();
        e.node = a.node.clone();
        e.deployment = a.deployment.clone();
        e.task = a.task.clone();
        e
    };
    let (old, new) = match c {
        Change::Added(a) => (None, a),
        Change::Updated { old, new } => (Some(old.status), new),
        Change::Removed(_) => return,
    };
    match (old, new.status) {
        (None | Some(AlertStatus::Resolved), AlertStatus::Firing) => out.push(ev(
            EventType::AlertFiring,
            new,
            format!("alert {} firing: {}", new.rule, new.summary),
        )),
        (Some(AlertStatus::Firing), AlertStatus::Resolved) => out.push(ev(
            EventType::AlertResolved,
            new,
            format!("alert {} resolved: {}", new.rule, new.resolution),
        )),
        _ => {}
    }
}
