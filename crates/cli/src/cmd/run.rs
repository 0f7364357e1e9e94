//! `corral run FILE`: submit, then watch the job until every allocation of
//! the new version runs (exit 0) or something fails (exit non-zero, with
//! the reason).

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_client::Client;
use corral_types::api::JobView;
use corral_types::{ClientStatus, DesiredStatus};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::print_json;

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
    if running >= desired {
        return Progress::Done(parts.join(", "));
    }
    Progress::Waiting(parts.join(", "))
}

/// How long every allocation must keep running, without a restart, before
/// `corral run` calls the job up (a crashing task runs for a moment too).
pub const HEALTHY_FOR: Duration = Duration::from_secs(3);

pub async fn run(
    c: &Client,
    file: &Path,
    detach: bool,
    json: bool,
    timeout: Duration,
) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read job file {}", file.display()))?;
    let filename = file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| file.display().to_string());
    let resp = c.submit(&text, &filename).await?;
    if json && detach {
        return print_json(&resp);
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
        if let Err(e) = watch(c, &j.name, &j.eval_id, timeout).await {
            failed.push(format!("{e:#}"));
        }
    }
    if json {
        let mut views = Vec::new();
        for j in &resp.jobs {
            views.push(c.job(&j.name, None).await?);
        }
        print_json(&views)?;
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
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
pub async fn plan(c: &Client, file: &Path, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read job file {}", file.display()))?;
    let filename = file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let p = c.plan(&text, &filename).await?;
    if json {
        return print_json(&p);
    }
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
    Ok(())
}
