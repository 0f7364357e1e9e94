//! The latest resource usage of every running task, as agents push it
//! (`POST /v1/nodes/{id}/stats`, every 10 s from nodes that run tasks).
//!
//! Kept in memory only: a sample is worth nothing a minute later, and
//! writing 10,000 nodes' samples every 10 s to the store would cost more
//! than everything else the store does. A server restart starts empty and
//! fills again within one push interval.
//!
//! Each push carries all of a node's running tasks and replaces what that
//! node sent before, so a stopped task disappears with its node's next
//! push (an agent whose last task stopped sends one empty push). Samples
//! not refreshed for [`STALE_AFTER`] (a node down or cut off) are left out
//! of every answer and dropped.
//!
//! Each sample names the run it measured (when it started): a CPU rate is
//! taken only between two samples of one run, and [`is_current`] tells a
//! rule whether a sample still measures what the state says runs.
//!
//! Readers: the alert engine ("memory above 90% of limit for 5 min") with
//! [`Usage::get`] and [`Usage::all`]; the node metrics with
//! [`Usage::node_totals`].

use std::collections::HashMap;
use std::sync::RwLock;

use corral_types::UnixMillis;
use corral_types::api::TaskUsage;

/// Samples older than this (by the server's clock at receipt) count as
/// gone: three missed pushes.
pub const STALE_AFTER_MS: u64 = 35_000;
/// How often the store is swept of stale samples (on a push).
const PRUNE_EVERY_MS: u64 = 60_000;

/// The latest usage of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSample {
    pub node_id: String,
    pub alloc_id: String,
    pub task: String,
    pub memory_bytes: u64,
    /// 0 when the task has no memory limit.
    pub memory_limit_bytes: u64,
    /// CPU time used since the task (its current run) started.
    pub cpu_seconds: f64,
    /// CPU cores in use, from this sample and the one before it; `None`
    /// after the first sample of a task run.
    pub cpu_cores: Option<f64>,
    /// When the agent measured it (the agent's clock).
    pub at: UnixMillis,
    /// When the measured run started (the agent's clock), if the agent
    /// said.
    pub started_at: Option<UnixMillis>,
    /// When the server received it (the server's clock).
    pub received_at: UnixMillis,
}

impl UsageSample {
    /// Memory used as a fraction of the limit; `None` without a limit.
    pub fn memory_ratio(&self) -> Option<f64> {
        (self.memory_limit_bytes > 0)
            .then(|| self.memory_bytes as f64 / self.memory_limit_bytes as f64)
    }
}

/// What one node's tasks use together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeUsage {
    pub memory_bytes: u64,
    pub cpu_cores: f64,
    pub tasks: usize,
}

type TaskKey = (String, String);

#[derive(Default)]
struct Inner {
    tasks: HashMap<TaskKey, UsageSample>,
    by_node: HashMap<String, Vec<TaskKey>>,
    pruned_at: UnixMillis,
}

/// Latest usage per (allocation, task); see the module docs.
#[derive(Default)]
pub struct Usage {
    inner: RwLock<Inner>,
}

impl Usage {
    /// A node's push: its running tasks now. Replaces what it sent before.
    pub fn record(&self, node_id: &str, samples: Vec<TaskUsage>, now: UnixMillis) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        let mut previous: HashMap<TaskKey, UsageSample> = HashMap::new();
        if let Some(keys) = inner.by_node.remove(node_id) {
            for k in keys {
                if let Some(s) = inner.tasks.remove(&k) {
                    previous.insert(k, s);
                }
            }
        }
        let mut keys = Vec::with_capacity(samples.len());
        for t in samples {
            let key = (t.alloc_id, t.task);
            let cpu_cores = previous.get(&key).and_then(|p| {
                // A restart resets the counter: no rate across it. The
                // run's start tells; without it (an older agent), only a
                // counter that went down does.
                if p.started_at.is_some() && p.started_at != t.started_at {
                    return None;
                }
                let dt = t.at.checked_sub(p.at)? as f64 / 1e3;
                let used = t.cpu_seconds - p.cpu_seconds;
                (dt > 0.0 && used >= 0.0).then(|| used / dt)
            });
            let sample = UsageSample {
                node_id: node_id.to_string(),
                alloc_id: key.0.clone(),
                task: key.1.clone(),
                memory_bytes: t.memory_bytes,
                memory_limit_bytes: t.memory_limit_bytes,
                cpu_seconds: t.cpu_seconds,
                cpu_cores,
                at: t.at,
                started_at: t.started_at,
                received_at: now,
            };
            // An allocation moves only with a new id, but be safe: the
            // newest sender owns the key.
            if let Some(old) = inner.tasks.insert(key.clone(), sample)
                && old.node_id != node_id
                && let Some(k) = inner.by_node.get_mut(&old.node_id)
            {
                k.retain(|x| x != &key);
            }
            keys.push(key);
        }
        if !keys.is_empty() {
            inner.by_node.insert(node_id.to_string(), keys);
        }
        if now.saturating_sub(inner.pruned_at) >= PRUNE_EVERY_MS {
            inner.pruned_at = now;
            prune(&mut inner, now);
        }
    }

    /// The latest usage of one task, unless it is stale.
    pub fn get(&self, alloc_id: &str, task: &str) -> Option<UsageSample> {
        self.get_at(alloc_id, task, crate::core::now_ms())
    }

    /// Every task's latest usage that is not stale.
    pub fn all(&self) -> Vec<UsageSample> {
        self.all_at(crate::core::now_ms())
    }

    /// Per node id: what its tasks use together (fresh samples only).
    pub fn node_totals(&self) -> HashMap<String, NodeUsage> {
        let mut out: HashMap<String, NodeUsage> = HashMap::new();
        for s in self.all() {
            let n = out.entry(s.node_id.clone()).or_default();
            n.memory_bytes += s.memory_bytes;
            n.cpu_cores += s.cpu_cores.unwrap_or(0.0);
            n.tasks += 1;
        }
        out
    }

    /// Forget a node's samples (it was removed).
    pub fn forget_node(&self, node_id: &str) {
        if let Ok(mut inner) = self.inner.write()
            && let Some(keys) = inner.by_node.remove(node_id)
        {
            for k in keys {
                inner.tasks.remove(&k);
            }
        }
    }

    pub fn get_at(&self, alloc_id: &str, task: &str, now: UnixMillis) -> Option<UsageSample> {
        let inner = self.inner.read().ok()?;
        inner
            .tasks
            .get(&(alloc_id.to_string(), task.to_string()))
            .filter(|s| fresh(s, now))
            .cloned()
    }

    pub fn all_at(&self, now: UnixMillis) -> Vec<UsageSample> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .tasks
            .values()
            .filter(|s| fresh(s, now))
            .cloned()
            .collect()
    }
}

/// Whether a sample of `alloc_id`'s `task` from the run that started at
/// `run` measures what runs now, as the state knows it: the allocation is
/// live, the task runs, and the sample is not of a run older than the
/// task's current one. A sample outlives its run until the node's next
/// push; a rule must not count it for the run after, or for nothing.
pub fn is_current(
    state: &corral_store::State,
    alloc_id: &str,
    task: &str,
    run: Option<UnixMillis>,
) -> bool {
    let Some(a) = state.alloc(alloc_id) else {
        return false;
    };
    let Some(t) = a.tasks.get(task) else {
        return false;
    };
    a.is_live()
        && t.state == corral_types::TaskLifecycle::Running
        && match (run, t.started_at) {
            (Some(run), Some(started)) => run >= started,
            _ => true,
        }
}

fn fresh(s: &UsageSample, now: UnixMillis) -> bool {
    now.saturating_sub(s.received_at) < STALE_AFTER_MS
}

fn prune(inner: &mut Inner, now: UnixMillis) {
    inner.tasks.retain(|_, s| fresh(s, now));
    let Inner { tasks, by_node, .. } = inner;
    by_node.retain(|_, keys| {
        keys.retain(|k| tasks.contains_key(k));
        !keys.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(alloc: &str, task: &str, mem: u64, cpu: f64, at: u64) -> TaskUsage {
        TaskUsage {
            alloc_id: alloc.into(),
            task: task.into(),
            memory_bytes: mem,
            memory_limit_bytes: 1000,
            cpu_seconds: cpu,
            at,
            started_at: None,
        }
    }

    /// A sample of the run that started at `run`.
    fn of_run(run: u64, cpu: f64, at: u64) -> TaskUsage {
        TaskUsage {
            started_at: Some(run),
            ..t("a1", "app", 100, cpu, at)
        }
    }

    /// Issue 14, suspected: a restarted run whose counter is already above
    /// the last sample of the run before got a rate made of two runs'
    /// counters.
    #[test]
    fn no_cpu_rate_across_a_restart_even_when_the_counter_went_up() {
        let u = Usage::default();
        u.record("n1", vec![of_run(1_000, 1.0, 10_000)], 10_000);
        u.record("n1", vec![of_run(1_000, 3.0, 20_000)], 20_000);
        assert_eq!(
            u.get_at("a1", "app", 20_000).expect("s").cpu_cores,
            Some(0.2)
        );
        // The task restarted at 21 s and used 4 s of CPU by 30 s: its
        // counter (4.0) is above the last sample's (3.0), but 0.1 cores
        // is no rate of anything.
        u.record("n1", vec![of_run(21_000, 4.0, 30_000)], 30_000);
        assert_eq!(u.get_at("a1", "app", 30_000).expect("s").cpu_cores, None);
        // The new run's next sample has its own rate.
        u.record("n1", vec![of_run(21_000, 9.0, 40_000)], 40_000);
        assert_eq!(
            u.get_at("a1", "app", 40_000).expect("s").cpu_cores,
            Some(0.5)
        );
    }

    /// A sample is current only while the state has its run running.
    #[test]
    fn a_sample_of_a_run_that_ended_is_not_current() {
        use corral_scheduler::testing::{alloc, group, job, node};
        use corral_store::{MemoryStore, StateStore, Write};
        use corral_types::{ClientStatus, TaskLifecycle, TaskState};
        let store = StateStore::open(Box::new(MemoryStore::new())).expect("store");
        let j = job("web", 1, vec![group("web", 1).build()]);
        let mut a = alloc("a1", &j, "web", 0, "n1");
        let running = |started: u64| TaskState {
            state: TaskLifecycle::Running,
            started_at: Some(started),
            ..TaskState::default()
        };
        a.tasks.insert("app".into(), running(1_000));
        store
            .commit(vec![
                Write::Node(node("n1").build()),
                Write::Job(j),
                Write::Alloc(a.clone()),
            ])
            .expect("commit");
        let current = |store: &StateStore, run| is_current(&store.snapshot(), "a1", "app", run);
        assert!(current(&store, Some(1_000)));
        assert!(current(&store, None), "an older agent's sample");
        assert!(!is_current(&store.snapshot(), "a1", "other", Some(1_000)));
        assert!(!is_current(&store.snapshot(), "a2", "app", Some(1_000)));
        // Exited, waiting for its restart.
        let mut restarting = a.clone();
        restarting.client = ClientStatus::Pending;
        restarting.tasks.get_mut("app").expect("task").state = TaskLifecycle::Restarting;
        store
            .commit(vec![Write::Alloc(restarting)])
            .expect("commit");
        assert!(!current(&store, Some(1_000)));
        // Running again: the old run's sample is not the new run's.
        a.tasks.insert("app".into(), running(5_000));
        store.commit(vec![Write::Alloc(a.clone())]).expect("commit");
        assert!(!current(&store, Some(1_000)));
        assert!(current(&store, Some(5_000)));
        // The allocation ended.
        a.client = ClientStatus::Complete;
        store.commit(vec![Write::Alloc(a)]).expect("commit");
        assert!(!current(&store, Some(5_000)));
    }

    #[test]
    fn latest_sample_per_task_with_cpu_rate() {
        let u = Usage::default();
        u.record("n1", vec![t("a1", "app", 100, 1.0, 10_000)], 10_000);
        let s = u.get_at("a1", "app", 10_000).expect("sample");
        assert_eq!(s.memory_bytes, 100);
        assert_eq!(s.cpu_cores, None);
        u.record("n1", vec![t("a1", "app", 950, 6.0, 20_000)], 20_000);
        let s = u.get_at("a1", "app", 20_000).expect("sample");
        assert_eq!(s.memory_bytes, 950);
        assert_eq!(s.cpu_cores, Some(0.5));
        assert_eq!(s.memory_ratio(), Some(0.95));
        // A restart resets the cpu counter: no rate.
        u.record("n1", vec![t("a1", "app", 10, 0.1, 30_000)], 30_000);
        assert_eq!(u.get_at("a1", "app", 30_000).expect("s").cpu_cores, None);
    }

    #[test]
    fn a_push_replaces_the_nodes_previous_tasks() {
        let u = Usage::default();
        u.record(
            "n1",
            vec![t("a1", "app", 1, 0.0, 1), t("a2", "app", 2, 0.0, 1)],
            1_000,
        );
        u.record("n2", vec![t("b1", "web", 5, 0.0, 1)], 1_000);
        u.record("n1", vec![t("a2", "app", 3, 0.0, 2)], 2_000);
        assert!(u.get_at("a1", "app", 2_000).is_none());
        assert_eq!(u.get_at("a2", "app", 2_000).expect("a2").memory_bytes, 3);
        assert_eq!(u.all_at(2_000).len(), 2);
        // The empty push after the last task stopped.
        u.record("n1", vec![], 3_000);
        assert!(u.get_at("a2", "app", 3_000).is_none());
        assert_eq!(u.all_at(3_000).len(), 1);
    }

    #[test]
    fn stale_samples_are_left_out_and_pruned() {
        let u = Usage::default();
        u.record("n1", vec![t("a1", "app", 1, 0.0, 1)], 100_000);
        assert!(
            u.get_at("a1", "app", 100_000 + STALE_AFTER_MS - 1)
                .is_some()
        );
        assert!(u.get_at("a1", "app", 100_000 + STALE_AFTER_MS).is_none());
        // Another node's push sweeps them.
        u.record("n2", vec![], 100_000 + PRUNE_EVERY_MS + STALE_AFTER_MS);
        let inner = u.inner.read().expect("lock");
        assert!(inner.tasks.is_empty());
        assert!(inner.by_node.is_empty());
    }

    #[test]
    fn node_totals_add_up_fresh_samples() {
        let u = Usage::default();
        let now = crate::core::now_ms();
        u.record(
            "n1",
            vec![t("a1", "app", 100, 0.0, 1), t("a1", "side", 50, 0.0, 1)],
            now,
        );
        u.record(
            "n1",
            vec![
                t("a1", "app", 100, 2.0, 1001),
                t("a1", "side", 50, 1.0, 1001),
            ],
            now,
        );
        let n = u.node_totals();
        let n1 = n.get("n1").expect("n1");
        assert_eq!(n1.memory_bytes, 150);
        assert_eq!(n1.tasks, 2);
        assert!((n1.cpu_cores - 3.0).abs() < 1e-9);
    }
}
