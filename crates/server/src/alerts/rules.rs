//! The built-in rules, as a pure engine: events in ([`Engine::observe`]),
//! then at each evaluation ([`Engine::evaluate`]) the state, the latest
//! usage samples, the disk usage and the time in, alert writes out. No
//! clock and no IO here: tests drive it with a fake clock.
//!
//! De-duplication: the stored alerts are the truth; at most one alert per
//! rule and subject fires at a time, and a condition seen again while its
//! alert fires updates that alert (`count`, `last_seen_at`) instead of
//! raising another. An event at or before the newest alert's
//! `last_event_index` for its rule and subject was already counted
//! (events are replayed after a restart), so it is skipped. Indexes, not
//! times: event times can step back with the clock or repeat within a
//! millisecond, event indexes cannot. Alerts stored before
//! `last_event_index` existed (0) fall back to their `last_seen_at`.
//! Queued events stay queued until a stored alert counts them, so an
//! evaluation whose commit fails loses none.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use corral_store::State;
use corral_types::units::Millis;
use corral_types::{
    Alert, AlertRule, AlertStatus, BackupPolicy, ClientStatus, DeploymentStatus, Event, EventType,
    NodeStatus, TaskLifecycle, UnixMillis, Volume,
};

use super::config::AlertsConfig;

/// One task's memory use, as the usage collector last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySample {
    pub alloc_id: String,
    pub task: String,
    pub node_id: String,
    pub memory_bytes: u64,
    /// 0: no limit.
    pub limit_bytes: u64,
    /// When the agent measured it (its clock).
    pub at: UnixMillis,
    /// When the measured run started (the agent's clock), if known.
    pub run: Option<UnixMillis>,
}

/// How full the server's data dir is.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskUsage {
    pub path: String,
    /// Used share of the filesystem, 0..1.
    pub used: f64,
}

/// What an evaluation looks at besides the events.
pub struct Inputs<'a> {
    pub now: UnixMillis,
    pub state: &'a State,
    pub memory: &'a [MemorySample],
    pub disk: Option<DiskUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fired,
    /// Seen again while firing (count, last seen, summary).
    Updated,
    Resolved,
}

/// An alert to store, and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub alert: Alert,
    pub transition: Transition,
}

/// An event that matters to a rule, reduced to what the rule needs.
#[derive(Debug, Clone)]
struct Seen {
    /// The event's index; 0 for a condition seen holding (no event).
    index: u64,
    time: UnixMillis,
    subject: String,
    job: String,
    alloc: Option<String>,
    node: Option<String>,
    deployment: Option<String>,
    task: Option<String>,
    job_version: Option<u64>,
    message: String,
}

type Key = (AlertRule, String);

pub struct Engine {
    cfg: AlertsConfig,
    /// Restarts per crash-loop subject (`job/group/task`), oldest first.
    restarts: HashMap<String, VecDeque<Seen>>,
    kills: Vec<Seen>,
    failures: Vec<Seen>,
    /// When a condition rule's condition was first seen holding.
    since: HashMap<Key, UnixMillis>,
    /// Per `alloc/task`: the samples above the memory threshold in a row.
    memory_high: HashMap<String, Streak>,
    /// Per job, the latest `job.stopped` (or purged) event: index and time.
    /// A stop resolves the job's crash loop and failed deployment even
    /// when the job runs again before the next evaluation looks.
    stops: HashMap<String, (u64, UnixMillis)>,
}

/// How long a stop is remembered for the rules (evaluations run every few
/// seconds; this only bounds the map).
const STOP_MEMORY: u64 = 3_600_000;

/// Consecutive samples of one run above the memory threshold, by the
/// samples' own times: a condition is known to hold only from its first
/// sample to its latest, whenever the rule looks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Streak {
    run: Option<UnixMillis>,
    first: UnixMillis,
    last: UnixMillis,
}

impl Streak {
    /// `self` extended by a sample of `run` at `at` (a new streak when the
    /// run changed or the time went back).
    fn then(self, run: Option<UnixMillis>, at: UnixMillis) -> Streak {
        if run == self.run && at >= self.last {
            Streak { last: at, ..self }
        } else {
            Streak {
                run,
                first: at,
                last: at,
            }
        }
    }

    fn held(&self) -> u64 {
        self.last - self.first
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn human(d: Duration) -> String {
    Millis(ms(d)).to_string()
}

/// `job/group/task` back into its parts (job names may not hold `/`,
/// but be lenient: the last two parts are group and task).
fn split_subject(s: &str) -> Option<(&str, &str, &str)> {
    let mut it = s.rsplitn(3, '/');
    let task = it.next()?;
    let group = it.next()?;
    let job = it.next()?;
    Some((job, group, task))
}

impl Engine {
    pub fn new(cfg: AlertsConfig) -> Engine {
        Engine {
            cfg,
            restarts: HashMap::new(),
            kills: Vec::new(),
            failures: Vec::new(),
            since: HashMap::new(),
            memory_high: HashMap::new(),
            stops: HashMap::new(),
        }
    }

    /// Whether the job was stopped after the event at `index`.
    fn stopped_after(&self, job: &str, index: u64) -> bool {
        self.stops.get(job).is_some_and(|(i, _)| *i > index)
    }

    /// Alerts of `rule` on a job stopped after their last event resolve;
    /// what was queued before the stop is the old run's and goes.
    fn apply_stops(&mut self, rule: AlertRule, ev: &mut Evaluation<'_, '_>) {
        self.stops
            .retain(|_, (_, t)| ev.inp.now.saturating_sub(*t) < STOP_MEMORY);
        for key in ev.firing_of(rule) {
            let Some(a) = ev.firing.get(&key) else {
                continue;
            };
            let job = a
                .job
                .as_deref()
                .unwrap_or_else(|| a.subject.split('/').next().unwrap_or(""));
            if self.stopped_after(job, a.last_event_index) {
                ev.resolve(&key, "the job was stopped");
            }
        }
        let stops = &self.stops;
        let before_stop = |s: &Seen| stops.get(&s.job).is_some_and(|(i, _)| s.index < *i);
        match rule {
            AlertRule::CrashLoop => {
                for q in self.restarts.values_mut() {
                    q.retain(|s| !before_stop(s));
                }
            }
            AlertRule::DeploymentFailed => self.failures.retain(|s| !before_stop(s)),
            _ => {}
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.cfg
    }

    /// Take in one event (in index order). `state` is any state recent
    /// enough to know the event's allocation (its group and version).
    pub fn observe(&mut self, e: &Event, state: &State) {
        match e.kind {
            EventType::AllocationRestarted | EventType::AllocationFailed => {
                if !self.cfg.crash_loop.enabled {
                    return;
                }
                let (Some(job), Some(alloc_id)) = (&e.job, &e.alloc) else {
                    return;
                };
                let Some(a) = state.alloc(alloc_id) else {
                    return;
                };
                // A restart names its task; a failed allocation counts
                // once for each task that gave up.
                let tasks: Vec<String> = match (&e.kind, &e.task) {
                    (EventType::AllocationRestarted, Some(t)) => vec![t.clone()],
                    (EventType::AllocationFailed, _) => a
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.failed)
                        .map(|(n, _)| n.clone())
                        .collect(),
                    _ => vec![],
                };
                for task in tasks {
                    let subject = format!("{job}/{}/{task}", a.group);
                    self.restarts
                        .entry(subject.clone())
                        .or_default()
                        .push_back(Seen {
                            index: e.index,
                            time: e.time,
                            subject,
                            job: job.clone(),
                            alloc: Some(alloc_id.clone()),
                            node: e.node.clone(),
                            deployment: None,
                            task: Some(task),
                            job_version: Some(a.job_version),
                            message: e.message.clone(),
                        });
                }
            }
            EventType::AllocationOomKilled => {
                if !self.cfg.oom_kill.enabled {
                    return;
                }
                let (Some(job), Some(alloc_id), Some(task)) = (&e.job, &e.alloc, &e.task) else {
                    return;
                };
                let (group, version) = state
                    .alloc(alloc_id)
                    .map(|a| (a.group.clone(), Some(a.job_version)))
                    .unwrap_or_default();
                self.kills.push(Seen {
                    index: e.index,
                    time: e.time,
                    subject: format!("{job}/{group}/{task}"),
                    job: job.clone(),
                    alloc: Some(alloc_id.clone()),
                    node: e.node.clone(),
                    deployment: None,
                    task: Some(task.clone()),
                    job_version: version,
                    message: e.message.clone(),
                });
            }
            EventType::DeploymentFailed | EventType::DeploymentReverted => {
                if !self.cfg.deployment_failed.enabled {
                    return;
                }
                let Some(job) = &e.job else { return };
                let version = e
                    .deployment
                    .as_ref()
                    .and_then(|d| state.deployment(d))
                    .map(|d| d.job_version);
                self.failures.push(Seen {
                    index: e.index,
                    time: e.time,
                    subject: job.clone(),
                    job: job.clone(),
                    alloc: None,
                    node: None,
                    deployment: e.deployment.clone(),
                    task: None,
                    job_version: version,
                    message: e.message.clone(),
                });
            }
            EventType::JobStopped | EventType::JobPurged => {
                if let Some(job) = &e.job {
                    self.stops.insert(job.clone(), (e.index, e.time));
                }
            }
            _ => {}
        }
    }

    /// Decide what fires, what is seen again and what resolves.
    pub fn evaluate(&mut self, inp: &Inputs<'_>) -> Vec<AlertChange> {
        let mut ev = Evaluation::new(inp);
        self.crash_loop(&mut ev);
        self.oom_kill(&mut ev);
        self.deployment_failed(&mut ev);
        self.node_down(&mut ev);
        self.memory(&mut ev);
        self.disk(&mut ev);
        self.volume_backup(&mut ev);
        ev.out
    }

    fn crash_loop(&mut self, ev: &mut Evaluation<'_, '_>) {
        let rule = &self.cfg.crash_loop;
        let now = ev.inp.now;
        if !rule.enabled {
            self.restarts.clear();
            ev.resolve_all(AlertRule::CrashLoop, "the crash loop rule was disabled");
            return;
        }
        let window = ms(rule.window);
        self.apply_stops(AlertRule::CrashLoop, ev);
        let rule = &self.cfg.crash_loop;
        let cutoff = now.saturating_sub(window);
        self.restarts.retain(|_, q| {
            while q.front().is_some_and(|s| s.time < cutoff) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let mut subjects: Vec<&String> = self.restarts.keys().collect();
        subjects.sort();
        for subject in subjects {
            let key = (AlertRule::CrashLoop, subject.clone());
            let fresh: Vec<&Seen> = self.restarts[subject]
                .iter()
                .filter(|s| !ev.counted(&key, s))
                .collect();
            let Some(last) = fresh.last() else { continue };
            let (job, group, task) = split_subject(subject).unwrap_or(("", "", ""));
            let summary = |n: usize| {
                format!(
                    "task {task} of job {job} (group {group}) restarted {n} times in the last {}",
                    human(rule.window)
                )
            };
            if let Some(a) = ev.firing.get_mut(&key) {
                a.count += fresh.len() as u32;
                a.last_seen_at = last.time;
                a.last_event_index = last.index;
                a.job_version = last.job_version;
                a.alloc = last.alloc.clone();
                a.node = last.node.clone();
                a.summary = summary(self.restarts[subject].len());
                let a = a.clone();
                ev.push(a, Transition::Updated);
            } else if fresh.len() >= rule.restarts as usize {
                let a = new_alert(
                    AlertRule::CrashLoop,
                    last,
                    fresh.len(),
                    summary(fresh.len()),
                );
                ev.fire(a);
            }
        }
        // Resolutions.
        for key in ev.firing_of(AlertRule::CrashLoop) {
            let Some(a) = ev.firing.get(&key) else {
                continue;
            };
            if ev.changed(&key) {
                continue;
            }
            let (job, group, task) = split_subject(&a.subject).unwrap_or(("", "", ""));
            let why = match ev.inp.state.job(job) {
                None => Some("the job was purged".to_string()),
                Some(j) if j.stopped => Some("the job was stopped".to_string()),
                Some(j) => {
                    if now.saturating_sub(a.last_seen_at) >= window {
                        Some(format!("no restart for {}", human(rule.window)))
                    } else if a.job_version.is_some_and(|v| j.version > v)
                        && runs_fine(
                            ev.inp.state,
                            (job, group, task),
                            a.job_version,
                            now,
                            RUNS_FINE_FOR.min(window),
                        )
                    {
                        Some(format!(
                            "version {} has run for {} without a restart",
                            j.version,
                            human(Duration::from_millis(RUNS_FINE_FOR.min(window)))
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(why) = why {
                ev.resolve(&key, why);
            }
        }
    }

    fn oom_kill(&mut self, ev: &mut Evaluation<'_, '_>) {
        let rule = &self.cfg.oom_kill;
        if !rule.enabled {
            self.kills.clear();
            ev.resolve_all(AlertRule::OomKill, "the OOM kill rule was disabled");
            return;
        }
        // Dropped only once a stored alert counts them: if this
        // evaluation's commit fails, the next one counts them again.
        self.kills
            .retain(|k| !ev.counted(&(AlertRule::OomKill, k.subject.clone()), k));
        for k in &self.kills {
            let key = (AlertRule::OomKill, k.subject.clone());
            let (job, group, task) = split_subject(&k.subject).unwrap_or(("", "", ""));
            if let Some(a) = ev.firing.get_mut(&key) {
                a.count += 1;
                a.last_seen_at = k.time;
                a.last_event_index = k.index;
                a.alloc = k.alloc.clone();
                a.node = k.node.clone();
                a.summary = format!(
                    "task {task} of job {job} (group {group}) was killed for running out of memory ({} times)",
                    a.count
                );
                let a = a.clone();
                ev.push(a, Transition::Updated);
            } else {
                let summary = format!(
                    "task {task} of job {job} (group {group}) was killed for running out of memory"
                );
                ev.fire(new_alert(AlertRule::OomKill, k, 1, summary));
            }
        }
        let quiet = ms(rule.quiet);
        for key in ev.firing_of(AlertRule::OomKill) {
            let quiet_since = ev.firing.get(&key).map(|a| a.last_seen_at);
            if !ev.changed(&key)
                && quiet_since.is_some_and(|t| ev.inp.now.saturating_sub(t) >= quiet)
            {
                ev.resolve(&key, format!("no OOM kill for {}", human(rule.quiet)));
            }
        }
    }

    fn deployment_failed(&mut self, ev: &mut Evaluation<'_, '_>) {
        if !self.cfg.deployment_failed.enabled {
            self.failures.clear();
            ev.resolve_all(
                AlertRule::DeploymentFailed,
                "the deployment rule was disabled",
            );
            return;
        }
        self.apply_stops(AlertRule::DeploymentFailed, ev);
        let state = ev.inp.state;
        // Fixed: a later deployment of the job rolled out a version of its
        // own; or, however it got there (a rollback, a version that needed
        // no deployment), the job's current version is newer than the one
        // that failed and is stable.
        let fixed = |job: &str, failed: Option<&str>, version: Option<u64>| -> Option<String> {
            let ds = state.job_deployments(job);
            let deployed = failed
                .and_then(|f| ds.iter().position(|d| d.id == f))
                .and_then(|pos| {
                    ds[pos + 1..].iter().rev().find(|d| {
                        d.status == DeploymentStatus::Successful && d.reverts_to.is_none()
                    })
                });
            if let Some(d) = deployed {
                return Some(format!(
                    "version {} was deployed successfully",
                    d.job_version
                ));
            }
            let j = state.job(job)?;
            (j.stable && !j.stopped && version.is_none_or(|v| j.version > v)).then(|| {
                match j.reverts_to {
                    Some(to) => {
                        format!("version {} (the spec of version {to}) is stable", j.version)
                    }
                    None => format!("version {} is stable", j.version),
                }
            })
        };
        // As with OOM kills: dropped once counted in a stored alert (or
        // fixed), so a failed commit loses none.
        self.failures.retain(|f| {
            !ev.counted(&(AlertRule::DeploymentFailed, f.subject.clone()), f)
                && fixed(&f.job, f.deployment.as_deref(), f.job_version).is_none()
        });
        for f in &self.failures {
            let key = (AlertRule::DeploymentFailed, f.subject.clone());
            if let Some(a) = ev.firing.get_mut(&key) {
                if a.deployment == f.deployment {
                    // The failure and its rollback, one alert.
                    if !a.summary.contains("rolling back") && f.message.contains("rolling back") {
                        a.summary = f.message.clone();
                    }
                } else {
                    a.count += 1;
                    a.summary = f.message.clone();
                    a.deployment = f.deployment.clone();
                    a.job_version = f.job_version;
                }
                a.last_seen_at = f.time;
                a.last_event_index = f.index;
                let a = a.clone();
                ev.push(a, Transition::Updated);
            } else {
                ev.fire(new_alert(
                    AlertRule::DeploymentFailed,
                    f,
                    1,
                    f.message.clone(),
                ));
            }
        }
        for key in ev.firing_of(AlertRule::DeploymentFailed) {
            let Some(a) = ev.firing.get(&key) else {
                continue;
            };
            let job = a.subject.clone();
            let why = match state.job(&job) {
                None => Some("the job was purged".to_string()),
                Some(j) if j.stopped => Some("the job was stopped".to_string()),
                Some(_) => fixed(&job, a.deployment.as_deref(), a.job_version),
            };
            if let Some(why) = why {
                ev.resolve(&key, why);
            }
        }
    }

    fn node_down(&mut self, ev: &mut Evaluation<'_, '_>) {
        let rule = self.cfg.node_down.clone();
        if !rule.enabled {
            ev.resolve_all(AlertRule::NodeDown, "the node down rule was disabled");
            return;
        }
        let state = ev.inp.state;
        let mut holding = Vec::new();
        for n in state.nodes_iter() {
            if n.status == NodeStatus::Down {
                holding.push((
                    n.id.clone(),
                    Seen {
                        index: 0,
                        time: ev.inp.now,
                        subject: n.id.clone(),
                        job: String::new(),
                        alloc: None,
                        node: Some(n.id.clone()),
                        deployment: None,
                        task: None,
                        job_version: None,
                        message: format!("node {} is down: its heartbeats stopped", n.name),
                    },
                ));
            }
        }
        self.condition(ev, AlertRule::NodeDown, rule.for_duration, holding);
        for key in ev.firing_of(AlertRule::NodeDown) {
            let why = match state.node_by_id(&key.1) {
                None => Some("the node was removed".to_string()),
                Some(n) if n.status != NodeStatus::Down => Some(format!("node {} is back", n.name)),
                Some(_) => None,
            };
            if let Some(why) = why {
                ev.resolve(&key, why);
            }
        }
    }

    /// Memory above the threshold in every sample of a run for `for`,
    /// counted by the samples' times (an evaluation that sees the same
    /// sample again learns nothing new). Samples of a run that ended are
    /// left out: a node's last push outlives its tasks until the next.
    fn memory(&mut self, ev: &mut Evaluation<'_, '_>) {
        let rule = self.cfg.memory.clone();
        if !rule.enabled {
            self.memory_high.clear();
            ev.resolve_all(AlertRule::MemoryHigh, "the memory rule was disabled");
            return;
        }
        let state = ev.inp.state;
        let mut below = HashMap::new();
        let mut present = std::collections::HashSet::new();
        let mut streaks = HashMap::new();
        let mut holding = Vec::new();
        for s in ev.inp.memory {
            if s.limit_bytes == 0 || !crate::usage::is_current(state, &s.alloc_id, &s.task, s.run) {
                continue;
            }
            let ratio = s.memory_bytes as f64 / s.limit_bytes as f64;
            let subject = format!("{}/{}", s.alloc_id, s.task);
            present.insert(subject.clone());
            if ratio < rule.threshold {
                below.insert(subject, ratio);
                continue;
            }
            let streak = match self.memory_high.get(&subject) {
                Some(k) => k.then(s.run, s.at),
                None => Streak {
                    run: s.run,
                    first: s.at,
                    last: s.at,
                },
            };
            streaks.insert(subject.clone(), streak);
            if streak.held() < ms(rule.for_duration) {
                continue;
            }
            let alloc = state.alloc(&s.alloc_id);
            let name = alloc
                .map(|a| a.name())
                .unwrap_or_else(|| s.alloc_id.clone());
            holding.push(Seen {
                index: 0,
                time: ev.inp.now,
                subject,
                job: alloc.map(|a| a.job.clone()).unwrap_or_default(),
                alloc: Some(s.alloc_id.clone()),
                node: Some(s.node_id.clone()),
                deployment: None,
                task: Some(s.task.clone()),
                job_version: alloc.map(|a| a.job_version),
                message: format!(
                    "task {} of {name} uses {:.0}% of its memory limit ({}), above {:.0}% in every sample for {}",
                    s.task,
                    ratio * 100.0,
                    corral_types::units::Bytes(s.limit_bytes),
                    rule.threshold * 100.0,
                    Millis(streak.held() / 1000 * 1000)
                ),
            });
        }
        // A subject without a sample above the threshold now starts again.
        self.memory_high = streaks;
        for seen in holding {
            let key = (AlertRule::MemoryHigh, seen.subject.clone());
            if !ev.firing.contains_key(&key) {
                let summary = seen.message.clone();
                ev.fire(new_alert(AlertRule::MemoryHigh, &seen, 1, summary));
            }
        }
        for key in ev.firing_of(AlertRule::MemoryHigh) {
            if ev.changed(&key) {
                continue;
            }
            let why = match below.get(&key.1) {
                Some(r) => Some(format!(
                    "memory use is down to {:.0}% of the limit",
                    r * 100.0
                )),
                // No sample is no proof the task stopped: the samples are
                // in memory only, so after a server restart there are
                // none until the agents push again. The state decides.
                None if !present.contains(&key.1) => {
                    let alloc_id = ev.firing.get(&key).and_then(|a| a.alloc.clone());
                    let (alloc_id, task) = match key.1.split_once('/') {
                        Some((a, t)) => (alloc_id.unwrap_or_else(|| a.into()), t),
                        None => (alloc_id.unwrap_or_else(|| key.1.clone()), ""),
                    };
                    let runs = state.alloc(&alloc_id).is_some_and(|a| {
                        a.is_live()
                            && a.tasks
                                .get(task)
                                .is_some_and(|t| t.state == TaskLifecycle::Running)
                    });
                    (!runs).then(|| "the task no longer runs".to_string())
                }
                None => None,
            };
            if let Some(why) = why {
                ev.resolve(&key, why);
            }
        }
    }

    fn disk(&mut self, ev: &mut Evaluation<'_, '_>) {
        let rule = self.cfg.disk.clone();
        if !rule.enabled {
            ev.resolve_all(AlertRule::DiskFull, "the disk rule was disabled");
            return;
        }
        let mut holding = Vec::new();
        let subject = "data_dir".to_string();
        if let Some(d) = &ev.inp.disk
            && d.used >= rule.threshold
        {
            holding.push((
                subject.clone(),
                Seen {
                    index: 0,
                    time: ev.inp.now,
                    subject: subject.clone(),
                    job: String::new(),
                    alloc: None,
                    node: None,
                    deployment: None,
                    task: None,
                    job_version: None,
                    message: format!(
                        "the server's data dir {} is {:.0}% full",
                        d.path,
                        d.used * 100.0
                    ),
                },
            ));
        }
        self.condition(ev, AlertRule::DiskFull, rule.for_duration, holding);
        let key = (AlertRule::DiskFull, subject);
        if ev.firing.contains_key(&key) && !ev.changed(&key) {
            match &ev.inp.disk {
                Some(d) if d.used < rule.threshold => {
                    ev.resolve(&key, format!("the data dir is {:.0}% full", d.used * 100.0))
                }
                // Cannot tell: keep it.
                _ => {}
            }
        }
    }

    /// Volumes whose job's current spec asks for backups: the last backup
    /// failed, or the newest is older than twice the schedule (none at
    /// all, and the volume is that old). A stopped job's volumes are left
    /// alone: nothing runs to back them up.
    fn volume_backup(&mut self, ev: &mut Evaluation<'_, '_>) {
        if !self.cfg.volume_backup.enabled {
            ev.resolve_all(
                AlertRule::VolumeBackup,
                "the volume backup rule was disabled",
            );
            return;
        }
        let state = ev.inp.state;
        let now = ev.inp.now;
        let mut holding = Vec::new();
        // Why each volume that does not hold is fine (or no longer asked).
        let mut fine = HashMap::new();
        for v in state.volumes() {
            let every = match backup_policy(state, v) {
                Ok(p) => p.every.0,
                Err(why) => {
                    fine.insert(v.id.clone(), why);
                    continue;
                }
            };
            let newest = v.backups.iter().max_by_key(|b| b.taken_at);
            let late = every.saturating_mul(2);
            let message = if let Some(err) = &v.backup_error {
                Some(format!("volume {}: its last backup failed: {err}", v.id))
            } else {
                match newest {
                    Some(b) if now.saturating_sub(b.taken_at) > late => Some(format!(
                        "volume {}: its newest backup ({}) is {} old, more than twice its schedule (every {})",
                        v.id,
                        b.id,
                        rough(now.saturating_sub(b.taken_at)),
                        Millis(every)
                    )),
                    Some(_) => None,
                    None if now.saturating_sub(v.created_at) > late => Some(format!(
                        "volume {}: no backup yet, {} after it was made (backups every {})",
                        v.id,
                        rough(now.saturating_sub(v.created_at)),
                        Millis(every)
                    )),
                    None => None,
                }
            };
            let Some(message) = message else {
                let why = match newest {
                    Some(b) => format!("backup {} of volume {} succeeded", b.id, v.id),
                    None => format!("volume {} is not due for a backup yet", v.id),
                };
                fine.insert(v.id.clone(), why);
                continue;
            };
            holding.push((
                v.id.clone(),
                Seen {
                    index: 0,
                    time: now,
                    subject: v.id.clone(),
                    job: v.job.clone(),
                    alloc: v.alloc_id.clone(),
                    node: Some(v.node_id.clone()),
                    deployment: None,
                    task: None,
                    job_version: state.job(&v.job).map(|j| j.version),
                    message,
                },
            ));
        }
        self.condition(ev, AlertRule::VolumeBackup, Duration::ZERO, holding);
        for key in ev.firing_of(AlertRule::VolumeBackup) {
            if ev.changed(&key) {
                continue;
            }
            let why = match state.volume(&key.1) {
                None => Some(format!("volume {} was deleted", key.1)),
                Some(_) => fine.remove(&key.1),
            };
            if let Some(why) = why {
                ev.resolve(&key, why);
            }
        }
    }

    /// A condition rule: `holding` lists the subjects whose condition
    /// holds now; each fires once it held for `for_duration`.
    fn condition(
        &mut self,
        ev: &mut Evaluation<'_, '_>,
        rule: AlertRule,
        for_duration: Duration,
        holding: Vec<(String, Seen)>,
    ) {
        let now = ev.inp.now;
        let held: std::collections::HashSet<String> =
            holding.iter().map(|(s, _)| s.clone()).collect();
        self.since
            .retain(|(r, s), _| *r != rule || held.contains(s));
        for (subject, seen) in holding {
            let key = (rule, subject);
            let since = *self.since.entry(key.clone()).or_insert(now);
            if ev.firing.contains_key(&key) {
                continue;
            }
            if now.saturating_sub(since) >= ms(for_duration) {
                let summary = seen.message.clone();
                ev.fire(new_alert(rule, &seen, 1, summary));
            }
        }
    }
}

/// Every live allocation of the group runs a version newer than
/// `bad_version`, is running, and the task has not restarted there.
/// How long a new version's task must run without a restart before it
/// counts as the fix of a crash loop: a task that crashes a second after
/// it starts must not resolve the alert in between (at most the window).
const RUNS_FINE_FOR: u64 = 60_000;

/// Every live allocation of the group runs a version newer than the bad
/// one, its task without a restart and started at least `settle` ago.
fn runs_fine(
    state: &State,
    (job, group, task): (&str, &str, &str),
    bad_version: Option<u64>,
    now: UnixMillis,
    settle: u64,
) -> bool {
    let Some(bad) = bad_version else {
        return false;
    };
    let live: Vec<_> = state
        .job_allocs(job)
        .into_iter()
        .filter(|a| a.group == group && a.is_live())
        .collect();
    !live.is_empty()
        && live.iter().all(|a| {
            a.job_version > bad
                && a.client == ClientStatus::Running
                && a.tasks.get(task).is_none_or(|t| {
                    t.restarts == 0
                        && t.started_at
                            .is_some_and(|s| now.saturating_sub(s) >= settle)
                })
        })
}

/// The backup policy the current spec of the volume's job gives it, or
/// why there is none to hold it to.
fn backup_policy<'s>(state: &'s State, v: &Volume) -> Result<&'s BackupPolicy, String> {
    let Some(job) = state.job(&v.job) else {
        return Err(format!("job {} was purged", v.job));
    };
    if job.stopped {
        return Err(format!("job {} was stopped", v.job));
    }
    job.spec
        .groups
        .iter()
        .find(|g| g.name == v.group)
        .and_then(|g| g.volumes.iter().find(|s| s.name == v.name))
        .and_then(|s| s.backup.as_ref())
        .ok_or_else(|| {
            format!(
                "the spec of job {} no longer asks for backups of volume {}",
                v.job, v.id
            )
        })
}

/// A duration to the minute (to the second below one).
fn rough(ms: u64) -> Millis {
    if ms >= 60_000 {
        Millis(ms / 60_000 * 60_000)
    } else {
        Millis(ms / 1000 * 1000)
    }
}

fn new_alert(rule: AlertRule, s: &Seen, count: usize, summary: String) -> Alert {
    Alert {
        id: format!("{rule}/{}@{}", s.subject, s.time),
        rule,
        subject: s.subject.clone(),
        status: AlertStatus::Firing,
        summary,
        job: (!s.job.is_empty()).then(|| s.job.clone()),
        alloc: s.alloc.clone(),
        node: s.node.clone(),
        deployment: s.deployment.clone(),
        task: s.task.clone(),
        job_version: s.job_version,
        count: count as u32,
        fired_at: s.time,
        last_seen_at: s.time,
        last_event_index: s.index,
        resolved_at: None,
        resolution: String::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// What the stored alerts of one rule and subject counted: events up to
/// the newest `last_event_index`, or, for alerts stored before that
/// field existed, events up to their newest `last_seen_at`.
#[derive(Default, Clone, Copy)]
struct Counted {
    index: u64,
    legacy_time: UnixMillis,
}

/// One evaluation's working set: the firing alerts (as they will be after
/// this evaluation), what the stored alerts counted per rule and subject
/// (before this evaluation), and the changes so far.
struct Evaluation<'i, 's> {
    inp: &'i Inputs<'s>,
    firing: HashMap<Key, Alert>,
    counted: HashMap<Key, Counted>,
    out: Vec<AlertChange>,
}

impl<'i, 's> Evaluation<'i, 's> {
    fn new(inp: &'i Inputs<'s>) -> Self {
        let mut firing = HashMap::new();
        let mut counted: HashMap<Key, Counted> = HashMap::new();
        for a in inp.state.alerts() {
            let key = (a.rule, a.subject.clone());
            let c = counted.entry(key.clone()).or_default();
            if a.last_event_index > 0 {
                c.index = c.index.max(a.last_event_index);
            } else {
                c.legacy_time = c.legacy_time.max(a.last_seen_at);
            }
            if a.is_firing() {
                firing.insert(key, (**a).clone());
            }
        }
        Evaluation {
            inp,
            firing,
            counted,
            out: Vec::new(),
        }
    }

    /// Whether a stored alert already counted the event `s`.
    fn counted(&self, key: &Key, s: &Seen) -> bool {
        let c = self.counted.get(key).copied().unwrap_or_default();
        if c.index > 0 {
            // Events after the legacy alerts' were counted by index, so
            // the index alone decides.
            s.index <= c.index
        } else {
            s.time <= c.legacy_time
        }
    }

    /// Whether this evaluation already fired or updated the alert.
    fn changed(&self, key: &Key) -> bool {
        self.out
            .iter()
            .any(|c| c.alert.rule == key.0 && c.alert.subject == key.1)
    }

    fn firing_of(&self, rule: AlertRule) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .firing
            .keys()
            .filter(|k| k.0 == rule)
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn fire(&mut self, a: Alert) {
        self.firing.insert((a.rule, a.subject.clone()), a.clone());
        self.out.push(AlertChange {
            alert: a,
            transition: Transition::Fired,
        });
    }

    /// Record an update of a firing alert (one write per evaluation).
    fn push(&mut self, a: Alert, t: Transition) {
        if let Some(c) = self
            .out
            .iter_mut()
            .find(|c| c.alert.rule == a.rule && c.alert.subject == a.subject)
        {
            // Fired in this evaluation: it stays a firing.
            c.alert = a;
            return;
        }
        self.out.push(AlertChange {
            alert: a,
            transition: t,
        });
    }

    fn resolve(&mut self, key: &Key, why: impl Into<String>) {
        let Some(mut a) = self.firing.remove(key) else {
            return;
        };
        a.status = AlertStatus::Resolved;
        a.resolved_at = Some(self.inp.now);
        a.resolution = why.into();
        self.out.retain(|c| c.alert.id != a.id);
        self.out.push(AlertChange {
            alert: a,
            transition: Transition::Resolved,
        });
    }

    fn resolve_all(&mut self, rule: AlertRule, why: &str) {
        for key in self.firing_of(rule) {
            self.resolve(&key, why);
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
