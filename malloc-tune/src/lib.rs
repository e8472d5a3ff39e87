//! glibc malloc settings a daemon applies at its start, before its runtime's threads exist.
//!
//! glibc gives threads that allocate at the same time arenas of their own (up to 8 per core).
//! A gateway's connections are made on one runtime thread and freed on another, so their
//! memory is spread over several arenas, each with its own partly used pages: measured with
//! 19,000 idle WebSocket clients, one arena keeps about 100 B less resident memory per client
//! than glibc's default, with no measurable change in echo throughput (BENCHMARKS.md, "An
//! idle client at rest"). Each thread keeps its own cache of small blocks (glibc's tcache)
//! either way, so one arena is taken under a lock only when that cache is empty or full.

/// The environment variable glibc reads for the same setting at process start; when it is
/// set, it wins over the configuration.
pub const ENV: &str = "MALLOC_ARENA_MAX";

/// What [`limit_arenas`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arenas {
    /// Limited to this many arenas.
    Limited(usize),
    /// Left as glibc decides: asked for 0.
    Default,
    /// Left alone: `MALLOC_ARENA_MAX` is set in the environment, which glibc applied already.
    FromEnvironment,
    /// Not a glibc build: nothing to set.
    Unsupported,
}

/// Limits glibc's malloc to `arenas` arenas (0: glibc's default, 8 per core). Call it before
/// any other thread starts: a thread that already took an arena of its own keeps it.
pub fn limit_arenas(arenas: usize) -> Arenas {
    if arenas == 0 {
        return Arenas::Default;
    }
    if std::env::var_os(ENV).is_some() {
        return Arenas::FromEnvironment;
    }
    set_arena_max(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: usize) -> Arenas {
    let n = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` takes two integers and changes a setting of glibc's allocator under its
    // own lock; no pointer is passed and no memory of ours is touched.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    if ok == 1 { Arenas::Limited(arenas) } else { Arenas::Default }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) -> Arenas {
    Arenas::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_leaves_glibc_s_default_and_a_count_is_applied() {
        assert_eq!(limit_arenas(0), Arenas::Default);
        if std::env::var_os(ENV).is_some() {
            assert_eq!(limit_arenas(1), Arenas::FromEnvironment);
        } else if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(limit_arenas(2), Arenas::Limited(2));
        } else {
            assert_eq!(limit_arenas(1), Arenas::Unsupported);
        }
    }
}
