use std::io::Write;

use corral_types::units::Bytes;

use super::*;
use crate::logs::format::parse_record;

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

/// (stream, P or F, message) of each record.
fn records(path: &Path) -> Vec<(String, char, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let r = parse_record(l.as_bytes()).unwrap();
            (
                r.stream.as_str().to_string(),
                if r.partial { 'P' } else { 'F' },
                String::from_utf8_lossy(r.message).into_owned(),
            )
        })
        .collect()
}

fn messages(path: &Path) -> Vec<(String, String)> {
    records(path).into_iter().map(|(s, _, m)| (s, m)).collect()
}

fn open_rw(p: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

/// FIFOs of a task that outlived its agent: it holds them open
/// read-write; nobody reads them.
fn orphan_fifos(s: &CaptureSpec) -> (File, File) {
    std::fs::create_dir_all(s.file.parent().unwrap()).unwrap();
    mkfifo(&s.stdout_fifo).unwrap();
    mkfifo(&s.stderr_fifo).unwrap();
    (open_rw(&s.stdout_fifo), open_rw(&s.stderr_fifo))
}

#[tokio::test]
async fn copies_both_streams_until_the_writers_are_gone() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path());
    let mut c = start(&s, &Copier::InProcess).unwrap();
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
    assert!(reattach(&s, &Copier::InProcess).is_none());
}

#[tokio::test]
async fn reattach_reads_what_was_written_meanwhile() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path());
    let (mut out, err) = orphan_fifos(&s);
    out.write_all(b"while away\n").unwrap();
    let drained = reattach(&s, &Copier::InProcess).unwrap();
    // Asking again in the same process gives the same copy.
    assert!(reattach(&s, &Copier::InProcess).is_some());
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
    drop(orphan_fifos(&s));
    let drained = reattach(&s, &Copier::InProcess).unwrap();
    assert!(drained.wait(Duration::from_secs(5)).await);
    assert!(!s.stdout_fifo.exists());
}

/// A copier that holds the run (a capture process started by an agent
/// before) keeps the agent from reading: the pipe has one reader. When it
/// dies, what the task wrote meanwhile is copied, also once the task is
/// gone: the agent's own read end kept it.
#[tokio::test]
async fn one_copier_at_a_time_and_nothing_lost_between_two() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path());
    let (mut out, err) = orphan_fifos(&s);
    let Ok(Taken::Held { _fd: other }) = lock::take(&s.stdout_fifo) else {
        panic!("the lock is free");
    };
    assert!(lock::copier_runs(&s.stdout_fifo));
    let drained = reattach(&s, &Copier::InProcess).unwrap();
    out.write_all(b"one\ntwo\nthr").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        messages(&s.file).is_empty(),
        "read while another copier runs"
    );
    // The task finishes its line and exits before the other copier dies.
    out.write_all(b"ee\n").unwrap();
    drop((out, err));
    drop(other);
    assert!(drained.wait(Duration::from_secs(5)).await);
    let got: Vec<String> = messages(&s.file).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, ["one", "two", "three"]);
    assert!(!lock::copier_runs(&s.stdout_fifo));
}

/// A capture process that cannot start (no such binary) or keeps failing
/// (`/bin/false`): the agent copies itself.
#[tokio::test]
async fn a_capture_process_that_cannot_run_falls_back_to_the_agent() {
    for exe in ["/nonexistent/corral", "/bin/false"] {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let mut c = start(&s, &Copier::Process(exe.into())).unwrap();
        c.stdout.write_all(b"still copied\n").unwrap();
        let drained = c.drained.clone();
        drop(c);
        assert!(drained.wait(Duration::from_secs(10)).await, "{exe}");
        assert_eq!(
            messages(&s.file),
            vec![("stdout".into(), "still copied".into())],
            "{exe}"
        );
    }
}

/// A copier stopped while the task writes: an unfinished line becomes a
/// `P` part, which the next copier's final part completes.
#[tokio::test]
async fn a_stopped_copier_leaves_an_unfinished_line_to_the_next() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path());
    let (mut out, _err) = orphan_fifos(&s);
    out.write_all(b"whole\nfirst-half-").unwrap();
    let w = writer::shared(&s.file, s.policy).unwrap();
    let readers = copy::Readers::open(&s).unwrap().unwrap();
    let stop = tokio::time::sleep(Duration::from_millis(300));
    assert!(!copy::copy(&s, readers, &w, stop).await, "the writers live");
    out.write_all(b"second-half\n").unwrap();
    // The next copier opens the FIFOs before the task is gone (the agent's
    // own read end would hold them otherwise).
    let readers = copy::Readers::open(&s).unwrap().unwrap();
    drop((out, _err));
    assert!(copy::copy(&s, readers, &w, std::future::pending()).await);
    let got = records(&s.file);
    let want = [
        ("stdout", 'F', "whole"),
        ("stdout", 'P', "first-half-"),
        ("stdout", 'F', "second-half"),
    ]
    .map(|(s, p, m)| (s.to_string(), p, m.to_string()));
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_new_run_waits_for_the_copier_of_the_last_one() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path());
    drop(orphan_fifos(&s));
    let Ok(Taken::Held { _fd: held }) = lock::take(&s.stdout_fifo) else {
        panic!("the lock is free");
    };
    let t = std::time::Instant::now();
    settle(d.path(), "app", Duration::from_millis(300)).await;
    assert!(t.elapsed() >= Duration::from_millis(300), "gave up early");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    });
    let t = std::time::Instant::now();
    settle(d.path(), "app", Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    release.await.unwrap();
    // Other tasks' runs are not waited for.
    assert_eq!(stdout_fifos(d.path(), "ap"), Vec::<PathBuf>::new());
    assert_eq!(stdout_fifos(d.path(), "app"), vec![s.stdout_fifo.clone()]);
}
