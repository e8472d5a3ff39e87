//! GatewayWorker's heartbeat on one shared timer: every `ping_interval` the gateway looks at each
//! client once. It sends `ping_data` (a WebSocket ping frame when `ping_data` is empty; TCP
//! clients get nothing then) only to a client that has sent nothing since the last look and is
//! not new since then, as GatewayWorker does, and closes the clients that sent nothing for more
//! than `ping_not_response_limit` intervals (and a half). One task walks the clients, instead of
//! a timer per connection.
//!
//! GatewayWorker's rule, which this follows: a client that spoke since the last tick is alive,
//! so it is not pinged (an active chat page would otherwise answer every ping with one more
//! message to the workers), and neither is one that connected since. Its timer ticks every half
//! interval when it closes silent clients, pinging on every other silent tick and closing at
//! `2 × limit` silent ticks, so a client that answers every ping is pinged about every 1.5
//! intervals and closed between `limit + ½` and `limit + 1` intervals of silence. Here each
//! client is looked at once per interval, and:
//! - it is pinged when it sent nothing since the previous look, or when it would be closed at
//!   the next look unless it answers now (which matters only for a limit of 1);
//! - it is closed at the first look after more than `limit + ½` intervals of silence.
//!
//! So a client that answers every ping is pinged every other interval and has at least half an
//! interval to spare; one that keeps talking is never pinged.
//!
//! The walk is spread over the interval: the clients are split into slices by their local
//! number (by the shard of the client map it falls in, so a slice's visit reads only its own
//! shards), and one slice is visited every `interval / slices`, from a phase of its own per
//! gateway. Each client is still looked at once per interval, but a gateway never pings all its
//! clients in the same instant, and gateways started together (dozens on one host) do not all
//! wake at once: GatewayWorker's one timer pings every client of every gateway together, a burst
//! of CPU and traffic that grows with the clients.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use gw_config::GatewayConfig;
use gw_proto::Protocol;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client_handle::KillReason;
use crate::clients::Clients;
use crate::clock::Clock;
use crate::send_queue::Outbound;

/// The heartbeat part of the gateway's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Time between two pings; zero turns the heartbeat off.
    pub interval: Duration,
    /// Silent intervals after which a client is closed; zero never closes one.
    pub limit: u32,
    /// What a ping carries; empty sends WebSocket ping frames.
    pub data: String,
}

impl From<&GatewayConfig> for Settings {
    fn from(config: &GatewayConfig) -> Self {
        Self { interval: config.ping_interval, limit: config.ping_not_response_limit, data: config.ping_data.clone() }
    }
}

/// The most slices the walk is split into.
const MAX_SLICES: u64 = 64;
/// The shortest time between two slices.
const MIN_SLICE_GAP: Duration = Duration::from_millis(100);

/// Into how many slices a walk every `interval` is split: at most [`MAX_SLICES`], at least
/// [`MIN_SLICE_GAP`] apart.
pub(crate) fn slices(interval: Duration) -> u64 {
    (interval.as_millis() / MIN_SLICE_GAP.as_millis()).clamp(1, u128::from(MAX_SLICES)) as u64
}

/// A phase in `0..gap`, different from one gateway process to the next.
fn phase(gap: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = gap.as_nanos().max(1) as u64;
    Duration::from_nanos(h.finish() % nanos)
}

/// What the walk does with one client at a look (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Alive (it spoke since the last look) or new: nothing to do.
    Leave,
    /// Silent since the last look (or about to pass the limit): ping it.
    Ping,
    /// Silent past the limit: close it.
    Close,
}

/// The timing rule, for a client last active at `last_active`, looked at `now` (ms of the
/// gateway clock) when its slice was last looked at `previous`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    interval_ms: u64,
    /// Silence (ms) past which a client is closed; `None` never closes.
    close_after_ms: Option<u64>,
}

impl Rule {
    fn new(interval: Duration, limit: u32) -> Self {
        let interval_ms = interval.as_millis() as u64;
        // GatewayWorker closes between `limit + ½` and `limit + 1` intervals of silence.
        let close_after_ms = (limit > 0).then(|| interval_ms * u64::from(limit) + interval_ms / 2);
        Self { interval_ms, close_after_ms }
    }

    fn look(&self, now: u64, previous: u64, last_active: u64) -> Look {
        let silence = now.saturating_sub(last_active);
        match self.close_after_ms {
            Some(limit) if silence > limit => Look::Close,
            // It would be closed at the next look unless it answers a ping now.
            Some(limit) if silence + self.interval_ms > limit => Look::Ping,
            _ if last_active < previous => Look::Ping,
            _ => Look::Leave,
        }
    }
}

/// Pings and sweeps `clients`, one slice every `interval / slices`, until `stop`.
pub(crate) async fn run(clients: Arc<Clients>, clock: Clock, settings: Settings, stop: CancellationToken) {
    let Settings { interval, limit, data } = settings;
    if interval.is_zero() {
        return;
    }
    let rule = Rule::new(interval, limit);
    let slices = slices(interval);
    let gap = interval / slices as u32;
    let start = tokio::time::Instant::now() + gap + phase(gap);
    // When each slice was looked at last; before its first look, when the walk began (a client
    // that connected since is new at its first look).
    let mut previous = vec![clock.ms(); slices as usize];
    let mut tick = tokio::time::interval_at(start, gap);
    // A late tick (a busy runtime) does not shift the schedule, nor does it make up for missed
    // ones with a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    for slice in (0..slices).cycle() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.ms();
        let since = std::mem::replace(&mut previous[slice as usize], now);
        let mut closed = 0;
        // Under the read lock of the slice's shards: only loads, a `try_send` and a kill here.
        clients.for_each_in_slice(slice, slices, |h| {
            if h.kill.is_cancelled() {
                return; // already closing: neither pinged nor counted again
            }
            match rule.look(now, since, h.last_active.load(Ordering::Relaxed)) {
                Look::Leave => {}
                // Held for recovery: no connection to ping or close.
                _ if h.recovery.is_some() && h.tx.is_closed() => {}
                Look::Close => {
                    h.kill(KillReason::Heartbeat);
                    closed += 1;
                }
                Look::Ping => {
                    // A client with recovery counts text messages: it gets ping frames instead.
                    let ping = match (h.info.protocol, data.is_empty() || h.recovery.is_some()) {
                        (Protocol::WebSocket, true) => Some(Message::Ping(Bytes::new())),
                        (_, true) => None,
                        (_, false) => Some(Message::text(data.clone())),
                    };
                    if let Some(m) = ping {
                        // A client whose queue is full is busy receiving anyway.
                        let _ = h.tx.try_send(Outbound::Control(m));
                    }
                }
            }
        });
        if closed > 0 {
            tracing::info!(closed, "closed clients that stopped sending heartbeats");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_handle::ClientHandle;
    use crate::send_queue::SendQueue;
    use gw_proto::ClientInfo;

    /// The clients, the clock and the heartbeat settings a test sweeps.
    struct Gw {
        state: Arc<Clients>,
        clock: Clock,
        settings: Settings,
    }

    impl Gw {
        fn clock_ms(&self) -> u64 {
            self.clock.ms()
        }
    }

    async fn gateway(limit: u32, ping_data: &str) -> Gw {
        let settings = Settings { interval: Duration::from_secs(10), limit, data: ping_data.into() };
        Gw { state: Arc::new(Clients::new(1 << 20, false)), clock: Clock::start(), settings }
    }

    fn client(gw: &Gw, id: u64, protocol: Protocol) -> (Arc<ClientHandle>, Arc<ClientHandle>) {
        let info = ClientInfo {
            client_addr: "127.0.0.1:1".into(),
            gateway_addr: "127.0.0.1:2".into(),
            listener: "x".into(),
            protocol,
        };
        let h = Arc::new(ClientHandle::new(id, SendQueue::new(16), info, gw.clock_ms()));
        gw.state.insert(h.clone());
        (h.clone(), h)
    }

    fn pings(h: &mut Arc<ClientHandle>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = h.tx.try_recv() {
            match o {
                Outbound::Control(Message::Text(t)) => out.push(t.to_string()),
                Outbound::Control(Message::Ping(_)) => out.push("<ping frame>".into()),
                _ => out.push("<other>".into()),
            }
        }
        out
    }

    /// Lets `d` of paused time pass in 50 ms steps, letting the walk run after each.
    async fn pass(d: Duration) {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() {
            let now = step.min(left);
            tokio::time::advance(now).await;
            left -= now;
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Runs the walk for `secs` seconds of paused time in 50 ms steps; after each step, every
    /// client in `answering` that got pings answers them at once (it becomes active). Returns the
    /// pings each client got, in the order given.
    async fn run_for(gw: &Gw, secs: u64, clients: &mut [(Arc<ClientHandle>, bool)]) -> Vec<usize> {
        let mut got = vec![0; clients.len()];
        for _ in 0..secs * 20 {
            pass(Duration::from_millis(50)).await;
            for ((h, answers), n) in clients.iter_mut().zip(&mut got) {
                let pinged = pings(h).len();
                *n += pinged;
                if pinged > 0 && *answers {
                    h.last_active.store(gw.clock_ms(), Ordering::Relaxed);
                }
            }
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn no_ping_for_a_client_that_spoke_since_the_last_look_nor_on_its_first_look() {
        let gw = gateway(0, "{\"type\":\"ping\"}").await;
        let (talker, mut talker_rx) = client(&gw, 1, Protocol::WebSocket);
        let (_silent, mut silent_rx) = client(&gw, 2, Protocol::WebSocket);
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        let mut silent_pings = 0;
        for _ in 0..50 {
            pass(Duration::from_secs(1)).await;
            talker.last_active.store(gw.clock_ms(), Ordering::Relaxed);
            silent_pings += pings(&mut silent_rx).len();
        }
        assert!(pings(&mut talker_rx).is_empty(), "a client talking every second is never pinged");
        // Looked at first within the first interval (new: not pinged), then at 10, 20, 30, 40 s.
        assert_eq!(silent_pings, 4, "one ping per interval from its second look");
        // A client that connects later is not pinged at its first look either.
        let (_late, mut late_rx) = client(&gw, 3, Protocol::WebSocket);
        pass(Duration::from_secs(10)).await;
        assert!(pings(&mut late_rx).is_empty(), "new since the last look");
        pass(Duration::from_secs(10)).await;
        assert_eq!(pings(&mut late_rx).len(), 1, "silent since its first look");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_answering_pings_is_pinged_every_other_interval_and_a_silent_one_closed_past_the_limit() {
        let gw = gateway(2, "{\"type\":\"ping\"}").await;
        let (answerer, _) = client(&gw, 1, Protocol::WebSocket);
        let (silent, _) = client(&gw, 2, Protocol::Text);
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        let mut clients = [(answerer.clone(), true), (silent.clone(), false)];
        let got = run_for(&gw, 25, &mut clients).await;
        assert!(!silent.kill.is_cancelled(), "silent for 25 s: within 2 intervals and a half");
        assert_eq!(got[1], 2, "the silent client was pinged at 10 and 20 s");
        let got = run_for(&gw, 6, &mut clients).await;
        assert!(silent.kill.is_cancelled(), "silent for 31 s: closed at its look after 25 s");
        assert_eq!(silent.kill_reason(), KillReason::Heartbeat);
        assert_eq!(got[1], 0, "closed, not pinged");
        // The answering client: pinged at 10 s, answered, left alone at 20 s, pinged at 30 s...
        let got = run_for(&gw, 69, &mut clients).await;
        assert!(!answerer.kill.is_cancelled(), "a client that answers every ping stays");
        assert_eq!(got[0], 3, "pinged every other interval: at 50, 70 and 90 s");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_limit_of_one_an_answering_client_is_pinged_every_interval_and_stays() {
        // Silence for more than 1.5 intervals closes; a client that answered at the last look
        // would pass that before the next-but-one: it is pinged at every look.
        let gw = gateway(1, "").await;
        let (answerer, _) = client(&gw, 1, Protocol::WebSocket);
        let (silent, _) = client(&gw, 2, Protocol::WebSocket);
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        let mut clients = [(answerer.clone(), true), (silent.clone(), false)];
        let got = run_for(&gw, 60, &mut clients).await;
        assert!(!answerer.kill.is_cancelled());
        assert_eq!(got[0], 5, "pinged at every look from its second, at 10 to 50 s");
        assert!(silent.kill.is_cancelled(), "silent for more than 15 s");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn empty_ping_data_sends_websocket_ping_frames_and_nothing_to_tcp_clients() {
        let gw = gateway(0, "").await;
        let (_ws, mut ws_rx) = client(&gw, 1, Protocol::WebSocket);
        let (tcp, mut tcp_rx) = client(&gw, 2, Protocol::Frame);
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        pass(Duration::from_secs(50)).await;
        assert_eq!(pings(&mut ws_rx), vec!["<ping frame>"; 4], "from its second look, at 10 to 40 s");
        assert!(pings(&mut tcp_rx).is_empty());
        assert!(!tcp.kill.is_cancelled(), "limit 0 never closes for silence");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_walk_is_spread_over_the_interval() {
        // 10 s in 64 slices: one every 156 ms, each with a 64th of the clients.
        assert_eq!(slices(Duration::from_secs(10)), 64);
        assert_eq!(slices(Duration::from_millis(300)), 3);
        assert_eq!(slices(Duration::from_millis(50)), 1);
        let gw = gateway(0, "").await;
        let mut rxs: Vec<_> = (0..640).map(|id| client(&gw, id, Protocol::WebSocket).1).collect();
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        let mut most_at_once = 0;
        let mut counts = vec![0; rxs.len()];
        let mut waited = Duration::ZERO;
        while counts.contains(&0) && waited < Duration::from_secs(22) {
            pass(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
            let mut now = 0;
            for (rx, count) in rxs.iter_mut().zip(&mut counts) {
                let got = pings(rx).len();
                *count += got;
                now += got;
            }
            most_at_once = most_at_once.max(now);
        }
        // Every client once (at its second look: new at its first) within two intervals (and a
        // phase of at most two slices), never more than one slice (10 clients) at a time.
        assert!(waited <= Duration::from_millis(20_350), "every client pinged after {waited:?}");
        assert!(waited > Duration::from_secs(10), "no client pinged at its first look");
        assert!(counts.iter().all(|&c| c == 1), "each client once: {counts:?}");
        assert_eq!(most_at_once, 10, "one slice at a time");
        stop.cancel();
    }
}
