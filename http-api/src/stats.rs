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
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections refused at accept: `max_connections` reached.
    pub rejected_capacity: AtomicU64,
    /// Connections refused at accept: `max_connections_per_ip` reached.
    pub rejected_per_ip: AtomicU64,
    /// Connections accepted and closed at once: the process was out of file descriptors.
    pub rejected_fd_exhausted: AtomicU64,
    /// Connections closed for sending no complete request head within `header_timeout`
    /// (stalled senders, and kept-alive connections idle that long).
    pub head_timeouts: AtomicU64,
    /// Requests answered 408 for not sending their body within `body_timeout`.
    pub body_timeouts: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// TLS handshakes not done within `header_timeout`.
    pub tls_timeouts: AtomicU64,
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
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            requests,
            latency,
            MetricFamily::counter(
                "gw_http_calls_total",
                "Gateway API calls run (each call of a batch counts).",
                g(&self.calls),
            ),
            MetricFamily::counter(
                "gw_http_answers_too_large_total",
                "Batch calls whose result would have taken the batch's answer past max_response (answered with an error instead).",
                g(&self.answers_too_large),
            ),
            MetricFamily::gauge("gw_http_connections", "HTTP connections open now.", g(&self.connections) as f64),
            MetricFamily::new(
                "gw_http_connections_rejected_total",
                "counter",
                "Connections refused at accept, by reason.",
            )
            .sample("reason=\"capacity\"", g(&self.rejected_capacity) as f64)
            .sample("reason=\"per_ip\"", g(&self.rejected_per_ip) as f64)
            .sample("reason=\"fd_exhausted\"", g(&self.rejected_fd_exhausted) as f64),
            MetricFamily::new(
                "gw_http_timeouts_total",
                "counter",
                "Connections and requests given up on, by what was late: the TLS handshake or a request head \
                 (header_timeout; idle keep-alive connections included), or a body (body_timeout, answered 408).",
            )
            .sample("phase=\"tls\"", g(&self.tls_timeouts) as f64)
            .sample("phase=\"head\"", g(&self.head_timeouts) as f64)
            .sample("phase=\"body\"", g(&self.body_timeouts) as f64),
            MetricFamily::counter("gw_http_tls_failures_total", "TLS handshakes that failed.", g(&self.tls_failures)),
        ]
    }
}
