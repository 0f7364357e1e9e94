use std::path::PathBuf;

use super::document;
use crate::spec::{JobSpec, STDIN_NAME, SourceFormat, parse_jobs};

fn parse(text: &str, file: &str) -> Vec<JobSpec> {
    parse_jobs(text, file, SourceFormat::detect(file, text))
        .unwrap_or_else(|e| panic!("{file} does not parse:\n{e}\n{text}"))
}

/// Rendered as JSON and as YAML, read back from standard input (no file
/// name to fall back on), each spec is the same spec.
fn round_trips(spec: &JobSpec) {
    let doc = document(spec);
    let as_json = serde_json::to_string_pretty(&doc).expect("json");
    let back = parse(&as_json, STDIN_NAME);
    assert_eq!(back, vec![spec.clone()], "JSON rendering:\n{as_json}");
    let as_yaml = serde_saphyr::to_string(&doc).expect("yaml");
    let back = parse(&as_yaml, STDIN_NAME);
    assert_eq!(back, vec![spec.clone()], "YAML rendering:\n{as_yaml}");
}

#[test]
fn every_example_round_trips() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).expect("examples dir") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for spec in parse(&text, &name) {
            round_trips(&spec);
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "only {seen} example jobs found in {}",
        dir.display()
    );
}

#[test]
fn the_smallest_job_round_trips() {
    let spec = parse(
        "image: org/app:1.0\nenv:\n  FOO: bar\ncount: 3\n",
        "app.yaml",
    );
    round_trips(&spec[0]);
}

#[test]
fn every_setting_round_trips() {
    let text = r#"
name: full
update: {max_parallel: 2, min_healthy_time: 1500ms, healthy_deadline: 2m, progress_deadline: 1h, auto_revert: true, canary: 1, auto_promote: true, health_check: task_states}
groups:
  - name: web
    count: 0
    restart: {attempts: 5, interval: 10m, delay: 3s, mode: delay}
    reschedule: {attempts: 2, interval: 2h, delay: 5s, delay_function: constant, max_delay: 1m}
    constraints:
      - {attr: node.labels.zone, op: "!=", value: b}
      - {attr: node.attr.os, op: in, values: [linux, freebsd]}
      - {attr: node.name, op: regexp, value: "^n[0-9]+$"}
    distinct_hosts: true
    spread: {attr: node.labels.rack}
    network: host
    update: {max_parallel: 0, auto_revert: false, canary: 0, auto_promote: false}
    service:
      name: web
      port: http
      checks:
        - {type: http, path: /health, method: HEAD, status: "200-204", headers: {X-Probe: "1"}, interval: 5s, timeout: 1s, grace: 30s, success_threshold: 2, failure_threshold: 4, check_restart: {limit: 3, grace: 1m}}
        - {type: tcp, port: admin}
        - {type: exec, command: [/bin/true], task: side}
      route: {hosts: [shop.example.com, www.example.com], paths: [/api, /v2], strip_prefix: true}
      shutdown_delay: 7s
    tasks:
      - name: app
        driver: container
        image: org/app:2.0
        command: [/app, serve]
        args: ["--port", "8080"]
        env: {A: "1", B: two}
        workdir: /srv
        resources: {cpu: 1500m, memory: 1000000001}
        ports: {http: 8080, admin: 9000}
        kill_timeout: 45s
        restart: {attempts: 1}
        pull_policy: always
        security: {read_only_rootfs: true, user: "1000:1000", cap_add: [NET_BIND_SERVICE], cap_drop: [ALL]}
        logs: {max_size: 2M, max_files: 3}
        check: {type: exec, command: [/bin/sh, -c, "test -f /tmp/ok"], interval: 3s}
      - name: side
        driver: exec
        command: /bin/sleep
        args: ["1000"]
        resources: {cpu: 2, memory: 64MiB}
"#;
    let spec = parse(text, "full.yaml");
    round_trips(&spec[0]);
}
