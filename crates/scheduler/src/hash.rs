//! A tiny stable hash (FNV-1a). Used wherever Nomad would pick at random, so
//! the same snapshot and eval always give the same plan; std's hasher is not
//! stable across releases and `RandomState` reads OS randomness.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the parts, with a separator byte so `("ab","c")` and
/// `("a","bc")` differ.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h = OFFSET;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// FNV-1a as a `Hasher` for the scheduler's per-plan maps: keys are short
/// (node ids, class numbers) and hashed on every node visited, where
/// std's SipHash costs more than the lookup it serves. Not for maps whose
/// keys an outsider chooses (no flooding resistance).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(OFFSET)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // One multiply per word: a class number or a position.
        self.0 = (self.0 ^ n).wrapping_mul(PRIME);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hasher_is_stable_and_spreads_words() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let b = BuildHasherDefault::<Fnv>::default();
        assert_eq!(b.hash_one("sim-000001"), b.hash_one("sim-000001"));
        assert_ne!(b.hash_one("sim-000001"), b.hash_one("sim-000002"));
        assert_ne!(b.hash_one(1u64), b.hash_one(2u64));
    }

    #[test]
    fn stable_and_separated() {
        assert_eq!(fnv1a(&["eval-1", "web"]), fnv1a(&["eval-1", "web"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
