//! The check state machine, planning, addresses, the probes against local
//! sockets, and check loops driving a fake driver's tasks (paused time).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use corral_types::units::Millis;
use corral_types::{
    CheckKind, CheckRestart, CheckSpec, CheckStatus, DriverKind, GroupSpec, NetworkMode,
    RestartMode, RestartPolicy, TaskLifecycle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tracker::{OUTPUT_LIMIT, cut};
use super::*;
use crate::driver::fake::{FakeCall, FakeDriver};
use crate::driver::{ExecOutput, TaskContext};
use crate::task_runner::{MemorySink, TaskOutcome, TaskRunner};

fn spec(kind: CheckKind) -> CheckSpec {
    CheckSpec {
        name: "web-check".into(),
        kind,
        port: None,
        task: None,
        interval: Millis::from_secs(1),
        timeout: Millis(500),
        success_threshold: 1,
        failure_threshold: 1,
        grace: Millis(0),
        check_restart: None,
    }
}

fn exec_spec(command: &[&str]) -> CheckSpec {
    spec(CheckKind::Exec {
        command: command.iter().map(|s| s.to_string()).collect(),
    })
}

fn pass() -> Probe {
    Probe::Pass("ok".into())
}

fn fail(why: &str) -> Probe {
    Probe::Fail(why.into())
}

#[test]
fn thresholds_decide_the_status() {
    let mut s = exec_spec(&["x"]);
    s.success_threshold = 2;
    s.failure_threshold = 3;
    let mut t = CheckTracker::new(&s);
    t.task_started(0);
    assert_eq!(t.status(), CheckStatus::Pending);
    assert!(!t.record(1, pass()).status_changed);
    assert_eq!(t.status(), CheckStatus::Pending);
    assert!(t.record(2, pass()).status_changed);
    assert_eq!(t.status(), CheckStatus::Passing);
    // Two failures are below the threshold: still passing, but counted.
    t.record(3, fail("boom"));
    t.record(4, fail("boom"));
    assert_eq!(t.status(), CheckStatus::Passing);
    assert_eq!(t.consecutive_failures(), 2);
    assert!(t.record(5, fail("boom")).status_changed);
    assert_eq!(t.status(), CheckStatus::Failing);
    let st = t.state("app", 99);
    assert_eq!(
        (
            st.task.as_str(),
            st.consecutive_failures,
            st.output.as_str(),
            st.at
        ),
        ("app", 3, "boom", 99)
    );
    // One pass is not enough to come back (success_threshold 2), but it
    // resets the failures.
    t.record(6, pass());
    assert_eq!(t.status(), CheckStatus::Failing);
    assert_eq!(t.consecutive_failures(), 0);
    t.record(7, pass());
    assert_eq!(t.status(), CheckStatus::Passing);
}

#[test]
fn failures_within_grace_do_not_count() {
    let mut s = exec_spec(&["x"]);
    s.grace = Millis::from_secs(10);
    let mut t = CheckTracker::new(&s);
    t.task_started(1_000);
    t.record(5_000, fail("starting"));
    t.record(10_999, fail("starting"));
    assert_eq!(t.status(), CheckStatus::Pending);
    assert_eq!(t.consecutive_failures(), 0);
    assert_eq!(t.state("app", 0).output, "starting");
    // A pass within grace counts.
    t.record(11_000, fail("still"));
    assert_eq!(t.status(), CheckStatus::Failing);
    t.record(11_500, pass());
    assert_eq!(t.status(), CheckStatus::Passing);
    // A restart of the task: pending again, grace again.
    t.task_started(20_000);
    assert_eq!(t.status(), CheckStatus::Pending);
    t.record(25_000, fail("starting"));
    assert_eq!(t.status(), CheckStatus::Pending);
}

#[test]
fn check_restart_counts_after_its_grace_and_starts_over() {
    let mut s = exec_spec(&["x"]);
    s.name = "app-exec".into();
    s.check_restart = Some(CheckRestart {
        limit: 2,
        grace: Millis::from_secs(5),
    });
    let mut t = CheckTracker::new(&s);
    t.task_started(0);
    assert_eq!(t.record(1_000, fail("no")).restart, None);
    assert_eq!(t.record(2_000, fail("no")).restart, None);
    assert_eq!(t.record(5_000, fail("no")).restart, None);
    // A pass resets the count.
    t.record(6_000, pass());
    assert_eq!(t.record(7_000, fail("no")).restart, None);
    let r = t.record(8_000, fail("exit code 3: down")).restart;
    assert_eq!(
        r.as_deref(),
        Some(
            "check `app-exec` failed 2 times in a row (last: exit code 3: down); check_restart restarts the task"
        )
    );
    // The count starts over after a request.
    assert_eq!(t.record(9_000, fail("no")).restart, None);
    assert!(t.record(10_000, fail("no")).restart.is_some());
}

#[test]
fn outputs_are_cut_on_one_line() {
    assert_eq!(cut("  a\nb\t "), "a b");
    let long = "é".repeat(OUTPUT_LIMIT);
    let c = cut(&long);
    assert!(
        c.ends_with("...") && c.len() <= OUTPUT_LIMIT + 3,
        "{}",
        c.len()
    );
}

#[test]
fn addresses_per_driver_and_network() {
    let pod = Some(IpAddr::V4(Ipv4Addr::new(10, 78, 1, 5)));
    let local = |p| SocketAddr::from(([127, 0, 0, 1], p));
    assert_eq!(
        address(
            DriverKind::Container,
            NetworkMode::Bridge,
            pod,
            8080,
            Some(20001)
        ),
        SocketAddr::from(([10, 78, 1, 5], 8080))
    );
    // No pod IP: the mapped host port.
    assert_eq!(
        address(
            DriverKind::Container,
            NetworkMode::Bridge,
            None,
            8080,
            Some(20001)
        ),
        local(20001)
    );
    assert_eq!(
        address(
            DriverKind::Container,
            NetworkMode::Host,
            pod,
            8080,
            Some(8080)
        ),
        local(8080)
    );
    // Exec tasks listen on their assigned port.
    assert_eq!(
        address(
            DriverKind::Exec,
            NetworkMode::Bridge,
            None,
            8080,
            Some(20002)
        ),
        local(20002)
    );
    assert_eq!(
        address(DriverKind::Exec, NetworkMode::Host, None, 8080, None),
        local(8080)
    );
}

fn group(yaml: &str) -> GroupSpec {
    let jobs =
        corral_types::spec::parse_jobs(yaml, "j.yaml", corral_types::spec::SourceFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}"));
    jobs[0].groups[0].clone()
}

#[test]
fn plan_resolves_tasks_and_ports() {
    let g = group(
        "
name: shop
groups:
  - name: web
    service:
      name: web
      port: http
      checks: [{type: http, path: /}, {type: exec, command: [ok]}]
    tasks:
      - {name: app, image: a, ports: {http: 8080}, check: {type: tcp, port: admin}}
      - {name: side, image: b, ports: {admin: 9000}}
",
    );
    let p = plan(&g);
    let summary: Vec<(&str, &str, Option<String>)> = p
        .iter()
        .map(|c| {
            (
                c.spec.name.as_str(),
                c.task.as_str(),
                c.port.as_ref().map(PortRef::key),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("web-http", "app", Some("app.http".into())),
            ("web-exec", "app", None),
            ("app-tcp", "app", Some("side.admin".into())),
        ]
    );
    assert_eq!(p[0].port.as_ref().map(|p| p.number), Some(8080));
}

#[test]
fn reports_only_what_matters() {
    let mut t = CheckTracker::new(&exec_spec(&["x"]));
    t.task_started(0);
    let map = |t: &CheckTracker, at| CheckStates::from([("c".to_string(), t.state("app", at))]);
    let pending = map(&t, 1);
    assert!(worth_reporting(&CheckStates::new(), &pending));
    assert!(!worth_reporting(&pending, &map(&t, 2)));
    t.record(3, pass());
    let passing = map(&t, 3);
    assert!(worth_reporting(&pending, &passing));
    // Another pass, other output and time: nothing to report.
    t.record(4, Probe::Pass("other".into()));
    assert!(!worth_reporting(&passing, &map(&t, 4)));
    // A first failure below the threshold is, the next ones are not.
    let mut s = exec_spec(&["x"]);
    s.failure_threshold = 3;
    let mut t = CheckTracker::new(&s);
    t.record(1, pass());
    let before = map(&t, 1);
    t.record(2, fail("a"));
    let one = map(&t, 2);
    assert!(worth_reporting(&before, &one));
    t.record(3, fail("b"));
    assert!(!worth_reporting(&one, &map(&t, 3)));
}

/// Answers every connection with `response` once.
async fn http_server(response: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n])
                    .trim()
                    .to_lowercase()
                    .replace("\r\n", " | ");
                let answer = response
                    .replace("{len}", &req.len().to_string())
                    .replace("{req}", &req);
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn request<'a>(
    method: &'a str,
    status: (u16, u16),
    headers: &'a BTreeMap<String, String>,
) -> http::Request<'a> {
    http::Request {
        method,
        path: "/healthz",
        status,
        headers,
    }
}

#[tokio::test]
async fn http_probes() {
    let client = http::client().expect("client");
    let none = BTreeMap::new();
    let t = Duration::from_secs(2);
    let ok = http_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    assert_eq!(
        http::probe(&client, ok, request("GET", (200, 399), &none), t).await,
        Probe::Pass(format!("GET http://{ok}/healthz: HTTP 200 OK: ok"))
    );
    let redirect =
        http_server("HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n").await;
    assert!(matches!(
        http::probe(&client, redirect, request("GET", (200, 399), &none), t).await,
        Probe::Pass(_)
    ));
    match http::probe(&client, redirect, request("GET", (200, 299), &none), t).await {
        Probe::Fail(m) => assert_eq!(
            m,
            format!("GET http://{redirect}/healthz: HTTP 302 Found (expected 200-299)")
        ),
        p => panic!("{p:?}"),
    }
    // The method and headers are sent.
    let echo = http_server("HTTP/1.1 500 Oops\r\nContent-Length: {len}\r\n\r\n{req}").await;
    let headers = BTreeMap::from([
        ("X-Probe".to_string(), "yes".to_string()),
        ("Host".to_string(), "shop.example.com".to_string()),
    ]);
    match http::probe(&client, echo, request("POST", (200, 200), &headers), t).await {
        Probe::Fail(m) => {
            assert!(
                m.starts_with(&format!(
                    "POST http://{echo}/healthz: HTTP 500 Internal Server Error: post /healthz http/1.1 | "
                )),
                "{m}"
            );
            assert!(m.contains("x-probe: yes"), "{m}");
            assert!(m.contains("host: shop.example.com"), "{m}");
            assert!(m.ends_with("(expected 200)"), "{m}");
        }
        p => panic!("{p:?}"),
    }
    // Nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    match http::probe(&client, closed, request("GET", (200, 399), &none), t).await {
        Probe::Fail(m) => assert!(m.to_lowercase().contains("refused"), "{m}"),
        p => panic!("{p:?}"),
    }
    // A server that never answers: the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let started = std::time::Instant::now();
    match http::probe(
        &client,
        silent_addr,
        request("GET", (200, 399), &none),
        Duration::from_millis(300),
    )
    .await
    {
        Probe::Fail(m) => assert!(m.ends_with("no answer within 300ms"), "{m}"),
        p => panic!("{p:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(silent);
}

#[tokio::test]
async fn tcp_probes() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let open = l.local_addr().expect("addr");
    assert!(matches!(
        tcp::probe(open, Duration::from_secs(1)).await,
        Probe::Pass(_)
    ));
    drop(l);
    match tcp::probe(open, Duration::from_secs(1)).await {
        Probe::Fail(m) => assert!(m.starts_with(&format!("TCP connect {open}: ")), "{m}"),
        p => panic!("{p:?}"),
    }
}

/// A task run by a [`TaskRunner`] on the fake driver, linked for checks.
fn fake_task(
    driver: &Arc<FakeDriver>,
    restart: RestartPolicy,
    cancel: &CancellationToken,
) -> (TaskView, TaskRunner) {
    let task: corral_types::TaskSpec = serde_json::from_value(serde_json::json!({
        "name": "app", "driver": "exec", "command": ["app"], "kill_timeout": 1000
    }))
    .expect("task spec");
    let ctx = TaskContext {
        mounts: Default::default(),
        alloc: crate::driver::AllocContext {
            alloc_id: "a1".into(),
            job: "shop".into(),
            group: "web".into(),
            index: 0,
            node_id: "n1".into(),
            alloc_dir: "/tmp/a1".into(),
            ports: BTreeMap::new(),
            pod: Default::default(),
        },
        task,
        env: BTreeMap::new(),
        task_dir: "/tmp/a1/app".into(),
        stdout_path: "/tmp/a1/app.stdout".into(),
        stderr_path: "/tmp/a1/app.stderr".into(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = TaskRunner::new(
        driver.clone(),
        ctx,
        restart,
        Arc::new(MemorySink::new()),
        cancel.child_token(),
    )
    .with_restart_requests(rx);
    let link = TaskView {
        driver: driver.clone(),
        state: runner.subscribe(),
        handle: runner.subscribe_handle(),
        restart: tx,
    };
    (link, runner)
}

fn planned(spec: CheckSpec) -> PlannedCheck {
    PlannedCheck {
        spec,
        task: "app".into(),
        port: None,
    }
}

fn policy(attempts: u32) -> RestartPolicy {
    RestartPolicy {
        attempts,
        interval: Millis::from_secs(3600),
        delay: Millis::from_secs(1),
        mode: RestartMode::Fail,
    }
}

#[tokio::test(start_paused = true)]
async fn an_exec_check_runs_in_the_task_every_interval() {
    let driver = Arc::new(FakeDriver::new());
    driver.push_exec(Ok(ExecOutput {
        exit_code: 1,
        output: "not yet".into(),
    }));
    let cancel = CancellationToken::new();
    let (link, runner) = fake_task(&driver, policy(0), &cancel);
    let run = tokio::spawn(runner.run());
    let tasks = BTreeMap::from([("app".to_string(), link)]);
    let (mut rx, _loops) = spawn(
        vec![planned(exec_spec(&["/bin/check", "-q"]))],
        &tasks,
        NetworkMode::Bridge,
        BTreeMap::new(),
    );
    assert_eq!(rx.borrow()["web-check"].status, CheckStatus::Pending);
    let st = rx
        .wait_for(|m| m["web-check"].status == CheckStatus::Failing)
        .await
        .expect("failing")
        .clone();
    assert_eq!(st["web-check"].output, "exit code 1: not yet");
    assert_eq!(st["web-check"].consecutive_failures, 1);
    let t0 = tokio::time::Instant::now();
    rx.wait_for(|m| m["web-check"].status == CheckStatus::Passing)
        .await
        .expect("passing");
    // The second probe comes one interval after the first.
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(driver.execs(), 5);
    assert!(driver.calls().iter().any(|c| matches!(c,
        FakeCall::Exec { command, .. } if command == &["/bin/check", "-q"])));
    cancel.cancel();
    assert_eq!(run.await.expect("join"), TaskOutcome::Stopped);
}

#[tokio::test(start_paused = true)]
async fn check_restart_restarts_the_task_through_its_policy() {
    let driver = Arc::new(FakeDriver::new());
    driver.set_exec_default(Ok(ExecOutput {
        exit_code: 2,
        output: "down".into(),
    }));
    let cancel = CancellationToken::new();
    let (link, runner) = fake_task(&driver, policy(2), &cancel);
    let mut state = runner.subscribe();
    let run = tokio::spawn(runner.run());
    let tasks = BTreeMap::from([("app".to_string(), link)]);
    let mut s = exec_spec(&["check"]);
    s.name = "app-exec".into();
    s.check_restart = Some(CheckRestart {
        limit: 3,
        grace: Millis::from_secs(2),
    });
    let (_rx, _loops) = spawn(
        vec![planned(s)],
        &tasks,
        NetworkMode::Bridge,
        BTreeMap::new(),
    );
    let t0 = tokio::time::Instant::now();

    let restarting = state
        .wait_for(|s| s.state == TaskLifecycle::Restarting)
        .await
        .expect("restarting")
        .clone();
    assert_eq!(
        restarting.message,
        "check `app-exec` failed 3 times in a row (last: exit code 2: down); check_restart restarts the task; restarting in 1s"
    );
    // Probes at 0, 1, 2 (grace ends), 3 and 4 s: the third counted
    // failure is at 4 s.
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
    let running = state
        .wait_for(|s| s.state == TaskLifecycle::Running && s.restarts == 1)
        .await
        .expect("restarted")
        .clone();
    assert_eq!(
        running.message,
        "restarted (restart 1) after: check `app-exec` failed 3 times in a row (last: exit code 2: down); check_restart restarts the task"
    );
    // docs/CHECKS.md quotes both messages as they are (issue 14, case 9).
    let doc = include_str!("../../../../docs/CHECKS.md");
    for message in [&restarting.message, &running.message] {
        assert!(
            doc.contains(&format!("``{message}``")),
            "docs/CHECKS.md does not quote {message:?}"
        );
    }
    assert_eq!(driver.starts(), 2);
    // The policy allows two restarts; the third request fails the task.
    let outcome = run.await.expect("join");
    match outcome {
        TaskOutcome::Failed { reason } => assert!(
            reason.starts_with("exceeded 2 restarts in 1h and the restart mode is fail; last exit: check `app-exec` failed 3 times"),
            "{reason}"
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(driver.starts(), 3);
    assert_eq!(state.borrow().restarts, 2);
}
