//! What a running node reports: status rows, connection rows, metric families; and how the CLI
//! prints them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::table::{Align, Table};

/// One process in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Process id.
    pub pid: u32,
    /// `register`, `gateway`, `master`, `worker`, ...
    pub role: String,
    /// Node name.
    pub name: String,
    /// Resident memory in bytes.
    pub memory: u64,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Open connections (clients for a gateway, peers otherwise).
    pub connections: u64,
    /// Messages received since start.
    pub messages_in: u64,
    /// Messages sent since start.
    pub messages_out: u64,
    /// Messages dropped since start (slow clients, gone clients, ...).
    pub dropped: u64,
    /// Client messages (gateway), events (worker) or peer requests (register) per second over the
    /// last few seconds.
    pub requests_per_sec: f64,
    /// `running`, `draining`, `reloading ...`, ...
    pub state: String,
    /// Address of this process's `/metrics` and `/health` endpoint, if it serves one (filled in
    /// by the daemon runner; worker processes are measured through their master's).
    #[serde(default)]
    pub admin: Option<String>,
}

/// One client connection in `connections`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    /// The client's id.
    pub client_id: String,
    /// Its socket address.
    pub peer: String,
    /// The uid it is bound to, if any.
    pub uid: Option<String>,
    /// Groups it is a member of.
    pub groups: Vec<String>,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Messages waiting in its send queue.
    pub queue_len: u64,
}

/// A Prometheus metric family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFamily {
    /// Metric name, e.g. `gw_messages_in_total`.
    pub name: String,
    /// The `# HELP` text.
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// `(labels, value)`; labels as `key="value",…` without braces. Histograms carry their
    /// `_bucket`, `_sum` and `_count` samples with the suffix in the label-less name field of
    /// [`Sample`].
    pub samples: Vec<Sample>,
}

/// One sample of a family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Suffix appended to the family name (`""`, `_bucket`, `_sum`, `_count`).
    pub suffix: String,
    /// Labels as `key="value",…` without braces.
    pub labels: String,
    /// The value.
    pub value: f64,
}

impl MetricFamily {
    /// An empty family of `kind` (`counter`, `gauge` or `histogram`).
    pub fn new(name: &str, kind: &str, help: &str) -> Self {
        Self { name: name.into(), help: help.into(), kind: kind.into(), samples: Vec::new() }
    }

    /// Adds a plain sample.
    pub fn sample(mut self, labels: &str, value: f64) -> Self {
        self.samples.push(Sample { suffix: String::new(), labels: labels.into(), value });
        self
    }

    /// A counter family with one label-less sample.
    pub fn counter(name: &str, help: &str, value: u64) -> Self {
        Self::new(name, "counter", help).sample("", value as f64)
    }

    /// A gauge family with one label-less sample.
    pub fn gauge(name: &str, help: &str, value: f64) -> Self {
        Self::new(name, "gauge", help).sample("", value)
    }
}

/// Adds `label` (e.g. `process="w-1"`) to every sample.
pub fn with_label(families: &mut [MetricFamily], label: &str) {
    for f in families {
        for s in &mut f.samples {
            s.labels = if s.labels.is_empty() { label.to_string() } else { format!("{label},{}", s.labels) };
        }
    }
}

/// Merges families of the same name (from several processes) and renders Prometheus text.
pub fn render_prometheus(families: Vec<MetricFamily>) -> String {
    let mut merged: Vec<MetricFamily> = Vec::new();
    for f in families {
        match merged.iter_mut().find(|m| m.name == f.name) {
            Some(m) => m.samples.extend(f.samples),
            None => merged.push(f),
        }
    }
    let mut out = String::new();
    for f in merged {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for s in f.samples {
            if s.labels.is_empty() {
                let _ = writeln!(out, "{}{} {}", f.name, s.suffix, s.value);
            } else {
                let _ = writeln!(out, "{}{}{{{}}} {}", f.name, s.suffix, s.labels, s.value);
            }
        }
    }
    out
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1}G", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1}M", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{}K", n / 1024)
    }
}

/// The `status` table, Workerman style, with a summary line. Columns are as wide as their
/// widest cell; a process listening on several addresses shows one per line.
pub fn status_table(title: &str, rows: &[ProcessStatus]) -> String {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("pid", Left),
        ("memory", Right),
        ("listen", Left),
        ("name", Left),
        ("conns", Right),
        ("msg_in", Right),
        ("msg_out", Right),
        ("dropped", Right),
        ("req/s", Right),
        ("state", Left),
    ]);
    for r in rows {
        table.row(vec![
            r.pid.to_string(),
            human_bytes(r.memory),
            if r.listen.is_empty() { "-".to_string() } else { r.listen.join("\n") },
            r.name.clone(),
            r.connections.to_string(),
            r.messages_in.to_string(),
            r.messages_out.to_string(),
            r.dropped.to_string(),
            format!("{:.1}", r.requests_per_sec),
            r.state.clone(),
        ]);
    }
    let lines = table.lines();
    // The rules span the table, and at least the title.
    let rule = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(title.chars().count() + 4);
    let mut out = String::new();
    let _ = writeln!(out, "{:-^rule$}", format!(" {title} "));
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{:-^rule$}", "");
    let mut admins = rows.iter().filter_map(|r| r.admin.as_ref().map(|a| (r.pid, a))).peekable();
    if admins.peek().is_none() {
        let _ = writeln!(out, "metrics: off (process.admin is empty)");
    }
    for (pid, addr) in admins {
        let _ = writeln!(out, "metrics: http://{addr}/metrics  health: http://{addr}/health  (pid {pid})");
    }
    let conns: u64 = rows.iter().map(|r| r.connections).sum();
    let rps: f64 = rows.iter().map(|r| r.requests_per_sec).sum();
    let mem: u64 = rows.iter().map(|r| r.memory).sum();
    let dropped: u64 = rows.iter().map(|r| r.dropped).sum();
    let _ = writeln!(
        out,
        "{} process(es), {} connection(s), {:.1} req/s, {} dropped, {} resident",
        rows.len(),
        conns,
        rps,
        dropped,
        human_bytes(mem)
    );
    out
}

/// The `connections` table.
pub fn connections_table(rows: &[ConnectionRow]) -> String {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("client_id", Left),
        ("peer", Left),
        ("uid", Left),
        ("groups", Left),
        ("bytes_in", Right),
        ("bytes_out", Right),
        ("queue", Right),
    ]);
    for r in rows {
        table.row(vec![
            r.client_id.clone(),
            r.peer.clone(),
            r.uid.as_deref().map_or_else(|| "-".into(), printable),
            if r.groups.is_empty() { "-".to_string() } else { printable(&r.groups.join(",")) },
            r.bytes_in.to_string(),
            r.bytes_out.to_string(),
            r.queue_len.to_string(),
        ]);
    }
    let mut out = String::new();
    for line in table.lines() {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{} connection(s)", rows.len());
    out
}

/// Control characters escaped: uids and groups come from applications and clients, and must
/// neither break a row into lines nor reach the operator's terminal as escape sequences.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn own_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_several_processes_are_merged_under_one_header() {
        let mut a = vec![MetricFamily::counter("x_total", "things", 1)];
        let mut b = vec![MetricFamily::counter("x_total", "things", 2)];
        with_label(&mut a, "process=\"a\"");
        with_label(&mut b, "process=\"b\"");
        let text = render_prometheus(a.into_iter().chain(b).collect());
        assert_eq!(
            text,
            "# HELP x_total things\n# TYPE x_total counter\nx_total{process=\"a\"} 1\nx_total{process=\"b\"} 2\n"
        );
    }

    #[test]
    fn status_table_has_a_summary_line() {
        let rows =
            vec![ProcessStatus { pid: 7, name: "gw".into(), connections: 3, memory: 4 << 20, ..Default::default() }];
        let t = status_table("gateway", &rows);
        assert!(t.contains("1 process(es), 3 connection(s)"), "{t}");
        assert!(t.contains("metrics: off"), "{t}");
        assert!(t.contains("4.0M"), "{t}");
        let rows = vec![ProcessStatus { pid: 7, admin: Some("127.0.0.1:9100".into()), ..Default::default() }];
        let t = status_table("gateway", &rows);
        assert!(
            t.contains("metrics: http://127.0.0.1:9100/metrics  health: http://127.0.0.1:9100/health  (pid 7)"),
            "{t}"
        );
    }

    #[test]
    fn status_columns_stay_aligned_with_long_listen_lists_and_names() {
        let rows = vec![
            ProcessStatus {
                pid: 4242,
                name: "a-gateway-with-a-rather-long-name".into(),
                listen: vec![
                    "websocket://0.0.0.0:17272".into(),
                    "text+tls://[2001:db8::1]:17273".into(),
                    "127.0.0.1:12900".into(),
                ],
                connections: 123_456,
                state: "running, 2 worker(s)".into(),
                ..Default::default()
            },
            ProcessStatus { pid: 7, name: "w".into(), connections: 1, state: "running".into(), ..Default::default() },
        ];
        let t = status_table("gateway \"g\"", &rows);
        let lines: Vec<&str> = t.lines().collect();
        let header = lines[1];
        // Where each right-aligned number column ends in the header, it ends in every row.
        let end_of = |line: &str, word: &str| line.find(word).map(|i| i + word.len());
        let conns = end_of(header, "conns").unwrap();
        let state = header.find("state").unwrap();
        assert_eq!(end_of(lines[2], "123456"), Some(conns), "{t}");
        assert_eq!(lines[2].find("running, 2"), Some(state), "{t}");
        let w = lines.iter().find(|l| l.starts_with("7 ")).expect("the second process");
        assert_eq!(w.find("running"), Some(state), "{t}");
        // One listen address per line, in the listen column.
        let listen = header.find("listen").unwrap();
        assert_eq!(lines[3].find("text+tls"), Some(listen), "{t}");
        assert_eq!(lines[4].trim_end(), format!("{}127.0.0.1:12900", " ".repeat(listen)), "{t}");
        // The rules span the widest line.
        let widest = lines[1..lines.len() - 3].iter().map(|l| l.len()).max().unwrap();
        assert_eq!(lines[0].len(), widest, "{t}");
    }

    #[test]
    fn connection_rows_stay_one_line_whatever_the_uid_holds() {
        let rows = vec![ConnectionRow {
            client_id: "c1".into(),
            uid: Some("evil\n\u{1b}[2Juid".into()),
            groups: vec!["g\r1".into()],
            ..Default::default()
        }];
        let t = connections_table(&rows);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.contains("evil\\n\\u{1b}[2Juid") && t.contains("g\\r1"), "{t}");
    }
}
