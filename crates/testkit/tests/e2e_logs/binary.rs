//! Task logs through the real `corral` binary: a `corral server` and a
//! `corral agent` process (one host of a `netns` cluster), `corral logs`
//! run as a command, the agent and the capture processes killed with
//! SIGKILL.
//!
//! - lines longer than 16 KiB that meet a rotation read back whole with
//!   `--tail` and `-f` (issue 13, case 4).

use std::process::Stdio;

use corral_testkit::jobs::{self, log_containing, wait_running};
use corral_testkit::netns::{self, Cluster, ClusterOptions, corral_bin};
use corral_testkit::patience;
use tokio::io::AsyncBufReadExt;

use super::D;

async fn one_host(test: &str) -> Option<Cluster> {
    if !netns::can_run(test) {
        return None;
    }
    Some(Cluster::start_with(test, ClusterOptions::new(1)).await)
}

/// `corral logs <args>` against the cluster: its stdout (it must succeed).
fn corral_logs(cl: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(corral_bin())
        .args(["--api", &cl.server_url(), "logs"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "corral logs {args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A line of output `n` of the long-line job: 40 000 bytes between its
/// start and end markers.
fn long_line(n: u32) -> String {
    format!("start{n}-{}-end{n}", "x".repeat(40_000))
}

/// Each line is one of the six long lines, whole, in order from `first`.
fn assert_whole_long_lines(text: &str, first: u32, what: &str) {
    let got: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (first..=6).map(long_line).collect();
    let brief = |l: &str| {
        format!(
            "{}..{} ({} bytes)",
            &l[..l.len().min(12)],
            &l[l.len().saturating_sub(6)..],
            l.len()
        )
    };
    assert_eq!(
        got.iter().map(|l| brief(l)).collect::<Vec<_>>(),
        want.iter().map(|l| brief(l)).collect::<Vec<_>>(),
        "{what}: lines cut, lost or repeated"
    );
    assert!(
        got.iter().zip(&want).all(|(g, w)| g == w),
        "{what}: a line differs"
    );
}

/// Case 4: six 40 KB lines with `max_size: 60K`: every file boundary falls
/// inside a line with a writer that rotates between a line's parts.
/// `-f` (following while they are written) and `--tail 6` (after) both
/// give the six lines whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_across_rotations_stay_whole_in_tail_and_follow() {
    let Some(cl) = one_host("long_lines_across_rotations").await else {
        return;
    };
    let c = &cl.client;
    c.submit(
        "name: longlines
driver: exec
command: [/bin/sh, -c, 'sleep 3; for i in 1 2 3 4 5 6; do printf start$i-; head -c 40000 /dev/zero | tr \"\\0\" x; echo -end$i; done; echo written >&2; exec sleep 600']
logs: {max_size: 60K, max_files: 10}
resources: {cpu: 100m, memory: 32M}
kill_timeout: 1s
",
        "longlines.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "longlines", 1, D).await;
    let a = j.allocations[0].id.clone();
    // Following from before the first line: through every rotation.
    let mut follow = tokio::process::Command::new(corral_bin())
        .args([
            "--api",
            &cl.server_url(),
            "logs",
            "longlines",
            "--stdout",
            "-f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut followed = String::new();
    let deadline = tokio::time::Instant::now() + patience(D);
    while !followed.contains("-end6\n") {
        let l = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("logs -f stalled after {} lines", followed.lines().count()))
            .unwrap()
            .unwrap_or_else(|| panic!("logs -f ended early"));
        followed.push_str(&l);
        followed.push('\n');
    }
    let _ = follow.kill().await;
    assert_whole_long_lines(&followed, 1, "logs -f");

    log_containing(c, &a, "stderr", "written", D).await;
    let dir = cl.host(0).data_dir().join("allocs").join(&a);
    let files =
        corral_agent::logs::chain(&corral_agent::logs::log_file(&dir, "longlines")).unwrap();
    assert!(files.len() >= 4, "rotated a few times: {files:?}");
    let tail = corral_logs(&cl, &["longlines", "--stdout", "--tail", "6"]);
    assert_whole_long_lines(&tail, 1, "logs --tail 6");
    let tail = corral_logs(&cl, &["longlines", "--stdout", "--tail", "2"]);
    assert_whole_long_lines(&tail, 5, "logs --tail 2");
    let all = corral_logs(&cl, &["longlines", "--stdout"]);
    assert_whole_long_lines(&all, 1, "logs");
    jobs::stop_and_wait(c, "longlines", D).await;
}
