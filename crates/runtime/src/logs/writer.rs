//! The exec driver's log writer: appends whole records to a task's
//! current log file and rotates it before a record would take it past
//! `max_size`, but never inside a line: the `P` parts of a line and its
//! final part stay in one file, so a reader of one file (`--tail`, `-f`)
//! sees the line whole. One writer per file in this process ([`shared`]),
//! so the runs of a task (and both streams of a run) never rotate the same
//! file from two places.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use corral_types::LogPolicy;

use super::format::{MAX_LINE, Stream, parse_record};

#[derive(Debug)]
pub struct RotatingWriter {
    path: PathBuf,
    policy: LogPolicy,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// Bytes of the line each stream (stdout, stderr) has begun with `P`
    /// parts and not ended yet.
    open: [u64; 2],
}

impl RotatingWriter {
    /// Opens (creates) the current file of the log at `path` for
    /// appending.
    pub fn open(path: &Path, policy: LogPolicy) -> std::io::Result<RotatingWriter> {
        let mut w = RotatingWriter {
            path: path.to_path_buf(),
            policy,
            file: None,
            size: 0,
            open: [0; 2],
        };
        w.reopen()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_policy(&mut self, policy: LogPolicy) {
        self.policy = policy;
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// Writes complete records (each ending in a newline). The file is
    /// rotated between lines, so each file stays within `max_size` unless
    /// a line that was being written when it got there, or a single
    /// record, is larger.
    pub fn write_records(&mut self, records: &[u8]) -> std::io::Result<()> {
        for rec in records.split_inclusive(|b| *b == b'\n') {
            self.write_record(rec)?;
        }
        Ok(())
    }

    fn write_record(&mut self, rec: &[u8]) -> std::io::Result<()> {
        let len = rec.len() as u64;
        if self.size > 0 && self.size + len > self.policy.max_size.0 && self.between_lines() {
            self.rotate()?;
        }
        // Someone removed or rotated the file behind our back: follow the
        // name, not the old inode.
        if self.file.is_none() || !self.path.exists() {
            self.reopen()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("log file not open"));
        };
        f.write_all(rec)?;
        self.size += len;
        self.track(rec);
        Ok(())
    }

    /// Whether no stream is inside a line, so a rotation cuts none. A
    /// line already past [`MAX_LINE`] does not hold the rotation back:
    /// readers cut it there anyway, and the file must not grow forever.
    fn between_lines(&self) -> bool {
        self.open.iter().all(|n| *n == 0 || *n >= MAX_LINE as u64)
    }

    fn track(&mut self, rec: &[u8]) {
        let Some(r) = parse_record(rec.strip_suffix(b"\n").unwrap_or(rec)) else {
            return;
        };
        let open = &mut self.open[match r.stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }];
        *open = if r.partial {
            *open + r.message.len() as u64
        } else {
            0
        };
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        match super::rotate(&self.path, self.policy.max_files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.reopen()
    }
}

static WRITERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<RotatingWriter>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer of the log at `path` in this process, opened on first use;
/// the policy of the newest caller applies.
pub fn shared(path: &Path, policy: LogPolicy) -> std::io::Result<Arc<Mutex<RotatingWriter>>> {
    let mut all = lock(&WRITERS);
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(w) = all.get(path).and_then(Weak::upgrade) {
        lock(&w).set_policy(policy);
        return Ok(w);
    }
    let w = Arc::new(Mutex::new(RotatingWriter::open(path, policy)?));
    all.insert(path.to_path_buf(), Arc::downgrade(&w));
    Ok(w)
}

/// Writes records through a shared writer.
pub fn write_shared(w: &Mutex<RotatingWriter>, records: &[u8]) -> std::io::Result<()> {
    lock(w).write_records(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::chain;
    use corral_types::units::Bytes;

    fn policy(max_size: u64, max_files: u32) -> LogPolicy {
        LogPolicy {
            max_size: Bytes(max_size),
            max_files,
        }
    }

    #[test]
    fn rotates_at_the_size_and_keeps_max_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("logs/app.log");
        let mut w = RotatingWriter::open(&path, policy(100, 3)).unwrap();
        // 25-byte records: four fit in 100 bytes.
        for i in 0..30 {
            w.write_records(format!("record number {i:03} abcde\n").as_bytes())
                .unwrap();
        }
        let files = chain(&path).unwrap();
        assert_eq!(
            files.iter().map(|f| f.seq).collect::<Vec<_>>(),
            vec![Some(6), Some(7), None],
            "{files:?}"
        );
        for f in &files {
            let len = std::fs::metadata(&f.path).unwrap().len();
            assert!(len <= 100, "{} is {len} bytes", f.path.display());
        }
        // Nothing lost inside what is kept: the newest 10 records, in order.
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(&f.path).unwrap())
            .collect();
        let nums: Vec<u32> = text.lines().map(|l| l[14..17].parse().unwrap()).collect();
        assert_eq!(nums, (20..30).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_larger_than_the_size_gets_its_own_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let mut w = RotatingWriter::open(&path, policy(10, 5)).unwrap();
        w.write_records(b"short\nthis one is long\nx\n").unwrap();
        let texts: Vec<String> = chain(&path)
            .unwrap()
            .iter()
            .map(|f| std::fs::read_to_string(&f.path).unwrap())
            .collect();
        assert_eq!(texts, vec!["short\n", "this one is long\n", "x\n"]);
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        std::fs::write(&path, "0123456789\n").unwrap();
        let mut w = RotatingWriter::open(&path, policy(15, 2)).unwrap();
        w.write_records(b"abcdef\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcdef\n");
        assert_eq!(
            std::fs::read_to_string(d.path().join("app.log.1")).unwrap(),
            "0123456789\n"
        );
    }

    /// Records of `lines` as the capture makes them (40 KB lines: two `P`
    /// parts and a final one), with a short stderr line between the parts
    /// of the third.
    fn long_line_records() -> Vec<u8> {
        use crate::logs::format::{LineSplitter, Timestamp};
        let mut out = Vec::new();
        let mut split = LineSplitter::new(Stream::Stdout);
        let mut err = LineSplitter::new(Stream::Stderr);
        for i in 0..6u8 {
            let line = vec![b'a' + i; 40_000];
            split.push(&line[..30_000], Timestamp(i.into()), &mut out);
            if i == 2 {
                err.push(b"between\n", Timestamp(9), &mut out);
            }
            split.push(&line[30_000..], Timestamp(i.into()), &mut out);
            split.push(b"\n", Timestamp(i.into()), &mut out);
        }
        out
    }

    #[test]
    fn never_rotates_inside_a_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let mut w = RotatingWriter::open(&path, policy(60_000, 10)).unwrap();
        // One record at a time, as reads may end between a line's parts.
        for rec in long_line_records().split_inclusive(|b| *b == b'\n') {
            w.write_records(rec).unwrap();
        }
        let files = chain(&path).unwrap();
        assert!(files.len() >= 3, "rotated: {files:?}");
        let mut lines = Vec::new();
        for f in &files {
            // Each file alone joins into whole lines, nothing left open.
            let text = std::fs::read(&f.path).unwrap();
            let mut j = crate::logs::format::Joiner::default();
            for rec in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines.extend(j.push(&parse_record(rec).unwrap()));
            }
            assert!(
                !j.is_open(Stream::Stdout) && !j.is_open(Stream::Stderr),
                "{} ends inside a line",
                f.path.display()
            );
        }
        let lens: Vec<(Stream, usize)> = lines.iter().map(|l| (l.stream, l.text.len())).collect();
        let mut want = vec![(Stream::Stdout, 40_000); 6];
        want.insert(2, (Stream::Stderr, 7));
        assert_eq!(lens, want);
    }

    #[test]
    fn a_line_past_the_longest_joined_one_rotates() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let mut w = RotatingWriter::open(&path, policy(100_000, 100)).unwrap();
        let mut out = Vec::new();
        let mut split = crate::logs::format::LineSplitter::new(Stream::Stdout);
        split.push(
            &vec![b'x'; 3 * MAX_LINE],
            crate::logs::format::Timestamp(0),
            &mut out,
        );
        w.write_records(&out).unwrap();
        // Held back up to MAX_LINE, then rotated at the size again.
        let sizes: Vec<u64> = chain(&path)
            .unwrap()
            .iter()
            .map(|f| std::fs::metadata(&f.path).unwrap().len())
            .collect();
        assert!(sizes.len() > 15, "{sizes:?}");
        assert!(
            sizes[0] > MAX_LINE as u64 && sizes[0] < MAX_LINE as u64 + 20_000,
            "{sizes:?}"
        );
        assert!(sizes[1..].iter().all(|s| *s <= 100_000), "{sizes:?}");
    }

    #[test]
    fn one_writer_per_path() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let a = shared(&path, policy(1000, 2)).unwrap();
        let b = shared(&path, policy(2000, 3)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(lock(&a).policy, policy(2000, 3));
        drop((a, b));
        let c = shared(&path, policy(1000, 2)).unwrap();
        write_shared(&c, b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
    }
}
