//! Request-smuggling shapes, as raw bytes: each is refused with 400, the
//! connection is closed, and nothing reaches the endpoint. Some hyper
//! refuses itself (an empty 400), the ones it would repair are refused by
//! the router's guard (a 400 that says why).

use crate::harness::*;

/// hyper's own refusal: a 400 without a body.
const HYPER: &str = "";

async fn refused(head_and_body: &str, why: &str) {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let reply = raw(r.addr, head_and_body.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "{head_and_body:?} got {reply:?}"
    );
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    if why.is_empty() {
        assert_eq!(body, "", "hyper's own answer has no body");
    } else {
        assert_eq!(body, format!("bad request: {why}\n"));
        assert!(
            reply.to_lowercase().contains("connection: close"),
            "{reply}"
        );
    }
    assert_eq!(reply.matches("HTTP/1.1").count(), 1, "one answer: {reply}");
    assert_eq!(b.count(), 0, "nothing forwarded for {head_and_body:?}");
}

#[tokio::test]
async fn content_length_and_transfer_encoding() {
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_and_content_length() {
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    )
    .await;
}

#[tokio::test]
async fn duplicate_content_length() {
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
        "more than one Content-Length",
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_length() {
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        HYPER,
    )
    .await;
}

#[tokio::test]
async fn obsolete_line_folding() {
    refused(
        "GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Folded: a\r\n b\r\n\r\n",
        HYPER,
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked() {
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        HYPER,
    )
    .await;
    refused(
        "POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding other than chunked",
    )
    .await;
    refused(
        "POST / HTTP/1.0\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        HYPER,
    )
    .await;
}

#[tokio::test]
async fn a_plain_chunked_request_still_works_and_closes() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let reply = raw(
        r.addr,
        b"POST /c HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("b /c hello"), "{reply}");
    assert_eq!(b.requests()[0].body, "hello");
}

#[tokio::test]
async fn pipelined_requests_are_each_checked() {
    let b = Backend::start("b").await;
    let r = TestRouter::start(vec![web("web", &[&b])]).await;
    let reply = raw(
        r.addr,
        b"POST /one HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: web.localhost\r\n\r\nPOST /three HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    let uris: Vec<String> = b.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/one", "/two"]);
}

/// Two Host headers: which one routes and which one the endpoint reads
/// could differ (RFC 9112 3.2).
#[tokio::test]
async fn two_host_headers() {
    refused(
        "GET / HTTP/1.1\r\nHost: raw.test\r\nHost: web.localhost\r\n\r\n",
        "more than one Host header",
    )
    .await;
}
