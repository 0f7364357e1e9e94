//! The server's own measurements: counters and latency histograms that
//! the benchmark reads now and the Prometheus endpoint will export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: quantiles come out within ~9%.
const SUB: u64 = 8;
const BUCKETS: usize = 40 * SUB as usize;

/// A lock-free log-linear histogram of durations (microsecond resolution).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let pow = 63 - us.leading_zeros() as u64; // us >= 8 => pow >= 3
    let sub = (us >> (pow - 3)) & (SUB - 1);
    (((pow - 2) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds.
fn upper_of(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let pow = b / SUB + 2;
    let sub = b % SUB;
    ((SUB + sub + 1) << (pow - 3)) - 1
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// The `q` quantile (0.0..=1.0), as the upper bound of its bucket.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Duration::from_micros(upper_of(i));
            }
        }
        Duration::from_micros(upper_of(BUCKETS - 1))
    }
}

#[derive(Default)]
pub struct Metrics {
    /// From an evaluation entering the broker to its plan committed
    /// (queueing included).
    pub eval_latency: Histogram,
    /// From a worker taking an evaluation to its plan committed.
    pub eval_processing: Histogram,
    /// One plan's re-check and commit in the applier.
    pub plan_apply: Histogram,
    pub evals_processed: AtomicU64,
    pub placements: AtomicU64,
    pub plans_refused: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for us in [0u64, 1, 7, 8, 9, 15, 16, 100, 1000, 12345, 1 << 30] {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            assert!(
                upper_of(b) >= us,
                "{us} above its bucket's bound {}",
                upper_of(b)
            );
            assert!(
                upper_of(b) as f64 <= (us as f64) * 1.13 + 1.0,
                "{us} -> {}",
                upper_of(b)
            );
            last = b;
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.observe(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((50_000.0..=55_000.0).contains(&p50), "{p50}");
        assert!((99_000.0..=108_000.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
    }
}
