//! `corral alerts`: firing alerts, and with `--all` the recently resolved.

use anyhow::Result;
use corral_client::Client;
use corral_types::Alert;

use crate::output::{Out, ago, table};

pub async fn list(c: &Client, all: bool, out: Out) -> Result<()> {
    let alerts = c.alerts(all).await?;
    if out.data(&alerts, || alerts.iter().map(|a| a.id.clone()).collect())? {
        return Ok(());
    }
    if alerts.is_empty() {
        println!(
            "{}",
            if all {
                "no alerts"
            } else {
                "no alerts firing (`corral alerts --all` lists resolved ones too)"
            }
        );
        return Ok(());
    }
    println!("{}", render(&alerts));
    Ok(())
}

fn render(alerts: &[Alert]) -> String {
    let rows = alerts
        .iter()
        .map(|a| {
            let (since, detail) = match a.resolved_at {
                Some(t) => (
                    format!("resolved {}", ago(t)),
                    format!("{} (resolved: {})", a.summary, a.resolution),
                ),
                None => (format!("fired {}", ago(a.fired_at)), a.summary.clone()),
            };
            vec![
                a.status.as_str().to_string(),
                a.rule.as_str().to_string(),
                a.subject.clone(),
                a.count.to_string(),
                since,
                detail,
            ]
        })
        .collect();
    table(
        &["status", "rule", "subject", "count", "when", "summary"],
        rows,
    )
}
