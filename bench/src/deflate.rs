//! `deflate`: what permessage-deflate saves on the wire and costs the gateway, with and without it
//! in the same run. Clients here speak WebSocket themselves (tokio-tungstenite cannot compress):
//! the ones that offer permessage-deflate inflate what comes compressed and check it.
//!
//! 1. The chat's messages (the shapes `chat-demo` sends: welcome, login with a member list, a
//!    history, room messages short and long, logout, the heartbeat) are echoed to a compressing
//!    and to a plain client: bytes on the wire (frame headers included) for each.
//! 2. A 1 KB JSON message is broadcast to N clients, K times, in rounds that alternate N plain
//!    clients (A) and N compressing ones (B): bytes per delivery, and the gateway's CPU time per
//!    delivery (from `--server-pids`), with the B/A ratio of each pair of rounds.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Common;
use crate::procfs;

#[derive(Debug, Clone, Args)]
pub struct DeflateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Broadcasts per round.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Pairs of rounds (plain, then compressed).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const OFFER: &str = "permessage-deflate; client_max_window_bits";
const TIMEOUT: Duration = Duration::from_secs(30);

/// A raw WebSocket client connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    deflate: bool,
}

/// One message as received: its text and the bytes its frame(s) took on the wire.
struct Got {
    text: Vec<u8>,
    wire: usize,
}

impl Client {
    async fn connect(common: &Common, g: usize, deflate: bool) -> anyhow::Result<Self> {
        let stream = common.targets()?.tcp(g).await?;
        let url = &common.url[g % common.url.len()];
        let host = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
        let ext = if deflate { format!("Sec-WebSocket-Extensions: {OFFER}\r\n") } else { String::new() };
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
        );
        let mut c = Self { stream, buf: Vec::new(), deflate };
        c.stream.write_all(req.as_bytes()).await?;
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            c.fill().await?;
        };
        let head = String::from_utf8_lossy(&c.buf[..end]).to_ascii_lowercase();
        anyhow::ensure!(head.starts_with("http/1.1 101"), "handshake refused: {head}");
        anyhow::ensure!(
            head.contains("sec-websocket-extensions: permessage-deflate") == deflate,
            "permessage-deflate {} by the gateway: {head}",
            if deflate { "not accepted" } else { "answered unasked" }
        );
        c.buf.drain(..end);
        Ok(c)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk)).await.context("read timed out")??;
        anyhow::ensure!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn send_text(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let mask = [1u8, 2, 3, 4];
        let (first, payload) = if self.deflate { (0xc1, deflate(text)) } else { (0x81, text.to_vec()) };
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).await?;
        Ok(())
    }

    /// The next text message (pings and pongs skipped), inflated if it came compressed.
    async fn recv(&mut self) -> anyhow::Result<Got> {
        loop {
            let (fin, rsv1, opcode, start, len) = loop {
                if self.buf.len() >= 2 {
                    let (at, len) = match self.buf[1] & 0x7f {
                        126 if self.buf.len() >= 4 => (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize),
                        127 if self.buf.len() >= 10 => {
                            (10, u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize)
                        }
                        126 | 127 => (usize::MAX, 0),
                        n => (2, n as usize),
                    };
                    if at != usize::MAX && self.buf.len() >= at + len {
                        break (self.buf[0] & 0x80 != 0, self.buf[0] & 0x40 != 0, self.buf[0] & 0x0f, at, len);
                    }
                }
                self.fill().await?;
            };
            let payload: Vec<u8> = self.buf[start..start + len].to_vec();
            self.buf.drain(..start + len);
            match opcode {
                1 if fin => {
                    anyhow::ensure!(!rsv1 || self.deflate, "a compressed frame on a plain connection");
                    let text = if rsv1 { inflate(&payload)? } else { payload };
                    return Ok(Got { text, wire: start + len });
                }
                8 => bail!("closed by the gateway"),
                9 | 10 => {}
                _ => bail!("unexpected frame: opcode {opcode}, fin {fin}"),
            }
        }
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    z.compress_vec(data, &mut out, FlushCompress::Sync).expect("deflate");
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut z = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(16 * data.len() + 256);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync).context("inflate")?;
    anyhow::ensure!(z.total_in() as usize == input.len(), "inflate: output buffer too small");
    Ok(out)
}

/// The chat's messages, in the shapes `chat-demo` sends them.
fn chat_messages() -> Vec<(&'static str, String)> {
    let id = |n: u32| format!("MTI3LjAuMC4xOjI5MDA.3f9a2c1b7d4e8f01.{n:x}");
    let time = "2026-12-06 10:58:13";
    let names = ["Ann", "Bob", "Cid", "Dora", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun"];
    let members: Vec<String> =
        names.iter().enumerate().map(|(i, n)| format!(r#""{}":"{n}""#, id(i as u32 + 1))).collect();
    let say = |n: u32, content: &str| {
        format!(
            r#"{{"type":"say","from_id":"{}","from_name":"{}","to_id":"all","content":"{content}","time":"{time}"}}"#,
            id(n),
            names[n as usize % names.len()]
        )
    };
    let history: Vec<String> = (0..10).map(|i| say(i, "see you at the pond at six, bring the bread :smile:")).collect();
    vec![
        ("welcome", format!(r#"{{"type":"welcome","client_id":"{}"}}"#, id(1))),
        (
            "login (10 members)",
            format!(
                r#"{{"type":"login","client_id":"{}","name":"Ann","room":"garden","time":"{time}","members":{{{}}}}}"#,
                id(1),
                members.join(",")
            ),
        ),
        ("history (10 messages)", format!(r#"{{"type":"history","messages":[{}]}}"#, history.join(","))),
        ("say (short)", say(2, "hello garden :wave:")),
        ("say (300 chars)", say(3, &"the quick brown fox jumps over the lazy dog. ".repeat(7))),
        ("logout", format!(r#"{{"type":"logout","client_id":"{}","name":"Bob","time":"{time}"}}"#, id(2))),
        ("ping", r#"{"type":"ping"}"#.to_string()),
    ]
}

/// A JSON message of about 1 KB (a dashboard's price update); `seq` makes each one different.
fn json_1k(seq: usize) -> String {
    let rows: Vec<String> = (0..14)
        .map(|i| {
            format!(
                r#"{{"id":{i},"symbol":"SYM{i}","price":{}.{:02},"change":-0.{i}5,"volume":{}}}"#,
                100 + i * seq % 97,
                i,
                1000 * i
            )
        })
        .collect();
    format!(r#"{{"type":"prices","seq":{seq},"rows":[{}]}}"#, rows.join(","))
}

pub fn main(a: DeflateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.common.shard.is_none() && a.common.procs == 1, "deflate runs in one process");
    anyhow::ensure!(a.common.conns >= 1 && a.messages >= 1 && a.rounds >= 1, "need --conns, --messages, --rounds >= 1");
    a.common.runtime()?.block_on(run(a))
}

async fn run(a: DeflateArgs) -> anyhow::Result<()> {
    // ---- 1. the chat's messages ----
    let mut plain = Client::connect(&a.common, 0, false).await?;
    let mut packed = Client::connect(&a.common, 1, true).await?;
    let (mut chat_plain, mut chat_deflate) = (0, 0);
    for (what, text) in chat_messages() {
        let mut wires = [0; 2];
        for (i, c) in [&mut plain, &mut packed].into_iter().enumerate() {
            c.send_text(text.as_bytes()).await?;
            let got = c.recv().await?;
            anyhow::ensure!(got.text == text.as_bytes(), "{what}: the echo differs");
            wires[i] = got.wire;
        }
        println!(
            "STEP scenario=deflate message={:?} json_bytes={} plain_wire={} deflate_wire={}",
            what,
            text.len(),
            wires[0],
            wires[1]
        );
        chat_plain += wires[0];
        chat_deflate += wires[1];
    }
    drop((plain, packed));

    // ---- 2. a 1 KB JSON broadcast, rounds alternating plain and compressed receivers ----
    let mut per_delivery = [Vec::new(), Vec::new()];
    let mut wire = [0f64; 2];
    let mut seq = 0;
    for round in 0..a.rounds {
        for (kind, deflate) in [(0, false), (1, true)] {
            let mut clients = Vec::with_capacity(a.common.conns);
            for g in 0..a.common.conns {
                clients.push(Client::connect(&a.common, 2 + g, deflate).await?);
            }
            // Settle: the connections' own start-up (events to the worker) is not measured.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cpu = procfs::CpuWindow::start(&a.common.server_pids);
            let started = Instant::now();
            let (mut bytes, mut deliveries) = (0usize, 0usize);
            let mut receivers = clients.split_off(1);
            let sender = &mut clients[0];
            for _ in 0..a.messages {
                seq += 1;
                let body = json_1k(seq);
                let text = format!("b:{body}");
                sender.send_text(text.as_bytes()).await?;
                let got = sender.recv().await?;
                anyhow::ensure!(got.text == text.as_bytes(), "broadcast {seq}: the sender's copy differs");
                bytes += got.wire;
                deliveries += 1;
                for r in &mut receivers {
                    let got = r.recv().await?;
                    anyhow::ensure!(got.text == text.as_bytes(), "broadcast {seq}: a copy differs");
                    bytes += got.wire;
                    deliveries += 1;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let used = cpu.finish();
            let server_us = used.server * secs * 1e6 / deliveries as f64;
            per_delivery[kind].push(server_us);
            wire[kind] = bytes as f64 / deliveries as f64;
            println!(
                "STEP scenario=deflate round={} receivers={} compressed={deflate} deliveries={deliveries} secs={secs:.2} \
                 server_us_per_delivery={server_us:.2} wire_bytes_per_delivery={:.0} {}",
                round + 1,
                a.common.conns,
                wire[kind],
                used.fields()
            );
            drop(receivers);
            drop(clients);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let ratios: Vec<String> = per_delivery[0]
        .iter()
        .zip(&per_delivery[1])
        .map(|(p, d)| if *p > 0.0 { format!("{:.2}", d / p) } else { "-".into() })
        .collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "RESULT scenario=deflate conns={} messages={} rounds={} chat_plain_bytes={chat_plain} chat_deflate_bytes={chat_deflate} \
         json1k_plain_wire={:.0} json1k_deflate_wire={:.0} server_us_per_delivery_plain={:.2} \
         server_us_per_delivery_deflate={:.2} cpu_ratios={}",
        a.common.conns,
        a.messages,
        a.rounds,
        wire[0],
        wire[1],
        median(&mut per_delivery[0].clone()),
        median(&mut per_delivery[1].clone()),
        ratios.join(",")
    );
    Ok(())
}
