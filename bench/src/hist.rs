//! A small log-linear latency histogram (HDR-style: 64 sub-buckets per power of two, so every
//! reported value is within 1.6 % of the true one). Lock-free counters, so the connection tasks of
//! one process share one histogram; histograms of several processes merge through a compact text
//! form.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this are recorded exactly.
const EXACT: u64 = 128;
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any u64.
const BUCKETS: usize = SUB * 60;

/// Latencies in microseconds.
#[derive(Debug)]
pub struct Hist {
    counts: Box<[AtomicU64]>,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = (v >> shift) as usize; // SUB..2*SUB
    shift as usize * SUB + top
}

/// The highest value that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    if (i as u64) < EXACT {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let top = (i % SUB + SUB) as u64;
    ((top + 1) << shift) - 1
}

impl Hist {
    pub fn new() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn record(&self, v: u64) {
        self.counts[index(v)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn clear(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The value at quantile `q` (0..=1); 0 for an empty histogram.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i);
            }
        }
        upper(BUCKETS - 1)
    }

    pub fn max(&self) -> u64 {
        self.counts.iter().rposition(|c| c.load(Ordering::Relaxed) > 0).map_or(0, upper)
    }

    /// `index:count` pairs of the non-empty buckets, comma-separated (`-` when empty).
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| format!("{i}:{n}"))
            })
            .collect();
        if parts.is_empty() { "-".into() } else { parts.join(",") }
    }

    /// Adds the counts of an [`encode`](Self::encode)d histogram.
    pub fn merge_encoded(&self, s: &str) -> anyhow::Result<()> {
        if s == "-" {
            return Ok(());
        }
        for part in s.split(',') {
            let (i, n) = part.split_once(':').ok_or_else(|| anyhow::anyhow!("bad histogram part {part:?}"))?;
            let i: usize = i.parse()?;
            anyhow::ensure!(i < BUCKETS, "histogram bucket {i} out of range");
            self.counts[i].fetch_add(n.parse()?, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `p50_us=.. p99_us=.. p999_us=.. max_us=..`
    pub fn summary(&self) -> String {
        format!(
            "p50_us={} p99_us={} p999_us={} max_us={}",
            self.quantile(0.50),
            self.quantile(0.99),
            self.quantile(0.999),
            self.max()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in (0..5000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX / 2]) {
            let i = index(v);
            assert!(upper(i) >= v, "v={v}");
            if i > 0 {
                assert!(upper(i - 1) < v, "v={v}");
            }
            assert!(upper(i) - v <= v / 60 + 1, "v={v} upper={}", upper(i));
            if let Some(p) = prev {
                assert!(i >= p);
            }
            prev = Some(i);
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let h = Hist::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert!((500..=508).contains(&h.quantile(0.5)));
        assert!(h.quantile(0.99) >= 990 && h.quantile(0.99) <= 1007);
        let g = Hist::new();
        g.merge_encoded(&h.encode()).unwrap();
        assert_eq!(g.count(), 1000);
        assert_eq!(g.quantile(0.99), h.quantile(0.99));
        assert_eq!(Hist::new().encode(), "-");
    }
}
