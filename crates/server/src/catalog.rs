//! The service catalog, derived from state the server already has: each
//! service of each running job, with one endpoint per allocation that may
//! run it (node address + host port), healthy when the allocation should
//! run, runs, and the service's checks pass. Nothing registers itself.

use std::collections::BTreeMap;

use corral_scheduler::StateView;
use corral_store::State;
use corral_types::catalog::{Endpoint, EndpointStatus, RouteRule, ServiceCatalog, ServiceEntry};
use corral_types::spec::{Claim, route_claims};
use corral_types::{
    Allocation, CheckStatus, ClientStatus, DesiredStatus, GroupSpec, Index, Job, Node, NodeStatus,
    ServiceKind, ServiceSpec, TaskLifecycle,
};

/// The whole catalog at `state`, services by name.
pub fn catalog(state: &State, domain: &str) -> ServiceCatalog {
    let mut services = Vec::new();
    for job in state.jobs().filter(|j| !j.stopped) {
        for group in &job.spec.groups {
            for svc in &group.services {
                services.push(entry(state, job, group, svc, domain));
            }
        }
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    ServiceCatalog {
        index: index(state),
        services,
    }
}

/// The index a catalog reader waits past: the newest change to a job with
/// services, its allocations, or a node (its address or status).
pub fn index(state: &State) -> Index {
    let mut max = 0;
    for job in state.jobs() {
        if !job.spec.groups.iter().any(|g| !g.services.is_empty()) {
            continue;
        }
        max = max.max(job.modify_index);
        for a in state.job_allocs(&job.name) {
            max = max.max(a.modify_index);
        }
    }
    for n in state.nodes_iter() {
        max = max.max(n.modify_index);
    }
    max
}

fn entry(
    state: &State,
    job: &Job,
    group: &GroupSpec,
    svc: &ServiceSpec,
    domain: &str,
) -> ServiceEntry {
    // Without a port nothing can be reached: no route to promise.
    let routable = svc.port.is_some();
    let auto_host =
        (svc.kind == ServiceKind::Http && routable).then(|| format!("{}.{domain}", svc.name));
    let mut routes = Vec::new();
    if let Some(h) = &auto_host {
        routes.push(RouteRule {
            host: Some(h.clone()),
            path_prefix: "/".to_owned(),
            strip_prefix: false,
        });
    }
    if let (ServiceKind::Http, Some(r), true) = (svc.kind, &svc.route, routable) {
        // The same (host, path) pairs the service claims at submit.
        for claim in route_claims(svc.kind, r) {
            if let Claim::Route { host, path } = claim {
                routes.push(RouteRule {
                    host,
                    strip_prefix: r.strip_prefix && path != "/",
                    path_prefix: path,
                });
            }
        }
    }
    let tcp_port = match svc.kind {
        ServiceKind::Tcp => svc.route.as_ref().and_then(|r| r.port),
        ServiceKind::Http => None,
    };
    let mut endpoints: Vec<Endpoint> = state
        .job_allocs(&job.name)
        .into_iter()
        .filter(|a| a.group == group.name)
        .filter_map(|a| endpoint(state, a, &svc.name))
        .collect();
    endpoints.sort_by(|a, b| {
        a.alloc_name
            .cmp(&b.alloc_name)
            .then(a.alloc_id.cmp(&b.alloc_id))
    });
    ServiceEntry {
        name: svc.name.clone(),
        job: job.name.clone(),
        group: group.name.clone(),
        kind: svc.kind,
        auto_host,
        routes,
        tcp_port,
        shutdown_delay_ms: svc.shutdown_delay.0,
        endpoints,
    }
}

/// The allocation's endpoint of service `name`, judged by the service as
/// the allocation's own job version declares it; `None` when it does not
/// declare it, has no port for it, or has finished.
fn endpoint(state: &State, a: &Allocation, name: &str) -> Option<Endpoint> {
    if a.client.is_terminal() {
        return None;
    }
    let version = StateView::job_version(state, &a.job, a.job_version)?;
    let group = version.spec.groups.iter().find(|g| g.name == a.group)?;
    let svc = group.services.iter().find(|s| s.name == name)?;
    let port_name = svc.port.as_deref()?;
    let task = group
        .tasks
        .iter()
        .find(|t| t.ports.contains_key(port_name))?;
    let port = *a.ports.get(&GroupSpec::port_key(&task.name, port_name))?;
    let node = state.node_by_id(&a.node_id);
    let (status, reason) = judge(a, node.map(|n| &**n), svc, &task.name);
    Some(Endpoint {
        alloc_id: a.id.clone(),
        alloc_name: format!("{}.{}[{}]", a.job, a.group, a.index),
        node_id: a.node_id.clone(),
        node_name: node.map(|n| n.name.clone()).unwrap_or_default(),
        address: node.map(|n| host_of(&n.address)).unwrap_or_default(),
        port,
        healthy: status == EndpointStatus::Passing,
        status,
        reason,
    })
}

fn judge(
    a: &Allocation,
    node: Option<&Node>,
    svc: &ServiceSpec,
    task: &str,
) -> (EndpointStatus, String) {
    if a.desired != DesiredStatus::Run {
        let why = if a.desired_reason.is_empty() {
            "stopped by the server".to_owned()
        } else {
            a.desired_reason.clone()
        };
        return (EndpointStatus::Stopping, why);
    }
    match node {
        None => return (EndpointStatus::Failing, "its node is unknown".to_owned()),
        Some(n) if n.status != NodeStatus::Ready => {
            return (
                EndpointStatus::Failing,
                format!("its node {} is {:?}", n.name, n.status).to_lowercase(),
            );
        }
        Some(_) => {}
    }
    let running = a.client == ClientStatus::Running
        && a.tasks
            .get(task)
            .is_some_and(|t| t.state == TaskLifecycle::Running);
    if !running {
        return (
            EndpointStatus::Starting,
            format!("task {task} is not running"),
        );
    }
    let mut states: BTreeMap<&str, CheckStatus> = BTreeMap::new();
    for c in &svc.checks {
        let s = a
            .checks
            .get(&c.name)
            .map(|c| c.status)
            .unwrap_or(CheckStatus::Pending);
        states.insert(&c.name, s);
    }
    if let Some((name, _)) = states.iter().find(|(_, s)| **s == CheckStatus::Failing) {
        let output = a.checks.get(*name).map(|c| c.output.as_str()).unwrap_or("");
        let reason = if output.is_empty() {
            format!("check {name} fails")
        } else {
            format!("check {name} fails: {}", first_line(output))
        };
        return (EndpointStatus::Failing, reason);
    }
    if let Some((name, _)) = states.iter().find(|(_, s)| **s == CheckStatus::Pending) {
        return (
            EndpointStatus::Starting,
            format!("check {name} has not passed yet"),
        );
    }
    (EndpointStatus::Passing, String::new())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// The host part of a node's address (`http://10.0.0.5:7071` → `10.0.0.5`).
pub fn host_of(address: &str) -> String {
    let rest = address.split_once("://").map(|(_, r)| r).unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(inner) = authority.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner).to_owned();
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => authority.to_owned(),
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
