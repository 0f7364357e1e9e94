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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_separated() {
        assert_eq!(fnv1a(&["eval-1", "web"]), fnv1a(&["eval-1", "web"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
