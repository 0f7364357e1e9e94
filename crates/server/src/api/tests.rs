//! The API's answers to bad requests, through HTTP.

use std::time::{Duration, Instant};

use corral_scheduler::testing::node;
use corral_store::Write;
use corral_types::NodeStatus;

use crate::test_server::TestServer;

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
    assert!(body.contains("deadline: ") && body.contains("too large"), "{body}");
    assert!(!server.core.store.snapshot().node_by_id("n1").expect("n1").draining);
    server.stop().await;
}
