//! [`StateStore`]: typed writes made durable through a [`Store`], then
//! published as a new immutable [`State`]. All writes pass through one
//! builder thread, so the index is decided here and every write sees the
//! previous one. Callers decide ids and timestamps before calling (deterministic
//! writes); the store only stamps the index.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use corral_types::{Alert, Allocation, Deployment, Evaluation, Index, Job, Node, Volume};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kv::{Op, Store, Txn, TxnOutcome};
use crate::{State, StoreError};

const JOBS: &str = "jobs/";
const ALLOCS: &str = "allocs/";
const NODES: &str = "nodes/";
const EVALS: &str = "evals/";
const DEPLOYMENTS: &str = "deployments/";
const ALERTS: &str = "alerts/";
const VOLUMES: &str = "volumes/";

/// One typed change. A batch of them commits atomically.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store a job version (new or updated, e.g. `stopped`).
    Job(Job),
    /// Remove every version of a job (purge).
    PurgeJob(String),
    Alloc(Allocation),
    DeleteAlloc(String),
    Node(Node),
    DeleteNode(String),
    Eval(Evaluation),
    DeleteEval(String),
    Deployment(Deployment),
    DeleteDeployment(String),
    /// Store an alert (new, updated or resolved).
    Alert(Alert),
    DeleteAlert(String),
    /// Store a volume record (new, claimed, moved, snapshotted).
    Volume(Volume),
    DeleteVolume(String),
    /// Delete the events up to this index (retention; a commit's events
    /// go together, so a few older ones may stay with the first commit
    /// kept); the newest event is always kept.
    PruneEvents {
        through: u64,
    },
}

/// The store: the latest durable state for readers, and the two threads
/// that commit. A builder thread takes every queued request, builds one
/// batch from them on the pending state (the durable state plus batches
/// still being written) and hands it to a disk thread, which writes the
/// batches in order and publishes each once it is durable. The next batch
/// is built while the previous one is written (Nomad's plan applier
/// pipelines the same way), and callers wait without holding a thread.
pub struct StateStore {
    inner: Arc<Inner>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

pub struct Inner {
    store: Box<dyn Store>,
    /// The latest durable state: what readers see.
    current: RwLock<Arc<State>>,
    queue: Mutex<Queue>,
    queued: Condvar,
    /// The epoch whose batches must fail (one of them failed to commit, and
    /// the ones after were built on it), plus one; 0 when none.
    broken: AtomicU64,
    /// The backend's revision is not where this store put it (a commit
    /// that failed may have landed, or another process wrote): no write
    /// is safe until the store is reopened from the backend.
    fatal: AtomicBool,
    pub(crate) events: crate::events::EventLog,
}

impl std::ops::Deref for StateStore {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    closed: bool,
}

type Build = Box<dyn FnOnce(&State, Index) -> Vec<Write> + Send>;
type Done = Box<dyn FnOnce(Result<Index, StoreError>) + Send>;

/// One caller's part of a group commit.
struct Request {
    build: Build,
    done: Done,
}

/// A batch built and waiting for the disk thread.
struct Built {
    base_index: Index,
    next: State,
    txn: Txn,
    events: Vec<Arc<corral_types::Event>>,
    outcome: Result<(), StoreError>,
    epoch: u64,
}

impl StateStore {
    /// Load everything from the store into memory.
    pub fn open(store: Box<dyn Store>) -> Result<StateStore, StoreError> {
        let mut state = State {
            index: store.revision()?,
            ..State::default()
        };
        for kv in store.range(JOBS)? {
            state.put_job(decode(&kv.key, &kv.value)?);
        }
        // Stores written before keys were ordered by creation hold
        // `prefix/id`: moved to their ordered key in one transaction.
        let mut rekey = Txn::default();
        for kv in store.range(ALLOCS)? {
            let a: Allocation = decode(&kv.key, &kv.value)?;
            rekey_if_old(&mut rekey, kv, ordered_key(ALLOCS, a.create_index, &a.id));
            state.put_alloc(a);
        }
        for kv in store.range(NODES)? {
            state.put_node(decode(&kv.key, &kv.value)?);
        }
        for kv in store.range(EVALS)? {
            let e: Evaluation = decode(&kv.key, &kv.value)?;
            rekey_if_old(&mut rekey, kv, ordered_key(EVALS, e.create_index, &e.id));
            state.put_eval(e);
        }
        for kv in store.range(DEPLOYMENTS)? {
            let d: Deployment = decode(&kv.key, &kv.value)?;
            rekey_if_old(
                &mut rekey,
                kv,
                ordered_key(DEPLOYMENTS, d.create_index, &d.id),
            );
            state.put_deployment(d);
        }
        if !rekey.ops.is_empty()
            && let TxnOutcome::Committed { revision } = store.txn(&rekey)?
        {
            state.index = revision;
        }
        for kv in store.range(ALERTS)? {
            state.put_alert(decode(&kv.key, &kv.value)?);
        }
        for kv in store.range(VOLUMES)? {
            state.put_volume(decode(&kv.key, &kv.value)?);
        }
        let events = crate::events::EventLog::default();
        state.events = events.load(store.as_ref())?;
        let state = Arc::new(state);
        let inner = Arc::new(Inner {
            store,
            current: RwLock::new(state.clone()),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            broken: AtomicU64::new(0),
            fatal: AtomicBool::new(false),
            events,
        });
        // A rendezvous: the builder hands over a batch only when the disk
        // thread takes it, so while a batch is written the next one is
        // built and requests arriving meanwhile wait for the one after
        // (group commit holds when the disk is the slower stage).
        let (to_disk, from_builder) = std::sync::mpsc::sync_channel::<(Built, Vec<Done>)>(0);
        let spawn_err = |source: std::io::Error| StoreError::Start { source };
        // The disk thread first: if the builder cannot start, the disk
        // thread's channel closes and it ends.
        let disk = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("store-disk".into())
                .spawn(move || {
                    for (built, dones) in from_builder {
                        let epoch = built.epoch;
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            inner.write_built(built)
                        }))
                        .unwrap_or_else(|_| {
                            // Whether it landed is unknown: stop writing.
                            tracing::error!("writing a batch panicked");
                            inner.fatal.store(true, Ordering::Release);
                            inner.broken.store(epoch + 1, Ordering::Release);
                            Err(BatchError::Fatal)
                        });
                        for d in dones {
                            call_done(d, result.clone().map_err(BatchError::into_store));
                        }
                    }
                })
                .map_err(spawn_err)?
        };
        let builder = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("store-builder".into())
                .spawn(move || {
                    // However the loop ends, nothing queued now or later
                    // waits for a builder that is gone.
                    let _closed = CloseOnExit(&inner);
                    inner.build_loop(state, to_disk);
                })
                .map_err(spawn_err)?
        };
        Ok(StateStore {
            inner,
            threads: vec![builder, disk],
        })
    }

    /// Commit a batch built from the latest state, and wait for it. See
    /// [`StateStore::submit`].
    pub fn write<T, E, F>(&self, build: F) -> Result<Result<(Index, T), E>, StoreError>
    where
        F: FnOnce(&State, Index) -> Result<(Vec<Write>, T), E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(build, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| StoreError::Poisoned)?
    }
}

impl Inner {
    /// An immutable snapshot of the latest committed state.
    pub fn snapshot(&self) -> Arc<State> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn backend(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The request queue; a panic elsewhere while holding it leaves it
    /// usable (its contents stay consistent: pushes and takes only).
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        }
    }

    /// Queue a batch built from the latest state; `done` gets the outcome
    /// once the commit is durable (on the store's disk thread: it must be
    /// quick). `build` runs on the builder thread with the state as of the
    /// last commit (plus the writes of requests committed together with
    /// it, and of batches built before it that are still being written)
    /// and the index this commit will get; it returns the writes and a
    /// value for the caller (or an error, and nothing of it is written).
    /// `done` gets the new index (the current one if nothing was written)
    /// and that value.
    ///
    /// Group commit: every request queued while a batch is built or
    /// written goes into the next batch, so N concurrent writers share one
    /// transaction and one fsync.
    pub fn submit<T, E, F, D>(&self, build: F, done: D)
    where
        F: FnOnce(&State, Index) -> Result<(Vec<Write>, T), E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        D: FnOnce(Result<Result<(Index, T), E>, StoreError>) + Send + 'static,
    {
        let out: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
        let out2 = out.clone();
        let req = Request {
            build: Box::new(move |state: &State, index: Index| {
                let (writes, r) = match build(state, index) {
                    Ok((writes, t)) => (writes, Ok(t)),
                    Err(e) => (Vec::new(), Err(e)),
                };
                if let Ok(mut o) = out.lock() {
                    *o = Some(r);
                }
                writes
            }),
            done: Box::new(move |r: Result<Index, StoreError>| {
                let value = out2.lock().ok().and_then(|mut o| o.take());
                done(r.and_then(|index| {
                    value
                        .map(|v| v.map(|t| (index, t)))
                        .ok_or(StoreError::Poisoned)
                }));
            }),
        };
        let mut q = self.lock_queue();
        if q.closed {
            drop(q);
            call_done(
                req.done,
                Err(StoreError::Closed {
                    why: "it is shutting down",
                }),
            );
            return;
        }
        q.requests.push(req);
        drop(q);
        self.queued.notify_one();
    }

    /// The builder thread: batch whatever is queued, build it on the
    /// pending state, hand it to the disk thread; until closed.
    fn build_loop(
        &self,
        durable: Arc<State>,
        to_disk: std::sync::mpsc::SyncSender<(Built, Vec<Done>)>,
    ) {
        let mut pending = durable;
        let mut epoch = 0u64;
        loop {
            let batch = {
                let mut q = self.lock_queue();
                while q.requests.is_empty() && !q.closed {
                    q = match self.queued.wait(q) {
                        Ok(q) => q,
                        Err(p) => p.into_inner(),
                    };
                }
                if q.requests.is_empty() {
                    return;
                }
                std::mem::take(&mut q.requests)
            };
            if self.broken.load(Ordering::Acquire) == epoch + 1 {
                // A batch of this epoch failed: what was built on it is
                // gone, and the durable state is where the next one starts
                // (every batch before the failed one was published, and
                // none after it).
                pending = self.snapshot();
                epoch += 1;
            }
            if self.fatal.load(Ordering::Acquire) {
                for r in batch {
                    call_done(r.done, Err(StoreError::Fatal));
                }
                continue;
            }
            // A panic in the event hook or in applying a write fails this
            // batch, not the builder.
            let (builds, dones): (Vec<Build>, Vec<Done>) =
                batch.into_iter().map(|r| (r.build, r.done)).unzip();
            let Ok(built) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.build(&pending, builds, epoch)
            })) else {
                tracing::error!("building a batch panicked; its writes are refused");
                for d in dones {
                    call_done(
                        d,
                        Err(StoreError::Refused {
                            why: "building the write panicked".into(),
                        }),
                    );
                }
                continue;
            };
            if built.outcome.is_ok() && !built.txn.ops.is_empty() {
                pending = Arc::new(built.next.clone());
            }
            if let Err(e) = to_disk.send((built, dones)) {
                for d in e.0.1 {
                    call_done(d, Err(StoreError::Poisoned));
                }
                return;
            }
        }
    }

    /// Run every request of a batch against the accumulating state.
    fn build(&self, base: &Arc<State>, builds: Vec<Build>, epoch: u64) -> Built {
        let index = base.index + 1;
        let mut next = (**base).clone();
        let mut txn = Txn::default();
        let mut outcome: Result<(), StoreError> = Ok(());
        let mut touched = crate::changes::Touched::default();
        for build in builds {
            // A panicking request writes nothing (its caller gets an
            // error); the others, and the builder thread, go on.
            let writes =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&next, index)))
                    .unwrap_or_default();
            if outcome.is_ok() {
                for w in writes {
                    if let Err(e) = apply(&mut txn, &mut next, w, index, &mut touched) {
                        outcome = Err(e);
                        break;
                    }
                }
            }
        }
        // The commit's events, derived from what it changed, join its
        // transaction.
        let mut events = Vec::new();
        if outcome.is_ok() && !txn.ops.is_empty() {
            match self
                .events
                .derive(base, &mut next, &touched, &mut txn, index)
            {
                Ok(e) => events = e,
                Err(e) => outcome = Err(e),
            }
        }
        // The backend numbers each transaction one above the last, and
        // this store is its only writer: the index is known now (the disk
        // thread checks it).
        next.index = index;
        Built {
            base_index: base.index,
            next,
            txn,
            events,
            outcome,
            epoch,
        }
    }

    /// The disk thread's part: commit a built batch to the backend and
    /// publish it; the outcome goes to each of its requests.
    fn write_built(&self, built: Built) -> Result<Index, BatchError> {
        let Built {
            base_index,
            next,
            txn,
            events,
            outcome,
            epoch,
        } = built;
        match outcome {
            Err(e) => Err(BatchError::Refused(e.to_string())),
            _ if self.broken.load(Ordering::Acquire) == epoch + 1 => Err(BatchError::Refused(
                "an earlier commit this write was built on failed".to_string(),
            )),
            Ok(()) if txn.ops.is_empty() => Ok(base_index),
            Ok(()) if self.fatal.load(Ordering::Acquire) => Err(BatchError::Fatal),
            Ok(()) => {
                let r = match self.store.txn(&txn) {
                    Ok(TxnOutcome::Committed { revision }) if revision != base_index + 1 => {
                        tracing::error!(
                            revision,
                            expected = base_index + 1,
                            "the store's backend revision moved under it"
                        );
                        self.fatal.store(true, Ordering::Release);
                        Err(BatchError::Fatal)
                    }
                    Ok(TxnOutcome::Committed { revision }) => {
                        // Before the state is published: whoever sees the
                        // new index finds its events in memory.
                        self.events.committed(events, next.events);
                        let mut cur = match self.current.write() {
                            Ok(c) => c,
                            Err(p) => p.into_inner(),
                        };
                        *cur = Arc::new(next);
                        Ok(revision)
                    }
                    // No compares are issued here: the builder thread
                    // serialises writers. A failure means another process
                    // wrote.
                    Ok(TxnOutcome::CompareFailed { key }) => Err(BatchError::Conflict(key)),
                    Err(e) => {
                        // A failed commit may still have landed (an IO
                        // error after the commit record was written): then
                        // memory and disk disagree until a reopen.
                        if !self.store.revision().is_ok_and(|r| r == base_index) {
                            tracing::error!(error = %e, "a failed commit left the backend's revision unknown or moved");
                            self.fatal.store(true, Ordering::Release);
                            return Err(BatchError::Fatal);
                        }
                        Err(BatchError::Failed(e.to_string()))
                    }
                };
                if r.is_err() {
                    // Batches built on this one must not be written.
                    self.broken.store(epoch + 1, Ordering::Release);
                }
                r
            }
        }
    }
}

/// Report to a caller; a panicking `done` does not take a store thread
/// with it.
fn call_done(d: Done, r: Result<Index, StoreError>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || d(r))).is_err() {
        tracing::error!("a write's completion callback panicked");
    }
}

/// How a batch failed, told to each of its writers (clonable: one result
/// for many callers).
#[derive(Debug, Clone)]
enum BatchError {
    Refused(String),
    Failed(String),
    Conflict(String),
    Fatal,
}

impl BatchError {
    fn into_store(self) -> StoreError {
        match self {
            BatchError::Refused(why) => StoreError::Refused { why },
            BatchError::Failed(message) => StoreError::Failed { message },
            BatchError::Conflict(key) => StoreError::Conflict { key },
            BatchError::Fatal => StoreError::Fatal,
        }
    }
}

/// Closes the queue and fails what is in it when the builder thread ends
/// (returns or unwinds).
struct CloseOnExit<'a>(&'a Inner);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let left = {
            let mut q = self.0.lock_queue();
            q.closed = true;
            std::mem::take(&mut q.requests)
        };
        for r in left {
            call_done(
                r.done,
                Err(StoreError::Closed {
                    why: "its writer stopped",
                }),
            );
        }
    }
}

impl Drop for StateStore {
    /// Commit what is queued, then stop the threads (the backend closes
    /// with them).
    fn drop(&mut self) {
        self.lock_queue().closed = true;
        self.queued.notify_all();
        let threads = std::mem::take(&mut self.threads);
        // Dropped on one of its own threads (a caller's last reference
        // went away in a build or a `done`): joining would wait for
        // ourselves; the threads end by themselves once the queue is
        // drained.
        let me = std::thread::current().id();
        if threads.iter().any(|t| t.thread().id() == me) {
            return;
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

impl StateStore {
    /// Write a fixed batch.
    pub fn commit(&self, writes: Vec<Write>) -> Result<Index, StoreError> {
        self.write::<(), std::convert::Infallible, _>(move |_, _| Ok((writes, ())))?
            .map(|(i, ())| i)
            .map_err(|e| match e {})
    }
}

/// Add one write to the transaction and to the next state. Lookups go to
/// `next`, which already holds the earlier writes of the batch.
fn apply(
    txn: &mut Txn,
    next: &mut State,
    w: Write,
    index: Index,
    touched: &mut crate::changes::Touched,
) -> Result<(), StoreError> {
    match w {
        Write::Job(mut job) => {
            let prev = next.job_versions.get(&(job.name.clone(), job.version));
            job.create_index = prev.map(|p| p.create_index).unwrap_or(index);
            job.modify_index = index;
            let key = job_key(&job.name, job.version);
            txn.ops.push(Op::Put {
                value: encode(&key, &job)?,
                key,
            });
            touched.job_versions.record(next.put_job(job));
        }
        Write::PurgeJob(name) => {
            for j in next.delete_job(&name) {
                txn.ops.push(Op::Delete {
                    key: job_key(&j.name, j.version),
                });
                touched.job_versions.record((Some(j), None));
            }
            // Its deployments go too: a job submitted again under the name
            // numbers its versions from 1, and an old deployment of the
            // same version would pass for the new one's (which then never
            // rolls out).
            let ids: Vec<String> = next
                .job_deployments(&name)
                .iter()
                .map(|d| d.id.clone())
                .collect();
            for id in ids {
                apply(txn, next, Write::DeleteDeployment(id), index, touched)?;
            }
        }
        Write::Alloc(mut alloc) => {
            let created = next.alloc(&alloc.id).map(|x| x.create_index);
            (alloc.create_index, alloc.modify_index) = (created.unwrap_or(index), index);
            put(
                txn,
                ordered_key(ALLOCS, alloc.create_index, &alloc.id),
                &alloc,
            )?;
            touched.allocs.record(next.put_alloc(alloc));
        }
        Write::DeleteAlloc(id) => {
            if let Some(a) = next.alloc(&id) {
                txn.ops.push(Op::Delete {
                    key: ordered_key(ALLOCS, a.create_index, &id),
                });
            }
            touched.allocs.record(next.delete_alloc(&id));
        }
        Write::Node(mut node) => {
            let created = next.nodes.get(node.id.as_str()).map(|x| x.create_index);
            (node.create_index, node.modify_index) = (created.unwrap_or(index), index);
            put(txn, format!("{NODES}{}", node.id), &node)?;
            touched.nodes.record(next.put_node(node));
        }
        Write::DeleteNode(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{NODES}{id}"),
            });
            touched.nodes.record(next.delete_node(&id));
        }
        Write::Eval(mut eval) => {
            let created = next.eval(&eval.id).map(|x| x.create_index);
            (eval.create_index, eval.modify_index) = (created.unwrap_or(index), index);
            put(txn, ordered_key(EVALS, eval.create_index, &eval.id), &eval)?;
            next.put_eval(eval);
        }
        Write::DeleteEval(id) => {
            if let Some(e) = next.eval(&id) {
                txn.ops.push(Op::Delete {
                    key: ordered_key(EVALS, e.create_index, &id),
                });
            }
            next.delete_eval(&id);
        }
        Write::Deployment(mut d) => {
            let created = next.deployment(&d.id).map(|x| x.create_index);
            (d.create_index, d.modify_index) = (created.unwrap_or(index), index);
            put(txn, ordered_key(DEPLOYMENTS, d.create_index, &d.id), &d)?;
            touched.deployments.record(next.put_deployment(d));
        }
        Write::DeleteDeployment(id) => {
            if let Some(d) = next.deployment(&id) {
                txn.ops.push(Op::Delete {
                    key: ordered_key(DEPLOYMENTS, d.create_index, &id),
                });
            }
            touched.deployments.record(next.delete_deployment(&id));
        }
        Write::Alert(mut a) => {
            let created = next.alerts.get(a.id.as_str()).map(|x| x.create_index);
            (a.create_index, a.modify_index) = (created.unwrap_or(index), index);
            put(txn, format!("{ALERTS}{}", a.id), &a)?;
            touched.alerts.record(next.put_alert(a));
        }
        Write::DeleteAlert(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{ALERTS}{id}"),
            });
            touched.alerts.record(next.delete_alert(&id));
        }
        Write::Volume(mut v) => {
            let created = next.volumes.get(v.id.as_str()).map(|x| x.create_index);
            (v.create_index, v.modify_index) = (created.unwrap_or(index), index);
            put(txn, format!("{VOLUMES}{}", v.id), &v)?;
            touched.volumes.record(next.put_volume(v));
        }
        Write::DeleteVolume(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{VOLUMES}{id}"),
            });
            touched.volumes.record(next.delete_volume(&id));
        }
        Write::PruneEvents { through } => {
            let span = &mut next.events;
            let through = through.min(span.last.saturating_sub(1));
            if span.first > 0 && through >= span.first {
                txn.ops.push(Op::LogPrune { through });
                span.first = through + 1;
            }
        }
    }
    Ok(())
}

/// Move a record stored under an old-format key to `key`.
fn rekey_if_old(txn: &mut Txn, kv: crate::kv::KeyValue, key: String) {
    if kv.key != key {
        txn.ops.push(Op::Delete { key: kv.key });
        txn.ops.push(Op::Put {
            key,
            value: kv.value,
        });
    }
}

/// Queue the put of an encoded record.
fn put<T: Serialize>(txn: &mut Txn, key: String, value: &T) -> Result<(), StoreError> {
    txn.ops.push(Op::Put {
        value: encode(&key, value)?,
        key,
    });
    Ok(())
}

/// The key of a record with a random id (allocations, evaluations,
/// deployments): its creation index first, so new records land together at
/// the end of the store's b-tree and a commit dirties a few pages instead
/// of one per record (random ids scatter them).
fn ordered_key(prefix: &str, create_index: Index, id: &str) -> String {
    format!("{prefix}{create_index:020}/{id}")
}

/// Versions are zero-padded so key order is version order.
fn job_key(name: &str, version: u64) -> String {
    format!("{JOBS}{name}/{version:020}")
}

pub(crate) fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
