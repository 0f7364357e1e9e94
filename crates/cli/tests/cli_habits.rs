//! The CLI's nomad/kubectl habits (issue 14, cases 11-18), run as users
//! run them against a real server and exec agent: `-o` formats, stdin
//! job files, `job inspect` round trips, `plan`'s exit code, addresses,
//! `stop` that waits for the processes, `deploy promote` that follows.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use corral_testkit::{TestCluster, eventually, procs};

mod common;
use common::{corral, text};

fn with_stdin(addr: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const WEB: &str = "name: habits\ndriver: exec\ncommand: [/bin/sh, -c, 'while true; do sleep 1; done', habits-marker]\ncount: 2\nports: {http: 8080}\nresources: {cpu: 50m, memory: 16M}\nkill_timeout: 2s\nupdate: {min_healthy_time: 1s}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_stdin_inspect_plan_and_stop() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();

    // `run -` reads the job from standard input.
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || with_stdin(&u, &["run", "-"], WEB))
        .await
        .unwrap();
    assert!(out.status.success(), "run -: {}", text(&out.stderr));

    // A spec on stdin without `name:` cannot be named after a file.
    let out = with_stdin(&url, &["plan", "-"], "image: org/app:1.0\n");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("<stdin>:1:1") && err.contains("add `name:`"),
        "{err}"
    );

    // -o yaml, -o name, -o wide, --json.
    let out = corral(&url, &["status", "habits", "-o", "yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    assert!(
        y.contains("name: habits") && y.contains("allocations:"),
        "{y}"
    );
    let out = corral(&url, &["alloc", "ls", "-o", "name"]);
    let ids: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|i| i.len() == 36), "full ids: {ids:?}");
    let out = corral(&url, &["status", "-o", "name"]);
    assert_eq!(text(&out.stdout), "habits\n");
    let out = corral(&url, &["alloc", "ls", "-o", "wide"]);
    let wide = text(&out.stdout);
    assert!(
        wide.contains(&ids[0]) && wide.contains("ADDRESSES"),
        "{wide}"
    );
    let out = corral(&url, &["status", "--json", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "--json and -o conflict");

    // `status JOB` shows where each allocation answers: host:port of its
    // one port, the same as the JSON's.
    let v: serde_json::Value =
        serde_json::from_slice(&corral(&url, &["status", "habits", "--json"]).stdout).unwrap();
    let human = text(&corral(&url, &["status", "habits"]).stdout);
    for a in v["allocations"].as_array().unwrap() {
        let addr = a["ports"]["habits.http"].as_str().unwrap();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        assert!(
            human.contains(addr),
            "status does not show {addr}:\n{human}"
        );
    }

    // `job inspect` prints a job file that `run -` takes back unchanged.
    let out = corral(&url, &["job", "inspect", "habits"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec = text(&out.stdout);
    assert!(
        spec.contains("kill_timeout: 2s"),
        "durations as the spec writes them:\n{spec}"
    );
    let out = with_stdin(&url, &["run", "-", "--detach"], &spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unchanged (version 1)"),
        "{}",
        text(&out.stderr)
    );
    let json_spec = text(&corral(&url, &["job", "inspect", "habits", "-o", "json"]).stdout);
    let out = with_stdin(&url, &["plan", "-"], &json_spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );

    // The spec inside `status -o json` is a job file too.
    let v: serde_json::Value =
        serde_json::from_slice(&corral(&url, &["status", "habits", "-o", "json"]).stdout).unwrap();
    assert_eq!(v["spec"]["groups"][0]["tasks"][0]["kill_timeout"], "2s");
    let out = with_stdin(&url, &["plan", "-"], &v["spec"].to_string());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );

    // So is the one `run -o json` prints once the job runs.
    let out = with_stdin(&url, &["run", "-", "-o", "json"], WEB);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = with_stdin(&url, &["plan", "-"], &v[0]["spec"].to_string());
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );
    // `job inspect` prints job files only: another format is a usage error.
    let out = corral(&url, &["job", "inspect", "habits", "-o", "wide"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // `plan` exits 3 when something cannot be placed, and says what.
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        "driver: exec\ncommand: [/bin/true]\nresources: {cpu: 50m, memory: 900G}\n",
    )
    .unwrap();
    let out = corral(&url, &["plan", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("  ! "), "{}", text(&out.stdout));
    let out = corral(&url, &["status", "huge"]);
    assert_eq!(out.status.code(), Some(1), "plan stored nothing");

    // Nodes by name or id prefix on every node command (the help says so).
    let node_id = text(&corral(&url, &["node", "ls", "-o", "name"]).stdout)
        .trim()
        .to_string();
    for (who, flag, want) in [
        ("node-0", "--disable", "ineligible"),
        (&node_id[..8], "--enable", "ready"),
    ] {
        let out = corral(&url, &["node", "eligibility", who, flag]);
        assert!(out.status.success(), "{who}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(want),
            "{who}: {}",
            text(&out.stdout)
        );
    }
    let out = corral(
        &url,
        &["node", "drain", "node-0", "--disable", "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // `stop` returns once the processes are gone, not when the stop is
    // stored.
    assert_eq!(procs::live_with_marker("habits-marker").len(), 2);
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["stop", "habits"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left = procs::live_with_marker("habits-marker");
    assert!(left.is_empty(), "stop returned while {left:?} still run");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_promote_follows_the_rollout() {
    let cluster = TestCluster::with_agent().await;
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canaried.yaml");
    let spec = |v: u32| {
        format!(
            "driver: exec\ncommand: [/bin/sh, -c, 'while true; do sleep 1; done', canaried-{v}]\ncount: 2\nresources: {{cpu: 50m, memory: 16M}}\nkill_timeout: 1s\nupdate: {{canary: 1, min_healthy_time: 1s}}\n"
        )
    };
    std::fs::write(&file, spec(1)).unwrap();
    let f = file.to_str().unwrap().to_string();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["run", &f]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(&file, spec(2)).unwrap();
    let f = file.to_str().unwrap().to_string();
    let u = url.clone();
    // `run` stops at the canary, waiting for promotion.
    let out = tokio::task::spawn_blocking(move || corral(&u, &["run", &f]))
        .await
        .unwrap();
    assert!(
        text(&out.stderr).contains("promote"),
        "{}",
        text(&out.stderr)
    );
    let c = corral_client::Client::new(&url, None);
    eventually("the canary is healthy", Duration::from_secs(60), || async {
        let d = c
            .deployment("canaried", None)
            .await
            .map_err(|e| e.to_string())?;
        let g = d.groups.values().next().ok_or("no group")?;
        if g.healthy >= 1 {
            Ok(())
        } else {
            Err(format!("{g:?}"))
        }
    })
    .await;
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["deploy", "promote", "canaried"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // It returned when the rollout ended: every process is version 2's.
    let d = c.deployment("canaried", None).await.unwrap();
    assert_eq!(d.status.to_string(), "successful", "{d:?}");
    assert_eq!(procs::live_with_marker("canaried-2").len(), 2);
    assert!(procs::live_with_marker("canaried-1").is_empty());
    cluster.shutdown().await;
}

#[test]
fn addresses_as_users_write_them() {
    // No scheme: http is assumed (kubectl and nomad do the same).
    let out = corral("127.0.0.1:1", &["status"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:1"),
        "{err}"
    );
    // Another scheme or a path: refused with what to write.
    for bad in ["ftp://127.0.0.1:1", "http://127.0.0.1:1/v1"] {
        let out = corral(bad, &["status"]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("http://HOST:PORT") && err.contains("CORRAL_ADDR"),
            "{err}"
        );
    }
}

/// Another web server on the address: one line saying so, never its HTML.
#[test]
fn another_web_server_is_named_in_one_line() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(2) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = "<html><body><h1>404 Not Found</h1>\n<p>nginx</p></body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let out = corral(&format!("http://{addr}"), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(!err.contains("<html"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not corral's API"), "{err}");
}

/// A server that takes the connection and never answers: the command ends
/// with a one-line error instead of hanging.
#[test]
fn a_silent_server_does_not_hang_the_cli() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _hold = std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let out = corral(&addr.to_string(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("did not answer within 30s"), "{err}");
}

/// `corral logs JOB` over several allocations: when one cannot be read
/// (its node's agent is gone), the others are shown and the command still
/// fails, saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_several_allocations_fail_when_one_cannot_be_read() {
    let mut cluster = TestCluster::with_agent().await;
    cluster.add_agent("node-1", Default::default()).await;
    let url = cluster.url();
    let spec = "name: talkers\ndriver: exec\ncommand: [/bin/sh, -c, 'echo hello from $CORRAL_ALLOC_ID; while true; do sleep 1; done', talkers-marker]\ncount: 2\ndistinct_hosts: true\nresources: {cpu: 50m, memory: 16M}\nkill_timeout: 1s\n";
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || with_stdin(&u, &["run", "-"], spec))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["logs", "talkers"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("hello from").count(), 2);
    // node-1's agent goes (its task runs on); its allocation's log cannot
    // be fetched any more.
    cluster.take_agent("node-1").unwrap().shutdown().await;
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || corral(&u, &["logs", "talkers"]))
        .await
        .unwrap();
    // node-0's allocation is shown; node-1's (and a replacement the
    // scheduler may have placed there meanwhile) fail, and so does the
    // command.
    assert!(
        text(&out.stdout).contains("hello from"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach the agent"), "{err}");
    assert!(
        err.contains("allocations of talkers failed (above)"),
        "{err}"
    );
    for pid in procs::live_with_marker("talkers-marker") {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    cluster.shutdown().await;
}
