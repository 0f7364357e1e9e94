//! corral's state.
//!
//! - [`kv`]: the [`Store`] trait, shaped like etcd (revisions, compare-and-
//!   swap transactions, an ordered log) so an etcd backend fits.
//! - [`sqlite`]: the single-server backend (WAL, `synchronous=FULL`,
//!   migrations).
//! - [`state`]: the in-memory indexed [`State`]; cloning it is O(1)
//!   (persistent maps), so the scheduler reads immutable snapshots.
//! - [`db`]: [`StateStore`], which writes typed records through a `Store`
//!   and then publishes the new `State`. It is the only writer: a builder
//!   thread batches queued requests on the pending state and a disk thread
//!   writes the batches in order, so building one overlaps writing another.
//! - [`events`]: the event log, derived from each commit by a hook and
//!   written in the same transaction; [`changes`] diffs two states for it.

pub mod changes;
pub mod db;
pub mod error;
pub mod events;
#[cfg(test)]
mod flaky;
pub mod idkey;
pub mod kv;
pub mod memory;
pub mod sqlite;
pub mod state;

pub use db::{StateStore, Write};
pub use error::StoreError;
pub use events::{EventHook, EventSpan};
pub use kv::{Compare, KeyValue, Op, Store, Txn, TxnOutcome};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use state::State;
