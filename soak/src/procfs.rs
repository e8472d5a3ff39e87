//! What /proc says about a process: parent, children, command line, open files, resident memory.

use std::path::Path;

/// Parent pid and state letter of `pid` (`R`, `S`, `T` for stopped, `Z` for zombie, …).
pub fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: read after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((_, s)) if s != 'Z' && s != 'X')
}

fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Live children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    pids().into_iter().filter(|&p| matches!(stat(p), Some((pp, s)) if pp == parent && s != 'Z')).collect()
}

/// Live processes whose command line mentions `needle` (a config path): `(pid, ppid)`.
pub fn with_arg(needle: &Path) -> Vec<(u32, u32)> {
    let needle = needle.as_os_str().as_encoded_bytes();
    pids()
        .into_iter()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle))
        })
        .filter_map(|p| match stat(p) {
            Some((ppid, s)) if s != 'Z' => Some((p, ppid)),
            _ => None,
        })
        .collect()
}

/// Number of open file descriptors.
pub fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory in bytes (VmRSS).
pub fn rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
