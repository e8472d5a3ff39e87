//! The dialing side's reconnect loop: attempt, log, back off, attempt again, until stopped.
//! Links to registers and a worker's or client's links to gateways all run it.

use std::future::Future;

use gw_config::LinkConfig;
use tokio_util::sync::CancellationToken;

use crate::{Backoff, LinkError};

/// What one attempt of a dialing link came to.
#[derive(Debug)]
pub struct Attempt {
    /// The link came up (handshake done) before it ended: the backoff starts over.
    pub connected: bool,
    /// How the link or the attempt ended.
    pub result: Result<(), LinkError>,
}

/// Dials one peer again and again, with the `[link]` reconnect backoff, until `stop` is cancelled
/// or `again` says not to retry. Failures are logged (a warning for the first of a run, then
/// debug) as `"{what} link failed; retrying with backoff"`; ordinary disconnects at info, and so
/// is the first failure after the peer closed the link cleanly (it stopped gracefully).
///
/// Logs go to the caller's span: instrument the future with the peer's identity.
///
/// # Examples
///
/// ```no_run
/// # async fn example(stop: tokio_util::sync::CancellationToken) {
/// use gw_link::{Attempt, keep_dialing};
/// let link = gw_config::LinkConfig::default();
/// keep_dialing("gateway", &link, &stop, || async { Attempt { connected: false, result: Ok(()) } }, || true).await;
/// # }
/// ```
pub async fn keep_dialing<F, Fut>(
    what: &'static str,
    link: &LinkConfig,
    stop: &CancellationToken,
    mut attempt: F,
    mut again: impl FnMut() -> bool,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut backoff = Backoff::new(link.reconnect_min, link.reconnect_max);
    let mut failures = 0u32;
    // The peer closed the last link cleanly (a graceful stop): its absence is expected, not news.
    let mut peer_closed = false;
    loop {
        let Attempt { connected, result } = tokio::select! {
            _ = stop.cancelled() => return,
            a = attempt() => a,
        };
        if connected {
            backoff.reset();
            failures = 0;
            peer_closed = false;
        }
        match result {
            Ok(()) => {
                peer_closed = connected;
                tracing::info!("{what} link closed");
            }
            Err(e) if e.is_disconnect() => tracing::info!(error = %e, "{what} link closed"),
            Err(e) => {
                failures += 1;
                // Say it loudly once, then quietly while the peer stays away; a peer that said
                // goodbye first (stopped gracefully) is not a failure worth a warning.
                if failures == 1 && peer_closed {
                    tracing::info!(error = %e, "{what} stopped after closing the link; retrying with backoff");
                } else if failures == 1 {
                    tracing::warn!(error = %e, "{what} link failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, failures, "{what} still unreachable");
                }
            }
        }
        if !again() {
            return;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
