//! `corral job history JOB` (every version, newest first, each with what
//! changed against the one before) and `corral job revert JOB VERSION`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_client::Client;
use corral_types::api::{JobVersionView, SubmittedJob};
use serde::Serialize;

use crate::cmd::run::{Submitted, follow};
use crate::output::{Out, SpecFormat, ago};
use crate::specdiff::{self, Change};

/// One version in `corral job history --json`.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub submitted_at: u64,
    /// Its rollout succeeded: what an automatic revert goes back to.
    pub stable: bool,
    pub stopped: bool,
    /// The earlier version whose spec this one restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<u64>,
    /// The version `changes` compare against (`None` for the first).
    pub previous: Option<u64>,
    pub changes: Vec<Change>,
    /// As a job file (`corral job inspect` prints the same).
    pub spec: serde_json::Value,
}

/// Versions (newest first, as the server lists them) with their changes.
pub fn history_entries(versions: &[JobVersionView]) -> Result<Vec<HistoryEntry>> {
    let mut out = Vec::with_capacity(versions.len());
    for (i, v) in versions.iter().enumerate() {
        let prev = versions.get(i + 1);
        let changes = match prev {
            Some(p) => specdiff::diff(
                &serde_json::to_value(&p.spec)?,
                &serde_json::to_value(&v.spec)?,
            ),
            None => Vec::new(),
        };
        out.push(HistoryEntry {
            version: v.version,
            submitted_at: v.submitted_at,
            stable: v.stable,
            stopped: v.stopped,
            reverts_to: v.reverts_to,
            previous: prev.map(|p| p.version),
            changes,
            spec: corral_types::spec::render::document(&v.spec),
        });
    }
    Ok(out)
}

pub async fn history(c: &Client, job: &str, out: Out) -> Result<()> {
    let mut versions = c.job_versions(job).await?;
    // Newest first, whatever order the server used.
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let entries = history_entries(&versions)?;
    if out.data(&entries, || {
        entries.iter().map(|e| e.version.to_string()).collect()
    })? {
        return Ok(());
    }
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let mut tags = Vec::new();
        if i == 0 {
            tags.push("current".to_string());
        }
        if e.stable {
            tags.push("stable".to_string());
        }
        if e.stopped {
            tags.push("stopped".to_string());
        }
        if let Some(r) = e.reverts_to {
            tags.push(format!("revert to version {r}"));
        }
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!("  ({})", tags.join(", "))
        };
        println!(
            "version {}  submitted {}{tags}",
            e.version,
            ago(e.submitted_at)
        );
        match e.previous {
            None => println!("  first version"),
            Some(p) if e.changes.is_empty() => println!("  same spec as version {p}"),
            Some(_) => {
                for l in specdiff::lines(&e.changes) {
                    println!("  {l}");
                }
            }
        }
    }
    Ok(())
}

pub async fn revert(
    c: &Client,
    job: &str,
    version: u64,
    detach: bool,
    out: Out,
    timeout: Option<Duration>,
) -> Result<()> {
    let resp = c.revert(job, version).await?;
    let said = |j: &SubmittedJob| {
        if j.changed {
            format!(
                "job {}: version {version} stored again as version {}",
                j.name, j.version
            )
        } else {
            format!(
                "job {}: version {version} is the current spec already (version {}); nothing to do",
                j.name, j.version
            )
        }
    };
    stored_then_follow(c, &resp, said, detach, out, timeout).await
}

/// What `revert` and `scale` do with the version they stored: say it
/// (`said`), then follow its rollout as `corral run` does unless
/// `detach`; the jobs' status as data at the end with `-o json|yaml`.
async fn stored_then_follow(
    c: &Client,
    resp: &corral_types::api::SubmitResponse,
    said: impl Fn(&SubmittedJob) -> String,
    detach: bool,
    out: Out,
    timeout: Option<Duration>,
) -> Result<()> {
    if detach && out.data(resp, || resp.jobs.iter().map(|j| j.name.clone()).collect())? {
        return Ok(());
    }
    for j in &resp.jobs {
        eprintln!("{}", said(j));
    }
    if !detach {
        for j in resp.jobs.iter().filter(|j| j.changed) {
            let sub = Submitted {
                name: &j.name,
                version: j.version,
                changed: j.changed,
                eval_id: &j.eval_id,
            };
            follow(c, &sub, timeout).await?;
        }
    }
    if !detach && out.is_data() {
        crate::cmd::status::print_jobs(c, resp.jobs.iter().map(|j| j.name.as_str()), out).await?;
    }
    Ok(())
}

/// `corral job inspect JOB [--version N]`: the spec as a job file that
/// `corral run` takes back unchanged.
pub async fn inspect(
    c: &Client,
    job: &str,
    version: Option<u64>,
    format: Option<SpecFormat>,
) -> Result<()> {
    let spec = match version {
        None => c.job(job, None).await?.spec,
        Some(v) => {
            let versions = c.job_versions(job).await?;
            match versions.into_iter().find(|x| x.version == v) {
                Some(x) => x.spec,
                None => bail!(
                    "job {job} has no version {v}; `corral job history {job}` lists its versions"
                ),
            }
        }
    };
    let doc = corral_types::spec::render::document(&spec);
    match format {
        Some(SpecFormat::Json) => crate::output::print_json(&doc),
        None | Some(SpecFormat::Yaml) => crate::output::print_yaml(&doc),
    }
}

/// `corral stop JOB`: store the stop, then (unless `detach`) wait until
/// every allocation of the job has stopped, showing how many are left.
pub struct StopHow {
    pub purge: bool,
    pub delete_volumes: bool,
    pub detach: bool,
}

pub async fn stop(c: &Client, job: &str, how: StopHow, out: Out) -> Result<()> {
    let volumes = c.volumes(Some(job)).await.unwrap_or_default();
    let r = c.stop(job, how.purge).await?;
    let what = if how.purge {
        "stopped and purged"
    } else {
        "stopped"
    };
    if !how.detach {
        wait_stopped(c, job).await?;
    }
    let mut deleted = Vec::new();
    if how.delete_volumes {
        for v in &volumes {
            c.volume_delete(&v.id, false)
                .await
                .with_context(|| format!("job {job} is {what}, but deleting volume {}", v.id))?;
            deleted.push(v.id.clone());
        }
    }
    if out.data(&r, || vec![job.to_string()])? {
        return Ok(());
    }
    println!("job {job} {what}");
    if !deleted.is_empty() {
        println!("volumes deleted: {}", deleted.join(", "));
    } else if !volumes.is_empty() {
        let ids: Vec<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
        println!(
            "its volumes are kept ({}): `corral run` gets them back; delete them with `corral volume delete ID --yes`",
            ids.join(", ")
        );
    }
    Ok(())
}

/// How long `stop` waits for allocations: past every kill_timeout of a
/// sane spec; a node that is down cannot confirm at all.
const STOP_WAIT: Duration = Duration::from_secs(120);

async fn wait_stopped(c: &Client, job: &str) -> Result<()> {
    let start = std::time::Instant::now();
    let mut last_shown = usize::MAX;
    loop {
        let allocs = match c.allocs(Some(job)).await {
            Ok(a) => a,
            // Purged and collected: nothing is left to wait for.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let running: Vec<_> = allocs.iter().filter(|a| !a.status.is_terminal()).collect();
        if running.is_empty() {
            return Ok(());
        }
        if running.len() != last_shown {
            eprintln!(
                "job {job}: waiting for {} allocation{} to stop",
                running.len(),
                if running.len() == 1 { "" } else { "s" }
            );
            last_shown = running.len();
        }
        if start.elapsed() > STOP_WAIT {
            let names: Vec<_> = running
                .iter()
                .map(|a| format!("{} on {} ({})", a.name, a.node, a.status.as_str()))
                .collect();
            bail!(
                "job {job}: the stop is stored, but after {}s {} still run: {}\nsee `corral alloc status ID`; a node that is down cannot confirm until it is marked lost",
                STOP_WAIT.as_secs(),
                running.len(),
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `corral job scale JOB [GROUP] COUNT`.
pub async fn scale(
    c: &Client,
    job: &str,
    rest: &[String],
    detach: bool,
    out: Out,
    timeout: Option<Duration>,
) -> Result<()> {
    let (group, count) = match rest {
        [count] => (None, count),
        [group, count] => (Some(group.as_str()), count),
        _ => anyhow::bail!(
            "give the count, and the group first when the job has several: `corral job scale {job} [GROUP] COUNT`"
        ),
    };
    let max = corral_types::spec::MAX_COUNT;
    let count: u32 = count.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
        anyhow::anyhow!(
            "count: `{count}` is not a count from 0 to {max}; e.g. `corral job scale {job} 3`"
        )
    })?;
    let resp = c.scale(job, group, count).await?;
    let said = |j: &SubmittedJob| {
        if j.changed {
            format!(
                "job {}: count {count}, stored as version {}",
                j.name, j.version
            )
        } else {
            format!(
                "job {}: the count is {count} already (version {}); nothing to do",
                j.name, j.version
            )
        }
    };
    stored_then_follow(c, &resp, said, detach, out, timeout).await
}
