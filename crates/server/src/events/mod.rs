//! Events: every state change, derived from the commit that made it.
//!
//! [`hook`] is installed in the store when the server starts; the store
//! calls it inside its writer with each commit's diff (the state before
//! and after, and which records were written) and writes the events it
//! returns in the same transaction, numbered by a
//! gapless sequence of their own (see `corral_store::events`). Because the
//! events come from the diff of the two states, no code path that changes
//! state can forget one. [`diff`] is pure and costs what the commit
//! changed: it looks only at the records the commit wrote.
//!
//! Readers: `GET /v1/events` (server-sent events, filters, resume from an
//! index), the alert engine (`crate::alerts`); `maintenance` prunes them.

pub mod diff;

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_store::EventHook;
use corral_types::{Event, EventTopic};

pub use diff::diff;

/// The hook the server installs: [`diff`] at the wall clock's time.
pub fn hook() -> EventHook {
    Arc::new(|d| diff(d, crate::core::now_ms()))
}

/// Which events a reader wants: any of `topics` (all when empty) and, when
/// `jobs` is not empty, about one of those jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub topics: BTreeSet<EventTopic>,
    pub jobs: BTreeSet<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.topics.is_empty() || self.topics.contains(&e.topic))
            && (self.jobs.is_empty() || e.job.as_ref().is_some_and(|j| self.jobs.contains(j)))
    }

    /// Topics as given in a query (`?topic=a,b&topic=c`).
    pub fn add_topics(&mut self, list: &str) -> Result<(), String> {
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let topic = EventTopic::parse(t).ok_or_else(|| {
                format!(
                    "unknown event topic {t:?}: use {}",
                    EventTopic::ALL.map(|t| t.as_str()).join(", ")
                )
            })?;
            self.topics.insert(topic);
        }
        Ok(())
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
