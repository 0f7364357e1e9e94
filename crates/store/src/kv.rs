//! The storage seam: a revisioned key-value store with compare-and-swap
//! transactions, which is what etcd offers. The SQLite backend implements
//! it for one server; an etcd backend can implement it for several without
//! touching the layers above. What changed is followed through the event
//! log (`Op::LogAppend`), committed with each change: a change feed
//! holding a second copy of every value doubled the bytes of each write.

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
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Append a record to the store's log (the event log) at `index`,
    /// which must be above every index in it (the event log uses the index
    /// of the last event the record holds). The log is kept apart from the
    /// key space: it is an ordered feed of its own. (An etcd backend keeps
    /// it under a key prefix.)
    LogAppend {
        index: u64,
        value: Vec<u8>,
    },
    /// Drop the log's records with an index up to and including `through`
    /// (retention).
    LogPrune {
        through: u64,
    },
}

impl Op {
    /// The key a key-space op writes (`None` for log ops).
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => Some(key),
            Op::LogAppend { .. } | Op::LogPrune { .. } => None,
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
    /// Log records with an index above `after`, oldest first, at most
    /// `limit`.
    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The first and last index in the log; `None` when it is empty.
    fn log_bounds(&self) -> Result<Option<(u64, u64)>, StoreError>;
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
        // The log: appends at increasing indexes, paged reads, pruning,
        // all transactional.
        assert_eq!(store.log_bounds().unwrap(), None);
        let r = store
            .txn(&Txn {
                compares: vec![],
                ops: (1..=5)
                    .map(|i| Op::LogAppend {
                        index: i,
                        value: vec![i as u8],
                    })
                    .chain([put("jobs/e", "6")])
                    .collect(),
            })
            .unwrap();
        assert_eq!(r, TxnOutcome::Committed { revision: 3 });
        assert_eq!(store.get("jobs/e").unwrap().unwrap().mod_revision, 3);
        assert_eq!(store.log_bounds().unwrap(), Some((1, 5)));
        let page = store.log_after(1, 2).unwrap();
        assert_eq!(page, vec![(2, vec![2]), (3, vec![3])]);
        assert!(store.log_after(5, 10).unwrap().is_empty());
        // A failed compare appends nothing.
        let refused = store
            .txn(&Txn {
                compares: vec![Compare::ModRevision {
                    key: "jobs/e".into(),
                    revision: 1,
                }],
                ops: vec![Op::LogAppend {
                    index: 6,
                    value: vec![6],
                }],
            })
            .unwrap();
        assert!(matches!(refused, TxnOutcome::CompareFailed { .. }));
        assert_eq!(store.log_bounds().unwrap(), Some((1, 5)));
        store
            .txn(&Txn {
                compares: vec![],
                ops: vec![Op::LogPrune { through: 3 }],
            })
            .unwrap();
        assert_eq!(store.log_bounds().unwrap(), Some((4, 5)));
        assert_eq!(store.log_after(0, 10).unwrap()[0].0, 4);
    }
}
