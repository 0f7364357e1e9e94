//! `corral logs` as users run it: a job's allocations interleaved with a
//! name prefix, with the stream, tail and timestamp flags; clear errors.
//! Needs root (exec tasks in cgroups).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use corral_testkit::jobs::{log_containing, wait_running};
use corral_testkit::procs::is_root;
use corral_testkit::{TestCluster, prereq};

mod common;
use common::{corral, text};

async fn corral_ok(addr: &str, args: &[&str]) -> String {
    let (a, args2): (String, Vec<String>) = (
        addr.to_string(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args2.iter().map(String::as_str).collect();
        corral(&a, &args)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "corral {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_job_interleave_its_allocations() {
    let missing = if is_root() {
        vec![]
    } else {
        vec!["root (cgroups)".to_string()]
    };
    if !prereq::can_run(
        "logs_of_a_job_interleave_its_allocations",
        "run exec tasks",
        &missing,
    ) {
        return;
    }
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let c = &cluster.client;
    c.submit(
        "driver: exec
command: [/bin/sh, -c, 'echo \"hello $CORRAL_ALLOC_INDEX\"; echo \"warn $CORRAL_ALLOC_INDEX\" >&2; while true; do sleep 1; done']
count: 2
resources: {cpu: 50m, memory: 16M}
kill_timeout: 1s
",
        "web.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "web", 2, Duration::from_secs(30)).await;
    for a in &j.allocations {
        log_containing(c, &a.id, "stderr", "warn", Duration::from_secs(30)).await;
    }

    // Both streams by default, each line prefixed with its allocation.
    let out = corral_ok(&url, &["logs", "web"]).await;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "web.web[0] | hello 0",
            "web.web[0] | warn 0",
            "web.web[1] | hello 1",
            "web.web[1] | warn 1",
        ],
        "{out}"
    );

    // One stream, the last line of each, with its time.
    let out = corral_ok(&url, &["logs", "web", "--stderr", "--tail", "1", "-t"]).await;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{out}");
    for (i, l) in lines.iter().enumerate() {
        let rest = l
            .strip_prefix(&format!("web.web[{i}] | "))
            .unwrap_or_else(|| panic!("{l}"));
        let (t, msg) = rest.split_once(' ').unwrap();
        assert!(
            corral_agent::logs::Timestamp::parse(t).is_some(),
            "not a time: {t}"
        );
        assert_eq!(msg, format!("warn {i}"));
    }

    // One allocation (by id prefix): no prefix.
    let id = &j.allocations[0].id;
    let out = corral_ok(&url, &["logs", "web", "--alloc", &id[..8], "--stdout"]).await;
    assert_eq!(out, format!("hello {}\n", j.allocations[0].index));

    // Errors say what is wrong.
    let out = corral(&url, &["logs", "web", "--since", "soon"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--since"),
        "{}",
        text(&out.stderr)
    );
    let out = corral(&url, &["logs", "web", "--alloc", &id[..8], "--previous"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has not restarted"),
        "{}",
        text(&out.stderr)
    );
    cluster.shutdown().await;
}

/// `corral logs JOB | head -1` with two allocations: the closed pipe ends
/// every stream quietly with 141 (as for one allocation), without an
/// error line per allocation or a "no allocation has logs" claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_a_jobs_logs_quietly() {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};

    let missing = if is_root() {
        vec![]
    } else {
        vec!["root (cgroups)".to_string()]
    };
    if !prereq::can_run(
        "a_closed_pipe_ends_a_jobs_logs_quietly",
        "run exec tasks",
        &missing,
    ) {
        return;
    }
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let c = &cluster.client;
    // A backlog bigger than a pipe's buffer on both streams, then a line
    // now and then for -f.
    c.submit(
        "driver: exec
command: [/bin/sh, -c, 'l=$(printf \"%0100d\" $CORRAL_ALLOC_INDEX); i=0; while [ $i -lt 4000 ]; do echo \"$l\"; echo \"$l\" >&2; i=$((i+1)); done; echo filled; echo filled >&2; while true; do echo tick; echo tick >&2; sleep 0.1; done']
count: 2
resources: {cpu: 50m, memory: 16M}
kill_timeout: 1s
",
        "chat.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "chat", 2, Duration::from_secs(30)).await;
    for a in &j.allocations {
        for stream in ["stdout", "stderr"] {
            log_containing(c, &a.id, stream, "filled", Duration::from_secs(30)).await;
        }
    }
    tokio::task::spawn_blocking(move || {
        for extra in [
            vec![],
            vec!["-f"],
            vec!["-t"],
            vec!["--stderr"],
            vec!["--tail", "3000"],
        ] {
            let mut args = vec!["logs", "chat"];
            args.extend(extra);
            let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
                .args(&args)
                .env("CORRAL_ADDR", &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("corral runs");
            // `| head -1`: one line read, then the reader is gone.
            let mut first = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            assert!(first.starts_with("chat.chat["), "{args:?}: {first}");
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let status = child.wait().unwrap();
            assert!(err.is_empty(), "{args:?}: {err}");
            assert_eq!(status.code(), Some(141), "{args:?}: {err}");
        }
    })
    .await
    .unwrap();
    cluster.shutdown().await;
}
