//! A service's `type`, `route` and `shutdown_delay`, and the claims the
//! parser records for the server's cross-job check.

use super::{SourceFormat, parse_jobs, parse_jobs_located};
use crate::spec::{Claim, JobSpec, RouteSpec, ServiceKind};
use crate::units::Millis;

fn one(text: &str) -> JobSpec {
    match parse_jobs(text, "j.yaml", SourceFormat::Yaml) {
        Ok(mut jobs) => jobs.remove(0),
        Err(e) => panic!("should parse:\n{e}"),
    }
}

fn lines(text: &str) -> Vec<String> {
    match parse_jobs(text, "j.yaml", SourceFormat::Yaml) {
        Ok(jobs) => panic!("should not parse: {jobs:#?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn web(service: &str) -> String {
    format!(
        "
name: shop
groups:
  - name: web
    service:
{service}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {{http: 8080, db: 5432}}
"
    )
}

#[test]
fn the_issue_example_parses_with_its_route_and_delay() {
    let job = one(&web("      name: web
      port: http
      check: {type: http, path: /healthz, interval: 5s, timeout: 1s}
      route:
        hosts: [shop.example.com]
        paths: [/api/]
        strip_prefix: false
      shutdown_delay: 5s"));
    let s = &job.groups[0].services[0];
    assert_eq!(s.kind, ServiceKind::Http);
    assert_eq!(
        s.route,
        Some(RouteSpec {
            hosts: vec!["shop.example.com".into()],
            paths: vec!["/api".into()],
            strip_prefix: false,
            port: None,
        })
    );
    assert_eq!(s.shutdown_delay, Millis(5_000));
}

#[test]
fn a_service_without_route_gets_the_default_delay() {
    let job = one(&web("      name: web\n      port: http"));
    let s = &job.groups[0].services[0];
    assert_eq!(s.route, None);
    assert_eq!(
        s.shutdown_delay,
        crate::spec::ServiceSpec::DEFAULT_SHUTDOWN_DELAY
    );
}

#[test]
fn a_tcp_service_routes_by_port() {
    let job = one(&web(
        "      name: db\n      type: tcp\n      port: db\n      route: {port: 15432}",
    ));
    let s = &job.groups[0].services[0];
    assert_eq!(s.kind, ServiceKind::Tcp);
    assert_eq!(s.route.as_ref().and_then(|r| r.port), Some(15432));
}

#[test]
fn claims_are_located_where_they_are_written() {
    let text = web("      name: web
      port: http
      route: {hosts: [a.example.com], paths: [/x]}");
    let jobs = parse_jobs_located(&text, "j.yaml", SourceFormat::Yaml).expect("parses");
    let claims = &jobs[0].claims;
    assert_eq!(claims.len(), 2, "{claims:#?}");
    assert_eq!(claims[0].what, Claim::Name { auto_host: true });
    assert_eq!((claims[0].at.line, claims[0].at.column), (6, 13));
    assert_eq!(
        claims[1].what,
        Claim::Route {
            host: Some("a.example.com".into()),
            path: "/x".into()
        }
    );
    assert_eq!(claims[1].at.line, 8);
}

#[test]
fn bad_routes_name_file_line_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "      name: web\n      route: {hosts: [a.example.com]}",
            "j.yaml:7:7: groups[0].service.route: a route sends traffic to the service's port, and the service has none",
        ),
        (
            "      name: web\n      port: http\n      route: {hosts: [Shop.Example.com]}",
            "j.yaml:8:23: groups[0].service.route.hosts[0]: `Shop.Example.com` is not a valid host name: write it in lowercase",
        ),
        (
            "      name: web\n      port: http\n      route: {hosts: [\"http://a.com/\"]}",
            "is not a valid host name",
        ),
        (
            "      name: web\n      port: http\n      route: {paths: [api]}",
            "j.yaml:8:23: groups[0].service.route.paths[0]: a path prefix starts with `/`",
        ),
        (
            "      name: web\n      port: http\n      route: {strip_prefix: true, hosts: [a.b]}",
            "strip_prefix removes the matched path prefix, and the route has no `paths`",
        ),
        (
            "      name: web\n      port: http\n      route: {port: 80}",
            "`port` in a route is the router port of a tcp service",
        ),
        (
            "      name: db\n      type: tcp\n      port: db\n      route: {hosts: [a.b], port: 5432}",
            "`hosts` is for http services",
        ),
        (
            "      name: db\n      type: tcp\n      port: db\n      route: {}",
            "a tcp route needs the router `port`",
        ),
        (
            "      name: my_web\n      port: http",
            "j.yaml:6:13: groups[0].service.name: service name: `my_web` is used as a host name and DNS name, which cannot hold `_`",
        ),
        (
            "      name: web\n      port: http\n      route: {paths: [\"/%61pi\"]}",
            "a path prefix is plain ASCII without `%` escapes",
        ),
        (
            "      name: web\n      port: http\n      route: {paths: [\"/caf\u{e9}\"]}",
            "a path prefix is plain ASCII without `%` escapes",
        ),
        (
            "      name: web\n      port: http\n      shutdown_delay: 2h",
            "shutdown_delay is at most 10m",
        ),
        (
            "      name: web\n      type: udp\n      port: http",
            "service type",
        ),
    ];
    for (service, want) in cases {
        let got = lines(&web(service));
        assert!(
            got.iter().any(|l| l.contains(want)),
            "for\n{service}\nwant `{want}` in\n{got:#?}"
        );
    }
}

#[test]
fn two_jobs_of_one_file_claiming_one_route_are_refused_naming_both() {
    let text = "
name: a
groups:
  - name: g
    service: {name: a, port: http, route: {hosts: [shop.example.com], paths: [/api]}}
    tasks: [{name: t, image: x:1, ports: {http: 80}}]
---
name: b
groups:
  - name: g
    service: {name: b, port: http, route: {hosts: [shop.example.com], paths: [/api, /b]}}
    tasks: [{name: t, image: x:1, ports: {http: 80}}]
---
name: c
groups:
  - name: g
    service: {name: a, port: http}
    tasks: [{name: t, image: x:1, ports: {http: 80}}]
";
    let got = lines(text);
    assert!(
        got.iter().any(|l| l.starts_with("j.yaml:11:")
            && l.contains("host shop.example.com, path /api is already routed to service `a` of job `a` (j.yaml:5:")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|l| l.starts_with("j.yaml:17:")
            && l.contains(
                "service name `a` is already taken by service `a` of job `a` (j.yaml:5:"
            )),
        "{got:#?}"
    );
}

#[test]
fn a_bad_path_is_the_only_error_of_its_route() {
    let got = lines(&web(
        "      name: web\n      port: http\n      route: {paths: [api], strip_prefix: true}",
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("a path prefix starts with `/`"), "{got:#?}");
}
