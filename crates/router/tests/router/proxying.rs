//! What the endpoint and the client see of a forwarded request: headers,
//! upgrades, HTTP/2 from the client, streamed bodies.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test]
async fn forwarded_headers_and_a_request_id_reach_the_endpoint() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let c = client();
    let got = request(
        &c,
        r.addr,
        "GET",
        "web.localhost",
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-private"),
            ("x-private", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &b.requests()[0];
    let h = &seen.headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "web.localhost");
    assert_eq!(h["host"], "web.localhost");
    assert!(
        !h.contains_key("x-private"),
        "named by Connection: hop-by-hop"
    );
    let id = h["x-request-id"].to_str().expect("id");
    assert_eq!(id.len(), 24);
    assert_eq!(
        got.headers["x-request-id"], id,
        "the client gets the same id"
    );
    // A sane id from the client is kept.
    let got = request(
        &c,
        r.addr,
        "GET",
        "web.localhost",
        "/",
        &[("x-request-id", "trace-42")],
        "",
    )
    .await;
    assert_eq!(b.requests()[1].headers["x-request-id"], "trace-42");
    assert_eq!(got.headers["x-request-id"], "trace-42");
}

#[tokio::test]
async fn websocket_style_upgrades_are_tunnelled() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let mut s = TcpStream::connect(r.addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut byte))
            .await
            .expect("in time")
            .expect("read");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"pong and more"] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(back, msg);
    }
    let seen = &b.requests()[0];
    assert_eq!(seen.headers["upgrade"], "echo");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    // HTTP/2 with prior knowledge, the authority naming the service.
    let tcp = TcpStream::connect(r.addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://web.localhost:{}/h2", r.addr.port()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, send.send_request(req))
        .await
        .expect("in time")
        .expect("answer");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"b /h2 ");
    let seen = &b.requests()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(
        seen.headers["host"],
        format!("web.localhost:{}", r.addr.port())
    );
}

#[tokio::test]
async fn response_bodies_stream_without_being_buffered() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let req = Request::builder()
        .uri(format!("http://{}/stream", r.addr))
        .header("host", "web.localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .expect("in time")
        .expect("answer");
    let mut body = resp.into_body();
    // The backend sends its second chunk only after this side got the
    // first: a router that buffered the body would never answer.
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the first chunk arrives before the last is sent")
        .expect("frame")
        .expect("ok");
    assert_eq!(first.into_data().expect("data"), "first;");
    b.release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"second");
}
