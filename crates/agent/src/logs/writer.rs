//! The exec driver's log writer: appends whole records to a task's
//! current log file and rotates it before a record would take it past
//! `max_size`. One writer per file in this process ([`shared`]), so the
//! runs of a task (and both streams of a run) never rotate the same file
//! from two places.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use corral_types::LogPolicy;

#[derive(Debug)]
pub struct RotatingWriter {
    path: PathBuf,
    policy: LogPolicy,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
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
    /// rotated between records, so each file stays within `max_size`
    /// unless a single record is larger.
    pub fn write_records(&mut self, records: &[u8]) -> std::io::Result<()> {
        for rec in records.split_inclusive(|b| *b == b'\n') {
            self.write_record(rec)?;
        }
        Ok(())
    }

    fn write_record(&mut self, rec: &[u8]) -> std::io::Result<()> {
        let len = rec.len() as u64;
        if self.size > 0 && self.size + len > self.policy.max_size.0 {
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
        Ok(())
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
