//! Compressed WebSockets: RFC 7692 permessage-deflate on the gateway's WebSocket edge.
//!
//! tungstenite has no extensions: it refuses every frame with RSV1 set, but writes any frame it is
//! given. So the extension is built around the codec rather than inside it:
//! - [`negotiate`] picks the client's offer and writes the answer of the opening handshake. The
//!   gateway always answers with `server_no_context_takeover` and `client_no_context_takeover`:
//!   every message is compressed on its own, so no connection keeps a compression context between
//!   messages (an idle compressed client costs what an uncompressed one does), and the bytes of a
//!   message are the same for every client with the same window size, so a broadcast is
//!   compressed once (see [`OutMessage`](crate::outgoing::OutMessage)).
//! - [`compress`] deflates an outgoing message with a compressor borrowed from the thread;
//!   the transport sends the result as a frame with RSV1 set.
//! - [`inflate`] sits between the socket and the codec and rewrites each compressed message into
//!   plain frames, so everything else (control frames, fragmentation rules, UTF-8, size limits,
//!   the close handshake) is still checked by tungstenite, as Autobahn|Testsuite verifies.

pub(crate) mod compress;
pub(crate) mod inflate;
pub(crate) mod negotiate;

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};

pub(crate) use inflate::{Inflate, InflateError};
pub(crate) use negotiate::Agreed;

use crate::metrics::Metrics;
use crate::outgoing::OutMessage;

/// A listener's compression settings (from `[compression]` and the listener's switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Messages shorter than this go uncompressed.
    pub threshold: usize,
    /// zlib level, 1..=9.
    pub level: u8,
}

/// What one compressed connection uses: its listener's settings and what the client agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    pub settings: Settings,
    pub agreed: Agreed,
}

impl Deflate {
    /// The window size (in bits) to compress a message of `len` bytes for this client with, or
    /// `None` when it goes uncompressed: below the threshold, or for a client that limited our
    /// window to 256 bytes (zlib cannot compress with a window that small; sending uncompressed
    /// messages is always allowed).
    pub fn window_for(&self, len: usize) -> Option<u8> {
        let bits = self.agreed.server_window_bits();
        (len >= self.settings.threshold && bits >= compress::MIN_WINDOW_BITS).then_some(bits)
    }
}

/// What a compressed connection keeps: its settings, the gateway's counters, and the rewriting
/// of its incoming bytes while its codec is active (none while the client is idle).
pub(crate) struct Compressed {
    deflate: Deflate,
    metrics: Arc<Metrics>,
    /// The listener's largest message, which bounds what a compressed message may inflate to.
    max_message: usize,
    inflate: Option<Box<Inflate>>,
}

impl std::fmt::Debug for Compressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressed").field("deflate", &self.deflate).field("inflate", &self.inflate).finish()
    }
}

impl Compressed {
    /// A connection that negotiated permessage-deflate (counted as one).
    pub fn new(deflate: Deflate, metrics: Arc<Metrics>, max_message: usize) -> Self {
        Metrics::inc(&metrics.deflate_connections);
        Self { deflate, metrics, max_message, inflate: None }
    }

    fn inflate(&mut self) -> &mut Inflate {
        let max = self.max_message;
        self.inflate.get_or_insert_with(|| Box::new(Inflate::new(max)))
    }

    /// Takes bytes the client sent that were read elsewhere.
    pub fn push(&mut self, data: &[u8]) {
        self.inflate().push(data);
    }

    /// Plain frames for the codec, read from `src` and rewritten (see [`Inflate::read`]).
    pub fn read(&mut self, src: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
        let inflate = self.inflate();
        let r = inflate.read(src, dst);
        let done = std::mem::take(&mut inflate.finished);
        if done > 0 {
            self.metrics.deflate_messages_in.fetch_add(done, Ordering::Relaxed);
        }
        r
    }

    /// True when the rewriting holds nothing (no part of a frame or message, nothing to hand on).
    pub fn at_rest(&self) -> bool {
        self.inflate.as_ref().is_none_or(|i| i.at_rest())
    }

    /// Whether the rewriting state exists (it does only while the codec is active).
    #[cfg(test)]
    pub fn has_state(&self) -> bool {
        self.inflate.is_some()
    }

    /// Drops the rewriting state of an idle client (only when it holds nothing).
    pub fn release(&mut self) {
        if self.at_rest() {
            self.inflate = None;
        }
    }

    /// The frame that carries `msg` to this client, compressed when that is allowed and makes it
    /// smaller, and the size of its payload.
    pub fn frame_for(&self, msg: &OutMessage) -> (Message, usize) {
        let plain = || (msg.message().clone(), msg.len());
        let Some(bits) = self.deflate.window_for(msg.len()) else { return plain() };
        let opcode = match msg.message() {
            Message::Text(_) => OpData::Text,
            Message::Binary(_) => OpData::Binary,
            _ => return plain(),
        };
        let (form, made) = msg.deflated(bits, self.deflate.settings.level);
        if made {
            Metrics::inc(&self.metrics.deflate_compressions);
        }
        let Some(payload) = form else { return plain() };
        Metrics::inc(&self.metrics.deflate_messages_out);
        let len = payload.len();
        let mut frame = Frame::message(payload, OpCode::Data(opcode), true);
        frame.header_mut().rsv1 = true;
        (Message::Frame(frame), len)
    }
}
