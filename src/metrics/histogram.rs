//! The acquire-wait histogram: [`WaitHistogram`] (live, lock-free) and
//! [`WaitHistogramSnapshot`] (a copy for [`PoolStats`](crate::PoolStats)).
//!
//! Buckets are fixed at compile time ([`WAIT_BUCKETS_US`]), so recording is a search in
//! a small constant array and two relaxed atomic adds: no lock, no allocation, no
//! system call. The pool records only the acquires that went to the slow path (the
//! ones that had to wait); acquires served at once are added to the first bucket when
//! statistics are built, with [`WaitHistogramSnapshot::add_immediate`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the acquire-wait buckets, in microseconds, ascending; a bucket holds
/// the waits `<=` its bound and `>` the previous one (Prometheus `le` semantics).
///
/// From 100 µs to 60 s, in 1–2.5–5 steps per decade. A last bucket, `+Inf`, is implicit:
/// it holds the waits longer than the last bound, so histograms have
/// `WAIT_BUCKETS_US.len() + 1` buckets.
pub const WAIT_BUCKETS_US: [u64; 18] = [
    100,        // 100 µs
    250,        // 250 µs
    500,        // 500 µs
    1_000,      // 1 ms
    2_500,      // 2.5 ms
    5_000,      // 5 ms
    10_000,     // 10 ms
    25_000,     // 25 ms
    50_000,     // 50 ms
    100_000,    // 100 ms
    250_000,    // 250 ms
    500_000,    // 500 ms
    1_000_000,  // 1 s
    2_500_000,  // 2.5 s
    5_000_000,  // 5 s
    10_000_000, // 10 s
    30_000_000, // 30 s
    60_000_000, // 60 s
];

/// Number of buckets, the implicit `+Inf` included.
const BUCKETS: usize = WAIT_BUCKETS_US.len() + 1;

/// Index of the bucket that holds a wait of `us` microseconds: the first bound `>= us`,
/// or the `+Inf` bucket (`WAIT_BUCKETS_US.len()`).
fn bucket_index(us: u64) -> usize {
    WAIT_BUCKETS_US.partition_point(|&bound| bound < us)
}

/// Saturating conversion of a duration to whole microseconds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A live histogram of acquire waits, over the fixed buckets [`WAIT_BUCKETS_US`].
///
/// # Threading
///
/// [`record`](Self::record) is lock-free and allocation-free and may be called from any
/// number of threads at once (it takes `&self`; the type is `Send + Sync`). Every
/// counter is a relaxed atomic: a [`snapshot`](Self::snapshot) taken while others
/// record sees each bucket at some recent value, not the whole histogram at one
/// instant. The snapshot's `count` is the sum of its buckets, so buckets and count
/// always agree; `sum_us` may lag or lead them by the records in flight.
///
/// Counters never wrap in practice: the bucket counters would need 2^64 waits, and the
/// sum saturates at `u64::MAX` microseconds (about 584 000 years).
#[derive(Debug)]
pub struct WaitHistogram {
    /// Observations per bucket (not cumulative), the last one `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the recorded waits, in microseconds, saturating.
    sum_us: AtomicU64,
}

impl WaitHistogram {
    /// An empty histogram. `const`, so it can live in a `static`.
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one wait. Lock-free, allocation-free, callable from any thread.
    ///
    /// The wait is counted in whole microseconds, truncated; a duration too long for a
    /// `u64` of microseconds saturates (it lands in `+Inf` and the sum stops at
    /// `u64::MAX`). Never panics.
    pub fn record(&self, waited: Duration) {
        let us = micros(waited);
        self.buckets[bucket_index(us)].fetch_add(1, Ordering::Relaxed);
        if us != 0 {
            // A CAS loop rather than `fetch_add`, so a huge wait saturates instead of
            // wrapping. Only the slow path records, so contention here is rare.
            let _ = self
                .sum_us
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                    Some(sum.saturating_add(us))
                });
        }
    }

    /// A copy of the counters now (each read relaxed; see the type's threading notes).
    /// Allocates the snapshot's `counts`.
    pub fn snapshot(&self) -> WaitHistogramSnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count = counts.iter().fold(0u64, |acc, &c| acc.saturating_add(c));
        WaitHistogramSnapshot {
            bounds_us: &WAIT_BUCKETS_US,
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count,
        }
    }
}

impl Default for WaitHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A point-in-time copy of a [`WaitHistogram`], as found in
/// [`PoolStats::acquire_wait`](crate::PoolStats::acquire_wait).
///
/// Plain data: build, compare and change it freely. The methods tolerate a hand-built
/// snapshot whose `counts` has the wrong length (missing buckets read as zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitHistogramSnapshot {
    /// Upper bounds of the finite buckets, in microseconds, ascending (normally
    /// [`WAIT_BUCKETS_US`]).
    pub bounds_us: &'static [u64],
    /// Observations per bucket, NOT cumulative: `counts[i]` counts the waits in
    /// `(bounds_us[i-1], bounds_us[i]]`, and the last entry the `+Inf` bucket, so
    /// `counts.len() == bounds_us.len() + 1`.
    pub counts: Vec<u64>,
    /// Sum of all observed waits, in microseconds.
    pub sum_us: u64,
    /// Number of observations; equals the sum of `counts` in snapshots taken by
    /// [`WaitHistogram::snapshot`].
    pub count: u64,
}

impl Default for WaitHistogramSnapshot {
    /// An empty histogram over [`WAIT_BUCKETS_US`].
    fn default() -> Self {
        Self {
            bounds_us: &WAIT_BUCKETS_US,
            counts: vec![0; BUCKETS],
            sum_us: 0,
            count: 0,
        }
    }
}

impl WaitHistogramSnapshot {
    /// Adds `n` observations of zero wait (acquires served at once) to the first bucket
    /// and to `count`; `sum_us` is unchanged. Saturating.
    pub fn add_immediate(&mut self, n: u64) {
        if self.counts.len() < self.bounds_us.len() + 1 {
            self.counts.resize(self.bounds_us.len() + 1, 0);
        }
        self.counts[0] = self.counts[0].saturating_add(n);
        self.count = self.count.saturating_add(n);
    }

    /// Cumulative counts, as Prometheus `_bucket{le=...}` wants them: entry `i` counts
    /// the waits `<= bounds_us[i]`, and the last entry (`+Inf`) every observation in
    /// `counts`. Same length as `counts`; saturating.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0u64;
        self.counts
            .iter()
            .map(|&c| {
                total = total.saturating_add(c);
                total
            })
            .collect()
    }

    /// The upper bound of the bucket that holds the `q`-quantile (`q` in `0.0..=1.0`,
    /// clamped; `0.99` for p99), so the true quantile is at most the value returned.
    ///
    /// `None` when the histogram is empty or `q` is NaN. When the quantile falls in the
    /// `+Inf` bucket (longer than the last bound) the answer is `Duration::MAX`.
    /// Computed from `counts` (not `count`), by the nearest-rank method.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if q.is_nan() {
            return None;
        }
        let total = self
            .counts
            .iter()
            .fold(0u64, |acc, &c| acc.saturating_add(c));
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // Nearest rank: the smallest r with r >= q * total, at least 1. Float rounding
        // only matters beyond 2^53 observations.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(match self.bounds_us.get(i) {
                    Some(&bound) => Duration::from_micros(bound),
                    None => Duration::MAX,
                });
            }
        }
        Some(Duration::MAX) // unreachable: the last prefix sum is `total`
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_strictly_ascending_and_positive() {
        assert!(WAIT_BUCKETS_US[0] > 0);
        assert!(WAIT_BUCKETS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn record_lands_in_the_le_bucket() {
        let h = WaitHistogram::new();
        h.record(Duration::ZERO); // first bucket
        h.record(Duration::from_micros(100)); // == bound: first bucket (le)
        h.record(Duration::from_micros(101)); // second bucket
        h.record(Duration::from_nanos(250_999)); // truncated to 250 µs: second bucket
        h.record(Duration::from_secs(60)); // last finite bucket
        h.record(Duration::from_micros(60_000_001)); // +Inf
        let s = h.snapshot();
        let mut expected = vec![0u64; BUCKETS];
        expected[0] = 2;
        expected[1] = 2;
        expected[BUCKETS - 2] = 1;
        expected[BUCKETS - 1] = 1;
        assert_eq!(s.counts, expected);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum_us, 100 + 101 + 250 + 60_000_000 + 60_000_001);
        assert_eq!(s.bounds_us, &WAIT_BUCKETS_US[..]);
    }

    #[test]
    fn huge_durations_saturate() {
        let h = WaitHistogram::new();
        h.record(Duration::MAX);
        h.record(Duration::MAX);
        h.record(Duration::from_secs(u64::MAX / 1_000_000 + 1));
        let s = h.snapshot();
        assert_eq!(s.counts[BUCKETS - 1], 3);
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_us, u64::MAX);
        assert_eq!(s.quantile(0.5), Some(Duration::MAX));
    }

    #[test]
    fn const_new_in_a_static_and_default() {
        static H: WaitHistogram = WaitHistogram::new();
        H.record(Duration::from_millis(3));
        assert_eq!(H.snapshot().count, 1);
        assert_eq!(
            WaitHistogram::default().snapshot(),
            WaitHistogramSnapshot::default()
        );
    }

    #[test]
    fn default_snapshot_is_empty() {
        let s = WaitHistogramSnapshot::default();
        assert_eq!(s.bounds_us, &WAIT_BUCKETS_US[..]);
        assert_eq!(s.counts, vec![0; WAIT_BUCKETS_US.len() + 1]);
        assert_eq!((s.sum_us, s.count), (0, 0));
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.cumulative(), vec![0; WAIT_BUCKETS_US.len() + 1]);
    }

    #[test]
    fn add_immediate_fills_the_first_bucket() {
        let h = WaitHistogram::new();
        h.record(Duration::from_millis(20)); // 25 ms bucket
        let mut s = h.snapshot();
        s.add_immediate(9);
        assert_eq!(s.counts[0], 9);
        assert_eq!(s.count, 10);
        assert_eq!(s.sum_us, 20_000);
        assert_eq!(s.quantile(0.9), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.91), Some(Duration::from_millis(25)));
        // A hand-built snapshot with no counts at all is repaired, not indexed out of
        // bounds.
        let mut bare = WaitHistogramSnapshot {
            counts: Vec::new(),
            ..WaitHistogramSnapshot::default()
        };
        bare.add_immediate(2);
        assert_eq!(bare.counts.len(), BUCKETS);
        assert_eq!((bare.counts[0], bare.count), (2, 2));
    }

    #[test]
    fn cumulative_is_running_sum_ending_at_count() {
        let h = WaitHistogram::new();
        for ms in [0u64, 1, 1, 7, 300, 45_000, 90_000] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        let c = s.cumulative();
        assert_eq!(c.len(), s.counts.len());
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*c.last().unwrap(), s.count);
        assert_eq!(c[3], 3); // <= 1 ms: 0, 1, 1
        assert_eq!(c[6], 4); // <= 10 ms: + 7
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = WaitHistogram::new();
        for _ in 0..90 {
            h.record(Duration::from_micros(50)); // <= 100 µs
        }
        for _ in 0..9 {
            h.record(Duration::from_millis(4)); // <= 5 ms
        }
        h.record(Duration::from_secs(2)); // <= 2.5 s
        let s = h.snapshot();
        assert_eq!(s.quantile(0.0), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.9), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.95), Some(Duration::from_millis(5)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_millis(5)));
        assert_eq!(s.quantile(0.999), Some(Duration::from_millis(2_500)));
        assert_eq!(s.quantile(1.0), Some(Duration::from_millis(2_500)));
        assert_eq!(s.quantile(7.0), Some(Duration::from_millis(2_500))); // clamped
        assert_eq!(s.quantile(-1.0), Some(Duration::from_micros(100))); // clamped
        assert_eq!(s.quantile(f64::NAN), None);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = WaitHistogram::new();
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let h = &h;
                scope.spawn(move || {
                    for i in 0..1_000u64 {
                        h.record(Duration::from_micros(i * 37 + t));
                    }
                });
            }
        });
        let s = h.snapshot();
        assert_eq!(s.count, 4_000);
        let expected_sum: u64 = (0..4u64)
            .map(|t| (0..1_000u64).map(|i| i * 37 + t).sum::<u64>())
            .sum();
        assert_eq!(s.sum_us, expected_sum);
    }
}
