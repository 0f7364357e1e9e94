//! Graceful shutdown: stop accepting, finish what is in flight.

use crate::harness::*;

#[tokio::test]
async fn an_in_flight_request_finishes_after_shutdown_begins() {
    let b = Backend::start("b").await;
    let mut r = TestRouter::start(vec![web("web", &[&b])]).await;
    let addr = r.addr;
    let pending = tokio::spawn(async move { get(addr, "web.localhost", "/hold").await });
    tokio::time::timeout(PATIENCE, b.arrived.notified())
        .await
        .expect("the request reaches the backend");
    r.shutdown.cancel();
    let router = r.router.take().expect("router");
    tokio::time::timeout(PATIENCE, router.wait())
        .await
        .expect("the router stops once the request is done");
    let got = pending.await.expect("task");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "held");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
