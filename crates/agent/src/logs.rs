//! Task log files: where they are, and reading them as a stream (the last
//! N lines, then optionally following new output).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub fn log_dir(alloc_dir: &Path) -> PathBuf {
    alloc_dir.join("logs")
}

pub fn log_path(alloc_dir: &Path, task: &str, stream: &str) -> PathBuf {
    log_dir(alloc_dir).join(format!("{task}.{stream}"))
}

/// Byte offset where the last `n` lines of the file begin.
pub async fn tail_offset(path: &Path, n: usize) -> std::io::Result<u64> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0usize;
    let mut buf = vec![0u8; 8192];
    // A trailing newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let step = (pos as usize).min(buf.len());
        pos -= step as u64;
        f.seek(SeekFrom::Start(pos)).await?;
        f.read_exact(&mut buf[..step]).await?;
        for i in (0..step).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// Read from `offset`; with `follow`, keep polling for new bytes until
/// `done()` says the writer is gone and the file is drained.
pub fn stream_file(
    path: PathBuf,
    offset: u64,
    follow: bool,
    done: impl Fn() -> bool + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    tokio::spawn(async move {
        let mut pos = offset;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match read_at(&path, pos, &mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => 0,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if chunk > 0 {
                pos += chunk as u64;
                if tx.send(Ok(buf[..chunk].to_vec())).await.is_err() {
                    return;
                }
                continue;
            }
            // A file that shrank was truncated or replaced: start over.
            if let Ok(m) = tokio::fs::metadata(&path).await
                && m.len() < pos
            {
                pos = 0;
                continue;
            }
            if !follow || done() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn read_at(path: &Path, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(SeekFrom::Start(pos)).await?;
    f.read(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_finds_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.stdout");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 1).await.unwrap(), 5);
        assert_eq!(tail_offset(&p, 2).await.unwrap(), 2);
        assert_eq!(tail_offset(&p, 10).await.unwrap(), 0);
        std::fs::write(&p, "a\nbb\nccc").unwrap();
        assert_eq!(tail_offset(&p, 1).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn follow_sees_appended_output() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.stdout");
        std::fs::write(&p, "one\n").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let mut s = Box::pin(stream_file(p.clone(), 0, true, move || {
            s2.load(std::sync::atomic::Ordering::SeqCst)
        }));
        assert_eq!(s.next().await.unwrap().unwrap(), b"one\n");
        std::fs::write(&p, "one\ntwo\n").unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), b"two\n");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(s.next().await.is_none());
    }
}

/// The CRI log file of a container task (both streams in one file).
pub fn cri_log_path(alloc_dir: &Path, task: &str) -> PathBuf {
    log_dir(alloc_dir).join("cri").join(format!("{task}.log"))
}

/// Turns CRI log lines (`<time> <stream> <P|F> <message>`) back into the
/// task's output for one stream: partial lines (`P`) are joined up to
/// their final (`F`) part.
#[derive(Debug, Default)]
pub struct CriParser {
    want: String,
    buf: Vec<u8>,
}

impl CriParser {
    pub fn new(stream: &str) -> CriParser {
        CriParser {
            want: stream.to_string(),
            buf: Vec::new(),
        }
    }

    /// Feed raw bytes; returns the output bytes they complete.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            let mut parts = line.splitn(4, |b| *b == b' ');
            let (Some(_time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let msg = parts.next().unwrap_or_default();
            if stream != self.want.as_bytes() {
                continue;
            }
            out.extend_from_slice(msg);
            if tag == b"F" {
                out.push(b'\n');
            }
        }
        out
    }
}

/// Read a task's CRI log for one stream: the last `tail` lines (all when
/// `None`), then, with `follow`, what comes next.
pub async fn stream_cri(
    path: PathBuf,
    stream: String,
    tail: Option<usize>,
    follow: bool,
    done: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send> {
    use futures::StreamExt;
    let len = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut head = Vec::new();
    if let Some(n) = tail {
        // Both streams share the file: read generously, keep the last n.
        let from = tail_offset(&path, n.saturating_mul(4).max(n))
            .await
            .unwrap_or(0);
        let mut f = tokio::fs::File::open(&path).await?;
        f.seek(SeekFrom::Start(from)).await?;
        let mut raw = vec![0u8; (len - from) as usize];
        f.read_exact(&mut raw).await?;
        let text = CriParser::new(&stream).feed(&raw);
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let skip = lines.len().saturating_sub(n);
        head = lines[skip..].concat();
    }
    let start = if tail.is_some() { len } else { 0 };
    let mut parser = CriParser::new(&stream);
    let rest = stream_file(path, start, follow || tail.is_none(), move || {
        !follow || done()
    })
    .map(move |chunk| chunk.map(|c| parser.feed(&c)));
    let first = futures::stream::iter(if head.is_empty() {
        vec![]
    } else {
        vec![Ok(head)]
    });
    Ok(first.chain(rest).filter(|c| {
        let keep = !matches!(c, Ok(v) if v.is_empty());
        async move { keep }
    }))
}

#[cfg(test)]
mod cri_tests {
    use super::*;

    #[test]
    fn cri_lines_become_output() {
        let mut p = CriParser::new("stdout");
        let out = p.feed(b"2026-11-25T20:32:05.036626141Z stdout F hello\n2026-11-25T20:32:05.1Z stderr F oops\n2026-11-25T20:32:05.2Z stdout P par");
        assert_eq!(out, b"hello\n");
        let out = p.feed(b"t\n2026-11-25T20:32:05.3Z stdout F ial\n");
        assert_eq!(out, b"partial\n");
        let mut e = CriParser::new("stderr");
        assert_eq!(e.feed(b"2026-11-25T20:32:05.1Z stderr F oops\n"), b"oops\n");
    }

    #[tokio::test]
    async fn tail_of_a_cri_file() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.log");
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!(
                "2026-11-25T20:32:05Z stdout F line {i}\n2026-11-25T20:32:05Z stderr F err {i}\n"
            ));
        }
        std::fs::write(&p, text).unwrap();
        let s = stream_cri(p.clone(), "stdout".into(), Some(2), false, || true)
            .await
            .unwrap();
        let out: Vec<u8> = s.map(|c| c.unwrap()).collect::<Vec<_>>().await.concat();
        assert_eq!(String::from_utf8(out).unwrap(), "line 8\nline 9\n");
        let s = stream_cri(p, "stderr".into(), None, false, || true)
            .await
            .unwrap();
        let out: Vec<u8> = s.map(|c| c.unwrap()).collect::<Vec<_>>().await.concat();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 10);
    }
}
