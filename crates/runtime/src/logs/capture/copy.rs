//! The copy from a run's FIFOs to its log, the same in the capture process
//! and in the agent: read both streams, cut them into stamped records,
//! write them through the rotating writer.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::super::format::{LineSplitter, Stream, Timestamp};
use super::super::writer::{self, RotatingWriter};
use super::CaptureSpec;

/// How often the ends of the streams are checked by reading (see
/// [`Source::poll_now`]).
const TICK: Duration = Duration::from_millis(250);

/// The read ends of a run's FIFOs.
pub(super) struct Readers {
    out: pipe::Receiver,
    err: pipe::Receiver,
}

impl Readers {
    /// Opens both FIFOs; `None` when they are gone (the run's output was
    /// copied to its end).
    pub(super) fn open(spec: &CaptureSpec) -> std::io::Result<Option<Readers>> {
        let open = |p| pipe::OpenOptions::new().open_receiver(p);
        match (open(&spec.stdout_fifo), open(&spec.stderr_fifo)) {
            (Ok(out), Ok(err)) => Ok(Some(Readers { out, err })),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

/// One stream's FIFO being copied.
struct Source {
    rx: pipe::Receiver,
    split: LineSplitter,
    open: bool,
    buf: Vec<u8>,
}

impl Source {
    fn new(rx: pipe::Receiver, stream: Stream) -> Source {
        Source {
            rx,
            split: LineSplitter::new(stream),
            open: true,
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Handles the result of a read of `n` bytes into `buf`.
    fn got(&mut self, r: std::io::Result<usize>, out: &mut Vec<u8>) {
        match r {
            Ok(0) => self.close(out),
            Ok(n) => self.split.push(&self.buf[..n], Timestamp::now(), out),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a task's output");
                self.close(out);
            }
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.split.finish(Timestamp::now(), out);
        self.open = false;
    }

    /// A read straight from the fd, whatever tokio thinks of its
    /// readiness: a FIFO opened after its writers never reports that it
    /// has none left, so the end is also checked this way from time to
    /// time.
    fn poll_now(&mut self, out: &mut Vec<u8>) {
        use std::os::fd::AsFd;
        // A few reads at most: a busy stream must not starve the other.
        for _ in 0..4 {
            if !self.open {
                break;
            }
            let r =
                rustix::io::read(self.rx.as_fd(), &mut self.buf[..]).map_err(std::io::Error::from);
            let more = matches!(r, Ok(n) if n > 0);
            self.got(r, out);
            if !more {
                break;
            }
        }
    }
}

/// Copies until every writer of both FIFOs is gone (returns true; partial
/// lines were written as lines) or `stop` resolves (false unless they are
/// gone too; what was read of an unfinished line is written as a `P` part,
/// which the next copier's records continue).
pub(super) async fn copy(
    spec: &CaptureSpec,
    readers: Readers,
    w: &Mutex<RotatingWriter>,
    stop: impl Future<Output = ()>,
) -> bool {
    let mut o = Source::new(readers.out, Stream::Stdout);
    let mut e = Source::new(readers.err, Stream::Stderr);
    let mut records = Vec::new();
    let mut failed = false;
    let mut stopped = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    while (o.open || e.open) && !stopped {
        tokio::select! {
            biased;
            r = o.rx.read(&mut o.buf), if o.open => o.got(r, &mut records),
            r = e.rx.read(&mut e.buf), if e.open => e.got(r, &mut records),
            _ = &mut stop => stopped = true,
            _ = tick.tick() => {}
        }
        // Whatever else is there now, stdout first: the two pipes cannot
        // tell which of their lines came first, but a line written before
        // the other stream's next one is read before it.
        o.poll_now(&mut records);
        e.poll_now(&mut records);
        if stopped {
            o.split.cut(Timestamp::now(), &mut records);
            e.split.cut(Timestamp::now(), &mut records);
        }
        if records.is_empty() {
            continue;
        }
        if let Err(err) = writer::write_shared(w, &records)
            && !failed
        {
            // Keep draining the pipes so the task never blocks on us.
            tracing::warn!(file = %spec.file.display(), error = %err, "cannot write a task's log");
            failed = true;
        }
        records.clear();
    }
    !o.open && !e.open
}
