//! Logical clients: each sends numbered messages (`<client>:<seq>`; odd clients `u:<client>:<seq>`,
//! answered through the routing index by `send_to_uid`) to the echo application at a steady rate
//! with at most `window` unanswered, checks every reply as it arrives, and when its connection
//! breaks reconnects (with backoff) to another gateway and goes on numbering where it was.
//!
//! Clients with recovery (all by default, `--recovery-share`) connect with `gw_recover=1`, read
//! the control frames (docs/recovery.md), count the data messages they receive, acknowledge them
//! every 50 messages (or 5 s), and after a break (any close that is not their own clean close:
//! 1012 from a stopping gateway, a reset, a kill) reconnect with `gw_resume=<token>&gw_received=
//! <count>`. On `resumed` they go on as the same client: the id must be the old one, the count the
//! old count, and every reply to what they sent must still come, exactly once and in order. When
//! the `resumed` frame says how many data messages the gateway took from them (`accepted`), they
//! send the rest again; without it, what was unanswered at the break may have been lost unread
//! (recorded against that break, as without recovery). On `not_recovered` (counted by reason)
//! they go on as a new client. A client without recovery starts a new client on every connection.
//!
//! A *session* is one client id at the gateways: it spans the connections it was resumed on. Per
//! session, with `unreplied` the messages sent and not answered yet, in order:
//! - a reply to the oldest unreplied message is the normal case;
//! - a reply to a message already answered is a duplicate (recorded with its time, to be matched
//!   against the faults that may cause one);
//! - a reply to a later message while earlier ones are unanswered skips them: a skipped message
//!   answered later is a reordering, one never answered in this session is lost although the
//!   session lived on (both violations), except one unanswered at a break the gateway did not say
//!   it had read (lost with that break);
//! - a reply for another client, or to a message never sent in this session, is a violation;
//! - a message unanswered for `stall` is a violation (a hang);
//! - when a session ends at a break (not recovered, or no recovery), its unreplied messages are
//!   lost with it (recorded with the gateway and time of the break, to be matched against that
//!   gateway's faults); there are at most `window`.
//!
//! Client `i`'s home is gateway `i % gateways`. After some seconds on another gateway a client
//! goes home: it stops sending, waits for every reply, closes, and connects to its home gateway
//! (so the clients stay spread over the gateways, and clean closes and new sessions are exercised
//! too).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// A client with recovery acknowledges after this many data messages...
const ACK_EVERY: u64 = 50;
/// ... or when this long passed since its last acknowledgement.
const ACK_AFTER: Duration = Duration::from_secs(5);
/// How long the opening control frames may take.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send at the configured rate.
    Running,
    /// Send nothing new; close once every message is answered.
    Draining,
    /// Stop now; whatever is unanswered on a live connection is lost.
    Done,
}

/// Where and when a connection broke.
#[derive(Debug, Clone)]
pub struct Break {
    pub client: usize,
    /// The gateway the connection was to.
    pub gateway: usize,
    pub at: Instant,
    /// Why, in words (`closed by gateway: 1012 …`, `read failed: …`).
    pub reason: String,
    /// The connection may have been relayed to another gateway (the session's home is not the
    /// gateway it was connected to, or is not known after a hand-over): a fault of any gateway
    /// may have broken it.
    pub relayed: bool,
}

/// How the client went on after a break.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Resumed as the same client; `accepted` says whether the gateway told how many messages it
    /// had read (so nothing could be lost unread).
    Resumed { accepted: bool },
    /// Told `not_recovered` with this reason; a new client.
    NotRecovered(String),
    /// A client without recovery: a new client.
    New,
    /// The soak ended before it reconnected.
    Ended,
}

/// What the checker needs to look at after the run.
#[derive(Debug)]
pub enum Record {
    Duplicate {
        client: usize,
        seq: u64,
        gateway: usize,
        at: Instant,
    },
    /// A connection broke, and what came of it (`resolved`: when that was known). `unreplied`
    /// messages were unanswered at the break, `lost` of them are known lost now (all of them
    /// unless the client resumed).
    Broken {
        brk: Arc<Break>,
        unreplied: usize,
        lost: usize,
        outcome: Outcome,
        /// For a client not recovered: the gateway that told it, and its words.
        detail: String,
        resolved: Instant,
    },
    /// Messages unanswered at `brk`, after which the client resumed without knowing whether the
    /// gateway had read them, never answered: lost unread at that break.
    Lost {
        brk: Arc<Break>,
        n: usize,
    },
    Violation {
        client: usize,
        at: Instant,
        what: String,
    },
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
    /// Sessions resumed after a break.
    pub resumed: AtomicU64,
    /// Resumes refused (`not_recovered`), by reason.
    pub not_recovered: Mutex<BTreeMap<String, u64>>,
    /// Messages sent again after a resume because the gateway had not read them.
    pub resent: AtomicU64,
    /// Data messages replayed by the gateways on resumes (`replayed` of `resumed`).
    pub replayed: AtomicU64,
}

#[derive(Debug)]
pub struct Shared {
    pub urls: Vec<String>,
    pub window: usize,
    pub period: Duration,
    pub stall: Duration,
    /// Share of the clients that ask for recovery (0 to 1).
    pub recovery_share: f64,
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

    /// Whether client `id` asks for recovery: `recovery_share` of the clients, spread over both
    /// kinds of client (direct and `u:` answers) by a multiplicative hash of the id.
    pub fn recovers(&self, id: usize) -> bool {
        let h = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        (h as f64 / (1u64 << 53) as f64) < self.recovery_share
    }
}

/// A message sent and not answered yet.
#[derive(Debug)]
struct Pending {
    seq: u64,
    sent_at: Instant,
    /// The data messages the client had sent in its session before this one (the gateway's
    /// `accepted` count is compared with it).
    index: u64,
    /// Sent before a break after which the client resumed without knowing whether the gateway
    /// had read it.
    uncertain: Option<Arc<Break>>,
}

/// A message a later reply overtook.
#[derive(Debug)]
struct Skipped {
    sent_at: Instant,
    overtaken_by: u64,
    at: Instant,
    uncertain: Option<Arc<Break>>,
}

/// The gateways' side of a client with recovery.
#[derive(Debug)]
struct Recovery {
    client_id: String,
    token: String,
    /// Data messages received in this session.
    received: u64,
    acked: u64,
    last_ack: Instant,
    /// Gateway the session's state lives at, as far as the client knows: where it began, unknown
    /// after its gateway handed it over (a 1012 close).
    home: Option<usize>,
}

/// One logical client's session: one client id at the gateways, across resumes.
#[derive(Debug)]
struct Session {
    /// The first sequence number sent in it.
    first: u64,
    /// Data messages sent in it.
    sent: u64,
    unreplied: VecDeque<Pending>,
    skipped: BTreeMap<u64, Skipped>,
    recovery: Option<Recovery>,
}

impl Session {
    fn new(first: u64) -> Self {
        Self { first, sent: 0, unreplied: VecDeque::new(), skipped: BTreeMap::new(), recovery: None }
    }
}

enum End {
    /// Drained and closed by us.
    Done,
    /// The connection broke (or was closed by the gateway).
    Broken(Arc<Break>),
    /// Closed by us to go back to the home gateway.
    GoHome,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(base: &str, query: &str) -> anyhow::Result<Ws> {
    let addr = base.trim_start_matches("ws://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = if query.is_empty() { base.to_string() } else { format!("{base}?{query}") };
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// A text frame from the gateway: a control frame (one NUL, then JSON) or data (its escaping NUL
/// removed).
enum Incoming<'a> {
    Control(Value),
    Data(&'a str),
}

fn incoming(text: &str, recover: bool) -> Result<Incoming<'_>, String> {
    if !recover {
        return Ok(Incoming::Data(text));
    }
    match text.strip_prefix('\0') {
        None => Ok(Incoming::Data(text)),
        Some(rest) if rest.starts_with('\0') => Ok(Incoming::Data(rest)),
        Some(rest) => {
            serde_json::from_str(rest).map(Incoming::Control).map_err(|e| format!("bad control frame {text:?}: {e}"))
        }
    }
}

/// What the opening control frames said.
enum Opening {
    /// A fresh client (`recovery` alone).
    Fresh {
        client_id: String,
        token: String,
    },
    Resumed {
        client_id: String,
        token: String,
        received: u64,
        replayed: u64,
        accepted: Option<u64>,
        resumed_id: String,
    },
    NotRecovered {
        reason: String,
        detail: String,
        client_id: String,
        token: String,
    },
}

/// Reads the control frames that open a connection of a client with recovery.
async fn opening(rx: &mut Ws) -> anyhow::Result<Opening> {
    let mut first: Option<Value> = None;
    loop {
        let msg = tokio::time::timeout(HANDSHAKE_WAIT, rx.next())
            .await
            .map_err(|_| anyhow::anyhow!("no control frame within {HANDSHAKE_WAIT:?}"))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => anyhow::bail!("closed during the opening: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => anyhow::bail!("read failed during the opening: {e}"),
            None => anyhow::bail!("connection ended during the opening"),
        };
        let Ok(Incoming::Control(v)) = incoming(&text, true) else {
            anyhow::bail!("expected a control frame, got {:?}", text.as_str());
        };
        let s = |k: &str| v[k].as_str().map(str::to_string);
        match v["type"].as_str() {
            Some("resumed" | "not_recovered") if first.is_none() => first = Some(v.clone()),
            Some("recovery") => {
                let (Some(client_id), Some(token), Some(received)) =
                    (s("client_id"), s("token"), v["received"].as_u64())
                else {
                    anyhow::bail!("bad recovery frame {v}");
                };
                return Ok(match first {
                    None => Opening::Fresh { client_id, token },
                    Some(f) if f["type"] == "resumed" => Opening::Resumed {
                        client_id,
                        token,
                        received,
                        replayed: f["replayed"].as_u64().unwrap_or(0),
                        accepted: f["accepted"].as_u64(),
                        resumed_id: f["client_id"].as_str().unwrap_or_default().to_string(),
                    },
                    Some(f) => Opening::NotRecovered {
                        reason: f["reason"].as_str().unwrap_or("?").to_string(),
                        detail: f["detail"].as_str().unwrap_or_default().to_string(),
                        client_id,
                        token,
                    },
                });
            }
            _ => anyhow::bail!("unexpected control frame {v}"),
        }
    }
}

/// One logical client, until the phase is `Done` or it drained.
pub async fn run(id: usize, shared: Arc<Shared>) {
    let g = shared.urls.len();
    let recover = shared.recovers(id);
    let home = id % g;
    let mut gateway = home;
    let mut next_seq = 1u64;
    let mut session = Session::new(next_seq);
    let mut backoff = Duration::from_millis(100);
    // The break the client is reconnecting after.
    let mut broken: Option<(Arc<Break>, usize)> = None;
    let mut phase = shared.phase.clone();
    loop {
        if *phase.borrow() == Phase::Done {
            if let Some((brk, unreplied)) = broken.take() {
                end_session(id, &shared, &mut session, Some(&brk));
                resolve(&shared, brk, unreplied, unreplied, Outcome::Ended, String::new());
            } else {
                end_session(id, &shared, &mut session, None);
            }
            return;
        }
        let query = match &session.recovery {
            Some(r) if broken.is_some() => {
                format!("gw_recover=1&gw_resume={}&gw_received={}", r.token, r.received)
            }
            _ if recover => "gw_recover=1".to_string(),
            _ => String::new(),
        };
        let attempt = async {
            let mut ws = tokio::time::timeout(Duration::from_secs(3), connect(&shared.urls[gateway], &query))
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out"))??;
            let open = if recover { Some(opening(&mut ws).await?) } else { None };
            Ok::<_, anyhow::Error>((ws, open))
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = phase.wait_for(|p| *p == Phase::Done) => continue,
        };
        let Ok((ws, open)) = r else {
            shared.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            gateway = (gateway + 1) % g;
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Some((brk, _)) = &broken {
            shared.counters.max_reconnect_us.fetch_max(brk.at.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        // What the opening means for the session.
        let mut resend = Vec::new();
        match (open, broken.take()) {
            (None, brk) => {
                // No recovery: every connection is a new client.
                end_as_new(id, &shared, &mut session, brk);
                session = Session::new(next_seq);
            }
            (Some(Opening::Fresh { client_id, token }), brk) => {
                // After a break: asked to resume without a token (the break came before the
                // first one).
                end_as_new(id, &shared, &mut session, brk);
                session = Session::new(next_seq);
                session.recovery = Some(Recovery::new(client_id, token, gateway));
            }
            (Some(Opening::NotRecovered { reason, detail, client_id, token }), brk) => {
                *shared.counters.not_recovered.lock().expect("counters").entry(reason.clone()).or_default() += 1;
                if let Some((brk, unreplied)) = brk {
                    end_session(id, &shared, &mut session, Some(&brk));
                    let detail = format!("told on gw-{gateway}: {detail}");
                    resolve(&shared, brk, unreplied, unreplied, Outcome::NotRecovered(reason), detail);
                } else {
                    shared.violation(id, format!("told not_recovered ({reason}) without asking to resume"));
                    end_session(id, &shared, &mut session, None);
                }
                session = Session::new(next_seq);
                session.recovery = Some(Recovery::new(client_id, token, gateway));
            }
            (Some(Opening::Resumed { client_id, token, received, replayed, accepted, resumed_id }), brk) => {
                let (Some((brk, unreplied)), Some(r)) = (brk, session.recovery.as_mut()) else {
                    shared.violation(id, format!("told resumed as {resumed_id:?} without asking to resume"));
                    continue;
                };
                let c = &shared.counters;
                c.resumed.fetch_add(1, Ordering::Relaxed);
                c.replayed.fetch_add(replayed, Ordering::Relaxed);
                if client_id != r.client_id || resumed_id != r.client_id {
                    shared.violation(
                        id,
                        format!(
                            "resumed as {resumed_id:?} (recovery frame: {client_id:?}), but the client was {:?}",
                            r.client_id
                        ),
                    );
                }
                if received != r.received {
                    shared.violation(id, format!("resumed with count {received}, but {} were received", r.received));
                }
                r.token = token;
                r.acked = r.acked.min(r.received);
                if brk.reason.contains("1012") {
                    // Handed over to a successor the client does not know.
                    r.home = None;
                }
                match accepted {
                    Some(a) => {
                        // The gateway read messages 0..a of the session: the ones after it never
                        // reached the workers and go again, in order, numbered on from `a`.
                        let oldest = session.unreplied.front().map_or(session.sent, |p| p.index);
                        if a > session.sent || a < oldest {
                            shared.violation(
                                id,
                                format!(
                                    "resumed with accepted {a}, but {} were sent in the session, the oldest unanswered \
                                     being {oldest}",
                                    session.sent
                                ),
                            );
                        }
                        if a <= session.sent {
                            session.sent = a;
                            for p in session.unreplied.iter_mut().filter(|p| p.index >= a) {
                                p.index = session.sent;
                                session.sent += 1;
                                resend.push(p.seq);
                            }
                        }
                    }
                    None => {
                        for p in &mut session.unreplied {
                            p.uncertain.get_or_insert_with(|| brk.clone());
                        }
                    }
                }
                resolve(&shared, brk, unreplied, 0, Outcome::Resumed { accepted: accepted.is_some() }, String::new());
            }
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        shared.counters.connected.fetch_add(1, Ordering::Relaxed);
        let end = connection(id, gateway, gateway != home, ws, &shared, &mut next_seq, &mut session, resend).await;
        shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Done => {
                end_session(id, &shared, &mut session, None);
                return;
            }
            End::Broken(brk) => {
                let unreplied = session.unreplied.len();
                shared.counters.lost_at_break.fetch_add(unreplied as u64, Ordering::Relaxed);
                broken = Some((brk, unreplied));
                gateway = (gateway + 1) % g;
            }
            End::GoHome => {
                shared.counters.moves_home.fetch_add(1, Ordering::Relaxed);
                end_session(id, &shared, &mut session, None);
                session = Session::new(next_seq);
                gateway = home;
            }
        }
    }
}

impl Recovery {
    fn new(client_id: String, token: String, gateway: usize) -> Self {
        Self { client_id, token, received: 0, acked: 0, last_ack: Instant::now(), home: Some(gateway) }
    }
}

/// Records what came of a break.
fn resolve(shared: &Shared, brk: Arc<Break>, unreplied: usize, lost: usize, outcome: Outcome, detail: String) {
    if lost < unreplied {
        // Not lost after all: resumed.
        shared.counters.lost_at_break.fetch_sub((unreplied - lost) as u64, Ordering::Relaxed);
    }
    shared.record(Record::Broken { brk, unreplied, lost, outcome, detail, resolved: Instant::now() });
}

/// The session is over: what it skipped and never got is lost, a violation unless it was
/// unanswered at a break the client resumed after without knowing whether the gateway read it
/// (then it is lost with that break). `brk`: the break that ended it, whose unanswered messages
/// are lost with it (recorded by the caller).
/// Ends `session` because the next connection is a new client; a break that led there lost
/// what was unreplied.
fn end_as_new(id: usize, shared: &Shared, session: &mut Session, brk: Option<(Arc<Break>, usize)>) {
    match brk {
        Some((brk, unreplied)) => {
            end_session(id, shared, session, Some(&brk));
            resolve(shared, brk, unreplied, unreplied, Outcome::New, String::new());
        }
        None => end_session(id, shared, session, None),
    }
}

fn end_session(id: usize, shared: &Shared, session: &mut Session, brk: Option<&Arc<Break>>) {
    let now = Instant::now();
    let mut lost_unread: BTreeMap<*const Break, (Arc<Break>, usize)> = BTreeMap::new();
    for (seq, s) in std::mem::take(&mut session.skipped) {
        if let Some(b) = s.uncertain {
            lost_unread.entry(Arc::as_ptr(&b)).or_insert_with(|| (b.clone(), 0)).1 += 1;
            continue;
        }
        shared.violation(
            id,
            format!(
                "message {seq} sent at {:.1}s was never answered, though the reply to {} came at {:.1}s and the \
                 session lived on until {:.1}s (lost)",
                crate::since_start(s.sent_at),
                s.overtaken_by,
                crate::since_start(s.at),
                crate::since_start(now)
            ),
        );
    }
    if brk.is_none()
        && let Some(p) = session.unreplied.front()
    {
        // Ended by the soak (the drain is over) with messages unanswered on a live connection.
        if p.uncertain.is_none() {
            shared.violation(
                id,
                format!("{} message(s) from {} never answered by the end of the drain", session.unreplied.len(), p.seq),
            );
        }
    }
    for p in std::mem::take(&mut session.unreplied) {
        // Those unanswered at an earlier break the client resumed after count against it (their
        // count in the break that ended the session is the caller's).
        if brk.is_none()
            && let Some(b) = p.uncertain
        {
            lost_unread.entry(Arc::as_ptr(&b)).or_insert_with(|| (b.clone(), 0)).1 += 1;
        }
    }
    for (_, (brk, n)) in lost_unread {
        shared.record(Record::Lost { brk, n });
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

fn text_of(id: usize, seq: u64) -> String {
    // Odd clients ask for their answers through the routing index (`u:`: the worker binds the
    // connection to a uid of its own and answers with `send_to_uid`).
    if id % 2 == 1 { format!("u:{id}:{seq}") } else { format!("{id}:{seq}") }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    id: usize,
    gateway: usize,
    away: bool,
    ws: Ws,
    shared: &Shared,
    next_seq: &mut u64,
    session: &mut Session,
    resend: Vec<u64>,
) -> End {
    let c = &shared.counters;
    let recover = session.recovery.is_some();
    let relayed = session.recovery.as_ref().is_some_and(|r| r.home != Some(gateway));
    let (mut tx, mut rx) = ws.split();
    let offset = rand::thread_rng().gen_range(0..shared.period.as_micros() as u64 + 1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_micros(offset), shared.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut phase = shared.phase.clone();
    let go_home = away.then(|| Instant::now() + Duration::from_millis(rand::thread_rng().gen_range(5000..15000)));
    let broken =
        |reason: String| End::Broken(Arc::new(Break { client: id, gateway, at: Instant::now(), reason, relayed }));
    for seq in resend {
        c.resent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tx.send(Message::Text(text_of(id, seq).into())).await {
            return broken(format!("send failed: {e}"));
        }
    }
    loop {
        let mut now_phase = *phase.borrow_and_update();
        let leaving = now_phase == Phase::Running && go_home.is_some_and(|t| Instant::now() > t);
        if leaving {
            if session.unreplied.is_empty() {
                close(&mut tx, &mut rx).await;
                return End::GoHome;
            }
            // Like a drain: nothing new until every reply is in.
            now_phase = Phase::Draining;
        }
        match now_phase {
            Phase::Running => {}
            Phase::Draining if session.unreplied.is_empty() => {
                close(&mut tx, &mut rx).await;
                return End::Done;
            }
            Phase::Draining => {}
            Phase::Done => return End::Done,
        }
        tokio::select! {
            _ = tick.tick() => {
                if now_phase != Phase::Running {
                    continue;
                }
                if session.unreplied.len() >= shared.window {
                    c.window_full.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let seq = *next_seq;
                *next_seq += 1;
                session.unreplied.push_back(Pending { seq, sent_at: Instant::now(), index: session.sent, uncertain: None });
                session.sent += 1;
                c.sent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = tx.send(Message::Text(text_of(id, seq).into())).await {
                    return broken(format!("send failed: {e}"));
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let data = match incoming(&text, recover) {
                        Ok(Incoming::Data(d)) => d,
                        Ok(Incoming::Control(v)) => {
                            let r = session.recovery.as_mut().expect("recover");
                            if v["type"] == "recovery" && let Some(t) = v["token"].as_str() {
                                r.token = t.to_string();
                            } else {
                                shared.violation(id, format!("unexpected control frame {v}"));
                            }
                            continue;
                        }
                        Err(e) => {
                            shared.violation(id, e);
                            continue;
                        }
                    };
                    if let Some(r) = session.recovery.as_mut() {
                        r.received += 1;
                        if r.received - r.acked >= ACK_EVERY {
                            let ack = format!("\0{{\"type\":\"ack\",\"received\":{}}}", r.received);
                            r.acked = r.received;
                            r.last_ack = Instant::now();
                            if let Err(e) = tx.send(Message::Text(ack.into())).await {
                                return broken(format!("send failed: {e}"));
                            }
                        }
                    }
                    reply(id, gateway, data, shared, *next_seq, session);
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = match frame {
                        Some(f) => format!("closed by gateway: {} {}", u16::from(f.code), f.reason),
                        None => "closed by gateway".into(),
                    };
                    return broken(reason);
                }
                Some(Ok(Message::Binary(b))) => {
                    shared.violation(id, format!("unexpected binary message of {} bytes", b.len()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return broken(format!("read failed: {e}")),
                None => return broken("connection ended".into()),
            },
            _ = check.tick() => {
                // One unanswered at a break the client resumed after may have been lost unread: it
                // is written off (lost with that break) once it has waited half the stall limit.
                while let Some(p) = session.unreplied.front()
                    && p.uncertain.is_some()
                    && p.sent_at.elapsed() > shared.stall / 2
                {
                    let p = session.unreplied.pop_front().expect("front");
                    session.skipped.insert(p.seq, Skipped { sent_at: p.sent_at, overtaken_by: 0, at: Instant::now(), uncertain: p.uncertain });
                }
                if let Some(p) = session.unreplied.front()
                    && p.sent_at.elapsed() > shared.stall
                {
                    shared.violation(id, format!("message {} on gateway {gateway} unanswered for {:?} (hang); reconnecting", p.seq, p.sent_at.elapsed()));
                    return broken("stalled".into());
                }
                if let Some(r) = session.recovery.as_mut()
                    && r.received > r.acked
                    && r.last_ack.elapsed() > ACK_AFTER
                {
                    let ack = format!("\0{{\"type\":\"ack\",\"received\":{}}}", r.received);
                    r.acked = r.received;
                    r.last_ack = Instant::now();
                    if let Err(e) = tx.send(Message::Text(ack.into())).await {
                        return broken(format!("send failed: {e}"));
                    }
                }
            }
            _ = phase.changed() => {}
        }
    }
}

/// Checks one reply against the session.
fn reply(id: usize, gateway: usize, text: &str, shared: &Shared, next_seq: u64, session: &mut Session) {
    let c = &shared.counters;
    let parsed = text.split_once(':').and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<u64>().ok()?)));
    let Some((client, seq)) = parsed else {
        shared.violation(id, format!("unexpected message {text:?}"));
        return;
    };
    if client != id {
        shared.violation(id, format!("got client {client}'s reply {seq} (misrouted)"));
        return;
    }
    if seq < session.first || seq >= next_seq {
        shared.violation(
            id,
            format!("reply {seq} to a message not sent in this session ({}..{next_seq})", session.first),
        );
        return;
    }
    match session.unreplied.iter().position(|p| p.seq == seq) {
        Some(0) => {
            let p = session.unreplied.pop_front().expect("front");
            c.replies.fetch_add(1, Ordering::Relaxed);
            c.max_latency_us.fetch_max(p.sent_at.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Some(k) => {
            // The earlier ones are skipped: reordered if they come later, else lost.
            let now = Instant::now();
            for p in session.unreplied.drain(..k) {
                session
                    .skipped
                    .insert(p.seq, Skipped { sent_at: p.sent_at, overtaken_by: seq, at: now, uncertain: p.uncertain });
            }
            session.unreplied.pop_front();
            c.replies.fetch_add(1, Ordering::Relaxed);
        }
        None if session.skipped.contains_key(&seq) => {
            let s = session.skipped.remove(&seq).expect("checked");
            shared.violation(id, format!("reply {seq} arrived after the reply to {} (reordered)", s.overtaken_by));
            c.replies.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
            shared.record(Record::Duplicate { client: id, seq, gateway, at: Instant::now() });
        }
    }
}
