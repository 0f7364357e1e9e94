//! What hyper does not tell the router about a client connection.
//!
//! hyper parses every request (the router has no HTTP parser of its own),
//! but it quietly repairs two request-smuggling shapes instead of refusing
//! them: with both `Content-Length` and `Transfer-Encoding` it drops the
//! length, and it merges repeated identical `Content-Length` headers. The
//! repaired request no longer shows what the client sent, so [`Guard`], a
//! wrapper around the socket, looks at the header *names* of each request
//! head as it passes through (counting `Content-Length`s, noting
//! `Transfer-Encoding`, `Upgrade` and folded lines) and queues those
//! [`HeadFlags`] for the proxy, which refuses the shapes with 400.
//!
//! To know where each head starts, the guard hands hyper one head at a
//! time and, after a head with a `Content-Length`, exactly that many body
//! bytes; the rest waits in the guard. After a chunked body, an upgrade,
//! or the HTTP/2 preface it stops looking (passthrough): the proxy closes
//! an HTTP/1 connection after such a request, so no later head goes
//! unseen.
//!
//! The guard also records the connection's phase for the header-read and
//! idle timeouts, which the connection task enforces (see `listen.rs`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::health::Clock;

/// What one request head contained, by header name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadFlags {
    pub content_lengths: u8,
    pub transfer_encoding: bool,
    pub obs_fold: bool,
    pub upgrade: bool,
}

/// Where a connection is, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Between requests (idle when no response is in flight).
    WaitHead = 0,
    /// A request head has begun and has not ended (or a new connection
    /// has sent nothing yet): the header-read timeout runs.
    InHead = 1,
    /// A request body is being read.
    Body = 2,
    /// HTTP/2, or after an upgrade or a chunked body: idle when no
    /// request is in flight.
    Passthrough = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::WaitHead,
            1 => Phase::InHead,
            2 => Phase::Body,
            _ => Phase::Passthrough,
        }
    }
}

/// Shared by the guard, the proxy's requests on this connection and the
/// connection task.
#[derive(Debug)]
pub struct ConnState {
    heads: Mutex<VecDeque<HeadFlags>>,
    phase: AtomicU8,
    phase_since: AtomicU64,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    pub clock: Clock,
}

impl ConnState {
    pub fn new(clock: Clock) -> Self {
        let now = clock.now_ms();
        ConnState {
            heads: Mutex::new(VecDeque::new()),
            phase: AtomicU8::new(Phase::InHead as u8),
            phase_since: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            clock,
        }
    }

    /// The flags of the next request hyper hands the proxy (HTTP/1 only).
    pub fn take_head(&self) -> Option<HeadFlags> {
        self.heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn push_head(&self, f: HeadFlags) {
        self.heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
    }

    pub fn phase(&self) -> (Phase, u64) {
        (
            Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            self.phase_since.load(Ordering::Relaxed),
        )
    }

    fn set_phase(&self, p: Phase) {
        self.phase_since
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Requests on this connection without a finished response.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When the last response finished.
    pub fn idle_since(&self) -> u64 {
        self.idle_since.load(Ordering::Relaxed)
    }

    pub fn start_request(self: &std::sync::Arc<Self>) -> ConnRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ConnRequest(self.clone())
    }
}

/// A request in flight on a connection, until its response body is done.
#[derive(Debug)]
pub struct ConnRequest(std::sync::Arc<ConnState>);

impl Drop for ConnRequest {
    fn drop(&mut self) {
        self.0
            .idle_since
            .store(self.0.clock.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    Other,
    ContentLength,
    TransferEncoding,
    Upgrade,
}

/// The head being looked at, one byte at a time.
#[derive(Debug)]
struct HeadScan {
    /// Complete lines seen (the request line is the first).
    lines: u32,
    /// Bytes of the current line, `\r` not counted.
    pos: usize,
    in_name: bool,
    name: [u8; 20],
    name_len: usize,
    header: Header,
    length: Option<u64>,
    first_length: Option<u64>,
    start: [u8; 16],
    start_len: usize,
    flags: HeadFlags,
}

impl HeadScan {
    fn new() -> Self {
        HeadScan {
            lines: 0,
            pos: 0,
            in_name: false,
            name: [0; 20],
            name_len: 0,
            header: Header::Other,
            length: Some(0),
            first_length: None,
            start: [0; 16],
            start_len: 0,
            flags: HeadFlags::default(),
        }
    }

    /// Consumes bytes of the head; `Some(n)`: the head ended after `n`.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\n' => {
                    if self.pos == 0 {
                        if self.lines == 0 {
                            continue; // empty lines before the request line
                        }
                        return Some(i + 1);
                    }
                    self.end_line();
                }
                b'\r' => {}
                _ => {
                    if self.lines == 0 {
                        if self.start_len < self.start.len() {
                            self.start[self.start_len] = b;
                            self.start_len += 1;
                        }
                    } else {
                        self.header_byte(b);
                    }
                    self.pos += 1;
                }
            }
        }
        None
    }

    fn header_byte(&mut self, b: u8) {
        if self.pos == 0 {
            if b == b' ' || b == b'\t' {
                self.flags.obs_fold = true;
            }
            self.in_name = true;
            self.name_len = 0;
            self.header = Header::Other;
            self.length = Some(0);
        }
        if self.in_name {
            if b == b':' {
                self.in_name = false;
                self.header = match &self.name[..self.name_len] {
                    b"content-length" => Header::ContentLength,
                    b"transfer-encoding" => Header::TransferEncoding,
                    b"upgrade" => Header::Upgrade,
                    _ => Header::Other,
                };
            } else if self.name_len < self.name.len() {
                self.name[self.name_len] = b.to_ascii_lowercase();
                self.name_len += 1;
            } else {
                self.name_len = 0; // too long to be one we look for
                self.name[0] = b'-';
                self.name_len = 1;
            }
        } else if self.header == Header::ContentLength {
            self.length = match (b, self.length) {
                (b'0'..=b'9', Some(n)) => n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(b - b'0'))),
                (b' ' | b'\t', n) => n,
                _ => None,
            };
        }
    }

    fn end_line(&mut self) {
        if self.lines > 0 {
            match self.header {
                Header::ContentLength => {
                    self.flags.content_lengths = self.flags.content_lengths.saturating_add(1);
                    if self.first_length.is_none() {
                        self.first_length = self.length;
                    }
                }
                Header::TransferEncoding => self.flags.transfer_encoding = true,
                Header::Upgrade => self.flags.upgrade = true,
                Header::Other => {}
            }
        }
        self.lines += 1;
        self.pos = 0;
        self.in_name = false;
        self.header = Header::Other;
    }
}

#[derive(Debug)]
enum Scan {
    Head(Box<HeadScan>),
    Body(u64),
    Passthrough,
}

/// The client socket, seen through the framing guard.
#[derive(Debug)]
pub struct Guard<IO> {
    io: IO,
    scan: Scan,
    pending: BytesMut,
    state: std::sync::Arc<ConnState>,
}

impl<IO> Guard<IO> {
    pub fn new(io: IO, state: std::sync::Arc<ConnState>) -> Self {
        Guard {
            io,
            scan: Scan::Head(Box::new(HeadScan::new())),
            pending: BytesMut::new(),
            state,
        }
    }

    /// Looks at `data` (bytes about to be handed to hyper); returns how
    /// many of them belong to the current head or body (at least one).
    fn scan(&mut self, data: &[u8]) -> usize {
        match &mut self.scan {
            Scan::Passthrough => data.len(),
            Scan::Body(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                if *left == 0 {
                    self.scan = Scan::Head(Box::new(HeadScan::new()));
                    self.state.set_phase(Phase::WaitHead);
                }
                n
            }
            Scan::Head(h) => {
                if self.state.phase().0 == Phase::WaitHead {
                    self.state.set_phase(Phase::InHead);
                }
                let Some(n) = h.feed(data) else {
                    return data.len();
                };
                let h2 = h.start[..h.start_len].starts_with(b"PRI * HTTP/2");
                let connect = h.start[..h.start_len].starts_with(b"CONNECT ");
                let flags = h.flags;
                let length = h.first_length.unwrap_or(0);
                if h2 {
                    self.scan = Scan::Passthrough;
                    self.state.set_phase(Phase::Passthrough);
                    return data.len();
                }
                self.state.push_head(flags);
                if flags.transfer_encoding || flags.upgrade || connect {
                    self.scan = Scan::Passthrough;
                    self.state.set_phase(Phase::Passthrough);
                } else if length > 0 {
                    self.scan = Scan::Body(length);
                    self.state.set_phase(Phase::Body);
                } else {
                    self.scan = Scan::Head(Box::new(HeadScan::new()));
                    self.state.set_phase(Phase::WaitHead);
                }
                n
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.scan, Scan::Passthrough) && this.pending.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let start = buf.filled().len();
        let from_pending = !this.pending.is_empty();
        if from_pending {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
        } else {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        }
        let got = buf.filled().len() - start;
        if got == 0 {
            return Poll::Ready(Ok(()));
        }
        let used = this.scan(&buf.filled()[start..]).min(got);
        if from_pending {
            this.pending.advance(used);
        } else if used < got {
            this.pending
                .extend_from_slice(&buf.filled()[start + used..start + got]);
        }
        buf.set_filled(start + used);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Vec<HeadFlags> {
        let state = std::sync::Arc::new(ConnState::new(Clock::new()));
        let mut g = Guard::new((), state.clone());
        let mut rest = input;
        while !rest.is_empty() {
            let n = g.scan(rest);
            assert!(n > 0);
            rest = &rest[n..];
        }
        std::iter::from_fn(|| state.take_head()).collect()
    }

    #[test]
    fn heads_and_bodies_are_told_apart() {
        let body = "GET / HTTP/1.1\r\nContent-Length: 1\r\n\r\n";
        let input = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: b\r\n\r\n",
            body.len()
        );
        let flags = scan_all(input.as_bytes());
        // The body's fake head is skipped: one head with one length, then
        // the real second head.
        assert_eq!(flags.len(), 2, "{flags:?}");
        assert_eq!(flags[0].content_lengths, 1);
        assert_eq!(flags[1].content_lengths, 0);
    }

    #[test]
    fn smuggling_shapes_are_flagged() {
        let f = scan_all(b"POST / HTTP/1.1\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(f[0].content_lengths, 2);
        let f =
            scan_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert!(f[0].transfer_encoding);
        assert_eq!(f[0].content_lengths, 1);
        let f = scan_all(b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n");
        assert!(f[0].obs_fold);
        let f = scan_all(b"\r\nGET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(f, vec![HeadFlags::default()]);
    }

    #[test]
    fn http2_preface_is_passed_through() {
        let f = scan_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        assert!(f.is_empty());
    }
}
