//! Host and path routing.

use crate::harness::*;

#[tokio::test]
async fn hosts_route_to_their_services_and_unknown_hosts_get_404() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let r = TestRouter::start(vec![
        http_service(
            "a",
            &[(Some("a.example.com"), "/", false)],
            vec![endpoint(a.addr, true)],
        ),
        http_service(
            "b",
            &[(Some("b.example.com"), "/", false)],
            vec![endpoint(b.addr, true)],
        ),
    ])
    .await;
    let got = get(r.addr, "a.example.com", "/x").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "a /x ");
    let got = get(r.addr, "B.Example.com:8080", "/y").await;
    assert_eq!(got.body, "b /y ");
    let got = get(r.addr, "c.example.com", "/z").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.body, "no route for c.example.com/z\n");
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn paths_route_by_longest_prefix_with_and_without_stripping() {
    let (web, api, v2) = (
        Backend::start("web").await,
        Backend::start("api").await,
        Backend::start("v2").await,
    );
    let r = TestRouter::start(vec![
        http_service(
            "web",
            &[(Some("h"), "/", false)],
            vec![endpoint(web.addr, true)],
        ),
        http_service(
            "api",
            &[(Some("h"), "/api", true)],
            vec![endpoint(api.addr, true)],
        ),
        http_service(
            "v2",
            &[(Some("h"), "/api/v2", false)],
            vec![endpoint(v2.addr, true)],
        ),
    ])
    .await;
    assert_eq!(
        get(r.addr, "h", "/api/users?x=1").await.body,
        "api /users?x=1 "
    );
    assert_eq!(get(r.addr, "h", "/api").await.body, "api / ");
    assert_eq!(
        get(r.addr, "h", "/api/v2/items").await.body,
        "v2 /api/v2/items "
    );
    assert_eq!(get(r.addr, "h", "/apix").await.body, "web /apix ");
    assert_eq!(get(r.addr, "h", "/").await.body, "web / ");
    assert_eq!(api.requests()[0].uri, "/users?x=1");
    // Encoded unreserved characters cannot dodge a route: `/%61pi` is
    // `/api`, sent upstream as routed; other escapes are kept.
    assert_eq!(get(r.addr, "h", "/%61pi/u%73ers").await.body, "api /users ");
    assert_eq!(
        get(r.addr, "h", "/%61pi/v%32/a%2Fb").await.body,
        "v2 /api/v2/a%2Fb "
    );
    assert_eq!(get(r.addr, "h", "/%2561pi").await.body, "web /%2561pi ");
}

#[tokio::test]
async fn any_host_rules_come_after_host_rules() {
    let (site, assets) = (Backend::start("site").await, Backend::start("assets").await);
    let r = TestRouter::start(vec![
        http_service(
            "site",
            &[(Some("site.test"), "/", false)],
            vec![endpoint(site.addr, true)],
        ),
        http_service(
            "assets",
            &[(None, "/static", false)],
            vec![endpoint(assets.addr, true)],
        ),
    ])
    .await;
    assert_eq!(
        get(r.addr, "anything.test", "/static/a.css").await.body,
        "assets /static/a.css "
    );
    assert_eq!(
        get(r.addr, "site.test", "/static/a.css").await.body,
        "site /static/a.css "
    );
    assert_eq!(get(r.addr, "anything.test", "/other").await.status, 404);
}

#[tokio::test]
async fn the_automatic_host_name_routes() {
    let web_backend = Backend::start("web").await;
    let r = TestRouter::start(vec![web("web", &[&web_backend])]).await;
    // As a browser sends it: the router's port in the Host header.
    let host = format!("web.localhost:{}", r.addr.port());
    let got = get(r.addr, &host, "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "web / ");
}

#[tokio::test]
async fn requests_before_the_first_catalog_get_503() {
    let b = Backend::start("b").await;
    let mut config = corral_router::RouterConfig::new("127.0.0.1:0".parse().expect("addr"));
    config.limits = corral_router::Limits::default();
    let (tx, rx) = corral_router::catalog_channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let router = corral_router::Router::start(config, rx, Default::default(), shutdown.clone())
        .await
        .expect("start");
    let got = get(router.http_addr(), "web.localhost", "/").await;
    assert_eq!(got.status, 503);
    assert!(got.body.contains("catalog"), "{}", got.body);
    drop(tx);
    shutdown.cancel();
    assert_eq!(b.count(), 0);
}
