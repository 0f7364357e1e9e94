use std::collections::BTreeMap;

use anyhow::Result;
use corral_client::Client;
use corral_types::{AllocHealth, CheckState};

use super::status::desired;
use crate::output::{Out, ago, short, table};

pub async fn list(c: &Client, job: Option<&str>, out: Out) -> Result<()> {
    let allocs = c.allocs(job).await?;
    if out.data(&allocs, || allocs.iter().map(|a| a.id.clone()).collect())? {
        return Ok(());
    }
    let rows = allocs
        .iter()
        .map(|a| {
            let mut row = vec![
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
                ago(a.modified_at),
                a.reason.clone(),
            ];
            if out.wide() {
                row.insert(row.len() - 1, super::status::addresses(a));
            }
            row
        })
        .collect();
    let mut header = vec![
        "id", "name", "node", "version", "desired", "status", "modified", "reason",
    ];
    if out.wide() {
        header.insert(header.len() - 1, "addresses");
    }
    println!("{}", table(&header, rows));
    Ok(())
}

pub async fn status(c: &Client, id: &str, out: Out) -> Result<()> {
    let a = c.alloc(id).await?;
    if out.data(&a, || vec![a.id.clone()])? {
        return Ok(());
    }
    println!("id        {}", a.id);
    println!("name      {}", a.name);
    println!("node      {} ({})", a.node, short(&a.node_id));
    println!("version   {}", a.job_version);
    println!(
        "desired   {}{}",
        desired(a.desired),
        if a.desired_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.desired_reason)
        }
    );
    println!("status    {}", a.state.as_str());
    if !a.reason.is_empty() {
        println!("reason    {}", a.reason);
    } else if !a.message.is_empty() {
        println!("message   {}", a.message);
    }
    println!(
        "resources cpu {} memory {}",
        a.resources.cpu, a.resources.memory
    );
    println!("created   {}", ago(a.created_at));
    if let Some(d) = &a.deployment_id {
        println!(
            "deployment {}{}",
            short(d),
            if a.canary { " (canary)" } else { "" }
        );
        println!("health    {}", health_line(a.health.as_ref()));
    }
    if !a.ports.is_empty() {
        println!();
        let rows = a
            .ports
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        println!("{}", table(&["port", "address"], rows));
    }
    println!();
    let rows = a
        .tasks
        .iter()
        .map(|(name, t)| {
            vec![
                name.clone(),
                t.state.as_str().to_string(),
                t.restarts.to_string(),
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                if t.oom_killed {
                    "yes".into()
                } else {
                    "no".into()
                },
                t.started_at.map(ago).unwrap_or_else(|| "-".into()),
                t.message.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "task", "state", "restarts", "exit", "oom", "started", "message"
            ],
            rows
        )
    );
    if !a.checks.is_empty() {
        println!();
        println!(
            "{}",
            table(
                &["check", "task", "status", "failures", "checked", "output"],
                check_rows(&a.checks)
            )
        );
    }
    if !a.reschedules.is_empty() {
        // The slot's history: each failed allocation this one follows.
        println!();
        println!(
            "rescheduled {} time(s) after failures:",
            a.reschedules.len()
        );
        let rows = a
            .reschedules
            .iter()
            .map(|r| {
                vec![
                    short(&r.prev_alloc).to_owned(),
                    short(&r.prev_node).to_owned(),
                    corral_types::units::Millis(r.delay_ms).to_string(),
                    ago(r.at),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["failed alloc", "on node", "waited", "rescheduled"], rows)
        );
    }
    Ok(())
}

/// The deployment health of an allocation, in words.
fn health_line(h: Option<&AllocHealth>) -> String {
    match h {
        None => "not decided yet".into(),
        Some(h) if h.healthy => format!("healthy ({})", ago(h.at)),
        Some(h) if h.message.is_empty() => format!("unhealthy ({})", ago(h.at)),
        Some(h) => format!("unhealthy ({}): {}", ago(h.at), h.message),
    }
}

/// One row per check: name, task, status, consecutive failures, when it
/// last ran and its last output (cut to fit a line).
fn check_rows(checks: &BTreeMap<String, CheckState>) -> Vec<Vec<String>> {
    const OUTPUT_WIDTH: usize = 72;
    checks
        .iter()
        .map(|(name, c)| {
            let output = if c.output.chars().count() > OUTPUT_WIDTH {
                let cut: String = c.output.chars().take(OUTPUT_WIDTH - 3).collect();
                format!("{cut}...")
            } else {
                c.output.clone()
            };
            vec![
                name.clone(),
                c.task.clone(),
                c.status.as_str().to_string(),
                c.consecutive_failures.to_string(),
                ago(c.at),
                output,
            ]
        })
        .collect()
}

/// `corral alloc stop ID`: stop it, then wait for the replacement in its
/// slot to run (unless `detach`).
pub async fn stop(c: &Client, id: &str, detach: bool, out: Out) -> Result<()> {
    let a = c.alloc_stop(id).await?;
    eprintln!(
        "allocation {} ({}) stopping; its slot is filled again",
        a.name,
        short(&a.id)
    );
    if detach {
        out.data(&a, || vec![a.id.clone()])?;
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let allocs = c.allocs(Some(&a.job)).await?;
        let replacement = allocs.iter().find(|x| {
            x.id != a.id
                && x.group == a.group
                && x.index == a.index
                && x.created_at >= a.modified_at
                && x.desired == corral_types::DesiredStatus::Run
        });
        let old_done = allocs
            .iter()
            .find(|x| x.id == a.id)
            .is_none_or(|x| x.status.is_terminal());
        match replacement {
            Some(r) if r.status == corral_types::ClientStatus::Running && old_done => {
                if !out.data(r, || vec![r.id.clone()])? {
                    println!(
                        "{} runs again as allocation {} on node {}",
                        r.name,
                        short(&r.id),
                        r.node
                    );
                }
                return Ok(());
            }
            Some(r) if r.status.is_terminal() => {
                anyhow::bail!(
                    "the replacement {} ended {}: {}; see `corral alloc status {}`",
                    short(&r.id),
                    r.status.as_str(),
                    r.reason,
                    short(&r.id)
                );
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "no replacement of {} runs after 2m; see `corral status {}` for why",
                a.name,
                a.job
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// `corral alloc restart ID [--task T]`: ask, then wait until each task
/// restarted runs again (its restart count went up).
pub async fn restart(c: &Client, id: &str, task: Option<&str>, out: Out) -> Result<()> {
    let before = c.alloc(id).await?;
    let r = c.alloc_restart(&before.id, task).await?;
    let asked: Vec<String> = r["restarted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "allocation {} ({}): restarting {}",
        before.name,
        short(&before.id),
        asked.join(", ")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let a = c.alloc(&before.id).await?;
        let done = asked.iter().all(|t| {
            let was = before.tasks.get(t).map_or(0, |s| s.restarts);
            a.tasks.get(t).is_some_and(|s| {
                s.restarts > was && s.state == corral_types::TaskLifecycle::Running
            })
        });
        if done {
            if !out.data(&a, || vec![a.id.clone()])? {
                for t in &asked {
                    let s = &a.tasks[t];
                    println!("task {t} runs again (restart {})", s.restarts);
                }
            }
            return Ok(());
        }
        if a.status.is_terminal() {
            anyhow::bail!(
                "allocation {} ended {} while restarting: {}; see `corral alloc status {}`",
                a.name,
                a.status.as_str(),
                a.reason,
                short(&a.id)
            );
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the tasks of {} do not run again after 2m; see `corral alloc status {}`",
                a.name,
                short(&a.id)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use corral_types::CheckStatus;

    use super::*;

    #[test]
    fn check_rows_and_health() {
        let checks = BTreeMap::from([(
            "web-http".to_string(),
            CheckState {
                task: "app".into(),
                status: CheckStatus::Failing,
                output: format!("GET http://10.0.0.2:8080/healthz: {}", "x".repeat(100)),
                consecutive_failures: 3,
                at: 0,
            },
        )]);
        let rows = check_rows(&checks);
        assert_eq!(rows[0][..5], ["web-http", "app", "failing", "3", "-"]);
        assert_eq!(rows[0][5].chars().count(), 72);
        assert!(rows[0][5].ends_with("..."));
        assert_eq!(health_line(None), "not decided yet");
        let h = AllocHealth {
            healthy: false,
            at: 0,
            message: "task app died".into(),
        };
        assert_eq!(health_line(Some(&h)), "unhealthy (-): task app died");
    }
}
