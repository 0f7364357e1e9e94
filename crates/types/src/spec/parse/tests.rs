use std::collections::BTreeMap;

use super::{SourceFormat, parse_jobs};
use crate::spec::{
    ConstraintOp, DriverKind, JobSpec, NetworkMode, PullPolicy, Resources, RestartMode,
    RestartPolicy, SpecError, UpdatePolicy,
};
use crate::units::{Bytes, MilliCpu, Millis};

fn ok(text: &str, file: &str) -> Vec<JobSpec> {
    match parse_jobs(text, file, SourceFormat::detect(file, text)) {
        Ok(jobs) => jobs,
        Err(e) => panic!("{file} should parse:\n{e}"),
    }
}

fn one(text: &str, file: &str) -> JobSpec {
    let mut jobs = ok(text, file);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    jobs.remove(0)
}

fn errs(text: &str, file: &str) -> Vec<SpecError> {
    match parse_jobs(text, file, SourceFormat::detect(file, text)) {
        Ok(jobs) => panic!("{file} should not parse: {jobs:#?}"),
        Err(e) => e.errors,
    }
}

fn lines(text: &str, file: &str) -> Vec<String> {
    errs(text, file).iter().map(ToString::to_string).collect()
}

#[test]
fn seed_form_from_the_talk() {
    let job = one(
        "image: org/app:1.0\nenv:\n  FOO: bar\ncount: 3\n",
        "app.yaml",
    );
    assert_eq!(job.name, "app");
    assert_eq!(job.update, UpdatePolicy::default());
    assert_eq!(job.groups.len(), 1);
    let g = &job.groups[0];
    assert_eq!(g.name, "app");
    assert_eq!(g.count, 3);
    assert_eq!(g.restart, RestartPolicy::default());
    assert_eq!(g.network, NetworkMode::Bridge);
    assert!(g.constraints.is_empty());
    assert_eq!(g.tasks.len(), 1);
    let t = &g.tasks[0];
    assert_eq!(t.name, "app");
    assert_eq!(t.driver, DriverKind::Container);
    assert_eq!(t.image.as_deref(), Some("org/app:1.0"));
    assert_eq!(
        t.env,
        BTreeMap::from([("FOO".to_owned(), "bar".to_owned())])
    );
    assert_eq!(t.resources, Resources::default());
    assert_eq!(t.kill_timeout, Millis::from_secs(5));
    assert_eq!(t.pull_policy, PullPolicy::IfNotPresent);
    assert!(t.restart.is_none());
}

#[test]
fn defaults_for_a_minimal_job() {
    let job = one("image: busybox\n", "/srv/jobs/tiny.yml");
    assert_eq!(job.name, "tiny");
    assert_eq!(job.groups[0].count, 1);
    assert!(job.groups[0].tasks[0].command.is_empty());
}

#[test]
fn seed_form_with_every_field() {
    let text = r#"
name: api
driver: exec
command: /usr/bin/api --serve
args: [--port, 8080, true]
workdir: /srv
env: {PORT: 8080, RATIO: 0.50, DEBUG: false, HEX: 0x1F, Q: "quoted"}
resources: {cpu: 0.5, memory: 512MiB}
ports: {http: 8080, admin: 9090}
restart: {attempts: 5, mode: delay}
constraints:
  - {attr: node.labels.zone, op: "!=", value: c}
  - {attr: node.name, op: regexp, value: "^web-[0-9]+$"}
  - {attr: node.labels.tier, op: in, value: "a, b,c"}
  - {attr: node.attr.os, op: in, values: [linux]}
distinct_hosts: true
spread: {attr: node.labels.zone}
update: {max_parallel: 2, canary: 1, auto_promote: true}
network: host
kill_timeout: 30s
pull_policy: always
"#;
    let job = one(text, "x.yaml");
    assert_eq!(job.name, "api");
    assert_eq!(job.update.max_parallel, 2);
    assert_eq!(job.update.canary, 1);
    assert!(job.update.auto_promote);
    assert_eq!(
        job.update.min_healthy_time,
        UpdatePolicy::default().min_healthy_time
    );
    let g = &job.groups[0];
    assert_eq!(g.name, "api");
    assert_eq!(g.update, job.update);
    assert_eq!(g.network, NetworkMode::Host);
    assert_eq!(
        g.restart,
        RestartPolicy {
            attempts: 5,
            mode: RestartMode::Delay,
            ..RestartPolicy::default()
        }
    );
    let ops: Vec<ConstraintOp> = g.constraints.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            ConstraintOp::Ne,
            ConstraintOp::Regexp,
            ConstraintOp::In,
            ConstraintOp::In,
            ConstraintOp::DistinctHosts
        ]
    );
    assert_eq!(g.constraints[0].values, ["c"]);
    assert_eq!(g.constraints[2].values, ["a", "b", "c"]);
    assert_eq!(g.constraints[3].values, ["linux"]);
    assert!(g.distinct_hosts());
    assert_eq!(
        g.spread.as_ref().map(|s| s.attr.as_str()),
        Some("node.labels.zone")
    );
    let t = &g.tasks[0];
    assert_eq!(t.name, "api");
    assert_eq!(t.driver, DriverKind::Exec);
    assert_eq!(t.image, None);
    assert_eq!(t.command, ["/usr/bin/api", "--serve"]);
    assert_eq!(t.args, ["--port", "8080", "true"]);
    assert_eq!(t.workdir.as_deref(), Some("/srv"));
    assert_eq!(t.env["PORT"], "8080");
    assert_eq!(t.env["RATIO"], "0.50");
    assert_eq!(t.env["DEBUG"], "false");
    assert_eq!(t.env["HEX"], "0x1F");
    assert_eq!(t.env["Q"], "quoted");
    assert_eq!(t.resources.cpu, MilliCpu(500));
    assert_eq!(t.resources.memory, Bytes(512 << 20));
    assert_eq!(t.ports["http"], 8080);
    assert_eq!(t.ports["admin"], 9090);
    assert_eq!(t.kill_timeout, Millis::from_secs(30));
    assert_eq!(t.pull_policy, PullPolicy::Always);
    assert_eq!(t.security, Default::default());
}

const SHOP: &str = r#"
name: shop
update: {max_parallel: 2, healthy_deadline: 2m}
groups:
  - name: web
    count: 3
    update: {max_parallel: 1, min_healthy_time: 10s, healthy_deadline: 5m, auto_revert: true, canary: 1}
    restart: {attempts: 2, interval: 30m, delay: 15s, mode: fail}
    constraints: [{attr: node.labels.zone, op: "!=", value: c}]
    tasks:
      - name: app
        image: org/app:1.0
        command: [python, app.py]
        env: {FOO: bar}
        ports: {http: 8080}
        resources: {cpu: 500m, memory: 256M}
        restart: {attempts: 4}
      - name: sidecar
        image: org/proxy:2
        ports: {metrics: 9100}
  - name: worker
    count: 0
    tasks:
      - image: org/worker:1.0
"#;

#[test]
fn full_form() {
    let job = one(SHOP, "shop.yaml");
    assert_eq!(job.name, "shop");
    assert_eq!(job.groups.len(), 2);
    let web = &job.groups[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.count, 3);
    assert_eq!(web.update.max_parallel, 1);
    assert_eq!(web.update.healthy_deadline, Millis::from_secs(300));
    assert!(web.update.auto_revert);
    assert_eq!(web.update.canary, 1);
    assert_eq!(web.restart.delay, Millis::from_secs(15));
    assert_eq!(web.constraints.len(), 1);
    assert_eq!(web.tasks.len(), 2);
    let app = &web.tasks[0];
    assert_eq!(app.command, ["python", "app.py"]);
    assert_eq!(app.resources.memory, Bytes(256_000_000));
    // A task's partial restart fills from its group's.
    assert_eq!(
        app.restart,
        Some(RestartPolicy {
            attempts: 4,
            ..web.restart
        })
    );
    assert_eq!(web.tasks[1].restart, None);
    assert_eq!(web.ports().count(), 2);

    let worker = &job.groups[1];
    assert_eq!(worker.count, 0);
    // No own update: the job-level one, filled from defaults.
    assert_eq!(worker.update, job.update);
    assert_eq!(worker.update.max_parallel, 2);
    assert_eq!(worker.update.healthy_deadline, Millis::from_secs(120));
    assert_eq!(
        worker.update.progress_deadline,
        UpdatePolicy::default().progress_deadline
    );
    // The only task of a group is named after it.
    assert_eq!(worker.tasks[0].name, "worker");
}

#[test]
fn partial_group_update_fills_from_the_job() {
    let text = "update: {canary: 2}\ngroups:\n  - name: a\n    update: {max_parallel: 3}\n    tasks: [{image: x}]\n";
    let job = one(text, "j.yaml");
    let u = job.groups[0].update;
    assert_eq!((u.max_parallel, u.canary), (3, 2));
}

/// Issue 14, case 7: `max_parallel: 0` (README: everything replaced at
/// once, without a deployment) is accepted at job and group level, and
/// what only a deployment does (canaries, auto_revert) is refused with it.
#[test]
fn max_parallel_zero_replaces_everything_at_once() {
    let job = one("image: a:1\nupdate: {max_parallel: 0}\n", "j.yaml");
    assert_eq!(job.update.max_parallel, 0);
    assert_eq!(job.groups[0].update.max_parallel, 0);
    let text = "update: {canary: 1, auto_revert: true}\ngroups:\n  - name: a\n    update: {max_parallel: 0, canary: 0, auto_revert: false}\n    tasks: [{image: x}]\n  - name: b\n    tasks: [{image: x}]\n";
    let job = one(text, "j.yaml");
    let (a, b) = (job.groups[0].update, job.groups[1].update);
    assert_eq!((a.max_parallel, a.canary, a.auto_revert), (0, 0, false));
    assert_eq!((b.max_parallel, b.canary, b.auto_revert), (1, 1, true));
    // Inherited from the job: pointed at the group's `max_parallel`.
    let text = "update: {canary: 1}\ngroups:\n  - name: a\n    update: {max_parallel: 0}\n    tasks: [{image: x}]\n";
    assert_eq!(
        lines(text, "j.yaml"),
        [
            "j.yaml:4:28: groups[0].update.max_parallel: canaries need a deployment, and `max_parallel: 0` replaces every allocation at once without one; set `max_parallel` to 1 or more, or `canary` to 0"
        ]
    );
    assert_eq!(
        lines("image: a:1\nupdate: {max_parallel: -1}\n", "j.yaml"),
        ["j.yaml:2:24: update.max_parallel: max_parallel must be 0 or more, found -1"]
    );
}

#[test]
fn several_documents() {
    let text = "name: one\nimage: a\n---\n# nothing here\n---\nname: two\nimage: b\ncount: 0\n";
    let jobs = ok(text, "multi.yaml");
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(jobs[1].groups[0].count, 0);
}

#[test]
fn one_unnamed_document_among_several_takes_the_file_name() {
    let jobs = ok("image: a\n---\nname: two\nimage: b\n", "web.yaml");
    assert_eq!(jobs[0].name, "web");
}

#[test]
fn duplicate_job_names_point_at_the_second_document() {
    assert_eq!(
        lines("image: a\n---\nimage: b\n", "web.yaml"),
        ["web.yaml:3:1: name: duplicate job name `web`; give each document its own `name:`"]
    );
}

#[test]
fn json_parses_with_locations() {
    let text = r#"{
  "name": "web",
  "image": "nginx:1.27",
  "count": 2,
  "ports": {"http": 80}
}"#;
    let job = one(text, "web.json");
    assert_eq!(job.groups[0].count, 2);
    assert_eq!(job.groups[0].tasks[0].ports["http"], 80);

    let bad = "{\n  \"image\": \"nginx\",\n  \"count\": -1,\n  \"imgae\": 1\n}\n";
    assert_eq!(
        lines(bad, "web.json"),
        [
            "web.json:3:12: count: count must be 0 or more, found -1",
            "web.json:4:3: imgae: unknown field `imgae`; did you mean `image`?",
        ]
    );
    let broken = "{\"image\": \"nginx\",\n \"count\": 2\n";
    let e = errs(broken, "web.json");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("invalid JSON: "), "{}", e[0]);
    assert!(e[0].line >= 1);
}

#[test]
fn every_error_is_reported_in_source_order() {
    let text = "imgae: x\ncount: -2\nresources: {cpu: 0, memory: 10Q}\n";
    assert_eq!(
        lines(text, "a.yaml"),
        [
            // No "a task needs `image`" on top: `imgae` was surely meant.
            "a.yaml:1:1: imgae: unknown field `imgae`; did you mean `image`?",
            "a.yaml:2:8: count: count must be 0 or more, found -2",
            "a.yaml:3:18: resources.cpu: cpu must be more than 0, found 0; write e.g. 100m",
            "a.yaml:3:29: resources.memory: unknown size unit \"Q\" in \"10Q\"; use K, M, G, T or Ki, Mi, Gi, Ti",
        ]
    );
}

#[test]
fn full_form_paths() {
    let text = "groups:\n  - name: a\n    tasks:\n      - name: x\n        image: i\n      - name: y\n        image: j\n        resources: {memory: 0}\n";
    assert_eq!(
        lines(text, "p.yaml"),
        [
            "p.yaml:8:29: groups[0].tasks[1].resources.memory: memory must be more than 0, found 0; write e.g. 256M"
        ]
    );
}

#[test]
fn empty_and_comment_only_files_have_no_job() {
    for text in ["", "\n", "# just a comment\n", "---\n...\n"] {
        assert_eq!(
            lines(text, "e.yaml"),
            ["e.yaml:1:1: the file has no job; write one, e.g. `image: org/app:1.0`"],
            "{text:?}"
        );
    }
}

#[test]
fn syntax_errors_give_one_located_error() {
    let e = errs("image: [a, b\ncount: 3\n", "s.yaml");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("invalid YAML: "));
    assert!(e[0].line > 0 && e[0].column > 0);
}

#[test]
fn strict_booleans_and_yes() {
    let job = one("image: a\nenv: {A: yes, B: on}\n", "b.yaml");
    assert_eq!(job.groups[0].tasks[0].env["A"], "yes");
    assert_eq!(
        lines("image: a\ndistinct_hosts: yes\n", "b.yaml"),
        ["b.yaml:2:17: distinct_hosts: expected true or false, found yes"]
    );
}

#[test]
fn aliases_and_merge_keys_work() {
    let text = "groups:\n  - name: a\n    tasks:\n      - &t {name: x, image: i, env: {N: &n 0x10}}\n      - {<<: *t, name: y, env: {N: *n}}\n";
    let job = one(text, "m.yaml");
    let tasks = &job.groups[0].tasks;
    assert_eq!(tasks[1].name, "y");
    assert_eq!(tasks[1].image.as_deref(), Some("i"));
    assert_eq!(tasks[1].env["N"], "0x10");
}

#[test]
fn the_job_name_comes_from_the_file_name() {
    assert_eq!(one("image: a\n", "dir/sub/web.yaml").name, "web");
    assert_eq!(one("image: a\n", "web").name, "web");
    assert_eq!(
        lines("image: a\n", "jobs/My App.yaml"),
        [
            "jobs/My App.yaml:1:1: the job is named after the file, and `My App` is not a valid name; use lowercase letters, digits, `-` and `_`, starting with a letter or digit; or add `name:`"
        ]
    );
    // An explicit name wins over a file name that would not do.
    assert_eq!(one("name: web\nimage: a\n", "Web App.yaml").name, "web");
}

#[test]
fn distinct_hosts_is_added_once() {
    let job = one(
        "image: a\ndistinct_hosts: true\nconstraints: [{op: distinct_hosts}]\n",
        "d.yaml",
    );
    let c = &job.groups[0].constraints;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].op, ConstraintOp::DistinctHosts);
    assert!(c[0].attr.is_empty() && c[0].values.is_empty());
    let job = one("image: a\ndistinct_hosts: false\n", "d.yaml");
    assert!(!job.groups[0].distinct_hosts());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!("image: a\nenv: {{X: {}}}\n", "[".repeat(100_000));
    let e = errs(&text, "deep.yaml");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("invalid YAML: "), "{}", e[0]);
}

#[test]
fn a_misspelt_name_is_reported_once() {
    assert_eq!(
        lines("nmae: web\nimage: a\n", "n.yaml"),
        ["n.yaml:1:1: nmae: unknown field `nmae`; did you mean `name`?"]
    );
}

/// A duration no deadline can hold (`now + d` would wrap) is an error at
/// its position, not a rollout that fails in the same second.
#[test]
fn durations_beyond_100_years_are_refused_where_written() {
    let text = "image: a\nupdate:\n  progress_deadline: 213503982334d\n";
    assert_eq!(
        lines(text, "huge.yaml"),
        [
            "huge.yaml:3:22: update.progress_deadline: duration \"213503982334d\" is too large: at most 100 years (36500d)"
        ]
    );
    let ok = one(
        "image: a\nupdate:\n  progress_deadline: 36500d\n",
        "max.yaml",
    );
    assert_eq!(ok.update.progress_deadline, Millis::MAX);
}

/// `security` is the container driver's: on an exec task it would be
/// accepted and not applied (the task runs as the agent's root).
#[test]
fn security_is_for_containers_only() {
    let t = &one(
        "image: org/app:1\nsecurity: {read_only_rootfs: true, user: 1000, cap_drop: [ALL], cap_add: [NET_BIND_SERVICE]}\n",
        "x.yaml",
    )
    .groups[0]
        .tasks[0];
    assert!(t.security.read_only_rootfs);
    assert_eq!(t.security.user.as_deref(), Some("1000"));
    assert_eq!(t.security.cap_drop, ["ALL"]);
    let e = parse_jobs(
        "driver: exec\ncommand: [/bin/true]\nsecurity: {user: nobody}\n",
        "x.yaml",
        SourceFormat::Yaml,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("x.yaml:3:1: security: `security` is for `driver: container`"),
        "{e}"
    );
}

/// Issue 17: `reschedule` with Nomad's fields; service defaults when not
/// given; `attempts`/`interval` alone mean a limit.
#[test]
fn reschedule_policies() {
    use crate::spec::{DelayFunction, ReschedulePolicy};
    use crate::units::Millis;
    let job = one("image: a:1\n", "j.yaml");
    assert_eq!(job.groups[0].reschedule, ReschedulePolicy::default());
    assert!(job.groups[0].reschedule.unlimited);
    let job = one(
        "image: a:1\nreschedule: {delay: 10s, delay_function: fibonacci, max_delay: 5m}\n",
        "j.yaml",
    );
    let r = job.groups[0].reschedule;
    assert_eq!(
        (r.delay, r.delay_function, r.max_delay, r.unlimited),
        (
            Millis::from_secs(10),
            DelayFunction::Fibonacci,
            Millis::from_secs(300),
            true
        )
    );
    let text = "groups:\n  - name: g\n    reschedule: {attempts: 3, interval: 1h}\n    tasks: [{image: x}]\n";
    let r = one(text, "j.yaml").groups[0].reschedule;
    assert_eq!(
        (r.attempts, r.interval, r.unlimited),
        (3, Millis::from_secs(3600), false)
    );
    assert_eq!(
        lines(
            "image: a\nreschedule: {attempts: 2, unlimited: true}\n",
            "j.yaml"
        ),
        [
            "j.yaml:2:24: reschedule.attempts: `attempts` and `interval` limit reschedules, and `unlimited: true` has no limit; drop one or the other"
        ]
    );
    assert_eq!(
        lines(
            "image: a\nreschedule: {delay: 2m, max_delay: 1m}\n",
            "j.yaml"
        ),
        [
            "j.yaml:2:36: reschedule.max_delay: max_delay 1m is shorter than delay 2m; raise `max_delay` or lower `delay`"
        ]
    );
    let e = lines("image: a\nreschedule: {delay_function: linear}\n", "j.yaml");
    assert!(
        e.len() == 1
            && e[0].starts_with("j.yaml:2:30: reschedule.delay_function:")
            && e[0].contains("fibonacci"),
        "{e:?}"
    );
    assert_eq!(
        lines(
            "image: a\nreschedule: {attempts: 1, interval: 0s}\n",
            "j.yaml"
        ),
        [
            "j.yaml:2:37: reschedule.interval: `interval` is the window the attempts are counted in and must be longer than 0s, e.g. `interval: 1h`"
        ]
    );
    assert_eq!(
        lines("image: a\ncount: 4294967295\n", "j.yaml"),
        [
            "j.yaml:2:8: count: count 4294967295 is more than 100000; split the group, or ask for fewer"
        ]
    );
    let e = lines("image: a\nreschedule: {tries: 2}\n", "j.yaml");
    assert!(e.len() == 1 && e[0].contains("reschedule.tries"), "{e:?}");
}
