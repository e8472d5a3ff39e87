//! Request counters by route and status, and a latency histogram per route, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use gw_daemon::MetricFamily;
use gw_daemon::histogram::Histogram;

/// What the API has served. Routes are the matched route patterns (a bounded set), or
/// `unmatched` for everything else, so a scan of random paths cannot grow the label set.
#[derive(Debug, Default)]
pub struct Stats {
    requests: DashMap<(String, u16), AtomicU64>,
    latency: DashMap<String, Histogram>,
    /// Calls run, including each call of a batch.
    pub calls: AtomicU64,
    /// Batch calls whose result did not fit in the batch's answer (`max_response`): they ran,
    /// and an `answer_too_large` error stands in their place.
    pub answers_too_large: AtomicU64,
    total: AtomicU64,
}

impl Stats {
    /// Counts one request of `route` answered with `status` after `took`.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.requests.entry((route.to_string(), status)).or_default().fetch_add(1, Ordering::Relaxed);
        self.latency.entry(route.to_string()).or_default().observe(took);
    }

    /// Requests served.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests of one route with one status.
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.requests.get(&(route.to_string(), status)).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The counters and latencies as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut requests = MetricFamily::new(
            "gw_http_requests_total",
            "counter",
            "HTTP requests by route and status (route `unmatched` for unknown paths).",
        );
        let mut rows: Vec<(String, u16, u64)> =
            self.requests.iter().map(|e| (e.key().0.clone(), e.key().1, e.value().load(Ordering::Relaxed))).collect();
        rows.sort();
        for (route, status, n) in rows {
            requests = requests.sample(&format!("route=\"{route}\",status=\"{status}\""), n as f64);
        }
        let mut latency = MetricFamily::new(
            "gw_http_request_duration_seconds",
            "histogram",
            "Time from request to response, by route.",
        );
        let mut routes: Vec<String> = self.latency.iter().map(|e| e.key().clone()).collect();
        routes.sort();
        for route in routes {
            if let Some(h) = self.latency.get(&route) {
                for mut s in h.family("x", "x").samples {
                    s.labels = if s.labels.is_empty() {
                        format!("route=\"{route}\"")
                    } else {
                        format!("route=\"{route}\",{}", s.labels)
                    };
                    latency.samples.push(s);
                }
            }
        }
        vec![
            requests,
            latency,
            MetricFamily::counter(
                "gw_http_calls_total",
                "Gateway API calls run (each call of a batch counts).",
                self.calls.load(Ordering::Relaxed),
            ),
            MetricFamily::counter(
                "gw_http_answers_too_large_total",
                "Batch calls whose result would have taken the batch's answer past max_response (answered with an error instead).",
                self.answers_too_large.load(Ordering::Relaxed),
            ),
        ]
    }
}
