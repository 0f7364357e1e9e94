//! Every file in the repository's `examples/` must parse, and a few must have
//! exactly the shape their comments promise.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use corral_types::spec::{SourceFormat, parse_jobs};
use corral_types::units::{Bytes, MilliCpu};
use corral_types::{ConstraintOp, DriverKind, JobSpec};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn parse(name: &str) -> Vec<JobSpec> {
    let path = examples_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_jobs(&text, name, SourceFormat::detect(name, &text))
        .unwrap_or_else(|e| panic!("examples/{name} does not parse:\n{e}"))
}

#[test]
fn every_example_parses() {
    let mut names: Vec<String> = fs::read_dir(examples_dir())
        .expect("read examples/")
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|n| n.to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "examples/ has only {names:?}");
    for name in &names {
        let jobs = parse(name);
        assert!(!jobs.is_empty(), "examples/{name} has no job");
        for job in &jobs {
            assert!(
                !job.groups.is_empty(),
                "examples/{name}: job {} has no group",
                job.name
            );
            assert!(
                job.groups.iter().all(|g| !g.tasks.is_empty()),
                "examples/{name}: job {} has a group without tasks",
                job.name
            );
        }
    }
}

/// Issue 14, case 8: each example says what it needs to run, in a comment
/// at its top (JSON has none) and in the table of examples/README.md,
/// which lists every example and agrees with the comments on which run
/// offline.
#[test]
fn every_example_says_what_it_needs() {
    let mut files: Vec<String> = fs::read_dir(examples_dir())
        .expect("read examples/")
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|n| n.to_str().map(str::to_owned))
        .filter(|n| n != "README.md")
        .collect();
    files.sort();
    let readme = fs::read_to_string(examples_dir().join("README.md")).expect("examples/README.md");
    // Rows: | [`file`](file) | yes/no | needs | shows |
    let mut rows: BTreeMap<String, bool> = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| [`")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let file = cells[1].split('`').nth(1).expect("a file name");
        let offline = match cells[2] {
            "yes" => true,
            "no" => false,
            other => panic!("examples/README.md: `{file}` runs offline: {other:?}, not yes or no"),
        };
        assert!(
            rows.insert(file.to_owned(), offline).is_none(),
            "examples/README.md lists {file} twice"
        );
        assert!(
            !cells[3].is_empty(),
            "examples/README.md: `{file}` does not say what it needs"
        );
    }
    let listed: Vec<&String> = rows.keys().collect();
    let present: Vec<&String> = files.iter().collect();
    assert_eq!(
        listed, present,
        "examples/README.md must list every file of examples/"
    );
    for name in files.iter().filter(|n| !n.ends_with(".json")) {
        let text = fs::read_to_string(examples_dir().join(name)).expect("read example");
        let first = text.lines().next().unwrap_or_default();
        let offline = if first.starts_with("# Runs offline") {
            true
        } else if first.starts_with("# Needs ") {
            false
        } else {
            panic!(
                "examples/{name} must start with `# Runs offline ...` or `# Needs ...`, found {first:?}"
            )
        };
        assert_eq!(
            offline, rows[name],
            "examples/{name}: its comment and examples/README.md disagree on running offline"
        );
    }
}

#[test]
fn app_is_the_seed_job() {
    let jobs = parse("app.yaml");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.name, "app");
    assert_eq!(job.groups.len(), 1);
    let g = &job.groups[0];
    assert_eq!(g.name, "app");
    assert_eq!(g.count, 3);
    assert_eq!(g.tasks.len(), 1);
    let t = &g.tasks[0];
    assert_eq!(t.name, "app");
    assert_eq!(t.driver, DriverKind::Container);
    assert_eq!(t.image.as_deref(), Some("org/app:1.0"));
    assert_eq!(
        t.env,
        BTreeMap::from([("FOO".to_owned(), "bar".to_owned())])
    );
}

#[test]
fn hello_exec_runs_a_shell_loop() {
    let jobs = parse("hello-exec.yaml");
    assert_eq!(jobs.len(), 1);
    let g = &jobs[0].groups[0];
    assert_eq!(jobs[0].name, "hello-exec");
    assert_eq!(g.count, 3);
    let t = &g.tasks[0];
    assert_eq!(t.driver, DriverKind::Exec);
    assert_eq!(t.image, None);
    assert_eq!(
        t.command,
        [
            "/bin/sh",
            "-c",
            "echo \"FOO=$FOO\"; while true; do sleep 1; done"
        ]
    );
    assert_eq!(t.env["FOO"], "bar");
    assert_eq!(t.resources.cpu, MilliCpu(100));
    assert_eq!(t.resources.memory, Bytes(64_000_000));
}

#[test]
fn shop_is_the_full_form() {
    let jobs = parse("shop.yaml");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.name, "shop");
    let web = &job.groups[0];
    assert_eq!((web.name.as_str(), web.count), ("web", 3));
    assert_eq!(web.update.canary, 1);
    assert!(web.update.auto_revert);
    assert_eq!(web.constraints.len(), 1);
    assert_eq!(web.constraints[0].op, ConstraintOp::Ne);
    assert_eq!(web.constraints[0].attr, "node.labels.zone");
    let app = &web.tasks[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.command, ["python", "app.py"]);
    assert_eq!(app.ports["http"], 8080);
    assert_eq!(app.resources.cpu, MilliCpu(500));
    // The service of the design, its check named after it.
    assert_eq!(web.services.len(), 1);
    let check = &web.services[0].checks[0];
    assert_eq!(check.name, "shop-http");
    assert_eq!(check.kind.type_name(), "http");
    assert_eq!(check.task.as_deref(), Some("app"));
    assert_eq!(check.port.as_deref(), Some("http"));
}

#[test]
fn multi_has_two_jobs() {
    let jobs = parse("multi.yaml");
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["api", "worker"]);
    assert_eq!(jobs[1].groups[0].tasks[0].env["CONCURRENCY"], "4");
}

#[test]
fn web_json() {
    let jobs = parse("web.json");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "web");
    assert_eq!(jobs[0].groups[0].count, 2);
    assert_eq!(
        jobs[0].groups[0].tasks[0].image.as_deref(),
        Some("nginx:1.27")
    );
    assert!(jobs[0].update.auto_revert);
}
