//! Reading a task's log: what is on disk (all of it, the last `tail`
//! lines, the lines since a time, or only the previous run), then with
//! `follow` what comes next, across rotations and restarts (a restart
//! appends to the same file), until the allocation is gone. A line a file
//! ends inside (an older agent's, or a container's) goes on in the next
//! file (`carry`).

use std::collections::VecDeque;
use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::format::{Joiner, Line, MAX_LINE, Stream, Timestamp, parse_record};
use super::{ChainFile, LogError, chain};

mod carry;

/// How often a follower looks for new output.
const POLL: Duration = Duration::from_millis(250);
/// Bytes read at a time, and sent at a time.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streams {
    Stdout,
    Stderr,
    #[default]
    Both,
}

impl Streams {
    pub fn parse(s: &str) -> Option<Streams> {
        match s {
            "stdout" => Some(Streams::Stdout),
            "stderr" => Some(Streams::Stderr),
            "both" | "all" => Some(Streams::Both),
            _ => None,
        }
    }

    fn accepts(self, s: Stream) -> bool {
        match self {
            Streams::Both => true,
            Streams::Stdout => s == Stream::Stdout,
            Streams::Stderr => s == Stream::Stderr,
        }
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub streams: Streams,
    /// Only the last `n` lines (of what the other filters let through).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Only the run before the last start of the task.
    pub previous: bool,
    /// Keep going with new output until the allocation is gone.
    pub follow: bool,
    /// Prefix each line with the time it was written.
    pub timestamps: bool,
}

/// `--since`: a duration back from `now` (`10m`, `1h30m`) or a time
/// (`2026-11-25T20:32:05Z`).
pub fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Some(t) = Timestamp::parse(s) {
        return Ok(t);
    }
    corral_types::units::parse_duration(s)
        .map(|d| now.minus(d.as_std()))
        .map_err(|_| {
            format!(
                "since must be a duration like 10m or a time like 2026-11-25T20:32:05Z, found {s:?}"
            )
        })
}

/// Which lines go out, and how.
#[derive(Debug, Clone)]
struct Filter {
    streams: Streams,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
    timestamps: bool,
}

impl Filter {
    fn accepts(&self, l: &Line) -> bool {
        self.streams.accepts(l.stream)
            && self.from.is_none_or(|f| l.time >= f)
            && self.until.is_none_or(|u| l.time < u)
    }

    /// Past the end of the window: nothing later can be wanted.
    fn past(&self, l: &Line) -> bool {
        self.until.is_some_and(|u| l.time >= u)
    }

    fn render(&self, l: &Line, out: &mut Vec<u8>) {
        if self.timestamps {
            out.extend_from_slice(l.time.to_string().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&l.text);
        out.push(b'\n');
    }
}

type Done = Arc<dyn Fn() -> bool + Send + Sync>;
type Chunks = mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// The log of `task` in the allocation at `alloc_dir`, as a stream of
/// output chunks (whole lines). `done` tells a follower that the
/// allocation is gone: it then stops once it has read everything.
pub fn stream(alloc_dir: &Path, task: &str, q: &Query, done: Done) -> Result<Chunks, LogError> {
    let mut filter = Filter {
        streams: q.streams,
        from: q.since,
        until: None,
        timestamps: q.timestamps,
    };
    if q.previous {
        let starts = super::starts(alloc_dir, task);
        let [.., prev, last] = starts.as_slice() else {
            return Err(LogError::NoPrevious {
                task: task.to_string(),
            });
        };
        filter.from = Some(filter.from.map_or(*prev, |f| f.max(*prev)));
        filter.until = Some(*last);
    }
    let current = super::log_file(alloc_dir, task);
    // Opened now, so that a rotation from here on loses nothing.
    let files = open_chain(&current).map_err(|source| LogError::Io {
        what: "cannot read the log",
        path: current.clone(),
        source,
    })?;
    let max_seq_seen = max_seq(&files.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
    let (tx, rx) = mpsc::channel(16);
    let follow = q.follow && !q.previous;
    let tail = q.tail;
    tokio::spawn(async move {
        let f2 = filter.clone();
        let tx2 = tx.clone();
        let history = tokio::task::spawn_blocking(move || history(files, &f2, tail, &tx2)).await;
        let (held, joiner) = match history {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
        };
        if follow {
            let mut f = Follower {
                current,
                filter,
                joiner,
                held,
                max_seq_seen,
                tx,
            };
            if let Err(e) = f.run(done).await {
                let _ = f.tx.send(Err(e)).await;
            }
        }
    });
    Ok(rx)
}

fn max_seq(files: &[ChainFile]) -> u64 {
    files.iter().filter_map(|f| f.seq).max().unwrap_or(0)
}

/// The files of the chain, opened. A rotation between listing and opening
/// would pair a name with another file's contents (the renamed file then
/// never read, the new one read twice): the inodes are compared and the
/// chain listed again when one moved.
fn open_chain(current: &Path) -> std::io::Result<Vec<(ChainFile, File)>> {
    use std::os::unix::fs::MetadataExt;
    let mut attempts = 0;
    'list: loop {
        attempts += 1;
        let mut out = Vec::new();
        for f in chain(current)? {
            match File::open(&f.path) {
                Ok(file) => {
                    if file.metadata()?.ino() != f.ino && attempts < 10 {
                        continue 'list;
                    }
                    out.push((f, file));
                }
                // Rotated away or pruned meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(out);
    }
}

/// The file a follower reads, and how far.
struct Held {
    file: File,
    ino: u64,
    /// Bytes read from it.
    pos: u64,
    /// Read but not yet a whole line.
    pending: Vec<u8>,
}

/// Feeds the records of `f` from `pos` to its end through `joiner`, and
/// each line it completes to `each` (which may stop the scan). Returns the
/// position after the last whole record read, and whether `each` stopped.
fn scan(
    f: &File,
    pos: u64,
    joiner: &mut Joiner,
    mut each: impl FnMut(Line) -> ControlFlow<()>,
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0u8; CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut read_pos = pos;
    let mut done_pos = pos;
    loop {
        let n = f.read_at(&mut buf, read_pos)?;
        if n == 0 {
            return Ok((done_pos, false));
        }
        read_pos += n as u64;
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + i];
            start += i + 1;
            if let Some(l) = parse_record(line).and_then(|r| joiner.push(&r))
                && each(l).is_break()
            {
                return Ok((done_pos + start as u64, true));
            }
        }
        done_pos += start as u64;
        pending.drain(..start);
        if pending.len() > MAX_LINE + CHUNK {
            // Not a log: skip what cannot be a record.
            done_pos += pending.len() as u64;
            pending.clear();
        }
    }
}

/// The time of the first or the last record of a file, if it has one.
fn edge_time(f: &File, last: bool) -> Option<Timestamp> {
    let len = f.metadata().ok()?.len();
    let from = if last {
        len.saturating_sub(CHUNK as u64)
    } else {
        0
    };
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let n = f.read_at(&mut buf, from).ok()?;
    let buf = &buf[..n];
    let line = if last {
        // The text after the last newline is not a whole record.
        let whole = &buf[..buf.iter().rposition(|b| *b == b'\n')?];
        whole.rsplit(|b| *b == b'\n').next()?
    } else {
        buf.split(|b| *b == b'\n').next()?
    };
    parse_record(line).map(|r| r.time)
}

/// Sends what is on disk; returns where a follower goes on, or `None` when
/// the reader is gone or the window (`--previous`) is complete.
fn history(
    files: Vec<(ChainFile, File)>,
    filter: &Filter,
    tail: Option<usize>,
    tx: &mpsc::Sender<std::io::Result<Vec<u8>>>,
) -> std::io::Result<Option<(Option<Held>, Joiner)>> {
    let n_files = files.len();
    let mut held = None;
    let hold = |cf: &ChainFile, file: &File, pos: u64| -> std::io::Result<Held> {
        Ok(Held {
            file: file.try_clone()?,
            ino: cf.ino,
            pos,
            pending: Vec::new(),
        })
    };
    // Files wholly before or after the window need no scan.
    let before = |file: &File| {
        filter
            .from
            .is_some_and(|from| edge_time(file, true).is_some_and(|t| t < from))
    };
    let after = |file: &File| {
        filter
            .until
            .is_some_and(|until| edge_time(file, false).is_some_and(|t| t >= until))
    };
    match tail {
        Some(n) => {
            let mut need = n;
            let mut out: VecDeque<Vec<u8>> = VecDeque::new();
            let mut follow_joiner = Joiner::default();
            for (i, (cf, file)) in files.iter().enumerate().rev() {
                let newest = i + 1 == n_files;
                if !newest && (need == 0 || before(file)) {
                    break;
                }
                if !newest && after(file) {
                    continue;
                }
                let mut ring: VecDeque<Vec<u8>> = VecDeque::new();
                // A line the previous file left open ends in this one.
                let mut joiner = match i.checked_sub(1) {
                    Some(prev) => carry::open_parts(&files[prev].1)?,
                    None => Joiner::default(),
                };
                let (pos, _) = scan(file, 0, &mut joiner, |l| {
                    if filter.past(&l) {
                        return ControlFlow::Break(());
                    }
                    if need > 0 && filter.accepts(&l) {
                        let mut r = Vec::new();
                        filter.render(&l, &mut r);
                        ring.push_back(r);
                        if ring.len() > need {
                            ring.pop_front();
                        }
                    }
                    ControlFlow::Continue(())
                })?;
                if newest {
                    held = Some(hold(cf, file, pos)?);
                    follow_joiner = joiner;
                }
                need -= ring.len();
                for r in ring.into_iter().rev() {
                    out.push_front(r);
                }
            }
            let text: Vec<u8> = out.into_iter().flatten().collect();
            if !text.is_empty() && tx.blocking_send(Ok(text)).is_err() {
                return Ok(None);
            }
            if filter.until.is_some() {
                return Ok(None);
            }
            Ok(Some((held, follow_joiner)))
        }
        None => {
            let mut joiner = Joiner::default();
            let mut out = Vec::new();
            let mut skipped = false;
            for (i, (cf, file)) in files.iter().enumerate() {
                let newest = i + 1 == n_files;
                if !newest && (before(file) || after(file)) {
                    skipped = true;
                    continue;
                }
                if std::mem::take(&mut skipped) && i > 0 {
                    // What the skipped file left open ends in this one.
                    joiner = carry::open_parts(&files[i - 1].1)?;
                }
                let mut gone = false;
                let (pos, stopped) = scan(file, 0, &mut joiner, |l| {
                    if filter.past(&l) {
                        return ControlFlow::Break(());
                    }
                    if filter.accepts(&l) {
                        filter.render(&l, &mut out);
                        if out.len() >= CHUNK {
                            gone = tx.blocking_send(Ok(std::mem::take(&mut out))).is_err();
                            if gone {
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    ControlFlow::Continue(())
                })?;
                if gone {
                    return Ok(None);
                }
                if stopped {
                    break;
                }
                if newest {
                    held = Some(hold(cf, file, pos)?);
                }
            }
            if !out.is_empty() && tx.blocking_send(Ok(out)).is_err() {
                return Ok(None);
            }
            if filter.until.is_some() {
                return Ok(None);
            }
            Ok(Some((held, joiner)))
        }
    }
}

struct Follower {
    current: PathBuf,
    filter: Filter,
    joiner: Joiner,
    held: Option<Held>,
    /// The newest rotated file seen while the held file was current: if
    /// the held file is rotated and deleted before we look, what follows
    /// it is newer than this.
    max_seq_seen: u64,
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl Follower {
    async fn run(&mut self, done: Done) -> std::io::Result<()> {
        loop {
            // Whatever was written before the allocation went away is
            // read before the end.
            let finishing = done();
            if !self.drain().await? {
                return Ok(());
            }
            let files = chain(&self.current)?;
            let next = match &self.held {
                None => files.into_iter().next(),
                Some(h) => match files.iter().position(|f| f.ino == h.ino) {
                    // Still the current file: nothing newer.
                    Some(i) if files[i].seq.is_none() => {
                        self.max_seq_seen = max_seq(&files).max(self.max_seq_seen);
                        None
                    }
                    // Rotated: the file after it (if the new current file
                    // exists yet).
                    Some(i) => files.into_iter().nth(i + 1),
                    None => {
                        let after = self.max_seq_seen;
                        files.into_iter().find(|f| f.seq.is_none_or(|s| s > after))
                    }
                },
            };
            match next {
                Some(f) => {
                    // Last writes to the old file first.
                    if !self.drain().await? {
                        return Ok(());
                    }
                    match File::open(&f.path) {
                        Ok(file) => {
                            // The joiner goes on: the old file may end
                            // inside a line this one ends (see `carry`).
                            self.held = Some(Held {
                                file,
                                ino: f.ino,
                                pos: 0,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                None if finishing => return Ok(()),
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = self.tx.closed() => return Ok(()),
                    }
                }
            }
        }
    }

    /// Reads the held file to its end and sends its lines; false when
    /// nobody listens any more.
    async fn drain(&mut self) -> std::io::Result<bool> {
        let Some(h) = self.held.as_mut() else {
            return Ok(true);
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = h.file.read_at(&mut buf, h.pos)?;
            if n == 0 {
                return Ok(true);
            }
            h.pos += n as u64;
            h.pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            let mut start = 0;
            while let Some(i) = h.pending[start..].iter().position(|b| *b == b'\n') {
                let line = &h.pending[start..start + i];
                start += i + 1;
                if let Some(l) = parse_record(line).and_then(|r| self.joiner.push(&r))
                    && self.filter.accepts(&l)
                {
                    self.filter.render(&l, &mut out);
                }
            }
            h.pending.drain(..start);
            if h.pending.len() > MAX_LINE + CHUNK {
                h.pending.clear();
            }
            if !out.is_empty() && self.tx.send(Ok(out)).await.is_err() {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
