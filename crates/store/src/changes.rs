//! What a commit changed, record by record. As the writer applies each
//! write it keeps the record it replaced and the one it stored
//! ([`Touched`]); [`Diff`] hands those pairs to the event hook. No map is
//! searched or scanned for it: the cost is a few pointer copies per
//! write, whatever the size of the state.
//!
//! (Not `imbl::OrdMap::diff`: in imbl 6.1.0 it skips the first entry of a
//! leaf that follows a shared one, and so misses some changes.)

use std::collections::HashMap;
use std::sync::Arc;

use corral_types::{Alert, Allocation, Deployment, Job, Node, Volume};

use crate::State;
use crate::state::Replaced;

/// One record's change between an older and a newer state.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, T> {
    Added(&'a T),
    Removed(&'a T),
    Updated { old: &'a T, new: &'a T },
}

/// The records of one kind a commit wrote: (before the commit, after it),
/// in write order, one entry per record.
pub(crate) struct Written<T> {
    entries: Vec<Replaced<T>>,
    /// Entry by the address of the record it stored, so a second write of
    /// the same record in the batch (it replaces that one) updates the
    /// entry. The entry holds the record, so the address stays unique.
    by_stored: HashMap<usize, usize>,
}

impl<T> Default for Written<T> {
    fn default() -> Self {
        Written {
            entries: Vec::new(),
            by_stored: HashMap::new(),
        }
    }
}

fn addr<T>(a: &Arc<T>) -> usize {
    Arc::as_ptr(a) as usize
}

impl<T> Written<T> {
    pub(crate) fn record(&mut self, (old, new): Replaced<T>) {
        let earlier = old.as_ref().and_then(|o| self.by_stored.remove(&addr(o)));
        let i = match earlier {
            Some(i) => {
                self.entries[i].1 = new.clone();
                i
            }
            None => {
                self.entries.push((old, new.clone()));
                self.entries.len() - 1
            }
        };
        if let Some(n) = &new {
            self.by_stored.insert(addr(n), i);
        }
    }

    fn changes(&self) -> impl Iterator<Item = Change<'_, T>> + '_
    where
        T: PartialEq,
    {
        self.entries.iter().filter_map(|(o, n)| match (o, n) {
            (None, Some(n)) => Some(Change::Added(n.as_ref())),
            (Some(o), None) => Some(Change::Removed(o.as_ref())),
            (Some(o), Some(n)) if !Arc::ptr_eq(o, n) && o != n => Some(Change::Updated {
                old: o.as_ref(),
                new: n.as_ref(),
            }),
            _ => None,
        })
    }
}

/// The records a commit wrote (filled by the writer).
#[derive(Default)]
pub struct Touched {
    pub(crate) allocs: Written<Allocation>,
    pub(crate) job_versions: Written<Job>,
    pub(crate) nodes: Written<Node>,
    pub(crate) deployments: Written<Deployment>,
    pub(crate) alerts: Written<Alert>,
    pub(crate) volumes: Written<Volume>,
}

/// A commit: the state before, the state after, what it wrote. Each
/// iterator yields the records that really differ, in write order.
pub struct Diff<'a> {
    pub before: &'a State,
    pub after: &'a State,
    pub(crate) touched: &'a Touched,
}

impl<'a> Diff<'a> {
    pub fn allocs(&self) -> impl Iterator<Item = Change<'a, Allocation>> + 'a {
        self.touched.allocs.changes()
    }

    /// Job versions added, removed (purge) or changed (`stopped`,
    /// `stable`).
    pub fn job_versions(&self) -> impl Iterator<Item = Change<'a, Job>> + 'a {
        self.touched.job_versions.changes()
    }

    pub fn nodes(&self) -> impl Iterator<Item = Change<'a, Node>> + 'a {
        self.touched.nodes.changes()
    }

    pub fn deployments(&self) -> impl Iterator<Item = Change<'a, Deployment>> + 'a {
        self.touched.deployments.changes()
    }

    pub fn alerts(&self) -> impl Iterator<Item = Change<'a, Alert>> + 'a {
        self.touched.alerts.changes()
    }

    pub fn volumes(&self) -> impl Iterator<Item = Change<'a, Volume>> + 'a {
        self.touched.volumes.changes()
    }
}
