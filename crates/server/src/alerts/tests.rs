//! Webhook delivery against a local receiver, and the alert loop inside a
//! running server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use corral_client::Client;
use corral_scheduler::testing::node;
use corral_store::{MemoryStore, StateStore, Write};
use corral_types::{AlertRule, AlertStatus, NodeStatus};
use tokio_util::sync::CancellationToken;

use super::sinks::{Delivery, Notification, deliver};
use crate::{Server, ServerConfig};

/// What the receiver got, and the answers it gives (then 200s).
#[derive(Default)]
struct Receiver {
    got: Vec<(Instant, Notification)>,
    answers: Vec<u16>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(r): State<Shared>, Json(n): Json<Notification>) -> StatusCode {
    let Ok(mut r) = r.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    r.got.push((Instant::now(), n));
    let code = if r.answers.is_empty() {
        200
    } else {
        r.answers.remove(0)
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

async fn receiver(answers: Vec<u16>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        got: Vec::new(),
        answers,
    }));
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/hook"), shared)
}

fn sample() -> Notification {
    Notification::new(&corral_types::Alert {
        id: "oom_kill/web/web/app@1".into(),
        rule: AlertRule::OomKill,
        subject: "web/web/app".into(),
        status: AlertStatus::Firing,
        summary: "task app was killed".into(),
        job: Some("web".into()),
        alloc: None,
        node: None,
        deployment: None,
        task: Some("app".into()),
        job_version: Some(1),
        count: 1,
        fired_at: 1,
        last_seen_at: 1,
        last_event_index: 0,
        resolved_at: None,
        resolution: String::new(),
        create_index: 0,
        modify_index: 0,
    })
}

fn delivery(retries: u32) -> Delivery {
    Delivery {
        retries,
        backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn webhooks_retry_with_growing_waits_then_deliver() {
    let (url, r) = receiver(vec![500, 503]).await;
    let http = reqwest::Client::new();
    let n = sample();
    assert_eq!(n.text, "[FIRING] oom_kill web/web/app: task app was killed");
    let attempts = deliver(&http, &url, &n, &delivery(3), &CancellationToken::new())
        .await
        .expect("delivered");
    assert_eq!(attempts, 3);
    let got = r.lock().map(|r| r.got.clone()).unwrap_or_default();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, g)| *g == n));
    let first_wait = got[1].0 - got[0].0;
    let second_wait = got[2].0 - got[1].0;
    assert!(first_wait >= Duration::from_millis(50), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(100), "{second_wait:?}");
}

#[tokio::test]
async fn webhooks_give_up_after_the_retries_and_at_once_on_a_refusal() {
    let (url, r) = receiver(vec![500, 500, 500]).await;
    let http = reqwest::Client::new();
    let e = deliver(
        &http,
        &url,
        &sample(),
        &delivery(2),
        &CancellationToken::new(),
    )
    .await
    .expect_err("not delivered");
    assert!(e.contains("after 3 attempts"), "{e}");
    assert_eq!(r.lock().map(|r| r.got.len()).unwrap_or(0), 3);

    let (url, r) = receiver(vec![404]).await;
    let e = deliver(
        &http,
        &url,
        &sample(),
        &delivery(5),
        &CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    assert!(e.contains("404"), "{e}");
    assert_eq!(r.lock().map(|r| r.got.len()).unwrap_or(0), 1);

    // Nobody listening: retried, then an error naming the URL.
    let e = deliver(
        &http,
        "http://127.0.0.1:9/hook",
        &sample(),
        &delivery(1),
        &CancellationToken::new(),
    )
    .await
    .expect_err("unreachable");
    assert!(e.contains("127.0.0.1:9"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_alert_reaches_the_webhook_and_the_api() {
    let (url, r) = receiver(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.alerts.eval_interval = Duration::from_millis(50);
    config.alerts.webhooks = vec![url];
    config.alerts.disk.enabled = false;
    let stop = CancellationToken::new();
    let server = Server::start_with(
        config,
        StateStore::open(Box::new(MemoryStore::new())).expect("store"),
        stop.clone(),
    )
    .await
    .expect("server");
    let core = server.core.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = Client::new(&format!("http://{}", l.local_addr().expect("addr")), None);
    tokio::spawn(server.serve(l));

    let wait_for = |n: usize| {
        let r = r.clone();
        async move {
            for _ in 0..100 {
                let got: Vec<Notification> = r
                    .lock()
                    .map(|r| r.got.iter().map(|(_, n)| n.clone()).collect())
                    .unwrap_or_default();
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("fewer than {n} notifications after 5s");
        }
    };
    core.commit(vec![Write::Node(
        node("n1").status(NodeStatus::Down).build(),
    )])
    .await
    .expect("commit");
    let got = wait_for(1).await;
    assert_eq!(got[0].status, AlertStatus::Firing);
    assert_eq!(got[0].alert.rule, AlertRule::NodeDown);
    let listed = client.alerts(false).await.expect("alerts");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, got[0].alert.id);
    // Issue 14, case 5: the webhook carries the stored record, indexes
    // included (they were 0/0).
    assert_eq!(got[0].alert, listed[0]);
    assert!(got[0].alert.create_index > 0, "{:?}", got[0].alert);
    assert_eq!(got[0].alert.modify_index, got[0].alert.create_index);

    core.commit(vec![Write::Node(node("n1").build())])
        .await
        .expect("commit");
    let got = wait_for(2).await;
    assert_eq!(got[1].status, AlertStatus::Resolved);
    assert_eq!(got[1].alert.id, got[0].alert.id);
    assert!(client.alerts(false).await.expect("alerts").is_empty());
    let all = client.alerts(true).await.expect("alerts");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, AlertStatus::Resolved);
    // The resolution's record as stored (it carried the firing's indexes).
    assert_eq!(got[1].alert, all[0]);
    assert_eq!(got[1].alert.create_index, got[0].alert.create_index);
    assert!(got[1].alert.modify_index > got[0].alert.modify_index);
    // Both transitions are events too.
    let events = client
        .events(&corral_client::EventQuery {
            topics: vec!["alert".into()],
            ..Default::default()
        })
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["alert.firing", "alert.resolved"]);
    // Only two notifications: no repeats while it fired.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.lock().map(|r| r.got.len()).unwrap_or(0), 2);
    stop.cancel();
}

/// A change whose alert the state no longer holds as committed (pruned,
/// or changed again) is stamped as the store stamped it.
#[test]
fn notifications_carry_the_indexes_of_the_commit() {
    use super::rules::{AlertChange, Transition};
    let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
    let mut a = sample().alert;
    let index = store.commit(vec![Write::Alert(a.clone())]).expect("commit");
    let fired = super::as_stored(
        vec![AlertChange {
            alert: a.clone(),
            transition: Transition::Fired,
        }],
        &store.snapshot(),
        index,
    );
    assert_eq!(
        (fired[0].alert.create_index, fired[0].alert.modify_index),
        (index, index)
    );
    assert_eq!(
        store.snapshot().alert(&a.id).map(|s| (**s).clone()),
        Some(fired[0].alert.clone())
    );
    // Resolved, then gone from the state before the notification left.
    a.create_index = index;
    a.status = AlertStatus::Resolved;
    let resolved = super::as_stored(
        vec![AlertChange {
            alert: a,
            transition: Transition::Resolved,
        }],
        &StateStore::open(Box::new(MemoryStore::new()))
            .expect("store")
            .snapshot(),
        index + 5,
    );
    assert_eq!(
        (
            resolved[0].alert.create_index,
            resolved[0].alert.modify_index
        ),
        (index, index + 5)
    );
}
