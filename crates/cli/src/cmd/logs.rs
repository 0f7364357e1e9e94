//! `corral logs`: one allocation's stream, or every running allocation of
//! a job interleaved line by line with a `name |` prefix (as
//! `docker compose logs` does). The agent that runs (or ran) the
//! allocation reads the files; the server proxies the stream.

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_client::{Client, LogQuery};
use corral_types::{ClientStatus, DesiredStatus};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job (or an allocation id).
    pub job: String,
    /// The task, when the group has several.
    #[arg(long)]
    pub task: Option<String>,
    /// One allocation of the job (its id or a prefix).
    #[arg(long)]
    pub alloc: Option<String>,
    /// Only stdout (with --stderr too: both, the default).
    #[arg(long)]
    pub stdout: bool,
    /// Only stderr (with --stdout too: both, the default).
    #[arg(long)]
    pub stderr: bool,
    /// Keep streaming new output, across task restarts, until the
    /// allocation stops.
    #[arg(short, long)]
    pub follow: bool,
    /// The run before the task's last restart.
    #[arg(short, long)]
    pub previous: bool,
    /// Only lines newer than a duration (10m, 1h30m) or a time
    /// (2026-11-25T20:32:05Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the last N lines (of each allocation).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with the time it was written (UTC).
    #[arg(short, long)]
    pub timestamps: bool,
}

impl LogsArgs {
    fn query(&self) -> Result<LogQuery> {
        if let Some(s) = &self.since {
            corral_agent::logs::read::parse_since(s, corral_agent::logs::Timestamp::now())
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        }
        let stream = match (self.stdout, self.stderr) {
            (true, false) => "stdout",
            (false, true) => "stderr",
            _ => "both",
        };
        Ok(LogQuery {
            task: self.task.clone(),
            stream: Some(stream.into()),
            follow: self.follow,
            tail: self.tail,
            since: self.since.clone(),
            previous: self.previous,
            timestamps: self.timestamps,
        })
    }
}

pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let q = a.query()?;
    let out = Mutex::new(tokio::io::stdout());
    let targets: Vec<(String, String)> = match &a.alloc {
        Some(id) => {
            let v = c.alloc(id).await?;
            vec![(v.id, v.name)]
        }
        None => {
            let j = match c.job(&a.job, None).await {
                Ok(j) => j,
                Err(e) if e.is_not_found() => {
                    // Maybe an allocation id was given in the job's place
                    // (also one the server forgot: its node may still
                    // have the logs).
                    let id = match c.alloc(&a.job).await {
                        Ok(v) => v.id,
                        Err(_) if uuid_like(&a.job) => a.job.clone(),
                        Err(_) => return Err(e.into()),
                    };
                    return one(c, &id, &q, None, &out).await;
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
                // Nothing live: show the newest allocation's logs.
                live = j
                    .allocations
                    .iter()
                    .max_by_key(|x| x.created_at)
                    .map(|x| (x.id.clone(), x.name.clone()))
                    .into_iter()
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
        1 => one(c, &targets[0].0, &q, None, &out).await,
        n => {
            let width = targets
                .iter()
                .map(|(_, name)| name.len())
                .max()
                .unwrap_or(0);
            let out = &out;
            let mut streams: futures::stream::FuturesUnordered<_> = targets
                .iter()
                .map(|(id, name)| {
                    let prefix = format!("{name:width$} | ");
                    let q = q.clone();
                    async move {
                        let r = one(c, id, &q, Some(prefix.clone()), out).await;
                        (prefix, r)
                    }
                })
                .collect();
            let mut failed = 0;
            while let Some((prefix, r)) = streams.next().await {
                match r {
                    Ok(()) => {}
                    // The reader is gone (`| head`): every stream is done
                    // for, and main exits quietly as for one allocation.
                    // Returning drops (so stops) the other streams.
                    Err(e) if crate::broken_pipe(&e) => return Err(e),
                    Err(e) => {
                        eprintln!("{prefix}error: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed == n {
                bail!("no allocation of {} has logs to show", a.job);
            }
            if failed > 0 {
                // Said above, per allocation; the exit code says it too.
                bail!("{failed} of {n} allocations of {} failed (above)", a.job);
            }
            Ok(())
        }
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Streams one allocation's log to stdout; with a prefix, line by line
/// (so interleaved allocations stay readable).
async fn one(
    c: &Client,
    alloc: &str,
    q: &LogQuery,
    prefix: Option<String>,
    out: &Mutex<tokio::io::Stdout>,
) -> Result<()> {
    let resp = c.logs(alloc, q).await?;
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| {
            format!(
                "the log stream broke off: the server at {} (or the allocation's node) went away",
                c.addr()
            )
        })?;
        let buf = match &prefix {
            None => chunk.to_vec(),
            Some(p) => {
                pending.extend_from_slice(&chunk);
                let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let mut buf = Vec::with_capacity(end + 1);
                for line in pending[..=end].split_inclusive(|b| *b == b'\n') {
                    buf.extend_from_slice(p.as_bytes());
                    buf.extend_from_slice(line);
                }
                pending.drain(..=end);
                buf
            }
        };
        let mut o = out.lock().await;
        o.write_all(&buf).await?;
        o.flush().await?;
    }
    if let Some(p) = prefix
        && !pending.is_empty()
    {
        let mut o = out.lock().await;
        o.write_all(format!("{p}{}\n", String::from_utf8_lossy(&pending)).as_bytes())
            .await?;
        o.flush().await?;
    }
    if q.follow {
        follow_ended(c, alloc).await?;
    }
    Ok(())
}

/// A followed stream ends when its allocation stops; any other end (the
/// server shutting down, restarting) is an error, as `events -f` says.
async fn follow_ended(c: &Client, alloc: &str) -> Result<()> {
    // The agent's report that the allocation stopped can trail the end of
    // its log by a moment.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match c.alloc(alloc).await {
            Ok(a)
                if !(a.status.is_terminal() || a.desired == DesiredStatus::Stop)
                    && std::time::Instant::now() < settle =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            r => return judge_end(c, r),
        }
    }
}

fn judge_end(
    c: &Client,
    r: Result<corral_types::api::AllocView, corral_client::ClientError>,
) -> Result<()> {
    match r {
        Ok(a) if a.status.is_terminal() || a.desired == DesiredStatus::Stop => Ok(()),
        Ok(a) => bail!(
            "the server ended the log stream while allocation {} is still {} (is the server restarting?); run the command again",
            a.name,
            a.status.as_str()
        ),
        // Forgotten by the server (collected): it ended for sure.
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(anyhow::anyhow!(e).context(format!(
            "the log stream ended and the server at {} no longer answers",
            c.addr()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    fn parse(args: &[&str]) -> LogsArgs {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").logs
    }

    #[test]
    fn flags_become_the_query() {
        let q = parse(&["web"]).query().unwrap();
        assert_eq!(q.stream.as_deref(), Some("both"));
        assert!(!q.follow && !q.previous && !q.timestamps);
        let q = parse(&[
            "web", "--stderr", "-f", "-p", "-t", "--tail", "5", "--since", "10m",
        ])
        .query()
        .unwrap();
        assert_eq!(q.stream.as_deref(), Some("stderr"));
        assert!(q.follow && q.previous && q.timestamps);
        assert_eq!(q.tail, Some(5));
        assert_eq!(q.since.as_deref(), Some("10m"));
        let q = parse(&["web", "--stdout"]).query().unwrap();
        assert_eq!(q.stream.as_deref(), Some("stdout"));
        let q = parse(&["web", "--stdout", "--stderr"]).query().unwrap();
        assert_eq!(q.stream.as_deref(), Some("both"));
        let e = parse(&["web", "--since", "soon"]).query().unwrap_err();
        assert!(e.to_string().contains("--since"), "{e}");
    }
}
