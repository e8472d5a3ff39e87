//! The writing half of a link: drains its queue into one buffer and writes it with one syscall,
//! so a burst of small frames costs one write instead of one each.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::LinkError;
use crate::wire::Wire;

/// Most frames drained into one write.
const MAX_BATCH: usize = 512;
/// Stop draining once the buffer holds this much.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Counters a link exposes for metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Frames written.
    pub frames: AtomicU64,
    /// Write calls (each carries one or more frames).
    pub writes: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Messages dropped because they could not be framed (see [`unframeable_dropped`]).
    pub unframeable: AtomicU64,
}

/// Every outgoing internal message this process's link writers dropped because it could not be
/// framed (over `max_frame`), over all links. Each path that could build such a message checks
/// its size first and counts its own refusal, so this stays 0; it is exported in `/metrics`
/// so that a path that does not is seen, not silent.
static UNFRAMEABLE_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many outgoing internal messages the link writers of this process dropped as unframeable.
pub fn unframeable_dropped() -> u64 {
    UNFRAMEABLE_DROPPED.load(Ordering::Relaxed)
}

/// Writes every message from `rx`, encoded by `wire`, until the channel closes or `finish` is
/// cancelled (then writes what is still queued, flushes and returns `Ok`), or the socket fails.
/// With a `delay`, the first message of each write waits that long for others to join it. After
/// each successful write the wire hears [`written`](Wire::written). A message that cannot be
/// encoded (too large for a frame) is logged and skipped: it is the sender's bug, not the link's.
pub(crate) async fn write_loop<M, O>(
    mut out: O,
    rx: &mut mpsc::Receiver<M::Out>,
    wire: &mut M,
    max_frame: usize,
    delay: std::time::Duration,
    stats: &WriterStats,
    finish: &tokio_util::sync::CancellationToken,
) -> Result<(), LinkError>
where
    M: Wire,
    O: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = finish.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = next else { break };
        if !delay.is_zero() && !finish.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = finish.cancelled() => {}
            }
        }
        encode(wire, first, &mut buf, max_frame, stats);
        let mut frames = 1u64;
        while frames < MAX_BATCH as u64 && buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(msg) => {
                    encode(wire, msg, &mut buf, max_frame, stats);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        out.write_all(&buf).await?;
        wire.written();
        stats.frames.fetch_add(frames, Ordering::Relaxed);
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        buf.clear();
        if buf.capacity() > 4 * MAX_BATCH_BYTES {
            buf.shrink_to(8 * 1024);
        }
    }
    out.flush().await?;
    out.shutdown().await.ok();
    Ok(())
}

fn encode<M: Wire>(wire: &mut M, msg: M::Out, buf: &mut Vec<u8>, max_frame: usize, stats: &WriterStats) {
    if let Err(e) = wire.encode(msg, buf, max_frame) {
        stats.unframeable.fetch_add(1, Ordering::Relaxed);
        UNFRAMEABLE_DROPPED.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "dropping an outgoing internal message that cannot be framed (counted in gw_link_unframeable_dropped_total)");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gw_proto::ToGateway;

    use crate::wire::GatewayPeerSide;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Sends three messages 2 ms apart to a writer with `delay`; returns its (frames, writes).
    async fn write_three(delay: Duration) -> (u64, u64) {
        let (tx, mut rx) = mpsc::channel(16);
        let (sink, mut peer) = tokio::io::duplex(1 << 16);
        let stats = WriterStats::default();
        let finish = CancellationToken::new();
        let sending = async {
            for _ in 0..3 {
                tx.send(ToGateway::Ping).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(tx);
        };
        let draining = async {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut all).await.unwrap();
        };
        let mut wire = GatewayPeerSide;
        let (written, (), ()) =
            tokio::join!(write_loop(sink, &mut rx, &mut wire, 1 << 16, delay, &stats, &finish), sending, draining);
        written.unwrap();
        (stats.frames.load(Ordering::Relaxed), stats.writes.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_delay_gathers_messages_into_one_write() {
        assert_eq!(write_three(Duration::ZERO).await, (3, 3), "no delay: one write each");
        assert_eq!(write_three(Duration::from_millis(10)).await, (3, 1), "10 ms: one write for all three");
    }

    #[tokio::test]
    async fn a_message_too_large_for_a_frame_is_dropped_counted_and_the_next_one_written() {
        let (tx, mut rx) = mpsc::channel(16);
        let (sink, mut peer) = tokio::io::duplex(1 << 16);
        let stats = WriterStats::default();
        let finish = CancellationToken::new();
        let big = ToGateway::Request {
            id: 1,
            query: gw_proto::Query::Sessions { clients: None, group: Some("g".repeat(2000)) },
        };
        tx.send(big).await.unwrap();
        tx.send(ToGateway::Ping).await.unwrap();
        drop(tx);
        let before = unframeable_dropped();
        let mut wire = GatewayPeerSide;
        write_loop(sink, &mut rx, &mut wire, 1024, Duration::ZERO, &stats, &finish).await.unwrap();
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut all).await.unwrap();
        assert_eq!(stats.unframeable.load(Ordering::Relaxed), 1);
        assert!(unframeable_dropped() > before, "the process-wide counter moved too");
        let mut expected = Vec::new();
        gw_proto::encode_frame(&ToGateway::Ping, &mut expected, 1024).unwrap();
        assert_eq!(all, expected, "only the ping was written");
    }
}
