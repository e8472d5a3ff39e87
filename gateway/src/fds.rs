//! The gateway's file-descriptor budget.
//!
//! A gateway that runs out of descriptors must not lose its workers: client sockets are capped
//! at what `RLIMIT_NOFILE` allows once the descriptors open at start and a reserve for internal
//! links (workers, gateway clients, registers, admin and control connections) are set aside. If
//! the process runs out anyway, the accept loop (`gw_link::accept`) sheds pending clients with a
//! spare descriptor rather than leave them hanging in the backlog, and backs off instead of
//! spinning.

use gw_link::fds::open_descriptors;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// How many client sockets fit, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` after raising it to the hard limit; `None` when unknown.
    pub limit: Option<u64>,
    /// Descriptors open when the gateway was built.
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
        /// Descriptors open when the gateway was built.
        open_at_start: usize,
        /// `fd_reserve`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_max_connections_when_the_limit_is_ample() {
        let b = FdBudget::compute(10, 16).unwrap();
        assert_eq!(b.client_capacity, 10);
        assert!(b.open_at_start >= 3, "{b:?}");
    }
}
