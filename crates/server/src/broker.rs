//! The evaluation broker: a queue of evaluations with at most one in
//! flight per job (two workers never reconcile the same job at once), the
//! set of blocked evaluations waiting for capacity, and evaluations held
//! until their `wait_until` (a reschedule delay).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use corral_types::{EvalStatus, Evaluation};
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    /// When each queued evaluation arrived, for the latency metric.
    arrived: HashMap<String, std::time::Instant>,
    ready: VecDeque<Evaluation>,
    inflight: HashSet<String>,
    /// Evaluations of a job that is in flight, in arrival order.
    waiting: HashMap<String, VecDeque<Evaluation>>,
    /// Latest blocked evaluation per job.
    blocked: HashMap<String, Evaluation>,
    /// Held until their `wait_until`.
    delayed: Vec<Evaluation>,
    closed: bool,
}

impl Inner {
    /// Queue the held evaluations that are due; when the next one is.
    fn release_due(&mut self, now: corral_types::UnixMillis) -> Option<corral_types::UnixMillis> {
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|e| e.wait_until.is_none_or(|t| t <= now));
        self.delayed = held;
        for e in due {
            self.queue(e);
        }
        self.delayed.iter().filter_map(|e| e.wait_until).min()
    }

    fn queue(&mut self, eval: Evaluation) {
        self.arrived
            .entry(eval.id.clone())
            .or_insert_with(std::time::Instant::now);
        if self.inflight.contains(&eval.job) {
            self.waiting
                .entry(eval.job.clone())
                .or_default()
                .push_back(eval);
        } else {
            self.ready.push_back(eval);
        }
    }
}

#[derive(Default)]
pub struct Broker {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Broker {
    pub fn new() -> Broker {
        Broker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn enqueue(&self, eval: Evaluation) {
        let mut inner = self.lock();
        if eval.wait_until.is_some_and(|t| t > corral_types::now_ms()) {
            inner.delayed.push(eval);
            drop(inner);
            // A waiting worker takes the new deadline into account.
            self.notify.notify_waiters();
            return;
        }
        // A newer evaluation of the job supersedes a blocked one: the worker
        // reconciles the whole job anyway.
        inner.blocked.remove(&eval.job);
        inner.queue(eval);
        drop(inner);
        self.notify.notify_one();
    }

    /// The earliest time an evaluation of `job` is held until, if any.
    pub fn delayed_until(&self, job: &str) -> Option<corral_types::UnixMillis> {
        self.lock()
            .delayed
            .iter()
            .filter(|e| e.job == job)
            .filter_map(|e| e.wait_until)
            .min()
    }

    /// The next evaluation whose job is not in flight; `None` once closed.
    pub async fn dequeue(&self) -> Option<Evaluation> {
        loop {
            let notified = self.notify.notified();
            let next_due;
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                let now = corral_types::now_ms();
                next_due = inner.release_due(now).map(|t| t.saturating_sub(now));
                if let Some(pos) = inner
                    .ready
                    .iter()
                    .position(|e| !inner.inflight.contains(&e.job))
                    && let Some(e) = inner.ready.remove(pos)
                {
                    inner.inflight.insert(e.job.clone());
                    if !inner.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(e);
                }
            }
            match next_due {
                Some(ms) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(std::time::Duration::from_millis(ms.max(1))) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The worker is done with evaluation `eval_id` of `job`: release the
    /// job's next evaluation. Returns how long the evaluation was in the
    /// broker's hands.
    pub fn ack(&self, job: &str, eval_id: &str) -> Option<std::time::Duration> {
        let mut inner = self.lock();
        let waited = inner.arrived.remove(eval_id).map(|t| t.elapsed());
        inner.inflight.remove(job);
        let next = inner.waiting.get_mut(job).and_then(VecDeque::pop_front);
        if inner.waiting.get(job).is_some_and(VecDeque::is_empty) {
            inner.waiting.remove(job);
        }
        if let Some(e) = next {
            inner.ready.push_back(e);
        }
        drop(inner);
        self.notify.notify_one();
        waited
    }

    pub fn block(&self, eval: Evaluation) {
        let mut inner = self.lock();
        // A newer evaluation of the job already waits its turn: it will
        // reconcile the job (and cancel this one in the store).
        let newer_queued = inner.waiting.get(&eval.job).is_some_and(|w| !w.is_empty())
            || inner.ready.iter().any(|e| e.job == eval.job);
        if !newer_queued {
            inner.blocked.insert(eval.job.clone(), eval);
        }
    }

    /// Re-queue every blocked evaluation (capacity changed).
    pub fn unblock_all(&self) {
        let blocked: Vec<Evaluation> = {
            let mut inner = self.lock();
            inner.blocked.drain().map(|(_, e)| e).collect()
        };
        for mut e in blocked {
            e.status = EvalStatus::Pending;
            self.enqueue(e);
        }
    }

    pub fn blocked_count(&self) -> usize {
        self.lock().blocked.len()
    }

    pub fn pending_count(&self) -> usize {
        let inner = self.lock();
        inner.ready.len() + inner.waiting.values().map(VecDeque::len).sum::<usize>()
    }

    pub fn delayed_count(&self) -> usize {
        self.lock().delayed.len()
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use corral_types::EvalTrigger;

    #[tokio::test]
    async fn one_eval_in_flight_per_job() {
        let b = Broker::new();
        b.enqueue(Core::new_eval("a", EvalTrigger::JobRegister, 0));
        b.enqueue(Core::new_eval("a", EvalTrigger::JobRegister, 0));
        b.enqueue(Core::new_eval("b", EvalTrigger::JobRegister, 0));
        let first = b.dequeue().await.unwrap();
        assert_eq!(first.job, "a");
        // The second "a" waits for the first to be acked; "b" goes ahead.
        let second = b.dequeue().await.unwrap();
        assert_eq!(second.job, "b");
        assert_eq!(b.pending_count(), 1);
        b.ack("a", &first.id);
        let third = b.dequeue().await.unwrap();
        assert_eq!(third.job, "a");
    }

    #[tokio::test]
    async fn blocked_evals_come_back_on_capacity() {
        let b = Broker::new();
        b.block(Core::new_eval("a", EvalTrigger::JobRegister, 0));
        assert_eq!(b.blocked_count(), 1);
        b.unblock_all();
        assert_eq!(b.blocked_count(), 0);
        assert_eq!(b.dequeue().await.unwrap().status, EvalStatus::Pending);
        b.close();
        assert!(b.dequeue().await.is_none());
    }

    /// An evaluation with a `wait_until` is handed out only once due.
    #[tokio::test]
    async fn a_delayed_eval_waits_for_its_time() {
        let b = Broker::new();
        let mut e = Core::new_eval("a", EvalTrigger::Reschedule, 0);
        e.wait_until = Some(corral_types::now_ms() + 300);
        b.enqueue(e);
        assert_eq!((b.delayed_count(), b.pending_count()), (1, 0));
        assert!(b.delayed_until("a").is_some() && b.delayed_until("b").is_none());
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), b.dequeue()).await;
        assert!(early.is_err(), "handed out before its time");
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), b.dequeue())
            .await
            .expect("handed out once due")
            .unwrap();
        assert_eq!(e.trigger, EvalTrigger::Reschedule);
        assert_eq!(b.delayed_count(), 0);
    }

    /// An evaluation that blocks while a newer one of its job waits is
    /// superseded: it is not kept to come back on the next capacity change.
    #[tokio::test]
    async fn a_blocked_eval_with_a_newer_one_queued_is_dropped() {
        let b = Broker::new();
        b.enqueue(Core::new_eval("a", EvalTrigger::JobRegister, 0));
        let first = b.dequeue().await.unwrap();
        b.enqueue(Core::new_eval("a", EvalTrigger::NodeUpdate, 0));
        b.block(first.clone());
        assert_eq!(b.blocked_count(), 0);
        b.ack("a", &first.id);
        let next = b.dequeue().await.unwrap();
        assert_eq!(next.trigger, EvalTrigger::NodeUpdate);
        b.block(next.clone());
        b.ack("a", &next.id);
        assert_eq!(b.blocked_count(), 1);
    }
}
