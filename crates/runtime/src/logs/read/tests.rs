use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::format::encode;
use super::super::{log_file, record_start};
use super::*;

const SEC: i64 = 1_000_000_000;

/// `n` seconds after an arbitrary origin.
fn t(n: i64) -> Timestamp {
    Timestamp(1_800_000_000 * SEC + n * SEC)
}

fn rec(out: &mut Vec<u8>, at: i64, stream: Stream, msg: &str) {
    encode(out, t(at), stream, false, msg.as_bytes());
}

fn append(path: &Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text).unwrap();
}

/// A log over three files: `app.log.1` (lines 0-3), `app.log.2` (4-7),
/// `app.log` (8-11); odd lines are stderr; line i written at t(i).
fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    for (file, range) in [
        (cur.with_extension("log.1"), 0..4),
        (cur.with_extension("log.2"), 4..8),
        (cur.clone(), 8..12),
    ] {
        let mut out = Vec::new();
        for i in range {
            let stream = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            rec(&mut out, i, stream, &format!("line {i}"));
        }
        append(&file, &out);
    }
    d
}

fn never() -> Done {
    Arc::new(|| false)
}

async fn collect(mut rx: Chunks) -> String {
    let mut out = Vec::new();
    while let Some(c) = rx.recv().await {
        out.extend(c.unwrap());
    }
    String::from_utf8(out).unwrap()
}

async fn read(dir: &Path, q: Query) -> String {
    collect(stream(dir, "app", &q, never()).unwrap()).await
}

fn lines(nums: impl IntoIterator<Item = i64>) -> String {
    nums.into_iter().map(|i| format!("line {i}\n")).collect()
}

#[tokio::test]
async fn everything_across_rotated_files_in_order() {
    let d = fixture();
    assert_eq!(read(d.path(), Query::default()).await, lines(0..12));
    let q = Query {
        streams: Streams::Stderr,
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, lines((1..12).step_by(2)));
}

#[tokio::test]
async fn tail_takes_the_last_lines_across_files() {
    let d = fixture();
    for (n, want) in [
        (0, lines(0..0)),
        (3, lines(9..12)),
        (6, lines(6..12)),
        (100, lines(0..12)),
    ] {
        let q = Query {
            tail: Some(n),
            ..Query::default()
        };
        assert_eq!(read(d.path(), q).await, want, "tail {n}");
    }
    let q = Query {
        tail: Some(3),
        streams: Streams::Stdout,
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, lines([6, 8, 10]));
}

#[tokio::test]
async fn since_filters_by_time_and_combines_with_tail() {
    let d = fixture();
    let q = Query {
        since: Some(t(5)),
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, lines(5..12));
    let q = Query {
        since: Some(t(5)),
        tail: Some(100),
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, lines(5..12));
    let q = Query {
        since: Some(t(99)),
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, "");
}

#[tokio::test]
async fn previous_is_the_run_before_the_last_start() {
    let d = fixture();
    let q = Query {
        previous: true,
        ..Query::default()
    };
    match stream(d.path(), "app", &q, never()) {
        Err(LogError::NoPrevious { task }) => assert_eq!(task, "app"),
        other => panic!("{other:?}"),
    }
    // Runs started at 0, 3 and 10.
    for s in [0, 3, 10] {
        record_start(d.path(), "app", t(s)).unwrap();
    }
    assert_eq!(read(d.path(), q.clone()).await, lines(3..10));
    // Following the previous run makes no sense: it ended.
    let q = Query {
        previous: true,
        follow: true,
        tail: Some(2),
        ..Query::default()
    };
    assert_eq!(read(d.path(), q).await, lines([8, 9]));
}

#[tokio::test]
async fn timestamps_and_parts() {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    let mut out = Vec::new();
    encode(&mut out, t(1), Stream::Stdout, true, b"hel");
    rec(&mut out, 2, Stream::Stderr, "err");
    encode(&mut out, t(3), Stream::Stdout, false, b"lo");
    out.extend_from_slice(b"not a record\n");
    append(&cur, &out);
    let q = Query {
        timestamps: true,
        ..Query::default()
    };
    assert_eq!(
        read(d.path(), q).await,
        format!("{} err\n{} hello\n", t(2), t(1))
    );
}

#[test]
fn since_parses_durations_and_times() {
    let now = t(1000);
    assert_eq!(parse_since("10m", now), Ok(t(400)));
    assert_eq!(parse_since("1h30m", now), Ok(t(1000 - 5400)));
    assert_eq!(parse_since(&t(5).to_string(), now), Ok(t(5)));
    assert!(parse_since("yesterday", now).unwrap_err().contains("10m"));
    assert!(parse_since("10", now).is_err());
}

async fn next_text(rx: &mut Chunks) -> String {
    let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("output in time")
        .expect("stream open")
        .unwrap();
    String::from_utf8(c).unwrap()
}

/// Reads chunks until `want` has come (chunks may split differently).
async fn expect_lines(rx: &mut Chunks, want: &str) {
    let mut got = String::new();
    while got.len() < want.len() {
        got.push_str(&next_text(rx).await);
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn follow_goes_on_across_rotations_and_stops_when_done() {
    let d = fixture();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let q = Query {
        follow: true,
        tail: Some(2),
        ..Query::default()
    };
    let mut rx = stream(
        d.path(),
        "app",
        &q,
        Arc::new(move || d2.load(Ordering::SeqCst)),
    )
    .unwrap();
    expect_lines(&mut rx, &lines(10..12)).await;
    let cur = log_file(d.path(), "app");
    let mut out = Vec::new();
    rec(&mut out, 12, Stream::Stdout, "line 12");
    append(&cur, &out);
    expect_lines(&mut rx, &lines([12])).await;

    // Rotated twice between two looks, the older one pruned at once: the
    // lines of both newer files still come, in order.
    let mut out = Vec::new();
    rec(&mut out, 13, Stream::Stdout, "line 13");
    append(&cur, &out);
    crate::logs::rotate(&cur, 3).unwrap();
    let mut out = Vec::new();
    rec(&mut out, 14, Stream::Stderr, "line 14");
    append(&cur, &out);
    crate::logs::rotate(&cur, 2).unwrap();
    let mut out = Vec::new();
    rec(&mut out, 15, Stream::Stdout, "line 15");
    append(&cur, &out);
    expect_lines(&mut rx, &lines(13..16)).await;

    // A record written in two pieces comes once it is whole.
    let mut out = Vec::new();
    rec(&mut out, 16, Stream::Stdout, "line 16");
    append(&cur, &out[..10]);
    tokio::time::sleep(POLL * 2).await;
    append(&cur, &out[10..]);
    expect_lines(&mut rx, &lines([16])).await;

    // The allocation is gone: what was written before still comes, then
    // the end.
    let mut out = Vec::new();
    rec(&mut out, 17, Stream::Stdout, "line 17");
    append(&cur, &out);
    done.store(true, Ordering::SeqCst);
    expect_lines(&mut rx, &lines([17])).await;
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn follow_waits_for_a_log_that_does_not_exist_yet() {
    let d = tempfile::tempdir().unwrap();
    let q = Query {
        follow: true,
        ..Query::default()
    };
    let mut rx = stream(d.path(), "app", &q, never()).unwrap();
    tokio::time::sleep(POLL).await;
    let mut out = Vec::new();
    rec(&mut out, 1, Stream::Stdout, "line 1");
    append(&log_file(d.path(), "app"), &out);
    expect_lines(&mut rx, &lines([1])).await;
}

/// A log as an older agent wrote it, rotated inside a long stdout line:
/// `app.log.1` has line 0 and the first two parts of line X (written at
/// t(1)), with a stderr line between them; `app.log` has X's final part
/// and line 6.
fn cut_fixture() -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    let x: Vec<String> = ["aaaa", "bbbb", "cccc"].map(|p| p.repeat(1000)).to_vec();
    let mut old = Vec::new();
    rec(&mut old, 0, Stream::Stdout, "line 0");
    encode(&mut old, t(1), Stream::Stdout, true, x[0].as_bytes());
    rec(&mut old, 2, Stream::Stderr, "line 2");
    encode(&mut old, t(1), Stream::Stdout, true, x[1].as_bytes());
    append(&cur.with_extension("log.1"), &old);
    let mut new = Vec::new();
    encode(&mut new, t(5), Stream::Stdout, false, x[2].as_bytes());
    rec(&mut new, 6, Stream::Stdout, "line 6");
    append(&cur, &new);
    (d, x.concat())
}

#[tokio::test]
async fn a_line_an_older_agent_rotated_inside_reads_whole() {
    let (d, x) = cut_fixture();
    let tail = |n| Query {
        tail: Some(n),
        ..Query::default()
    };
    assert_eq!(
        read(d.path(), Query::default()).await,
        format!("line 0\nline 2\n{x}\nline 6\n")
    );
    assert_eq!(read(d.path(), tail(2)).await, format!("{x}\nline 6\n"));
    assert_eq!(read(d.path(), tail(1)).await, "line 6\n");
    assert_eq!(
        read(d.path(), tail(4)).await,
        format!("line 0\nline 2\n{x}\nline 6\n")
    );
    // The line began at t(1): its time, for --since and --timestamps.
    let since = |s, tail| Query {
        since: Some(t(s)),
        tail,
        ..Query::default()
    };
    assert_eq!(read(d.path(), since(3, None)).await, "line 6\n");
    assert_eq!(read(d.path(), since(3, Some(5))).await, "line 6\n");
    assert_eq!(
        read(d.path(), since(1, Some(5))).await,
        format!("line 2\n{x}\nline 6\n")
    );
    let q = Query {
        tail: Some(2),
        timestamps: true,
        ..Query::default()
    };
    assert_eq!(
        read(d.path(), q).await,
        format!("{} {x}\n{} line 6\n", t(1), t(6))
    );
}

#[tokio::test]
async fn follow_joins_a_line_across_a_rotation_inside_it() {
    let d = tempfile::tempdir().unwrap();
    let cur = log_file(d.path(), "app");
    let mut out = Vec::new();
    rec(&mut out, 0, Stream::Stdout, "line 0");
    encode(&mut out, t(1), Stream::Stdout, true, b"first-");
    append(&cur, &out);
    let q = Query {
        follow: true,
        ..Query::default()
    };
    let mut rx = stream(d.path(), "app", &q, never()).unwrap();
    expect_lines(&mut rx, "line 0\n").await;
    tokio::time::sleep(POLL * 2).await;
    crate::logs::rotate(&cur, 3).unwrap();
    let mut out = Vec::new();
    encode(&mut out, t(2), Stream::Stdout, false, b"second");
    rec(&mut out, 3, Stream::Stdout, "line 3");
    append(&cur, &out);
    expect_lines(&mut rx, "first-second\nline 3\n").await;
}

#[test]
fn open_parts_look_back_as_far_as_a_line_began() {
    let d = tempfile::tempdir().unwrap();
    // A line of 300 KB in parts, then 200 KB of stderr lines.
    let mut parts = Vec::new();
    rec(&mut parts, 0, Stream::Stderr, "err");
    for _ in 0..20 {
        encode(&mut parts, t(1), Stream::Stdout, true, &[b'x'; 15_000]);
    }
    let mut errs = Vec::new();
    for i in 0..2000 {
        rec(&mut errs, 2, Stream::Stderr, &format!("{i:0100}"));
    }
    let mut end = Vec::new();
    encode(&mut end, t(3), Stream::Stdout, false, b"!");

    let path = d.path().join("open.log");
    append(&path, &parts);
    append(&path, &errs);
    let mut j = carry::open_parts(&File::open(&path).unwrap()).unwrap();
    assert!(j.is_open(Stream::Stdout) && !j.is_open(Stream::Stderr));
    let line = j
        .push(&parse_record(&end[..end.len() - 1]).unwrap())
        .unwrap();
    assert_eq!((line.text.len(), line.time), (300_001, t(1)));

    // The line ended, far back: nothing open.
    let path = d.path().join("closed.log");
    append(&path, &parts);
    append(&path, &end);
    append(&path, &errs);
    let j = carry::open_parts(&File::open(&path).unwrap()).unwrap();
    assert!(!j.is_open(Stream::Stdout) && !j.is_open(Stream::Stderr));
}
