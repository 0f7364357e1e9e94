//! The pure parts of `corral run`'s rollout view, `corral deploy status`
//! and `corral job history`'s diff, with fixed timestamps. The binary has
//! no library target, so the modules are compiled in here from its source.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../src/rollout.rs"]
mod rollout;
#[allow(dead_code)]
#[path = "../src/specdiff.rs"]
mod specdiff;

use std::collections::BTreeMap;

use corral_types::units::Millis;
use corral_types::{Deployment, DeploymentStatus, GroupDeployment};
use serde_json::json;

/// Fixed "now": 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600_000;

fn group(desired: u32, placed: u32, healthy: u32) -> GroupDeployment {
    GroupDeployment {
        desired_total: desired,
        desired_canaries: 0,
        placed_canaries: vec![],
        promoted: false,
        auto_promote: false,
        auto_revert: false,
        max_parallel: 1,
        progress_deadline: Millis::from_secs(600),
        placed,
        healthy,
        unhealthy: 0,
        require_progress_by: Some(NOW + 552_000),
    }
}

fn deployment(status: DeploymentStatus, groups: Vec<(&str, GroupDeployment)>) -> Deployment {
    Deployment {
        id: "3f2a1b2c-0000-4000-8000-000000000000".into(),
        job: "web".into(),
        job_version: 2,
        status,
        description: String::new(),
        groups: groups
            .into_iter()
            .map(|(n, g)| (n.to_string(), g))
            .collect::<BTreeMap<_, _>>(),
        reverts_to: None,
        created_at: NOW - 48_000,
        modified_at: NOW - 1_000,
        create_index: 10,
        modify_index: 12,
    }
}

#[test]
fn plain_line_shows_healthy_of_desired_placed_and_the_deadline() {
    let d = deployment(DeploymentStatus::Running, vec![("web", group(3, 2, 1))]);
    assert_eq!(
        rollout::plain_line("web", &d, NOW),
        "web: version 2 running: web 1/3 healthy, 2 placed, deadline in 9m12s"
    );
}

#[test]
fn plain_line_with_several_groups_unhealthy_and_a_passed_deadline() {
    let mut db = group(1, 1, 0);
    db.unhealthy = 1;
    db.require_progress_by = Some(NOW - 1);
    let d = deployment(
        DeploymentStatus::Running,
        vec![("web", group(2, 2, 2)), ("db", db)],
    );
    assert_eq!(
        rollout::plain_line("shop", &d, NOW),
        "shop: version 2 running: db 0/1 healthy, 1 placed, 1 unhealthy, deadline passed; \
         web 2/2 healthy, 2 placed, deadline in 9m12s"
    );
}

#[test]
fn canaries_before_and_after_promotion() {
    let mut g = group(3, 1, 1);
    g.desired_canaries = 1;
    g.placed_canaries = vec!["c1".into()];
    let d = deployment(DeploymentStatus::Running, vec![("web", g.clone())]);
    assert_eq!(
        rollout::plain_line("web", &d, NOW),
        "web: version 2 running: web 1/3 healthy, 1 placed, \
         canaries 1/1 healthy (1 placed, not promoted), deadline in 9m12s"
    );
    assert!(
        rollout::awaiting_promotion(&d),
        "healthy canaries wait for a user"
    );

    g.auto_promote = true;
    let d = deployment(DeploymentStatus::Running, vec![("web", g.clone())]);
    assert!(
        !rollout::awaiting_promotion(&d),
        "auto_promote: the server promotes"
    );
    assert!(rollout::plain_line("web", &d, NOW).contains("(1 placed, auto-promote)"));

    g.auto_promote = false;
    g.healthy = 0;
    let d = deployment(DeploymentStatus::Running, vec![("web", g.clone())]);
    assert!(!rollout::awaiting_promotion(&d), "canaries not healthy yet");

    g.promoted = true;
    g.healthy = 2;
    g.placed = 2;
    let d = deployment(DeploymentStatus::Running, vec![("web", g)]);
    assert!(!rollout::awaiting_promotion(&d));
    assert_eq!(
        rollout::plain_line("web", &d, NOW),
        "web: version 2 running: web 2/3 healthy, 2 placed, 1 canary promoted, deadline in 9m12s"
    );
}

#[test]
fn terminal_and_paused_deployments_show_no_clock_but_their_description() {
    let mut d = deployment(DeploymentStatus::Failed, vec![("web", group(3, 1, 0))]);
    d.description = "allocation web.web[0] unhealthy: check web-http failing".into();
    assert_eq!(
        rollout::plain_line("web", &d, NOW),
        "web: version 2 failed - allocation web.web[0] unhealthy: check web-http failing: \
         web 0/3 healthy, 1 placed"
    );
    let mut d = deployment(DeploymentStatus::Paused, vec![("web", group(3, 1, 1))]);
    d.description = "paused by a user".into();
    assert!(!rollout::plain_line("web", &d, NOW).contains("deadline"));
}

#[test]
fn a_rollback_says_which_version_it_goes_back_to() {
    let mut d = deployment(DeploymentStatus::Successful, vec![("web", group(3, 3, 3))]);
    d.job_version = 3;
    d.reverts_to = Some(1);
    d.description = "deployment completed successfully".into();
    assert_eq!(
        rollout::headline("web", &d),
        "web: version 3 successful (rollback to version 1) - deployment completed successfully"
    );
    assert_eq!(rollout::healthy_summary(&d), "3/3 healthy");
}

#[test]
fn the_signature_ignores_the_clock_but_not_progress() {
    let a = deployment(DeploymentStatus::Running, vec![("web", group(3, 2, 1))]);
    // Same deployment seen later: same signature, no new plain line.
    assert_eq!(rollout::signature(&a), rollout::signature(&a.clone()));
    assert_ne!(
        rollout::plain_line("web", &a, NOW),
        rollout::plain_line("web", &a, NOW + 5_000),
        "the countdown moves"
    );
    let b = deployment(DeploymentStatus::Running, vec![("web", group(3, 2, 2))]);
    assert_ne!(rollout::signature(&a), rollout::signature(&b));
}

#[test]
fn time_left_formats() {
    assert_eq!(rollout::fmt_left(0), "0s");
    assert_eq!(rollout::fmt_left(1), "1s", "rounded up: time is left");
    assert_eq!(rollout::fmt_left(45_000), "45s");
    assert_eq!(rollout::fmt_left(60_000), "1m00s");
    assert_eq!(rollout::fmt_left(552_000), "9m12s");
    assert_eq!(rollout::fmt_left(3_900_000), "1h05m");
}

#[test]
fn status_rows() {
    let mut g = group(3, 1, 1);
    g.desired_canaries = 1;
    g.placed_canaries = vec!["c1".into()];
    let d = deployment(
        DeploymentStatus::Running,
        vec![("web", g), ("db", group(1, 0, 0))],
    );
    assert_eq!(
        rollout::status_rows(&d, NOW),
        vec![
            vec!["db", "1", "0", "0", "0", "-", "-", "in 9m12s"],
            vec!["web", "3", "1", "1", "0", "1/1", "no", "in 9m12s"],
        ]
    );
    let done = deployment(DeploymentStatus::Successful, vec![("db", group(1, 1, 1))]);
    assert_eq!(rollout::status_rows(&done, NOW)[0][7], "-");
}

// The spec diff.

fn spec(image: &str, env: serde_json::Value, count: u32) -> serde_json::Value {
    json!({
        "name": "web",
        "groups": [{
            "name": "web",
            "count": count,
            "tasks": [
                {"name": "app", "image": image, "env": env, "command": ["serve", "--port", "80"]},
                {"name": "sidecar", "image": "org/log:1"}
            ]
        }]
    })
}

#[test]
fn flatten_keys_named_lists_by_name_and_others_by_position() {
    let leaves = specdiff::flatten(&spec("org/app:1", json!({"FOO": "bar"}), 3));
    let lines: Vec<String> = leaves.iter().map(|(p, v)| format!("{p}: {v}")).collect();
    assert_eq!(
        lines,
        vec![
            r#"groups[web].count: 3"#,
            r#"groups[web].tasks[app].command[0]: "serve""#,
            r#"groups[web].tasks[app].command[1]: "--port""#,
            r#"groups[web].tasks[app].command[2]: "80""#,
            r#"groups[web].tasks[app].env.FOO: "bar""#,
            r#"groups[web].tasks[app].image: "org/app:1""#,
            r#"groups[web].tasks[sidecar].image: "org/log:1""#,
            r#"name: "web""#,
        ]
    );
}

#[test]
fn diff_shows_changed_added_and_removed_leaves() {
    let old = spec("org/app:1", json!({"FOO": "bar", "OLD": "x"}), 3);
    let new = spec("org/app:2", json!({"FOO": "bar", "NEW": "y"}), 3);
    let changes = specdiff::diff(&old, &new);
    assert_eq!(
        specdiff::lines(&changes),
        vec![
            r#"- groups[web].tasks[app].env.OLD: "x""#,
            r#"+ groups[web].tasks[app].env.NEW: "y""#,
            r#"- groups[web].tasks[app].image: "org/app:1""#,
            r#"+ groups[web].tasks[app].image: "org/app:2""#,
        ]
    );
    // JSON: path with old and/or new values.
    let v = serde_json::to_value(&changes).unwrap();
    assert_eq!(
        v[0],
        json!({"path": "groups[web].tasks[app].env.OLD", "old": "x"})
    );
    assert_eq!(
        v[1],
        json!({"path": "groups[web].tasks[app].env.NEW", "new": "y"})
    );
    assert_eq!(
        v[2],
        json!({"path": "groups[web].tasks[app].image", "old": "org/app:1", "new": "org/app:2"})
    );
}

#[test]
fn identical_specs_have_no_changes_and_reordered_named_items_none_either() {
    let a = spec("org/app:1", json!({}), 3);
    assert!(specdiff::diff(&a, &a).is_empty());
    let mut b = a.clone();
    let tasks = b["groups"][0]["tasks"].as_array_mut().unwrap();
    tasks.reverse();
    assert!(
        specdiff::diff(&a, &b).is_empty(),
        "{:?}",
        specdiff::diff(&a, &b)
    );
}

#[test]
fn emptying_a_map_and_adding_a_group_show() {
    let old = spec("org/app:1", json!({"FOO": "bar"}), 3);
    let mut new = spec("org/app:1", json!({}), 3);
    new["groups"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "db", "count": 1}));
    assert_eq!(
        specdiff::lines(&specdiff::diff(&old, &new)),
        vec![
            r#"- groups[web].tasks[app].env.FOO: "bar""#,
            r#"+ groups[web].tasks[app].env: {}"#,
            r#"+ groups[db].count: 1"#,
        ]
    );
}

#[test]
fn the_real_job_spec_flattens_by_group_and_task_name() {
    let mut s = corral_types::JobSpec {
        name: "web".into(),
        groups: vec![],
        update: Default::default(),
    };
    let before = serde_json::to_value(&s).unwrap();
    s.update.canary = 1;
    let after = serde_json::to_value(&s).unwrap();
    assert_eq!(
        specdiff::lines(&specdiff::diff(&before, &after)),
        vec!["- update.canary: 0", "+ update.canary: 1"]
    );
}
