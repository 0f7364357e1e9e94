//! The event log. Events are derived from each commit by a hook the
//! server installs ([`StateStore::set_event_hook`]): it gets the commit's
//! [`Diff`] (the state before and after, and the records written) and
//! returns what happened. The
//! store numbers them with a gapless sequence of their own (1, 2, 3, ...)
//! and appends them to the backend's log ([`Op::LogAppend`]: apart from
//! the key space) in the **same transaction** as the
//! change, so an event exists exactly when its change does, and no code
//! path can forget one. A commit's events go in one log record (a JSON
//! array) keyed by the index of its last event: a plan placing a thousand
//! allocations writes one row, not a thousand.
//!
//! The newest [`RECENT_EVENTS`] stay in memory for live readers; older
//! ones are read from the backend. Retention is the caller's:
//! [`Write::PruneEvents`](crate::Write::PruneEvents) deletes a prefix of
//! the log (never the newest event, so the sequence survives a restart).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use corral_types::{Event, Index, UnixMillis};

use crate::changes::{Diff, Touched};
use crate::kv::{Op, Txn};
use crate::{State, StateStore, StoreError};

/// How many of the newest events are kept in memory.
pub const RECENT_EVENTS: usize = 8192;

/// Derives a commit's events from the state before and after it. Runs
/// inside the store's writer: it must be quick and proportional to what
/// changed (diff the persistent maps, never scan them).
pub type EventHook = Arc<dyn Fn(&Diff<'_>) -> Vec<Event> + Send + Sync>;

/// Which events the store holds: `first..=last`, both 0 when there has
/// never been one. The newest is never pruned, so `last` only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSpan {
    pub first: u64,
    pub last: u64,
}

impl EventSpan {
    pub fn is_empty(&self) -> bool {
        self.last == 0
    }

    pub fn len(&self) -> u64 {
        if self.last == 0 {
            0
        } else {
            self.last + 1 - self.first
        }
    }
}

/// The hook and the in-memory tail of the log.
#[derive(Default)]
pub(crate) struct EventLog {
    hook: RwLock<Option<EventHook>>,
    recent: RwLock<Recent>,
}

/// `events[i].index == start + i`.
#[derive(Default)]
struct Recent {
    start: u64,
    events: VecDeque<Arc<Event>>,
}

/// How decode errors name a log record.
fn record_key(index: u64) -> String {
    format!("events up to {index}")
}

/// The events of the backend's log records after `after`, oldest first,
/// at most `limit`.
fn read_log(
    store: &dyn crate::Store,
    after: u64,
    limit: usize,
) -> Result<Vec<Arc<Event>>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = after;
    while out.len() < limit {
        // A record holds one commit's events; ask for a few at a time.
        let records = store.log_after(cursor, (limit - out.len()).clamp(1, 64))?;
        let Some((last, _)) = records.last() else {
            break;
        };
        cursor = *last;
        for (i, v) in &records {
            let events: Vec<Event> = crate::db::decode(&record_key(*i), v)?;
            out.extend(events.into_iter().filter(|e| e.index > after).map(Arc::new));
        }
    }
    out.truncate(limit);
    Ok(out)
}

impl EventLog {
    /// Where the log stands in a freshly opened store.
    pub(crate) fn load(&self, store: &dyn crate::Store) -> Result<EventSpan, StoreError> {
        let last = store.log_bounds()?.map(|(_, last)| last).unwrap_or(0);
        let first = read_log(store, 0, 1)?.first().map(|e| e.index).unwrap_or(0);
        if let Ok(mut r) = self.recent.write() {
            r.start = last + 1;
            r.events.clear();
        }
        Ok(EventSpan { first, last })
    }

    fn hook(&self) -> Option<EventHook> {
        match self.hook.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Run the hook over a batch and add its events to the transaction,
    /// numbered after `next`'s span (which moves along).
    pub(crate) fn derive(
        &self,
        before: &State,
        next: &mut State,
        touched: &Touched,
        txn: &mut Txn,
        index: Index,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let Some(hook) = self.hook() else {
            return Ok(Vec::new());
        };
        let drafts = hook(&Diff {
            before,
            after: next,
            touched,
        });
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let span = &mut next.events;
        let mut events = drafts;
        for e in &mut events {
            span.last += 1;
            if span.first == 0 {
                span.first = span.last;
            }
            e.index = span.last;
            e.state_index = index;
        }
        txn.ops.push(Op::LogAppend {
            index: span.last,
            value: crate::db::encode(&record_key(span.last), &events)?,
        });
        Ok(events.into_iter().map(Arc::new).collect())
    }

    /// After a commit: keep its events in memory, drop what was pruned.
    pub(crate) fn committed(&self, events: Vec<Arc<Event>>, span: EventSpan) {
        let mut r = match self.recent.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        for e in events {
            if r.events.is_empty() {
                r.start = e.index;
            }
            r.events.push_back(e);
        }
        while r.events.len() > RECENT_EVENTS
            || r.events.front().is_some_and(|e| e.index < span.first)
        {
            r.events.pop_front();
            r.start += 1;
        }
    }

    /// Events after `after` from memory, when memory reaches back that far.
    fn recent_after(&self, after: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let r = match self.recent.read() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if after + 1 < r.start {
            return None;
        }
        let skip = (after + 1 - r.start) as usize;
        if skip >= r.events.len() {
            return Some(Vec::new());
        }
        let end = (skip + limit).min(r.events.len());
        Some(r.events.range(skip..end).cloned().collect())
    }
}

impl StateStore {
    /// Install the function that derives events from each commit.
    pub fn set_event_hook(&self, hook: EventHook) {
        let mut h = match self.events.hook.write() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        *h = Some(hook);
    }

    /// Up to `limit` events with an index above `after`, oldest first.
    /// Gapless while they are retained: when `after + 1` was pruned the
    /// answer starts at the oldest retained event (the caller sees the
    /// jump in `index`). Reads the backend when memory does not reach
    /// back far enough (blocking: call it off the async runtime then).
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Arc<Event>>, StoreError> {
        if let Some(v) = self.events.recent_after(after, limit) {
            return Ok(v);
        }
        read_log(self.backend(), after, limit)
    }

    /// Whether [`Self::events_after`] answers from memory (no IO).
    pub fn events_in_memory(&self, after: u64) -> bool {
        self.events.recent_after(after, 0).is_some()
    }

    /// The newest `n` events, oldest first.
    pub fn recent_events(&self, n: usize) -> Result<Vec<Arc<Event>>, StoreError> {
        let span = self.snapshot().event_span();
        let after = span.last.saturating_sub(n as u64);
        self.events_after(after, n)
    }

    /// The index of the first retained event at or after `time` (by
    /// binary search over the log; events are written in time order), or
    /// one past the newest when every event is older.
    pub fn event_index_at(&self, time: UnixMillis) -> Result<u64, StoreError> {
        let span = self.snapshot().event_span();
        if span.is_empty() {
            return Ok(1);
        }
        let (mut lo, mut hi) = (span.first, span.last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = match self.events_after(mid - 1, 1)?.first() {
                Some(e) if e.index == mid => e.time,
                // Pruned under us: treat as old.
                _ => 0,
            };
            if t < time {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests;
