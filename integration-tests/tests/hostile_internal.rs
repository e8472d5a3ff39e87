//! Hostile peers on the internal ports of the gateway and the register.
//!
//! Every case: the link is closed, the failure is counted (gateway `handshake_failures` /
//! `link_errors`, register `handshake_failures` / `protocol_errors`), memory stays flat, and
//! everything else keeps working: a real client's echo through gateway → worker runs during and
//! after the cases, and good peers still connect. The rate-limit tests send 1,000 failed
//! handshakes from 127.0.0.1 and check that they are cheap, counted and logged within the budget,
//! while a peer from 127.0.0.2 is not affected and a peer with the secret from 127.0.0.1 itself
//! still gets in (`limiter_lockout.rs`: a worker restarting under a garbage flood from its own
//! address).
//!
//! Each hostile connection comes from its own loopback address (127.0.0.x) unless a test is about
//! one address, so the failed-handshake limiter never decides a case that is about something else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gw_integration_tests::process::cpu_time;
use gw_integration_tests::ws::Received;
use gw_integration_tests::*;
use gw_proto::handshake::{ClientHello, Connector, HandshakeResult, MAGIC, ServerHello};
use gw_proto::{
    ClientInfo, Command, FrameDecoder, FromGateway, FromRegister, GatewayInfo, PROTOCOL_VERSION, Payload, Protocol,
    PusherPeer, Query, RelayFrame, RelayOpen, Reply, Role, ToGateway, ToRegister, codec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "hostile-internal-secret-5e1f";
const WRONG: &str = "not-the-secret-at-all-0000";
/// How long a case waits for the server to close a hostile connection.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// One frame holding `msg` (a macro: this crate does not depend on serde to name the bound).
macro_rules! frame_of {
    ($msg:expr) => {{
        let mut out = Vec::new();
        codec::encode_frame(&$msg, &mut out, 1 << 20).unwrap();
        out
    }};
}

/// A payload from the server, decoded as the type the context asks for.
macro_rules! decoded {
    ($payload:expr) => {
        codec::decode(&$payload).expect("the server sends valid messages")
    };
}

// ---------------------------------------------------------------------------------------------
// A raw internal peer.

/// A fresh loopback source address for each hostile connection (127.0.1.0 - 127.0.255.255).
fn fresh_source() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0x7f00_0100);
    IpAddr::V4(Ipv4Addr::from(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// A TCP connection speaking internal frames by hand.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    dec: FrameDecoder,
}

impl Raw {
    async fn connect_from(from: IpAddr, to: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let s = socket.connect(to).await.unwrap_or_else(|e| panic!("connect {to} from {from}: {e}"));
        s.set_nodelay(true).unwrap();
        Self { s, buf: BytesMut::with_capacity(4096), dec: FrameDecoder::new(1 << 20) }
    }

    async fn connect(to: SocketAddr) -> Self {
        Self::connect_from(fresh_source(), to).await
    }

    /// The next frame payload; `None` when the server closed (or reset) the connection.
    async fn frame(&mut self) -> Option<Vec<u8>> {
        let fut = async {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).expect("the server sends valid frames") {
                    return Some(f.to_vec());
                }
                match self.s.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(CLOSE_WAIT, fut).await.expect("the server neither sent a frame nor closed")
    }

    /// Writes raw bytes; errors are ignored (the server may already have closed).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
    }

    /// Reads (and discards) until the server closes; panics if it does not within `CLOSE_WAIT`.
    async fn expect_closed(mut self) {
        while self.frame().await.is_some() {}
    }

    /// Sends `bytes`, then expects the server to close.
    async fn closed_after(mut self, bytes: &[u8]) {
        self.send(bytes).await;
        self.expect_closed().await;
    }

    /// Sends `bytes` and ends the stream, then expects the server to close.
    async fn closed_after_eof(mut self, bytes: &[u8]) {
        self.send(bytes).await;
        self.s.shutdown().await.unwrap();
        self.expect_closed().await;
    }

    /// Plays the connecting side of the handshake with `secret`: reads the server's hello,
    /// answers, reads the verdict. Returns the server's hello, the answer frame as sent (for a
    /// replay) and the verdict.
    async fn handshake(&mut self, secret: &str, role: Role) -> (ServerHello, Vec<u8>, HandshakeResult) {
        let hello_payload = self.frame().await.expect("server hello");
        let hello: ServerHello = codec::decode(&hello_payload).unwrap();
        let mut con = Connector::new(secret.as_bytes(), role, "hostile-test", gw_link::random_nonce());
        let (_, answer) = con.respond(&hello_payload).unwrap();
        let answer = frame_of!(answer);
        self.send(&answer).await;
        let verdict: HandshakeResult = decoded!(self.frame().await.expect("verdict"));
        if matches!(verdict, HandshakeResult::Accepted { .. }) {
            let mut payload = Vec::new();
            codec::encode_frame(&verdict, &mut payload, 1 << 20).unwrap();
            con.finish(&payload[4..]).expect("the server proves the secret");
        }
        (hello, answer, verdict)
    }

    /// Authenticates with the real secret (panics otherwise).
    async fn authenticated(to: SocketAddr, role: Role) -> Self {
        let mut raw = Self::connect(to).await;
        let (_, _, verdict) = raw.handshake(SECRET, role).await;
        assert!(matches!(verdict, HandshakeResult::Accepted { .. }), "{verdict:?}");
        raw
    }
}

/// A frame around arbitrary payload bytes.
fn frame_raw(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Deterministic noise (xorshift), no dependency needed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// bincode varint of 2^60: a vector or string length no payload can back.
fn claim_2_pow_60() -> Vec<u8> {
    let mut v = vec![0xfd];
    v.extend_from_slice(&(1u64 << 60).to_le_bytes());
    v
}

/// A `ClientHello` prefix (magic, version, role) followed by `rest`.
fn hello_prefix(role_index: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = frame_of!((MAGIC, PROTOCOL_VERSION, role_index as u32));
    p.drain(..4);
    p.extend_from_slice(rest);
    p
}

// ---------------------------------------------------------------------------------------------
// Process measurements.

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

// ---------------------------------------------------------------------------------------------
// The cluster, and a client echoing through it the whole time.

struct Cluster {
    reg: RegisterHandle,
    gw: GatewayHandle,
    _worker: WorkerHandle,
}

async fn cluster() -> Cluster {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.link.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let worker = WorkerHandle::start("w", &[reg.addr], SECRET, NamedEcho("w".into()));
    wait_for_workers(&gw, 1).await;
    Cluster { reg, gw, _worker: worker }
}

/// A WebSocket client that echoes through gateway → worker every 20 ms until stopped, and fails
/// the test on the first lost, late or foreign message.
struct EchoProbe {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl EchoProbe {
    async fn start(gw: &GatewayHandle) -> Self {
        let mut c = gw.client().await;
        c.send("probe-start").await;
        assert_eq!(c.recv().await, "w:probe-start");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    c.send(&format!("probe-{n}")).await;
                    match c.next(Duration::from_secs(5)).await {
                        Some(Received::Text(t)) => assert_eq!(t, format!("w:probe-{n}"), "echo probe"),
                        other => panic!("echo probe {n}: {other:?}"),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n
            }
        });
        Self { stop, task }
    }

    /// Stops the probe; panics if any echo failed. Returns the round trips made.
    async fn finish(self) -> u64 {
        self.stop.cancel();
        self.task.await.expect("echo probe failed")
    }
}

/// A server counter that each hostile case must raise by exactly one.
struct Counter<F> {
    read: F,
    expected: u64,
}

impl<F: Fn() -> u64> Counter<F> {
    /// Starts from the counter's current value.
    fn new(read: F) -> Self {
        let expected = read();
        Self { read, expected }
    }

    /// Waits (up to `CLOSE_WAIT`) for the counter to count the case `what` once, and no more.
    async fn one_more(&mut self, what: &str) {
        self.expected += 1;
        let expected = self.expected;
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            let now = (self.read)();
            if now == expected {
                return;
            }
            assert!(now < expected, "{what}: {now} counted, expected {expected}");
            assert!(Instant::now() < deadline, "{what}: {now} counted, expected {expected}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A replayed authentication transcript: a genuine hello recorded on one connection is refused
/// on another, whose server nonce differs, and counted in `failures`.
async fn replayed_hello_is_refused(addr: SocketAddr, failures: &mut Counter<impl Fn() -> u64>) {
    let mut first = Raw::connect(addr).await;
    let (hello_1, recorded, verdict) = first.handshake(SECRET, Role::Client).await;
    assert!(matches!(verdict, HandshakeResult::Accepted { .. }));
    let mut second = Raw::connect(addr).await;
    let hello_2: ServerHello = decoded!(second.frame().await.expect("server hello"));
    assert_ne!(hello_1.nonce, hello_2.nonce, "the server reused a nonce");
    second.send(&recorded).await;
    let verdict: HandshakeResult = decoded!(second.frame().await.expect("verdict"));
    assert_eq!(verdict, HandshakeResult::Rejected { reason: "authentication failed".into() });
    second.expect_closed().await;
    failures.one_more("replayed hello").await;
    drop(first);
}

// ---------------------------------------------------------------------------------------------
// The cases, against the gateway.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_on_the_gateways_internal_port_are_closed_counted_and_harmless() {
    let c = cluster().await;
    let addr = c.gw.internal;
    let failures = || c.gw.metric("handshake_failures");
    let link_errors = || c.gw.metric("link_errors");
    let mut watcher = c.gw.client().await; // must never receive what a hostile peer asks for
    let probe = EchoProbe::start(&c.gw).await;
    let rss_before = rss();
    let mut failures = Counter::new(failures);
    let mut link_errors = Counter::new(link_errors);

    for round in 0..5u64 {
        // A synchronous echo each round on top of the probe's stream (and proof that the watcher
        // got nothing else).
        watcher.send(&format!("round-{round}")).await;
        assert_eq!(watcher.recv().await, format!("w:round-{round}"));

        // Random bytes instead of a hello.
        Raw::connect(addr).await.closed_after(&noise(64 * 1024, 0x9e37_79b9_7f4a_7c15 ^ round)).await;
        failures.one_more("random bytes").await;

        // A truncated frame, then end of stream.
        Raw::connect(addr).await.closed_after_eof(&[0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await;
        failures.one_more("truncated frame").await;

        // A length prefix of 0xFFFFFFFF.
        Raw::connect(addr).await.closed_after(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
        failures.one_more("length 0xFFFFFFFF").await;

        // A valid frame whose hello claims a node name of 2^60 bytes.
        Raw::connect(addr).await.closed_after(&frame_raw(&hello_prefix(2, &claim_2_pow_60()))).await;
        failures.one_more("huge length in a hello").await;

        // An unknown message tag as the first frame.
        Raw::connect(addr).await.closed_after(&frame_raw(&[200])).await;
        failures.one_more("unknown tag before auth").await;

        // A well-formed command before authentication: refused, and not executed.
        let cmd = ToGateway::Command(Command::SendToAll { msg: Payload::text("pwned"), exclude: vec![] });
        Raw::connect(addr).await.closed_after(&frame_of!(cmd)).await;
        failures.one_more("command before auth").await;

        // A peer that sends nothing is closed at the handshake timeout (1 s here).
        let started = Instant::now();
        Raw::connect(addr).await.expect_closed().await;
        assert!(started.elapsed() < Duration::from_secs(5), "idle peer held for {:?}", started.elapsed());
        failures.one_more("idle peer").await;

        // After authentication: a valid frame claiming a vector of 2^60 client ids.
        let payload = [&[1u8, 1, 0][..], &claim_2_pow_60()].concat(); // Request { id: 1, IsOnline { clients } }
        Raw::authenticated(addr, Role::Client).await.closed_after(&frame_raw(&payload)).await;
        link_errors.one_more("huge length after auth").await;

        // After authentication: an unknown message tag.
        Raw::authenticated(addr, Role::Client).await.closed_after(&frame_raw(&[200, 0, 0])).await;
        link_errors.one_more("unknown tag after auth").await;

        // After authentication: 0xFFFFFFFF and a truncated frame.
        Raw::authenticated(addr, Role::Client).await.closed_after(&[0xff, 0xff, 0xff, 0xff]).await;
        link_errors.one_more("length 0xFFFFFFFF after auth").await;
        Raw::authenticated(addr, Role::Client).await.closed_after_eof(&[0, 0, 1, 0, 1, 2]).await;
        link_errors.one_more("truncated frame after auth").await;

        // Relay frames are for gateway-to-gateway links only: a client link sending one is
        // closed.
        let relay = ToGateway::Relay { conn: 1, frame: RelayFrame::Message(Payload::text("pwned")) };
        Raw::authenticated(addr, Role::Client).await.closed_after(&frame_of!(relay)).await;
        link_errors.one_more("relay frame from a client link").await;

        // So are Pusher presence messages (docs/pusher.md §5).
        let pusher = ToGateway::Pusher(PusherPeer::Leave {
            gateway: "127.0.0.1:1".into(),
            app: "1".into(),
            channel: "presence-a".into(),
            user_id: "u".into(),
        });
        Raw::authenticated(addr, Role::Client).await.closed_after(&frame_of!(pusher)).await;
        link_errors.one_more("pusher peer message from a client link").await;
    }

    // A gateway link: a relay open without a resume token is refused (the watcher gets no new
    // neighbour), frames for sockets never opened are ignored, and the link stays up.
    let mut gateway = Raw::authenticated(addr, Role::Gateway).await;
    let open = RelayOpen {
        conn: 9,
        info: ClientInfo {
            client_addr: "203.0.113.7:5000".into(),
            gateway_addr: "127.0.0.1:1".into(),
            listener: "websocket://127.0.0.1:1".into(),
            protocol: Protocol::WebSocket,
        },
        path: "/".into(),
        query: "gw_recover=1".into(),
        headers: vec![],
    };
    gateway.send(&frame_of!(ToGateway::RelayOpen(Box::new(open)))).await;
    gateway.send(&frame_of!(ToGateway::Relay { conn: 77, frame: RelayFrame::Message(Payload::text("pwned")) })).await;
    gateway.send(&frame_of!(ToGateway::Request { id: 3, query: Query::ClientCount })).await;
    let mut refused = false;
    loop {
        match decoded!(gateway.frame().await.expect("an answer")) {
            FromGateway::RelayRefused { conn: 9, control } => {
                assert!(control.contains("not_recovered") && control.contains("malformed"), "{control}");
                refused = true;
            }
            FromGateway::Reply { id: 3, reply } => {
                assert!(refused, "the refusal comes first");
                assert_eq!(reply, Reply::Counts(vec![2]), "the probe and the watcher, nobody new");
                break;
            }
            _ => {}
        }
    }

    replayed_hello_is_refused(addr, &mut failures).await;

    // Memory stayed flat over 50 hostile connections (a generous bound: nothing above was
    // allowed to allocate more than its frame, and frames were tiny).
    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 48 << 20, "RSS grew by {} KiB", grown >> 10);

    // Everyone else was unaffected: the echo never missed, the watcher saw no "pwned", a good
    // peer still authenticates and is answered.
    watcher.expect_silence(Duration::from_millis(200)).await;
    let mut good = Raw::authenticated(addr, Role::Client).await;
    good.send(&frame_of!(ToGateway::Request { id: 7, query: Query::ClientCount })).await;
    loop {
        if let FromGateway::Reply { id: 7, reply } = decoded!(good.frame().await.expect("reply")) {
            assert_eq!(reply, Reply::Counts(vec![2]), "the probe and the watcher");
            break;
        }
    }
    let round_trips = probe.finish().await;
    assert!(round_trips >= 1, "no echo round trip during the cases");
    assert_eq!(c.gw.metric("handshakes_rate_limited"), 0, "one connection per address never hits the limiter");
    let _ = &c.reg;
}

// ---------------------------------------------------------------------------------------------
// The cases, against the register.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_on_the_registers_port_are_closed_counted_and_harmless() {
    let c = cluster().await;
    let addr = c.reg.addr;
    let stats = &c.reg.registry.stats;
    let failures = || stats.handshake_failures.load(Ordering::Relaxed);
    let protocol_errors = || stats.protocol_errors.load(Ordering::Relaxed);
    let probe = EchoProbe::start(&c.gw).await;
    let listed = c.reg.registry.gateways();
    assert_eq!(listed.len(), 1);
    let rss_before = rss();
    let mut failures = Counter::new(failures);
    let mut protocol_errors = Counter::new(protocol_errors);
    let mut ws = c.gw.client().await;

    for round in 0..5u64 {
        ws.send(&format!("round-{round}")).await;
        assert_eq!(ws.recv().await, format!("w:round-{round}"));

        Raw::connect(addr).await.closed_after(&noise(64 * 1024, 0x1234_5678 ^ round)).await;
        failures.one_more("random bytes").await;

        Raw::connect(addr).await.closed_after_eof(&[0, 0, 0, 100, 1, 2, 3]).await;
        failures.one_more("truncated frame").await;

        Raw::connect(addr).await.closed_after(&[0xff, 0xff, 0xff, 0xff]).await;
        failures.one_more("length 0xFFFFFFFF").await;

        Raw::connect(addr).await.closed_after(&frame_raw(&hello_prefix(1, &claim_2_pow_60()))).await;
        failures.one_more("huge length in a hello").await;

        Raw::connect(addr).await.closed_after(&frame_raw(&[200])).await;
        failures.one_more("unknown tag before auth").await;

        // A well-formed announcement before authentication: refused, and not listed.
        let evil = GatewayInfo { address: "evil.example:2900".into(), name: "evil".into() };
        Raw::connect(addr).await.closed_after(&frame_of!(ToRegister::Announce { gateway: evil })).await;
        failures.one_more("announcement before auth").await;

        // After authentication (as a gateway): an announcement whose address claims 2^60 bytes.
        Raw::authenticated(addr, Role::Gateway)
            .await
            .closed_after(&frame_raw(&[&[0u8][..], &claim_2_pow_60()].concat()))
            .await;
        protocol_errors.one_more("huge length after auth").await;

        // After authentication: an unknown message tag, 0xFFFFFFFF, a truncated frame.
        for bytes in [&[0, 0, 0, 1, 200][..], &[0xff, 0xff, 0xff, 0xff], &[0, 0, 0, 50, 1]] {
            Raw::authenticated(addr, Role::Client).await.closed_after_eof(bytes).await;
            protocol_errors.one_more("bad frame after auth").await;
        }
    }

    replayed_hello_is_refused(addr, &mut failures).await;

    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 48 << 20, "RSS grew by {} KiB", grown >> 10);
    assert!(probe.finish().await >= 1);
    // The list is what it was (nothing announced by the hostile peers, the real gateway still
    // there) and a new subscriber gets it.
    assert_eq!(c.reg.registry.gateways(), listed);
    let client = gateway_client(&[c.reg.addr], SECRET, 1).await;
    assert_eq!(client.connected_gateways(), vec![c.gw.gw.address().to_string()]);
    assert_eq!(stats.rate_limited.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------------
// 1,000 failed handshakes a second from one address.

/// Sends `n` wrong-secret handshakes from 127.0.0.1 to `to`, `parallel` at a time. Returns how
/// many were closed before the server said hello (none may be: every connection is challenged).
async fn hammer(to: SocketAddr, n: usize, parallel: usize) -> usize {
    let mut tasks = Vec::new();
    for t in 0..parallel {
        tasks.push(tokio::spawn(async move {
            let mut unchallenged = 0;
            for _ in (t..n).step_by(parallel) {
                let mut p = Raw::connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), to).await;
                let Some(hello) = p.frame().await else {
                    unchallenged += 1;
                    continue;
                };
                let mut con = Connector::new(WRONG.as_bytes(), Role::Worker, "guesser", gw_link::random_nonce());
                let (_, answer): (_, ClientHello) = con.respond(&hello).unwrap();
                p.send(&frame_of!(answer)).await;
                p.expect_closed().await;
            }
            unchallenged
        }));
    }
    let mut unchallenged = 0;
    for t in tasks {
        unchallenged += t.await.unwrap();
    }
    unchallenged
}

/// Waits until `failed + limited` accounts for `n` attempts (each is counted just after its
/// connection closes); returns both.
async fn all_counted(n: u64, counts: impl Fn() -> (u64, u64)) -> (u64, u64) {
    eventually(Duration::from_secs(10), &format!("{n} attempts counted"), || {
        let (failed, limited) = counts();
        async move { failed + limited >= n }
    })
    .await;
    counts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_failed_handshakes_a_second_on_the_gateway_are_rate_limited_and_cheap() {
    let c = cluster().await;
    let probe = EchoProbe::start(&c.gw).await;
    let failures_before = c.gw.metric("handshake_failures");
    let cpu_before = cpu_time("self");
    let started = Instant::now();
    let unchallenged = hammer(c.gw.internal, 1000, 8).await;
    let took = started.elapsed();
    let (failed, limited) = all_counted(1000, || {
        (c.gw.metric("handshake_failures") - failures_before, c.gw.metric("handshakes_rate_limited"))
    })
    .await;
    let cpu = cpu_time("self").saturating_sub(cpu_before);
    eprintln!("gateway: 1000 attempts in {took:?}, {cpu:?} CPU; {failed} handshakes failed, {limited} over budget");

    assert_eq!(unchallenged, 0, "every connection gets the challenge, also over budget");
    assert_eq!(failed + limited, 1000, "every attempt is either a counted failure or counted over budget");
    // Served in full (and logged): the burst plus one more per refill interval (handshakes in
    // flight count against the burst too, so parallel attempts cannot slip through).
    let allowed = gw_link::LimiterConfig::default().max_failures_within(took) + 1;
    assert!(failed <= allowed, "{failed} handshakes were served in full in {took:?} (at most {allowed})");
    assert!(took < Duration::from_secs(5), "1000 attempts took {took:?}");
    // Client and server side together, 1000 connections: generous.
    assert!(cpu < Duration::from_secs(4), "1000 refused attempts cost {cpu:?} of CPU");

    // A good peer from another address is not affected.
    let mut good = Raw::connect_from("127.0.0.2".parse().unwrap(), c.gw.internal).await;
    let (_, _, verdict) = good.handshake(SECRET, Role::Client).await;
    assert!(matches!(verdict, HandshakeResult::Accepted { .. }), "{verdict:?}");
    good.send(&frame_of!(ToGateway::Request { id: 1, query: Query::ClientCount })).await;
    loop {
        if let FromGateway::Reply { id: 1, reply } = decoded!(good.frame().await.expect("reply")) {
            assert_eq!(reply, Reply::Counts(vec![1]));
            break;
        }
    }
    // Established links were never touched.
    assert!(probe.finish().await >= 1);
    assert_eq!(c.gw.gw.worker_count(), 1);
    // A peer with the secret from 127.0.0.1 itself is not kept out.
    let mut own = Raw::connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), c.gw.internal).await;
    let (_, _, verdict) = own.handshake(SECRET, Role::Client).await;
    assert!(matches!(verdict, HandshakeResult::Accepted { .. }), "{verdict:?}");
    // And 127.0.0.1 earns full service back once it stops failing (one attempt per 312 ms).
    let internal = c.gw.internal;
    let gw = c.gw.gw.clone();
    eventually(Duration::from_secs(5), "127.0.0.1 served in full again", move || {
        let gw = gw.clone();
        async move {
            let before = gw.state.metrics.get("handshake_failures").unwrap();
            let mut p = Raw::connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), internal).await;
            let (_, _, verdict) = p.handshake(WRONG, Role::Client).await;
            assert!(matches!(verdict, HandshakeResult::Rejected { .. }));
            p.expect_closed().await;
            // Counted just after the close: a served attempt shows by the next poll at the latest.
            gw.state.metrics.get("handshake_failures").unwrap() > before
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_failed_handshakes_a_second_on_the_register_are_rate_limited_and_cheap() {
    let c = cluster().await;
    let stats = &c.reg.registry.stats;
    let failures_before = stats.handshake_failures.load(Ordering::Relaxed);
    let cpu_before = cpu_time("self");
    let started = Instant::now();
    let unchallenged = hammer(c.reg.addr, 1000, 8).await;
    let took = started.elapsed();
    let (failed, limited) = all_counted(1000, || {
        (stats.handshake_failures.load(Ordering::Relaxed) - failures_before, stats.rate_limited.load(Ordering::Relaxed))
    })
    .await;
    let cpu = cpu_time("self").saturating_sub(cpu_before);
    eprintln!("register: 1000 attempts in {took:?}, {cpu:?} CPU; {failed} handshakes failed, {limited} over budget");

    assert_eq!(unchallenged, 0, "every connection gets the challenge, also over budget");
    assert_eq!(failed + limited, 1000);
    assert!(
        failed <= gw_link::LimiterConfig::default().max_failures_within(took) + 1,
        "{failed} got through in {took:?}"
    );
    assert!(took < Duration::from_secs(5), "1000 attempts took {took:?}");
    assert!(cpu < Duration::from_secs(4), "1000 refused attempts cost {cpu:?} of CPU");

    // A good peer from 127.0.0.2 subscribes and gets the list.
    let mut good = Raw::connect_from("127.0.0.2".parse().unwrap(), c.reg.addr).await;
    let (_, _, verdict) = good.handshake(SECRET, Role::Client).await;
    assert!(matches!(verdict, HandshakeResult::Accepted { .. }), "{verdict:?}");
    good.send(&frame_of!(ToRegister::Subscribe)).await;
    loop {
        if let FromRegister::Gateways { list } = decoded!(good.frame().await.expect("list")) {
            assert_eq!(list.len(), 1);
            break;
        }
    }
    // The gateway's and the worker's links to the register were never touched.
    assert_eq!(c.reg.registry.gateways().len(), 1);
    let mut ws = c.gw.client().await;
    ws.send("still here").await;
    assert_eq!(ws.recv().await, "w:still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_handshake_budget_comes_from_the_config() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.link.failed_handshakes = 3;
        c.link.failed_handshake_window = Duration::from_secs(60);
    })
    .await;
    let from = fresh_source();
    for _ in 0..3 {
        let mut p = Raw::connect_from(from, gw.internal).await;
        let hello = p.frame().await.expect("within the budget the server says hello");
        let mut con = Connector::new(WRONG.as_bytes(), Role::Worker, "guesser", gw_link::random_nonce());
        let (_, answer): (_, ClientHello) = con.respond(&hello).unwrap();
        p.closed_after(&frame_of!(answer)).await;
    }
    // Three failures used the budget of three: the fourth is still challenged, but over budget:
    // its failure is counted apart (and not logged).
    let mut p = Raw::connect_from(from, gw.internal).await;
    let (_, _, verdict) = p.handshake(WRONG, Role::Worker).await;
    assert!(matches!(verdict, HandshakeResult::Rejected { .. }), "{verdict:?}");
    p.expect_closed().await;
    let g = gw.gw.clone();
    eventually(Duration::from_secs(5), "the fourth failure counted over budget", || {
        let n = g.state.metrics.get("handshakes_rate_limited").unwrap();
        async move { n == 1 }
    })
    .await;
    assert_eq!(gw.metric("handshake_failures"), 3);
    // A peer with the secret from the same address still gets in.
    let mut good = Raw::connect_from(from, gw.internal).await;
    let (_, _, verdict) = good.handshake(SECRET, Role::Client).await;
    assert!(matches!(verdict, HandshakeResult::Accepted { .. }), "{verdict:?}");
    // Another address still has its whole budget.
    let mut other = Raw::connect(gw.internal).await;
    assert!(other.frame().await.is_some(), "another address is not affected");
}

/// A worker link acknowledging sequence numbers it was never sent: each is counted
/// (`bad_acks`, `gw_bad_acks_total`) and ignored; the link stays up, nothing else is counted, and
/// a real client's events keep flowing through the real worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_acknowledging_events_never_sent_is_counted_and_ignored() {
    let c = cluster().await;
    // Bound to the real worker before the raw one joins, so the probe's events never go to it.
    let probe = EchoProbe::start(&c.gw).await;
    let link_errors = c.gw.metric("link_errors");
    let mut bad_acks = Counter::new(|| c.gw.metric("bad_acks"));
    let mut raw = Raw::authenticated(c.gw.internal, Role::Worker).await;
    wait_for_workers(&c.gw, 2).await;
    for seq in [1, 7, u64::MAX] {
        raw.send(&frame_of!(ToGateway::Ack { seq })).await;
        bad_acks.one_more(&format!("ack of seq {seq} never sent")).await;
    }
    // The link is still up: it answers a query.
    raw.send(&frame_of!(ToGateway::Request { id: 1, query: Query::ClientCount })).await;
    let reply = loop {
        // Anything else (a ping, say) is passed over.
        if let FromGateway::Reply { id: 1, reply } =
            decoded!(raw.frame().await.expect("the link stays up after bad acks"))
        {
            break reply;
        }
    };
    assert!(matches!(reply, Reply::Counts(_)), "{reply:?}");
    assert!(probe.finish().await > 0);
    assert_eq!(c.gw.metric("link_errors"), link_errors, "a bad ack is not a link error");
    assert_eq!(c.gw.metric("bad_acks"), 3);
    // As /metrics shows it.
    use gw_daemon::Node;
    let text = gw_daemon::report::render_prometheus(gw_gateway::GatewayNode::new(c.gw.gw.clone()).metrics().await);
    assert!(text.lines().any(|l| l == "gw_bad_acks_total 3"), "{text}");
    assert!(text.contains("# HELP gw_bad_acks_total "), "{text}");
    for reason in ["slow_consumer", "client_gone", "no_worker"] {
        assert_eq!(c.gw.metric(&format!("dropped_{reason}")), 0, "{reason}");
    }
}

/// A peer that announces a hand-over of its clients and never ships them (killed after its
/// announce, or hostile): its clients coming back to the adopter are told plainly that the
/// hand-over did not bring them (`unknown`, not `expired`), after one wait for it to make
/// progress; later attempts are answered at once, not each after the same wait (a client whose
/// own patience is that wait would otherwise never get an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_announced_and_never_shipped_is_waited_for_once() {
    use gw_integration_tests::recovering::{Outcome, RecoveringClient};
    let (_reg, gw, _worker) = adopter().await;
    let stopping = STOPPING;
    let mut peer = Raw::authenticated(gw.internal, Role::Gateway).await;
    let announce = gw_proto::handover::TakeOver {
        gateway: stopping.into(),
        instance: 42,
        senders: vec![],
        adoptions: vec![],
        keys: vec![SECRET.as_bytes().to_vec()],
        clients: vec![],
        last: false,
    };
    peer.send(&frame_of!(ToGateway::TakeOver(Box::new(announce)))).await;
    // The adopter says it adopted them, on every link.
    loop {
        if let FromGateway::Adopted { instance: 42, .. } = decoded!(peer.frame().await.expect("adopted")) {
            break;
        }
    }
    drop(peer);
    let token = gw_proto::ResumeToken { client: gw_proto::ClientId::new(stopping, 42, 7), generation: 0 }
        .sign(SECRET.as_bytes());
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let rc = RecoveringClient::resume_with(&gw.ws_url, &token, 0).await;
        waits.push(started.elapsed());
        match &rc.outcome {
            Outcome::NotRecovered { reason, detail } => {
                assert_eq!(reason, "unknown", "{detail}");
                assert!(detail.contains("hand-over did not finish"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The first waited for the hand-over (5 s from its announce at most); the others did not.
    assert!(waits[1] < Duration::from_millis(2500) && waits[2] < Duration::from_millis(2500), "{waits:?}");
}

/// The address a raw peer gives as the stopping gateway whose hand-over it sends.
const STOPPING: &str = "127.0.0.1:1";

/// A register, a gateway with recovery on (the adopter a raw peer hands clients to) and a worker.
async fn adopter() -> (RegisterHandle, GatewayHandle, WorkerHandle) {
    use gw_integration_tests::recovering::EventLog;
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |cfg| cfg.recovery.enabled = true).await;
    let worker = WorkerHandle::start("w", &[reg.addr], SECRET, EventLog::default());
    wait_for_workers(&gw, 1).await;
    (reg, gw, worker)
}

/// A stopping gateway closes its link to the successor only once the successor says it applied
/// the whole hand-over (its exit before then could cut the tail off): the end it sends last is
/// answered after every part before it was installed, and a client it shipped resumes.
#[tokio::test]
async fn the_end_of_a_hand_over_is_answered_once_everything_before_it_is_applied() {
    use gw_integration_tests::recovering::{Outcome, RecoveringClient};
    let (_reg, gw, _worker) = adopter().await;
    let stopping = STOPPING;
    let part = |clients, last| gw_proto::handover::TakeOver {
        gateway: stopping.into(),
        instance: 43,
        senders: vec![],
        adoptions: vec![],
        keys: vec![SECRET.as_bytes().to_vec()],
        clients,
        last,
    };
    let held = gw_proto::handover::HeldClient {
        gateway: stopping.into(),
        instance: 43,
        local: 7,
        info: ClientInfo {
            client_addr: "203.0.113.7:5000".into(),
            gateway_addr: stopping.into(),
            listener: "websocket://127.0.0.1:1".into(),
            protocol: Protocol::WebSocket,
        },
        session: None,
        session_writes: 0,
        uid: Some("u7".into()),
        groups: vec!["g".into()],
        generation: 0,
        written: 2,
        acked: 0,
        accepted: 0,
        kept: vec![Payload::text("one"), Payload::text("two")],
    };
    // A worker's link may not say it.
    let mut worker = Raw::authenticated(gw.internal, Role::Worker).await;
    worker.send(&frame_of!(ToGateway::HandOverEnd { instance: 43 })).await;
    worker.expect_closed().await;

    let mut peer = Raw::authenticated(gw.internal, Role::Gateway).await;
    peer.send(&frame_of!(ToGateway::TakeOver(Box::new(part(vec![], false))))).await;
    peer.send(&frame_of!(ToGateway::TakeOver(Box::new(part(vec![held], true))))).await;
    peer.send(&frame_of!(ToGateway::HandOverEnd { instance: 43 })).await;
    loop {
        match decoded!(peer.frame().await.expect("the adopter answers the hand-over's end")) {
            FromGateway::HandOverDone { instance } => {
                assert_eq!(instance, 43);
                break;
            }
            FromGateway::Welcome { .. } | FromGateway::Adopted { .. } | FromGateway::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Everything before the end is applied when it is answered.
    assert_eq!(gw.metric("handover_adopted_clients"), 1);
    assert_eq!(gw.metric("handover_finished"), 1);
    drop(peer);
    let token = gw_proto::ResumeToken { client: gw_proto::ClientId::new(stopping, 43, 7), generation: 0 }
        .sign(SECRET.as_bytes());
    let mut rc = RecoveringClient::resume_with(&gw.ws_url, &token, 1).await;
    assert!(matches!(rc.outcome, Outcome::Resumed { replayed: 1 }), "{:?}", rc.outcome);
    assert_eq!(rc.recv().await, "two");
    assert_eq!(gw.metric("handover_finished"), 1, "the worker's end counted nothing");
}
