//! Pid files: refuse to start twice, find the running process for `stop`, clean up stale files.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    // A zombie still answers signal 0; its state in /proc is `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => true,
    }
}

/// Sends a signal to `pid`.
pub fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    kill(Pid::from_raw(pid as i32), sig).map_err(std::io::Error::from)
}

/// The pid recorded in `path` if that process is alive.
pub fn running(path: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse::<u32>().ok()?;
    (pid != std::process::id() && alive(pid)).then_some(pid)
}

/// A pid file owned by this process; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

/// Why a pid file could not be taken.
#[derive(Debug)]
pub enum PidFileError {
    /// Another live process holds it.
    Running(u32),
    /// The pid file could not be read or written.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for PidFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidFileError::Running(pid) => write!(f, "already running (pid {pid})"),
            PidFileError::Io(p, e) => write!(f, "cannot write pid file {}: {e}", p.display()),
        }
    }
}

impl PidFile {
    /// Takes the pid file: refuses if a live process holds it, replaces a stale one. Creation is
    /// exclusive, so of two processes starting at once only one wins.
    pub fn acquire(path: &Path) -> Result<Self, PidFileError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PidFileError::Io(path.into(), e))?;
        }
        for _ in 0..3 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(|e| PidFileError::Io(path.into(), e))?;
                    return Ok(Self { path: path.into() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(pid) = running(path) {
                        return Err(PidFileError::Running(pid));
                    }
                    // Stale (or ours from a previous life): remove and retry.
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => return Err(PidFileError::Io(path.into(), e)),
            }
        }
        Err(PidFileError::Io(path.into(), std::io::Error::other("pid file keeps reappearing")))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only remove it if it is still ours.
        if std::fs::read_to_string(&self.path).ok().and_then(|s| s.trim().parse::<u32>().ok())
            == Some(std::process::id())
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Sends `signal` to a process and makes it visible for callers that only have `Signal`.
pub use nix::sys::signal::Signal as Sig;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_while_the_holder_lives_and_stale_files_are_replaced() {
        let dir = std::env::temp_dir().join(format!("gw-pid-{}", std::process::id()));
        let path = dir.join("x.pid");
        // A stale file naming a pid that cannot exist.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "4194304999\n").unwrap();
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        // Our own pid counts as "not running" for `running`, so simulate another holder: pid 1.
        drop(held);
        assert!(!path.exists(), "removed on drop");
        std::fs::write(&path, "1\n").unwrap();
        match PidFile::acquire(&path) {
            Err(PidFileError::Running(1)) => {}
            other => panic!("expected Running(1), got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
