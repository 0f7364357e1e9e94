use anyhow::Result;
use corral_client::Client;
use corral_types::DesiredStatus;
use corral_types::api::{AllocView, JobView};

use crate::output::{Out, ago, short, table};

pub async fn list(c: &Client, out: Out) -> Result<()> {
    let jobs = c.jobs().await?;
    if out.data(&jobs, || jobs.iter().map(|j| j.name.clone()).collect())? {
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no jobs; submit one with `corral run FILE`");
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let running: u32 = j.groups.iter().map(|g| g.running).sum();
            let desired: u32 = j.groups.iter().map(|g| g.count).sum();
            vec![
                j.name.clone(),
                j.version.to_string(),
                j.status.as_str().to_string(),
                format!("{running}/{desired}"),
                ago(j.submitted_at),
                j.reason.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "name",
                "version",
                "status",
                "running",
                "submitted",
                "reason"
            ],
            rows
        )
    );
    Ok(())
}

pub async fn job(c: &Client, name: &str, out: Out) -> Result<()> {
    let j = c.job(name, None).await?;
    if out.data(&json_view(&j), || vec![j.name.clone()])? {
        return Ok(());
    }
    println!("job      {}", j.name);
    println!("version  {}", j.version);
    println!(
        "status   {}{}",
        j.status.as_str(),
        if j.stopped { " (stopped)" } else { "" }
    );
    if !j.reason.is_empty() {
        println!("reason   {}", j.reason);
    }
    println!("submitted {}", ago(j.submitted_at));
    // The rollout of this version, when it had one.
    if let Ok(d) = c.deployment(name, None).await
        && d.job_version == j.version
    {
        let healthy: u32 = d.groups.values().map(|g| g.healthy).sum();
        let desired: u32 = d.groups.values().map(|g| g.desired_total).sum();
        println!(
            "deployment {} ({healthy}/{desired} healthy){}",
            d.status,
            if d.description.is_empty() {
                String::new()
            } else {
                format!(": {}", d.description)
            }
        );
    }
    if let Some(e) = &j.latest_eval {
        for f in &e.failures {
            println!("placement: {f}");
        }
    }
    println!();
    let rows = j
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.count.to_string(),
                g.running.to_string(),
                g.pending.to_string(),
                g.failed.to_string(),
                g.lost.to_string(),
                g.complete.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "group", "desired", "running", "pending", "failed", "lost", "complete"
            ],
            rows
        )
    );
    println!();
    let rows = j
        .allocations
        .iter()
        .map(|a| {
            let restarts: u32 = a.tasks.values().map(|t| t.restarts).sum();
            vec![
                if out.wide() {
                    a.id.clone()
                } else {
                    short(&a.id).to_string()
                },
                a.name.clone(),
                a.node.clone(),
                a.job_version.to_string(),
                desired(a.desired).to_string(),
                a.state.as_str().to_string(),
                restarts.to_string(),
                ago(a.modified_at),
                addresses(a),
                a.reason.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "id", "name", "node", "version", "desired", "status", "restarts", "modified",
                "address", "reason"
            ],
            rows
        )
    );
    Ok(())
}

/// Where an allocation answers: `host:port` for its one named port, else
/// `name=host:port` for each (the task is named only when two tasks name
/// a port alike); `-` without ports.
pub fn addresses(a: &AllocView) -> String {
    if a.ports.is_empty() {
        return "-".into();
    }
    if a.ports.len() == 1 {
        return a.ports.values().next().cloned().unwrap_or_default();
    }
    let names: Vec<&str> = a
        .ports
        .keys()
        .map(|k| k.split_once('.').map_or(k.as_str(), |(_, n)| n))
        .collect();
    a.ports
        .iter()
        .zip(&names)
        .map(|((key, addr), name)| {
            let shared = names.iter().filter(|n| *n == name).count() > 1;
            format!("{}={addr}", if shared { key.as_str() } else { name })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The documented `status --json` shape: the job view (status, reason),
/// whose allocations carry id, node, group, status, state, reason and
/// tasks{state, restarts, exit_code, message} (docs/STATUS.md), and whose
/// `spec` is a job file (durations like `15s`, sizes like
/// `256MiB`) that `corral run` takes back as it is.
pub fn json_view(j: &JobView) -> serde_json::Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("spec".into(), corral_types::spec::render::document(&j.spec));
    }
    v
}

/// The jobs a command submitted, as they stand now, in a data format
/// (`run -o json` and `job revert -o json` once they followed them).
pub async fn print_jobs<'a>(
    c: &Client,
    names: impl IntoIterator<Item = &'a str>,
    out: Out,
) -> Result<()> {
    let mut views = Vec::new();
    let mut listed = Vec::new();
    for name in names {
        views.push(json_view(&c.job(name, None).await?));
        listed.push(name.to_string());
    }
    out.data(&views, || listed)?;
    Ok(())
}

pub fn desired(d: DesiredStatus) -> &'static str {
    match d {
        DesiredStatus::Run => "run",
        DesiredStatus::Stop => "stop",
    }
}
