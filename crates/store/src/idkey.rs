//! Map keys for the ids the server makes (allocations, evaluations,
//! deployments), ordered so that ids made close in time sit close in the
//! maps.
//!
//! An id reads `rrrrrrrr-tttt-tttt-tttt-rrrrrrrrrrrr`: eight random hex
//! digits first, which the CLI shows and matches by prefix, then the time
//! it was made. The key orders by what follows the first dash, then by the
//! first eight digits. With random ids every new allocation path-copied a
//! random leaf of a 100,000-entry map, and its reports touched leaves no
//! cache held; ordered by time, a plan's allocations share a few leaves
//! (1.14-1.29x placements/s in `corral bench scheduler`). Any other string
//! (ids of older stores) keeps a total order too: the mapping to
//! `(rest, head)` is one-to-one.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

use ref_cast::RefCast;

/// An owned id key (cheap to clone: maps path-copy their nodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdKey(Arc<str>);

/// A borrowed id, to look keys up without allocating.
#[derive(Debug, PartialEq, Eq, Hash, RefCast)]
#[repr(transparent)]
pub struct Id(str);

impl Id {
    pub fn new(s: &str) -> &Id {
        Id::ref_cast(s)
    }

    /// What orders the id: the part after the first dash, then the head.
    fn parts(&self) -> (&str, &str) {
        let s = &self.0;
        match s.as_bytes().get(8) {
            // An ASCII dash at byte 8: both slices fall on char boundaries.
            Some(b'-') => (&s[9..], &s[..8]),
            _ => (s, ""),
        }
    }
}

impl Ord for Id {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        Id::new(&self.0).cmp(Id::new(&other.0))
    }
}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Borrow<Id> for IdKey {
    fn borrow(&self) -> &Id {
        Id::new(&self.0)
    }
}

impl From<&str> for IdKey {
    fn from(s: &str) -> IdKey {
        IdKey(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(ids: &[&str]) -> Vec<String> {
        let mut keys: Vec<IdKey> = ids.iter().map(|s| IdKey::from(*s)).collect();
        keys.sort();
        keys.iter().map(|k| k.0.to_string()).collect()
    }

    #[test]
    fn ids_order_by_time_then_head() {
        let got = sorted(&[
            "ffffffff-0000-0000-0002-aaaaaaaaaaaa",
            "00000000-0000-0000-0003-aaaaaaaaaaaa",
            "99999999-0000-0000-0001-aaaaaaaaaaaa",
            "11111111-0000-0000-0002-aaaaaaaaaaaa",
        ]);
        assert_eq!(
            got,
            [
                "99999999-0000-0000-0001-aaaaaaaaaaaa",
                "11111111-0000-0000-0002-aaaaaaaaaaaa",
                "ffffffff-0000-0000-0002-aaaaaaaaaaaa",
                "00000000-0000-0000-0003-aaaaaaaaaaaa",
            ]
        );
    }

    #[test]
    fn other_strings_keep_a_total_order() {
        // "x" and "b-x" style keys, and a head whose rest equals another
        // whole string: all distinct, all comparable both ways.
        let ids = [
            "abc",
            "aaaaaaaa-abc",
            "abc-",
            "",
            "é-long-unicode-id",
            "aaaaaaa\u{e9}x",
        ];
        for a in ids {
            for b in ids {
                let (ka, kb) = (IdKey::from(a), IdKey::from(b));
                assert_eq!(ka.cmp(&kb) == Ordering::Equal, a == b, "{a:?} vs {b:?}");
                assert_eq!(ka.cmp(&kb), kb.cmp(&ka).reverse(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_map_finds_keys_by_borrowed_id() {
        let mut m = imbl::OrdMap::new();
        for (i, s) in ["bbbbbbbb-2", "aaaaaaaa-3", "cccccccc-1"]
            .iter()
            .enumerate()
        {
            m.insert(IdKey::from(*s), i);
        }
        assert_eq!(m.get(Id::new("aaaaaaaa-3")), Some(&1));
        assert_eq!(m.get(Id::new("aaaaaaaa-2")), None);
        let order: Vec<usize> = m.values().copied().collect();
        assert_eq!(order, [2, 0, 1]);
    }
}
