//! What changed between two states, record by record. The maps are
//! persistent and a commit copies only the paths it touches, so the diff
//! skips every subtree the two states share: its cost follows the size of
//! the change, not of the state. The event hook is built on it.

use std::sync::Arc;

use corral_types::{Alert, Allocation, Deployment, Job, Node};
use imbl::OrdMap;
use imbl::ordmap::DiffItem;

use crate::State;

/// One record's change between an older and a newer state.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, T> {
    Added(&'a T),
    Removed(&'a T),
    Updated { old: &'a T, new: &'a T },
}

fn changes<'a, K: Ord, V: PartialEq>(
    old: &'a OrdMap<K, Arc<V>>,
    new: &'a OrdMap<K, Arc<V>>,
) -> impl Iterator<Item = Change<'a, V>> + 'a {
    old.diff(new).map(|d| match d {
        DiffItem::Add(_, v) => Change::Added(v.as_ref()),
        DiffItem::Remove(_, v) => Change::Removed(v.as_ref()),
        DiffItem::Update {
            old: (_, o),
            new: (_, n),
        } => Change::Updated {
            old: o.as_ref(),
            new: n.as_ref(),
        },
    })
}

impl State {
    /// Allocations added, removed or changed in `next`.
    pub fn alloc_changes<'a>(
        &'a self,
        next: &'a State,
    ) -> impl Iterator<Item = Change<'a, Allocation>> + 'a {
        changes(&self.allocs, &next.allocs)
    }

    /// Job versions added, removed (purge) or changed (`stopped`,
    /// `stable`) in `next`.
    pub fn job_version_changes<'a>(
        &'a self,
        next: &'a State,
    ) -> impl Iterator<Item = Change<'a, Job>> + 'a {
        changes(&self.job_versions, &next.job_versions)
    }

    pub fn node_changes<'a>(&'a self, next: &'a State) -> impl Iterator<Item = Change<'a, Node>> + 'a {
        changes(&self.nodes, &next.nodes)
    }

    pub fn deployment_changes<'a>(
        &'a self,
        next: &'a State,
    ) -> impl Iterator<Item = Change<'a, Deployment>> + 'a {
        changes(&self.deployments, &next.deployments)
    }

    pub fn alert_changes<'a>(
        &'a self,
        next: &'a State,
    ) -> impl Iterator<Item = Change<'a, Alert>> + 'a {
        changes(&self.alerts, &next.alerts)
    }
}
