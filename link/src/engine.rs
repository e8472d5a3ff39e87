//! The one link engine every internal link runs on (gateway ↔ worker/client, register ↔ peer).
//!
//! One link is one engine: a framed reader, a coalescing writer (its queue is the link's
//! outbox), a heartbeat, and a graceful close. The owner supplies a [`Wire`] (the message types
//! and which of them are ping and pong) and a [`Handler`] (what an arriving message means); the
//! engine answers pings itself, so handlers only see real messages.
//!
//! - **Heartbeat.** A ping goes out every `heartbeat_interval` (if the wire has one); a link that
//!   has heard nothing for `heartbeat_timeout` fails with [`LinkError::HeartbeatTimeout`]. Pings
//!   never wait for room: a full outbox already proves the link is busy.
//! - **Backpressure.** While the handler is busy with a message (for a worker: waiting for room in
//!   a client's queue), the engine reads nothing more but keeps pinging, and the silence it could
//!   not hear through does not count against the peer: a slow handler is busy, not dead.
//! - **Graceful close.** When the owner's `close` token is cancelled the engine stops reading,
//!   lets the handler queue its final frames ([`Handler::on_close`], e.g. a worker's last
//!   acknowledgement, then [`Handler::closing_outgoing`]), flushes the outbox for at most
//!   `flush_timeout` and disconnects.
//!
//! Reconnecting is the dialing side's business: see [`keep_dialing`](crate::keep_dialing).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gw_config::LinkConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::framed::FrameReader;
use crate::wire::{Beat, Wire};
use crate::{LinkError, WriterStats};

/// How long a graceful close may spend flushing what is queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Frame limit, heartbeat and flush settings of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// Largest frame written (a larger outgoing message is logged and skipped).
    pub max_frame: usize,
    /// A ping goes out this often.
    pub heartbeat_interval: Duration,
    /// A link silent for this long has failed (`Duration::MAX`: never, for a peer that sends no
    /// heartbeat).
    pub heartbeat_timeout: Duration,
    /// Longest a graceful close spends flushing.
    pub flush_timeout: Duration,
    /// How long the writer holds a message to gather more into the same write.
    pub write_delay: Duration,
}

impl From<&LinkConfig> for LinkOptions {
    /// The `[link]` settings, with the standard [`FLUSH_TIMEOUT`].
    fn from(link: &LinkConfig) -> Self {
        Self {
            max_frame: link.max_frame,
            heartbeat_interval: link.heartbeat_interval,
            heartbeat_timeout: link.heartbeat_timeout,
            flush_timeout: FLUSH_TIMEOUT,
            write_delay: link.write_delay,
        }
    }
}

/// What the owner of a link does with what arrives on it. Heartbeat messages never reach it.
pub trait Handler<W: Wire>: Send {
    /// A message arrived. While the returned future is pending the link reads nothing more (but
    /// keeps its heartbeat): waiting here is backpressure onto the peer. An error ends the link.
    fn on_message(&mut self, msg: W::In) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Every message received, heartbeats included (for a counter of received messages).
    fn on_received(&mut self) {}

    /// The owner's own source of outgoing messages besides replies (a register's gateway list
    /// feed), polled whenever the link waits to read. `None` ends the link cleanly. Must be
    /// cancel-safe. By default there is none.
    fn outgoing(&mut self) -> impl Future<Output = Option<W::Out>> + Send {
        std::future::pending()
    }

    /// The owner closes the link gracefully: reading has stopped; queue the final frames now
    /// (they are flushed before the link is dropped).
    fn on_close(&mut self) {}

    /// After [`on_close`](Self::on_close): the owner's own outgoing messages that are due, taken
    /// without waiting, until `None`. The engine queues each, waiting for room in the outbox
    /// while its writer drains it (within the flush timeout). None by default.
    fn closing_outgoing(&mut self) -> Option<W::Out> {
        None
    }
}

/// How a link ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The peer closed the link (or the handler's own source ended).
    Finished,
    /// The owner closed it through its `close` token; `flushed` tells whether everything queued
    /// was written within the flush timeout.
    Closed {
        /// Everything queued was written.
        flushed: bool,
    },
}

/// One link's engine, before it runs: its settings, its wire and its outbox. Take
/// [`sender`](Self::sender) clones for everyone who sends on the link, then [`run`](Self::run) it.
#[derive(Debug)]
pub struct LinkEngine<W: Wire> {
    options: LinkOptions,
    wire: W,
    tx: mpsc::Sender<W::Out>,
    rx: mpsc::Receiver<W::Out>,
    stats: Arc<WriterStats>,
}

impl<W: Wire + Default> LinkEngine<W> {
    /// An engine whose outbox holds up to `queue` messages before senders wait.
    pub fn new(options: LinkOptions, queue: usize) -> Self {
        Self::with_wire(W::default(), options, queue)
    }
}

impl<W: Wire> LinkEngine<W> {
    /// An engine writing through `wire` (a wire with encoder state of its own).
    pub fn with_wire(wire: W, options: LinkOptions, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Self { options, wire, tx, rx, stats: Arc::default() }
    }

    /// A handle that queues messages on this link, in order, behind everything queued before.
    pub fn sender(&self) -> mpsc::Sender<W::Out> {
        self.tx.clone()
    }

    /// The writer's counters (frames, writes, bytes).
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Runs the link until the peer leaves, it fails, or `close` is cancelled (then closes it
    /// gracefully). Cancel-safe only in the sense that dropping it drops the link.
    pub async fn run<R, O, H>(
        self,
        mut reader: FrameReader<R, W::Framing>,
        writer: O,
        handler: &mut H,
        close: &CancellationToken,
    ) -> Result<Ended, LinkError>
    where
        R: AsyncRead + Unpin + Send,
        O: AsyncWrite + Unpin + Send,
        H: Handler<W>,
    {
        let LinkEngine { options, mut wire, tx, mut rx, stats } = self;
        let finish = CancellationToken::new();
        let writer = crate::writer::write_loop(
            writer,
            &mut rx,
            &mut wire,
            options.max_frame,
            options.write_delay,
            &stats,
            &finish,
        );
        tokio::pin!(writer);
        let stop = {
            let reading = read_side::<W, R, H>(&mut reader, handler, &tx, &options);
            tokio::pin!(reading);
            tokio::select! {
                r = &mut reading => Stop::Read(r),
                r = &mut writer => {
                    if r.is_err() {
                        // The peer may have written all it had and closed (a stopping gateway's
                        // hand-over): what already arrived is still handled, up to the end of
                        // the stream or the flush timeout, not dropped with the link.
                        let _ = tokio::time::timeout(options.flush_timeout, &mut reading).await;
                    }
                    Stop::Write(r)
                }
                _ = close.cancelled() => Stop::Close,
            }
        };
        match stop {
            Stop::Read(r) | Stop::Write(r) => r.map(|()| Ended::Finished),
            Stop::Close => {
                handler.on_close();
                let last = async {
                    while let Some(msg) = handler.closing_outgoing() {
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                    finish.cancel();
                };
                let flushing = async { tokio::join!(last, &mut writer).1 };
                let flushed = tokio::time::timeout(options.flush_timeout, flushing).await.is_ok();
                Ok(Ended::Closed { flushed })
            }
        }
    }
}

enum Stop {
    Read(Result<(), LinkError>),
    Write(Result<(), LinkError>),
    Close,
}

/// Reads and handles messages, keeping the heartbeat, until the peer leaves or the link fails.
async fn read_side<W: Wire, R: AsyncRead + Unpin + Send, H: Handler<W>>(
    reader: &mut FrameReader<R, W::Framing>,
    handler: &mut H,
    tx: &mpsc::Sender<W::Out>,
    options: &LinkOptions,
) -> Result<(), LinkError> {
    let mut ping = tokio::time::interval(options.heartbeat_interval);
    let timeout = options.heartbeat_timeout;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(LinkError::HeartbeatTimeout(timeout));
                }
                // A full queue already proves the link is busy; never wait here.
                if let Some(ping) = W::ping() {
                    let _ = tx.try_send(ping);
                }
            }
            out = handler.outgoing() => {
                let Some(out) = out else { return Ok(()) };
                if tx.send(out).await.is_err() {
                    return Ok(());
                }
            }
            frame = reader.next() => {
                let Some(frame) = frame? else { return Ok(()) };
                let msg = W::decode(frame)?;
                last_heard = Instant::now();
                handler.on_received();
                match W::beat(&msg) {
                    Some(Beat::Ping) => {
                        if let Some(pong) = W::pong() {
                            let _ = tx.try_send(pong);
                        }
                    }
                    Some(Beat::Pong) => {}
                    None => {
                        if handle::<W, H>(handler, msg, &mut ping, tx).await? {
                            // Not reading meanwhile, we could not hear the peer: the silence
                            // says nothing about it.
                            last_heard = Instant::now();
                        }
                    }
                }
            }
        }
    }
}

/// Runs the handler on one message, pinging while it waits; true if it had to wait for a tick.
async fn handle<W: Wire, H: Handler<W>>(
    handler: &mut H,
    msg: W::In,
    ping: &mut Interval,
    tx: &mpsc::Sender<W::Out>,
) -> Result<bool, LinkError> {
    let handling = handler.on_message(msg);
    tokio::pin!(handling);
    let mut waited = false;
    loop {
        tokio::select! {
            biased;
            r = &mut handling => return r.map(|()| waited),
            _ = ping.tick() => {
                waited = true;
                if let Some(ping) = W::ping() {
                    let _ = tx.try_send(ping);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RegisterPeerSide, RegisterSide};
    use gw_proto::{FromRegister, GatewayInfo, ToRegister};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    fn options() -> LinkOptions {
        LinkOptions {
            max_frame: 1 << 16,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            flush_timeout: Duration::from_secs(2),
            write_delay: Duration::ZERO,
        }
    }

    /// Records what arrives; waits on `gate` for every message while it holds a permit-less gate.
    struct Recorder {
        seen: mpsc::UnboundedSender<FromRegister>,
        gate: Arc<tokio::sync::Semaphore>,
        last: Option<ToRegister>,
        tx: mpsc::Sender<ToRegister>,
    }

    impl Handler<RegisterPeerSide> for Recorder {
        async fn on_message(&mut self, msg: FromRegister) -> Result<(), LinkError> {
            let _permit = self.gate.acquire().await.expect("gate open");
            let _ = self.seen.send(msg);
            Ok(())
        }
        fn on_close(&mut self) {
            if let Some(last) = self.last.take() {
                let _ = self.tx.try_send(last);
            }
        }
    }

    fn frame(msg: &FromRegister) -> Vec<u8> {
        let mut out = Vec::new();
        gw_proto::encode_frame(msg, &mut out, 1 << 16).unwrap();
        out
    }

    async fn read_to(far: &mut FrameReader<tokio::io::ReadHalf<DuplexStream>>) -> Vec<ToRegister> {
        let mut got = Vec::new();
        while let Ok(Some(m)) = far.read::<ToRegister>().await {
            got.push(m);
        }
        got
    }

    fn gateways() -> FromRegister {
        FromRegister::Gateways { list: vec![GatewayInfo { address: "a:1".into(), name: "a".into() }] }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_pings_keeps_pinging_while_the_handler_waits_and_flushes_on_close() {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (near_r, near_w) = tokio::io::split(near);
        let (far_r, mut far_w) = tokio::io::split(far);
        let engine = LinkEngine::<RegisterPeerSide>::new(options(), 16);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut handler =
            Recorder { seen: seen_tx, gate: gate.clone(), last: Some(ToRegister::Subscribe), tx: engine.sender() };
        let close = CancellationToken::new();
        let closer = close.clone();
        let run =
            tokio::spawn(
                async move { engine.run(FrameReader::new(near_r, 1 << 16), near_w, &mut handler, &close).await },
            );
        far_w.write_all(&frame(&FromRegister::Ping)).await.unwrap();
        far_w.write_all(&frame(&gateways())).await.unwrap();
        // The handler is stuck for far longer than the heartbeat timeout: the link stays up.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!run.is_finished(), "a busy handler is not a dead peer");
        gate.add_permits(1);
        assert!(matches!(seen.recv().await, Some(FromRegister::Gateways { .. })));
        closer.cancel();
        assert_eq!(run.await.unwrap().unwrap(), Ended::Closed { flushed: true });
        let got = read_to(&mut FrameReader::new(far_r, 1 << 16)).await;
        assert!(got.contains(&ToRegister::Pong), "{got:?}");
        assert!(got.iter().filter(|m| **m == ToRegister::Ping).count() >= 10, "pinged while busy: {got:?}");
        assert_eq!(got.last(), Some(&ToRegister::Subscribe), "the final frame is flushed last: {got:?}");
    }

    struct Quiet;
    impl Handler<RegisterSide> for Quiet {
        async fn on_message(&mut self, _msg: ToRegister) -> Result<(), LinkError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_the_heartbeat_and_a_leaving_one_finishes_the_link() {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (near_r, near_w) = tokio::io::split(near);
        let engine = LinkEngine::<RegisterSide>::new(options(), 16);
        let never = CancellationToken::new();
        let r = engine.run(FrameReader::new(near_r, 1 << 16), near_w, &mut Quiet, &never).await;
        assert!(matches!(r, Err(LinkError::HeartbeatTimeout(_))), "{r:?}");
        drop(far);

        let (near, far) = tokio::io::duplex(1 << 16);
        let (near_r, near_w) = tokio::io::split(near);
        drop(far);
        let engine = LinkEngine::<RegisterSide>::new(options(), 16);
        let r = engine.run(FrameReader::new(near_r, 1 << 16), near_w, &mut Quiet, &never).await;
        assert!(matches!(r, Ok(Ended::Finished) | Err(_)), "{r:?}");
    }

    /// Has 100 messages of its own still due when the link closes.
    struct Backlog(std::ops::Range<u16>);
    impl Handler<RegisterSide> for Backlog {
        async fn on_message(&mut self, _msg: ToRegister) -> Result<(), LinkError> {
            Ok(())
        }
        fn closing_outgoing(&mut self) -> Option<FromRegister> {
            let n = self.0.next()?;
            Some(FromRegister::Gateways { list: vec![GatewayInfo { address: format!("a:{n}"), name: "a".into() }] })
        }
    }

    #[tokio::test]
    async fn a_closing_handlers_backlog_goes_out_in_order_through_a_small_outbox() {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (near_r, near_w) = tokio::io::split(near);
        let (far_r, _far_w) = tokio::io::split(far);
        let engine = LinkEngine::<RegisterSide>::new(options(), 4);
        let close = CancellationToken::new();
        close.cancel();
        let ended = engine.run(FrameReader::new(near_r, 1 << 16), near_w, &mut Backlog(0..100), &close).await;
        assert_eq!(ended.unwrap(), Ended::Closed { flushed: true });
        let mut far = FrameReader::new(far_r, 1 << 16);
        let mut got = Vec::new();
        while let Ok(Some(m)) = far.read::<FromRegister>().await {
            if let FromRegister::Gateways { list } = m {
                got.push(list[0].address.clone());
            }
        }
        let want: Vec<String> = (0..100).map(|n| format!("a:{n}")).collect();
        assert_eq!(got, want);
    }
}
