//! What a commit changed, record by record. The writer notes the key of
//! every record each write touches ([`Touched`]); [`Diff`] compares those
//! records between the state before and after the commit. The cost
//! follows the size of the change, not of the state.
//!
//! (Not `imbl::OrdMap::diff`: in imbl 6.1.0 it skips the first entry of a
//! leaf that follows a shared one, and so misses some changes.)

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_types::{Alert, Allocation, Deployment, Job, Node};
use imbl::OrdMap;

use crate::State;

/// One record's change between an older and a newer state.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, T> {
    Added(&'a T),
    Removed(&'a T),
    Updated { old: &'a T, new: &'a T },
}

/// The keys of the records a commit wrote (filled by the writer).
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub(crate) allocs: BTreeSet<String>,
    pub(crate) job_versions: BTreeSet<(String, u64)>,
    pub(crate) nodes: BTreeSet<String>,
    pub(crate) deployments: BTreeSet<String>,
    pub(crate) alerts: BTreeSet<String>,
}

/// A commit: the state before, the state after, what it wrote. Each
/// iterator yields the records that really differ, in key order.
pub struct Diff<'a> {
    pub before: &'a State,
    pub after: &'a State,
    pub(crate) touched: &'a Touched,
}

fn changes<'a, K: Ord, V: PartialEq>(
    keys: &'a BTreeSet<K>,
    old: &'a OrdMap<K, Arc<V>>,
    new: &'a OrdMap<K, Arc<V>>,
) -> impl Iterator<Item = Change<'a, V>> + 'a {
    keys.iter()
        .filter_map(move |k| match (old.get(k), new.get(k)) {
            (None, Some(n)) => Some(Change::Added(n.as_ref())),
            (Some(o), None) => Some(Change::Removed(o.as_ref())),
            (Some(o), Some(n)) if !Arc::ptr_eq(o, n) && o != n => Some(Change::Updated {
                old: o.as_ref(),
                new: n.as_ref(),
            }),
            _ => None,
        })
}

impl<'a> Diff<'a> {
    pub fn allocs(&self) -> impl Iterator<Item = Change<'a, Allocation>> + 'a {
        changes(
            &self.touched.allocs,
            &self.before.allocs,
            &self.after.allocs,
        )
    }

    /// Job versions added, removed (purge) or changed (`stopped`,
    /// `stable`).
    pub fn job_versions(&self) -> impl Iterator<Item = Change<'a, Job>> + 'a {
        changes(
            &self.touched.job_versions,
            &self.before.job_versions,
            &self.after.job_versions,
        )
    }

    pub fn nodes(&self) -> impl Iterator<Item = Change<'a, Node>> + 'a {
        changes(&self.touched.nodes, &self.before.nodes, &self.after.nodes)
    }

    pub fn deployments(&self) -> impl Iterator<Item = Change<'a, Deployment>> + 'a {
        changes(
            &self.touched.deployments,
            &self.before.deployments,
            &self.after.deployments,
        )
    }

    pub fn alerts(&self) -> impl Iterator<Item = Change<'a, Alert>> + 'a {
        changes(
            &self.touched.alerts,
            &self.before.alerts,
            &self.after.alerts,
        )
    }
}
