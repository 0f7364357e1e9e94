//! `GET /v1/events` over HTTP: a stream read in part, dropped, and resumed
//! with `?index=` while events keep coming gives every event exactly once.

use std::sync::Arc;
use std::time::Duration;

use corral_client::{Client, EventQuery};
use corral_scheduler::testing::node;
use corral_store::{SqliteStore, StateStore, Write};
use corral_types::{Event, EventType, NodeStatus};
use tokio_util::sync::CancellationToken;

use crate::{Core, Server, ServerConfig};

async fn serve() -> (Arc<Core>, Client, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(Box::new(
        SqliteStore::open(&dir.path().join("state.db")).expect("sqlite"),
    ))
    .expect("store");
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.alerts.enabled = false;
    let server = Server::start_with(config, store, stop.clone())
        .await
        .expect("server");
    let core = server.core.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    (
        core,
        Client::new(&format!("http://{addr}"), None),
        stop,
        dir,
    )
}

/// `n` node registrations then each node down: 2n events, in commits of
/// up to 500.
async fn churn(core: Arc<Core>, prefix: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    for chunk in ids.chunks(500) {
        let writes = chunk
            .iter()
            .map(|id| Write::Node(node(id).build()))
            .collect();
        core.commit(writes).await.expect("commit");
    }
    for chunk in ids.chunks(250) {
        let writes = chunk
            .iter()
            .map(|id| Write::Node(node(id).status(NodeStatus::Down).build()))
            .collect();
        core.commit(writes).await.expect("commit");
        tokio::task::yield_now().await;
    }
}

async fn read(stream: &mut corral_client::EventStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("stream error: {e}"),
            Ok(None) => panic!("stream ended after {} events", out.len()),
            Err(_) => panic!("no event for 20s after {} events", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_has_no_gap_and_no_duplicate() {
    let (core, client, stop, _dir) = serve().await;
    // More than memory holds: the start of the log is read from SQLite.
    let first = corral_store::events::RECENT_EVENTS / 2 + 1000;
    churn(core.clone(), "a", first).await;
    let before = core.store.snapshot().event_span().last;
    assert_eq!(before, 2 * first as u64);

    // Read part of it from the start, and drop the connection.
    let mut s = client
        .event_stream(&EventQuery {
            index: Some(0),
            ..Default::default()
        })
        .await
        .expect("stream");
    let part1 = read(&mut s, 3000).await;
    drop(s);
    let seen = part1.last().map(|e| e.index).unwrap_or(0);

    // Events keep coming while we are away and while we resume.
    let more = tokio::spawn(churn(core.clone(), "b", 3000));
    let mut s = client
        .event_stream(&EventQuery {
            index: Some(seen),
            ..Default::default()
        })
        .await
        .expect("stream");
    more.await.expect("churn");
    let total = core.store.snapshot().event_span().last;
    let part2 = read(&mut s, (total - seen) as usize).await;

    // Nothing else is pending: the next event is a new one.
    core.commit(vec![Write::DeleteNode("a-00000".into())])
        .await
        .expect("commit");
    let next = read(&mut s, 1).await;
    assert_eq!(next[0].index, total + 1);
    assert_eq!(next[0].kind, EventType::NodeRemoved);

    let got: Vec<u64> = part1.iter().chain(&part2).map(|e| e.index).collect();
    assert_eq!(
        got,
        (1..=total).collect::<Vec<_>>(),
        "gapless, no duplicate"
    );

    // The same events as the stored list, field for field.
    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .events(&EventQuery {
                index: Some(after),
                limit: Some(5000),
                ..Default::default()
            })
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = last.index;
        listed.extend(page);
    }
    listed.truncate(total as usize);
    let streamed: Vec<Event> = part1.into_iter().chain(part2).collect();
    assert_eq!(streamed, listed);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_recent_lists_and_live_start() {
    let (core, client, stop, _dir) = serve().await;
    churn(core.clone(), "n", 10).await;
    // Without an index, a stream starts with the next event.
    let mut live = client
        .event_stream(&EventQuery {
            topics: vec!["node".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    core.commit(vec![Write::DeleteNode("n-00003".into())])
        .await
        .expect("commit");
    let e = read(&mut live, 1).await;
    assert_eq!((e[0].index, e[0].kind), (21, EventType::NodeRemoved));

    // The newest N, oldest first.
    let recent = client
        .events(&EventQuery {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .expect("recent");
    let idx: Vec<u64> = recent.iter().map(|e| e.index).collect();
    assert_eq!(idx, vec![19, 20, 21]);
    // A topic with nothing in it.
    let none = client
        .events(&EventQuery {
            topics: vec!["deployment".into(), "alert".into()],
            ..Default::default()
        })
        .await
        .expect("filtered");
    assert!(none.is_empty());
    let jobless = client
        .events(&EventQuery {
            jobs: vec!["web".into()],
            ..Default::default()
        })
        .await
        .expect("filtered");
    assert!(jobless.is_empty());
    // A wrong topic is refused with the list of good ones.
    let err = client
        .events(&EventQuery {
            topics: vec!["nodes".into()],
            ..Default::default()
        })
        .await
        .expect_err("bad topic");
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("unknown event topic"), "{err}");
    stop.cancel();
}
