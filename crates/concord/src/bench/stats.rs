//! What a benchmark measures besides its count: latency percentiles, peak memory and the
//! machine's load while it ran.
//!
//! Latencies go into a fixed-size log-linear histogram per writer (64 sub-buckets per power
//! of two, so a percentile is within 1.6 % of the true value) and are merged at the end:
//! recording is one array increment, whatever the run's length, and memory stays constant
//! (a run of millions of appends must not measure its own latency vector in `max_rss_mib`).

use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: u64 = 64;
/// Bits of `SUB`.
const SUB_BITS: u32 = 6;
/// Enough buckets for any `u64` of microseconds.
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

/// A histogram of latencies in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros();
    let shift = exponent - SUB_BITS;
    let mantissa = us >> shift;
    (SUB as usize) * (shift as usize + 1) + (mantissa - SUB) as usize
}

/// The smallest value of a bucket's range (its values are within 1/64 of it).
fn low(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let shift = index / SUB - 1;
    (SUB + index % SUB) << shift
}

impl Latencies {
    /// Records one operation that took `took`.
    pub fn record(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(bucket(us)) {
            *count += 1;
        }
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds another writer's histogram to this one.
    pub fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many operations were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency below which a fraction `q` of operations finished, in milliseconds
    /// (0 when nothing was recorded).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let us = low(index).min(self.max_us);
                return us as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    /// The slowest operation, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

/// The process's peak resident set size in MiB (`VmHWM` of `/proc/self/status`), or 0 where
/// there is no such file.
pub(crate) fn max_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The one-minute load average (`/proc/loadavg`), or 0 where there is none: figures taken on
/// a busy machine say so next to themselves.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_two_percent_of_the_recorded_values() {
        let mut latencies = Latencies::default();
        for us in 1..=100_000u64 {
            latencies.record(Duration::from_micros(us));
        }
        for (q, exact) in [(0.5, 50.0), (0.99, 99.0), (0.999, 99.9)] {
            let got = latencies.quantile_ms(q);
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        assert_eq!(latencies.count(), 100_000);
        assert!((latencies.max_ms() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn buckets_are_contiguous_and_cover_every_value() {
        let mut previous = 0;
        for us in [0, 1, 63, 64, 65, 127, 128, 129, 1_000, 1 << 40, u64::MAX] {
            let index = bucket(us);
            assert!(index >= previous && index < BUCKETS, "{us} -> {index}");
            assert!(low(index) <= us, "{us}: low {}", low(index));
            previous = index;
        }
    }

    #[test]
    fn merged_histograms_count_both_sides_and_empty_ones_read_as_zero() {
        let (mut a, mut b) = (Latencies::default(), Latencies::default());
        assert!(a.quantile_ms(0.5).abs() < f64::EPSILON);
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!((a.quantile_ms(1.0) - 3.0).abs() < 0.05);
    }

    #[test]
    fn peak_memory_is_read_from_the_kernel() {
        assert!(max_rss_mib() > 0.0);
    }
}
