//! The `corral` binary as users run it: exit codes, `--json`, errors that
//! say what to do, and kill -9 of a server losing no acknowledged job.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use corral_client::Client;
use corral_testkit::{TestCluster, eventually};

mod common;
use common::{corral, free_port, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_json_and_exit_codes() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();

    let good = dir.path().join("sleeper.yaml");
    std::fs::write(
        &good,
        "driver: exec\ncommand: [/bin/sh, -c, 'while true; do sleep 1; done', cli-sleeper]\ncount: 2\nresources: {cpu: 50m, memory: 16M}\nkill_timeout: 1s\n",
    )
    .unwrap();
    let u = url.clone();
    let g = good.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["run", g.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("2/2 running"),
        "{}",
        text(&out.stderr)
    );

    // status --json: name, version, status, allocations[] with id, node,
    // group, status and tasks{state, restarts, exit_code}.
    let out = corral(&url, &["status", "sleeper", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "sleeper", "job name comes from the file name");
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "running");
    let allocs = v["allocations"].as_array().unwrap();
    assert_eq!(allocs.len(), 2);
    for a in allocs {
        assert!(a["id"].is_string());
        assert_eq!(a["node"], "node-0");
        assert_eq!(a["group"], "sleeper");
        assert_eq!(a["status"], "running");
        assert_eq!(a["tasks"]["sleeper"]["state"], "running");
        assert_eq!(a["tasks"]["sleeper"]["restarts"], 0);
    }

    // Every listing has --json.
    for args in [
        vec!["status", "--json"],
        vec!["alloc", "ls", "--json"],
        vec!["node", "ls", "--json"],
    ] {
        let out = corral(&url, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{args:?}: {v}");
    }
    let nodes: serde_json::Value =
        serde_json::from_slice(&corral(&url, &["node", "ls", "--json"]).stdout).unwrap();
    let node_id = nodes[0]["id"].as_str().unwrap().to_string();
    let out = corral(&url, &["node", "status", &node_id[..8], "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alloc_id = allocs[0]["id"].as_str().unwrap();
    let out = corral(&url, &["alloc", "status", alloc_id, "--json"]);
    assert!(out.status.success());

    // A misspelt field: refused with file:line:column and a suggestion,
    // exit 1, nothing stored.
    let bad = dir.path().join("typo.yaml");
    std::fs::write(&bad, "driver: exec\ncommand: [/bin/true]\ncuont: 3\n").unwrap();
    let out = corral(&url, &["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("typo.yaml:3:1"), "{err}");
    assert!(err.contains("did you mean `count`"), "{err}");
    assert!(corral(&url, &["status", "typo"]).status.code() == Some(1));

    // A crashing command: run fails with the reason.
    let crash = dir.path().join("crash.yaml");
    std::fs::write(
        &crash,
        "driver: exec\ncommand: [/bin/sh, -c, 'exit 7']\nrestart: {attempts: 1, delay: 100ms, interval: 1m}\nresources: {cpu: 50m, memory: 16M}\n",
    )
    .unwrap();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        corral(&u, &["run", crash.to_str().unwrap(), "--timeout", "60s"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("exited with code 7"),
        "{}",
        text(&out.stderr)
    );

    // --detach returns at once; stop --json.
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["stop", "sleeper", "--json"]))
        .await
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["eval_id"].is_string());
    cluster.shutdown().await;
}

#[test]
fn unreachable_server_says_what_to_do() {
    let out = corral("http://127.0.0.1:1", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("corral dev"), "{err}");
}

fn spawn_dev(dir: &std::path::Path, port: u16, token: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "dev",
            "--no-containers",
            "--no-router",
            "--data-dir",
            dir.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--api-token",
            token,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dev starts")
}

/// `corral dev --token` requires the token on its API as `corral server`
/// does (its own agent sends it), and refuses a blank one at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_a_token_requires_it_and_refuses_a_blank_one() {
    let missing = if corral_testkit::procs::is_root() {
        vec![]
    } else {
        vec!["root (cgroups)".to_string()]
    };
    if !corral_testkit::prereq::can_run(
        "dev_with_a_token_requires_it_and_refuses_a_blank_one",
        "run corral dev",
        &missing,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for blank in ["", "  "] {
        let mut dev = spawn_dev(&dir.path().join("blank"), free_port(), blank);
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = dev.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                dev.kill().unwrap();
                dev.wait().unwrap();
                panic!("corral dev started with the blank token {blank:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut dev.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{err}");
        assert!(err.contains("api_token is empty"), "{err}");
    }

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut dev = spawn_dev(&dir.path().join("dev"), port, "secret");
    let with = Client::new(&url, Some("secret".into()));
    // The in-process agent registered: it sends the token.
    eventually("dev's node ready", Duration::from_secs(30), || async {
        match with.nodes().await {
            Ok(n) if n.len() == 1 => Ok(()),
            Ok(n) => Err(format!("{} nodes", n.len())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let without = Client::new(&url, None).nodes().await;
    let wrong = Client::new(&url, Some("guess".into())).nodes().await;
    dev.kill().unwrap();
    dev.wait().unwrap();
    assert_eq!(without.map(|_| ()).unwrap_err().status(), Some(401));
    assert_eq!(wrong.map(|_| ()).unwrap_err().status(), Some(401));
}

fn spawn_server(dir: &std::path::Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "server",
            "--data-dir",
            dir.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(&url, None);
    let mut server = spawn_server(dir.path(), port);
    eventually("server up", Duration::from_secs(20), || async {
        client.jobs().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    // Submit from four writers and kill the server in the middle of it.
    let acked_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = client.clone();
        let n = acked_count.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                let name = format!("w{w}-j{i}");
                let spec = format!("name: {name}\ndriver: exec\ncommand: [/bin/true]\n");
                match c.submit(&spec, "j.yaml").await {
                    Ok(_) => {
                        acked.push(name);
                        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    eventually(
        "some submissions acknowledged",
        Duration::from_secs(30),
        || async {
            let n = acked_count.load(std::sync::atomic::Ordering::SeqCst);
            if n >= 40 {
                Ok(())
            } else {
                Err(format!("{n} acked"))
            }
        },
    )
    .await;
    server.kill().unwrap();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let _ = server.wait();
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the kill"
    );
    let mut server = spawn_server(dir.path(), port);
    let jobs = eventually("server back", Duration::from_secs(20), || async {
        client.jobs().await.map_err(|e| e.to_string())
    })
    .await;
    let names: std::collections::BTreeSet<_> = jobs.iter().map(|j| j.name.clone()).collect();
    for a in &acked {
        assert!(
            names.contains(a),
            "acknowledged job {a} lost after kill -9 ({} acked, {} found)",
            acked.len(),
            names.len()
        );
    }
    server.kill().unwrap();
    let _ = server.wait();
}

/// Issue 14, case 11: a bad flag value or a missing choice is a usage
/// error (exit 2, as clap's own), said before anything is sent.
#[test]
fn bad_flags_are_usage_errors() {
    let nowhere = "http://127.0.0.1:9";
    for args in [
        &["run", "--timeout", "bogus", "x.yaml"][..],
        &["node", "eligibility", "abc"],
        &["node", "eligibility", "abc", "--enable", "--disable"],
    ] {
        let out = corral(nowhere, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("Usage:") || text(&out.stderr).contains("--help"));
    }
}

/// `corral --token T server` once made the server require T: now that the
/// server's token is `--api-token`, the old order is refused, never run
/// open; client commands still take the flags before them.
#[test]
fn client_flags_before_a_role_are_refused() {
    for args in [
        vec!["--token", "t", "server", "--data-dir", "/nonexistent/x"],
        vec![
            "--api",
            "http://127.0.0.1:1",
            "dev",
            "--data-dir",
            "/nonexistent/x",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("--api-token"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["--api", "http://127.0.0.1:1", "status"])
        .env_remove("CORRAL_ADDR")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("cannot reach the server at http://127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}
