use corral_types::catalog::{Endpoint, EndpointStatus, RouteRule, ServiceEntry};

use super::*;

fn endpoint(port: u16, healthy: bool) -> Endpoint {
    Endpoint {
        alloc_id: format!("a{port}"),
        alloc_name: format!("web.web[{port}]"),
        node_id: "n1".into(),
        node_name: "node1".into(),
        address: "127.0.0.1".into(),
        port,
        healthy,
        status: if healthy {
            EndpointStatus::Passing
        } else {
            EndpointStatus::Failing
        },
        reason: String::new(),
    }
}

fn service(name: &str, routes: &[(Option<&str>, &str, bool)], ports: &[u16]) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        job: name.into(),
        group: name.into(),
        kind: ServiceKind::Http,
        auto_host: Some(format!("{name}.localhost")),
        routes: routes
            .iter()
            .map(|(h, p, s)| RouteRule {
                host: h.map(str::to_string),
                path_prefix: p.to_string(),
                strip_prefix: *s,
            })
            .collect(),
        tcp_port: None,
        shutdown_delay_ms: 0,
        endpoints: ports.iter().map(|p| endpoint(*p, true)).collect(),
    }
}

fn table(services: Vec<ServiceEntry>) -> Table {
    let catalog = ServiceCatalog { index: 7, services };
    Table::build(&catalog, &mut Endpoints::new(), &Metrics::new())
}

fn routed<'a>(t: &'a Table, host: &str, path: &str) -> Option<&'a str> {
    t.route(host, path).map(|r| r.service.name.as_str())
}

#[test]
fn host_then_longest_prefix_then_any_host() {
    let t = table(vec![
        service("web", &[(Some("web.localhost"), "/", false)], &[1]),
        service("api", &[(Some("web.localhost"), "/api", true)], &[2]),
        service("v2", &[(Some("web.localhost"), "/api/v2/", false)], &[3]),
        service("any", &[(None, "/static", false)], &[4]),
    ]);
    assert_eq!(routed(&t, "web.localhost", "/"), Some("web"));
    assert_eq!(routed(&t, "WEB.localhost.:7080", "/x"), Some("web"));
    assert_eq!(routed(&t, "web.localhost", "/api"), Some("api"));
    assert_eq!(routed(&t, "web.localhost", "/api/users"), Some("api"));
    assert_eq!(routed(&t, "web.localhost", "/apix"), Some("web"));
    assert_eq!(routed(&t, "web.localhost", "/api/v2"), Some("v2"));
    assert_eq!(routed(&t, "web.localhost", "/api/v2/x"), Some("v2"));
    // The host's own "/" wins over an any-host rule.
    assert_eq!(routed(&t, "web.localhost", "/static/a.css"), Some("web"));
    assert_eq!(routed(&t, "other.example", "/static/a.css"), Some("any"));
    assert_eq!(routed(&t, "other.example", "/"), None);
}

#[test]
fn strip_prefix_keeps_a_path() {
    let t = table(vec![service(
        "api",
        &[(Some("h"), "/api", true), (Some("k"), "/keep", false)],
        &[1],
    )]);
    let r = t.route("h", "/api/users").expect("route");
    assert_eq!(r.upstream_path("/api/users"), "/users");
    assert_eq!(r.upstream_path("/api"), "/");
    let k = t.route("k", "/keep/x").expect("route");
    assert_eq!(k.upstream_path("/keep/x"), "/keep/x");
}

#[test]
fn only_healthy_endpoints_and_states_carry_over() {
    let mut s = service("web", &[(Some("h"), "/", false)], &[1, 2]);
    s.endpoints.push(endpoint(3, false));
    let metrics = Metrics::new();
    let mut eps = Endpoints::new();
    let catalog = ServiceCatalog {
        index: 1,
        services: vec![s.clone()],
    };
    let t1 = Table::build(&catalog, &mut eps, &metrics);
    let first = t1.route("h", "/").expect("route").service.endpoints.clone();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|e| e.name != "127.0.0.1:3"));
    s.endpoints.remove(1);
    let t2 = Table::build(
        &ServiceCatalog {
            index: 2,
            services: vec![s],
        },
        &mut eps,
        &metrics,
    );
    let second = &t2.route("h", "/").expect("route").service.endpoints;
    assert_eq!(second.len(), 1);
    assert!(Arc::ptr_eq(&second[0], &first[0]), "the state is kept");
    assert_eq!(eps.len(), 1);
}

#[test]
fn ports_are_stripped_from_hosts() {
    assert_eq!(strip_port("a.b:80"), "a.b");
    assert_eq!(strip_port("a.b"), "a.b");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
}
