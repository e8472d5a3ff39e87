//! What the Pusher-protocol fuzz target runs, and what it checks.
//!
//! Shared word for word with the stable replay test `pusher-protocol/tests/fuzz_corpus.rs`
//! (which includes it with `#[path]`). Depends only on `gw-pusher-protocol`. Like the other
//! targets, it returns the most heap the code under test may hold for the input.

use gw_pusher_protocol::api::channels::{ChannelsQuery, Info};
use gw_pusher_protocol::api::events::{BatchEvent, Trigger};
use gw_pusher_protocol::api::signature::{query_string, sign_request, verify_request};
use gw_pusher_protocol::connect::ConnectRequest;
use gw_pusher_protocol::presence::{parse_channel_data, parse_user_data};
use gw_pusher_protocol::{ChannelName, ClientFrame, Limits, SocketId, auth, webhook};

/// Names of the targets in this file, which are also the corpus directories they own.
pub const TARGETS: [&str; 1] = ["pusher"];

/// Heap the scaffolding may use, and per input byte what a decoded frame, body or copy may take
/// (a few owned copies of the input: the frame, its re-encoding, the decoded strings).
const SLACK: usize = 64 * 1024;
const PER_BYTE: usize = 64;

/// The app every request is checked against.
const KEY: &str = "fuzz-key";
const SECRET: &str = "fuzz-secret";

/// Runs the target `name` on `data`; `None` if the name is not one of [`TARGETS`].
pub fn run(name: &str, data: &[u8]) -> Option<usize> {
    match name {
        "pusher" => Some(pusher(data)),
        _ => None,
    }
}

/// The first byte picks what parses the rest: a client frame, a channel name, presence data, a
/// connection request, an HTTP API body, a signed query, a socket id, a webhook.
pub fn pusher(data: &[u8]) -> usize {
    let budget = SLACK + PER_BYTE * data.len();
    let Some((&selector, rest)) = data.split_first() else { return budget };
    let text = String::from_utf8_lossy(rest);
    let limits = Limits::default();
    match selector % 8 {
        0 => client_frame(&text, &limits),
        1 => {
            if let Ok(name) = ChannelName::parse(&text, &limits) {
                assert_eq!(name.as_str(), text, "a channel name is kept as given");
                assert!(name.as_str().len() <= limits.max_channel_name);
                let _ = (name.kind(), name.is_cache(), name.server_to_user());
            }
        }
        2 => {
            if let Ok(m) = parse_channel_data(&text, &limits) {
                assert!(!m.user_id.is_empty() && m.user_id.chars().count() <= limits.max_user_id);
            }
            if let Ok(u) = parse_user_data(&text, &limits) {
                assert!(u.watchlist.len() <= limits.max_watchlist);
                // A signed-in user's own channel is always a valid name.
                assert!(ChannelName::parse(&format!("#server-to-user-{}", u.id), &limits).is_ok());
            }
        }
        3 => {
            let (path, query) = text.split_once('?').unwrap_or((&text, ""));
            for strict in [false, true] {
                if let Ok(r) = ConnectRequest::parse(path, query, strict, &limits) {
                    assert!((5..=7).contains(&r.protocol) && !r.app_key.is_empty());
                }
            }
        }
        4 => {
            if let Ok(t) = Trigger::parse(rest, &limits) {
                assert!(!t.channels.is_empty() && t.channels.len() <= limits.max_event_channels);
                assert!(t.data.len() <= limits.max_event_data && t.name.len() <= limits.max_event_name);
            }
            if let Ok(b) = BatchEvent::parse_batch(rest, &limits) {
                assert!(b.len() <= limits.max_batch_events);
            }
        }
        5 => signed_query(&text),
        6 => {
            if let Ok(id) = text.parse::<SocketId>() {
                assert_eq!(id.to_string(), text, "socket ids are canonical");
            }
            let _ = Info::parse(&text);
        }
        _ => {
            let (sig, body) = text.split_once('\n').unwrap_or(("", &text));
            let ok = webhook::verify(KEY, SECRET, KEY, sig, body.as_bytes(), 0, u64::MAX);
            if ok.is_ok() {
                assert_eq!(
                    sig.to_ascii_lowercase(),
                    webhook::sign(SECRET, body.as_bytes()),
                    "only genuine signatures pass"
                );
            }
        }
    }
    budget
}

/// Decodes a client frame; what decodes re-encodes to a frame that decodes equal, and every
/// error has a message.
fn client_frame(text: &str, limits: &Limits) {
    match ClientFrame::decode(text, limits) {
        Ok(frame) => {
            let again = frame.encode();
            assert_eq!(ClientFrame::decode(&again, limits).as_ref(), Ok(&frame), "round trip of {again}");
            if let ClientFrame::Subscribe(s) = &frame {
                // Whatever came, checking its signature never panics and never passes by chance.
                let sid = "1.1";
                let verdict = auth::verify_channel_auth(
                    KEY,
                    SECRET,
                    sid,
                    s.channel.as_str(),
                    s.channel_data.as_deref(),
                    s.auth.as_deref(),
                );
                let genuine = auth::channel_auth(KEY, SECRET, sid, s.channel.as_str(), s.channel_data.as_deref());
                let (_, genuine_sig) = genuine.split_once(':').expect("key:signature");
                let passes = s
                    .auth
                    .as_deref()
                    .and_then(|a| a.split_once(':'))
                    .is_some_and(|(k, sig)| k == KEY && sig.eq_ignore_ascii_case(genuine_sig));
                assert_eq!(verdict.is_ok(), passes, "only the genuine signature passes");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The text is a query string checked as a signed request (garbage must fail cleanly); its
/// pairs, signed by us, must then verify, and the route's own parameters read back.
fn signed_query(text: &str) {
    let (query, body) = text.split_once('\n').unwrap_or((text, ""));
    let _ = verify_request(KEY, SECRET, "POST", "/apps/1/events", query, body.as_bytes(), 1_000_000, 600);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| !k.starts_with("auth_") && *k != "body_md5")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .take(64)
        .collect();
    let signed = sign_request(KEY, SECRET, "GET", "/apps/1/channels", &pairs, body.as_bytes(), 1_000_000);
    let params =
        verify_request(KEY, SECRET, "GET", "/apps/1/channels", &query_string(&signed), body.as_bytes(), 1_000_000, 600)
            .expect("what we sign verifies");
    let _ = ChannelsQuery::from_params(&params);
}

/// Seed inputs: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let seed = |selector: u8, text: &str| {
        let mut v = vec![selector];
        v.extend_from_slice(text.as_bytes());
        v
    };
    let sig = webhook::sign(SECRET, br#"{"time_ms":1,"events":[{"name":"channel_vacated","channel":"a"}]}"#);
    [
        ("ping", seed(0, r#"{"event":"pusher:ping","data":{}}"#)),
        (
            "subscribe_presence",
            seed(
                0,
                r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"fuzz-key:00","channel_data":"{\"user_id\":1,\"user_info\":{\"n\":\"x\"}}"}}"#,
            ),
        ),
        ("subscribe_string_data", seed(0, r#"{"event":"pusher:subscribe","data":"{\"channel\":\"news\"}"}"#)),
        ("signin", seed(0, r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"u\"}"}}"#)),
        ("client_event", seed(0, r#"{"event":"client-x","channel":"private-a","data":{"a":[1,2,{"b":null}]}}"#)),
        ("channel_names", seed(1, "#server-to-user-a@b.c")),
        ("channel_data", seed(2, r#"{"user_id":"u","user_info":{"k":"v"},"watchlist":["a","b"],"id":"u"}"#)),
        ("connect", seed(3, "/app/key?protocol=7&client=js&version=8.4.0")),
        ("trigger", seed(4, r#"{"name":"e","channels":["a","presence-b"],"data":"{}","socket_id":"1.2","info":"user_count"}"#)),
        ("batch", seed(4, r#"{"batch":[{"channel":"a","name":"e","data":"1"}]}"#)),
        ("signed_query", seed(5, "filter_by_prefix=presence-&info=user_count&auth_key=fuzz-key&auth_timestamp=1000000&auth_version=1.0&auth_signature=00\n")),
        ("socket_id", seed(6, "18446744073709551615.0")),
        (
            "webhook",
            seed(7, &format!("{sig}\n{}", r#"{"time_ms":1,"events":[{"name":"channel_vacated","channel":"a"}]}"#)),
        ),
        ("deep", seed(0, &format!(r#"{{"event":"client-x","channel":"private-a","data":{}}}"#, "[".repeat(5000)))),
    ]
    .into_iter()
    .map(|(n, d)| ("pusher", n.to_string(), d))
    .collect()
}
