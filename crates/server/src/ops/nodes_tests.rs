//! Which agent reports bring a new evaluation.

use std::collections::BTreeMap;

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::Write;
use corral_types::{AllocHealth, AllocUpdate, Allocation, ClientStatus, EvalTrigger, Job};

use super::update_allocations;
use crate::test_server::TestServer;

fn healthy(a: &Allocation) -> AllocUpdate {
    AllocUpdate {
        volume_sync: Default::default(),
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

/// Found by a hostile run: slot 1's old allocation had failed, slot 0 was
/// replaced, and its health report brought no evaluation (nothing older
/// was live), so slot 1 stayed empty until the deployment failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_older_allocation_keeps_the_rollout_evaluated() {
    let server = TestServer::start().await;
    let core = server.core.clone();
    let v1 = job("web", 1, vec![group("web", 2).build()]);
    let v2 = job("web", 2, vec![group("web", 2).env("V", "2").build()]);
    let mut failed = owned("a1", &v1, 1);
    failed.client = ClientStatus::Failed;
    let b0 = owned("b0", &v2, 0);
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v1),
        Write::Job(v2),
        Write::Alloc(failed),
        Write::Alloc(b0.clone()),
    ])
    .await
    .expect("commit");
    update_allocations(&core, "n1", vec![healthy(&b0)])
        .await
        .expect("report");
    assert_eq!(
        report_evals(&core),
        1,
        "the failed slot is still to replace"
    );
    server.stop().await;
}

/// A node named like another node's short id (`node ls` shows 8
/// characters): neither is picked, both ids are named; the full id of
/// either still reaches it.
#[test]
fn a_name_that_is_another_nodes_id_prefix_is_ambiguous() {
    let s =
        corral_store::StateStore::open(Box::new(corral_store::MemoryStore::new())).expect("store");
    let dev_id = "0f8bc42b-1111-2222-3333-444455556666";
    let mut dev = node(dev_id).build();
    dev.name = "dev".into();
    let mut other = node("9a9a9a9a-0000-0000-0000-000000000000").build();
    other.name = "0f8bc42b".into();
    s.commit(vec![Write::Node(dev), Write::Node(other)])
        .expect("nodes");
    let state = s.snapshot();
    let err = super::resolve(&state, "0f8bc42b")
        .expect_err("a name and an id prefix of two nodes")
        .to_string();
    assert!(
        err.contains(dev_id) && err.contains("9a9a9a9a-0000-0000-0000-000000000000"),
        "{err}"
    );
    assert!(err.contains("full id"), "{err}");
    assert_eq!(super::resolve(&state, dev_id).expect("by id").name, "dev");
    assert_eq!(
        super::resolve(&state, "9a9a9a9a-0000-0000-0000-000000000000")
            .expect("by id")
            .name,
        "0f8bc42b"
    );
    // A name that is also a prefix of its own id is no ambiguity.
    assert_eq!(super::resolve(&state, "dev").expect("by name").id, dev_id);
    assert_eq!(
        super::resolve(&state, "0f8b").expect("by prefix").name,
        "dev"
    );
}

/// An allocation that should run ending without failing (its agent
/// stopped it: a `corral dev` shut down) brings an evaluation, so its slot
/// is filled again; one that failed, or was told to stop, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_its_agent_stopped_is_replaced() {
    let server = TestServer::start().await;
    let core = server.core.clone();
    let v1 = job("web", 1, vec![group("web", 3).build()]);
    let (a0, a1) = (
        alloc("a0", &v1, "web", 0, "n1"),
        alloc("a1", &v1, "web", 1, "n1"),
    );
    let mut a2 = alloc("a2", &v1, "web", 2, "n1");
    a2.desired = corral_types::DesiredStatus::Stop;
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v1.clone()),
        Write::Alloc(a0.clone()),
        Write::Alloc(a1.clone()),
        Write::Alloc(a2.clone()),
    ])
    .await
    .expect("commit");
    let ended = |a: &Allocation, client| AllocUpdate {
        volume_sync: Default::default(),
        id: a.id.clone(),
        client,
        tasks: BTreeMap::new(),
        message: String::new(),
        checks: BTreeMap::new(),
        health: None,
    };
    let stopped_evals = |core: &crate::Core| {
        core.store
            .snapshot()
            .evals()
            .filter(|e| e.trigger == EvalTrigger::AllocStopped)
            .count()
    };
    update_allocations(
        &core,
        "n1",
        vec![
            ended(&a1, ClientStatus::Failed),
            ended(&a2, ClientStatus::Complete),
        ],
    )
    .await
    .expect("report");
    assert_eq!(stopped_evals(&core), 0);
    update_allocations(&core, "n1", vec![ended(&a0, ClientStatus::Complete)])
        .await
        .expect("report");
    assert_eq!(stopped_evals(&core), 1);
}
