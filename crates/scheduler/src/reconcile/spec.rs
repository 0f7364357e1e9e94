//! Whether an allocation's version of its group needs a new allocation
//! under the current version.

use std::collections::BTreeMap;

use corral_types::{Allocation, GroupSpec, Job};

use crate::StateView;

/// Memoised per (version, group): the answer depends on both, and one
/// cache serves every group of the job.
#[derive(Default)]
pub(super) struct SpecCache {
    by_version: BTreeMap<(u64, String), bool>,
}

impl SpecCache {
    pub(super) fn changed(
        &mut self,
        state: &dyn StateView,
        job: &Job,
        g: &GroupSpec,
        a: &Allocation,
    ) -> bool {
        if a.job_version == job.version {
            return false;
        }
        *self
            .by_version
            .entry((a.job_version, g.name.clone()))
            .or_insert_with(|| {
                // A version that is gone cannot be compared: replace, so the
                // allocation surely runs the current spec.
                old_group(state, job, a.job_version, &g.name)
                    .is_none_or(|(_, old)| old.needs_replacement(g))
            })
    }
}

/// A stored version of the job and its group `name`, if both exist.
pub(super) fn old_group<'a>(
    state: &'a dyn StateView,
    job: &Job,
    version: u64,
    name: &str,
) -> Option<(&'a Job, &'a GroupSpec)> {
    let old = state.job_version(&job.name, version)?;
    let g = old.spec.groups.iter().find(|x| x.name == name)?;
    Some((old, g))
}
