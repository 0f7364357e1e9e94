//! Placement failure reports: why a group could not be fully placed, as
//! counts of nodes per reason, most common first.

use std::collections::BTreeMap;

use corral_types::PlacementFailure;

/// Aggregate one reason per evaluated node into a [`PlacementFailure`];
/// reasons are sorted by count (descending), then text.
pub fn placement_failure(
    group: &str,
    missing: u32,
    nodes_evaluated: u32,
    reasons: impl IntoIterator<Item = String>,
) -> PlacementFailure {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut reasons: Vec<(String, u32)> = counts.into_iter().collect();
    // Stable sort over text order: equal counts stay alphabetical.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    PlacementFailure {
        group: group.to_owned(),
        missing,
        nodes_evaluated,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_count_then_text() {
        let f = placement_failure(
            "web",
            2,
            4,
            ["memory exhausted", "b", "memory exhausted", "a"].map(String::from),
        );
        assert_eq!(
            f.reasons,
            vec![
                ("memory exhausted".to_owned(), 2),
                ("a".to_owned(), 1),
                ("b".to_owned(), 1)
            ]
        );
        assert_eq!(
            f.to_string(),
            "group \"web\": 2 allocations not placed (2 nodes: memory exhausted; 1 node: a; 1 node: b)"
        );
    }
}
