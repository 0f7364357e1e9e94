//! `corral logs`: one allocation's stream, or every running allocation of
//! a job interleaved line by line with a `name |` prefix.

use anyhow::{Result, bail};
use corral_client::{Client, LogQuery};
use corral_types::{ClientStatus, DesiredStatus};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

pub struct LogsArgs {
    pub job: String,
    pub alloc: Option<String>,
    pub task: Option<String>,
    pub stderr: bool,
    pub follow: bool,
    pub tail: Option<usize>,
}

pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let q = LogQuery {
        task: a.task.clone(),
        stream: Some(if a.stderr { "stderr" } else { "stdout" }.into()),
        follow: a.follow,
        tail: a.tail,
    };
    let targets: Vec<(String, String)> = match &a.alloc {
        Some(id) => {
            let v = c.alloc(id).await?;
            vec![(v.id, v.name)]
        }
        None => {
            let j = match c.job(&a.job, None).await {
                Ok(j) => j,
                Err(e) if e.is_not_found() => {
                    // Maybe an allocation id was given in the job's place.
                    let v = c.alloc(&a.job).await.map_err(|_| e)?;
                    return one(c, &v.id, &q, None).await;
                }
                Err(e) => return Err(e.into()),
            };
            let mut live: Vec<_> = j
                .allocations
                .iter()
                .filter(|x| x.desired == DesiredStatus::Run || x.status == ClientStatus::Running)
                .map(|x| (x.id.clone(), x.name.clone()))
                .collect();
            if live.is_empty() {
                // Nothing live: show the newest allocations' logs.
                live = j
                    .allocations
                    .iter()
                    .rev()
                    .take(1)
                    .map(|x| (x.id.clone(), x.name.clone()))
                    .collect();
            }
            live
        }
    };
    match targets.len() {
        0 => bail!(
            "job {} has no allocations yet; see `corral status {}`",
            a.job,
            a.job
        ),
        1 => one(c, &targets[0].0, &q, None).await,
        _ => {
            let width = targets.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
            let streams = targets.iter().map(|(id, name)| {
                let prefix = format!("{name:width$} | ");
                let q = q.clone();
                async move { one(c, id, &q, Some(prefix)).await }
            });
            for r in futures::future::join_all(streams).await {
                r?;
            }
            Ok(())
        }
    }
}

async fn one(c: &Client, alloc: &str, q: &LogQuery, prefix: Option<String>) -> Result<()> {
    let resp = c.logs(alloc, q).await?;
    let mut stream = resp.bytes_stream();
    let mut out = tokio::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        match &prefix {
            None => out.write_all(&chunk).await?,
            Some(p) => {
                pending.extend_from_slice(&chunk);
                // Whole lines only, so interleaved streams stay readable.
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let mut buf = p.as_bytes().to_vec();
                    buf.extend_from_slice(&line);
                    out.write_all(&buf).await?;
                }
            }
        }
        out.flush().await?;
    }
    if let Some(p) = prefix
        && !pending.is_empty()
    {
        out.write_all(format!("{p}{}\n", String::from_utf8_lossy(&pending)).as_bytes())
            .await?;
    }
    out.flush().await?;
    Ok(())
}
