//! Task metrics on the agent: `/metrics` on the agent's HTTP port and the
//! usage sample pushed to the server every 10 s.
//!
//! Every task runner is [`TaskMetrics::track`]ed from its start until it
//! ends. Restarts come from the task's published [`TaskState`]; OOM kills
//! are counted by a small watcher on the same channel (one per exit with
//! `oom_killed`); memory and CPU are read from the driver
//! ([`Driver::stats`]: the task's cgroup for `exec`, CRI container stats
//! for `container`) when someone asks: at scrape time and at push time,
//! never in the background. Names are listed in docs/METRICS.md.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use corral_types::api::TaskUsage;
use corral_types::{TaskLifecycle, TaskSpec, TaskState, UnixMillis};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::driver::{AllocContext, Driver, TaskHandle, TaskStats, now_unix_ms};

/// The Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How long one task's stats may take before the scrape goes on without.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

type Key = (String, String);

/// The tasks this agent runs, for metrics and usage pushes.
pub struct TaskMetrics {
    /// The node's name, the `node` label.
    node: String,
    tasks: Mutex<HashMap<Key, Arc<Tracked>>>,
}

struct Tracked {
    alloc_id: String,
    job: String,
    group: String,
    task: String,
    driver: Arc<dyn Driver>,
    memory_limit: u64,
    state: watch::Receiver<TaskState>,
    oom_kills: AtomicU64,
    /// The handle of the current run (`None` while it does not run).
    handle: watch::Receiver<Option<TaskHandle>>,
}

/// One task as measured now.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSample {
    pub job: String,
    pub group: String,
    pub task: String,
    pub alloc_id: String,
    pub running: bool,
    pub restarts: u32,
    pub oom_kills: u64,
    pub memory_limit_bytes: u64,
    /// Usage of a running task whose driver answered.
    pub stats: Option<TaskStats>,
    /// When the measured run started (with `stats`).
    pub run_started_at: Option<UnixMillis>,
    pub at: UnixMillis,
}

impl TaskMetrics {
    pub fn new(node_name: &str) -> TaskMetrics {
        TaskMetrics {
            node: node_name.to_string(),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Follow a task runner's task until its state channel closes (the
    /// runner ended). Must be called inside a tokio runtime.
    pub fn track(
        self: &Arc<Self>,
        alloc: &AllocContext,
        task: &TaskSpec,
        driver: Arc<dyn Driver>,
        state: watch::Receiver<TaskState>,
        handle: watch::Receiver<Option<TaskHandle>>,
    ) {
        let entry = Arc::new(Tracked {
            alloc_id: alloc.alloc_id.clone(),
            job: alloc.job.clone(),
            group: alloc.group.clone(),
            task: task.name.clone(),
            driver,
            memory_limit: task.resources.memory.0,
            state: state.clone(),
            oom_kills: AtomicU64::new(0),
            handle,
        });
        let key = (alloc.alloc_id.clone(), task.name.clone());
        lock(&self.tasks).insert(key.clone(), entry.clone());
        // The exit already known now was counted before (or never
        // happened): only later ones count.
        let mut state = state;
        let last_exit = state.borrow_and_update().finished_at;
        let table = Arc::downgrade(self);
        tokio::spawn(watch_exits(table, key, entry, state, last_exit));
    }

    /// Every tracked task, with usage for those running.
    pub async fn sample(&self) -> Vec<TaskSample> {
        let tracked: Vec<Arc<Tracked>> = lock(&self.tasks).values().cloned().collect();
        let samples = tracked.iter().map(|t| async move {
            let state = t.state.borrow().clone();
            let running = state.state == TaskLifecycle::Running;
            let (stats, run_started_at) = match running {
                true => t
                    .stats()
                    .await
                    .map_or((None, None), |(s, at)| (Some(s), Some(at))),
                false => (None, None),
            };
            TaskSample {
                job: t.job.clone(),
                group: t.group.clone(),
                task: t.task.clone(),
                alloc_id: t.alloc_id.clone(),
                running,
                restarts: state.restarts,
                oom_kills: t.oom_kills.load(Ordering::Relaxed),
                memory_limit_bytes: t.memory_limit,
                stats,
                run_started_at,
                at: now_unix_ms(),
            }
        });
        let mut out = futures::future::join_all(samples).await;
        out.sort_by(|a, b| (&a.job, &a.alloc_id, &a.task).cmp(&(&b.job, &b.alloc_id, &b.task)));
        out
    }

    /// What the agent pushes to the server: running tasks with usage.
    pub async fn usage(&self) -> Vec<TaskUsage> {
        to_usage(&self.sample().await)
    }

    /// This agent's metrics in the Prometheus text format.
    pub async fn encode(&self) -> String {
        let samples = self.sample().await;
        render(&self.node, samples).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot encode the agent's metrics");
            String::new()
        })
    }
}

/// `GET /metrics` on the agent's HTTP port.
pub async fn serve(
    axum::extract::State(shared): axum::extract::State<Arc<crate::node::Shared>>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        shared.metrics.encode().await,
    )
}

impl Tracked {
    /// The current run's usage, and when that run started.
    async fn stats(&self) -> Option<(TaskStats, UnixMillis)> {
        let handle = self.handle.borrow().clone()?;
        match tokio::time::timeout(STATS_TIMEOUT, self.driver.stats(&handle)).await {
            Ok(Ok(s)) => Some((s, handle.started_at_ms)),
            Ok(Err(e)) => {
                tracing::debug!(alloc = %self.alloc_id, task = %self.task, error = %e, "no stats");
                None
            }
            Err(_) => {
                tracing::debug!(alloc = %self.alloc_id, task = %self.task, "stats timed out");
                None
            }
        }
    }
}

/// Count OOM kills (one per exit that has `oom_killed`), then forget the
/// task once its runner drops the channel.
async fn watch_exits(
    table: Weak<TaskMetrics>,
    key: Key,
    entry: Arc<Tracked>,
    mut rx: watch::Receiver<TaskState>,
    mut last_exit: Option<UnixMillis>,
) {
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update();
        if s.finished_at.is_some() && s.finished_at != last_exit {
            last_exit = s.finished_at;
            if s.oom_killed {
                entry.oom_kills.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(table) = table.upgrade() {
        let mut tasks = lock(&table.tasks);
        if tasks.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            tasks.remove(&key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Running tasks whose usage is known, as pushed to the server.
pub fn to_usage(samples: &[TaskSample]) -> Vec<TaskUsage> {
    samples
        .iter()
        .filter_map(|s| {
            let st = s.stats?;
            Some(TaskUsage {
                alloc_id: s.alloc_id.clone(),
                task: s.task.clone(),
                memory_bytes: st.memory_bytes,
                memory_limit_bytes: s.memory_limit_bytes,
                cpu_seconds: st.cpu_usage_ns as f64 / 1e9,
                at: s.at,
                started_at: s.run_started_at,
            })
        })
        .collect()
}

/// The Prometheus text of `samples`, labelled with `node`.
pub fn render(node: &str, samples: Vec<TaskSample>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TaskCollector {
        node: node.to_string(),
        samples,
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `job`, `group`, `task`, `alloc`, `node`.
type TaskLabels<'a> = [(&'static str, &'a str); 5];

#[derive(Debug)]
struct TaskCollector {
    node: String,
    samples: Vec<TaskSample>,
}

impl TaskCollector {
    fn labels<'a>(&'a self, s: &'a TaskSample) -> TaskLabels<'a> {
        [
            ("job", &s.job),
            ("group", &s.group),
            ("task", &s.task),
            ("alloc", &s.alloc_id),
            ("node", &self.node),
        ]
    }

    fn family(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&TaskSample) -> Option<f64>,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(name, help, None, kind)?;
        for s in &self.samples {
            let Some(v) = value(s) else { continue };
            let labels = self.labels(s);
            let mut e = m.encode_family(&labels)?;
            match kind {
                MetricType::Counter => e.encode_counter::<NoLabelSet, f64, f64>(&v, None)?,
                _ => e.encode_gauge(&v)?,
            }
        }
        Ok(())
    }
}

impl Collector for TaskCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        self.family(
            &mut enc,
            "corral_task_cpu_seconds",
            "CPU time used by the task's current run.",
            Counter,
            |s| s.stats.map(|st| st.cpu_usage_ns as f64 / 1e9),
        )?;
        self.family(
            &mut enc,
            "corral_task_memory_usage_bytes",
            "Memory the running task uses (its cgroup's usage; the container's working set).",
            Gauge,
            |s| s.stats.map(|st| st.memory_bytes as f64),
        )?;
        self.family(
            &mut enc,
            "corral_task_memory_limit_bytes",
            "The task's memory limit (resources.memory).",
            Gauge,
            |s| Some(s.memory_limit_bytes as f64),
        )?;
        self.family(
            &mut enc,
            "corral_task_running",
            "1 while the task runs, 0 while it is pending, restarting or dead.",
            Gauge,
            |s| Some(if s.running { 1.0 } else { 0.0 }),
        )?;
        self.family(
            &mut enc,
            "corral_task_restarts",
            "Restarts of the task by its restart policy.",
            Counter,
            |s| Some(f64::from(s.restarts)),
        )?;
        self.family(
            &mut enc,
            "corral_task_oom_kills",
            "Exits of the task killed by the kernel's OOM killer (memory limit reached), seen by this agent process.",
            Counter,
            |s| Some(s.oom_kills as f64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::fake::FakeDriver;

    fn sample(task: &str, running: bool) -> TaskSample {
        TaskSample {
            job: "web".into(),
            group: "app".into(),
            task: task.into(),
            alloc_id: "a-1".into(),
            running,
            restarts: 3,
            oom_kills: 1,
            memory_limit_bytes: 64 << 20,
            stats: running.then_some(TaskStats {
                memory_bytes: 50 << 20,
                cpu_usage_ns: 1_500_000_000,
            }),
            run_started_at: running.then_some(1_699_999_990_000),
            at: 1_700_000_000_000,
        }
    }

    #[test]
    fn text_has_every_task_metric_with_its_labels() {
        let text =
            render("node-a", vec![sample("main", true), sample("side", false)]).expect("renders");
        let l = "{job=\"web\",group=\"app\",task=\"main\",alloc=\"a-1\",node=\"node-a\"}";
        for (series, value) in [
            ("corral_task_cpu_seconds_total", "1.5"),
            ("corral_task_memory_usage_bytes", "52428800.0"),
            ("corral_task_memory_limit_bytes", "67108864.0"),
            ("corral_task_running", "1.0"),
            ("corral_task_restarts_total", "3.0"),
            ("corral_task_oom_kills_total", "1.0"),
        ] {
            let line = format!("{series}{l} {value}\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        for t in ["counter", "gauge"] {
            assert!(text.contains(&format!(" {t}\n")), "{text}");
        }
        assert!(
            text.contains("# TYPE corral_task_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE corral_task_memory_usage_bytes gauge\n"),
            "{text}"
        );
        // A task that does not run has no usage, but its counters stay.
        let side = "task=\"side\"";
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("corral_task_memory_usage_bytes") && l.contains(side)),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("corral_task_restarts_total") && l.contains(side)),
            "{text}"
        );
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("corral_task_"), "{l}");
        }
    }

    #[test]
    fn usage_has_running_tasks_only() {
        let u = to_usage(&[sample("main", true), sample("side", false)]);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].task, "main");
        assert_eq!(u[0].memory_bytes, 50 << 20);
        assert_eq!(u[0].memory_limit_bytes, 64 << 20);
        assert!((u[0].cpu_seconds - 1.5).abs() < 1e-9);
        // The run it measured goes with it (issue 14: the server tells
        // runs apart).
        assert_eq!(u[0].started_at, Some(1_699_999_990_000));
    }

    #[tokio::test]
    async fn tracks_restarts_and_oom_kills_until_the_runner_ends() {
        let metrics = Arc::new(TaskMetrics::new("n"));
        let dir = tempfile::tempdir().expect("tempdir");
        let driver: Arc<dyn Driver> = Arc::new(FakeDriver::new());
        let alloc = AllocContext {
            alloc_id: "a-1".into(),
            job: "web".into(),
            group: "app".into(),
            index: 0,
            node_id: "n-1".into(),
            alloc_dir: dir.path().to_path_buf(),
            ports: Default::default(),
            pod: Default::default(),
        };
        let resources = corral_types::spec::Resources {
            disk: Default::default(),
            cpu: corral_types::units::MilliCpu(100),
            memory: corral_types::units::Bytes(1024),
        };
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": "main", "driver": driver.kind().as_str(), "command": ["x"],
            "resources": serde_json::to_value(resources).expect("json"),
        }))
        .expect("task spec");
        let (tx, rx) = watch::channel(TaskState::default());
        let (_handle_tx, handle_rx) = watch::channel(None);
        metrics.track(&alloc, &spec, driver.clone(), rx, handle_rx);
        for (i, oom) in [(1u64, true), (2, false), (3, true)] {
            tx.send_modify(|s| {
                s.state = TaskLifecycle::Restarting;
                s.finished_at = Some(1000 * i);
                s.oom_killed = oom;
            });
            tokio::task::yield_now().await;
            tx.send_modify(|s| {
                s.restarts = i as u32;
                s.state = TaskLifecycle::Restarting;
            });
            tokio::task::yield_now().await;
        }
        let got = wait_for(|| async {
            let s = metrics.sample().await;
            (s.len() == 1 && s[0].oom_kills == 2).then_some(s)
        })
        .await;
        assert_eq!(got[0].restarts, 3);
        assert_eq!(got[0].memory_limit_bytes, 1024);
        assert!(!got[0].running);
        drop(tx);
        wait_for(|| async { metrics.sample().await.is_empty().then_some(()) }).await;
    }

    async fn wait_for<T, F, Fut>(f: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        for _ in 0..200 {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met in 2 s");
    }
}
