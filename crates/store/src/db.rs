//! [`StateStore`]: typed writes made durable through a [`Store`], then
//! published as a new immutable [`State`]. All writes pass through one
//! mutex, so the index is decided here and every write sees the previous
//! one. Callers decide ids and timestamps before calling (deterministic
//! writes); the store only stamps the index.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use corral_types::{Alert, Allocation, Deployment, Evaluation, Index, Job, Node};
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
    /// Delete the events up to this index (retention; a commit's events
    /// go together, so a few older ones may stay with the first commit
    /// kept); the newest event is always kept.
    PruneEvents {
        through: u64,
    },
}

pub struct StateStore {
    store: Box<dyn Store>,
    /// The latest durable state: what readers see.
    current: RwLock<Arc<State>>,
    /// Stage one of a commit (building a batch on the pending state) holds
    /// this; the pending state includes batches still being written.
    writer: Mutex<Pending>,
    /// Stage two (the backend's transaction, then publishing) holds this.
    /// A batch takes it before it lets go of `writer`, so batches reach the
    /// disk in the order they were built, and the next batch is built
    /// while the previous one is written: the CPU work of one overlaps the
    /// IO of the other (Nomad's plan applier pipelines the same way).
    disk: Mutex<()>,
    /// The epoch whose batches must fail (one of them failed to commit, and
    /// the ones after were built on it), plus one; 0 when none.
    broken: AtomicU64,
    queue: Mutex<Vec<Request>>,
    pub(crate) events: crate::events::EventLog,
}

/// The state batches are built on, and its epoch (which moves on when a
/// failed commit throws the pending state away).
struct Pending {
    state: Arc<State>,
    epoch: u64,
}

type Build = Box<dyn FnOnce(&State, Index) -> Vec<Write> + Send>;

/// One caller's part of a group commit.
struct Request {
    build: Build,
    done: Arc<Done>,
}

/// Where a request's outcome arrives.
#[derive(Default)]
struct Done {
    slot: Mutex<Option<Result<Index, StoreError>>>,
    ready: Condvar,
}

impl Done {
    fn set(&self, r: Result<Index, StoreError>) {
        let mut slot = match self.slot.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        *slot = Some(r);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Index, StoreError> {
        let mut slot = self.slot.lock().map_err(|_| StoreError::Poisoned)?;
        loop {
            if let Some(r) = slot.take() {
                return r;
            }
            slot = self.ready.wait(slot).map_err(|_| StoreError::Poisoned)?;
        }
    }
}

/// A batch built and waiting for the backend.
struct Built {
    base_index: Index,
    next: State,
    txn: Txn,
    events: Vec<Arc<corral_types::Event>>,
    outcome: Result<(), StoreError>,
    dones: Vec<Arc<Done>>,
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
        let events = crate::events::EventLog::default();
        state.events = events.load(store.as_ref())?;
        let state = Arc::new(state);
        Ok(StateStore {
            store,
            current: RwLock::new(state.clone()),
            writer: Mutex::new(Pending { state, epoch: 0 }),
            disk: Mutex::new(()),
            broken: AtomicU64::new(0),
            queue: Mutex::new(Vec::new()),
            events,
        })
    }

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

    /// Commit a batch built from the latest state. `build` runs under the
    /// writer lock with the state as of the last commit (plus the writes of
    /// any request committed together with it, and of batches built before
    /// it that are still being written) and the index this commit will get;
    /// it returns the writes and a value for the caller (or an error, and
    /// nothing of it is written). Returns the new index (the current one if
    /// nothing was written) and that value, once the commit is durable.
    ///
    /// Group commit: concurrent callers queue their requests, and whoever
    /// holds the writer lock commits every queued request in one
    /// transaction, so N concurrent writers share one fsync.
    pub fn write<T, E, F>(&self, build: F) -> Result<Result<(Index, T), E>, StoreError>
    where
        F: FnOnce(&State, Index) -> Result<(Vec<Write>, T), E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let out: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(Done::default());
        {
            let out = out.clone();
            let req = Request {
                build: Box::new(
                    move |state: &State, index: Index| match build(state, index) {
                        Ok((writes, t)) => {
                            if let Ok(mut o) = out.lock() {
                                *o = Some(Ok(t));
                            }
                            writes
                        }
                        Err(e) => {
                            if let Ok(mut o) = out.lock() {
                                *o = Some(Err(e));
                            }
                            Vec::new()
                        }
                    },
                ),
                done: done.clone(),
            };
            self.queue
                .lock()
                .map_err(|_| StoreError::Poisoned)?
                .push(req);
        }
        self.commit_queued()?;
        // Committed by this caller or by whoever took the request first.
        let index = done.wait()?;
        let result = out
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .take()
            .ok_or(StoreError::Poisoned)?;
        Ok(result.map(|t| (index, t)))
    }

    /// Build whatever is queued (stage one), then write it (stage two).
    fn commit_queued(&self) -> Result<(), StoreError> {
        let mut pending = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let batch = std::mem::take(&mut *self.queue.lock().map_err(|_| StoreError::Poisoned)?);
        if batch.is_empty() {
            // Another caller took this one's request.
            return Ok(());
        }
        if self.broken.load(Ordering::Acquire) == pending.epoch + 1 {
            // A batch of this epoch failed: what was built on it is gone,
            // and the durable state is where the next batch starts.
            pending.state = self.snapshot();
            pending.epoch += 1;
        }
        let built = self.build(&pending.state, batch, pending.epoch);
        if built.outcome.is_ok() && !built.txn.ops.is_empty() {
            // The backend numbers each transaction one above the last, and
            // this store is its only writer: the batch's index is known.
            let mut next = built.next.clone();
            next.index = built.base_index + 1;
            pending.state = Arc::new(next);
        }
        // Take the disk before letting the next batch be built: batches
        // are written in the order they were built.
        let disk = self.disk.lock().map_err(|_| StoreError::Poisoned)?;
        drop(pending);
        self.write_built(built);
        drop(disk);
        Ok(())
    }

    /// Run every request of a batch against the accumulating state.
    fn build(&self, base: &Arc<State>, batch: Vec<Request>, epoch: u64) -> Built {
        let index = base.index + 1;
        let mut next = (**base).clone();
        let mut txn = Txn::default();
        let mut outcome: Result<(), StoreError> = Ok(());
        let mut dones = Vec::with_capacity(batch.len());
        let mut touched = crate::changes::Touched::default();
        for req in batch {
            let writes = (req.build)(&next, index);
            if outcome.is_ok() {
                for w in writes {
                    if let Err(e) = apply(&mut txn, &mut next, w, index, &mut touched) {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            dones.push(req.done);
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
        Built {
            base_index: base.index,
            next,
            txn,
            events,
            outcome,
            dones,
            epoch,
        }
    }

    /// Stage two: commit a built batch to the backend and publish it;
    /// report to each request.
    fn write_built(&self, built: Built) {
        let Built {
            base_index,
            mut next,
            txn,
            events,
            outcome,
            dones,
            epoch,
        } = built;
        let result: Result<Index, String> = match outcome {
            Err(e) => Err(e.to_string()),
            _ if self.broken.load(Ordering::Acquire) == epoch + 1 => {
                Err("an earlier commit this write was built on failed; try again".to_string())
            }
            Ok(()) if txn.ops.is_empty() => Ok(base_index),
            Ok(()) => {
                let r = match self.store.txn(&txn) {
                    Ok(TxnOutcome::Committed { revision }) => {
                        next.index = revision;
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
                    // No compares are issued here: the writer lock
                    // serialises writers. A failure means another process
                    // wrote.
                    Ok(TxnOutcome::CompareFailed { key }) => {
                        Err(StoreError::Conflict { key }.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                if r.is_err() {
                    // Batches built on this one must not be written.
                    self.broken.store(epoch + 1, Ordering::Release);
                }
                r
            }
        };
        for d in dones {
            d.set(
                result
                    .clone()
                    .map_err(|message| StoreError::Batch { message }),
            );
        }
    }

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
        }
        Write::Alloc(mut alloc) => {
            let created = next.allocs.get(alloc.id.as_str()).map(|x| x.create_index);
            (alloc.create_index, alloc.modify_index) = (created.unwrap_or(index), index);
            put(
                txn,
                ordered_key(ALLOCS, alloc.create_index, &alloc.id),
                &alloc,
            )?;
            touched.allocs.record(next.put_alloc(alloc));
        }
        Write::DeleteAlloc(id) => {
            if let Some(a) = next.allocs.get(id.as_str()) {
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
            let created = next.evals.get(eval.id.as_str()).map(|x| x.create_index);
            (eval.create_index, eval.modify_index) = (created.unwrap_or(index), index);
            put(txn, ordered_key(EVALS, eval.create_index, &eval.id), &eval)?;
            next.put_eval(eval);
        }
        Write::DeleteEval(id) => {
            if let Some(e) = next.evals.get(id.as_str()) {
                txn.ops.push(Op::Delete {
                    key: ordered_key(EVALS, e.create_index, &id),
                });
            }
            next.delete_eval(&id);
        }
        Write::Deployment(mut d) => {
            let created = next.deployments.get(d.id.as_str()).map(|x| x.create_index);
            (d.create_index, d.modify_index) = (created.unwrap_or(index), index);
            put(txn, ordered_key(DEPLOYMENTS, d.create_index, &d.id), &d)?;
            touched.deployments.record(next.put_deployment(d));
        }
        Write::DeleteDeployment(id) => {
            if let Some(d) = next.deployments.get(id.as_str()) {
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
