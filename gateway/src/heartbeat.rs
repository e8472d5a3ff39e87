//! GatewayWorker's heartbeat on one shared timer: every `ping_interval` the gateway sends
//! `ping_data` to each client (a WebSocket ping frame when `ping_data` is empty; TCP clients get
//! nothing then) and closes the clients that sent nothing for `ping_not_response_limit`
//! intervals. One task walks the clients, instead of a timer per connection.
//!
//! The walk is spread over the interval: the clients are split into slices by their local
//! number, and one slice is pinged and checked every `interval / slices`, from a phase of its
//! own per gateway. Each client still gets one ping per interval, but a gateway never pings all
//! its clients in the same instant, and gateways started together (dozens on one host) do not
//! all wake at once: GatewayWorker's one timer per interval pings every client of every gateway
//! together, a burst of CPU and traffic that grows with the clients.

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

/// Pings and sweeps `clients`, one slice every `interval / slices`, until `stop`.
pub(crate) async fn run(clients: Arc<Clients>, clock: Clock, settings: Settings, stop: CancellationToken) {
    let Settings { interval, limit, data } = settings;
    if interval.is_zero() {
        return;
    }
    let limit_ms = interval.as_millis() as u64 * u64::from(limit);
    let slices = slices(interval);
    let gap = interval / slices as u32;
    let start = tokio::time::Instant::now() + gap + phase(gap);
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
        let mut closed = 0;
        for h in clients.handles_in_slice(slice, slices) {
            if h.kill.is_cancelled() {
                continue; // already closing: neither pinged nor counted again
            }
            if limit_ms > 0 && now.saturating_sub(h.last_active.load(Ordering::Relaxed)) > limit_ms {
                h.kill(KillReason::Heartbeat);
                closed += 1;
                continue;
            }
            let ping = match (h.info.protocol, data.is_empty()) {
                (Protocol::WebSocket, true) => Some(Message::Ping(Bytes::new())),
                (_, true) => None,
                (_, false) => Some(Message::text(data.clone())),
            };
            if let Some(m) = ping {
                // A client whose queue is full is busy receiving anyway.
                let _ = h.tx.try_send(Outbound::Control(m));
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_closes_after_the_limit_of_silent_intervals() {
        let gw = gateway(2, "{\"type\":\"ping\"}").await;
        let (silent, mut silent_rx) = client(&gw, 1, Protocol::WebSocket);
        let (talker, mut talker_rx) = client(&gw, 2, Protocol::Text);
        let stop = CancellationToken::new();
        tokio::spawn(run(gw.state.clone(), gw.clock, gw.settings.clone(), stop.clone()));
        tokio::task::yield_now().await;
        // Talking keeps a client; silence for up to 2 intervals (20 s) does not close one.
        let talk = |t: &Arc<ClientHandle>| t.last_active.store(gw.clock_ms(), Ordering::Relaxed);
        for _ in 0..19 {
            pass(Duration::from_secs(1)).await;
            talk(&talker);
        }
        assert_eq!(pings(&mut silent_rx), vec!["{\"type\":\"ping\"}"; 2], "one ping per interval");
        assert!(!silent.kill.is_cancelled(), "silent for 19 s, within the limit of 2 × 10 s");
        // More than 2 intervals silent: closed at its next check, within one more interval.
        for _ in 0..12 {
            pass(Duration::from_secs(1)).await;
            talk(&talker);
        }
        assert!(silent.kill.is_cancelled(), "silent for 31 s: closed");
        assert_eq!(silent.kill_reason(), KillReason::Heartbeat);
        for _ in 0..49 {
            pass(Duration::from_secs(1)).await;
            talk(&talker);
        }
        assert!(!talker.kill.is_cancelled(), "a client that keeps talking stays");
        assert_eq!(pings(&mut talker_rx).len(), 8, "text clients get ping_data too, one per interval over 80 s");
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
        assert_eq!(pings(&mut ws_rx), vec!["<ping frame>"; 5]);
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
        while counts.contains(&0) && waited < Duration::from_secs(12) {
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
        // Every client once within one interval (and a phase of at most two slices), never
        // more than one slice (10 clients) at a time.
        assert!(waited <= Duration::from_millis(10_350), "every client pinged after {waited:?}");
        assert!(counts.iter().all(|&c| c == 1), "each client once: {counts:?}");
        assert_eq!(most_at_once, 10, "one slice at a time");
        stop.cancel();
    }
}
