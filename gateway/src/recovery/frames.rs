//! The recovery protocol on the client's WebSocket (`docs/recovery.md`): the query parameters a
//! client connects with, the control frames (a text frame whose first byte is NUL, then JSON)
//! the gateway and the client exchange, and the escape that keeps a data message starting with
//! NUL apart from them. Only clients that asked for recovery see any of it.

/// The detail a stopping gateway refuses a relayed resume with (a relaying gateway then waits a
/// while for the stopping gateway's clients to be handed over to it).
pub(crate) const STOPPING: &str = "the client's gateway is stopping";
/// Part of the detail a relaying gateway gives when the client's gateway cannot be reached.
pub(crate) const UNREACHABLE: &str = "cannot be reached";

use serde::Deserialize;

/// The reserved query parameters.
pub(crate) const RECOVER: &str = "gw_recover";
pub(crate) const RESUME: &str = "gw_resume";
pub(crate) const RECEIVED: &str = "gw_received";

/// The first byte of a control frame.
pub(crate) const NUL: char = '\0';

/// What a client's handshake query asks of recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Nothing: today's behaviour.
    Nothing,
    /// A fresh connection that wants a resume token (`gw_recover=1`).
    Recover,
    /// Take back a held client (`gw_resume=<token>&gw_received=<n>`).
    Resume { token: String, received: u64 },
    /// A resume whose parameters are unusable; the detail says why.
    Malformed(&'static str),
}

/// Reads the reserved parameters from a raw query string (without `?`). A resume implies
/// recover: a client that resumes, or fails to, gets a fresh token either way.
pub(crate) fn ask(query: &str) -> Ask {
    let mut recover = false;
    let mut token = None;
    let mut received = None;
    for (k, v) in gw_proto::urlencoded::query_pairs(query) {
        match k.as_str() {
            RECOVER => recover = v == "1" || v == "true",
            RESUME => token = Some(v),
            RECEIVED => received = Some(v),
            _ => {}
        }
    }
    match (token, received) {
        (Some(token), Some(n)) => match n.parse::<u64>() {
            Ok(received) if !token.is_empty() => Ask::Resume { token, received },
            Ok(_) => Ask::Malformed("gw_resume is empty"),
            Err(_) => Ask::Malformed("gw_received is not a count of messages"),
        },
        (Some(_), None) => Ask::Malformed("gw_resume without gw_received"),
        (None, Some(_)) if recover => Ask::Recover,
        (None, Some(_)) => Ask::Malformed("gw_received without gw_resume"),
        (None, None) if recover => Ask::Recover,
        (None, None) => Ask::Nothing,
    }
}

/// Why a client was not recovered, as the `not_recovered` frame and the metric name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// The token's signature does not match.
    Forged,
    /// The window ended (or the gateway let the state go) before the client came back.
    Expired,
    /// The token was used before: the state was resumed with it already.
    Replayed,
    /// Messages the client missed were dropped by the caps.
    Gap,
    /// The token names a client this gateway (instance) does not hold.
    Unknown,
    /// Recovery is off on this gateway.
    Disabled,
    /// The parameters, the token or the client's count make no sense.
    Malformed,
}

impl Reason {
    /// Every reason, in the order the metric lists them.
    pub const ALL: [Reason; 7] = [
        Reason::Forged,
        Reason::Expired,
        Reason::Replayed,
        Reason::Gap,
        Reason::Unknown,
        Reason::Disabled,
        Reason::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forged => "forged",
            Reason::Expired => "expired",
            Reason::Replayed => "replayed",
            Reason::Gap => "gap",
            Reason::Unknown => "unknown",
            Reason::Disabled => "disabled",
            Reason::Malformed => "malformed",
        }
    }
}

/// `\0{"type":"recovery",...}`: the client's id, its token for the next resume, and the count
/// its numbering continues from.
pub(crate) fn recovery(client_id: &str, token: &str, received: u64) -> String {
    control(&serde_json::json!({"type": "recovery", "client_id": client_id, "token": token, "received": received}))
}

/// `\0{"type":"resumed",...}`: `replayed` messages follow; the gateway took `accepted` data
/// messages from the client so far (it sends the later ones again).
pub(crate) fn resumed(client_id: &str, replayed: u64, accepted: u64) -> String {
    control(&serde_json::json!({"type": "resumed", "client_id": client_id, "replayed": replayed, "accepted": accepted}))
}

/// `\0{"type":"not_recovered",...}`.
pub(crate) fn not_recovered(reason: Reason, detail: &str) -> String {
    control(&serde_json::json!({"type": "not_recovered", "reason": reason.as_str(), "detail": detail}))
}

fn control(v: &serde_json::Value) -> String {
    format!("{NUL}{v}")
}

/// What a text frame from an opted-in client is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromClient<'a> {
    /// Data for the worker: the text as sent, or with its escaping NUL removed.
    Data(&'a str),
    /// `\0{"type":"ack","received":n}`.
    Ack(u64),
    /// A control frame the gateway does not understand.
    Bad(String),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Ack { received: u64 },
}

/// Reads a text frame of an opted-in client: a frame starting with two NULs is data starting
/// with one, a frame starting with one NUL is a control frame.
pub(crate) fn from_client(text: &str) -> FromClient<'_> {
    let Some(rest) = text.strip_prefix(NUL) else { return FromClient::Data(text) };
    if rest.starts_with(NUL) {
        return FromClient::Data(rest);
    }
    match serde_json::from_str::<Control>(rest) {
        Ok(Control::Ack { received }) => FromClient::Ack(received),
        Err(e) => FromClient::Bad(e.to_string()),
    }
}

/// Whether a data text message needs the escape (one more NUL in front) for an opted-in client.
pub(crate) fn needs_escape(text: &str) -> bool {
    text.starts_with(NUL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_says_what_the_client_asks() {
        assert_eq!(ask(""), Ask::Nothing);
        assert_eq!(ask("room=1&x=gw_recover"), Ask::Nothing);
        assert_eq!(ask("gw_recover=1"), Ask::Recover);
        assert_eq!(ask("a=b&gw_recover=true"), Ask::Recover);
        assert_eq!(ask("gw_recover=0"), Ask::Nothing);
        assert_eq!(
            ask("gw_recover=1&gw_resume=abc.1.2&gw_received=42"),
            Ask::Resume { token: "abc.1.2".into(), received: 42 }
        );
        assert_eq!(ask("gw_resume=t&gw_received=x"), Ask::Malformed("gw_received is not a count of messages"));
        assert_eq!(ask("gw_resume=t&gw_received=-1"), Ask::Malformed("gw_received is not a count of messages"));
        assert_eq!(ask("gw_resume=t"), Ask::Malformed("gw_resume without gw_received"));
        assert_eq!(ask("gw_resume=&gw_received=1"), Ask::Malformed("gw_resume is empty"));
        assert_eq!(ask("gw_received=1"), Ask::Malformed("gw_received without gw_resume"));
        assert_eq!(ask("gw_recover=1&gw_received=0"), Ask::Recover);
    }

    #[test]
    fn control_frames_are_nul_then_json() {
        assert_eq!(
            recovery("c.1.2", "tok", 3),
            "\0{\"type\":\"recovery\",\"client_id\":\"c.1.2\",\"token\":\"tok\",\"received\":3}"
        );
        // `type` first, as docs/recovery.md shows them.
        assert_eq!(resumed("c", 5, 2), "\0{\"type\":\"resumed\",\"client_id\":\"c\",\"replayed\":5,\"accepted\":2}");
        let f = not_recovered(Reason::Gap, "messages 1 to 2 \"dropped\"");
        assert!(f.starts_with('\0'));
        let v: serde_json::Value = serde_json::from_str(&f[1..]).unwrap();
        assert_eq!(v["type"], "not_recovered");
        assert_eq!(v["reason"], "gap");
        assert_eq!(v["detail"], "messages 1 to 2 \"dropped\"");
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["forged", "expired", "replayed", "gap", "unknown", "disabled", "malformed"]);
    }

    #[test]
    fn client_frames_are_data_escaped_data_or_acks() {
        assert_eq!(from_client("hello"), FromClient::Data("hello"));
        assert_eq!(from_client("\0\0raw"), FromClient::Data("\0raw"));
        assert_eq!(from_client("\0{\"type\":\"ack\",\"received\":7}"), FromClient::Ack(7));
        for bad in [
            "\0",
            "\0{}",
            "\0{\"type\":\"ack\"}",
            "\0{\"type\":\"ack\",\"received\":-1}",
            "\0{\"type\":\"x\"}",
            "\0nope",
        ] {
            assert!(matches!(from_client(bad), FromClient::Bad(_)), "{bad:?}");
        }
        assert!(needs_escape("\0x") && !needs_escape("x") && !needs_escape(""));
    }
}
