//! Load spread, health from the catalog, passive ejection and retries.

use corral_router::{Balance, Limits};

use crate::harness::*;

async fn spread(balance: Balance) -> Vec<usize> {
    let bs = [
        Backend::start("b0").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
    ];
    let r = TestRouter::with(
        vec![web("web", &[&bs[0], &bs[1], &bs[2]])],
        balance,
        Limits::default(),
    )
    .await;
    let c = client();
    for _ in 0..90 {
        let got = request(&c, r.addr, "GET", "web.localhost", "/", &[], "").await;
        assert_eq!(got.status, 200);
    }
    bs.iter().map(Backend::count).collect()
}

#[tokio::test]
async fn p2c_spreads_over_three_endpoints() {
    let counts = spread(Balance::P2c).await;
    assert_eq!(counts.iter().sum::<usize>(), 90);
    // Each has a share (the chance one gets fewer than 10 of 90 at random
    // is below one in a million).
    assert!(counts.iter().all(|&n| n >= 10), "{counts:?}");
}

#[tokio::test]
async fn round_robin_takes_turns_over_three_endpoints() {
    assert_eq!(spread(Balance::RoundRobin).await, vec![30, 30, 30]);
}

#[tokio::test]
async fn an_endpoint_the_catalog_marks_unhealthy_gets_no_traffic() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let mut r = TestRouter::start(vec![web("web", &[&a, &b])]).await;
    for _ in 0..20 {
        get(r.addr, "web.localhost", "/").await;
    }
    assert!(a.count() > 0 && b.count() > 0);
    let before = a.count();
    let mut s = web("web", &[&a, &b]);
    s.endpoints[0].healthy = false;
    r.publish(vec![s]).await;
    for _ in 0..20 {
        assert_eq!(get(r.addr, "web.localhost", "/").await.body, "b / ");
    }
    assert_eq!(a.count(), before);
}

#[tokio::test]
async fn a_refusing_endpoint_is_ejected_and_requests_retry_elsewhere() {
    let good = Backend::start("good").await;
    let bad = refusing_addr().await;
    let r = TestRouter::start(vec![http_service(
        "web",
        &[(Some("web.localhost"), "/", false)],
        vec![endpoint(bad, true), endpoint(good.addr, true)],
    )])
    .await;
    for _ in 0..40 {
        let got = get(r.addr, "web.localhost", "/").await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(good.count(), 40);
    // Tried once (p2c picks it within 40 requests but for a 1e-12
    // chance), ejected, then left alone for the cool-down.
    assert_eq!(
        r.metric("corral_router_endpoint_ejections_total{service=\"web\"}"),
        1.0
    );
    assert_eq!(
        r.metric("corral_router_retries_total{service=\"web\"}"),
        1.0
    );
    assert_eq!(
        r.metric("corral_router_upstream_errors_total{service=\"web\",kind=\"connect\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_post_body_is_retried_intact_after_a_connect_error() {
    let good = Backend::start("good").await;
    let bad = refusing_addr().await;
    // Round-robin starts with the first endpoint: the refusing one.
    let r = TestRouter::with(
        vec![http_service(
            "web",
            &[(Some("web.localhost"), "/", false)],
            vec![endpoint(bad, true), endpoint(good.addr, true)],
        )],
        Balance::RoundRobin,
        Limits::default(),
    )
    .await;
    let got = request(
        &client(),
        r.addr,
        "POST",
        "web.localhost",
        "/submit",
        &[],
        "hello body",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "good /submit hello body");
    assert_eq!(good.requests()[0].method, "POST");
    assert_eq!(
        r.metric("corral_router_retries_total{service=\"web\"}"),
        1.0
    );
}
