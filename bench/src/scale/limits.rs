//! The machine's limits on holding connections, and naming the one a run ran into.
//!
//! Every resource a connection takes has a limit the scenario reads before and after: descriptors
//! (`RLIMIT_NOFILE` per process, `fs.file-max` for the machine), ephemeral ports per source
//! address, the conntrack table (loopback connections are tracked too), the kernel's TCP buffer
//! memory (`net.ipv4.tcp_mem`) and memory. Failed connects are counted by the error that says
//! which one ran out.

use std::io;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::lean_ws::ConnectError;
use crate::procfs;

/// Raises the soft open-files limit to the hard one (all a process can do by itself); returns
/// the limit in force.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() => hard,
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Why a generator stopped opening connections before its share was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// MemAvailable fell under the floor.
    Memory,
    /// The conntrack table is nearly full: a full table drops every new connection of the
    /// machine, other tenants' and the session's own included, so the run stops short of it.
    Conntrack,
    /// Too many connects failed.
    Failures,
}

impl Stop {
    /// The name reported in `stopped=`.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Memory => "memory",
            Stop::Conntrack => "conntrack",
            Stop::Failures => "failures",
        }
    }
}

/// Checked every few hundred connections: is a machine-wide resource about to run out?
pub fn guard(min_mem_available_kib: u64) -> Option<Stop> {
    if procfs::meminfo_kib("MemAvailable").is_some_and(|kib| kib < min_mem_available_kib) {
        return Some(Stop::Memory);
    }
    let count = procfs::numbers("/proc/sys/net/netfilter/nf_conntrack_count");
    let max = procfs::numbers("/proc/sys/net/netfilter/nf_conntrack_max");
    match (count.first(), max.first()) {
        // 5 % stays free for everything else on the machine.
        (Some(&c), Some(&m)) if m > 0 && c * 100 >= m * 95 => Some(Stop::Conntrack),
        _ => None,
    }
}

/// What failed connects ran into, by kind (the order of [`Failures::KINDS`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Failures {
    /// Out of descriptors (EMFILE, ENFILE).
    pub fds: u64,
    /// Out of ports for a source address (EADDRINUSE, EADDRNOTAVAIL).
    pub ports: u64,
    /// Out of kernel memory (ENOMEM, ENOBUFS).
    pub memory: u64,
    /// No answer in time: SYNs dropped (a full conntrack table or listen queue) or an overloaded
    /// gateway.
    pub timeout: u64,
    /// Refused or reset by the gateway, or its upgrade answer was not 101 (its caps).
    pub refused: u64,
    /// Anything else.
    pub other: u64,
}

impl Failures {
    /// The field names, as reported.
    pub const KINDS: [&'static str; 6] = ["fds", "ports", "memory", "timeout", "refused", "other"];

    /// Counts one failure.
    pub fn add(&mut self, e: &ConnectError) {
        let n = match e {
            ConnectError::Timeout => &mut self.timeout,
            ConnectError::Rejected(_) => &mut self.refused,
            ConnectError::Io(_, e) => match e.raw_os_error() {
                Some(23 | 24) => &mut self.fds,
                Some(98 | 99) => &mut self.ports,
                Some(12 | 105) => &mut self.memory,
                Some(111 | 104) => &mut self.refused,
                _ if e.kind() == io::ErrorKind::TimedOut => &mut self.timeout,
                _ => &mut self.other,
            },
        };
        *n += 1;
    }

    fn values(&self) -> [u64; 6] {
        [self.fds, self.ports, self.memory, self.timeout, self.refused, self.other]
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.values().iter().sum()
    }

    /// `fail_fds=… fail_ports=…`.
    pub fn fields(&self) -> String {
        Self::KINDS.iter().zip(self.values()).map(|(k, v)| format!("fail_{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    /// Sums the `fail_*` fields of generator reports.
    pub fn merge(&mut self, p: &crate::coord::Part) {
        let get = |k: &str| p.get(&format!("fail_{k}")).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        self.fds += get("fds");
        self.ports += get("ports");
        self.memory += get("memory");
        self.timeout += get("timeout");
        self.refused += get("refused");
        self.other += get("other");
    }
}

/// Readings of the machine-wide limits and their use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine {
    /// `nf_conntrack_count` / `nf_conntrack_max` (0/0 without conntrack).
    pub conntrack: (u64, u64),
    /// Open files / `fs.file-max`.
    pub files: (u64, u64),
    /// TCP buffer memory in pages / the `tcp_mem` pressure-free maximum (third value).
    pub tcp_mem_pages: (u64, u64),
    /// MemAvailable and MemTotal in KiB.
    pub mem_kib: (u64, u64),
    /// Slab memory in KiB (socket structures live there).
    pub slab_kib: u64,
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// Ephemeral ports per source address.
    pub ports_per_source: u64,
}

impl Machine {
    /// Reads the limits and their use now.
    pub fn read() -> Self {
        let first = |p: &str, i: usize| procfs::numbers(p).get(i).copied().unwrap_or(0);
        let (tcp_inuse, tcp_mem) = procfs::sockstat_tcp();
        let range = procfs::numbers("/proc/sys/net/ipv4/ip_local_port_range");
        Self {
            conntrack: (
                first("/proc/sys/net/netfilter/nf_conntrack_count", 0),
                first("/proc/sys/net/netfilter/nf_conntrack_max", 0),
            ),
            files: (first("/proc/sys/fs/file-nr", 0), first("/proc/sys/fs/file-max", 0)),
            tcp_mem_pages: (tcp_mem, first("/proc/sys/net/ipv4/tcp_mem", 2)),
            mem_kib: (procfs::meminfo_kib("MemAvailable").unwrap_or(0), procfs::meminfo_kib("MemTotal").unwrap_or(0)),
            slab_kib: procfs::meminfo_kib("Slab").unwrap_or(0),
            tcp_inuse,
            ports_per_source: match range[..] {
                [lo, hi, ..] if hi >= lo => hi - lo + 1,
                _ => 0,
            },
        }
    }

    /// `conntrack=…/… files=…/… …` for the report.
    pub fn fields(&self) -> String {
        format!(
            "conntrack={}/{} files={}/{} tcp_mem_pages={}/{} mem_available_kib={} mem_total_kib={} slab_kib={} \
             tcp_inuse={} ports_per_source={}",
            self.conntrack.0,
            self.conntrack.1,
            self.files.0,
            self.files.1,
            self.tcp_mem_pages.0,
            self.tcp_mem_pages.1,
            self.mem_kib.0,
            self.mem_kib.1,
            self.slab_kib,
            self.tcp_inuse,
            self.ports_per_source,
        )
    }

    /// How many more clients (a client and a server socket each) each machine-wide limit leaves
    /// room for, the tightest first, given the memory one client costs the whole machine. Says
    /// what the next limit is when the target was reached.
    pub fn headroom(&self, mem_per_conn_kib: f64) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        if self.conntrack.1 > 0 {
            out.push(("conntrack", self.conntrack.1.saturating_sub(self.conntrack.0)));
        }
        out.push(("files", self.files.1.saturating_sub(self.files.0) / 2));
        if mem_per_conn_kib > 0.0 {
            out.push(("memory", (self.mem_kib.0 as f64 / mem_per_conn_kib) as u64));
        }
        out.sort_by_key(|(_, n)| *n);
        out
    }
}

/// The resource that stopped a run short of its target, with its figure.
pub fn name_limit(
    target: u64,
    held: u64,
    failures: &Failures,
    stopped: &[String],
    m: &Machine,
    floor_mib: u64,
    per_proc_nofile: u64,
) -> String {
    if held >= target {
        return "none".into();
    }
    if stopped.iter().any(|s| s == Stop::Memory.name()) {
        return format!(
            "memory: MemAvailable {} KiB of {} KiB, under the {floor_mib} MiB floor, at {held} clients (generators \
             stopped connecting)",
            m.mem_kib.0, m.mem_kib.1
        );
    }
    if stopped.iter().any(|s| s == Stop::Conntrack.name()) {
        return format!(
            "conntrack: table at {}/{} (95 % or more) at {held} clients (generators stopped connecting; \
             --raise-conntrack lifts it)",
            m.conntrack.0, m.conntrack.1
        );
    }
    let conntrack_full = m.conntrack.1 > 0 && m.conntrack.0 * 100 >= m.conntrack.1 * 98;
    let f = failures;
    let by_count = [
        (
            f.fds,
            format!(
                "fds: EMFILE/ENFILE after {held} clients (RLIMIT_NOFILE {per_proc_nofile}, files {}/{})",
                m.files.0, m.files.1
            ),
        ),
        (f.ports, format!("ports: no free port for a source address ({} per address)", m.ports_per_source)),
        (f.memory, format!("memory: ENOMEM/ENOBUFS at {held} clients (MemAvailable {} KiB)", m.mem_kib.0)),
        (
            f.timeout,
            if conntrack_full {
                format!("conntrack: table full ({}/{}) at {held} clients, SYNs dropped", m.conntrack.0, m.conntrack.1)
            } else {
                format!("timeouts: connects unanswered at {held} clients (gateways or listen queues overloaded: CPU)")
            },
        ),
        (f.refused, format!("gateway caps: connections refused or upgrades rejected at {held} clients")),
        (f.other, format!("other errors at {held} clients")),
    ];
    match by_count.into_iter().filter(|(n, _)| *n > 0).max_by_key(|(n, _)| *n) {
        Some((_, why)) => why,
        None if m.mem_kib.1 > 0 && m.mem_kib.0 * 100 < m.mem_kib.1 * 3 => {
            format!("memory: MemAvailable {} KiB of {} KiB at {held} clients", m.mem_kib.0, m.mem_kib.1)
        }
        None => format!("clients lost after connecting: {held} of {target} held"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_the_resource_that_ran_out() {
        let mut f = Failures::default();
        f.add(&ConnectError::Io("socket", io::Error::from_raw_os_error(24)));
        f.add(&ConnectError::Io("bind", io::Error::from_raw_os_error(98)));
        f.add(&ConnectError::Io("connect", io::Error::from_raw_os_error(99)));
        f.add(&ConnectError::Io("connect", io::Error::from_raw_os_error(111)));
        f.add(&ConnectError::Timeout);
        f.add(&ConnectError::Rejected("HTTP/1.1 503".into()));
        assert_eq!(f.fields(), "fail_fds=1 fail_ports=2 fail_memory=0 fail_timeout=1 fail_refused=2 fail_other=0");
        let mut m = Failures::default();
        m.merge(&crate::coord::parse_part(&format!("PART {}", f.fields())));
        assert_eq!(m.total(), 6);
    }

    #[test]
    fn the_limit_is_named_with_its_figure() {
        let machine = Machine { conntrack: (262_100, 262_144), ..Machine::default() };
        let f = Failures { timeout: 300, ..Failures::default() };
        let name = |target, held, f: &Failures, stopped: &[&str]| {
            let stopped: Vec<String> = stopped.iter().map(|s| s.to_string()).collect();
            name_limit(target, held, f, &stopped, &machine, 4096, 20_000)
        };
        assert!(name(1_000_000, 250_000, &f, &[]).starts_with("conntrack: table full (262100/262144)"));
        assert_eq!(name(10, 10, &f, &[]), "none");
        let f = Failures { ports: 5, timeout: 1, ..Failures::default() };
        assert!(name(10, 5, &f, &[]).starts_with("ports"));
        assert!(name(10, 5, &f, &["failures", "memory"]).starts_with("memory: MemAvailable"));
        assert!(name(10, 5, &f, &["conntrack"]).starts_with("conntrack: table at 262100/262144"));
    }
}
