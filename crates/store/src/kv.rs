//! The storage seam: a revisioned key-value store with compare-and-swap
//! transactions and a change feed, which is exactly what etcd offers. The
//! SQLite backend implements it for one server; an etcd backend can
//! implement it for several without touching the layers above.

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// A condition a transaction needs to hold (etcd `Compare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last modification is exactly this revision; 0 means the key
    /// must not exist.
    ModRevision { key: String, revision: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// All compares hold => all ops apply at one new revision; otherwise
/// nothing applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed {
        revision: u64,
    },
    /// The first compare that failed.
    CompareFailed {
        key: String,
    },
}

/// One change in the feed; `value: None` is a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: u64,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A revisioned key-value store. Calls block: the layer above runs them on
/// its single writer thread (or `spawn_blocking`).
pub trait Store: Send + Sync {
    /// The revision of the last committed transaction (0 when empty).
    fn revision(&self) -> Result<u64, StoreError>;
    /// Every key with this prefix, in key order.
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError>;
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Apply a transaction atomically and durably (acknowledged = on disk).
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError>;
    /// Changes after `revision` (exclusive), oldest first, at most `limit`.
    /// Watchers poll this from the last revision they saw (etcd's watch
    /// from a revision).
    fn changes_since(&self, revision: u64, limit: usize) -> Result<Vec<WatchEvent>, StoreError>;
    /// Forget changes at or below `revision` (etcd compaction).
    fn compact(&self, revision: u64) -> Result<(), StoreError>;
    /// Keys with this prefix after `after` (exclusive), in key order, at
    /// most `limit` (etcd's range with a start key and a limit). Backends
    /// should answer without reading the whole prefix.
    fn range_after(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self
            .range(prefix)?
            .into_iter()
            .filter(|kv| kv.key.as_str() > after)
            .take(limit)
            .collect())
    }
    /// The last key with this prefix (etcd's range sorted descending,
    /// limit 1).
    fn last(&self, prefix: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.range(prefix)?.pop())
    }
}

/// Behaviour every backend must show; each backend's tests call this.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    pub(crate) fn conformance(store: &dyn Store) {
        assert_eq!(store.revision().unwrap(), 0);
        let r1 = store
            .txn(&Txn {
                compares: vec![Compare::ModRevision {
                    key: "jobs/a".into(),
                    revision: 0,
                }],
                ops: vec![put("jobs/a", "1"), put("jobs/b", "2"), put("nodes/x", "n")],
            })
            .unwrap();
        assert_eq!(r1, TxnOutcome::Committed { revision: 1 });
        // Create-if-absent fails the second time and changes nothing.
        let again = store
            .txn(&Txn {
                compares: vec![Compare::ModRevision {
                    key: "jobs/a".into(),
                    revision: 0,
                }],
                ops: vec![put("jobs/a", "X")],
            })
            .unwrap();
        assert_eq!(
            again,
            TxnOutcome::CompareFailed {
                key: "jobs/a".into()
            }
        );
        assert_eq!(store.get("jobs/a").unwrap().unwrap().value, b"1");
        assert_eq!(store.revision().unwrap(), 1);
        // Compare-and-swap on the right revision succeeds.
        let r2 = store
            .txn(&Txn {
                compares: vec![Compare::ModRevision {
                    key: "jobs/a".into(),
                    revision: 1,
                }],
                ops: vec![
                    put("jobs/a", "3"),
                    Op::Delete {
                        key: "jobs/b".into(),
                    },
                ],
            })
            .unwrap();
        assert_eq!(r2, TxnOutcome::Committed { revision: 2 });
        let a = store.get("jobs/a").unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision), (1, 2));
        let jobs: Vec<String> = store
            .range("jobs/")
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(jobs, vec!["jobs/a".to_string()]);
        // The change feed replays from any revision, in order.
        let changes = store.changes_since(1, 100).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].revision, 2);
        assert_eq!(changes[1].value, None);
        assert_eq!(store.changes_since(0, 2).unwrap().len(), 2);
        store.compact(1).unwrap();
        assert_eq!(store.changes_since(0, 100).unwrap().len(), 2);
        // Paged reads of a prefix, and its last key.
        store
            .txn(&Txn {
                compares: vec![],
                ops: vec![put("jobs/c", "4"), put("jobs/d", "5"), put("k", "x")],
            })
            .unwrap();
        let page: Vec<String> = store
            .range_after("jobs/", "jobs/a", 2)
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(page, vec!["jobs/c".to_string(), "jobs/d".to_string()]);
        assert!(store.range_after("jobs/", "jobs/d", 10).unwrap().is_empty());
        assert_eq!(store.last("jobs/").unwrap().unwrap().key, "jobs/d");
        assert_eq!(store.last("none/").unwrap(), None);
    }
}
