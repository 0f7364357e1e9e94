//! `corral job history JOB` (every version, newest first, each with what
//! changed against the one before) and `corral job revert JOB VERSION`.

use std::time::Duration;

use anyhow::Result;
use corral_client::Client;
use corral_types::JobSpec;
use corral_types::api::JobVersionView;
use serde::Serialize;

use crate::cmd::run::{Submitted, follow};
use crate::output::{ago, print_json};
use crate::specdiff::{self, Change};

/// One version in `corral job history --json`.
#[derive(Debug, Serialize)]
pub struct HistoryEntry<'a> {
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
    pub spec: &'a JobSpec,
}

/// Versions (newest first, as the server lists them) with their changes.
pub fn history_entries(versions: &[JobVersionView]) -> Result<Vec<HistoryEntry<'_>>> {
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
            spec: &v.spec,
        });
    }
    Ok(out)
}

pub async fn history(c: &Client, job: &str, json: bool) -> Result<()> {
    let mut versions = c.job_versions(job).await?;
    // Newest first, whatever order the server used.
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let entries = history_entries(&versions)?;
    if json {
        return print_json(&entries);
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
    json: bool,
    timeout: Option<Duration>,
) -> Result<()> {
    let resp = c.revert(job, version).await?;
    if json && detach {
        return print_json(&resp);
    }
    for j in &resp.jobs {
        if j.changed {
            eprintln!(
                "job {}: version {version} stored again as version {}",
                j.name, j.version
            );
        } else {
            eprintln!(
                "job {}: version {version} is the current spec already (version {}); nothing to do",
                j.name, j.version
            );
        }
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
    if json {
        let mut views = Vec::new();
        for j in &resp.jobs {
            views.push(c.job(&j.name, None).await?);
        }
        print_json(&views)?;
    }
    Ok(())
}
