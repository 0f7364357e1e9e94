//! `GET /v1/events`: the event log as server-sent events, or as JSON.
//!
//! - `?topic=T` (repeat it or separate with commas), `?job=J` (repeat it):
//!   filters;
//! - `?index=N` (or the SSE `Last-Event-ID` header): every event with an
//!   index above N, from the store, then live; without it the stream
//!   starts with the next event. With both, the larger wins: a browser's
//!   `EventSource` reconnects to the same URL, `?index=` and all, with
//!   the id of the last event it got. N above the newest index is refused
//!   (400): that event does not exist, and waiting for it would hide the
//!   mistake (a log from another server, or a typo);
//! - `?follow=false`: the matching events as a JSON array, then the end:
//!   after `index` when given (oldest first, at most `limit`), else the
//!   newest `limit` (default 100).
//!
//! No gap, no duplicate: the stream reads the log by index. It marks the
//! commit signal seen *before* each read, so a commit landing during the
//! read wakes it again, and it only ever asks for indexes above the last
//! one it sent. Each SSE message carries `id: <index>` and `event: <type>`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_types::Event;
use futures::Stream;

use crate::ServerError;
use crate::core::Core;
use crate::events::EventFilter;

/// Events read from the store per step.
const PAGE: usize = 512;
/// Default and largest `limit` of a JSON answer.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// How many of the newest events a filtered "recent" answer looks through.
const RECENT_SCAN: usize = 20_000;

#[derive(Debug, Default)]
struct EventQuery {
    filter: EventFilter,
    index: Option<u64>,
    follow: bool,
    limit: usize,
}

fn parse(pairs: Vec<(String, String)>, headers: &HeaderMap) -> Result<EventQuery, ServerError> {
    let mut q = EventQuery {
        follow: true,
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let bad = |k: &str, v: &str, what: &str| {
        ServerError::BadRequest(format!("query parameter {k}={v:?}: {what}"))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "topic" => q.filter.add_topics(&v).map_err(ServerError::BadRequest)?,
            "job" => {
                for j in v.split(',').map(str::trim).filter(|j| !j.is_empty()) {
                    q.filter.jobs.insert(j.to_string());
                }
            }
            "index" => {
                q.index = Some(
                    v.parse()
                        .map_err(|_| bad(&k, &v, "expected an event index"))?,
                )
            }
            "follow" => {
                q.follow = v
                    .parse()
                    .map_err(|_| bad(&k, &v, "expected true or false"))?
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| bad(&k, &v, "expected a number"))?;
                q.limit = n.clamp(1, MAX_LIMIT);
            }
            other => {
                return Err(ServerError::BadRequest(format!(
                    "unknown query parameter {other:?}: use topic, job, index, follow or limit"
                )));
            }
        }
    }
    if let Some(id) = headers.get("last-event-id") {
        let id: u64 = id
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ServerError::BadRequest(format!(
                    "Last-Event-ID header {id:?}: expected an event index"
                ))
            })?;
        q.index = Some(q.index.map_or(id, |i| i.max(id)));
    }
    Ok(q)
}

pub async fn events(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ServerError> {
    let q = parse(pairs, &headers)?;
    let newest = core.store.snapshot().event_span().last;
    if let Some(i) = q.index
        && i > newest
    {
        return Err(ServerError::BadRequest(format!(
            "event index {i} is above the newest, {newest}: resume from {newest} or leave out index"
        )));
    }
    if !q.follow {
        let events: Vec<Event> = recent(&core, &q)
            .await?
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect();
        return Ok(Json(events).into_response());
    }
    let after = q.index.unwrap_or(newest);
    Ok(Sse::new(stream(core, q.filter, after))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Read up to `limit` events after `after`, off the runtime when they are
/// not in memory.
async fn read(core: &Arc<Core>, after: u64, limit: usize) -> Result<Vec<Arc<Event>>, ServerError> {
    if core.store.events_in_memory(after) {
        return Ok(core.store.events_after(after, limit)?);
    }
    let c = core.clone();
    Ok(
        tokio::task::spawn_blocking(move || c.store.events_after(after, limit))
            .await
            .map_err(|e| ServerError::Internal(format!("event read task: {e}")))??,
    )
}

/// The JSON answer of `?follow=false`.
async fn recent(core: &Arc<Core>, q: &EventQuery) -> Result<Vec<Arc<Event>>, ServerError> {
    match q.index {
        Some(after) => {
            // Oldest first after the index, filtered, at most `limit`.
            let mut out = Vec::new();
            let mut cursor = after;
            let last = core.store.snapshot().event_span().last;
            while out.len() < q.limit && cursor < last {
                let page = read(core, cursor, PAGE.max(q.limit)).await?;
                let Some(tail) = page.last() else { break };
                cursor = tail.index;
                out.extend(page.into_iter().filter(|e| q.filter.matches(e)));
            }
            out.truncate(q.limit);
            Ok(out)
        }
        None => {
            // The newest `limit` matching ones, among the newest
            // RECENT_SCAN (all of them when unfiltered).
            let span = core.store.snapshot().event_span();
            let scan = if q.filter == EventFilter::default() {
                q.limit
            } else {
                RECENT_SCAN.max(q.limit)
            };
            let mut cursor = span.last.saturating_sub(scan as u64);
            let mut out = Vec::new();
            while cursor < span.last {
                let page = read(core, cursor, PAGE.max(q.limit)).await?;
                let Some(tail) = page.last() else { break };
                cursor = tail.index;
                out.extend(page.into_iter().filter(|e| q.filter.matches(e)));
                if out.len() > 2 * q.limit {
                    out.drain(..out.len() - q.limit);
                }
            }
            let skip = out.len().saturating_sub(q.limit);
            out.drain(..skip);
            Ok(out)
        }
    }
}

struct Cursor {
    core: Arc<Core>,
    filter: EventFilter,
    after: u64,
    commits: tokio::sync::watch::Receiver<corral_types::Index>,
    ready: std::collections::VecDeque<Arc<Event>>,
}

fn stream(
    core: Arc<Core>,
    filter: EventFilter,
    after: u64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let commits = core.index.subscribe();
    let cursor = Cursor {
        core,
        filter,
        after,
        commits,
        ready: Default::default(),
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.ready.pop_front() {
                return Some((Ok(sse(&e)), c));
            }
            // Seen before the read: a commit during the read wakes us.
            c.commits.borrow_and_update();
            match read(&c.core, c.after, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    if let Some(last) = page.last() {
                        c.after = last.index;
                    }
                    let filter = &c.filter;
                    c.ready
                        .extend(page.into_iter().filter(|e| filter.matches(e)));
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: cannot read events");
                    return None;
                }
            }
            tokio::select! {
                r = c.commits.changed() => if r.is_err() { return None },
                _ = c.core.shutdown.cancelled() => return None,
            }
        }
    })
}

fn sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(e.index.to_string())
        .event(e.kind.as_str())
        .data(data)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};
    use corral_scheduler::testing::node;
    use corral_store::{MemoryStore, StateStore, Write};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{Server, ServerConfig};

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn last_event_id(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", HeaderValue::from_str(v).expect("header"));
        h
    }

    fn bad_request(r: Result<impl std::fmt::Debug, ServerError>) -> String {
        match r {
            Err(ServerError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_reconnect_resumes_from_the_larger_of_index_and_last_event_id() {
        let q = parse(pairs(&[("index", "5")]), &last_event_id("42")).expect("parse");
        assert_eq!(q.index, Some(42));
        // A stale header does not take the stream back either.
        let q = parse(pairs(&[("index", "50")]), &last_event_id("42")).expect("parse");
        assert_eq!(q.index, Some(50));
        let q = parse(vec![], &last_event_id(" 7 ")).expect("parse");
        assert_eq!(q.index, Some(7));
        let m = bad_request(parse(pairs(&[("index", "5")]), &last_event_id("abc")));
        assert!(m.contains("Last-Event-ID") && m.contains("abc"), "{m}");
    }

    #[tokio::test]
    async fn an_index_above_the_newest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().to_path_buf());
        config.alerts.enabled = false;
        let stop = CancellationToken::new();
        let server = Server::start_with(
            config,
            StateStore::open(Box::new(MemoryStore::new())).expect("store"),
            stop.clone(),
        )
        .await
        .expect("server");
        let core = server.core.clone();
        core.commit(vec![Write::Node(node("n1").build())])
            .await
            .expect("commit");
        let newest = core.store.snapshot().event_span().last;
        assert!(newest > 0);
        let call =
            |q: Vec<(String, String)>, h: HeaderMap| events(State(core.clone()), h, Query(q));
        let above = (newest + 1).to_string();
        for follow in ["true", "false"] {
            let m = bad_request(
                call(
                    pairs(&[("index", &above), ("follow", follow)]),
                    HeaderMap::new(),
                )
                .await,
            );
            assert!(m.contains(&format!("newest, {newest}")), "{m}");
            assert!(m.contains("leave out index"), "{m}");
        }
        // From a Last-Event-ID header too.
        bad_request(call(vec![], last_event_id(&above)).await);
        // The newest itself is fine: the stream waits for the next one.
        let r = call(pairs(&[("index", &newest.to_string())]), HeaderMap::new())
            .await
            .expect("stream");
        assert_eq!(r.status(), StatusCode::OK);
        stop.cancel();
    }
}
