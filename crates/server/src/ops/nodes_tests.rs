//! Which agent reports bring a new evaluation.

use std::collections::BTreeMap;

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::Write;
use corral_types::{AllocHealth, AllocUpdate, Allocation, ClientStatus, EvalTrigger, Job};

use super::update_allocations;
use crate::test_server::TestServer;

fn healthy(a: &Allocation) -> AllocUpdate {
    AllocUpdate {
        id: a.id.clone(),
        client: ClientStatus::Running,
        tasks: BTreeMap::new(),
        message: String::new(),
        checks: BTreeMap::new(),
        health: Some(AllocHealth {
            healthy: true,
            at: 1,
            message: String::new(),
        }),
    }
}

fn owned(id: &str, j: &Job, index: u32) -> Allocation {
    let mut a = alloc(id, j, "web", index, "n1");
    a.deployment_id = Some(format!("d{}", j.version));
    a
}

fn report_evals(core: &crate::Core) -> usize {
    core.store
        .snapshot()
        .evals()
        .filter(|e| e.trigger == EvalTrigger::NodeDrain)
        .count()
}

/// A new job's allocations turning healthy move nothing forward (every
/// slot was placed at once): no evaluation per report. In a rolling update
/// (an older version still runs) the same report brings one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_rolling_update_is_re_evaluated_on_health() {
    let server = TestServer::start().await;
    let core = server.core.clone();

    let v1 = job("web", 1, vec![group("web", 2).build()]);
    let (a0, a1) = (owned("a0", &v1, 0), owned("a1", &v1, 1));
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v1.clone()),
        Write::Alloc(a0.clone()),
        Write::Alloc(a1.clone()),
    ])
    .await
    .expect("commit");
    update_allocations(&core, "n1", vec![healthy(&a0), healthy(&a1)])
        .await
        .expect("report");
    assert_eq!(report_evals(&core), 0, "a new job needs no re-evaluation");
    assert!(core.store.snapshot().alloc("a0").expect("a0").is_healthy());

    // Version 2 replaced slot 0; slot 1 still runs version 1.
    let v2 = job("web", 2, vec![group("web", 2).env("V", "2").build()]);
    let b0 = owned("b0", &v2, 0);
    core.commit(vec![
        Write::Job(v2.clone()),
        Write::DeleteAlloc("a0".into()),
        Write::Alloc(b0.clone()),
    ])
    .await
    .expect("commit");
    update_allocations(&core, "n1", vec![healthy(&b0)])
        .await
        .expect("report");
    assert_eq!(report_evals(&core), 1, "the rollout moves on");
    server.stop().await;
}
