//! Services and checks: what parses, what the parser fills in, and the
//! errors (more error cases are in `tests/bad/`).

use std::collections::BTreeMap;

use super::{SourceFormat, parse_jobs};
use crate::spec::{CheckKind, CheckRestart, CheckSpec, HealthCheckMode, JobSpec};
use crate::units::Millis;

fn one(text: &str) -> JobSpec {
    match parse_jobs(text, "j.yaml", SourceFormat::Yaml) {
        Ok(mut jobs) => {
            assert_eq!(jobs.len(), 1);
            jobs.remove(0)
        }
        Err(e) => panic!("should parse:\n{e}"),
    }
}

fn lines(text: &str) -> Vec<String> {
    match parse_jobs(text, "j.yaml", SourceFormat::Yaml) {
        Ok(jobs) => panic!("should not parse: {jobs:#?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn http(path: &str) -> CheckKind {
    CheckKind::Http {
        path: path.into(),
        method: "GET".into(),
        status: (200, 399),
        headers: BTreeMap::new(),
    }
}

/// The group of DESIGN.md, service included.
#[test]
fn the_design_service_with_defaults() {
    let job = one("
name: shop
groups:
  - name: web
    service:
      name: shop
      port: http
      check: {type: http, path: /healthz, interval: 5s, timeout: 1s}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {http: 8080}
");
    let g = &job.groups[0];
    assert_eq!(g.services.len(), 1);
    let s = &g.services[0];
    assert_eq!(s.name, "shop");
    assert_eq!(s.port.as_deref(), Some("http"));
    assert_eq!(
        s.checks,
        [CheckSpec {
            name: "shop-http".into(),
            kind: http("/healthz"),
            port: Some("http".into()),
            task: Some("app".into()),
            interval: Millis::from_secs(5),
            timeout: Millis::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
            grace: Millis(0),
            check_restart: None,
        }]
    );
    assert!(g.has_checks());
    assert!(g.tasks[0].checks.is_empty());
    assert_eq!(g.update.health_check, HealthCheckMode::Checks);
}

#[test]
fn every_check_field() {
    let job = one(r#"
name: shop
groups:
  - name: web
    update: {health_check: task_states}
    services:
      - name: api
        port: http
        checks:
          - type: http
            path: /status?full=1
            method: head
            status: "200-299"
            headers: {Host: shop.example.com, X-Check: "1"}
            interval: 3s
            timeout: 500ms
            success_threshold: 2
            failure_threshold: 3
            grace: 30s
            check_restart: {limit: 3, grace: 1m}
          - {type: http, path: /, status: 204, port: admin}
          - {type: tcp}
          - {type: exec, command: "/bin/true --quiet"}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {http: 8080}
      - name: side
        image: org/side:1.0
        ports: {admin: 9000}
"#);
    let g = &job.groups[0];
    assert_eq!(g.update.health_check, HealthCheckMode::TaskStates);
    let c = &g.services[0].checks;
    assert_eq!(c.len(), 4);
    assert_eq!(c[0].name, "api-http");
    assert_eq!(
        c[0].kind,
        CheckKind::Http {
            path: "/status?full=1".into(),
            method: "HEAD".into(),
            status: (200, 299),
            headers: BTreeMap::from([
                ("Host".into(), "shop.example.com".into()),
                ("X-Check".into(), "1".into())
            ]),
        }
    );
    assert_eq!(c[0].interval, Millis::from_secs(3));
    assert_eq!(c[0].timeout, Millis(500));
    assert_eq!((c[0].success_threshold, c[0].failure_threshold), (2, 3));
    assert_eq!(c[0].grace, Millis::from_secs(30));
    assert_eq!(
        c[0].check_restart,
        Some(CheckRestart {
            limit: 3,
            grace: Millis::from_secs(60)
        })
    );
    // The second http check: its own port, whose task is `side`.
    assert_eq!(c[1].name, "api-http-2");
    assert_eq!(
        c[1].kind,
        CheckKind::Http {
            path: "/".into(),
            method: "GET".into(),
            status: (204, 204),
            headers: BTreeMap::new()
        }
    );
    assert_eq!(c[1].port.as_deref(), Some("admin"));
    assert_eq!(c[1].task.as_deref(), Some("side"));
    assert_eq!(c[1].interval, CheckSpec::DEFAULT_INTERVAL);
    assert_eq!(c[1].timeout, CheckSpec::DEFAULT_TIMEOUT);
    assert_eq!(c[2].name, "api-tcp");
    assert_eq!(c[2].kind, CheckKind::Tcp);
    assert_eq!(c[2].port.as_deref(), Some("http"));
    // An exec check runs in the task of the service's port; a string
    // command is split on spaces.
    assert_eq!(c[3].name, "api-exec");
    assert_eq!(
        c[3].kind,
        CheckKind::Exec {
            command: vec!["/bin/true".into(), "--quiet".into()]
        }
    );
    assert_eq!(c[3].task.as_deref(), Some("app"));
    assert_eq!(c[3].port, None);
}

#[test]
fn task_checks_and_names_unique_in_the_group() {
    let job = one("
name: shop
groups:
  - name: web
    services:
      - {name: web, port: http, check: {type: tcp}}
      - name: admin
        checks:
          - {type: exec, command: [cat, /ready], task: app}
          - {name: web-tcp-2, type: tcp, port: http}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {http: 8080}
        checks:
          - {type: http, path: /a, port: http}
          - {type: http, path: /b, port: http, check_restart: {limit: 2}, grace: 5s}
      - name: web
        image: org/side:1.0
        check: {type: tcp, port: http}
");
    let g = &job.groups[0];
    let names = |cs: &[CheckSpec]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&g.services[0].checks), ["web-tcp"]);
    assert_eq!(names(&g.services[1].checks), ["admin-exec", "web-tcp-2"]);
    assert_eq!(names(&g.tasks[0].checks), ["app-http", "app-http-2"]);
    // Task `web`'s default name clashes with the service's and with the
    // explicit `web-tcp-2`.
    assert_eq!(names(&g.tasks[1].checks), ["web-tcp-3"]);
    assert_eq!(g.tasks[1].checks[0].task.as_deref(), Some("web"));
    assert_eq!(g.tasks[0].checks[0].task.as_deref(), Some("app"));
    // check_restart's grace defaults to the check's.
    assert_eq!(
        g.tasks[0].checks[1].check_restart,
        Some(CheckRestart {
            limit: 2,
            grace: Millis::from_secs(5)
        })
    );
    // The admin service has no port: its exec check names its task.
    assert_eq!(g.services[1].port, None);
    assert_eq!(g.services[1].checks[0].task.as_deref(), Some("app"));
}

#[test]
fn the_seed_form_takes_a_service_and_checks() {
    let job = one("
image: org/app:1.0
ports: {http: 8080}
service: {name: app, port: http, check: {type: http, path: /}}
check: {type: exec, command: [/bin/ok]}
update: {health_check: manual}
");
    let g = &job.groups[0];
    assert_eq!(g.services[0].checks[0].name, "app-http");
    assert_eq!(g.services[0].checks[0].task.as_deref(), Some("j"));
    assert_eq!(g.tasks[0].checks[0].name, "j-exec");
    assert_eq!(g.update.health_check, HealthCheckMode::Manual);
}

#[test]
fn an_exec_check_of_a_one_task_group_runs_in_that_task() {
    let job = one("
name: shop
groups:
  - name: web
    service: {name: web, check: {type: exec, command: [/bin/ok]}}
    tasks: [{name: app, image: a}]
");
    assert_eq!(
        job.groups[0].services[0].checks[0].task.as_deref(),
        Some("app")
    );
}

#[test]
fn specs_with_checks_round_trip_as_json() {
    let job = one("
name: shop
groups:
  - name: web
    service: {name: web, port: http, check: {type: http, path: /, headers: {A: b}}}
    tasks:
      - name: app
        image: a
        ports: {http: 80}
        check: {type: exec, command: [/bin/ok], check_restart: {limit: 1}}
");
    let json = serde_json::to_string(&job).expect("serializes");
    let back: JobSpec = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, job);
    assert!(json.contains(r#""type":"http""#), "{json}");
}

#[test]
fn port_and_task_errors_name_what_exists() {
    let got = lines(
        "
name: shop
groups:
  - name: web
    service:
      name: web
      port: htp
      checks:
        - {type: http, path: /}
        - {type: tcp, port: metrics}
        - {type: exec, command: [x], task: ap}
    tasks:
      - {name: app, image: a, ports: {http: 80}}
      - {name: side, image: b, ports: {admin: 81}}
",
    );
    assert_eq!(
        got,
        [
            "j.yaml:7:13: groups[0].service.port: no task of the group declares port `htp`; did you mean `http`?",
            "j.yaml:10:29: groups[0].service.checks[1].port: no task of the group declares port `metrics`; the ports are `http` or `admin`",
            "j.yaml:11:44: groups[0].service.checks[2].task: the group has no task `ap`; did you mean `app`?",
        ]
    );
}

#[test]
fn missing_port_and_task() {
    let got = lines(
        "
name: shop
groups:
  - name: web
    service:
      name: web
      checks:
        - {type: http, path: /}
        - {type: exec, command: [x]}
    tasks:
      - {name: app, image: a, ports: {http: 80}}
      - {name: side, image: b}
",
    );
    assert_eq!(
        got,
        [
            "j.yaml:8:11: groups[0].service.checks[0]: an http check needs a port to probe; add `port:` to the check or to its service (the ports are `http`)",
            "j.yaml:9:11: groups[0].service.checks[1]: an exec check needs the task to run in; add `task:` (`app` or `side`), or a `port:` of that task",
        ]
    );
}

#[test]
fn fields_of_other_types_and_bad_values() {
    let got = lines(
        r#"
image: a
ports: {http: 80}
checks:
  - {type: tcp, port: http, path: /x, command: [y]}
  - {type: http, port: http, path: healthz, status: "299-200", method: "G T"}
  - {type: http, port: http, path: /, status: 700, interval: 1s, timeout: 1s}
  - {type: htp, port: http}
  - {type: http, port: http, path: /, interval: 10ms, headers: {"a b": c}}
"#,
    );
    assert_eq!(
        got,
        [
            "j.yaml:5:29: checks[0].path: `path` is only for http checks; remove it, or use `type: http`",
            "j.yaml:5:39: checks[0].command: `command` is only for exec checks; remove it, or use `type: exec`",
            "j.yaml:6:36: checks[1].path: the path must start with `/` and have no spaces, like /healthz, found healthz",
            "j.yaml:6:53: checks[1].status: the status range 299-200 is backwards; write 200-299",
            "j.yaml:6:72: checks[1].method: method \"G T\" contains spaces; remove them",
            "j.yaml:7:47: checks[2].status: expected an HTTP status like 200 or a range like \"200-299\" with codes from 100 to 599, found 700",
            "j.yaml:7:75: checks[2].timeout: timeout (1s) must be shorter than interval (1s); lower `timeout` or raise `interval`",
            "j.yaml:8:12: checks[3].type: unknown check type `htp`; did you mean `http`?",
            "j.yaml:9:49: checks[4].interval: interval must be at least 100ms, found 10ms",
            "j.yaml:9:65: checks[4].headers.a b: `a b` is not a valid header name; use letters, digits and `-`",
        ]
    );
}

#[test]
fn one_or_many_and_check_restart() {
    let got = lines(
        "
image: a
ports: {http: 80}
service: [{name: a}]
check: [{type: tcp, port: http}]
checks: {type: tcp, port: http}
",
    );
    assert_eq!(
        got,
        [
            "j.yaml:4:10: service: `service` takes one service; for a list of services write `services:`",
            "j.yaml:6:1: checks: give either `check` (one) or `checks` (a list), not both",
        ]
    );
    let got = lines(
        "
image: a
ports: {http: 80}
check: {type: tcp, port: http, check_restart: {grace: 1s}, failure_threshold: 0, kind: x}
",
    );
    assert_eq!(
        got,
        [
            "j.yaml:4:47: check.check_restart: `check_restart` needs `limit`, the consecutive failures that restart the task, like `limit: 3`",
            "j.yaml:4:79: check.failure_threshold: failure_threshold must be 1 or more, found 0",
            "j.yaml:4:82: check.kind: unknown field `kind`; did you mean `type`?",
        ]
    );
}

#[test]
fn duplicate_names_and_a_task_check_naming_another_task() {
    let got = lines(
        "
name: shop
groups:
  - name: web
    services:
      - {name: web, check: {name: ready, type: exec, command: [x], task: side}}
      - {name: web}
    tasks:
      - name: app
        image: a
        checks:
          - {name: ready, type: exec, command: [x]}
          - {type: exec, command: [x], task: side}
      - {name: side, image: b}
",
    );
    assert_eq!(
        got,
        [
            "j.yaml:7:16: groups[0].services[1].name: duplicate service name `web`; give each service its own name",
            "j.yaml:12:20: groups[0].tasks[0].checks[0].name: duplicate check name `ready`; check names must be unique within a group",
            "j.yaml:13:46: groups[0].tasks[0].checks[1].task: a check declared on task `app` runs in it; remove `task`, or move the check to a service of the group",
        ]
    );
}

#[test]
fn health_check_mode_is_checked() {
    let got = lines("image: a\nupdate: {health_check: task_state}\n");
    assert_eq!(
        got,
        [
            "j.yaml:2:24: update.health_check: unknown health_check mode `task_state`; did you mean `task_states`?"
        ]
    );
}

#[test]
fn without_tasks_only_the_tasks_error_is_reported() {
    let got = lines(
        "
name: shop
groups:
  - name: web
    service: {name: web, port: http, check: {type: exec, command: [x]}}
    taks: [{name: app, image: a, ports: {http: 80}}]
",
    );
    assert_eq!(
        got,
        ["j.yaml:6:5: groups[0].taks: unknown field `taks`; did you mean `tasks`?"]
    );
}
