//! What the send queues hold: a message for clients, shared by every client it goes to (a clone
//! is a reference count), with its compressed forms made once, by the first client that needs
//! each (see [`deflate`](crate::deflate)).

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::deflate::compress;

/// A message for one or many clients.
#[derive(Debug, Clone)]
pub(crate) struct OutMessage(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    msg: Message,
    /// Deflated payloads by window size in bits and level, each made on first need; `None` where
    /// deflate does not make the message smaller. Usually one entry: every browser leaves the
    /// window at its default.
    deflated: Mutex<Vec<(u8, u8, Option<Bytes>)>>,
    /// For clients with recovery, a text message starting with NUL goes with one more NUL in
    /// front (`docs/recovery.md`); made once, on first need, and shared like the message.
    escaped: OnceLock<OutMessage>,
}

impl OutMessage {
    pub fn new(msg: Message) -> Self {
        Self(Arc::new(Shared { msg, deflated: Mutex::new(Vec::new()), escaped: OnceLock::new() }))
    }

    /// The message as it goes to a client with recovery: itself, or, for a text message that
    /// starts with NUL (which such a client would take for a control frame), the same with one
    /// more NUL in front. A clone of a shared handle either way.
    pub fn for_recovery(&self) -> OutMessage {
        match &self.0.msg {
            Message::Text(t) if crate::recovery::frames::needs_escape(t) => self
                .0
                .escaped
                .get_or_init(|| {
                    OutMessage::new(Message::text(format!("{}{}", crate::recovery::frames::NUL, t.as_str())))
                })
                .clone(),
            _ => self.clone(),
        }
    }

    /// The message as it goes to a client that does not compress.
    pub fn message(&self) -> &Message {
        &self.0.msg
    }

    /// Its payload's length in bytes.
    pub fn len(&self) -> usize {
        self.0.msg.len()
    }

    /// The payload deflated with a window of `window_bits` at `level`, or `None` when that is not
    /// smaller (or this is not a text or binary message). The first caller compresses, while
    /// the others for the same form wait for it and share the result; the second value is true
    /// for that first caller.
    pub fn deflated(&self, window_bits: u8, level: u8) -> (Option<Bytes>, bool) {
        let payload: &[u8] = match &self.0.msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return (None, false),
        };
        let mut forms = self.0.deflated.lock().expect("compressed forms lock");
        if let Some((_, _, form)) = forms.iter().find(|(w, l, _)| (*w, *l) == (window_bits, level)) {
            return (form.clone(), false);
        }
        let form = compress::deflate(payload, window_bits, level);
        forms.push((window_bits, level, form.clone()));
        (form, true)
    }
}

impl From<Message> for OutMessage {
    fn from(msg: Message) -> Self {
        Self::new(msg)
    }
}

/// A message counts for its payload's length against the recovery caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadLen;

impl gw_delivery::Weigher<OutMessage> for PayloadLen {
    fn weight(m: &OutMessage) -> usize {
        m.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_starting_with_nul_is_escaped_once_for_every_recovering_client() {
        let plain = OutMessage::new(Message::text("hello"));
        assert!(Arc::ptr_eq(&plain.0, &plain.for_recovery().0), "no escape, same handle");
        let nul = OutMessage::new(Message::text("\0x"));
        let (a, b) = (nul.for_recovery(), nul.for_recovery());
        assert_eq!(a.message(), &Message::text("\0\0x"));
        assert!(Arc::ptr_eq(&a.0, &b.0), "made once");
        let bin = OutMessage::new(Message::binary(vec![0u8, 1]));
        assert_eq!(bin.for_recovery().message(), bin.message(), "binary frames are never control frames");
    }

    #[test]
    fn each_compressed_form_is_made_once_and_shared_by_every_clone() {
        let text = "{\"type\":\"say\",\"content\":\"the same words, the same words\"}".repeat(10);
        let m = OutMessage::new(Message::text(text));
        let clone = m.clone();
        let (a, first) = m.deflated(15, 6);
        assert!(first && a.is_some());
        let (b, again) = clone.deflated(15, 6);
        assert!(!again, "made once");
        assert_eq!(a.as_ref().map(|b| b.as_ptr()), b.as_ref().map(|b| b.as_ptr()), "one buffer for all");
        let (c, other) = clone.deflated(10, 6);
        assert!(other && c.is_some(), "another window size is another form");
        assert_eq!(OutMessage::new(Message::Ping(Bytes::new())).deflated(15, 6), (None, false));
    }
}
