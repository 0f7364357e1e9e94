//! A lock-free log-linear latency histogram. The benchmark reads fine
//! quantiles from it (within ~13%); Prometheus gets it as a classic
//! histogram whose `le` bounds (powers of two microseconds, 128 µs to
//! ~67 s) fall exactly on internal bucket edges, so the exported counts
//! are exact, not interpolated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Sub-buckets per power of two: quantiles come out within ~13%.
const SUB: u64 = 8;
const BUCKETS: usize = 40 * SUB as usize;

/// Exported bucket bounds: 2^k microseconds for k in this range.
const EXPORT_FIRST_POW: u32 = 7;
const EXPORT_LAST_POW: u32 = 26;

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

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

pub(super) fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let pow = 63 - us.leading_zeros() as u64; // us >= 8 => pow >= 3
    let sub = (us >> (pow - 3)) & (SUB - 1);
    (((pow - 2) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds.
pub(super) fn upper_of(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let pow = b / SUB + 2;
    let sub = b % SUB;
    ((SUB + sub + 1) << (pow - 3)) - 1
}

/// The exported bucket (index into the `le` bounds; the last index is
/// `+Inf`) that internal bucket `b` falls into. Every internal bucket lies
/// wholly below or above each exported bound, because each power of two
/// ends an internal bucket.
fn export_index(b: usize) -> usize {
    let upper = upper_of(b);
    // The smallest k with upper < 2^k.
    let k = 64 - upper.leading_zeros();
    (k.max(EXPORT_FIRST_POW) - EXPORT_FIRST_POW).min(EXPORT_LAST_POW - EXPORT_FIRST_POW + 1)
        as usize
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

    /// Per exported bucket (non-cumulative), as `(le in seconds, count)`,
    /// the last one `+Inf`; and the total count, consistent with them.
    pub fn export(&self) -> (Vec<(f64, u64)>, u64) {
        let n = (EXPORT_LAST_POW - EXPORT_FIRST_POW + 2) as usize;
        let mut out: Vec<(f64, u64)> = (0..n)
            .map(|i| {
                let le = if i + 1 == n {
                    f64::INFINITY
                } else {
                    (1u64 << (EXPORT_FIRST_POW as usize + i)) as f64 / 1e6
                };
                (le, 0)
            })
            .collect();
        let mut total = 0;
        for (b, c) in self.buckets.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                out[export_index(b)].1 += c;
                total += c;
            }
        }
        (out, total)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.export();
        let sum = self.sum().as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
