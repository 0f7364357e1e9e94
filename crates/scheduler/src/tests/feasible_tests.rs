//! One test per node filter, plus the plan applier's re-check.

use corral_types::{
    ClientStatus, ConstraintOp, DriverKind, GroupSpec, NetworkMode, Node, NodeStatus, Plan,
};

use crate::testing::{GroupBuilder, MemState, NodeBuilder, alloc, group, job, node};

/// Schedule one group on the nodes; return the plan.
fn plan_for(nodes: Vec<NodeBuilder>, g: GroupBuilder) -> Plan {
    let mut s = MemState::with_nodes(nodes.into_iter().map(NodeBuilder::build));
    s.add_job(job("web", 1, vec![g.build()]));
    s.schedule("e1", "web")
}

/// The single failure reason when one node refuses one allocation.
fn refusal(n: NodeBuilder, g: GroupBuilder) -> String {
    let plan = plan_for(vec![n], g);
    assert!(
        plan.place.is_empty(),
        "unexpectedly placed: {:?}",
        plan.place
    );
    let f = &plan.failed[0];
    assert_eq!(f.reasons.len(), 1);
    f.reasons[0].0.clone()
}

fn accepted(n: NodeBuilder, g: GroupBuilder) -> bool {
    plan_for(vec![n], g).place.len() == 1
}

#[test]
fn node_status() {
    let g = || group("web", 1);
    assert_eq!(
        refusal(node("n").status(NodeStatus::Down), g()),
        "node down"
    );
    assert_eq!(
        refusal(node("n").status(NodeStatus::Initializing), g()),
        "node not ready"
    );
    assert_eq!(refusal(node("n").eligible(false), g()), "node ineligible");
    assert_eq!(refusal(node("n").draining(true), g()), "node draining");
    assert!(accepted(node("n"), g()));
}

#[test]
fn driver_must_be_present() {
    let g = || group("web", 1).driver(DriverKind::Exec);
    assert_eq!(
        refusal(node("n").drivers(&["container"]), g()),
        "driver exec missing"
    );
    assert!(accepted(node("n").drivers(&["exec"]), g()));
}

fn constrained(op: ConstraintOp, values: &[&str]) -> GroupBuilder {
    group("web", 1).constraint("node.labels.zone", op, values)
}

#[test]
fn constraint_eq() {
    let zoned = || node("n").label("zone", "a");
    assert!(accepted(zoned(), constrained(ConstraintOp::Eq, &["a"])));
    assert_eq!(
        refusal(zoned(), constrained(ConstraintOp::Eq, &["b"])),
        "constraint node.labels.zone = b"
    );
    assert_eq!(
        refusal(node("n"), constrained(ConstraintOp::Eq, &["a"])),
        "constraint node.labels.zone = a"
    );
}

#[test]
fn constraint_ne() {
    let zoned = || node("n").label("zone", "a");
    assert!(accepted(zoned(), constrained(ConstraintOp::Ne, &["b"])));
    assert_eq!(
        refusal(zoned(), constrained(ConstraintOp::Ne, &["a"])),
        "constraint node.labels.zone != a"
    );
    // A missing attribute is not equal to anything.
    assert!(accepted(node("n"), constrained(ConstraintOp::Ne, &["a"])));
}

#[test]
fn constraint_regexp() {
    let zoned = || node("n").label("zone", "eu-west-1");
    assert!(accepted(
        zoned(),
        constrained(ConstraintOp::Regexp, &["^eu-"])
    ));
    assert_eq!(
        refusal(zoned(), constrained(ConstraintOp::Regexp, &["^us-"])),
        "constraint node.labels.zone regexp ^us-"
    );
    assert!(!accepted(
        node("n"),
        constrained(ConstraintOp::Regexp, &[".*"])
    ));
    // An invalid pattern matches nothing rather than everything.
    assert!(!accepted(
        zoned(),
        constrained(ConstraintOp::Regexp, &["("])
    ));
}

#[test]
fn constraint_in() {
    let zoned = || node("n").label("zone", "b");
    assert!(accepted(
        zoned(),
        constrained(ConstraintOp::In, &["a", "b"])
    ));
    assert_eq!(
        refusal(zoned(), constrained(ConstraintOp::In, &["a", "c"])),
        "constraint node.labels.zone in a,c"
    );
    assert!(!accepted(
        node("n"),
        constrained(ConstraintOp::In, &["a", "b"])
    ));
}

#[test]
fn constraint_on_attributes_and_name() {
    let g = group("web", 1)
        .constraint("node.attr.os", ConstraintOp::Eq, &["linux"])
        .constraint("node.name", ConstraintOp::Eq, &["n"]);
    assert!(accepted(node("n"), g));
}

#[test]
fn nodes_of_one_class_share_constraint_verdicts_but_not_names_or_status() {
    // Identical nodes (one class); the constraint on the name must still
    // pick the named one, and an ineligible twin must still be refused.
    let g = group("web", 3).constraint("node.name", ConstraintOp::Eq, &["b"]);
    let p = plan_for(vec![node("a"), node("b"), node("c")], g);
    assert_eq!(p.place.len(), 3);
    assert!(
        p.place.iter().all(|a| a.node_id == "b"),
        "{:?}",
        p.place.iter().map(|a| &a.node_id).collect::<Vec<_>>()
    );
    let g = group("web", 2).constraint("node.labels.zone", ConstraintOp::Eq, &["a"]);
    let p = plan_for(
        vec![
            node("x").label("zone", "a").eligible(false),
            node("y").label("zone", "a"),
        ],
        g,
    );
    assert!(p.place.iter().all(|a| a.node_id == "y"));
    let n1 = node("x").label("zone", "a").build();
    let n2 = node("y")
        .label("zone", "a")
        .attr("hostname", "other")
        .build();
    assert_eq!(n1.class, n2.class, "hostname is not part of the class");
    assert_ne!(n1.class, node("z").label("zone", "b").build().class);
}

#[test]
fn distinct_hosts_one_per_node() {
    let plan = plan_for(
        vec![node("n1"), node("n2")],
        group("web", 3).distinct_hosts(),
    );
    assert_eq!(plan.place.len(), 2);
    assert_ne!(plan.place[0].node_id, plan.place[1].node_id);
    assert_eq!(
        plan.failed[0].reasons,
        vec![("distinct_hosts".to_owned(), 2)]
    );
}

#[test]
fn distinct_hosts_counts_existing_allocations() {
    let mut s = MemState::with_nodes([node("n1").build(), node("n2").build()]);
    let j = job("web", 1, vec![group("web", 2).distinct_hosts().build()]);
    s.allocs = vec![alloc("a0", &j, "web", 0, "n1")];
    s.add_job(j);
    let plan = s.schedule("e1", "web");
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].node_id, "n2");
}

#[test]
fn cpu_exhausted() {
    assert_eq!(
        refusal(node("n").cpu(1000), group("web", 1).cpu(1500)),
        "cpu exhausted"
    );
    assert!(accepted(node("n").cpu(1500), group("web", 1).cpu(1500)));
}

#[test]
fn memory_exhausted() {
    let g = || group("web", 1).memory_mb(1024);
    assert_eq!(refusal(node("n").memory_mb(1000), g()), "memory exhausted");
    assert!(accepted(node("n").memory_mb(1024), g()));
}

#[test]
fn resources_count_live_allocations_only() {
    let mut s = MemState::with_nodes([node("n1").cpu(1000).build()]);
    let other = job("batch", 1, vec![group("batch", 1).cpu(800).build()]);
    let mut done = alloc("done", &other, "batch", 0, "n1");
    done.client = ClientStatus::Complete;
    s.allocs = vec![alloc("busy", &other, "batch", 0, "n1")];
    s.add_job(job("web", 1, vec![group("web", 1).cpu(300).build()]));
    assert_eq!(
        s.schedule("e1", "web").failed[0].reasons[0].0,
        "cpu exhausted"
    );
    s.allocs = vec![done];
    assert_eq!(s.schedule("e1", "web").place.len(), 1);
}

#[test]
fn placements_in_one_plan_see_each_other() {
    let plan = plan_for(
        vec![node("n").memory_mb(1000)],
        group("web", 3).memory_mb(400),
    );
    assert_eq!(plan.place.len(), 2);
    assert_eq!(plan.failed[0].missing, 1);
    assert_eq!(
        plan.failed[0].reasons,
        vec![("memory exhausted".to_owned(), 1)]
    );
}

#[test]
fn bridge_ports_come_from_the_range() {
    let g = group("web", 2).port("http", 8080).port("admin", 9000);
    let plan = plan_for(vec![node("n").ports(30000, 30003)], g);
    assert_eq!(plan.place.len(), 2);
    let mut all: Vec<u16> = Vec::new();
    for a in &plan.place {
        let keys: Vec<&str> = a.ports.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["web.admin", "web.http"]);
        all.extend(a.ports.values());
    }
    all.sort();
    assert_eq!(all, vec![30000, 30001, 30002, 30003]);
}

#[test]
fn bridge_ports_exhausted() {
    let g = || group("web", 1).port("http", 8080).port("admin", 9000);
    assert_eq!(
        refusal(node("n").ports(30000, 30000), g()),
        "ports exhausted"
    );
    // Ports held by a live allocation are not handed out again.
    let mut s = MemState::with_nodes([node("n").ports(30000, 30001).build()]);
    let other = job("other", 1, vec![group("other", 1).build()]);
    let mut holder = alloc("holder", &other, "other", 0, "n");
    holder.ports.insert("other.http".to_owned(), 30001);
    s.allocs = vec![holder];
    s.add_job(job("web", 1, vec![g().build()]));
    assert_eq!(
        s.schedule("e1", "web").failed[0].reasons[0].0,
        "ports exhausted"
    );
}

#[test]
fn host_ports_are_used_as_declared() {
    let g = || {
        group("web", 2)
            .network(NetworkMode::Host)
            .port("http", 8080)
    };
    let plan = plan_for(vec![node("n")], g());
    assert_eq!(plan.place.len(), 1);
    assert_eq!(plan.place[0].ports.get("web.http"), Some(&8080));
    assert_eq!(
        plan.failed[0].reasons,
        vec![("port 8080 in use".to_owned(), 1)]
    );
    // Outside the node's range is fine for host networking.
    assert!(accepted(
        node("n").ports(1, 2),
        group("web", 1)
            .network(NetworkMode::Host)
            .port("http", 8080)
    ));
}

#[test]
fn host_port_taken_by_another_allocation() {
    let mut s = MemState::with_nodes([node("n").build()]);
    let other = job("other", 1, vec![group("other", 1).build()]);
    let mut holder = alloc("holder", &other, "other", 0, "n");
    holder.ports.insert("other.http".to_owned(), 8080);
    s.allocs = vec![holder];
    let g = group("web", 1)
        .network(NetworkMode::Host)
        .port("http", 8080);
    s.add_job(job("web", 1, vec![g.build()]));
    assert_eq!(
        s.schedule("e1", "web").failed[0].reasons[0].0,
        "port 8080 in use"
    );
}

fn web(memory_mb: u64) -> GroupSpec {
    group("web", 1).memory_mb(memory_mb).build()
}

fn fits_state(n: &Node) -> MemState {
    let mut s = MemState::with_nodes([n.clone()]);
    let j = job("web", 1, vec![web(600)]);
    let mut a = alloc("a1", &j, "web", 0, &n.id);
    a.ports.insert("web.http".to_owned(), 20000);
    s.allocs = vec![a];
    s.add_job(j);
    s
}

#[test]
fn fits_rechecks_resources_ports_and_status() {
    let n = node("n1").memory_mb(1024).build();
    let s = fits_state(&n);
    let j = job("web", 1, vec![web(400)]);
    let small = alloc("b1", &j, "web", 1, "n1");
    assert_eq!(crate::fits(&s, &n, &[&small], &[]), Ok(()));
    let j = job("web", 1, vec![web(500)]);
    let big = alloc("b2", &j, "web", 1, "n1");
    assert_eq!(
        crate::fits(&s, &n, &[&big], &[]),
        Err("node n1: memory exhausted".to_owned())
    );
    assert_eq!(crate::fits(&s, &n, &[&big], &["a1"]), Ok(()));
    assert_eq!(
        crate::fits(&s, &n, &[&small, &small.clone()], &[]),
        Err("node n1: memory exhausted".to_owned())
    );
    let mut clash = small.clone();
    clash.ports.insert("web.http".to_owned(), 20000);
    assert_eq!(
        crate::fits(&s, &n, &[&clash], &[]),
        Err("node n1: port 20000 in use".to_owned())
    );
    let mut draining = n.clone();
    draining.draining = true;
    assert_eq!(
        crate::fits(&s, &draining, &[&small], &[]),
        Err("node n1: node draining".to_owned())
    );
    assert_eq!(crate::fits(&s, &draining, &[], &["a1"]), Ok(()));
}

#[test]
fn fits_counts_an_existing_allocation_once() {
    let n = node("n1").memory_mb(1024).build();
    let s = fits_state(&n);
    let existing = s.allocs[0].clone();
    assert_eq!(crate::fits(&s, &n, &[&existing], &[]), Ok(()));
}
