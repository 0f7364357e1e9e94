//! `corral run FILE`: submit, then follow the new version until it runs
//! (exit 0) or fails (exit non-zero, with the reason).
//!
//! Every new version gets a deployment from the scheduler (unless all its
//! groups have `max_parallel: 0`): `run` shows that rollout live (a bar of
//! healthy/desired per group on a terminal, a plain line per change
//! otherwise) until it succeeds, fails (and maybe rolls back), or waits for
//! its canaries to be promoted. Versions without one (`max_parallel: 0`,
//! an unchanged resubmission) are followed through their allocations.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use corral_client::Client;
use corral_types::api::JobView;
use corral_types::{ClientStatus, Deployment, DeploymentStatus, DesiredStatus, UnixMillis};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::io::Read;

use crate::output::Out;
use crate::rollout;

/// Where a submitted version stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still placing or starting; the line to show.
    Waiting(String),
    Done(String),
    Failed(String),
}

/// Judge the job against the evaluation the submission created.
pub fn assess(j: &JobView, eval_id: &str) -> Progress {
    let Some(eval) = &j.latest_eval else {
        return Progress::Waiting("waiting for the scheduler".into());
    };
    // Any pending evaluation (ours or a newer one) may still change the
    // allocations: wait for it.
    let _ = eval_id;
    if eval.status == "pending" {
        return Progress::Waiting("waiting for the scheduler".into());
    }
    if eval.status == "blocked" {
        return Progress::Failed(format!(
            "cannot place every allocation: {}\n(the job stays registered and is retried when nodes or capacity change)",
            eval.failures.join("; ")
        ));
    }
    let current: Vec<_> = j
        .allocations
        .iter()
        .filter(|a| a.desired == DesiredStatus::Run && a.job_version == j.version)
        .collect();
    let desired: u32 = j.groups.iter().map(|g| g.count).sum();
    let mut parts = Vec::new();
    for g in &j.groups {
        let mine: Vec<_> = current.iter().filter(|a| a.group == g.name).collect();
        let running = mine
            .iter()
            .filter(|a| a.status == ClientStatus::Running)
            .count();
        if j.groups.len() == 1 {
            parts.push(format!("{running}/{} running", g.count));
        } else {
            parts.push(format!("{}: {running}/{} running", g.name, g.count));
        }
    }
    if let Some(a) = current.iter().find(|a| a.status == ClientStatus::Failed) {
        let why: Vec<String> = a
            .tasks
            .iter()
            .filter(|(_, t)| !t.message.is_empty())
            .map(|(n, t)| format!("task {n}: {}", t.message))
            .collect();
        return Progress::Failed(format!(
            "allocation {} failed{}{}",
            a.name,
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        ));
    }
    let running = current
        .iter()
        .filter(|a| a.status == ClientStatus::Running)
        .count() as u32;
    // What an older version still runs (told to stop, not stopped yet)
    // runs all the same: not done until it is gone.
    let stopping = j
        .allocations
        .iter()
        .filter(|a| a.job_version != j.version && !a.status.is_terminal())
        .count();
    if stopping > 0 {
        parts.push(format!("{stopping} of an older version stopping"));
    }
    if running >= desired && stopping == 0 {
        return Progress::Done(parts.join(", "));
    }
    Progress::Waiting(parts.join(", "))
}

/// How long every allocation must keep running, without a restart, before
/// `corral run` calls the job up (a crashing task runs for a moment too).
pub const HEALTHY_FOR: Duration = Duration::from_secs(3);

/// How long `run` waits for allocations when no `--timeout` is given (a
/// deployment is followed until it ends: it has its own deadlines).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a changed version's deployment may take to appear after its
/// evaluation (versions whose groups all have `max_parallel: 0` get none).
const DEPLOYMENT_GRACE: Duration = Duration::from_secs(3);

/// How long a failed deployment with `auto_revert` may take to be followed
/// by its rollback.
const REVERT_GRACE: Duration = Duration::from_secs(10);

/// A running deployment this long past every group's progress deadline
/// means nobody is moving it along: stop following it.
const STUCK_AFTER_DEADLINE: Duration = Duration::from_secs(60);

/// Blocking queries answered faster than this without news are spaced out
/// to it, so a server that does not block is not hammered.
const MIN_POLL: Duration = Duration::from_millis(250);

/// A job file's text and the name the server gives it (errors and the
/// default job name); `-` is standard input.
pub fn read_job_file(file: &Path) -> Result<(String, String)> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the job from standard input")?;
        return Ok((text, corral_types::spec::STDIN_NAME.to_string()));
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read job file {}", file.display()))?;
    let filename = file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| file.display().to_string());
    Ok((text, filename))
}

pub async fn run(
    c: &Client,
    file: &Path,
    detach: bool,
    out: Out,
    timeout: Option<Duration>,
) -> Result<()> {
    let (text, filename) = read_job_file(file)?;
    let resp = c.submit(&text, &filename).await?;
    if detach && out.data(&resp, || resp.jobs.iter().map(|j| j.name.clone()).collect())? {
        return Ok(());
    }
    for j in &resp.jobs {
        if j.changed {
            eprintln!("job {}: version {} submitted", j.name, j.version);
        } else {
            eprintln!("job {}: unchanged (version {})", j.name, j.version);
        }
    }
    if detach {
        return Ok(());
    }
    let mut failed = Vec::new();
    for j in &resp.jobs {
        let sub = Submitted {
            name: &j.name,
            version: j.version,
            changed: j.changed,
            eval_id: &j.eval_id,
        };
        if let Err(e) = follow(c, &sub, timeout).await {
            failed.push(format!("{e:#}"));
        }
    }
    if out.is_data() {
        crate::cmd::status::print_jobs(c, resp.jobs.iter().map(|j| j.name.as_str()), out).await?;
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// A job version just stored (by `run` or `job revert`).
pub struct Submitted<'a> {
    pub name: &'a str,
    pub version: u64,
    /// False when the spec equalled the current version.
    pub changed: bool,
    pub eval_id: &'a str,
}

/// Follow a stored version until it runs: through its deployment when the
/// scheduler made one, else through its allocations. `timeout` bounds the
/// whole wait; without one, allocations get [`DEFAULT_TIMEOUT`] and a
/// deployment is followed until it ends.
pub async fn follow(c: &Client, sub: &Submitted<'_>, timeout: Option<Duration>) -> Result<()> {
    let start = Instant::now();
    let alloc_deadline = start + timeout.unwrap_or(DEFAULT_TIMEOUT);
    let name = sub.name;
    let j = settle(c, name, alloc_deadline).await?;
    let blocked = j
        .latest_eval
        .as_ref()
        .is_some_and(|e| e.status == "blocked");
    if !sub.changed {
        unchanged_rollout_ended_badly(c, sub).await?;
    }
    if !blocked && let Some(d) = find_deployment(c, sub).await? {
        return follow_rollout(c, name, d, timeout.map(|t| start + t)).await;
    }
    watch(
        c,
        name,
        sub.eval_id,
        alloc_deadline.saturating_duration_since(Instant::now()),
    )
    .await
}

/// An unchanged resubmission of a version whose rollout failed (or was
/// cancelled) does not run: say so at once, with what to do.
async fn unchanged_rollout_ended_badly(c: &Client, sub: &Submitted<'_>) -> Result<()> {
    let name = sub.name;
    let last = c
        .deployments(name)
        .await?
        .into_iter()
        .filter(|d| d.job_version == sub.version)
        .max_by_key(|d| d.create_index);
    match last {
        Some(d) if d.status == DeploymentStatus::Failed => bail!(
            "job {name}: unchanged (version {}), and its rollout failed: {}\nchange the job and run it again, or go back with `corral job revert {name} VERSION` (`corral job history {name}` lists them)",
            sub.version,
            rollout::reason(&d)
        ),
        _ => Ok(()),
    }
}

/// Wait until the scheduler has handled the job's latest evaluation (the
/// deployment, if any, is created with its plan).
async fn settle(c: &Client, name: &str, deadline: Instant) -> Result<JobView> {
    let mut index = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let j = c
            .job(name, Some((index, left.min(Duration::from_secs(5)))))
            .await?;
        let pending = j.latest_eval.as_ref().is_none_or(|e| e.status == "pending");
        if !pending || left.is_zero() {
            return Ok(j);
        }
        index = j.index;
    }
}

/// The deployment of the submitted version, if it has one. An unchanged
/// resubmission only joins a rollout still in progress.
async fn find_deployment(c: &Client, sub: &Submitted<'_>) -> Result<Option<Deployment>> {
    let until = Instant::now()
        + if sub.changed {
            DEPLOYMENT_GRACE
        } else {
            Duration::ZERO
        };
    let wanted = |d: &Deployment| d.job_version == sub.version && (sub.changed || d.is_active());
    loop {
        match c.deployment(sub.name, None).await {
            Ok(d) if d.job_version == sub.version => return Ok(wanted(&d).then_some(d)),
            // A newer version exists already: ours is further down.
            Ok(d) if d.job_version > sub.version => {
                let all = c.deployments(sub.name).await?;
                return Ok(all.into_iter().find(|d| wanted(d)));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(MIN_POLL).await;
    }
}

/// Follow a deployment to its end and judge it; on failure, follow the
/// automatic rollback too (the user's version failed all the same).
pub(crate) async fn follow_rollout(
    c: &Client,
    name: &str,
    d: Deployment,
    deadline: Option<Instant>,
) -> Result<()> {
    let version = d.job_version;
    let end = follow_deployment(c, name, d, deadline).await?;
    let why = rollout::reason(&end);
    match end.status {
        DeploymentStatus::Successful => {
            // What runs now, in the words `run` uses without a deployment.
            let summary = match c.job(name, None).await {
                Ok(j) if j.version == version => match assess(&j, "") {
                    Progress::Done(s) => s,
                    _ => rollout::healthy_summary(&end),
                },
                _ => rollout::healthy_summary(&end),
            };
            eprintln!("job {name}: version {version} deployed: {summary}");
            Ok(())
        }
        DeploymentStatus::Failed => {
            let rb = match find_revert(c, name, &end).await? {
                None => bail!(
                    "job {name}: the rollout of version {version} failed: {why}\nsee `corral deploy status {name}` and `corral status {name}`; go back with `corral job revert {name} VERSION` (`corral job history {name}` lists them)"
                ),
                Some(Revert::Deployment(rb)) => rb,
                Some(Revert::Version { version: rv, to }) => {
                    eprintln!("job {name}: rolling back to version {to} (as version {rv})");
                    if follow_revert_version(c, name, rv, deadline).await? {
                        eprintln!("job {name}: rolled back to version {to}");
                        bail!(
                            "job {name}: version {version} failed ({why}) and was rolled back to version {to}\nsee `corral job history {name}`"
                        );
                    }
                    bail!(
                        "job {name}: version {version} failed ({why}); the rollback to version {to} (version {rv}) does not run yet\nsee `corral status {name}` and `corral job history {name}`"
                    );
                }
            };
            let to = rb.reverts_to.unwrap_or_default();
            eprintln!(
                "job {name}: rolling back to version {to} (as version {})",
                rb.job_version
            );
            let rb_end = follow_deployment(c, name, rb, deadline).await?;
            if rb_end.status == DeploymentStatus::Successful {
                eprintln!("job {name}: rolled back to version {to}");
                bail!(
                    "job {name}: version {version} failed ({why}) and was rolled back to version {to}\nsee `corral job history {name}`"
                );
            }
            bail!(
                "job {name}: version {version} failed ({why}), and the rollback to version {to} is {}: {}\nsee `corral deploy status {name}` and `corral status {name}`",
                rb_end.status,
                rollout::reason(&rb_end)
            );
        }
        DeploymentStatus::Cancelled => bail!(
            "job {name}: the rollout of version {version} was cancelled: {why}\nsee `corral deploy list {name}`"
        ),
        // Nothing moves until someone resumes it: following it would wait
        // forever, and exiting 0 would pass for a deployed version.
        DeploymentStatus::Paused => bail!(
            "job {name}: the rollout of version {version} is paused: {}
nothing more rolls out until `corral deploy resume {name}`; follow it then with `corral deploy status {name}`",
            rollout::healthy_summary(&end)
        ),
        DeploymentStatus::Running => {
            // follow_deployment returns a running deployment only when its
            // canaries wait for a user.
            eprintln!(
                "job {name}: version {version}: canaries healthy, waiting for promotion\npromote with `corral deploy promote {name}`, or roll back with `corral deploy fail {name}`"
            );
            Ok(())
        }
    }
}

/// What the server started after a failed deployment with `auto_revert`.
enum Revert {
    /// The revert version, rolled out by its own deployment.
    Deployment(Deployment),
    /// The revert version, placed without a deployment (every group has
    /// `max_parallel: 0`): followed through the version becoming stable.
    Version { version: u64, to: u64 },
}

/// The rollback the server started after `failed`, when its groups have
/// `auto_revert` and an earlier version is stable: the newer version that
/// reverts, found by the version history (a revert need not get a
/// deployment), then its deployment if it has one.
async fn find_revert(c: &Client, name: &str, failed: &Deployment) -> Result<Option<Revert>> {
    if !failed.groups.values().any(|g| g.auto_revert) {
        return Ok(None);
    }
    let versions = c.job_versions(name).await?;
    if !versions
        .iter()
        .any(|v| v.stable && v.version < failed.job_version)
    {
        eprintln!("job {name}: no earlier version is stable, so there is nothing to roll back to");
        return Ok(None);
    }
    let until = Instant::now() + REVERT_GRACE;
    loop {
        let deployments = c.deployments(name).await?;
        let rb = deployments.into_iter().find(|d| {
            d.reverts_to.is_some()
                && d.job_version > failed.job_version
                && d.create_index >= failed.create_index
        });
        if let Some(d) = rb {
            return Ok(Some(Revert::Deployment(d)));
        }
        let versions = c.job_versions(name).await?;
        let revert = versions
            .iter()
            .filter(|v| v.version > failed.job_version)
            .find_map(|v| v.reverts_to.map(|to| (v.version, to)));
        if let Some((version, to)) = revert {
            // Its deployment, if it gets one, comes with its first plan.
            tokio::time::sleep(DEPLOYMENT_GRACE).await;
            let deployment = c
                .deployments(name)
                .await?
                .into_iter()
                .find(|d| d.job_version == version);
            return Ok(Some(match deployment {
                Some(d) => Revert::Deployment(d),
                None => Revert::Version { version, to },
            }));
        }
        if Instant::now() >= until {
            eprintln!(
                "job {name}: auto_revert is set but no rollback started within {}s",
                REVERT_GRACE.as_secs()
            );
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follow a revert placed without a deployment until its version is
/// stable (everything runs it), or `deadline`.
async fn follow_revert_version(
    c: &Client,
    name: &str,
    version: u64,
    deadline: Option<Instant>,
) -> Result<bool> {
    let deadline = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_TIMEOUT);
    loop {
        let versions = c.job_versions(name).await?;
        if versions.iter().any(|v| v.version == version && v.stable) {
            return Ok(true);
        }
        if versions.iter().any(|v| v.version > version) || Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub use corral_types::model::now_ms;

/// Show a deployment live until it ends, is paused or its canaries wait
/// for a user; returns its last state.
async fn follow_deployment(
    c: &Client,
    name: &str,
    mut d: Deployment,
    deadline: Option<Instant>,
) -> Result<Deployment> {
    let mut live = Live::new(name);
    // The blocking query wakes on the deployment's and the job's
    // allocations' changes; its index must pass both.
    let mut index = d.modify_index;
    loop {
        let now = now_ms();
        live.show(&d, now);
        if d.status.is_terminal()
            || d.status == DeploymentStatus::Paused
            || rollout::awaiting_promotion(&d)
        {
            live.finish(&d);
            return Ok(d);
        }
        let left = deadline.map(|dl| dl.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            live.finish(&d);
            bail!(
                "job {name}: the rollout of version {} is still {} at the --timeout: {}\nit goes on on the server; follow it with `corral deploy status {name}`",
                d.job_version,
                d.status,
                rollout::healthy_summary(&d)
            );
        }
        if let Some(late) = stuck(&d, now) {
            live.finish(&d);
            bail!(
                "job {name}: the rollout of version {} passed its progress deadline {}s ago and is still {}; is the server's deployment watcher running? see `corral deploy status {name}`",
                d.job_version,
                late.as_secs(),
                d.status
            );
        }
        let mut wait = if live.is_tty() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        if let Some(l) = left {
            wait = wait.min(l);
        }
        let asked = Instant::now();
        let newest = c.deployment(name, Some((index, wait))).await?;
        index = index.max(newest.modify_index);
        let next = if newest.id == d.id {
            newest
        } else {
            c.deployments(name)
                .await?
                .into_iter()
                .find(|x| x.id == d.id)
                .ok_or_else(|| {
                    anyhow!(
                        "job {name}: deployment {} is gone; see `corral deploy list {name}`",
                        d.id
                    )
                })?
        };
        index = index.max(next.modify_index);
        let spent = asked.elapsed();
        if next == d && spent < wait / 2 {
            // Woken by an allocation: catch up with the job's index (it
            // covers the allocations), and never poll in a tight loop.
            index = index.max(c.job(name, None).await?.index);
            if spent < MIN_POLL {
                tokio::time::sleep(MIN_POLL - spent).await;
            }
        }
        d = next;
    }
}

/// How long a running deployment is past its latest progress deadline,
/// when that is more than [`STUCK_AFTER_DEADLINE`].
fn stuck(d: &Deployment, now: UnixMillis) -> Option<Duration> {
    if d.status != DeploymentStatus::Running {
        return None;
    }
    let by = d
        .groups
        .values()
        .map(|g| g.require_progress_by)
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()?;
    let late = Duration::from_millis(now.saturating_sub(by));
    (late > STUCK_AFTER_DEADLINE).then_some(late)
}

/// The live view of one deployment: bars on a terminal, a plain line per
/// change otherwise (both on stderr; stdout is for `--json`).
struct Live {
    job: String,
    tty: Option<Bars>,
    last: String,
}

struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    groups: BTreeMap<String, ProgressBar>,
}

impl Live {
    fn new(job: &str) -> Live {
        let tty = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let header = multi.add(ProgressBar::new_spinner());
            header.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            header.enable_steady_tick(Duration::from_millis(120));
            Bars {
                multi,
                header,
                groups: BTreeMap::new(),
            }
        });
        Live {
            job: job.to_string(),
            tty,
            last: String::new(),
        }
    }

    fn is_tty(&self) -> bool {
        self.tty.is_some()
    }

    fn show(&mut self, d: &Deployment, now: UnixMillis) {
        let Some(b) = &mut self.tty else {
            let sig = rollout::signature(d);
            if sig != self.last {
                eprintln!("{}", rollout::plain_line(&self.job, d, now));
                self.last = sig;
            }
            return;
        };
        b.header.set_message(rollout::headline(&self.job, d));
        for (name, g) in &d.groups {
            let bar = b.groups.entry(name.clone()).or_insert_with(|| {
                let bar = b.multi.add(ProgressBar::new(u64::from(g.desired_total)));
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{bar:24}] {pos}/{len} healthy, {msg}",
                    )
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(name.clone());
                bar
            });
            bar.set_length(u64::from(g.desired_total));
            bar.set_position(u64::from(g.healthy));
            bar.set_message(rollout::group_detail(d.status, g, now));
        }
    }

    /// Leave the last state on screen.
    fn finish(&mut self, d: &Deployment) {
        if let Some(b) = &self.tty {
            b.header
                .finish_with_message(rollout::headline(&self.job, d));
            for bar in b.groups.values() {
                bar.finish();
            }
        }
    }
}

async fn watch(c: &Client, name: &str, eval_id: &str, timeout: Duration) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let start = Instant::now();
    let mut index = 0;
    let mut last = String::new();
    // (allocation ids and restart counts, since when) of the last all-running view.
    let mut stable: Option<(Vec<(String, u32)>, Instant)> = None;
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            bail!(
                "job {name}: not running after {}s: {last}; see `corral status {name}`",
                timeout.as_secs()
            );
        }
        let wait = if stable.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let j = c.job(name, Some((index, left.min(wait)))).await?;
        index = j.index;
        let p = assess(&j, eval_id);
        let line = match &p {
            Progress::Waiting(s) | Progress::Done(s) | Progress::Failed(s) => s.clone(),
        };
        if line != last && !matches!(p, Progress::Failed(_)) {
            match &bar {
                Some(b) => b.set_message(format!("{name}: {line}")),
                None => eprintln!("{name}: {line}"),
            }
            last = line;
        }
        match p {
            Progress::Waiting(_) => stable = None,
            Progress::Done(s) => {
                let sig = signature(&j);
                match &stable {
                    Some((prev, since)) if *prev == sig => {
                        if since.elapsed() < HEALTHY_FOR {
                            continue;
                        }
                    }
                    _ => {
                        stable = Some((sig, Instant::now()));
                        continue;
                    }
                }
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                eprintln!("job {name}: {s}");
                return Ok(());
            }
            Progress::Failed(why) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                bail!("job {name}: {why}\nsee `corral status {name}` and `corral logs {name}`");
            }
        }
    }
}

/// Which allocations run and how often their tasks restarted.
fn signature(j: &JobView) -> Vec<(String, u32)> {
    j.allocations
        .iter()
        .filter(|a| a.desired == DesiredStatus::Run && a.job_version == j.version)
        .map(|a| (a.id.clone(), a.tasks.values().map(|t| t.restarts).sum()))
        .collect()
}

#[cfg(test)]
mod tests;

/// `corral plan FILE`: the scheduler's answer without storing anything.
/// Exits [`PLAN_UNPLACEABLE`] when some allocation cannot be placed (as
/// `nomad job plan` has its own code for changes), after printing.
pub async fn plan(c: &Client, file: &Path, out: Out) -> Result<()> {
    let (text, filename) = read_job_file(file)?;
    let p = c.plan(&text, &filename).await?;
    let unplaceable = p.jobs.iter().any(|j| !j.failures.is_empty());
    let printed = out.data(&p, || p.jobs.iter().map(|j| j.name.clone()).collect())?;
    if !printed {
        print_plan(&p, unplaceable);
    }
    if unplaceable {
        return Err(crate::Exit(PLAN_UNPLACEABLE).into());
    }
    Ok(())
}

/// `corral plan`'s exit code when something cannot be placed.
pub const PLAN_UNPLACEABLE: u8 = 3;

fn print_plan(p: &corral_types::api::PlanResponse, unplaceable: bool) {
    for j in &p.jobs {
        println!(
            "job {} (version {}{})",
            j.name,
            j.version,
            if j.changed { ", new" } else { ", unchanged" }
        );
        for a in &j.place {
            println!("  + place {} on {}", a.name, a.node);
        }
        for s in &j.stop {
            println!("  - stop {} ({})", s.name, s.reason);
        }
        if j.in_place > 0 {
            println!("  ~ update {} allocation(s) in place", j.in_place);
        }
        for f in &j.failures {
            println!("  ! {f}");
        }
    }
    if unplaceable {
        eprintln!(
            "some allocations cannot be placed (above); `corral run` would store the job and wait for room"
        );
    }
}
