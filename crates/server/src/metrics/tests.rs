use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_store::{MemoryStore, StateStore};
use corral_types::NodeRegistration;
use corral_types::api::{NodeStats, TaskUsage};
use corral_types::spec::Resources;
use corral_types::units::{Bytes, MilliCpu};
use tokio_util::sync::CancellationToken;

use super::histogram::{bucket_of, upper_of};
use super::*;
use crate::{Server, ServerConfig};

#[test]
fn buckets_cover_values_in_order() {
    let mut last = 0;
    for us in [0u64, 1, 7, 8, 9, 15, 16, 100, 1000, 12345, 1 << 30] {
        let b = bucket_of(us);
        assert!(b >= last, "{us}");
        assert!(
            upper_of(b) >= us,
            "{us} above its bucket's bound {}",
            upper_of(b)
        );
        assert!(
            upper_of(b) as f64 <= (us as f64) * 1.13 + 1.0,
            "{us} -> {}",
            upper_of(b)
        );
        last = b;
    }
}

#[test]
fn quantiles() {
    let h = Histogram::default();
    for ms in 1..=100u64 {
        h.observe(Duration::from_millis(ms));
    }
    let p50 = h.quantile(0.5).as_micros() as f64;
    let p99 = h.quantile(0.99).as_micros() as f64;
    assert!((50_000.0..=55_000.0).contains(&p50), "{p50}");
    assert!((99_000.0..=108_000.0).contains(&p99), "{p99}");
    assert_eq!(h.count(), 100);
}

#[test]
fn exported_buckets_are_exact_at_their_bounds() {
    let h = Histogram::default();
    // Just below and at each power of two: below goes into the bucket
    // bounded by it, at goes into the next.
    for k in 7..=26u32 {
        h.observe(Duration::from_micros((1u64 << k) - 1));
        h.observe(Duration::from_micros(1u64 << k));
    }
    h.observe(Duration::from_secs(3600));
    let (buckets, count) = h.export();
    assert_eq!(count, 41);
    assert_eq!(buckets.len(), 21);
    assert_eq!(buckets[0], (0.000128, 1));
    for (i, (le, c)) in buckets.iter().enumerate().skip(1).take(19) {
        assert_eq!(*le, (1u64 << (7 + i)) as f64 / 1e6);
        assert_eq!(*c, 2, "bucket {le}");
    }
    // 2^26 µs itself and the hour.
    assert_eq!(buckets[20], (f64::INFINITY, 2));
}

#[test]
fn histogram_text_is_cumulative_with_sum_and_count() {
    let h = Histogram::default();
    h.observe(Duration::from_micros(100));
    h.observe(Duration::from_millis(3));
    let mut r = prometheus_client::registry::Registry::default();
    r.register("corral_test_seconds", "A test histogram.", h);
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &r).expect("encodes");
    assert!(
        out.contains("# TYPE corral_test_seconds histogram\n"),
        "{out}"
    );
    assert!(
        out.contains("corral_test_seconds_bucket{le=\"0.000128\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("corral_test_seconds_bucket{le=\"0.002048\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("corral_test_seconds_bucket{le=\"0.004096\"} 2\n"),
        "{out}"
    );
    assert!(
        out.contains("corral_test_seconds_bucket{le=\"+Inf\"} 2\n"),
        "{out}"
    );
    assert!(out.contains("corral_test_seconds_sum 0.0031\n"), "{out}");
    assert!(out.contains("corral_test_seconds_count 2\n"), "{out}");
}

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
    let server = Server::start_with(
        ServerConfig::new(dir.path().to_path_buf()),
        store,
        CancellationToken::new(),
    )
    .await
    .expect("server");
    (server, dir)
}

fn registration(id: &str, name: &str) -> NodeRegistration {
    NodeRegistration {
        id: id.into(),
        name: name.into(),
        address: "http://127.0.0.1:1".into(),
        resources: Resources {
            disk: Default::default(),
            cpu: MilliCpu(2000),
            memory: Bytes(4 << 30),
        },
        attributes: BTreeMap::new(),
        labels: BTreeMap::new(),
        drivers: vec!["exec".into()],
        port_range: (20000, 21000),
    }
}

/// The value of the sample line that starts with `series` (name and
/// labels as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn server_text_has_node_scheduler_deployment_and_api_metrics() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    crate::ops::nodes::register(&core, registration("n-1", "alpha"))
        .await
        .expect("register");
    let now = crate::core::now_ms();
    for (cpu, at) in [(1.0, now - 10_000), (6.0, now)] {
        core.usage.record(
            "n-1",
            vec![TaskUsage {
                alloc_id: "a-1".into(),
                task: "app".into(),
                memory_bytes: 50 << 20,
                memory_limit_bytes: 64 << 20,
                cpu_seconds: cpu,
                at,
                started_at: None,
            }],
            now,
        );
    }
    core.metrics.eval_done(EvalOutcome::Complete);
    core.metrics.eval_done(EvalOutcome::Blocked);
    core.metrics.eval_latency.observe(Duration::from_millis(2));

    // Through HTTP, so the route middleware runs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{addr}/v1/jobs/no-such-job"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("http://{addr}/v1/nodes/n-1/stats"))
        .json(&NodeStats { tasks: vec![] })
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 204);
    let r = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text().await.expect("text");

    let n = "{node=\"alpha\",node_id=\"n-1\"}";
    assert_eq!(
        value(&text, &format!("corral_node_cpu_capacity_cores{n}")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &format!("corral_node_memory_capacity_bytes{n}")),
        Some((4u64 << 30) as f64)
    );
    assert_eq!(
        value(&text, &format!("corral_node_cpu_allocated_cores{n}")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &format!("corral_node_memory_allocated_bytes{n}")),
        Some(0.0)
    );
    // The empty push above replaced the node's samples.
    assert_eq!(
        value(&text, &format!("corral_node_memory_used_bytes{n}")),
        Some(0.0)
    );
    assert_eq!(value(&text, "corral_nodes{status=\"ready\"}"), Some(1.0));
    assert_eq!(value(&text, "corral_nodes{status=\"down\"}"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "corral_scheduler_evaluations_total{outcome=\"complete\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "corral_scheduler_evaluations_total{outcome=\"blocked\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "corral_scheduler_blocked_evaluations"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "corral_scheduler_placement_latency_seconds_count"),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE corral_plan_apply_latency_seconds histogram\n"),
        "{text}"
    );
    assert_eq!(
        value(&text, "corral_deployments{status=\"running\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "corral_api_requests_total{method=\"GET\",route=\"/v1/jobs/{name}\",code=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "corral_api_request_duration_seconds_count{method=\"POST\",route=\"/v1/nodes/{id}/stats\"}"
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("no-such-job"),
        "raw paths must not become labels"
    );
    // Every sample line is a corral_ metric.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.starts_with("corral_"), "{l}");
    }
}

#[tokio::test]
async fn node_used_comes_from_fresh_usage_samples() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    crate::ops::nodes::register(&core, registration("n-2", "beta"))
        .await
        .expect("register");
    let now = crate::core::now_ms();
    for (cpu, at) in [(1.0, now - 10_000), (6.0, now)] {
        core.usage.record(
            "n-2",
            vec![TaskUsage {
                alloc_id: "a-1".into(),
                task: "app".into(),
                memory_bytes: 50 << 20,
                memory_limit_bytes: 64 << 20,
                cpu_seconds: cpu,
                at,
                started_at: None,
            }],
            now,
        );
    }
    let text = encode(&core).await.expect("encodes");
    let n = "{node=\"beta\",node_id=\"n-2\"}";
    assert_eq!(
        value(&text, &format!("corral_node_memory_used_bytes{n}")),
        Some((50u64 << 20) as f64)
    );
    assert_eq!(
        value(&text, &format!("corral_node_cpu_used_cores{n}")),
        Some(0.5)
    );
}

#[tokio::test]
async fn extra_sources_are_appended() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    core.metrics
        .add_source(|| async { "# TYPE corral_extra gauge\ncorral_extra 7\n".to_string() });
    let text = encode(&core).await.expect("encodes");
    assert_eq!(value(&text, "corral_extra"), Some(7.0));
    assert_eq!(text.matches("# TYPE corral_nodes gauge").count(), 1);
}

/// docs/METRICS.md lists the statuses `corral_nodes` has, and no other: a
/// node is `ready` as soon as it registers, never `initializing` (issue
/// 14, case 9).
#[tokio::test]
async fn node_statuses_are_the_documented_ones() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    crate::ops::nodes::register(&core, registration("n-1", "alpha"))
        .await
        .expect("register");
    let text = encode(&core).await.expect("encodes");
    assert_eq!(value(&text, "corral_nodes{status=\"ready\"}"), Some(1.0));
    let emitted: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("corral_nodes{status=\"")?.split('"').next())
        .collect();
    let doc = include_str!("../../../../docs/METRICS.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `corral_nodes` |"))
        .expect("the corral_nodes row of docs/METRICS.md");
    // The code spans of the row: the name, `status`, then the statuses.
    let documented: BTreeSet<&str> = row.split('`').skip(1).step_by(2).skip(2).collect();
    assert_eq!(emitted, documented, "docs/METRICS.md: {row}");
}

fn volume(id: &str, node: &str) -> corral_types::Volume {
    corral_types::Volume {
        origin: None,
        id: id.into(),
        job: "db".into(),
        group: "db".into(),
        name: "data".into(),
        slot: None,
        size: Bytes(1 << 30),
        provider: "btrfs-image".into(),
        node_id: node.into(),
        generation: 1,
        alloc_id: None,
        moved_from: None,
        last_move_downtime_ms: None,
        snapshots: Vec::new(),
        backups: Vec::new(),
        backup_error: None,
        restored_from: None,
        used: None,
        created_at: 1,
        modified_at: 1,
        create_index: 0,
        modify_index: 0,
    }
}

#[tokio::test]
async fn volumes_have_size_use_snapshots_backups_and_generation() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    crate::ops::nodes::register(&core, registration("n-1", "alpha"))
        .await
        .expect("register");
    let now = crate::core::now_ms();
    let mut a = volume("db.data", "n-1");
    a.used = Some(Bytes(5 << 20));
    a.generation = 3;
    a.snapshots = vec![corral_types::VolumeSnapshot {
        name: "hourly-1".into(),
        created_at: now,
        scheduled: true,
        took_ms: 10,
    }];
    let backup = |id: &str, taken_at: u64| corral_types::VolumeBackup {
        id: id.into(),
        target: "s3".into(),
        taken_at,
        took_ms: 1,
        bytes_added: 1,
    };
    a.backups = vec![backup("b1", now - 7_200_000), backup("b2", now - 60_000)];
    // Never measured, never backed up, on a node the server forgot.
    let b = volume("db.logs", "n-gone");
    core.store
        .commit(vec![
            corral_store::Write::Volume(a),
            corral_store::Write::Volume(b),
        ])
        .expect("commit");
    let text = encode(&core).await.expect("encodes");

    let l = "{volume=\"db.data\",job=\"db\",node=\"alpha\"}";
    assert_eq!(
        value(&text, &format!("corral_volume_size_bytes{l}")),
        Some((1u64 << 30) as f64)
    );
    assert_eq!(
        value(&text, &format!("corral_volume_used_bytes{l}")),
        Some((5u64 << 20) as f64)
    );
    assert_eq!(
        value(&text, &format!("corral_volume_snapshots{l}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("corral_volume_backups{l}")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &format!("corral_volume_generation{l}")),
        Some(3.0)
    );
    // From the newest backup's snapshot time, not the oldest's.
    let age =
        value(&text, &format!("corral_volume_last_backup_age_seconds{l}")).expect("a backup age");
    assert!((60.0..120.0).contains(&age), "{age}");

    let l = "{volume=\"db.logs\",job=\"db\",node=\"n-gone\"}";
    assert_eq!(
        value(&text, &format!("corral_volume_backups{l}")),
        Some(0.0)
    );
    assert_eq!(value(&text, &format!("corral_volume_used_bytes{l}")), None);
    assert_eq!(
        value(&text, &format!("corral_volume_last_backup_age_seconds{l}")),
        None
    );
}

/// Every `corral_volume_*` metric the server emits has a row in
/// docs/METRICS.md, and every row there is emitted.
#[tokio::test]
async fn volume_metrics_are_the_documented_ones() {
    let (server, _dir) = server().await;
    let core = server.core.clone();
    let text = encode(&core).await.expect("encodes");
    let emitted: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with("corral_volume_"))
        .collect();
    let doc = include_str!("../../../../docs/METRICS.md");
    let documented: BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|n| n.starts_with("corral_volume_"))
        .collect();
    assert_eq!(emitted.len(), 6, "{emitted:?}");
    assert_eq!(emitted, documented);
}
