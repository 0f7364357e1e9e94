//! The catalog derived from jobs, allocations and nodes: which endpoints
//! get traffic, and that routes come out as the spec says.

use std::collections::BTreeMap;

use corral_scheduler::testing::{alloc, node};
use corral_types::catalog::{EndpointStatus, RouteRule};
use corral_types::spec::{SourceFormat, parse_jobs};
use corral_types::{
    Allocation, CheckState, CheckStatus, ClientStatus, DesiredStatus, Job, TaskLifecycle, TaskState,
};

use super::{catalog, host_of};
use crate::ops::jobs::new_version;

const SPEC: &str = "
name: shop
groups:
  - name: web
    count: 3
    service:
      name: web
      port: http
      check: {type: http, path: /healthz}
      route: {hosts: [shop.example.com], paths: [/api], strip_prefix: true}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {http: 8080}
";

fn job() -> Job {
    let spec = parse_jobs(SPEC, "shop.yaml", SourceFormat::Yaml)
        .expect("spec")
        .remove(0);
    let mut j = new_version(spec, 1, 0);
    j.modify_index = 5;
    j
}

/// Allocation `i` of the job on `n1`, running with host port `20000 + i`
/// and its check in `check`.
fn endpoint(j: &Job, i: u32, check: Option<CheckStatus>) -> Allocation {
    let mut a = alloc(&format!("a{i}"), j, "web", i, "n1");
    a.ports = BTreeMap::from([("app.http".to_owned(), 20_000 + i as u16)]);
    a.tasks.insert(
        "app".into(),
        TaskState {
            state: TaskLifecycle::Running,
            ..TaskState::default()
        },
    );
    if let Some(status) = check {
        a.checks.insert(
            "web-http".into(),
            CheckState {
                task: "app".into(),
                status,
                output: "HTTP 500".into(),
                consecutive_failures: 0,
                at: 0,
            },
        );
    }
    a
}

async fn state_of(
    writes: Vec<corral_store::Write>,
) -> (
    crate::test_server::TestServer,
    std::sync::Arc<corral_store::State>,
) {
    let server = crate::test_server::TestServer::start().await;
    server.core.commit(writes).await.expect("commit");
    let s = server.core.store.snapshot();
    (server, s)
}

#[tokio::test]
async fn only_running_allocations_whose_checks_pass_get_traffic() {
    use corral_store::Write;
    let j = job();
    let mut stopping = endpoint(&j, 3, Some(CheckStatus::Passing));
    stopping.desired = DesiredStatus::Stop;
    stopping.desired_reason = "replaced by a new version".into();
    let mut done = endpoint(&j, 4, Some(CheckStatus::Passing));
    done.client = ClientStatus::Complete;
    let mut n1 = node("n1").build();
    n1.address = "http://10.1.2.3:7071".into();
    let (server, s) = state_of(vec![
        Write::Node(n1),
        Write::Job(j.clone()),
        Write::Alloc(endpoint(&j, 0, Some(CheckStatus::Passing))),
        Write::Alloc(endpoint(&j, 1, Some(CheckStatus::Failing))),
        Write::Alloc(endpoint(&j, 2, None)),
        Write::Alloc(stopping),
        Write::Alloc(done),
    ])
    .await;
    let cat = catalog(&s, "localhost");
    assert_eq!(cat.services.len(), 1);
    let svc = &cat.services[0];
    assert_eq!(svc.name, "web");
    assert_eq!(svc.auto_host.as_deref(), Some("web.localhost"));
    let status: Vec<(&str, u16, EndpointStatus, bool)> = svc
        .endpoints
        .iter()
        .map(|e| (e.alloc_id.as_str(), e.port, e.status, e.healthy))
        .collect();
    assert_eq!(
        status,
        [
            ("a0", 20_000, EndpointStatus::Passing, true),
            ("a1", 20_001, EndpointStatus::Failing, false),
            ("a2", 20_002, EndpointStatus::Starting, false),
            ("a3", 20_003, EndpointStatus::Stopping, false),
        ],
        "a4 finished: not listed"
    );
    assert_eq!(svc.endpoints[0].address, "10.1.2.3");
    assert_eq!(svc.endpoints[1].reason, "check web-http fails: HTTP 500");
    assert_eq!(svc.endpoints[3].reason, "replaced by a new version");
    assert_eq!(
        svc.routes,
        [
            RouteRule {
                host: Some("web.localhost".into()),
                path_prefix: "/".into(),
                strip_prefix: false
            },
            RouteRule {
                host: Some("shop.example.com".into()),
                path_prefix: "/api".into(),
                strip_prefix: true
            },
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stopped_job_has_no_services_and_a_down_node_no_healthy_endpoint() {
    use corral_store::Write;
    let j = job();
    let mut down = node("n1").build();
    down.status = corral_types::NodeStatus::Down;
    let (server, s) = state_of(vec![
        Write::Node(down),
        Write::Job(j.clone()),
        Write::Alloc(endpoint(&j, 0, Some(CheckStatus::Passing))),
    ])
    .await;
    let cat = catalog(&s, "localhost");
    assert!(!cat.services[0].endpoints[0].healthy);
    let mut stopped = Job::clone(s.job("shop").expect("job"));
    stopped.stopped = true;
    server
        .core
        .commit(vec![Write::Job(stopped)])
        .await
        .expect("stop");
    assert!(
        catalog(&server.core.store.snapshot(), "localhost")
            .services
            .is_empty()
    );
    server.stop().await;
}

#[test]
fn node_addresses_give_their_host() {
    assert_eq!(host_of("http://10.0.0.5:7071"), "10.0.0.5");
    assert_eq!(host_of("http://[fd00::1]:7071/x"), "fd00::1");
    assert_eq!(host_of("node-1.example.com"), "node-1.example.com");
    assert_eq!(host_of("https://n1:443"), "n1");
}

/// A service without a port has endpoints nowhere to send traffic: it
/// promises no route (no automatic host).
#[tokio::test]
async fn a_service_without_a_port_has_no_route() {
    use corral_store::Write;
    let spec = parse_jobs(
        "name: bare\nimage: org/app:1\nservice: {name: bare}\n",
        "bare.yaml",
        SourceFormat::Yaml,
    )
    .expect("spec")
    .remove(0);
    let j = new_version(spec, 1, 0);
    let (server, s) = state_of(vec![Write::Node(node("n1").build()), Write::Job(j)]).await;
    let cat = catalog(&s, "localhost");
    assert_eq!(cat.services[0].auto_host, None);
    assert!(cat.services[0].routes.is_empty());
    server.stop().await;
}
