//! The router's own answers: a status and one line that says what
//! happened.

use std::time::Duration;

use corral_router::{Balance, Limits};

use crate::harness::*;

#[tokio::test]
async fn no_healthy_endpoint_is_503() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![http_service(
        "web",
        &[(Some("web.localhost"), "/", false)],
        vec![endpoint(b.addr, false)],
    )])
    .await;
    let got = get(r.addr, "web.localhost", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.body, "service web has no healthy endpoint\n");
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn a_slow_endpoint_is_504_and_ejected() {
    let b = Backend::start("b").await;
    let limits = Limits {
        upstream_response: Duration::from_millis(300),
        ..Limits::default()
    };
    let r = TestRouter::with(vec![web("web", &[&b])], Balance::P2c, limits).await;
    let got = get(r.addr, "web.localhost", "/slow").await;
    assert_eq!(got.status, 504);
    assert!(
        got.body.contains("did not answer within 0.3s"),
        "{}",
        got.body
    );
    assert_eq!(b.count(), 1, "the request reached the endpoint");
    assert_eq!(
        r.metric("corral_router_endpoint_ejections_total{service=\"web\"}"),
        1.0
    );
    assert_eq!(
        r.metric(
            "corral_router_requests_total{service=\"web\",route=\"web.localhost/\",code=\"5xx\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    let bad = refusing_addr().await;
    let r = TestRouter::start(vec![http_service(
        "web",
        &[(Some("web.localhost"), "/", false)],
        vec![endpoint(bad, true)],
    )])
    .await;
    let got = get(r.addr, "web.localhost", "/").await;
    assert_eq!(got.status, 502);
    assert!(
        got.body
            .starts_with(&format!("service web: cannot connect to {bad}")),
        "{}",
        got.body
    );
}

#[tokio::test]
async fn headers_too_large_are_431() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let big = "x".repeat(40 * 1024);
    let got = request(
        &client(),
        r.addr,
        "GET",
        "web.localhost",
        "/",
        &[("x-big", &big)],
        "",
    )
    .await;
    assert_eq!(got.status, 431);
    assert!(
        got.body.starts_with("request headers too large"),
        "{}",
        got.body
    );
    // Beyond hyper's own buffer: hyper answers 431 itself (no body).
    let huge = "x".repeat(100 * 1024);
    let reply = raw(
        r.addr,
        format!("GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Huge: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn a_request_without_host_is_400() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let reply = raw(r.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.ends_with("bad request: no Host header\n"), "{reply}");
    let reply = raw(r.addr, b"GARBAGE\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(b.count(), 0);
}
