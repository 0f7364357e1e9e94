//! The API's answers to bad requests, through HTTP.

use std::time::{Duration, Instant};

use corral_scheduler::testing::node;
use corral_store::Write;
use corral_types::NodeStatus;

use crate::test_server::TestServer;

/// A blocking query with a `wait` that is no duration is refused at once,
/// as one with a bad `index` is, instead of waiting the default 30s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_wait_is_refused_not_ignored() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    server
        .core
        .commit(vec![Write::Node(node("n1").build())])
        .await
        .expect("node");
    let http = reqwest::Client::new();
    for path in [
        "/v1/jobs/web",
        "/v1/jobs/web/deployment",
        "/v1/nodes/n1/allocations",
    ] {
        for wait in ["bogus", "-5s", "10"] {
            let started = Instant::now();
            let r = http
                .get(format!("{base}{path}?index=1&wait={wait}"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status(), 400, "{path} wait={wait}");
            assert!(started.elapsed() < Duration::from_secs(5));
            let body = r.text().await.expect("body");
            assert!(body.contains("wait: "), "{body}");
        }
    }
    // A good one still blocks for what it asked.
    let started = Instant::now();
    let r = http
        .get(format!(
            "{base}/v1/nodes/n1/allocations?index=1000&wait=300ms"
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.stop().await;
}

/// Any token is an HTTP method: requests with made-up ones must not add
/// series to /metrics (they count as `other`), and requests that match no
/// route are not counted at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    let series = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
            .lines()
            .filter(|l| l.starts_with("corral_api_"))
            .count()
    };
    let method = |m: &str| reqwest::Method::from_bytes(m.as_bytes()).expect("method");
    let r = http
        .request(method("FIRST"), format!("{base}/v1/jobs"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 405);
    series().await;
    let before = series().await;
    for i in 0..20 {
        let r = http
            .request(method(&format!("ANYTHING{i}")), format!("{base}/v1/jobs"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 405);
        http.get(format!("{base}/no/such/route/{i}"))
            .send()
            .await
            .expect("answer");
    }
    assert_eq!(series().await, before);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(
            r#"corral_api_requests_total{method="other",route="/v1/jobs",code="405"} 21"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("ANYTHING") && !text.contains("/no/such"),
        "{text}"
    );
    server.stop().await;
}

/// Two nodes named `dev` (one down, one ready): a name is no id, and the
/// API must not pick one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_node_name_is_refused_with_the_ids() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let mut old = node("0ld-node").build();
    old.name = "dev".into();
    old.status = NodeStatus::Down;
    let mut new = node("new-node").build();
    new.name = "dev".into();
    server
        .core
        .commit(vec![Write::Node(old), Write::Node(new)])
        .await
        .expect("nodes");
    let http = reqwest::Client::new();
    let drain = http
        .post(format!("{base}/v1/nodes/dev/drain"))
        .json(&serde_json::json!({"enable": true}))
        .send()
        .await
        .expect("drain");
    assert_eq!(drain.status(), 400);
    let body = drain.text().await.expect("body");
    assert!(
        body.contains("0ld-node (down)") && body.contains("new-node (ready)"),
        "{body}"
    );
    assert!(body.contains("give the node's full id"), "{body}");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/nodes/dev"),
        (reqwest::Method::POST, "/v1/nodes/dev/eligibility"),
    ] {
        let r = http
            .request(method, format!("{base}{path}"))
            .json(&serde_json::json!({"eligible": false}))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{path}");
    }
    let s = server.core.store.snapshot();
    assert!(s.nodes_iter().all(|n| !n.draining && n.eligible));
    // By id, each is reached.
    let r = http
        .post(format!("{base}/v1/nodes/new-node/drain"))
        .json(&serde_json::json!({"enable": true}))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 200);
    assert!(
        server
            .core
            .store
            .snapshot()
            .node_by_id("new-node")
            .expect("node")
            .draining
    );
    server.stop().await;
}

/// A drain deadline no clock can reach is refused, not wrapped into one
/// that passed already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_drain_deadline_is_refused() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    server
        .core
        .commit(vec![Write::Node(node("n1").build())])
        .await
        .expect("node");
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/nodes/n1/drain"))
        .json(&serde_json::json!({"enable": true, "deadline": "213503982334d"}))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 400);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("deadline: ") && body.contains("too large"),
        "{body}"
    );
    assert!(
        !server
            .core
            .store
            .snapshot()
            .node_by_id("n1")
            .expect("n1")
            .draining
    );
    server.stop().await;
}

/// Path parameters that no job name or id can be (what an unescaping
/// client makes of `../nodes` or `x?index=abc`) are refused with the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_must_be_names_or_ids() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    for (path, field) in [
        ("/v1/jobs/x%3Findex=abc", "job name"),
        ("/v1/jobs/nosuch%2F..%2Fj4", "job name"),
        ("/v1/jobs/Web", "job name"),
        ("/v1/allocations/..%2Fnodes", "id"),
        ("/v1/evaluations/a%20b", "id"),
        ("/v1/nodes/a%25b", "id"),
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.contains(field), "{path}: {body}");
    }
    let r = http
        .delete(format!("{base}/v1/jobs/nosuch%2F..%2Fj4?purge=true"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    // A node registering under a name no path can carry is refused, with
    // the field named.
    let mut reg = serde_json::json!({
        "id": "n-1", "name": "my node", "address": "http://127.0.0.1:1",
        "resources": {"cpu": 1000, "memory": 1073741824},
        "attributes": {}, "labels": {}, "drivers": ["exec"], "port_range": [20000, 20100],
    });
    let r = http
        .post(format!("{base}/v1/nodes/register"))
        .json(&reg)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        e["error"],
        "name: \"my node\" is not a valid id or name; use letters, digits, `-`, `_` and `.`"
    );
    reg["name"] = "my-node".into();
    let r = http
        .post(format!("{base}/v1/nodes/register"))
        .json(&reg)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    // Valid names still get their ordinary answer.
    let r = http
        .get(format!("{base}/v1/jobs/web"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
    server.stop().await;
}

/// Logs of an allocation nobody knows, under an id no allocation ever
/// had: 404 at once, without asking every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_unknown_allocation_are_not_found_at_once() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    // A node whose agent never answers: a loopback port nobody accepts on.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut n = node("n1").build();
    n.address = format!("http://{}", silent.local_addr().expect("addr"));
    server
        .core
        .commit(vec![Write::Node(n)])
        .await
        .expect("node");
    let id = "0b0e4f6a-0190-0000-0000-000000000000";
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/allocations/{id}/logs"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}
