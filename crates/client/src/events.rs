//! Events (`GET /v1/events`, JSON or server-sent events) and alerts
//! (`GET /v1/alerts`).

use corral_types::{Alert, Event};

use crate::{Client, ClientError};

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// `job`, `allocation`, `node`, `deployment`, `check`, `alert`; all
    /// when empty.
    pub topics: Vec<String>,
    pub jobs: Vec<String>,
    /// Only events with an index above this one (resume).
    pub index: Option<u64>,
    /// At most this many (JSON answers only; the server's default is 100).
    pub limit: Option<usize>,
}

impl EventQuery {
    fn params(&self, follow: bool) -> Vec<(&'static str, String)> {
        let mut p: Vec<(&'static str, String)> = Vec::new();
        for t in &self.topics {
            p.push(("topic", t.clone()));
        }
        for j in &self.jobs {
            p.push(("job", j.clone()));
        }
        if let Some(i) = self.index {
            p.push(("index", i.to_string()));
        }
        if !follow {
            p.push(("follow", "false".into()));
            if let Some(n) = self.limit {
                p.push(("limit", n.to_string()));
            }
        }
        p
    }
}

impl Client {
    /// Recent events as a list: after `q.index` (oldest first) when set,
    /// else the newest ones.
    pub async fn events(&self, q: &EventQuery) -> Result<Vec<Event>, ClientError> {
        self.json(
            self.req(reqwest::Method::GET, "/v1/events")
                .query(&q.params(false)),
        )
        .await
    }

    /// Follow the event stream: every event after `q.index` (or, without
    /// it, from the next one on), then live ones as they happen.
    pub async fn event_stream(&self, q: &EventQuery) -> Result<EventStream, ClientError> {
        let resp = self
            .send(
                self.req(reqwest::Method::GET, "/v1/events")
                    .header("accept", "text/event-stream")
                    .query(&q.params(true)),
            )
            .await?;
        Ok(EventStream {
            url: resp.url().to_string(),
            addr: self.addr.clone(),
            resp,
            buf: Vec::new(),
        })
    }

    /// Firing alerts; with `all`, recently resolved ones too.
    pub async fn alerts(&self, all: bool) -> Result<Vec<Alert>, ClientError> {
        self.json(
            self.req(reqwest::Method::GET, "/v1/alerts")
                .query(&[("all", all)]),
        )
        .await
    }
}

/// Events as the server streams them (server-sent events).
pub struct EventStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    url: String,
    addr: String,
}

impl EventStream {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(msg) = take_message(&mut self.buf) {
                match parse_message(&msg) {
                    Ok(Some(e)) => return Some(Ok(e)),
                    // A keep-alive or comment.
                    Ok(None) => continue,
                    Err(message) => {
                        return Some(Err(ClientError::Protocol {
                            url: self.url.clone(),
                            message,
                        }));
                    }
                }
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => return None,
                Err(source) => {
                    return Some(Err(ClientError::Unreachable {
                        addr: self.addr.clone(),
                        setting: crate::CLI_ADDR_SETTING,
                        source,
                    }));
                }
            }
        }
    }
}

/// Cut the first complete message (up to a blank line) out of `buf`.
fn take_message(buf: &mut Vec<u8>) -> Option<String> {
    let (end, sep) = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, 2))
        .or_else(|| {
            buf.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
        })?;
    let msg: Vec<u8> = buf.drain(..end + sep).take(end).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

/// The event in one SSE message (its `data:` lines); `None` for a message
/// without data (keep-alive, comment).
fn parse_message(msg: &str) -> Result<Option<Event>, String> {
    let mut data = String::new();
    for line in msg.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&data)
        .map(Some)
        .map_err(|e| format!("bad event {data:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_on_blank_lines_and_skip_keepalives() {
        let mut buf = b": keep-alive\n\nid: 7\nevent: node.up\ndata: {\"index\":7,\"state_index\":3,\"time\":1,\"topic\":\"node\",\"type\":\"node.up\",\"message\":\"up\"}\n\nid: 8\ndata: {".to_vec();
        let first = take_message(&mut buf).unwrap_or_default();
        assert_eq!(parse_message(&first), Ok(None));
        let second = take_message(&mut buf).unwrap_or_default();
        let e = parse_message(&second)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no event in {second:?}"));
        assert_eq!((e.index, e.message.as_str()), (7, "up"));
        // The rest waits for more bytes.
        assert_eq!(take_message(&mut buf), None);
        assert_eq!(buf, b"id: 8\ndata: {");
    }
}
