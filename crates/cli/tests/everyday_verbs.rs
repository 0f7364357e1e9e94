//! Issue 17's everyday verbs through the real binary against a real server
//! and exec agent: `corral job scale` changes the count without restarting
//! anything (the same allocations, the same processes), refuses what a
//! job file would; `corral alloc restart` restarts a task in place at
//! once, outside its restart policy; `corral alloc stop` ends one
//! allocation and its slot runs again; `corral job init` writes a job that runs;
//! `corral completion` prints a script for each shell.

#![allow(clippy::unwrap_used)]

use std::process::Output;

use corral_testkit::TestCluster;

async fn corral(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", url)
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

const SPEC: &str = "driver: exec
command: [/bin/sh, -c, 'while true; do sleep 1; done', scaled]
restart: {attempts: 0, mode: fail}
count: 2
resources: {cpu: 20m, memory: 16M}
kill_timeout: 1s
update: {min_healthy_time: 500ms, healthy_deadline: 30s, progress_deadline: 60s}
";

/// Running allocations of `job`: (id, index), sorted by index.
async fn running(url: &str, job: &str) -> Vec<(String, u64)> {
    let out = corral(url, &["status", job, "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut r: Vec<(String, u64)> = v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "running")
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["index"].as_u64().unwrap(),
            )
        })
        .collect();
    r.sort_by_key(|x| x.1);
    r
}

/// The pids of this test's task shells (`sh -c '...' scaled`).
fn task_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.first() == Some(&&b"/bin/sh"[..]) && args.get(3) == Some(&&b"scaled"[..]) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_scale_changes_the_count_and_restarts_nothing() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scaled.yaml");
    std::fs::write(&file, SPEC).unwrap();
    let out = corral(&url, &["run", file.to_str().unwrap(), "--timeout", "90s"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = running(&url, "scaled").await;
    assert_eq!(before.len(), 2);
    let procs_before = task_pids();
    assert_eq!(procs_before.len(), 2, "{procs_before:?}");

    // Up: the two keep running (same ids, same processes), one more.
    let out = corral(&url, &["job", "scale", "scaled", "3", "--timeout", "90s"]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("job scaled: count 3, stored as version 2"),
        "{err}"
    );
    let after = running(&url, "scaled").await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(&after[..2], &before[..], "the running ones are kept");
    let procs_after = task_pids();
    for p in &procs_before {
        assert!(procs_after.contains(p), "process {p} was restarted");
    }
    // The same count again: nothing stored.
    let out = corral(&url, &["job", "scale", "scaled", "scaled", "3"]).await;
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("nothing to do"),
        "{}",
        text(&out.stderr)
    );
    // Down to 1: index 0 stays.
    let out = corral(&url, &["job", "scale", "scaled", "1", "--timeout", "90s"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hist = corral(&url, &["job", "history", "scaled", "-o", "json"]).await;
    let versions: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 3, "{versions}");
    let mut left = running(&url, "scaled").await;
    for _ in 0..50 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        left = running(&url, "scaled").await;
    }
    assert_eq!(left, vec![before[0].clone()]);

    // What a job file would refuse is refused, and nothing is stored.
    for (args, says) in [
        (
            vec!["job", "scale", "scaled", "nope", "2"],
            "has no group `nope`",
        ),
        (
            vec!["job", "scale", "scaled", "two"],
            "not a count from 0 to 100000",
        ),
        (
            vec!["job", "scale", "scaled", "4294967295"],
            "not a count from 0 to 100000",
        ),
        (vec!["job", "scale", "missing", "2"], "missing"),
    ] {
        let out = corral(&url, &args).await;
        let err = text(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let hist = corral(&url, &["job", "history", "scaled", "-o", "json"]).await;
    let versions: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 3);

    // `alloc restart`: the same allocation, a new process, counted in its
    // restarts but not against its policy (attempts: 0 would fail it).
    let (old, index) = left[0].clone();
    let pid_before = task_pids();
    for n in 1..=2 {
        let out = corral(&url, &["alloc", "restart", &old[..8]]).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            text(&out.stdout).contains(&format!("task scaled runs again (restart {n})")),
            "{}",
            text(&out.stdout)
        );
    }
    assert_eq!(running(&url, "scaled").await, vec![(old.clone(), index)]);
    let pid_now = task_pids();
    assert_eq!(pid_now.len(), 1, "{pid_now:?}");
    assert!(!pid_before.contains(&pid_now[0]), "a new process runs it");
    let out = corral(&url, &["alloc", "restart", &old, "--task", "nope"]).await;
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no task `nope`"),
        "{err}"
    );

    // `alloc stop`: that process ends, a new allocation runs in its slot.
    let pid_before = task_pids();
    let out = corral(&url, &["alloc", "stop", &old[..8]]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        text(&out.stdout).contains("runs again as allocation"),
        "{}",
        text(&out.stdout)
    );
    let now = running(&url, "scaled").await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].0, old);
    assert_eq!(now[0].1, index);
    let pid_after = task_pids();
    assert_eq!(pid_after.len(), 1, "{pid_after:?}");
    assert!(!pid_before.contains(&pid_after[0]), "a new process runs it");
    // Stopping it again is refused with why.
    let out = corral(&url, &["alloc", "stop", &old]).await;
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing to stop"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_init_writes_jobs_that_plan_and_completion_prints_scripts() {
    let cluster = TestCluster::start().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.yaml");
    let full = dir.path().join("full.yaml");
    for (file, extra) in [(&short, Some("--short")), (&full, None)] {
        let mut args = vec!["job", "init", file.to_str().unwrap()];
        args.extend(extra);
        let out = corral(&url, &args).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        // A plan parses it as `corral run` would (exit 3: nothing can be
        // placed on a cluster without nodes, which is not a spec error).
        let plan = corral(&url, &["plan", file.to_str().unwrap()]).await;
        let err = text(&plan.stderr);
        assert!(
            plan.status.code() == Some(0) || plan.status.code() == Some(3),
            "{file:?}: {err}"
        );
        assert!(!err.contains("error"), "{file:?}: {err}");
    }
    // It never overwrites unless told.
    let out = corral(&url, &["job", "init", short.to_str().unwrap()]).await;
    assert!(!out.status.success() && text(&out.stderr).contains("--force"));
    let out = corral(&url, &["job", "init", "-", "--short"]).await;
    assert!(text(&out.stdout).contains("count: 3"));

    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef corral"),
        ("fish", "complete -c corral"),
    ] {
        let out = corral(&url, &["completion", shell]).await;
        assert!(out.status.success());
        let script = text(&out.stdout);
        assert!(
            script.contains(marker),
            "{shell}: {}",
            &script[..200.min(script.len())]
        );
        assert!(
            script.contains("scale") && script.contains("volume"),
            "{shell}"
        );
    }
}
