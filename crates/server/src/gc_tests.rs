//! What garbage collection deletes and what it keeps.

use std::time::Duration;

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{
    Allocation, ClientStatus, DeploymentStatus, DesiredStatus, EvalStatus, EvalTrigger, NodeStatus,
};

use super::{GcReport, garbage};
use crate::config::GcConfig;
use crate::core::Core;
use crate::test_server::TestServer;

const HOUR: u64 = 3_600_000;
/// "Now" in these tests: a day and a bit after the epoch.
const NOW: u64 = 30 * HOUR;

fn store() -> StateStore {
    StateStore::open(Box::new(MemoryStore::new())).expect("store")
}

fn ended(mut a: Allocation, client: ClientStatus, at: u64) -> Allocation {
    a.client = client;
    a.desired = DesiredStatus::Stop;
    a.modified_at = at;
    a
}

fn deleted(writes: &[Write]) -> Vec<String> {
    let mut out: Vec<String> = writes
        .iter()
        .map(|w| match w {
            Write::DeleteAlloc(id) => format!("alloc {id}"),
            Write::DeleteEval(id) => format!("eval {id}"),
            Write::DeleteDeployment(id) => format!("deployment {id}"),
            Write::DeleteNode(id) => format!("node {id}"),
            other => format!("unexpected {other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// Terminal allocations of a live job go after the threshold, except the
/// newest of each slot the job still has and one a running allocation
/// replaces.
#[test]
fn terminal_allocations_of_live_jobs() {
    let s = store();
    let web = job("web", 1, vec![group("web", 2).build()]);
    let old = NOW - 2 * HOUR;
    // Slot 0: failed twice, then running.
    let a0 = ended(alloc("a0", &web, "web", 0, "n1"), ClientStatus::Failed, old);
    let a1 = ended(alloc("a1", &web, "web", 0, "n1"), ClientStatus::Failed, old);
    let mut a2 = alloc("a2", &web, "web", 0, "n1");
    a2.previous = Some("a1".into());
    // Slot 1: failed for good (the newest of its slot).
    let b0 = ended(alloc("b0", &web, "web", 1, "n1"), ClientStatus::Failed, old);
    // Slot 5: beyond the count after a scale down.
    let c0 = ended(
        alloc("c0", &web, "web", 5, "n1"),
        ClientStatus::Complete,
        old,
    );
    // Slot 0, recent: not yet.
    let a3 = ended(alloc("a3", &web, "web", 0, "n1"), ClientStatus::Failed, NOW);
    // Slot 1, part of a paused rollout: its watcher counts it.
    let mut b1 = ended(alloc("b1", &web, "web", 1, "n1"), ClientStatus::Failed, old);
    b1.deployment_id = Some("d1".into());
    let mut paused = corral_scheduler::deployment::new_deployment(&web, &[], "d1".into(), None, 1);
    paused.status = DeploymentStatus::Paused;
    for w in [
        Write::Node(node("n1").build()),
        Write::Job(web.clone()),
        Write::Deployment(paused),
        Write::Alloc(b1),
        Write::Alloc(a0),
        Write::Alloc(a1),
        Write::Alloc(c0),
        Write::Alloc(b0),
        Write::Alloc(a3),
        Write::Alloc(a2),
    ] {
        s.commit(vec![w]).expect("commit");
    }
    let (writes, report) = garbage(&s.snapshot(), NOW, &GcConfig::default());
    assert_eq!(deleted(&writes), ["alloc a0", "alloc c0"]);
    assert_eq!(report.allocations, 2);
    // Forced: the recent one too, never the newest of a kept slot or what
    // a running allocation replaces.
    let (writes, _) = garbage(&s.snapshot(), NOW, &GcConfig::FORCE);
    assert_eq!(deleted(&writes), ["alloc a0", "alloc a3", "alloc c0"]);
}

/// Finished evaluations go after the threshold, except each job's newest;
/// pending and blocked ones stay whatever their age.
#[test]
fn finished_evaluations() {
    let s = store();
    let web = job("web", 1, vec![group("web", 1).build()]);
    let eval = |id: &str, job: &str, status: EvalStatus, at: u64| {
        let mut e = Core::new_eval(job, EvalTrigger::JobRegister, at);
        e.id = id.into();
        e.status = status;
        e
    };
    let old = NOW - 2 * HOUR;
    s.commit(vec![Write::Job(web)]).expect("job");
    for e in [
        eval("e1", "web", EvalStatus::Complete, old),
        eval("e2", "web", EvalStatus::Failed, old),
        eval("e3", "web", EvalStatus::Blocked, old),
        eval("e4", "web", EvalStatus::Complete, old),
        eval("e5", "web", EvalStatus::Complete, NOW),
        eval("e6", "web", EvalStatus::Complete, old),
        // A purged job's: all of them.
        eval("p1", "gone", EvalStatus::Complete, old),
        eval("p2", "gone", EvalStatus::Pending, old),
    ] {
        s.commit(vec![Write::Eval(e)]).expect("eval");
    }
    let (writes, report) = garbage(&s.snapshot(), NOW, &GcConfig::default());
    assert_eq!(
        deleted(&writes),
        ["eval e1", "eval e2", "eval e4", "eval p1"]
    );
    assert_eq!(report.evaluations, 4);
    let (writes, _) = garbage(&s.snapshot(), NOW, &GcConfig::FORCE);
    assert_eq!(
        deleted(&writes),
        ["eval e1", "eval e2", "eval e4", "eval e5", "eval p1"]
    );
}

/// Ended deployments go after the threshold, except each job's newest and
/// any a running allocation belongs to; active ones stay.
#[test]
fn ended_deployments() {
    let s = store();
    let web = job("web", 3, vec![group("web", 1).build()]);
    let old = NOW - 2 * HOUR;
    let dep = |id: &str, status: DeploymentStatus, at: u64| {
        let mut d = corral_scheduler::deployment::new_deployment(&web, &[], id.into(), None, at);
        d.status = status;
        d.modified_at = at;
        d
    };
    let mut running = alloc("r", &web, "web", 0, "n1");
    running.deployment_id = Some("d2".into());
    s.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(web.clone()),
    ])
    .expect("job");
    for d in [
        dep("d1", DeploymentStatus::Successful, old),
        dep("d2", DeploymentStatus::Successful, old),
        dep("d3", DeploymentStatus::Failed, old),
        dep("d4", DeploymentStatus::Paused, old),
        dep("d5", DeploymentStatus::Cancelled, NOW),
        dep("d6", DeploymentStatus::Failed, old),
    ] {
        s.commit(vec![Write::Deployment(d)]).expect("deployment");
    }
    s.commit(vec![Write::Alloc(running)]).expect("alloc");
    let (writes, report) = garbage(&s.snapshot(), NOW, &GcConfig::default());
    assert_eq!(deleted(&writes), ["deployment d1", "deployment d3"]);
    assert_eq!(report.deployments, 2);
    let (writes, _) = garbage(&s.snapshot(), NOW, &GcConfig::FORCE);
    assert_eq!(
        deleted(&writes),
        ["deployment d1", "deployment d3", "deployment d5"]
    );
}

/// A node down for the threshold goes with its terminal allocations; one
/// with an allocation that may still run stays, as does one down briefly.
#[test]
fn nodes_down_long_enough() {
    let s = store();
    let web = job("web", 1, vec![group("web", 3).build()]);
    let down = |id: &str, since: u64| {
        let mut n = node(id).build();
        n.status = NodeStatus::Down;
        n.down_since = Some(since);
        n
    };
    let day_ago = NOW - 25 * HOUR;
    let lost = ended(
        alloc("l0", &web, "web", 0, "old"),
        ClientStatus::Lost,
        day_ago,
    );
    let still = alloc("s1", &web, "web", 1, "busy");
    s.commit(vec![
        Write::Job(web.clone()),
        Write::Node(down("old", day_ago)),
        Write::Node(down("busy", day_ago)),
        Write::Node(down("recent", NOW - HOUR)),
        Write::Node(node("up").build()),
        Write::Alloc(lost),
        Write::Alloc(still),
    ])
    .expect("commit");
    let (writes, report) = garbage(&s.snapshot(), NOW, &GcConfig::default());
    assert_eq!(deleted(&writes), ["alloc l0", "node old"]);
    assert_eq!(
        report,
        GcReport {
            allocations: 1,
            nodes: 1,
            ..GcReport::default()
        }
    );
    let (writes, _) = garbage(&s.snapshot(), NOW, &GcConfig::FORCE);
    assert_eq!(deleted(&writes), ["alloc l0", "node old", "node recent"]);
    // A node that registered again after the scan is not deleted.
    s.commit(vec![Write::Node(node("old").build())])
        .expect("back");
    let back = s.snapshot();
    assert!(!writes.iter().any(
        |w| matches!(w, Write::DeleteNode(id) if id == "old") && super::still_garbage(&back, w)
    ));
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::DeleteNode(id) if id == "recent")
                && super::still_garbage(&back, w))
    );
}

/// Found by a hostile run: collecting a down node deleted the failed
/// allocation holding its slot, and the scheduler placed the failing spec
/// again. It stays (its node gone), and the job's plan places nothing
/// while its reschedule policy allows no more attempts.
#[test]
fn a_failed_allocation_holding_its_slot_outlives_its_node() {
    let s = store();
    let mut web = job("web", 1, vec![group("web", 1).build()]);
    web.spec.groups[0].reschedule = corral_types::ReschedulePolicy {
        unlimited: false,
        attempts: 0,
        ..Default::default()
    };
    let mut dead = node("gone").build();
    dead.status = NodeStatus::Down;
    dead.down_since = Some(NOW - 25 * HOUR);
    let mut failed = alloc("f0", &web, "web", 0, "gone");
    failed.client = ClientStatus::Failed;
    failed.modified_at = NOW - 25 * HOUR;
    s.commit(vec![
        Write::Job(web.clone()),
        Write::Node(dead),
        Write::Node(node("up").build()),
        Write::Alloc(failed),
    ])
    .expect("commit");
    let (writes, _) = garbage(&s.snapshot(), NOW, &GcConfig::FORCE);
    assert_eq!(deleted(&writes), ["node gone"]);
    s.commit(writes).expect("gc");
    let snap = s.snapshot();
    assert!(snap.alloc("f0").is_some());
    let mut ids = corral_scheduler::testing::ids("e");
    let mut ctx = corral_scheduler::PlanContext {
        new_id: &mut ids,
        now: NOW,
    };
    let eval = corral_scheduler::testing::eval("e", "web");
    let plan = corral_scheduler::schedule(&*snap, &eval, &mut ctx);
    assert!(plan.place.is_empty(), "{plan:#?}");
}

/// Through the server: `PUT /v1/system/gc` forces a collection; the job's
/// history and status still answer, a GC'd node's metric series are gone
/// and its firing `node_down` alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_gc_through_the_api_keeps_history_and_resolves_node_alerts() {
    let server = TestServer::start_with(|c| {
        c.alerts.enabled = true;
        c.alerts.eval_interval = Duration::from_millis(50);
        c.alerts.node_down.for_duration = Duration::ZERO;
        c.alerts.webhooks.clear();
        c.alerts.disk.enabled = false;
        c.alerts.memory.enabled = false;
    })
    .await;
    let core = server.core.clone();
    let base = server.serve().await;
    let v1 = job("web", 1, vec![group("web", 1).build()]);
    let mut v2 = job("web", 2, vec![group("web", 1).env("V", "2").build()]);
    v2.stable = true;
    let mut dead = node("dead").build();
    dead.name = "dead-node".into();
    dead.status = NodeStatus::Down;
    dead.down_since = Some(1);
    let old = ended(alloc("old", &v1, "web", 0, "dead"), ClientStatus::Lost, 1);
    let mut new = alloc("new", &v2, "web", 0, "n1");
    new.job_version = 2;
    new.previous = None;
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Node(dead),
        Write::Job(v1),
        Write::Job(v2),
        Write::Alloc(old),
        Write::Alloc(new),
    ])
    .await
    .expect("commit");
    let http = reqwest::Client::new();
    let firing = || async {
        core.store
            .snapshot()
            .alerts()
            .filter(|a| a.resolved_at.is_none())
            .count()
    };
    crate::test_server::wait_for("the node_down alert fires", || async {
        firing().await == 1
    })
    .await;

    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    assert!(metrics().await.contains("dead-node"));
    let r = http
        .put(format!("{base}/v1/system/gc"))
        .send()
        .await
        .expect("gc");
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.expect("json");
    assert_eq!(report["nodes"], 1, "{report}");
    assert_eq!(report["allocations"], 1, "{report}");
    let s = core.store.snapshot();
    assert!(s.node_by_id("dead").is_none() && s.alloc("old").is_none());
    assert!(s.alloc("new").is_some());

    // History and status still answer.
    let versions: serde_json::Value = http
        .get(format!("{base}/v1/jobs/web/versions"))
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("json");
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    assert_eq!(versions[0]["stable"], true);
    let status = http
        .get(format!("{base}/v1/jobs/web"))
        .send()
        .await
        .expect("status");
    assert_eq!(status.status(), 200);

    // The node's series and its alert are gone.
    let text = metrics().await;
    assert!(!text.contains("dead-node"), "{text}");
    crate::test_server::wait_for("the node_down alert resolves", || async {
        firing().await == 0
    })
    .await;
    server.stop().await;
}

/// Found by a hostile run: a node collected right after it went down, then
/// a server restart, and the restarted server (knowing fewer nodes) gave
/// every healthy node a shorter deadline than the TTL it had handed out.
/// Even a forced collection keeps a down node until every agent has beaten
/// since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_just_down_is_kept_until_every_agent_has_beaten_since() {
    let server = TestServer::start_with(|_| {}).await;
    let core = server.core.clone();
    let now = crate::core::now_ms();
    let mut recent = node("recent").build();
    recent.status = NodeStatus::Down;
    recent.down_since = Some(now);
    let mut old = node("old").build();
    old.status = NodeStatus::Down;
    old.down_since = Some(now - 3_600_000);
    core.commit(vec![Write::Node(recent), Write::Node(old)])
        .await
        .expect("commit");
    let report = super::collect(&core, now, GcConfig::FORCE)
        .await
        .expect("gc");
    assert_eq!(report.nodes, 1);
    let snap = core.store.snapshot();
    assert!(snap.node_by_id("recent").is_some());
    assert!(snap.node_by_id("old").is_none());
    server.stop().await;
}
