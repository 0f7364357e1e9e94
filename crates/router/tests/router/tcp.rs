//! TCP routes.

use corral_types::spec::ServiceKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

#[tokio::test]
async fn a_tcp_service_is_proxied_on_its_port_and_closed_when_gone() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let port = refusing_addr().await.port();
    let mut svc = http_service("db", &[], vec![endpoint(echo_addr, true)]);
    svc.kind = ServiceKind::Tcp;
    svc.auto_host = None;
    svc.tcp_port = Some(port);
    let mut r = TestRouter::start(vec![svc]).await;
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("router listens");
    s.write_all(b"select 1;").await.expect("write");
    let mut back = [0u8; 9];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"select 1;");
    assert_eq!(
        r.metric("corral_router_active_connections{protocol=\"tcp\"}"),
        1.0
    );
    drop(s);
    r.publish(vec![]).await;
    eventually("the TCP listener closes", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
}
