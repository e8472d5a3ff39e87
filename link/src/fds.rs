//! File descriptors as a resource an accept loop must survive running out of: how many are
//! open, whether an accept error means there are none left, and the spare one a listener frees
//! to answer a pending client instead of leaving it in the backlog.

use std::fs::File;
use std::io;
use std::sync::Mutex;

/// Descriptors this process has open now (Linux `/proc`, or `/dev/fd` elsewhere).
pub fn open_descriptors() -> Option<usize> {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok())
        // Reading the directory opens one descriptor itself.
        .map(|entries| entries.count().saturating_sub(1))
}

/// Whether an accept error means the process or system is out of descriptors.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE)
}

/// One descriptor held back so that, out of descriptors, a pending connection can still be
/// accepted and closed (the libev/nginx technique).
#[derive(Debug)]
pub struct SpareFd(Mutex<Option<File>>);

impl SpareFd {
    /// Opens the spare descriptor (on `/dev/null`).
    pub fn new() -> Self {
        Self(Mutex::new(File::open("/dev/null").ok()))
    }

    /// Frees the spare descriptor, runs `use_it` (which should take one connection and close it),
    /// then takes the descriptor back. Returns `None` when there was no spare to free.
    pub fn spend<T>(&self, use_it: impl FnOnce() -> T) -> Option<T> {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        drop(spare.take()?);
        let result = use_it();
        // May fail if another thread took the descriptor first; the next shed tries again.
        *spare = File::open("/dev/null").ok();
        Some(result)
    }

    /// Tries to get the spare back after an earlier failure.
    pub fn refill(&self) {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_none() {
            *spare = File::open("/dev/null").ok();
        }
    }
}

impl Default for SpareFd {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_spare_is_freed_for_the_closure_and_taken_back() {
        use std::os::fd::AsRawFd;
        let spare = SpareFd::new();
        let fd = spare.0.lock().unwrap().as_ref().expect("a spare at start").as_raw_fd();
        let target = || std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        assert_eq!(target(), Some("/dev/null".into()));
        let during = spare.spend(target).expect("there was a spare to spend");
        assert_ne!(during, Some("/dev/null".into()), "the spare was not freed");
        assert!(spare.0.lock().unwrap().is_some(), "the spare was not taken back");
        assert_eq!(spare.spend(|| ()), Some(()));
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion_and_others_are_not() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(nix::libc::ENFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(nix::libc::ECONNABORTED)));
    }

    #[test]
    fn counts_open_descriptors() {
        assert!(open_descriptors().is_some_and(|n| n >= 3));
    }
}
