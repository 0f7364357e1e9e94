//! `corral events`: recent events, or (`-f`) the live stream after them.

use std::io::Write;

use anyhow::{Context, Result};
use corral_client::{Client, EventQuery};
use corral_types::Event;

use crate::output::Out;

pub struct EventsArgs {
    pub follow: bool,
    pub topics: Vec<String>,
    pub jobs: Vec<String>,
    pub out: Out,
    pub since_index: Option<u64>,
    pub limit: usize,
}

pub async fn events(c: &Client, a: EventsArgs) -> Result<()> {
    let q = EventQuery {
        topics: a.topics.clone(),
        jobs: a.jobs.clone(),
        index: a.since_index,
        limit: Some(a.limit),
    };
    let recent = if a.follow && a.since_index.is_some() {
        // The stream itself starts after the index.
        Vec::new()
    } else {
        c.events(&q).await?
    };
    if !a.follow {
        if a.out.data(&recent, || {
            recent.iter().map(|e| e.index.to_string()).collect()
        })? {
            return Ok(());
        }
        if recent.is_empty() {
            println!("no events{}", describe(&a));
        }
        for e in &recent {
            println!("{}", line(e));
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for e in &recent {
        print(&mut out, e, a.out)?;
    }
    // Resume right after what was printed: nothing missed, nothing twice.
    let after = match (a.since_index, recent.last()) {
        (Some(i), _) => i,
        (None, Some(e)) => e.index,
        // Nothing matched: start at the newest event of any kind.
        (None, None) => c
            .events(&EventQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await?
            .last()
            .map(|e| e.index)
            .unwrap_or(0),
    };
    let mut last = after;
    let mut stream = c
        .event_stream(&EventQuery {
            index: Some(after),
            ..q
        })
        .await?;
    while let Some(e) = stream.next().await {
        let e = e?;
        if e.index > last + 1 && a.topics.is_empty() && a.jobs.is_empty() {
            eprintln!(
                "corral events: events {}..{} were pruned before they could be shown",
                last + 1,
                e.index - 1
            );
        }
        last = e.index;
        print(&mut out, &e, a.out)?;
    }
    anyhow::bail!("the server ended the event stream (is it shutting down?)")
}

fn describe(a: &EventsArgs) -> String {
    let mut s = String::new();
    if !a.topics.is_empty() {
        s.push_str(&format!(" about {}", a.topics.join(", ")));
    }
    if !a.jobs.is_empty() {
        s.push_str(&format!(" of job {}", a.jobs.join(", ")));
    }
    if let Some(i) = a.since_index {
        s.push_str(&format!(" after index {i}"));
    }
    s
}

/// One streamed event: a JSON line, a YAML document, its index, or the
/// human line.
fn print(out: &mut impl Write, e: &Event, format: Out) -> Result<()> {
    match format {
        Out::Json => writeln!(out, "{}", serde_json::to_string(e)?),
        Out::Yaml => write!(out, "---\n{}", crate::output::to_yaml(e)?),
        Out::Name => writeln!(out, "{}", e.index),
        Out::Human | Out::Wide => writeln!(out, "{}", line(e)),
    }
    .context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")
}

/// `2026-11-25 20:32:05Z  #123  allocation.oom_killed  message`.
pub fn line(e: &Event) -> String {
    format!(
        "{}  #{:<6} {:<22} {}",
        utc(e.time),
        e.index,
        e.kind.as_str(),
        e.message
    )
}

pub use corral_types::civil::utc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_795_651_972_481), "2026-11-26 00:12:52Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn lines_read_well() {
        let mut e = Event::new(
            corral_types::EventType::AllocationOomKilled,
            0,
            "web.web[0] task app was killed for running out of memory (limit 32MiB)",
        );
        e.index = 42;
        assert_eq!(
            line(&e),
            "1970-01-01 00:00:00Z  #42     allocation.oom_killed  web.web[0] task app was killed for running out of memory (limit 32MiB)"
        );
    }
}
