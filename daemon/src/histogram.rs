//! A lock-free fixed-bucket latency histogram for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::report::{MetricFamily, Sample};

/// Upper bounds of the buckets, in seconds.
const BOUNDS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Counts observations per bucket; `observe` is two relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The Prometheus family (cumulative buckets).
    pub fn family(&self, name: &str, help: &str) -> MetricFamily {
        let mut f = MetricFamily::new(name, "histogram", help);
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            cumulative += b.load(Ordering::Relaxed);
            f.samples.push(Sample {
                suffix: "_bucket".into(),
                labels: format!("le=\"{bound}\""),
                value: cumulative as f64,
            });
        }
        let count = self.count();
        f.samples.push(Sample { suffix: "_bucket".into(), labels: "le=\"+Inf\"".into(), value: count as f64 });
        f.samples.push(Sample {
            suffix: "_sum".into(),
            labels: String::new(),
            value: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        });
        f.samples.push(Sample { suffix: "_count".into(), labels: String::new(), value: count as f64 });
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let f = h.family("x_seconds", "x");
        let bucket = |le: &str| f.samples.iter().find(|s| s.labels == format!("le=\"{le}\"")).unwrap().value;
        assert_eq!(bucket("0.0001"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("1"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
    }
}
