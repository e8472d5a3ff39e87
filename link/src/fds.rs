//! File descriptors as a resource a listener must survive running out of: how many clients fit
//! under the open-files limit once a reserve for internal links is set aside ([`FdBudget`]), how
//! many are open, whether an accept error means there are none left, and the spare one a listener
//! frees to answer a pending client instead of leaving it in the backlog.

use std::fs::File;
use std::io;
use std::sync::Mutex;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// How many client sockets fit, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` after raising it to the hard limit; `None` when unknown.
    pub limit: Option<u64>,
    /// Descriptors open when the budget was computed (at start).
    pub open_at_start: usize,
    /// Descriptors kept for internal links.
    pub reserve: usize,
    /// Client sockets at most: `max_connections`, or less when the limit leaves less.
    pub client_capacity: usize,
}

impl FdBudget {
    /// Raises the soft descriptor limit to the hard one (as nginx's `worker_rlimit_nofile` and
    /// Go's runtime do), then sizes client capacity. Errors when nothing is left for clients.
    pub fn compute(max_connections: usize, reserve: usize) -> Result<Self, FdBudgetError> {
        let limit = raise_nofile();
        let open_at_start = open_descriptors().unwrap_or(32);
        let client_capacity = match limit {
            None => max_connections,
            Some(limit) => {
                let spare = 1; // the shedding descriptor
                let usable = (limit as usize).saturating_sub(open_at_start + reserve + spare);
                if usable == 0 {
                    return Err(FdBudgetError::NoneLeft { limit, open_at_start, reserve });
                }
                usable.min(max_connections)
            }
        };
        Ok(Self { limit, open_at_start, reserve, client_capacity })
    }
}

/// The open-files limit leaves no descriptor for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FdBudgetError {
    /// Everything under the limit is open already or kept for internal links.
    #[error(
        "the open-files limit (RLIMIT_NOFILE) is {limit}: after the {open_at_start} descriptors open at start and \
         fd_reserve = {reserve} kept for internal links, none are left for clients; raise the limit (`ulimit -n`, \
         LimitNOFILE=, docker `--ulimit nofile=`) or lower fd_reserve"
    )]
    NoneLeft {
        /// The soft limit in force.
        limit: u64,
        /// Descriptors open at start.
        open_at_start: usize,
        /// Descriptors kept for internal links (a gateway's `fd_reserve`).
        reserve: usize,
    },
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force.
fn raise_nofile() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

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
    fn capacity_is_max_connections_when_the_limit_is_ample() {
        let b = FdBudget::compute(10, 16).unwrap();
        assert_eq!(b.client_capacity, 10);
        assert!(b.open_at_start >= 3, "{b:?}");
    }

    #[test]
    fn counts_open_descriptors() {
        assert!(open_descriptors().is_some_and(|n| n >= 3));
    }
}
