//! `corral system gc` forces a garbage collection and reports it.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use corral_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_gc_reports_what_it_collected() {
    let cluster = TestCluster::start().await;
    let url = cluster.url();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_corral"))
                .args(args)
                .env("CORRAL_ADDR", &url)
                .output()
                .unwrap()
        };
        (run(&["system", "gc"]), run(&["system", "gc", "--json"]))
    })
    .await
    .unwrap();
    let (plain, json) = out;
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "garbage collected: 0 allocations, 0 evaluations, 0 deployments, 0 nodes\n"
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["nodes"], 0, "{v}");
    cluster.shutdown().await;
}
