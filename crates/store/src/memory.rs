//! An in-memory [`Store`] for the lowest test tiers and the scheduler
//! simulator's "no disk" baseline. Same semantics as the SQLite one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::StoreError;
use crate::kv::{Compare, KeyValue, Op, Store, Txn, TxnOutcome};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    kv: BTreeMap<String, KeyValue>,
    log: BTreeMap<u64, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn revision(&self) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .revision)
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(inner
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(inner.kv.get(key).cloned())
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError> {
        let mut inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        for Compare::ModRevision { key, revision } in &txn.compares {
            let found = inner.kv.get(key).map(|kv| kv.mod_revision).unwrap_or(0);
            if found != *revision {
                return Ok(TxnOutcome::CompareFailed { key: key.clone() });
            }
        }
        let rev = inner.revision + 1;
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let create = inner
                        .kv
                        .get(key)
                        .map(|kv| kv.create_revision)
                        .unwrap_or(rev);
                    inner.kv.insert(
                        key.clone(),
                        KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: rev,
                        },
                    );
                }
                Op::Delete { key } => {
                    inner.kv.remove(key);
                }
                Op::LogAppend { index, value } => {
                    inner.log.insert(*index, value.clone());
                }
                Op::LogPrune { through } => {
                    inner.log = inner.log.split_off(&through.saturating_add(1));
                }
            }
        }
        inner.revision = rev;
        Ok(TxnOutcome::Committed { revision: rev })
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(inner
            .log
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(i, v)| (*i, v.clone()))
            .collect())
    }

    fn log_bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let first = inner.log.keys().next().copied();
        let last = inner.log.keys().next_back().copied();
        Ok(first.zip(last))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_conformance() {
        crate::kv::tests::conformance(&super::MemoryStore::new());
    }
}
