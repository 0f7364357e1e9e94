//! The exec driver's capture of a task's stdout and stderr.
//!
//! Each stream is a FIFO in the log directory. The task gets it opened
//! read-write as its fd 1 or 2, the agent reads it, stamps each line with
//! the time and writes it to the task's log through the rotating
//! [`writer`](super::writer). Because the task itself holds the FIFO open
//! for reading too, its writes never fail when the agent is away: they
//! wait in the pipe (64 KiB; then the task blocks) until a restarted agent
//! opens the FIFO again ([`reattach`]). The copy ends when every writer is
//! gone (the task and whatever it started), and the FIFOs are removed.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use corral_types::LogPolicy;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::format::{LineSplitter, Stream, Timestamp};
use super::writer::{self, RotatingWriter};

/// Where a run's output goes; kept in the exec handle so that a restarted
/// agent can reattach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    /// The task's current log file.
    pub file: PathBuf,
    pub stdout_fifo: PathBuf,
    pub stderr_fifo: PathBuf,
    pub policy: LogPolicy,
}

impl CaptureSpec {
    /// For a run of `task` starting at `start` (which names its FIFOs).
    pub fn new(alloc_dir: &Path, task: &str, start: Timestamp, policy: LogPolicy) -> CaptureSpec {
        let dir = super::log_dir(alloc_dir);
        CaptureSpec {
            file: super::log_file(alloc_dir, task),
            stdout_fifo: dir.join(format!(".{task}.{}.stdout", start.0)),
            stderr_fifo: dir.join(format!(".{task}.{}.stderr", start.0)),
            policy,
        }
    }
}

/// Resolves once a run's output is all in its log.
#[derive(Debug, Clone)]
pub struct Drained(watch::Receiver<bool>);

impl Drained {
    /// Waits until the copy ended, at most `timeout` (something the task
    /// started may keep its output open). Returns whether it ended.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.0.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await,
            Ok(Ok(_))
        )
    }
}

/// Copies running in this process, by stdout FIFO.
static ACTIVE: LazyLock<Mutex<HashMap<PathBuf, Drained>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn active() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Drained>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(std::io::Error::from)
}

/// The task's ends of the FIFOs (stdout, stderr), and the copy's end.
pub struct Capture {
    pub stdout: File,
    pub stderr: File,
    pub drained: Drained,
}

/// Creates the FIFOs and starts copying; give `stdout` and `stderr` to the
/// task (and drop them here once it started). Needs a tokio runtime.
pub fn start(spec: &CaptureSpec) -> std::io::Result<Capture> {
    if let Some(dir) = spec.file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let w = writer::shared(&spec.file, spec.policy)?;
    mkfifo(&spec.stdout_fifo)?;
    mkfifo(&spec.stderr_fifo)?;
    // Readers first: opened while no writer exists, they report the end
    // once every writer that came later is gone.
    let out_rx = pipe::OpenOptions::new().open_receiver(&spec.stdout_fifo)?;
    let err_rx = pipe::OpenOptions::new().open_receiver(&spec.stderr_fifo)?;
    let open_rw = |p: &Path| std::fs::OpenOptions::new().read(true).write(true).open(p);
    let stdout = open_rw(&spec.stdout_fifo)?;
    let stderr = open_rw(&spec.stderr_fifo)?;
    let drained = spawn_copy(spec.clone(), out_rx, err_rx, w);
    Ok(Capture {
        stdout,
        stderr,
        drained,
    })
}

/// After an agent restart: copies again from a run's FIFOs. `None` when
/// they are gone (the run ended and its output was copied).
pub fn reattach(spec: &CaptureSpec) -> std::io::Result<Option<Drained>> {
    if let Some(d) = active().get(&spec.stdout_fifo) {
        return Ok(Some(d.clone()));
    }
    if !spec.stdout_fifo.exists() || !spec.stderr_fifo.exists() {
        return Ok(None);
    }
    let w = writer::shared(&spec.file, spec.policy)?;
    let out_rx = pipe::OpenOptions::new().open_receiver(&spec.stdout_fifo)?;
    let err_rx = pipe::OpenOptions::new().open_receiver(&spec.stderr_fifo)?;
    Ok(Some(spawn_copy(spec.clone(), out_rx, err_rx, w)))
}

/// Removes the FIFOs of a run nobody copies from any more (its task died
/// while the agent was away).
pub fn forget(spec: &CaptureSpec) {
    if active().contains_key(&spec.stdout_fifo) {
        return;
    }
    for p in [&spec.stdout_fifo, &spec.stderr_fifo] {
        let _ = std::fs::remove_file(p);
    }
}

fn spawn_copy(
    spec: CaptureSpec,
    out: pipe::Receiver,
    err: pipe::Receiver,
    w: Arc<Mutex<RotatingWriter>>,
) -> Drained {
    let (tx, rx) = watch::channel(false);
    let drained = Drained(rx);
    active().insert(spec.stdout_fifo.clone(), drained.clone());
    tokio::spawn(async move {
        copy(&spec, out, err, &w).await;
        for p in [&spec.stdout_fifo, &spec.stderr_fifo] {
            let _ = std::fs::remove_file(p);
        }
        active().remove(&spec.stdout_fifo);
        tx.send_replace(true);
    });
    drained
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
    /// readiness: a FIFO opened when it had no writer never reports that
    /// it has none, so the end is also checked this way from time to time.
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

async fn copy(
    spec: &CaptureSpec,
    out: pipe::Receiver,
    err: pipe::Receiver,
    w: &Mutex<RotatingWriter>,
) {
    let mut o = Source::new(out, Stream::Stdout);
    let mut e = Source::new(err, Stream::Stderr);
    let mut records = Vec::new();
    let mut failed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while o.open || e.open {
        tokio::select! {
            biased;
            r = o.rx.read(&mut o.buf), if o.open => o.got(r, &mut records),
            r = e.rx.read(&mut e.buf), if e.open => e.got(r, &mut records),
            _ = tick.tick() => {}
        }
        // Whatever else is there now, stdout first: the two pipes cannot
        // tell which of their lines came first, but a line written before
        // the other stream's next one is read before it.
        o.poll_now(&mut records);
        e.poll_now(&mut records);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::units::Bytes;
    use std::io::Write;

    fn spec(dir: &Path) -> CaptureSpec {
        CaptureSpec::new(
            dir,
            "app",
            Timestamp(42),
            LogPolicy {
                max_size: Bytes(1_000_000),
                max_files: 2,
            },
        )
    }

    fn messages(path: &Path) -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let r = super::super::format::parse_record(l.as_bytes()).unwrap();
                (
                    r.stream.as_str().to_string(),
                    String::from_utf8_lossy(r.message).into_owned(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn copies_both_streams_until_the_writers_are_gone() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let mut c = start(&s).unwrap();
        c.stdout.write_all(b"hello\nwor").unwrap();
        c.stderr.write_all(b"oops\n").unwrap();
        c.stdout.write_all(b"ld\nno newline").unwrap();
        assert!(!c.drained.wait(Duration::from_millis(200)).await);
        let drained = c.drained.clone();
        drop(c);
        assert!(drained.wait(Duration::from_secs(5)).await);
        let mut got = messages(&s.file);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("stderr".into(), "oops".into()),
                ("stdout".into(), "hello".into()),
                ("stdout".into(), "no newline".into()),
                ("stdout".into(), "world".into()),
            ]
        );
        assert!(!s.stdout_fifo.exists() && !s.stderr_fifo.exists());
        // Gone for good: nothing to reattach to.
        assert!(reattach(&s).unwrap().is_none());
    }

    #[tokio::test]
    async fn reattach_reads_what_was_written_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        std::fs::create_dir_all(s.file.parent().unwrap()).unwrap();
        // A task that outlived its agent: FIFOs exist, it holds them open
        // read-write and wrote while nobody read.
        mkfifo(&s.stdout_fifo).unwrap();
        mkfifo(&s.stderr_fifo).unwrap();
        let open_rw = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap()
        };
        let (mut out, err) = (open_rw(&s.stdout_fifo), open_rw(&s.stderr_fifo));
        out.write_all(b"while away\n").unwrap();
        let drained = reattach(&s).unwrap().unwrap();
        // Asking again in the same process gives the same copy.
        assert!(reattach(&s).unwrap().is_some());
        out.write_all(b"after\n").unwrap();
        drop((out, err));
        assert!(drained.wait(Duration::from_secs(5)).await);
        assert_eq!(
            messages(&s.file),
            vec![
                ("stdout".into(), "while away".into()),
                ("stdout".into(), "after".into())
            ]
        );
    }

    #[tokio::test]
    async fn reattach_to_fifos_nobody_writes_ends() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        std::fs::create_dir_all(s.file.parent().unwrap()).unwrap();
        mkfifo(&s.stdout_fifo).unwrap();
        mkfifo(&s.stderr_fifo).unwrap();
        let drained = reattach(&s).unwrap().unwrap();
        assert!(drained.wait(Duration::from_secs(5)).await);
        assert!(!s.stdout_fifo.exists());
    }
}
