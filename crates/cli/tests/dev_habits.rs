//! `corral dev` as a new user meets it (issue 14, cases 9, 15, 18): the
//! `export CORRAL_ADDR` line, restored jobs and `--fresh`, `--config`, a
//! client's CORRAL_TOKEN left in the shell not configuring it, logs
//! without colour codes, and `logs -f` failing loudly when it dies.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_testkit::eventually;

mod common;
use common::{corral, free_port, text};

fn dev(dir: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "dev",
            "--no-containers",
            "--no-router",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(extra)
        // A client's token left in the shell: dev must not require it.
        .env("CORRAL_TOKEN", "left-in-the-shell")
        .env_remove("CORRAL_API_TOKEN")
        .env_remove("CORRAL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn ready(url: &str) {
    let c = Client::new(url, None);
    eventually("dev's node ready", Duration::from_secs(30), || async {
        match c.nodes().await {
            Ok(n) if n.len() == 1 && n[0].status == "ready" => Ok(()),
            Ok(n) => Err(format!("{n:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// SIGTERM, wait, and the stderr it wrote.
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

fn can_run(name: &str) -> bool {
    let missing = if corral_testkit::procs::is_root() {
        vec![]
    } else {
        vec!["root (cgroups)".to_string()]
    };
    corral_testkit::prereq::can_run(name, "run corral dev", &missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_says_where_it_listens_what_it_restored_and_takes_a_config() {
    if !can_run("dev_says_where_it_listens_what_it_restored_and_takes_a_config") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let config = tmp.path().join("dev.toml");
    // A config only `--config` can bring: an unknown webhook scheme is
    // refused, so a refusal proves the file was read.
    std::fs::write(&config, "[server.alerts]\nwebhooks = [\"ftp://x\"]\n").unwrap();
    let port = free_port();
    let child = dev(&data, port, &["--config", config.to_str().unwrap()]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("alerts.webhooks"),
        "dev ignored --config:\n{err}"
    );

    // `data_dir` is `corral server`'s: refused, naming what to use.
    std::fs::write(&config, "[server]\ndata_dir = \"/tmp/elsewhere\"\n").unwrap();
    let child = dev(&data, port, &["--config", config.to_str().unwrap()]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        text(&out.stderr).contains("--data-dir"),
        "{}",
        text(&out.stderr)
    );

    // The config's `addr` is where it listens when --addr is not given.
    std::fs::write(
        &config,
        format!("[server]\naddr = \"127.0.0.1:{port}\"\n[server.alerts]\neval_interval = \"2s\"\n"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "dev",
            "--no-containers",
            "--no-router",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(["--config", config.to_str().unwrap()])
        .env("CORRAL_TOKEN", "left-in-the-shell")
        .env_remove("CORRAL_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ready(&url).await;
    // No token required although CORRAL_TOKEN is set in its environment.
    let job = tmp.path().join("kept.yaml");
    std::fs::write(
        &job,
        "driver: exec\ncommand: [/bin/sh, -c, 'while true; do sleep 1; done', dev-habits-kept]\nresources: {cpu: 50m, memory: 16M}\nkill_timeout: 1s\n",
    )
    .unwrap();
    let (u, j) = (url.clone(), job.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["run", &j, "--api", &u])
            .env_remove("CORRAL_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = stop(child);
    assert!(
        err.contains(&format!("export CORRAL_ADDR=http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe:\n{err}");
    assert!(
        !err.contains("restored"),
        "nothing to restore the first time:\n{err}"
    );

    // Started again: it says what it restored and how to start empty, and
    // the job runs again (its task was stopped with the dev before).
    let child = dev(&data, port, &[]);
    ready(&url).await;
    let c = Client::new(&url, None);
    eventually(
        "the restored job runs again",
        Duration::from_secs(60),
        || async {
            let j = c.job("kept", None).await.map_err(|e| e.to_string())?;
            let running: u32 = j.groups.iter().map(|g| g.running).sum();
            let procs = corral_testkit::procs::live_with_marker("dev-habits-kept").len();
            if running == 1 && procs == 1 {
                Ok(())
            } else {
                Err(format!("{running} running, {procs} processes"))
            }
        },
    )
    .await;
    let err = stop(child);
    assert!(
        err.contains("restored 1 job") && err.contains("kept") && err.contains("--fresh"),
        "{err}"
    );
    // --fresh: empty.
    let child = dev(&data, port, &["--fresh"]);
    ready(&url).await;
    let jobs = Client::new(&url, None).jobs().await.unwrap();
    let err = stop(child);
    assert!(jobs.is_empty(), "{jobs:?}");
    assert!(!err.contains("restored"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_fails_when_the_server_goes_away() {
    if !can_run("logs_follow_fails_when_the_server_goes_away") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = dev(&tmp.path().join("dev"), port, &[]);
    ready(&url).await;
    let job = tmp.path().join("talker.yaml");
    std::fs::write(
        &job,
        "driver: exec\ncommand: [/bin/sh, -c, 'while true; do echo tick; sleep 1; done', dev-habits-talker]\nresources: {cpu: 50m, memory: 16M}\nkill_timeout: 1s\n",
    )
    .unwrap();
    let (u, j) = (url.clone(), job.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || corral(&u, &["run", &j]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let follower = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["logs", "talker", "-f"])
        .env("CORRAL_ADDR", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A clean shutdown (SIGTERM) ends the stream without an error on the
    // wire: the follower must still say so and fail.
    let _ = stop(child);
    let out = tokio::task::spawn_blocking(move || follower.wait_with_output().unwrap())
        .await
        .unwrap();
    // The exec task outlives a killed dev; clean it up.
    for pid in corral_testkit::procs::live_with_marker("dev-habits-talker") {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(text(&out.stdout).contains("tick"), "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("server"), "{err}");
}

/// An agent that cannot reach its server names the settings it reads
/// (`--server`/`CORRAL_SERVER`), not the CLI's CORRAL_ADDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_names_its_own_server_setting() {
    if !can_run("an_agent_names_its_own_server_setting") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["agent", "--server", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", tmp.path().join("agent").to_str().unwrap()])
        .env_remove("CORRAL_SERVER")
        .env_remove("CORRAL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let err = stop(child);
    assert!(err.contains("retrying"), "{err}");
    assert!(
        err.contains("CORRAL_SERVER") && !err.contains("CORRAL_ADDR"),
        "{err}"
    );
    // The agent took `host:port` as http://host:port.
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:"),
        "{err}"
    );
}
