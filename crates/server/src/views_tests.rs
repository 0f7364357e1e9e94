//! What `corral status` is told: job status and reasons from real state.

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{
    AllocState, Allocation, ClientStatus, DesiredStatus, JobStatus, TaskLifecycle, TaskState,
};

use super::*;

fn store() -> StateStore {
    StateStore::open(Box::new(MemoryStore::new())).expect("store")
}

fn task(state: TaskLifecycle, message: &str) -> TaskState {
    TaskState {
        state,
        message: message.into(),
        ..TaskState::default()
    }
}

fn with(mut a: Allocation, client: ClientStatus, t: TaskState) -> Allocation {
    a.client = client;
    a.tasks.insert("app".into(), t);
    a
}

/// The status and reason of job `web` (count 2) with these allocations.
fn judged(allocs: Vec<Allocation>) -> (JobStatus, String, Vec<(AllocState, String)>) {
    let s = store();
    let j = job("web", 1, vec![group("web", 2).build()]);
    let mut w = vec![Write::Node(node("n1").build()), Write::Job(j.clone())];
    w.extend(allocs.into_iter().map(Write::Alloc));
    s.commit(w).expect("commit");
    let state = s.snapshot();
    let j = state.job("web").expect("job");
    let v = job_view(&state, j);
    let listed = job_list_entry(&state, j);
    assert_eq!((listed.status, &listed.reason), (v.status, &v.reason));
    let allocs = v
        .allocations
        .iter()
        .map(|a| (a.state, a.reason.clone()))
        .collect();
    (v.status, v.reason, allocs)
}

fn web() -> corral_types::Job {
    job("web", 1, vec![group("web", 2).build()])
}

#[test]
fn every_slot_running_is_running() {
    let j = web();
    let run = task(TaskLifecycle::Running, "started");
    let (status, reason, allocs) = judged(vec![
        with(
            alloc("a0", &j, "web", 0, "n1"),
            ClientStatus::Running,
            run.clone(),
        ),
        with(alloc("a1", &j, "web", 1, "n1"), ClientStatus::Running, run),
    ]);
    assert_eq!(status, JobStatus::Running);
    assert_eq!(reason, "");
    assert!(
        allocs
            .iter()
            .all(|(s, r)| *s == AllocState::Running && r.is_empty())
    );
}

/// Issue 14, case 2: a task waiting out its restart delay runs nothing;
/// the allocation says restarting with the task's last message, and so
/// does the job.
#[test]
fn a_task_waiting_for_its_restart_makes_the_job_restarting() {
    let j = web();
    let (status, reason, allocs) = judged(vec![
        with(
            alloc("a0", &j, "web", 0, "n1"),
            ClientStatus::Running,
            task(TaskLifecycle::Running, "started"),
        ),
        with(
            alloc("a1", &j, "web", 1, "n1"),
            ClientStatus::Pending,
            task(
                TaskLifecycle::Restarting,
                "exited with code 3; restarting in 20s",
            ),
        ),
    ]);
    assert_eq!(status, JobStatus::Restarting);
    assert_eq!(
        reason,
        "web.web[1]: task app: exited with code 3; restarting in 20s"
    );
    assert_eq!(
        allocs[1],
        (
            AllocState::Restarting,
            "task app: exited with code 3; restarting in 20s".to_string()
        )
    );
}

/// Issue 14, case 2: a job whose allocations failed (the restart policy
/// gave up) is failed, not pending, with the failure on the line.
#[test]
fn a_failed_allocation_holding_its_slot_makes_the_job_failed() {
    let j = web();
    let mut failed = with(
        alloc("a1", &j, "web", 1, "n1"),
        ClientStatus::Failed,
        TaskState {
            failed: true,
            ..task(TaskLifecycle::Dead, "exceeded 2 restarts in 30m")
        },
    );
    failed.client_message = "task app: exceeded 2 restarts in 30m".into();
    let restarting = with(
        alloc("a0", &j, "web", 0, "n1"),
        ClientStatus::Pending,
        task(
            TaskLifecycle::Restarting,
            "exited with code 3; restarting in 20s",
        ),
    );
    let (status, reason, allocs) = judged(vec![restarting, failed.clone()]);
    assert_eq!(status, JobStatus::Failed);
    assert_eq!(reason, "web.web[1]: task app: exceeded 2 restarts in 30m");
    assert_eq!(allocs[1].0, AllocState::Failed);

    // A replacement on its way in the failed slot: not failed any more.
    let j2 = web();
    let mut replacement = alloc("a2", &j2, "web", 1, "n1");
    replacement.previous = Some("a1".into());
    replacement.client = ClientStatus::Pending;
    let mut stopped = failed.clone();
    stopped.desired = DesiredStatus::Stop;
    let (status, reason, _) = judged(vec![
        with(
            alloc("a0", &j2, "web", 0, "n1"),
            ClientStatus::Running,
            task(TaskLifecycle::Running, "started"),
        ),
        stopped,
        replacement,
    ]);
    assert_eq!((status, reason.as_str()), (JobStatus::Pending, ""));
}

/// A new allocation waiting for the one it replaces says so.
#[test]
fn a_pending_allocation_says_what_it_waits_for() {
    let j = web();
    let mut waiting = alloc("a1", &j, "web", 1, "n1");
    waiting.client = ClientStatus::Pending;
    waiting.client_message = "waiting for the allocations in its way on this node to stop".into();
    let (status, reason, allocs) = judged(vec![
        with(
            alloc("a0", &j, "web", 0, "n1"),
            ClientStatus::Running,
            task(TaskLifecycle::Running, "started"),
        ),
        waiting,
    ]);
    assert_eq!(status, JobStatus::Pending);
    assert_eq!(
        reason,
        "web.web[1]: waiting for the allocations in its way on this node to stop"
    );
    assert_eq!(allocs[1].0, AllocState::Pending);
}
