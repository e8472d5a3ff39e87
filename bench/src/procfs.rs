//! What the benchmark reads from /proc: CPU time and resident memory of the servers and of itself.

use std::time::Instant;

/// Linux's USER_HZ: the unit of utime/stime in `/proc/<pid>/stat` (100 on every mainstream kernel).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of a process (all its threads), in seconds; `None` if it is gone.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// User and system CPU time of a process (all its threads) apart, in seconds.
pub fn cpu_user_sys(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / TICKS_PER_SEC, stime / TICKS_PER_SEC))
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Voluntary context switches of every thread of these processes: each is a thread that ran out
/// of work and slept, so their growth over a window counts wake-ups.
pub fn sleeps(pids: &[String]) -> u64 {
    let mut n = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            n += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    n
}

/// Busy CPU time of the whole machine (every process, kernel included) in seconds.
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: everything but idle and iowait is busy.
    let busy = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum::<f64>();
    Some(busy / TICKS_PER_SEC)
}

/// The whitespace-separated numbers of a /proc or /sys file (empty if it cannot be read).
pub fn numbers(path: &str) -> Vec<u64> {
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().filter_map(|v| v.parse().ok()).collect()
}

/// A field of /proc/meminfo in KiB (`MemAvailable`, `Slab`, …).
pub fn meminfo_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// From /proc/net/sockstat's `TCP:` line: sockets in use and buffer memory in pages.
pub fn sockstat_tcp() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else { return (0, 0) };
    let f: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| f.iter().position(|k| *k == key).and_then(|i| f.get(i + 1)?.parse().ok()).unwrap_or(0);
    (after("inuse"), after("mem"))
}

/// TCP counters of the whole machine from /proc/net/netstat (`TcpExt: ListenOverflows` …).
pub fn tcp_ext(names: &[&str]) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(head), Some(values)) = (lines.next(), lines.next()) {
        if head.starts_with("TcpExt:") {
            let keys: Vec<&str> = head.split_whitespace().collect();
            let vals: Vec<&str> = values.split_whitespace().collect();
            return names
                .iter()
                .map(|n| keys.iter().position(|k| k == n).and_then(|i| vals.get(i)?.parse().ok()).unwrap_or(0))
                .collect();
        }
    }
    vec![0; names.len()]
}

/// `pids` and all their descendants (a business-worker master runs its workers as children).
pub fn with_descendants(pids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo: Vec<String> = pids.to_vec();
    while let Some(pid) = todo.pop() {
        if out.contains(&pid) {
            continue;
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    todo.extend(children.split_whitespace().map(str::to_string));
                }
            }
        }
        out.push(pid);
    }
    out
}

/// CPU used by the servers and by this process over a window, in cores (1.0 = one core busy).
#[derive(Debug)]
pub struct CpuWindow {
    servers: Vec<String>,
    start: Instant,
    server0: f64,
    self0: f64,
    machine0: f64,
}

/// What a [`CpuWindow`] measured, in cores (1.0 = one core busy for the whole window).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// The server processes and their children.
    pub server: f64,
    /// This generator process.
    pub generator: f64,
    /// The whole machine: the difference to server + generator is other tenants' load.
    pub machine: f64,
}

impl CpuUse {
    /// `server_cores=… gen_cores=… machine_cores=…` (the format every scenario prints).
    pub fn fields(&self) -> String {
        format!("server_cores={:.2} gen_cores={:.2} machine_cores={:.2}", self.server, self.generator, self.machine)
    }
}

impl CpuWindow {
    /// Starts measuring `servers` (and their descendants) and this process.
    pub fn start(servers: &[String]) -> Self {
        let servers = with_descendants(servers);
        Self {
            start: Instant::now(),
            server0: servers.iter().filter_map(|p| cpu_secs(p)).sum(),
            servers,
            self0: cpu_secs("self").unwrap_or(0.0),
            machine0: machine_busy_secs().unwrap_or(0.0),
        }
    }

    /// CPU used since `start`.
    pub fn finish(&self) -> CpuUse {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let server: f64 = self.servers.iter().filter_map(|p| cpu_secs(p)).sum();
        let me = cpu_secs("self").unwrap_or(0.0);
        let machine = machine_busy_secs().unwrap_or(0.0);
        CpuUse {
            server: (server - self.server0) / secs,
            generator: (me - self.self0) / secs,
            machine: (machine - self.machine0) / secs,
        }
    }
}
