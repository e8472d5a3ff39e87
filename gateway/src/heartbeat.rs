//! GatewayWorker's heartbeat on one shared timer: every `ping_interval` the gateway sends
//! `ping_data` to each client (a WebSocket ping frame when `ping_data` is empty; TCP clients get
//! nothing then) and closes the clients that sent nothing for `ping_not_response_limit`
//! intervals. One task walks all clients per tick, instead of a timer per connection.

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

/// Pings and sweeps `clients` every interval until `stop`.
pub(crate) async fn run(clients: Arc<Clients>, clock: Clock, settings: Settings, stop: CancellationToken) {
    let Settings { interval, limit, data } = settings;
    if interval.is_zero() {
        return;
    }
    let limit_ms = interval.as_millis() as u64 * u64::from(limit);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.ms();
        let mut closed = 0;
        for h in clients.handles() {
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

    async fn step() {
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
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
        for interval in 1..=2 {
            step().await;
            talker.last_active.store(gw.clock_ms(), Ordering::Relaxed);
            assert_eq!(pings(&mut silent_rx), vec!["{\"type\":\"ping\"}"], "interval {interval}");
            assert!(!silent.kill.is_cancelled(), "silent for {interval} interval(s) is within the limit");
        }
        step().await;
        assert!(silent.kill.is_cancelled(), "silent for more than 2 intervals: closed");
        assert_eq!(silent.kill_reason(), KillReason::Heartbeat);
        for _ in 0..5 {
            talker.last_active.store(gw.clock_ms(), Ordering::Relaxed);
            step().await;
        }
        assert!(!talker.kill.is_cancelled(), "a client that keeps talking stays");
        assert_eq!(pings(&mut talker_rx).len(), 8, "text clients get ping_data too");
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
        for _ in 0..5 {
            step().await;
        }
        assert_eq!(pings(&mut ws_rx), vec!["<ping frame>"; 5]);
        assert!(pings(&mut tcp_rx).is_empty());
        assert!(!tcp.kill.is_cancelled(), "limit 0 never closes for silence");
        stop.cancel();
    }
}
