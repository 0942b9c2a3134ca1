//! Latency histogram with bounded memory, whatever the number of samples.
//!
//! Buckets are log-linear: exact below 128 µs, then 64 buckets per power of
//! two, so a reported percentile is within 1.6% of the true sample. The
//! recording side is atomic so every session task can write into one
//! histogram without a lock; snapshots serialize sparsely, so worker
//! processes can send theirs to the parent to be merged.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = LINEAR as usize + (64 - 7) * SUB as usize;

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros());
    let shift = e - u64::from(SUB_BITS);
    (LINEAR + (e - 7) * SUB + ((v >> shift) - SUB)) as usize
}

fn lower_bound(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < LINEAR {
        return idx;
    }
    let k = idx - LINEAR;
    let e = k / SUB + 7;
    (k % SUB + SUB) << (e - u64::from(SUB_BITS))
}

/// The value reported for a bucket: its midpoint.
fn representative(idx: usize) -> u64 {
    let lo = lower_bound(idx);
    if idx + 1 >= BUCKETS {
        return lo;
    }
    let hi = lower_bound(idx + 1);
    lo + (hi - lo).saturating_sub(1) / 2
}

pub struct AtomicHist {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
    count: AtomicU64,
}

impl Default for AtomicHist {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl AtomicHist {
    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Hist {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u32, n))
            })
            .collect();
        Hist {
            buckets,
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// A histogram snapshot: (bucket, count) pairs in bucket order, plus the
/// exact maximum.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hist {
    pub buckets: Vec<(u32, u64)>,
    pub max: u64,
}

impl Hist {
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    pub fn merge(&mut self, other: &Hist) {
        let mut all = std::collections::BTreeMap::new();
        for &(i, n) in self.buckets.iter().chain(other.buckets.iter()) {
            *all.entry(i).or_insert(0u64) += n;
        }
        self.buckets = all.into_iter().collect();
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), or None without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        if rank == total {
            return Some(self.max);
        }
        let mut seen = 0;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(representative(i as usize).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::from(u32::MAX)]) {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            let lo = lower_bound(i);
            assert!(lo <= v, "{v} {lo}");
            assert!((v - lo) as f64 <= v as f64 / 64.0 + 1.0, "{v} {lo}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_set() {
        let h = AtomicHist::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 10_000);
        let p50 = s.quantile(0.5).unwrap() as f64;
        let p99 = s.quantile(0.99).unwrap() as f64;
        assert!((p50 - 5000.0).abs() < 5000.0 * 0.02, "{p50}");
        assert!((p99 - 9900.0).abs() < 9900.0 * 0.02, "{p99}");
        assert_eq!(s.quantile(1.0), Some(10_000));
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 20_000);
    }
}
