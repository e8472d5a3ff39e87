//! A daemon's `/metrics`, fetched with a bare HTTP/1.1 request and a deadline (a stopped process
//! accepts the connection in the kernel but never answers).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Samples by family name, summed over labels, plus the labelled samples themselves.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub sums: HashMap<String, f64>,
    pub samples: Vec<(String, String, f64)>,
}

impl Metrics {
    pub fn get(&self, name: &str) -> f64 {
        self.sums.get(name).copied().unwrap_or(0.0)
    }

    /// Value of `name` whose labels contain `label` (e.g. `reason="no_worker"`).
    pub fn labelled(&self, name: &str, label: &str) -> f64 {
        self.samples.iter().filter(|(n, l, _)| n == name && l.contains(label)).map(|(_, _, v)| v).sum()
    }

    pub fn parse(body: &str) -> Self {
        let mut m = Metrics::default();
        for line in body.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let (name, labels) = match key.split_once('{') {
                Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
                None => (key.to_string(), String::new()),
            };
            *m.sums.entry(name.clone()).or_default() += value;
            m.samples.push((name, labels, value));
        }
        m
    }
}

/// GET `/metrics` from `addr` within `deadline`.
pub async fn fetch(addr: &str, deadline: Duration) -> anyhow::Result<Metrics> {
    tokio::time::timeout(deadline, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{addr}: {}", head.lines().next().unwrap_or_default());
        // axum answers with a content length (no chunking) for a complete string body.
        Ok(Metrics::parse(body))
    })
    .await
    .with_context(|| format!("{addr}: /metrics did not answer within {deadline:?}"))?
}
