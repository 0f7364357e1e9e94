//! [`StateStore`]: typed writes made durable through a [`Store`], then
//! published as a new immutable [`State`]. All writes pass through one
//! mutex, so the index is decided here and every write sees the previous
//! one. Callers decide ids and timestamps before calling (deterministic
//! writes); the store only stamps the index.

use std::sync::{Arc, Mutex, RwLock};

use corral_types::{Allocation, Evaluation, Index, Job, Node};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kv::{Op, Store, Txn, TxnOutcome};
use crate::{State, StoreError};

const JOBS: &str = "jobs/";
const ALLOCS: &str = "allocs/";
const NODES: &str = "nodes/";
const EVALS: &str = "evals/";

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
}

pub struct StateStore {
    store: Box<dyn Store>,
    current: RwLock<Arc<State>>,
    writer: Mutex<()>,
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
        for kv in store.range(ALLOCS)? {
            state.put_alloc(decode(&kv.key, &kv.value)?);
        }
        for kv in store.range(NODES)? {
            state.put_node(decode(&kv.key, &kv.value)?);
        }
        for kv in store.range(EVALS)? {
            state.put_eval(decode(&kv.key, &kv.value)?);
        }
        Ok(StateStore {
            store,
            current: RwLock::new(Arc::new(state)),
            writer: Mutex::new(()),
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
    /// writer lock with the state as of the last commit and the index this
    /// commit will get; it returns the writes and a value for the caller
    /// (or an error, and nothing is written). Returns the new index (the
    /// current one if `build` produced no writes) and that value.
    pub fn write<T, E, F>(&self, build: F) -> Result<Result<(Index, T), E>, StoreError>
    where
        F: FnOnce(&State, Index) -> Result<(Vec<Write>, T), E>,
    {
        let _guard = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let base = self.snapshot();
        let index = base.index + 1;
        let (writes, out) = match build(&base, index) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        if writes.is_empty() {
            return Ok(Ok((base.index, out)));
        }
        let mut txn = Txn::default();
        let mut next = (*base).clone();
        for w in writes {
            apply(&mut txn, &mut next, &base, w, index)?;
        }
        match self.store.txn(&txn)? {
            TxnOutcome::Committed { revision } => {
                next.index = revision;
                let mut cur = match self.current.write() {
                    Ok(c) => c,
                    Err(p) => p.into_inner(),
                };
                *cur = Arc::new(next);
                Ok(Ok((revision, out)))
            }
            // No compares are issued here: the writer lock already
            // serialises writers. A failure means another process wrote.
            TxnOutcome::CompareFailed { key } => Err(StoreError::Conflict { key }),
        }
    }

    /// Write a fixed batch.
    pub fn commit(&self, writes: Vec<Write>) -> Result<Index, StoreError> {
        self.write::<(), std::convert::Infallible, _>(|_, _| Ok((writes, ())))?
            .map(|(i, ())| i)
            .map_err(|e| match e {})
    }
}

fn apply(
    txn: &mut Txn,
    next: &mut State,
    base: &State,
    w: Write,
    index: Index,
) -> Result<(), StoreError> {
    match w {
        Write::Job(mut job) => {
            let prev = base.job_versions.get(&(job.name.clone(), job.version));
            job.create_index = prev.map(|p| p.create_index).unwrap_or(index);
            job.modify_index = index;
            let key = job_key(&job.name, job.version);
            txn.ops.push(Op::Put {
                value: encode(&key, &job)?,
                key,
            });
            next.put_job(job);
        }
        Write::PurgeJob(name) => {
            for j in base.job_versions(&name) {
                txn.ops.push(Op::Delete {
                    key: job_key(&j.name, j.version),
                });
            }
            next.delete_job(&name);
        }
        Write::Alloc(mut alloc) => {
            alloc.create_index = base
                .allocs
                .get(&alloc.id)
                .map(|a| a.create_index)
                .unwrap_or(index);
            alloc.modify_index = index;
            let key = format!("{ALLOCS}{}", alloc.id);
            txn.ops.push(Op::Put {
                value: encode(&key, &alloc)?,
                key,
            });
            next.put_alloc(alloc);
        }
        Write::DeleteAlloc(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{ALLOCS}{id}"),
            });
            next.delete_alloc(&id);
        }
        Write::Node(mut node) => {
            node.create_index = base
                .nodes
                .get(&node.id)
                .map(|n| n.create_index)
                .unwrap_or(index);
            node.modify_index = index;
            let key = format!("{NODES}{}", node.id);
            txn.ops.push(Op::Put {
                value: encode(&key, &node)?,
                key,
            });
            next.put_node(node);
        }
        Write::DeleteNode(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{NODES}{id}"),
            });
            next.delete_node(&id);
        }
        Write::Eval(mut eval) => {
            eval.create_index = base
                .evals
                .get(&eval.id)
                .map(|e| e.create_index)
                .unwrap_or(index);
            eval.modify_index = index;
            let key = format!("{EVALS}{}", eval.id);
            txn.ops.push(Op::Put {
                value: encode(&key, &eval)?,
                key,
            });
            next.put_eval(eval);
        }
        Write::DeleteEval(id) => {
            txn.ops.push(Op::Delete {
                key: format!("{EVALS}{id}"),
            });
            next.delete_eval(&id);
        }
    }
    Ok(())
}

/// Versions are zero-padded so key order is version order.
fn job_key(name: &str, version: u64) -> String {
    format!("{JOBS}{name}/{version:020}")
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
