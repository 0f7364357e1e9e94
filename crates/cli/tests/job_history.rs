//! `corral run`, `corral job history`, `corral job revert` and `corral
//! deploy status|list` end to end: the real binary against a real server
//! and exec agent, deployments moved along by the real watcher.

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

fn spec(value: &str) -> String {
    format!(
        "driver: exec\n\
         command: [/bin/sh, -c, 'while true; do sleep 1; done', hist]\n\
         env: {{FOO: {value}}}\n\
         count: 1\n\
         resources: {{cpu: 50m, memory: 16M}}\n\
         kill_timeout: 1s\n\
         update: {{min_healthy_time: 500ms, healthy_deadline: 30s, progress_deadline: 60s}}\n"
    )
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_with_diffs_and_revert_through_a_deployment() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hist.yaml");
    let file = file.to_str().unwrap();

    // Version 1, then version 2 with another FOO: each rolls out.
    for (value, v) in [("bar", 1), ("baz", 2)] {
        std::fs::write(file, spec(value)).unwrap();
        let out = corral(&url, &["run", file, "--timeout", "90s"]).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "version {v}: {err}");
        assert!(
            err.contains(&format!("hist: version {v} running: hist 0/1 healthy")),
            "version {v}: {err}"
        );
        assert!(
            err.contains(&format!("job hist: version {v} deployed: 1/1 running")),
            "version {v}: {err}"
        );
    }

    // history --json: newest first, each with its changes.
    let h = json(&corral(&url, &["job", "history", "hist", "--json"]).await);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["version"], 2);
    assert_eq!(h[0]["previous"], 1);
    assert_eq!(h[0]["stable"], true, "its deployment succeeded");
    assert!(h[0]["submitted_at"].is_u64());
    assert_eq!(h[0]["spec"]["name"], "hist");
    assert_eq!(
        h[0]["changes"],
        serde_json::json!([{"path": "groups[hist].tasks[hist].env.FOO", "old": "bar", "new": "baz"}])
    );
    assert_eq!(h[1]["version"], 1);
    assert!(h[1]["previous"].is_null());
    assert_eq!(h[1]["changes"], serde_json::json!([]));

    let out = corral(&url, &["job", "history", "hist"]).await;
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.contains("version 2  submitted"), "{s}");
    assert!(
        s.contains("  - groups[hist].tasks[hist].env.FOO: \"bar\"\n  + groups[hist].tasks[hist].env.FOO: \"baz\""),
        "{s}"
    );
    assert!(s.contains("  first version"), "{s}");

    // Revert to version 1: stored as version 3 and rolled out.
    let out = corral(&url, &["job", "revert", "hist", "1", "--timeout", "90s"]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("job hist: version 1 stored again as version 3"),
        "{err}"
    );
    assert!(
        err.contains("hist: version 3 running (rollback to version 1)"),
        "{err}"
    );
    assert!(
        err.contains("job hist: version 3 deployed: 1/1 running"),
        "{err}"
    );
    let h = json(&corral(&url, &["job", "history", "hist", "--json"]).await);
    assert_eq!(h[0]["version"], 3);
    assert_eq!(h[0]["reverts_to"], 1);
    assert_eq!(
        h[0]["changes"],
        serde_json::json!([{"path": "groups[hist].tasks[hist].env.FOO", "old": "baz", "new": "bar"}])
    );
    let v = json(&corral(&url, &["status", "hist", "--json"]).await);
    assert_eq!(v["spec"]["groups"][0]["tasks"][0]["env"]["FOO"], "bar");
    // `corral status` names the version's rollout.
    let out = corral(&url, &["status", "hist"]).await;
    assert!(
        text(&out.stdout).contains("deployment successful (1/1 healthy)"),
        "{}",
        text(&out.stdout)
    );

    // Reverting to what already runs says so.
    let out = corral(&url, &["job", "revert", "hist", "3"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already runs the spec of version 3"),
        "{}",
        text(&out.stderr)
    );

    // deploy status / list --json.
    let d = json(&corral(&url, &["deploy", "status", "hist", "--json"]).await);
    assert_eq!(d["job"], "hist");
    assert_eq!(d["job_version"], 3);
    assert_eq!(d["status"], "successful");
    assert_eq!(d["reverts_to"], 1);
    assert_eq!(d["groups"]["hist"]["desired_total"], 1);
    assert_eq!(d["groups"]["hist"]["healthy"], 1);
    let l = json(&corral(&url, &["deploy", "list", "hist", "--json"]).await);
    let versions: Vec<u64> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["job_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![3, 2, 1], "newest first");
    let out = corral(&url, &["deploy", "status", "hist"]).await;
    let s = text(&out.stdout);
    assert!(s.contains("status       successful"), "{s}");
    assert!(s.contains("hist   1        1       1"), "{s}");

    // An unknown job: say so, and what to do.
    let out = corral(&url, &["deploy", "status", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "no deployment for job nosuch: there is no job nosuch; run it with `corral run nosuch.yaml`"
        ),
        "{}",
        text(&out.stderr)
    );
    for args in [
        vec!["job", "history", "nosuch"],
        vec!["job", "revert", "nosuch", "1"],
    ] {
        let out = corral(&url, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("job \"nosuch\" not found"), "{args:?}: {err}");
        assert!(err.contains("corral status"), "{args:?}: {err}");
    }

    let out = corral(&url, &["stop", "hist"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.shutdown().await;
}
