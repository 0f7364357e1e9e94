//! A group's allocations sorted into slots (by index), the unit every
//! reconcile step works on.

use std::collections::BTreeMap;

use corral_types::{Allocation, ClientStatus, DesiredStatus};

use super::{Reconciled, node_lost};
use crate::StateView;

/// What one slot (index) of a group holds.
#[derive(Default, Debug)]
pub(super) struct Slot<'a> {
    /// Desired run, not terminal, on a node that is up (draining or not).
    pub live: Vec<&'a Allocation>,
    /// Live on a node that is gone (stopped as lost by this plan), or
    /// forced off a draining node by its deadline.
    pub lost: Vec<&'a Allocation>,
    /// Desired run, failed: the restart policy gave up.
    pub failed: Vec<&'a Allocation>,
    /// Desired run, finished.
    pub complete: Vec<&'a Allocation>,
}

impl<'a> Slot<'a> {
    /// A terminal allocation that replaced `old` (its `previous`): a
    /// migration that already failed, or ran to completion.
    pub fn terminal_replacement_of(&self, old: &Allocation) -> Option<&'a Allocation> {
        self.failed
            .iter()
            .chain(&self.complete)
            .find(|a| a.previous.as_deref() == Some(old.id.as_str()))
            .copied()
    }
}

/// Sort `allocs` (one group's) into slots; live ones on lost nodes are
/// stopped here, once.
pub(super) fn classify<'a>(
    state: &dyn StateView,
    allocs: &[&'a Allocation],
    out: &mut Reconciled<'_>,
) -> BTreeMap<u32, Slot<'a>> {
    let mut slots: BTreeMap<u32, Slot<'a>> = BTreeMap::new();
    for &a in allocs {
        let slot = slots.entry(a.index).or_default();
        if a.is_live() {
            if let Some(why) = node_lost(state, a) {
                out.stop(state, a, why);
                slot.lost.push(a);
            } else {
                slot.live.push(a);
            }
        } else if a.desired == DesiredStatus::Run && a.client == ClientStatus::Failed {
            slot.failed.push(a);
        } else if a.desired == DesiredStatus::Run && a.client == ClientStatus::Complete {
            slot.complete.push(a);
        }
    }
    slots
}
