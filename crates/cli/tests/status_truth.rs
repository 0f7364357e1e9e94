//! `corral status` never says running while nothing runs (issue 14, case
//! 2): the real binary against a real server and exec agent running real
//! tasks that exit, fail to start, or give up.
//!
//! Needs root (the exec driver's cgroups): skipped otherwise, a failure
//! with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use corral_testkit::prereq::can_run;
use corral_testkit::procs::is_root;
use corral_testkit::{TestCluster, eventually};

const D: Duration = Duration::from_secs(90);

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

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// A job of one exec task running `command`, with `restart`.
fn spec(name: &str, command: &str, restart: &str) -> String {
    format!(
        "name: {name}\n\
         driver: exec\n\
         command: {command}\n\
         resources: {{cpu: 50m, memory: 16M}}\n\
         restart: {restart}\n\
         kill_timeout: 1s\n"
    )
}

/// The line of `corral status` (the job list) that starts with `job`.
fn line<'a>(out: &'a str, job: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no line for {job} in:\n{out}"))
}

/// The allocation line of `corral status JOB` for the allocation `name`.
fn alloc_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no allocation line for {name} in:\n{out}"))
}

/// Waits until `corral status --json` shows `job`'s first allocation in
/// `state`; returns the job's JSON.
async fn wait_state(url: &str, job: &str, state: &str) -> serde_json::Value {
    eventually(&format!("{job}'s allocation {state}"), D, || async {
        let out = corral(url, &["status", job, "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", text(&out.stderr)))?;
        if v["allocations"][0]["state"] == state {
            Ok(v)
        } else {
            Err(format!("{:#}", v["allocations"]))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_restarting_and_failed_with_the_tasks_last_message() {
    if !is_root()
        && !can_run(
            "status_truth",
            "run exec tasks in cgroups",
            &["root".into()],
        )
    {
        return;
    }
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let c = &cluster.client;
    let pid = std::process::id();

    // Exits 3 and waits out a long restart delay; a command that cannot
    // start (as an image that cannot be pulled) waits the same way; one
    // whose restart policy gives up at once.
    c.submit(
        &spec(
            "crashy",
            &format!("[/bin/sh, -c, 'echo boom; exit 3', crashy-{pid}]"),
            "{attempts: 1, interval: 24h, delay: 1h, mode: fail}",
        ),
        "crashy.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &spec(
            "nostart",
            "[/nonexistent/corral-test-binary]",
            "{attempts: 1, interval: 24h, delay: 1h, mode: fail}",
        ),
        "nostart.yaml",
    )
    .await
    .unwrap();
    c.submit(
        &spec(
            "gaveup",
            &format!("[/bin/sh, -c, 'echo boom; exit 3', gaveup-{pid}]"),
            "{attempts: 0, mode: fail}",
        ),
        "gaveup.yaml",
    )
    .await
    .unwrap();

    // The API: the allocation stays pending (as Nomad's client status)
    // and says restarting, with the task's message; the job too.
    let v = wait_state(&url, "crashy", "restarting").await;
    let a = &v["allocations"][0];
    assert_eq!(a["status"], "pending", "{a:#}");
    assert_eq!(a["tasks"]["crashy"]["state"], "restarting", "{a:#}");
    assert_eq!(
        a["reason"], "task crashy: exited with code 3; restarting in 1h",
        "{a:#}"
    );
    assert_eq!(v["status"], "restarting", "{v:#}");
    assert_eq!(
        v["reason"], "crashy.crashy[0]: task crashy: exited with code 3; restarting in 1h",
        "{v:#}"
    );
    let v = wait_state(&url, "nostart", "restarting").await;
    let reason = v["allocations"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("task nostart: failed to start: ")
            && reason.contains("/nonexistent/corral-test-binary")
            && reason.ends_with("; restarting in 1h"),
        "{reason}"
    );
    assert_eq!(v["status"], "restarting", "{v:#}");
    let v = wait_state(&url, "gaveup", "failed").await;
    assert_eq!(v["status"], "failed", "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gaveup.gaveup[0]: task gaveup: exceeded 0 restarts"),
        "{reason}"
    );

    // The text: the job list and each job's allocation lines say it, with
    // the message on the line; nothing says running.
    let out = stdout(&corral(&url, &["status"]).await);
    let l = line(&out, "crashy");
    assert!(l.contains(" restarting "), "{out}");
    assert!(l.contains(" 0/1 "), "{out}");
    assert!(
        l.ends_with("crashy.crashy[0]: task crashy: exited with code 3; restarting in 1h"),
        "{out}"
    );
    let l = line(&out, "nostart");
    assert!(
        l.contains(" restarting ") && l.contains("failed to start"),
        "{out}"
    );
    let l = line(&out, "gaveup");
    assert!(
        l.contains(" failed ") && l.contains("exceeded 0 restarts"),
        "{out}"
    );
    assert!(!out.contains("running "), "{out}");

    let out = stdout(&corral(&url, &["status", "crashy"]).await);
    assert!(out.contains("status   restarting\n"), "{out}");
    assert!(
        out.contains(
            "reason   crashy.crashy[0]: task crashy: exited with code 3; restarting in 1h\n"
        ),
        "{out}"
    );
    let l = alloc_line(&out, "crashy.crashy[0]");
    assert!(l.contains(" restarting "), "{out}");
    assert!(
        l.ends_with("task crashy: exited with code 3; restarting in 1h"),
        "{out}"
    );
    let out = stdout(&corral(&url, &["status", "gaveup"]).await);
    assert!(out.contains("status   failed\n"), "{out}");
    let l = alloc_line(&out, "gaveup.gaveup[0]");
    assert!(
        l.contains(" failed ") && l.contains("exceeded 0 restarts"),
        "{out}"
    );

    // A fixed version runs: the job says running, with no reason left.
    c.submit(
        &spec(
            "crashy",
            &format!("[/bin/sh, -c, 'while true; do sleep 1; done', crashy-{pid}]"),
            "{attempts: 1, interval: 24h, delay: 1h, mode: fail}",
        ),
        "crashy.yaml",
    )
    .await
    .unwrap();
    eventually("crashy running again", D, || async {
        let out = stdout(&corral(&url, &["status"]).await);
        let l = line(&out, "crashy").to_string();
        if l.contains(" running ") && l.contains(" 1/1 ") && !l.contains("restarting") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    cluster.shutdown().await;
}
