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
