//! Logical clients: each sends numbered messages (`<client>:<seq>`; odd clients `u:<client>:<seq>`,
//! answered through the routing index by `send_to_uid`) to the echo application at a steady rate with at most `window` unanswered, checks every reply as it arrives, and when its
//! connection breaks reconnects (with backoff) to another gateway and goes on numbering where it
//! was. A new connection is a new session; the checks are per logical client across connections.
//!
//! Per connection, with `unreplied` the messages sent on it and not answered yet, in order:
//! - a reply to the oldest unreplied message is the normal case;
//! - a reply to a message already answered is a duplicate (recorded with its time, to be matched
//!   against the faults that may cause one);
//! - a reply to a later message while earlier ones are unanswered skips them: a skipped message
//!   answered later is a reordering, one never answered on this connection is lost although its
//!   connection lived on (both violations);
//! - a reply for another client, or to a message never sent on this connection, is a violation;
//! - a message unanswered for `stall` is a violation (a hang);
//! - when the connection breaks, its unreplied messages are lost with it (recorded with the
//!   gateway and time, to be matched against that gateway's faults); there are at most `window`.
//!
//! Client `i`'s home is gateway `i % gateways`. After some seconds on another gateway a client
//! goes home: it stops sending, waits for every reply, closes, and connects to its home gateway
//! (so the clients stay spread over the gateways, and closes and new sessions are exercised too).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send at the configured rate.
    Running,
    /// Send nothing new; close once every message is answered.
    Draining,
    /// Stop now; whatever is unanswered on a live connection is lost.
    Done,
}

/// What the checker needs to look at after the run.
#[derive(Debug)]
pub enum Record {
    Duplicate { client: usize, seq: u64, gateway: usize, at: Instant },
    Broken { client: usize, gateway: usize, at: Instant, unreplied: usize, reason: String },
    Violation { client: usize, at: Instant, what: String },
}

/// Totals over every client.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub replies: AtomicU64,
    pub duplicates: AtomicU64,
    pub lost_at_break: AtomicU64,
    pub connections: AtomicU64,
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub max_latency_us: AtomicU64,
    pub max_reconnect_us: AtomicU64,
    /// Ticks skipped because `window` messages were unanswered.
    pub window_full: AtomicU64,
    /// Clients that closed their connection to go back to their home gateway.
    pub moves_home: AtomicU64,
}

#[derive(Debug)]
pub struct Shared {
    pub urls: Vec<String>,
    pub window: usize,
    pub period: Duration,
    pub stall: Duration,
    pub phase: watch::Receiver<Phase>,
    pub counters: Counters,
    pub records: mpsc::UnboundedSender<Record>,
}

impl Shared {
    fn record(&self, r: Record) {
        let _ = self.records.send(r);
    }

    fn violation(&self, client: usize, what: String) {
        self.record(Record::Violation { client, at: Instant::now(), what });
    }
}

enum End {
    /// Drained and closed by us.
    Done,
    /// The connection broke (or was closed by the gateway).
    Broken,
    /// Closed by us to go back to the home gateway.
    GoHome,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(url: &str) -> anyhow::Result<Ws> {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// One logical client, until the phase is `Done` or it drained.
pub async fn run(id: usize, shared: Arc<Shared>) {
    let g = shared.urls.len();
    let home = id % g;
    let mut gateway = home;
    let mut next_seq = 1u64;
    let mut backoff = Duration::from_millis(100);
    let mut broken_at: Option<Instant> = None;
    let mut phase = shared.phase.clone();
    loop {
        if *phase.borrow() == Phase::Done {
            return;
        }
        let attempt = tokio::time::timeout(Duration::from_secs(3), connect(&shared.urls[gateway]));
        let ws = tokio::select! {
            r = attempt => r,
            _ = phase.wait_for(|p| *p == Phase::Done) => return,
        };
        let Ok(Ok(ws)) = ws else {
            shared.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            gateway = (gateway + 1) % g;
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Some(t) = broken_at.take() {
            shared.counters.max_reconnect_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        shared.counters.connected.fetch_add(1, Ordering::Relaxed);
        let end = connection(id, gateway, gateway != home, ws, &shared, &mut next_seq).await;
        shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Done => return,
            End::Broken => {
                broken_at = Some(Instant::now());
                gateway = (gateway + 1) % g;
            }
            End::GoHome => {
                shared.counters.moves_home.fetch_add(1, Ordering::Relaxed);
                gateway = home;
            }
        }
    }
}

/// Closes with a close frame and waits (briefly) for the gateway's.
async fn close(tx: &mut futures_util::stream::SplitSink<Ws, Message>, rx: &mut futures_util::stream::SplitStream<Ws>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tx.send(Message::Close(None)).await?;
        while rx.next().await.is_some() {}
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}

async fn connection(id: usize, gateway: usize, away: bool, ws: Ws, shared: &Shared, next_seq: &mut u64) -> End {
    let mut skipped = BTreeMap::new();
    let end = connection_inner(id, gateway, away, ws, shared, next_seq, &mut skipped).await;
    for (seq, (sent, replied, replied_at)) in skipped {
        shared.violation(
            id,
            format!(
                "message {seq} sent on gateway {gateway} at {:.1}s was never answered, though the reply to {replied} \
                 came at {:.1}s and the connection lived on until {:.1}s (lost)",
                crate::since_start(sent),
                crate::since_start(replied_at),
                crate::since_start(Instant::now())
            ),
        );
    }
    end
}

#[allow(clippy::too_many_arguments)]
async fn connection_inner(
    id: usize,
    gateway: usize,
    away: bool,
    ws: Ws,
    shared: &Shared,
    next_seq: &mut u64,
    skipped: &mut BTreeMap<u64, (Instant, u64, Instant)>,
) -> End {
    let c = &shared.counters;
    let (mut tx, mut rx) = ws.split();
    let first = *next_seq;
    let mut unreplied: VecDeque<(u64, Instant)> = VecDeque::with_capacity(shared.window);
    let offset = rand::thread_rng().gen_range(0..shared.period.as_micros() as u64 + 1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_micros(offset), shared.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut phase = shared.phase.clone();
    let go_home = away.then(|| Instant::now() + Duration::from_millis(rand::thread_rng().gen_range(5000..15000)));
    let broken = |unreplied: &VecDeque<(u64, Instant)>, reason: String| {
        c.lost_at_break.fetch_add(unreplied.len() as u64, Ordering::Relaxed);
        shared.record(Record::Broken { client: id, gateway, at: Instant::now(), unreplied: unreplied.len(), reason });
        End::Broken
    };
    loop {
        let mut now_phase = *phase.borrow_and_update();
        let leaving = now_phase == Phase::Running && go_home.is_some_and(|t| Instant::now() > t);
        if leaving {
            if unreplied.is_empty() {
                close(&mut tx, &mut rx).await;
                return End::GoHome;
            }
            // Like a drain: nothing new until every reply is in.
            now_phase = Phase::Draining;
        }
        match now_phase {
            Phase::Running => {}
            Phase::Draining if unreplied.is_empty() => {
                close(&mut tx, &mut rx).await;
                return End::Done;
            }
            Phase::Draining => {}
            Phase::Done => {
                if let Some((seq, _)) = unreplied.front() {
                    shared.violation(
                        id,
                        format!(
                            "{} message(s) from {seq} on live gateway {gateway} never answered by the end of the drain",
                            unreplied.len()
                        ),
                    );
                }
                return End::Done;
            }
        }
        tokio::select! {
            _ = tick.tick() => {
                if now_phase != Phase::Running {
                    continue;
                }
                if unreplied.len() >= shared.window {
                    c.window_full.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let seq = *next_seq;
                *next_seq += 1;
                unreplied.push_back((seq, Instant::now()));
                c.sent.fetch_add(1, Ordering::Relaxed);
                // Odd clients ask for their answers through the routing index (`u:`: the worker
                // binds the connection to a uid of its own and answers with `send_to_uid`).
                let text = if id % 2 == 1 { format!("u:{id}:{seq}") } else { format!("{id}:{seq}") };
                if let Err(e) = tx.send(Message::Text(text.into())).await {
                    return broken(&unreplied, format!("send failed: {e}"));
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let parsed = text.split_once(':').and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<u64>().ok()?)));
                    let Some((client, seq)) = parsed else {
                        shared.violation(id, format!("unexpected message {:?}", text.as_str()));
                        continue;
                    };
                    if client != id {
                        shared.violation(id, format!("got client {client}'s reply {seq} (misrouted)"));
                        continue;
                    }
                    if seq < first || seq >= *next_seq {
                        shared.violation(id, format!("reply {seq} to a message not sent on this connection ({first}..{})", *next_seq));
                        continue;
                    }
                    match unreplied.iter().position(|(s, _)| *s == seq) {
                        Some(0) => {
                            let (_, t) = unreplied.pop_front().expect("front");
                            c.replies.fetch_add(1, Ordering::Relaxed);
                            c.max_latency_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                        Some(k) => {
                            // The earlier ones are skipped: reordered if they come later, else lost.
                            for (s, t) in unreplied.drain(..k) {
                                skipped.insert(s, (t, seq, Instant::now()));
                            }
                            unreplied.pop_front();
                            c.replies.fetch_add(1, Ordering::Relaxed);
                        }
                        None if skipped.contains_key(&seq) => {
                            let (_, overtaken_by, _) = skipped.remove(&seq).expect("checked");
                            shared.violation(id, format!("reply {seq} arrived after the reply to {overtaken_by} (reordered)"));
                            c.replies.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            c.duplicates.fetch_add(1, Ordering::Relaxed);
                            shared.record(Record::Duplicate { client: id, seq, gateway, at: Instant::now() });
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = match frame {
                        Some(f) => format!("closed by gateway: {} {}", u16::from(f.code), f.reason),
                        None => "closed by gateway".into(),
                    };
                    return broken(&unreplied, reason);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return broken(&unreplied, format!("read failed: {e}")),
                None => return broken(&unreplied, "connection ended".into()),
            },
            _ = check.tick() => {
                if let Some((seq, t)) = unreplied.front()
                    && t.elapsed() > shared.stall
                {
                    shared.violation(id, format!("message {seq} on gateway {gateway} unanswered for {:?} (hang); reconnecting", t.elapsed()));
                    return broken(&unreplied, "stalled".into());
                }
            }
            _ = phase.changed() => {}
        }
    }
}
