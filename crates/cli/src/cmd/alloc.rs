use anyhow::Result;
use corral_client::Client;

use super::status::desired;
use crate::output::{ago, print_json, short, table};

pub async fn list(c: &Client, job: Option<&str>, json: bool) -> Result<()> {
    let allocs = c.allocs(job).await?;
    if json {
        return print_json(&allocs);
    }
    let rows = allocs
        .iter()
        .map(|a| {
            vec![
                short(&a.id).to_string(),
                a.name.clone(),
                a.node.clone(),
                a.job_version.to_string(),
                desired(a.desired).to_string(),
                a.status.as_str().to_string(),
                ago(a.modified_at),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "id", "name", "node", "version", "desired", "status", "modified"
            ],
            rows
        )
    );
    Ok(())
}

pub async fn status(c: &Client, id: &str, json: bool) -> Result<()> {
    let a = c.alloc(id).await?;
    if json {
        return print_json(&a);
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
    println!("status    {}", a.status.as_str());
    if !a.message.is_empty() {
        println!("message   {}", a.message);
    }
    println!(
        "resources cpu {} memory {}",
        a.resources.cpu, a.resources.memory
    );
    println!("created   {}", ago(a.created_at));
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
    Ok(())
}
