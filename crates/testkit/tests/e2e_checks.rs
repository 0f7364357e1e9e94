//! Health checks end to end: a real server and agent, real processes and
//! sockets. With the exec driver: an http check passes against a real
//! busybox httpd, a tcp check fails against a closed port, an exec check
//! runs in the task's environment, and `check_restart` restarts a task
//! whose check keeps failing. With real containers (a private containerd):
//! an http check reaches the pod at its pod IP, and an exec check runs in
//! the container through CRI ExecSync.
//!
//! Needs root (cgroups) and busybox-static; the container test also
//! containerd, runc and the CNI plugins. Skipped with a message when
//! missing, a failure with `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use corral_agent::image::{BUSYBOX, DEMO_IMAGE};
use corral_client::Client;
use corral_testkit::containers::{self, ContainerNode};
use corral_testkit::jobs::{self, summary};
use corral_testkit::procs::is_root;
use corral_testkit::{TestCluster, eventually, prereq};
use corral_types::api::AllocView;
use corral_types::{CheckState, CheckStatus};

const D: Duration = Duration::from_secs(60);

/// Whether the exec-driver tests can run here (else skip or fail, as
/// `CORRAL_REQUIRE_ROOT_TESTS` says).
fn can_run_exec(test: &str) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (cgroups)".to_string());
    }
    if !Path::new(BUSYBOX).exists() {
        missing.push(format!("busybox-static ({BUSYBOX})"));
    }
    prereq::can_run(test, "run exec tasks with health checks", &missing)
}

/// The job's one running allocation once `ok` holds for it.
async fn wait_alloc(
    c: &Client,
    job: &str,
    what: &str,
    ok: impl Fn(&AllocView) -> Result<(), String>,
) -> AllocView {
    eventually(&format!("{job}: {what}"), D, || async {
        let j = c.job(job, None).await.map_err(|e| e.to_string())?;
        let running = jobs::running(&j);
        let [a] = running.as_slice() else {
            return Err(format!("not one running allocation: {}", summary(&j)));
        };
        // The allocation view, with its checks.
        let a = c.alloc(&a.id).await.map_err(|e| e.to_string())?;
        ok(&a).map(|()| a.clone()).map_err(|why| {
            format!(
                "{why}; checks: {:?}; tasks: {:?}",
                a.checks,
                a.tasks
                    .iter()
                    .map(|(k, t)| (k, t.state, t.restarts, &t.message))
                    .collect::<Vec<_>>()
            )
        })
    })
    .await
}

fn check<'a>(a: &'a AllocView, name: &str) -> Result<&'a CheckState, String> {
    a.checks
        .get(name)
        .ok_or_else(|| format!("no check {name} reported"))
}

fn status_is(a: &AllocView, name: &str, want: CheckStatus) -> Result<(), String> {
    let c = check(a, name)?;
    if c.status == want {
        Ok(())
    } else {
        Err(format!("{name} is {}", c.status.as_str()))
    }
}

/// Exec driver: http passes against busybox httpd (the task listens on
/// its assigned port, `CORRAL_PORT_HTTP`), tcp fails against a port no one
/// listens on, an exec check sees the task's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_driver_http_tcp_and_exec_checks() {
    if !can_run_exec("exec_driver_http_tcp_and_exec_checks") {
        return;
    }
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("healthz"), "all good\n").unwrap();
    let spec = format!(
        "name: web
driver: exec
command: [/bin/sh, -c, 'exec {BUSYBOX} httpd -f -p 127.0.0.1:$CORRAL_PORT_HTTP -h {www}']
ports: {{http: 8080, spare: 8081}}
resources: {{cpu: 50m, memory: 32M}}
kill_timeout: 2s
service:
  name: web
  port: http
  checks:
    - {{type: http, path: /healthz, interval: 500ms, timeout: 400ms}}
    - {{name: spare-open, type: tcp, port: spare, interval: 500ms, timeout: 400ms, failure_threshold: 2}}
check: {{type: exec, command: [/bin/sh, -c, 'test \"$CORRAL_TASK\" = web && echo \"in $CORRAL_ALLOC_NAME\"'], interval: 1s, timeout: 800ms}}
",
        www = www.path().display()
    );
    c.submit(&spec, "web.yaml").await.unwrap();
    let a = wait_alloc(c, "web", "checks settled", |a| {
        status_is(a, "web-http", CheckStatus::Passing)?;
        status_is(a, "spare-open", CheckStatus::Failing)?;
        status_is(a, "web-exec", CheckStatus::Passing)
    })
    .await;
    let http_port = &a.ports["web.http"];
    let http = check(&a, "web-http").unwrap();
    assert_eq!(http.task, "web");
    assert!(
        http.output.starts_with(&format!(
            "GET http://{http_port}/healthz: HTTP 200 OK: all good"
        )),
        "{http:?} (ports {:?})",
        a.ports
    );
    let tcp = check(&a, "spare-open").unwrap();
    assert!(tcp.consecutive_failures >= 2, "{tcp:?}");
    assert!(
        tcp.output.contains(&a.ports["web.spare"]) && tcp.output.contains("refused"),
        "{tcp:?}"
    );
    let exec = check(&a, "web-exec").unwrap();
    assert_eq!(exec.output, format!("in {}", a.name));
    // A failing check alone restarts nothing.
    assert_eq!(a.tasks["web"].restarts, 0);

    jobs::stop_and_wait(c, "web", D).await;
    cluster.shutdown().await;
}

/// `check_restart` restarts a task whose check keeps failing, through the
/// restart policy: the restarts count, and the task's message names the
/// check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_restart_restarts_a_failing_task() {
    if !can_run_exec("check_restart_restarts_a_failing_task") {
        return;
    }
    let cluster = TestCluster::with_agent().await;
    let c = &cluster.client;
    // The task never listens on its port.
    let spec = "name: flaky
driver: exec
command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.2; done']
ports: {http: 8080}
resources: {cpu: 50m, memory: 16M}
kill_timeout: 2s
restart: {attempts: 20, interval: 10m, delay: 100ms, mode: fail}
check:
  type: tcp
  port: http
  interval: 300ms
  timeout: 200ms
  check_restart: {limit: 2, grace: 500ms}
";
    let started = Instant::now();
    c.submit(spec, "flaky.yaml").await.unwrap();
    let a = wait_alloc(c, "flaky", "restarted twice by its check", |a| {
        let t = a.tasks.get("flaky").ok_or("no task state")?;
        if t.restarts >= 2 {
            Ok(())
        } else {
            Err(format!("{} restarts", t.restarts))
        }
    })
    .await;
    let elapsed = started.elapsed();
    let t = &a.tasks["flaky"];
    // Each restart needs `limit` failures, the first one only after the
    // grace: 500ms + 300ms at the very least.
    assert!(
        elapsed >= Duration::from_millis(800) * t.restarts,
        "{} restarts in {elapsed:?}: faster than the check allows",
        t.restarts
    );
    let a = wait_alloc(c, "flaky", "a message naming the check", |a| {
        let m = &a.tasks["flaky"].message;
        if m.contains("check `flaky-tcp` failed 2 times in a row") {
            Ok(())
        } else {
            Err(format!("message: {m}"))
        }
    })
    .await;
    let m = &a.tasks["flaky"].message;
    assert!(m.contains("refused"), "{m}");
    assert_eq!(a.status, corral_types::ClientStatus::Running);

    jobs::stop_and_wait(c, "flaky", D).await;
    cluster.shutdown().await;
}

/// Containers: the http check reaches the pod at its pod IP (the port as
/// written, 8080, not the mapped host port), the exec check runs inside
/// the container through ExecSync and sees its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_checks_through_the_pod_network_and_exec_sync() {
    if !containers::can_run("checks") {
        return;
    }
    let node = ContainerNode::start("checks").await;
    let mut cluster = TestCluster::start().await;
    cluster.add_container_agent("node-0", node.socket()).await;
    let c = cluster.client.clone();
    node.import_demo().await;
    let spec = format!(
        "name: cweb
image: {DEMO_IMAGE}
env: {{FOO: checked}}
ports: {{http: 8080}}
service:
  name: cweb
  port: http
  checks:
    - {{type: http, path: /, interval: 500ms, timeout: 400ms}}
    - {{type: exec, command: [/bin/sh, -c, 'test -f /www/index.html && echo \"FOO=$FOO\"'], interval: 2s, timeout: 1s}}
"
    );
    c.submit(&spec, "cweb.yaml").await.unwrap();
    let a = wait_alloc(&c, "cweb", "both checks passing", |a| {
        status_is(a, "cweb-http", CheckStatus::Passing)?;
        status_is(a, "cweb-exec", CheckStatus::Passing)
    })
    .await;
    let http = check(&a, "cweb-http").unwrap();
    // The pod subnet, e.g. 10.78.3.0/24 -> "10.78.3."
    let subnet = node.subnet();
    let prefix = subnet
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}."))
        .unwrap();
    assert!(
        http.output.starts_with(&format!("GET http://{prefix}"))
            && http.output.contains(":8080/: HTTP 200 OK")
            && http.output.contains("hello from"),
        "{http:?} (pod subnet {subnet})"
    );
    let exec = check(&a, "cweb-exec").unwrap();
    assert_eq!(exec.output, "FOO=checked");
    assert_eq!(exec.task, "cweb");
    // Placed by a deployment: the checks make it healthy.
    if a.deployment_id.is_some() {
        let a = wait_alloc(&c, "cweb", "healthy", |a| match &a.health {
            Some(h) if h.healthy => Ok(()),
            other => Err(format!("health {other:?}")),
        })
        .await;
        eprintln!("[checks] deployment health: {:?}", a.health);
    } else {
        eprintln!("[checks] placed without a deployment: no health verdict");
    }

    jobs::stop_and_wait(&c, "cweb", D).await;
    node.wait_clean(D).await;
    cluster.shutdown().await;
    node.finish().await;
}
