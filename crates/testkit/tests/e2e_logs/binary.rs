//! Task logs through the real `corral` binary: a `corral server` and a
//! `corral agent` process (one host of a `netns` cluster), `corral logs`
//! run as a command, the agent and the capture processes killed with
//! SIGKILL.
//!
//! - lines longer than 16 KiB that meet a rotation read back whole with
//!   `--tail` and `-f` (issue 13, case 4);
//! - what a task writes while its agent is down, a partial line included,
//!   and the last words of a task that exits then, all reach the log once
//!   (issue 13, case 5);
//! - a capture process killed is replaced without losing a line, and none
//!   is left once the allocation stops.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use corral_testkit::jobs::{self, log_containing, wait_alloc, wait_running};
use corral_testkit::netns::{self, Cluster, ClusterOptions, corral_bin};
use corral_testkit::{eventually, patience};
use corral_types::ClientStatus;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncBufReadExt;

use super::{D, assert_consecutive, numbers};

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

/// Live capture processes (`corral logmon`) of an allocation.
fn capture_procs(alloc: &str) -> BTreeSet<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_none_or(|(_, s)| s.trim_start().starts_with(['Z', 'X']));
            cmd.contains(" logmon ") && cmd.contains(alloc) && !zombie
        })
        .collect()
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

/// Case 5, the scenario: a task printing a line every 0.2 s, with
/// a partial line on stderr read before the agent is killed; while the
/// agent is down it goes on, completes the partial line, prints its last
/// words and exits 7. After the agent's restart every line is in the log
/// exactly once, in order, and no capture process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_while_the_agent_is_down_survives_with_the_last_words() {
    let Some(mut cl) = one_host("output_while_the_agent_is_down").await else {
        return;
    };
    let ctl = cl.dir().join("lastwords");
    std::fs::create_dir_all(&ctl).unwrap();
    let c = cl.client.clone();
    c.submit(
        &format!(
            "name: lastwords
driver: exec
command: [/bin/sh, -c, 'printf first-half- >&2; i=0; while [ ! -e {ctl}/exit ]; do echo \"line $i\"; echo $i > {ctl}/last; i=$((i+1)); sleep 0.2; done; echo second-half >&2; echo \"last words\"; exit 7']
restart: {{attempts: 0, mode: fail}}
resources: {{cpu: 50m, memory: 32M}}
kill_timeout: 1s
",
            ctl = ctl.display()
        ),
        "lastwords.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(&c, "lastwords", 1, D).await;
    let a = j.allocations[0].id.clone();
    log_containing(&c, &a, "stdout", "line 5\n", D).await;
    // The partial line has long been read from its pipe.
    tokio::time::sleep(Duration::from_millis(500)).await;

    cl.kill_agent(0);
    let at_kill: u32 = std::fs::read_to_string(ctl.join("last"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(ctl.join("exit"), "").unwrap();
    eventually("the task exited while its agent is down", D, || async {
        let p = cl.job_procs("lastwords");
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    let last: u32 = std::fs::read_to_string(ctl.join("last"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        last >= at_kill + 5,
        "the task wrote while the agent was down: {at_kill} -> {last}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cl.restart_agent(0);
    wait_alloc(&c, "lastwords", ClientStatus::Failed, D).await;

    let stdout = corral_logs(&cl, &[&a, "--stdout"]);
    let mut want: String = (0..=last).map(|i| format!("line {i}\n")).collect();
    want.push_str("last words\n");
    if stdout != want {
        let nums = numbers(&stdout);
        panic!(
            "stdout: {} lines, numbers {:?}..{:?} (want 0..={last} then last words), ends {:?}",
            stdout.lines().count(),
            nums.first(),
            nums.last(),
            &stdout[stdout.len().saturating_sub(60)..]
        );
    }
    assert_eq!(
        corral_logs(&cl, &[&a, "--stderr"]),
        "first-half-second-half\n"
    );
    eventually("no capture process left", D, || async {
        let p = capture_procs(&a);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
}

/// Case 5, the capture process itself: killed with SIGKILL while its task
/// prints, it is replaced and no line is lost or repeated; across a kill
/// -9 of the agent it runs on and the restarted agent keeps it (no second
/// one); after a stop of the allocation no capture process and no FIFO is
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_process_is_replaced_kept_across_agent_kills_and_ends_with_the_alloc() {
    let Some(mut cl) = one_host("capture_process_killed").await else {
        return;
    };
    let c = cl.client.clone();
    c.submit(
        "name: steady
driver: exec
command: [/bin/sh, -c, 'i=0; while true; do echo \"line $i\"; i=$((i+1)); sleep 0.05; done']
resources: {cpu: 50m, memory: 32M}
kill_timeout: 1s
",
        "steady.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(&c, "steady", 1, D).await;
    let a = j.allocations[0].id.clone();
    let first = eventually("one capture process", D, || async {
        let p = capture_procs(&a);
        if p.len() == 1 {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    log_containing(&c, &a, "stdout", "line 10\n", D).await;
    for pid in &first {
        rustix::process::kill_process(Pid::from_raw(*pid).unwrap(), Signal::KILL).unwrap();
    }
    let killed_at = numbers(&jobs::log_text(&c, &a, "stdout").await.unwrap())
        .last()
        .copied()
        .unwrap();
    let second = eventually("a new capture process", D, || async {
        let p = capture_procs(&a);
        if p.len() == 1 && p.is_disjoint(&first) {
            Ok(p)
        } else {
            Err(format!("{p:?} (killed {first:?})"))
        }
    })
    .await;
    let want = format!("line {}\n", killed_at + 60);
    log_containing(&c, &a, "stdout", &want, D).await;
    let out = corral_logs(&cl, &[&a, "--stdout"]);
    let nums = numbers(&out);
    assert_eq!(nums[0], 0, "from the first line");
    assert_consecutive(&nums, *nums.last().unwrap(), "across the capture's kill");

    // The agent killed: the capture process copies on, and the restarted
    // agent keeps it.
    cl.kill_agent(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(capture_procs(&a), second, "the capture outlives the agent");
    cl.restart_agent(0);
    let want = format!("line {}\n", nums.last().unwrap() + 60);
    log_containing(&c, &a, "stdout", &want, D).await;
    assert_eq!(capture_procs(&a), second, "the restarted agent keeps it");
    let out = corral_logs(&cl, &[&a, "--stdout"]);
    let nums = numbers(&out);
    assert_eq!(nums[0], 0, "from the first line");
    assert_consecutive(&nums, *nums.last().unwrap(), "across the agent's kill");

    jobs::stop_and_wait(&c, "steady", D).await;
    eventually("no capture process after the stop", D, || async {
        let p = capture_procs(&a);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    let logs = cl.host(0).data_dir().join("allocs").join(&a).join("logs");
    let hidden: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "FIFOs or locks left: {hidden:?}");
}
