//! Counters of the master's `/metrics` that only grow across its worker processes' lives.
//!
//! Each worker process counts from zero, and a reload or a crash replaces the process behind a
//! `process="name-index"` series; passed through as they are, its counters would fall back to
//! zero, which a Prometheus counter must never do. So the master remembers, per series, the last
//! values it saw from every process generation that served it, and reports the sum for counters
//! and histograms (gauges are the current process's own). The master samples its processes
//! periodically and follows a retiring one until it exits, so what a process counted is lost only
//! when it dies abruptly, and then only since the last sample.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::MetricFamily;

/// Name, suffix and labels of one sample.
type Key = (String, String, String);

/// Generations kept apart per series; older ones are folded into one sum, so a master reloaded
/// every day for years keeps a few entries per series, not one per reload.
const KEEP: usize = 4;

/// Per series label, what its process generations counted.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    series: Mutex<HashMap<String, Series>>,
}

#[derive(Debug, Default)]
struct Series {
    /// Each recent generation's last families.
    generations: BTreeMap<u64, Vec<MetricFamily>>,
    /// The sums of the generations folded away.
    folded: HashMap<Key, f64>,
    /// Generations up to this one were folded: late samples of them are ignored.
    folded_up_to: u64,
}

fn add_counts(into: &mut HashMap<Key, f64>, families: &[MetricFamily]) {
    for f in families.iter().filter(|f| cumulative(f)) {
        for s in &f.samples {
            *into.entry((f.name.clone(), s.suffix.clone(), s.labels.clone())).or_default() += s.value;
        }
    }
}

/// Counters and histograms accumulate; gauges do not.
fn cumulative(family: &MetricFamily) -> bool {
    family.kind == "counter" || family.kind == "histogram"
}

impl Totals {
    /// Records what generation `generation` of series `label` reports now.
    pub(crate) fn record(&self, label: &str, generation: u64, families: Vec<MetricFamily>) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = series.entry(label.to_string()).or_default();
        if generation <= s.folded_up_to {
            return;
        }
        s.generations.insert(generation, families);
        while s.generations.len() > KEEP {
            let Some((oldest, families)) = s.generations.pop_first() else { break };
            add_counts(&mut s.folded, &families);
            s.folded_up_to = oldest;
        }
    }

    /// The families of `label` as they go out: the newest generation's, with counters and
    /// histograms raised by what every earlier generation counted. Empty if nothing was recorded.
    pub(crate) fn report(&self, label: &str) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = series.get(label) else { return Vec::new() };
        let Some((newest, current)) = s.generations.iter().next_back() else { return Vec::new() };
        let mut earlier = s.folded.clone();
        for families in s.generations.range(..newest).map(|(_, f)| f) {
            add_counts(&mut earlier, families);
        }
        let mut out = current.clone();
        for f in out.iter_mut().filter(|f| cumulative(f)) {
            for s in &mut f.samples {
                s.value += earlier.get(&(f.name.clone(), s.suffix.clone(), s.labels.clone())).copied().unwrap_or(0.0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(families: &[MetricFamily], name: &str) -> f64 {
        families.iter().find(|f| f.name == name).unwrap().samples[0].value
    }

    fn scrape(events: u64, links: f64) -> Vec<MetricFamily> {
        vec![
            MetricFamily::counter("gw_worker_events_total", "events", events),
            MetricFamily::gauge("gw_worker_gateway_links", "links", links),
        ]
    }

    #[test]
    fn counters_of_replaced_processes_carry_over_and_gauges_do_not() {
        let t = Totals::default();
        assert!(t.report("w-0").is_empty());
        t.record("w-0", 1, scrape(28, 2.0));
        assert_eq!(value(&t.report("w-0"), "gw_worker_events_total"), 28.0);
        // A new process (reload) starts from zero.
        t.record("w-0", 2, scrape(0, 0.0));
        let r = t.report("w-0");
        assert_eq!(value(&r, "gw_worker_events_total"), 28.0);
        assert_eq!(value(&r, "gw_worker_gateway_links"), 0.0);
        // The retiring one finished more work after it was replaced: that counts too.
        t.record("w-0", 1, scrape(31, 2.0));
        t.record("w-0", 2, scrape(5, 2.0));
        assert_eq!(value(&t.report("w-0"), "gw_worker_events_total"), 36.0);
        // Many reloads later the sum is still whole, from a few entries.
        for g in 3..20 {
            t.record("w-0", g, scrape(1, 2.0));
        }
        assert_eq!(value(&t.report("w-0"), "gw_worker_events_total"), 36.0 + 17.0);
        assert!(t.series.lock().unwrap()["w-0"].generations.len() <= KEEP);
        // A late sample of a folded generation changes nothing.
        t.record("w-0", 1, scrape(1000, 2.0));
        assert_eq!(value(&t.report("w-0"), "gw_worker_events_total"), 53.0);
        // Other series are separate.
        t.record("w-1", 3, scrape(7, 1.0));
        assert_eq!(value(&t.report("w-1"), "gw_worker_events_total"), 7.0);
    }
}
