//! Task logs end to end, through the server's API as `corral logs` reads
//! them: a real server, a real agent, exec tasks as real processes in real
//! cgroups, and container tasks on a private containerd.
//!
//! - rotation at the size the spec asks for, with the number of files
//!   bounded (exec: the agent's writer; container: containerd's file,
//!   rotated by the agent's periodic check and `ReopenContainerLog`);
//! - `-f` goes on across task restarts and across rotations, and ends when
//!   the allocation does;
//! - `--previous` is the run before the last restart;
//! - `--since`, `--tail`, `--stdout`/`--stderr`, `--timestamps`;
//! - the logs of a stopped allocation stay readable until the agent's
//!   retention passes, then are deleted.
//!
//! Needs root (cgroups; containerd for the container tests): skipped with
//! a message otherwise, a failure with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

#[path = "e2e_logs/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_agent::logs::{self, Timestamp};
use corral_client::{Client, LogQuery};
use corral_testkit::containers::{BUSYBOX_IMAGE, ContainerNode, busybox_image};
use corral_testkit::jobs::{self, log_containing, wait_alloc, wait_running};
use corral_testkit::procs::is_root;
use corral_testkit::{TestCluster, eventually, patience, prereq};
use corral_types::ClientStatus;
use corral_types::api::AllocView;

/// Deadline of every wait (stretched by CORRAL_TEST_PATIENCE).
const D: Duration = Duration::from_secs(60);

fn can_run_exec(test: &str) -> bool {
    let missing = if is_root() {
        vec![]
    } else {
        vec!["root (cgroups)".to_string()]
    };
    prereq::can_run(test, "run exec tasks", &missing)
}

/// A server and one exec agent keeping logs of stopped allocations for
/// `retention`.
async fn exec_cluster(retention: Duration) -> TestCluster {
    let mut c = TestCluster::start().await;
    c.add_agent_with("node-0", |cfg| cfg.log_retention = retention)
        .await;
    c
}

fn alloc_dir(cluster: &TestCluster, alloc: &str) -> PathBuf {
    cluster.agents[0].data_dir.join("allocs").join(alloc)
}

/// The whole (non-followed) answer to a log query.
async fn read(c: &Client, alloc: &str, q: LogQuery) -> String {
    c.logs(alloc, &q)
        .await
        .unwrap_or_else(|e| panic!("logs of {alloc}: {e}"))
        .text()
        .await
        .unwrap()
}

fn stream(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// Reads a followed log until `until` returns true for what came so far,
/// or the stream ends; returns what came and whether it ended.
async fn follow_until(
    resp: &mut reqwest::Response,
    deadline: Duration,
    until: impl Fn(&str) -> bool,
) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + patience(deadline);
    let mut got = String::new();
    loop {
        if until(&got) {
            return (got, false);
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("the followed log stalled; so far: {got:?}"))
            .unwrap();
        match chunk {
            Some(b) => got.push_str(std::str::from_utf8(&b).unwrap()),
            None => return (got, true),
        }
    }
}

/// `line N ...` lines -> N.
fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

fn assert_consecutive(nums: &[u32], last: u32, what: &str) {
    assert!(!nums.is_empty(), "{what}: no lines");
    let first = nums[0];
    assert_eq!(
        nums,
        (first..=last).collect::<Vec<_>>(),
        "{what}: lines lost, repeated or out of order"
    );
}

/// (time, text) of each line of a `timestamps` answer.
fn stamped(text: &str) -> Vec<(Timestamp, String)> {
    text.lines()
        .map(|l| {
            let (t, rest) = l.split_once(' ').unwrap();
            (Timestamp::parse(t).unwrap(), rest.to_string())
        })
        .collect()
}

/// The task's log files on the node: (rotated seq or None, size).
fn files(alloc_dir: &Path, task: &str) -> Vec<(Option<u64>, u64)> {
    logs::chain(&logs::log_file(alloc_dir, task))
        .unwrap()
        .iter()
        .map(|f| (f.seq, std::fs::metadata(&f.path).unwrap().len()))
        .collect()
}

/// `--since` as the server hands it on: only what is at or after the given
/// time, both streams in order, each line with its time.
async fn check_since(c: &Client, alloc: &str, task: Option<&str>) {
    let all = read(
        c,
        alloc,
        LogQuery {
            task: task.map(str::to_string),
            timestamps: true,
            ..Default::default()
        },
    )
    .await;
    let lines = stamped(&all);
    assert!(lines.len() >= 4, "{all}");
    let cut = lines[lines.len() / 2].0;
    let want: String = lines
        .iter()
        .filter(|(t, _)| *t >= cut)
        .map(|(t, l)| format!("{t} {l}\n"))
        .collect();
    let got = read(
        c,
        alloc,
        LogQuery {
            task: task.map(str::to_string),
            timestamps: true,
            since: Some(cut.to_string()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(got, want, "since {cut}");
    // A duration back from now: all of it, or nothing after a pause.
    let q = |since: &str| LogQuery {
        task: task.map(str::to_string),
        timestamps: true,
        since: Some(since.into()),
        ..Default::default()
    };
    assert_eq!(read(c, alloc, q("1h")).await, all);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read(c, alloc, q("1s")).await, "");
    // A bad value is refused with a reason.
    let e = c.logs(alloc, &q("yesterday")).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("since"), "{e}");
}

/// 1. An exec task's log rotates at the `max_size` of its spec and keeps
/// `max_files` files; what is kept reads back whole, `--tail` and
/// `--since` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_log_rotates_at_the_spec_size() {
    if !can_run_exec("exec_log_rotates_at_the_spec_size") {
        return;
    }
    let cluster = exec_cluster(logs::DEFAULT_RETENTION).await;
    let c = &cluster.client;
    c.submit(
        "name: chatty
driver: exec
command: [/bin/sh, -c, 'i=0; while [ $i -lt 300 ]; do echo \"line $i 0123456789012345678901234567890123456789\"; i=$((i+1)); done; echo written >&2; while true; do sleep 1; done']
logs: {max_size: 2K, max_files: 3}
resources: {cpu: 100m, memory: 32M}
kill_timeout: 1s
",
        "chatty.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "chatty", 1, D).await;
    let a = j.allocations[0].id.clone();
    log_containing(c, &a, "stderr", "written", D).await;

    // ~90 bytes a record, ~27 KB in all: many rotations, three files kept,
    // none past 2000 bytes.
    let on_disk = files(&alloc_dir(&cluster, &a), "chatty");
    assert_eq!(on_disk.len(), 3, "{on_disk:?}");
    assert_eq!(on_disk[2].0, None, "the current file is last: {on_disk:?}");
    assert!(
        on_disk[1].0.unwrap() >= 10,
        "rotated ~13 times: {on_disk:?}"
    );
    for (seq, size) in &on_disk {
        assert!(*size <= 2000, "file {seq:?} has {size} bytes");
    }
    for (seq, size) in &on_disk[..2] {
        assert!(*size > 1800, "rotated file {seq:?} only has {size} bytes");
    }

    // What is kept is the end of the output, whole and in order.
    let out = read(
        c,
        &a,
        LogQuery {
            stream: stream("stdout"),
            ..Default::default()
        },
    )
    .await;
    let nums = numbers(&out);
    assert_consecutive(&nums, 299, "stdout");
    assert!(
        nums[0] > 200 && nums.len() > 40,
        "about 3 x 2000 bytes kept: {} lines from {}",
        nums.len(),
        nums[0]
    );
    let tail = read(
        c,
        &a,
        LogQuery {
            stream: stream("stdout"),
            tail: Some(5),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(numbers(&tail), (295..300).collect::<Vec<_>>());
    // Both streams by default: the stderr line is last.
    let both = read(c, &a, LogQuery::default()).await;
    assert!(both.ends_with("written\n"), "{both}");
    check_since(c, &a, None).await;

    jobs::stop_and_wait(c, "chatty", D).await;
    cluster.shutdown().await;
}

const FLAKY: &str = "name: flaky
driver: exec
command: [/bin/sh, -c, 'n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; echo \"run $n start\"; echo \"run $n err\" >&2; sleep 2; echo \"run $n end\"; exit 1']
restart: {attempts: 2, interval: 1m, delay: 500ms, mode: fail}
resources: {cpu: 50m, memory: 16M}
";

/// 2. `-f` started during the first run of a crashing exec task carries
/// on through both restarts and ends when the allocation fails;
/// `--previous` is the second run; stream selection, `--tail`, `--since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_follow_across_restarts_and_previous() {
    if !can_run_exec("exec_follow_across_restarts_and_previous") {
        return;
    }
    let cluster = exec_cluster(logs::DEFAULT_RETENTION).await;
    let c = &cluster.client;
    c.submit(FLAKY, "flaky.yaml").await.unwrap();
    let a = eventually("an allocation of flaky", D, || async {
        let j = c.job("flaky", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .first()
            .map(|a| a.id.clone())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    log_containing(c, &a, "stdout", "run 1 start", D).await;
    let mut resp = c
        .logs(
            &a,
            &LogQuery {
                stream: stream("stdout"),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (got, ended) = follow_until(&mut resp, D, |_| false).await;
    assert!(ended);
    assert_eq!(
        got,
        "run 1 start\nrun 1 end\nrun 2 start\nrun 2 end\nrun 3 start\nrun 3 end\n"
    );
    let failed = wait_alloc(c, "flaky", ClientStatus::Failed, D).await;
    assert_eq!(failed.tasks["flaky"].restarts, 2);

    let q = |stream: &str, previous: bool, tail: Option<usize>| LogQuery {
        stream: Some(stream.into()),
        previous,
        tail,
        ..Default::default()
    };
    assert_eq!(
        read(c, &a, q("stdout", true, None)).await,
        "run 2 start\nrun 2 end\n"
    );
    assert_eq!(
        read(c, &a, q("both", true, None)).await,
        "run 2 start\nrun 2 err\nrun 2 end\n"
    );
    assert_eq!(read(c, &a, q("stderr", true, None)).await, "run 2 err\n");
    assert_eq!(
        read(c, &a, q("stderr", false, None)).await,
        "run 1 err\nrun 2 err\nrun 3 err\n"
    );
    assert_eq!(
        read(c, &a, q("stdout", false, Some(2))).await,
        "run 3 start\nrun 3 end\n"
    );
    assert_eq!(read(c, &a, q("both", true, Some(1))).await, "run 2 end\n");
    check_since(c, &a, Some("flaky")).await;

    cluster.shutdown().await;
}

/// 3. The logs of a stopped allocation stay readable after the stop (also
/// followed: the stream ends at once), until the agent's retention passes;
/// then they are deleted from the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_logs_outlive_the_allocation_until_retention() {
    if !can_run_exec("exec_logs_outlive_the_allocation_until_retention") {
        return;
    }
    let cluster = exec_cluster(Duration::from_secs(6)).await;
    let c = &cluster.client;
    c.submit(
        "name: brief
driver: exec
command: [/bin/sh, -c, 'echo hello; echo bye >&2; while true; do sleep 1; done']
resources: {cpu: 50m, memory: 16M}
kill_timeout: 1s
",
        "brief.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "brief", 1, D).await;
    let a = j.allocations[0].id.clone();
    log_containing(c, &a, "stderr", "bye", D).await;
    jobs::stop_and_wait(c, "brief", D).await;
    let stopped = std::time::Instant::now();
    let view: AllocView = c.alloc(&a).await.unwrap();
    assert!(view.status.is_terminal(), "{view:?}");

    assert_eq!(read(c, &a, LogQuery::default()).await, "hello\nbye\n");
    let mut resp = c
        .logs(
            &a,
            &LogQuery {
                follow: true,
                tail: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (got, ended) = follow_until(&mut resp, Duration::from_secs(10), |_| false).await;
    assert!(ended, "following a stopped allocation ends");
    assert_eq!(got, "bye\n");

    let dir = alloc_dir(&cluster, &a);
    assert!(dir.exists());
    eventually("the logs deleted after the retention", D, || async {
        match c.logs(&a, &LogQuery::default()).await {
            Err(e) if e.status() == Some(404) => Ok(e),
            Err(e) => Err(format!("unexpected error: {e}")),
            Ok(_) => Err("still readable".into()),
        }
    })
    .await;
    assert!(!dir.exists(), "{} left", dir.display());
    assert!(
        stopped.elapsed() >= Duration::from_secs(5),
        "deleted before the retention: {:?}",
        stopped.elapsed()
    );

    // An allocation nobody knows, under an id no server made lately: 404
    // without asking the nodes.
    let e = c
        .logs("00000000-0000-4000-8000-000000000000", &LogQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    cluster.shutdown().await;
}

/// A private containerd and a cluster whose agent runs containers on it
/// and checks their logs for rotation often.
struct ContainerWorld {
    cluster: TestCluster,
    node: ContainerNode,
}

impl ContainerWorld {
    async fn start(test: &str) -> Option<ContainerWorld> {
        if !corral_testkit::containers::can_run(test) {
            return None;
        }
        let node = ContainerNode::start(test).await;
        let mut cluster = TestCluster::start().await;
        let socket = node.socket().to_path_buf();
        cluster
            .add_agent_with("node-0", move |cfg| {
                cfg.drivers = vec!["exec".into(), "container".into()];
                cfg.cri_socket = socket;
                cfg.log_check_interval = Duration::from_millis(300);
            })
            .await;
        node.import(&busybox_image(BUSYBOX_IMAGE, &[])).await;
        Some(ContainerWorld { cluster, node })
    }

    async fn finish(self, jobs: &[&str]) {
        for j in jobs {
            jobs::stop_and_wait(&self.cluster.client, j, D).await;
        }
        self.node.wait_clean(D).await;
        self.cluster.shutdown().await;
        self.node.finish().await;
    }
}

/// 4. A container's log (written by containerd) is rotated by the agent
/// at the spec's size with the number of files bounded, and a follower
/// reading through ~20 rotations loses and repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_log_rotates_and_a_follower_loses_nothing() {
    let Some(w) = ContainerWorld::start("logrotate").await else {
        return;
    };
    let c = &w.cluster.client;
    c.submit(
        &format!(
            "name: chatty
image: {BUSYBOX_IMAGE}
command: [/bin/sh, -c, 'sleep 3; i=0; while [ $i -lt 600 ]; do echo \"line $i 0123456789012345678901234567890123456789\"; i=$((i+1)); sleep 0.01; done; echo written; exec sleep 3600']
logs: {{max_size: 2K, max_files: 3}}
kill_timeout: 1s
"
        ),
        "chatty.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(c, "chatty", 1, D).await;
    let a = j.allocations[0].id.clone();
    let mut resp = c
        .logs(
            &a,
            &LogQuery {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dir = alloc_dir(&w.cluster, &a);
    let mut most_files = 0;
    let mut got = String::new();
    while !got.contains("written\n") {
        let (more, ended) = follow_until(&mut resp, D, |s| !s.is_empty()).await;
        assert!(!ended, "the stream ended early: {got}");
        got.push_str(&more);
        most_files = most_files.max(files(&dir, "chatty").len());
    }
    assert_consecutive(&numbers(&got), 599, "followed");
    assert!(got.starts_with("line 0 "), "{}", &got[..80.min(got.len())]);
    assert!(most_files <= 3, "{most_files} files at once");

    let on_disk = files(&dir, "chatty");
    assert!(on_disk.len() <= 3, "{on_disk:?}");
    let newest_rotated = on_disk.iter().filter_map(|f| f.0).max().unwrap_or(0);
    assert!(newest_rotated >= 5, "rotated a few times: {on_disk:?}");
    for (seq, size) in on_disk.iter().filter(|f| f.0.is_some()) {
        // Rotated once past the size, before it grew much further.
        assert!(
            (2000..20_000).contains(size),
            "rotated file {seq:?} has {size} bytes"
        );
    }
    // What is kept reads back whole and in order, ending with the last line.
    let kept = read(c, &a, LogQuery::default()).await;
    assert!(kept.ends_with("written\n"), "{kept}");
    let nums = numbers(&kept);
    assert_consecutive(&nums, 599, "kept");
    assert!(nums[0] > 0, "the oldest files were deleted");
    w.finish(&["chatty"]).await;
}

/// 5. A crashing container: `-f` follows all three runs and ends with the
/// allocation; `--previous` is the second run; `--since` on containerd's
/// timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_previous_and_follow_across_restarts() {
    let Some(w) = ContainerWorld::start("logprev").await else {
        return;
    };
    let c = &w.cluster.client;
    c.submit(
        &format!(
            "name: flaky
image: {BUSYBOX_IMAGE}
command: [/bin/sh, -c, 'echo \"run $(cat /proc/sys/kernel/random/uuid)\"; echo oops >&2; sleep 2; echo end; exit 1']
restart: {{attempts: 2, interval: 1m, delay: 500ms, mode: fail}}
"
        ),
        "flaky.yaml",
    )
    .await
    .unwrap();
    let a = eventually("an allocation of flaky", D, || async {
        let j = c.job("flaky", None).await.map_err(|e| e.to_string())?;
        j.allocations
            .first()
            .map(|a| a.id.clone())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    log_containing(c, &a, "stdout", "run ", D).await;
    let mut resp = c
        .logs(
            &a,
            &LogQuery {
                stream: stream("stdout"),
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (got, ended) = follow_until(&mut resp, D, |_| false).await;
    assert!(ended);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 6, "{got}");
    let runs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("run "))
        .collect();
    assert_eq!(runs.len(), 3, "{got}");
    assert!(runs[0] != runs[1] && runs[1] != runs[2], "{runs:?}");
    assert_eq!(
        lines,
        vec![runs[0], "end", runs[1], "end", runs[2], "end"],
        "{got}"
    );
    wait_alloc(c, "flaky", ClientStatus::Failed, D).await;

    // containerd copies stdout and stderr apart: their order in the file
    // is its own.
    let prev = |s: &str| LogQuery {
        stream: stream(s),
        previous: true,
        ..Default::default()
    };
    assert_eq!(
        read(c, &a, prev("stdout")).await,
        format!("{}\nend\n", runs[1])
    );
    assert_eq!(read(c, &a, prev("stderr")).await, "oops\n");
    let mut both: Vec<String> = read(c, &a, prev("both"))
        .await
        .lines()
        .map(str::to_string)
        .collect();
    both.sort();
    assert_eq!(both, vec!["end".to_string(), "oops".into(), runs[1].into()]);
    let tail = read(
        c,
        &a,
        LogQuery {
            stream: stream("stderr"),
            tail: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(tail, "oops\noops\n");
    check_since(c, &a, None).await;
    w.finish(&["flaky"]).await;
}
