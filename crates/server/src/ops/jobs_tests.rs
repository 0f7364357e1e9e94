//! What becomes of a purged job's allocations: a new job of the name
//! stops and drops them, maintenance deletes what is left once finished.

use corral_scheduler::testing::{alloc, group, job};
use corral_store::Write;
use corral_types::{ClientStatus, DesiredStatus};

use super::submit;
use crate::test_server::TestServer;

/// The purge's own evaluation may not have stopped them yet: the new job's
/// first submission stops what may still run and deletes what finished,
/// so none of them passes for the new job's (same name, same version 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_job_stops_and_drops_the_allocations_of_a_purged_one() {
    let server = TestServer::start().await;
    let core = server.core.clone();

    let old = job("web", 1, vec![group("web", 2).env("V", "old").build()]);
    let running = alloc("a-running", &old, "web", 0, "n1");
    let mut done = alloc("a-done", &old, "web", 1, "n1");
    done.client = ClientStatus::Complete;
    // The job record is gone (purged); its allocations are not.
    core.commit(vec![Write::Alloc(running), Write::Alloc(done)])
        .await
        .expect("commit");

    let new = job("web", 1, vec![group("web", 2).env("V", "new").build()]);
    submit(&core, vec![new.spec.clone()]).await.expect("submit");
    let snap = core.store.snapshot();
    assert!(
        snap.alloc("a-done").is_none(),
        "the finished one is deleted"
    );
    let a = snap.alloc("a-running").expect("kept until it has stopped");
    assert_eq!(a.desired, DesiredStatus::Stop);
    assert_eq!(a.desired_reason, "its job was purged");

    server.stop().await;
}

/// Maintenance deletes the finished allocations of a purged job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_deletes_what_a_purged_job_left_behind() {
    let server = TestServer::start().await;
    let core = server.core.clone();
    let old = job("web", 1, vec![group("web", 1).build()]);
    let mut done = alloc("a-done", &old, "web", 0, "n1");
    done.client = ClientStatus::Complete;
    core.commit(vec![Write::Alloc(done)]).await.expect("commit");
    let n = crate::maintenance::delete_orphans(&core)
        .await
        .expect("sweep");
    assert_eq!(n, 1);
    assert!(core.store.snapshot().alloc("a-done").is_none());
    server.stop().await;
}
