//! A test backend that fails on demand: while `fail` is set, or once
//! through a gate that blocks the transaction until the test lets it fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::kv::{KeyValue, Store, Txn, TxnOutcome};
use crate::{MemoryStore, StoreError};

#[derive(Default)]
pub(crate) struct Flaky {
    pub inner: Arc<MemoryStore>,
    pub fail: Arc<AtomicBool>,
    /// The next transaction says so on the sender, waits on the receiver,
    /// then fails.
    pub gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
    /// The next transaction is written, then reported as failed (an IO
    /// error after the commit record).
    pub land_then_fail: Arc<AtomicBool>,
    /// The next transaction panics.
    pub panic_next: Arc<AtomicBool>,
}

fn on_fire() -> StoreError {
    StoreError::Failed {
        message: "disk on fire".into(),
    }
}

impl Store for Flaky {
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.range(prefix)
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key)
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, StoreError> {
        let gate = self.gate.lock().map_err(|_| StoreError::Poisoned)?.take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.recv();
            return Err(on_fire());
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(on_fire());
        }
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("the backend panics");
        }
        if self.land_then_fail.swap(false, Ordering::SeqCst) {
            self.inner.txn(txn)?;
            return Err(on_fire());
        }
        self.inner.txn(txn)
    }
    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.log_after(after, limit)
    }
    fn log_bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        self.inner.log_bounds()
    }
}
