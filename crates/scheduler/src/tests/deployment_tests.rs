//! The reconciler under a deployment: canaries, promotion, pause, failure,
//! the healthy floor, and count-only changes.

use corral_types::{ClientStatus, DeploymentStatus, DesiredStatus, Plan};

use crate::testing::*;

fn cluster() -> MemState {
    MemState::with_nodes(["n1", "n2", "n3"].map(|id| node(id).build()))
}

/// `web` v1 with `count` running, healthy allocations and its deployment
/// marked successful (as the server's watcher would).
fn running(count: u32) -> MemState {
    let mut s = cluster();
    s.add_job(job("web", 1, vec![group("web", count).build()]));
    let plan = s.schedule("e1", "web");
    s.apply(&plan, ClientStatus::Running);
    set_status(&mut s, 1, DeploymentStatus::Successful);
    s
}

fn set_status(s: &mut MemState, version: u64, status: DeploymentStatus) {
    let d = s
        .deployments
        .iter_mut()
        .find(|d| d.job_version == version)
        .unwrap();
    d.status = status;
}

fn promote(s: &mut MemState, version: u64) {
    let d = s
        .deployments
        .iter_mut()
        .find(|d| d.job_version == version)
        .unwrap();
    for g in d.groups.values_mut() {
        g.promoted = true;
    }
}

fn set_health(s: &mut MemState, id: &str, healthy: bool) {
    let a = s.allocs.iter_mut().find(|a| a.id == id).unwrap();
    a.client = ClientStatus::Running;
    a.health = Some(corral_types::AllocHealth {
        healthy,
        at: 1_000,
        message: String::new(),
    });
}

/// Apply with new allocations pending (health undecided).
fn apply_pending(s: &mut MemState, plan: &Plan) {
    s.apply(plan, ClientStatus::Pending);
}

fn update(s: &mut MemState, version: u64, edit: impl FnOnce(&mut corral_types::GroupSpec)) {
    let mut g = group("web", 4).env("V", &version.to_string()).build();
    edit(&mut g);
    s.add_job(job("web", version, vec![g]));
}

fn healthy_live(s: &MemState) -> usize {
    s.live("web", "web")
        .iter()
        .filter(|a| a.client == ClientStatus::Running && (a.health.is_none() || a.is_healthy()))
        .count()
}

#[test]
fn canaries_run_beside_the_old_version_until_promoted() {
    let mut s = running(4);
    update(&mut s, 2, |g| {
        g.update.canary = 1;
        g.update.max_parallel = 2;
    });
    let plan = s.schedule("e2", "web");
    let d = plan
        .deployments
        .iter()
        .find(|d| d.job_version == 2)
        .expect("a deployment for v2");
    assert_eq!(d.groups["web"].desired_canaries, 1);
    assert!(!d.groups["web"].promoted);
    assert_eq!(plan.place.len(), 1, "one canary: {plan:#?}");
    assert!(plan.place[0].canary);
    assert!(plan.stop.is_empty(), "the old version keeps every slot");
    apply_pending(&mut s, &plan);
    let canary = plan.place[0].id.clone();
    set_health(&mut s, &canary, true);
    // Healthy canary, not promoted: nothing else moves.
    assert!(s.schedule("e3", "web").is_noop());
    assert_eq!(s.live("web", "web").len(), 5);
    promote(&mut s, 2);
    let plan = s.schedule("e4", "web");
    // The canary's slot drops its old allocation; two more roll.
    let reasons: Vec<&str> = plan.stop.iter().map(|x| x.reason.as_str()).collect();
    assert!(
        reasons.contains(&"replaced by a promoted canary"),
        "{reasons:?}"
    );
    assert_eq!(plan.place.len(), 2);
    assert!(plan.place.iter().all(|a| !a.canary));
}

#[test]
fn a_failed_deployment_stops_its_canaries_and_replaces_nothing_more() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.canary = 2);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 2);
    apply_pending(&mut s, &plan);
    set_health(&mut s, &plan.place[0].id.clone(), false);
    set_status(&mut s, 2, DeploymentStatus::Failed);
    let plan = s.schedule("e3", "web");
    assert!(plan.place.is_empty());
    assert_eq!(plan.stop.len(), 2);
    assert!(
        plan.stop
            .iter()
            .all(|x| x.reason == "canary of a failed deployment")
    );
    s.apply(&plan, ClientStatus::Running);
    let live = s.live("web", "web");
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|a| a.job_version == 1), "old version kept");
}

#[test]
fn rolling_waits_for_health_and_keeps_the_floor() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.max_parallel = 1);
    let mut round = 0;
    loop {
        round += 1;
        assert!(round < 20, "no convergence");
        let plan = s.schedule(&format!("r{round}"), "web");
        if plan.is_noop() {
            break;
        }
        assert!(plan.place.len() <= 1, "max_parallel 1: {plan:#?}");
        apply_pending(&mut s, &plan);
        // Floor: count - max_parallel healthy at every step.
        assert!(healthy_live(&s) >= 3, "floor broken at round {round}");
        let pending: Vec<String> = s
            .allocs
            .iter()
            .filter(|a| a.desired == DesiredStatus::Run && a.health.is_none() && a.job_version == 2)
            .map(|a| a.id.clone())
            .collect();
        for id in pending {
            set_health(&mut s, &id, true);
        }
    }
    assert!(s.live("web", "web").iter().all(|a| a.job_version == 2));
}

#[test]
fn an_unhealthy_allocation_holds_the_rollout() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.max_parallel = 1);
    let plan = s.schedule("e2", "web");
    apply_pending(&mut s, &plan);
    set_health(&mut s, &plan.place[0].id.clone(), false);
    assert!(s.schedule("e3", "web").is_noop());
}

#[test]
fn a_paused_deployment_replaces_nothing_until_resumed() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.max_parallel = 2);
    set_status_after_first_plan(&mut s);
    assert!(s.schedule("e3", "web").place.is_empty());
    set_status(&mut s, 2, DeploymentStatus::Running);
    assert_eq!(s.schedule("e4", "web").place.len(), 2);
}

fn set_status_after_first_plan(s: &mut MemState) {
    let plan = s.schedule("e2", "web");
    s.apply(&plan, ClientStatus::Running);
    set_status(s, 2, DeploymentStatus::Paused);
}

/// Issue 12, case 6: a count change is a new version, which becomes
/// stable only through a deployment (as in Nomad): the new allocations'
/// health is checked, the kept ones join it with their proven health.
#[test]
fn count_only_changes_restart_nothing_and_roll_out_under_a_deployment() {
    let mut s = running(3);
    s.add_job(job("web", 2, vec![group("web", 6).build()]));
    let plan = s.schedule("e2", "web");
    assert!(plan.stop.is_empty());
    assert_eq!(plan.in_place.len(), 3);
    assert_eq!(plan.place.len(), 3);
    assert_eq!(plan.deployments.len(), 1, "{:#?}", plan.deployments);
    let d = plan.deployments[0].id.clone();
    assert!(
        plan.in_place
            .iter()
            .all(|u| u.deployment_id.as_deref() == Some(d.as_str()))
    );
    s.apply(&plan, ClientStatus::Running);
    assert!(
        s.live("web", "web").iter().all(|a| a.is_healthy()),
        "kept allocations keep their health"
    );
    s.add_job(job("web", 3, vec![group("web", 2).build()]));
    let plan = s.schedule("e3", "web");
    assert_eq!(plan.stop.len(), 4);
    assert!(plan.stop.iter().all(|x| x.reason == "scaled down"));
    assert!(plan.place.is_empty());
}

#[test]
fn max_parallel_zero_replaces_everything_without_a_deployment() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.max_parallel = 0);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 4);
    assert!(plan.place.iter().all(|a| a.deployment_id.is_none()));
    assert!(plan.deployments.iter().all(|d| d.job_version != 2));
}

/// Issue 14, case 7: the README's `max_parallel: 0`, written in a spec and
/// read by the parser, replaces every allocation at once without a
/// deployment.
#[test]
fn max_parallel_zero_as_written_in_a_spec_replaces_everything_at_once() {
    use corral_types::spec::{SourceFormat, parse_jobs};
    let jobs = parse_jobs(
        "image: org/web:2.0\ncount: 4\nupdate: {max_parallel: 0}\n",
        "web.yaml",
        SourceFormat::Yaml,
    )
    .expect("the spec parses");
    let written = jobs[0].groups[0].update;
    assert_eq!(written.max_parallel, 0);
    let mut s = running(4);
    update(&mut s, 2, |g| g.update = written);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 4, "every allocation replaced at once");
    assert_eq!(plan.stop.len(), 4);
    assert!(plan.place.iter().all(|a| a.deployment_id.is_none()));
    assert!(plan.deployments.iter().all(|d| d.job_version != 2));
}

#[test]
fn an_unhealthy_allocation_stops_the_rollout_even_with_budget_left() {
    let mut s = running(4);
    update(&mut s, 2, |g| g.update.max_parallel = 2);
    let plan = s.schedule("e2", "web");
    assert_eq!(plan.place.len(), 2);
    apply_pending(&mut s, &plan);
    // One is unhealthy, the other healthy: budget would allow one more.
    set_health(&mut s, &plan.place[0].id.clone(), false);
    set_health(&mut s, &plan.place[1].id.clone(), true);
    assert!(s.schedule("e3", "web").place.is_empty());
}
