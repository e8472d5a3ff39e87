//! A gateway the test scripts: it announces itself to a real register and speaks the real
//! internal protocol to real workers and gateway clients, but records what they send instead of
//! acting on it, answers the routing index only when the test says, and drops its links on
//! demand. For what a real gateway cannot be made to do on cue (hold its index, lose a link).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_link::HandshakeOptions;
use gw_proto::{FromGateway, FromRegister, GatewayInfo, IndexUpdate, Query, Reply, Role, ToGateway, ToRegister};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The instance number a fake gateway welcomes its links with.
pub const FAKE_INSTANCE: u64 = 0xfa4e;

/// What one link of a fake gateway did.
#[derive(Debug)]
struct LinkRecord {
    tx: mpsc::Sender<FromGateway>,
    /// The peer asked for the routing index.
    watching: bool,
    /// Cancelled to drop this link.
    drop: CancellationToken,
}

#[derive(Debug, Default)]
struct Shared {
    links: Vec<LinkRecord>,
    /// Every command received, with the number of the link (from 0, in accept order).
    commands: Vec<(usize, gw_proto::Command)>,
}

/// A scripted gateway announced to a register. Stops when dropped.
#[derive(Debug)]
pub struct FakeGateway {
    /// Its internal address, as announced.
    pub address: String,
    shared: Arc<Mutex<Shared>>,
    _stop: DropGuard,
}

impl FakeGateway {
    /// Starts listening on `127.0.0.1:0` and announces itself to `register` with `secret`.
    pub async fn start(register: SocketAddr, secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let handshake = handshake(secret);
        tokio::spawn(announce(register, address.clone(), handshake.clone(), stop.clone()));
        tokio::spawn({
            let (shared, address, stop) = (shared.clone(), address.clone(), stop.clone());
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = listener.accept() => a,
                    };
                    if let Ok((stream, _)) = accepted {
                        let link = serve_link(stream, shared.clone(), address.clone(), handshake.clone(), stop.clone());
                        tokio::spawn(link);
                    }
                }
            }
        });
        Self { address, shared, _stop: stop.drop_guard() }
    }

    /// Links accepted so far (a reconnect is a new one).
    pub fn links(&self) -> usize {
        self.shared.lock().unwrap().links.len()
    }

    /// Whether the link numbered `link` asked for the routing index.
    pub fn watching(&self, link: usize) -> bool {
        self.shared.lock().unwrap().links.get(link).is_some_and(|l| l.watching)
    }

    /// Every command received so far, with its link's number.
    pub fn commands(&self) -> Vec<(usize, gw_proto::Command)> {
        self.shared.lock().unwrap().commands.clone()
    }

    /// Sends `update` on link number `link`.
    pub async fn send_index(&self, link: usize, update: IndexUpdate) {
        let tx = self.shared.lock().unwrap().links[link].tx.clone();
        tx.send(FromGateway::Index(update)).await.unwrap();
    }

    /// Drops link number `link` (its socket closes).
    pub fn drop_link(&self, link: usize) {
        self.shared.lock().unwrap().links[link].drop.cancel();
    }
}

/// The handshake options of a gateway with this secret.
pub fn handshake(secret: &str) -> HandshakeOptions {
    HandshakeOptions::new(secret, Role::Gateway, "fake-gateway", &gw_config::LinkConfig::default())
}

/// Writes one framed message; false once the peer is gone.
pub async fn write<T: serde::Serialize>(w: &mut tokio::net::tcp::OwnedWriteHalf, msg: &T) -> bool {
    let mut buf = Vec::new();
    gw_proto::encode_frame(msg, &mut buf, 1 << 20).unwrap();
    w.write_all(&buf).await.is_ok()
}

/// Stays announced to `register` as a gateway at `address` (with heartbeats) until `stop`.
pub async fn announce(register: SocketAddr, address: String, handshake: HandshakeOptions, stop: CancellationToken) {
    let mut link = gw_link::connect(&register.to_string(), &handshake).await.unwrap();
    let gateway = GatewayInfo { address, name: "fake-gateway".into() };
    assert!(write(&mut link.writer, &ToRegister::Announce { gateway }).await);
    let mut ping = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick() => {
                if !write(&mut link.writer, &ToRegister::Ping).await {
                    return;
                }
            }
            msg = link.reader.read::<FromRegister>() => match msg {
                Ok(Some(FromRegister::Ping)) => {
                    if !write(&mut link.writer, &ToRegister::Pong).await {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                _ => return,
            },
        }
    }
}

/// Writes what arrives on `rx` to `writer` until either ends or `stop`: a fake peer's outbox.
pub fn spawn_writer(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<FromGateway>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = rx.recv() => m,
            };
            match msg {
                Some(msg) if write(&mut writer, &msg).await => {}
                _ => return,
            }
        }
    });
}

/// An empty gateway's answers.
fn answer(query: Query) -> Reply {
    match query {
        Query::ClientCount => Reply::Counts(vec![0]),
        Query::ClientIds => Reply::Clients(vec![]),
        Query::IsOnline { clients } => Reply::Flags(vec![false; clients.len()]),
        Query::ClientsByUids { uids } => Reply::ClientLists(vec![vec![]; uids.len()]),
        Query::ClientsByGroups { groups } => Reply::ClientLists(vec![vec![]; groups.len()]),
        _ => Reply::Error("fake gateway".into()),
    }
}

async fn serve_link(
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    address: String,
    handshake: HandshakeOptions,
    stop: CancellationToken,
) {
    let Ok(link) = gw_link::accept(stream, &handshake, &[Role::Worker, Role::Client]).await else { return };
    let (tx, rx) = mpsc::channel::<FromGateway>(64);
    let drop = stop.child_token();
    let number = {
        let mut s = shared.lock().unwrap();
        s.links.push(LinkRecord { tx: tx.clone(), watching: false, drop: drop.clone() });
        s.links.len() - 1
    };
    spawn_writer(link.writer, rx, drop.clone());
    let _ = tx.send(FromGateway::Welcome { instance: FAKE_INSTANCE, address }).await;
    let mut reader = link.reader;
    loop {
        let msg = tokio::select! {
            _ = drop.cancelled() => return,
            m = reader.read::<ToGateway>() => m,
        };
        match msg {
            Ok(Some(ToGateway::Ping)) => {
                let _ = tx.send(FromGateway::Pong).await;
            }
            Ok(Some(ToGateway::Request { id, query })) => {
                let _ = tx.send(FromGateway::Reply { id, reply: answer(query) }).await;
            }
            Ok(Some(ToGateway::Command(cmd))) => shared.lock().unwrap().commands.push((number, cmd)),
            Ok(Some(ToGateway::WatchIndex)) => shared.lock().unwrap().links[number].watching = true,
            Ok(Some(_)) => {}
            _ => return,
        }
    }
}
