//! An API token protects the server and the agents' log and metrics
//! endpoints; the server forwards it when it proxies logs. Exec driver,
//! root (cgroups).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use corral_client::{Client, LogQuery};
use corral_testkit::{TestCluster, eventually};

const TOKEN: &str = "s3cret-token";
const D: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_server_and_the_agents() {
    let missing: Vec<String> = if corral_testkit::procs::is_root() {
        vec![]
    } else {
        vec!["root".into()]
    };
    if !corral_testkit::prereq::can_run(
        "a_token_guards_the_server_and_the_agents",
        "run exec tasks in cgroups",
        &missing,
    ) {
        return;
    }
    let mut cluster = TestCluster::start_with(|c| c.api_token = Some(TOKEN.into())).await;
    cluster.client = Client::new(&cluster.url(), Some(TOKEN.into()));
    cluster
        .add_agent_with("node-0", |c| c.token = Some(TOKEN.into()))
        .await;
    let c = cluster.client.clone();

    // Without the token, the server refuses.
    let anonymous = Client::new(&cluster.url(), None);
    let err = anonymous.jobs().await.unwrap_err().to_string();
    assert!(err.contains("401") || err.contains("token"), "{err}");

    c.submit(
        "name: tok\ndriver: exec\ncommand: [/bin/sh, -c, 'echo hello-token; sleep 600']\nresources: {cpu: 50m, memory: 16M}\n",
        "tok.yaml",
    )
    .await
    .unwrap();
    let a =
        corral_testkit::jobs::wait_alloc(&c, "tok", corral_types::ClientStatus::Running, D).await;

    // Through the server (which forwards its token to the agent).
    let text = eventually("the log through the server", D, || async {
        let t = c
            .logs(&a.id, &LogQuery::default())
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if t.contains("hello-token") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    assert!(text.contains("hello-token"));

    // Straight to the agent: refused without the token, served with it.
    let node = c.node(&a.node_id).await.unwrap();
    let url = format!("{}/v1/agent/allocations/{}/logs", node.address, a.id);
    let http = reqwest::Client::new();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("{}/metrics", node.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // The health probe stays open.
    let r = http
        .get(format!("{}/v1/agent/health", node.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    corral_testkit::jobs::stop_and_wait(&c, "tok", D).await;
    cluster.shutdown().await;
}
