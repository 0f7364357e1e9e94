use std::collections::BTreeMap;

use corral_types::api::{AllocView, EvalView, GroupSummary, JobView};
use corral_types::{ClientStatus, DesiredStatus, JobSpec, JobStatus, Resources, TaskState};

use super::*;

fn view(eval_status: &str, allocs: Vec<(u64, ClientStatus, DesiredStatus)>) -> JobView {
    JobView {
        name: "web".into(),
        version: 2,
        status: JobStatus::Pending,
        reason: String::new(),
        stopped: false,
        submitted_at: 0,
        spec: JobSpec {
            name: "web".into(),
            groups: vec![],
            update: Default::default(),
        },
        groups: vec![GroupSummary {
            name: "web".into(),
            count: 2,
            pending: 0,
            running: 0,
            complete: 0,
            failed: 0,
            lost: 0,
        }],
        allocations: allocs
            .into_iter()
            .enumerate()
            .map(|(i, (v, s, d))| AllocView {
                volume_sync: Default::default(),
                reschedules: Default::default(),
                id: format!("a{i}"),
                name: format!("web.web[{i}]"),
                job: "web".into(),
                job_version: v,
                group: "web".into(),
                index: i as u32,
                node: "n".into(),
                node_id: "n".into(),
                status: s,
                state: s.into(),
                reason: String::new(),
                desired: d,
                desired_reason: String::new(),
                tasks: BTreeMap::from([(
                    "web".to_string(),
                    TaskState {
                        message: if s == ClientStatus::Failed {
                            "exited with code 3".into()
                        } else {
                            String::new()
                        },
                        ..TaskState::default()
                    },
                )]),
                ports: BTreeMap::new(),
                resources: Resources::default(),
                message: String::new(),
                previous: None,
                deployment_id: None,
                canary: false,
                health: None,
                checks: BTreeMap::new(),
                created_at: 0,
                modified_at: 0,
            })
            .collect(),
        latest_eval: Some(EvalView {
            id: "e1".into(),
            status: eval_status.into(),
            trigger: "job-register".into(),
            description: String::new(),
            failures: vec![
                "group \"web\": 2 allocations not placed (1 node: memory exhausted)".into(),
            ],
            modify_index: 1,
        }),
        index: 1,
    }
}

#[test]
fn waits_for_the_scheduler() {
    assert!(matches!(
        assess(&view("pending", vec![]), "e1"),
        Progress::Waiting(_)
    ));
}

#[test]
fn blocked_placement_fails_with_the_reason() {
    match assess(&view("blocked", vec![]), "e1") {
        Progress::Failed(why) => assert!(why.contains("memory exhausted"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn old_version_running_does_not_count() {
    let v = view(
        "complete",
        vec![
            (1, ClientStatus::Running, DesiredStatus::Stop),
            (2, ClientStatus::Running, DesiredStatus::Run),
        ],
    );
    assert_eq!(
        assess(&v, "e1"),
        Progress::Waiting("1/2 running, 1 of an older version stopping".into())
    );
}

/// Found by a hostile run: scaled to 0, `run` said done while the old
/// processes still ran. An older version stopping is waited for.
#[test]
fn an_older_version_still_stopping_is_not_done() {
    let mut v = view(
        "complete",
        vec![
            (2, ClientStatus::Running, DesiredStatus::Run),
            (2, ClientStatus::Running, DesiredStatus::Run),
            (1, ClientStatus::Running, DesiredStatus::Stop),
        ],
    );
    assert!(matches!(assess(&v, "e1"), Progress::Waiting(_)));
    v.allocations[2].status = ClientStatus::Complete;
    assert_eq!(assess(&v, "e1"), Progress::Done("2/2 running".into()));
}

#[test]
fn done_when_all_current_run_and_failed_when_one_fails() {
    let ok = view(
        "complete",
        vec![
            (2, ClientStatus::Running, DesiredStatus::Run),
            (2, ClientStatus::Running, DesiredStatus::Run),
        ],
    );
    assert_eq!(assess(&ok, "e1"), Progress::Done("2/2 running".into()));
    let bad = view(
        "complete",
        vec![
            (2, ClientStatus::Running, DesiredStatus::Run),
            (2, ClientStatus::Failed, DesiredStatus::Run),
        ],
    );
    match assess(&bad, "e1") {
        Progress::Failed(why) => assert!(why.contains("exited with code 3"), "{why}"),
        other => panic!("{other:?}"),
    }
}
