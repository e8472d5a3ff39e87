//! Who a connection says it is: a presence subscription's `channel_data`
//! (`{"user_id": .., "user_info": {..}}`) and a sign-in's `user_data` (`{"id": "..",
//! "user_info": {..}, "watchlist": [..]}`). Both are JSON inside a JSON string, signed by the
//! app's server, so they are checked only after the signature ([`crate::auth`]); the checks
//! here bound what a member costs to hold and to send to every other member.
//!
//! `user_info` is kept as the JSON text that came (never re-encoded), so every member sees it
//! byte for byte as the app's server wrote it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Limits;
use crate::channel::is_name_char;

/// A presence channel member, from its `channel_data`.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user id. A number in `channel_data` (Pusher's own example uses one) becomes its
    /// decimal text, which is how every client library keys members.
    pub user_id: String,
    /// What the app's server says about the user, as JSON text; `None` when absent or `null`.
    pub user_info: Option<Box<RawValue>>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id
            && self.user_info.as_ref().map(|r| r.get()) == other.user_info.as_ref().map(|r| r.get())
    }
}

impl Eq for Member {}

/// A signed-in user, from a `pusher:signin`'s `user_data`.
#[derive(Debug, Clone)]
pub struct User {
    /// The user id: a non-empty string of channel-name characters, since the user's
    /// `#server-to-user-{id}` channel is named after it.
    pub id: String,
    /// What the app's server says about the user, as JSON text.
    pub user_info: Option<Box<RawValue>>,
    /// The user ids whose online status this user watches, at most [`Limits::max_watchlist`].
    pub watchlist: Vec<String>,
    /// Whether the watchlist was longer than the limit and was cut (tell the client with code
    /// 4302).
    pub watchlist_truncated: bool,
}

/// Why a `channel_data` or `user_data` is refused. `what` is `"channel_data"` or `"user_data"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The string is longer than the limit.
    #[error("{what} is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string is not JSON, or not a JSON object.
    #[error("{what} must be a JSON object encoded as a string: {reason}")]
    NotAnObject {
        /// Which field.
        what: &'static str,
        /// What the JSON parser or the check said.
        reason: String,
    },
    /// The object has no user id.
    #[error("{what} has no {field}")]
    MissingId {
        /// Which field.
        what: &'static str,
        /// The id's name (`user_id` or `id`).
        field: &'static str,
    },
    /// The user id is not acceptable.
    #[error("{what}.{field} {reason}")]
    BadId {
        /// Which field.
        what: &'static str,
        /// The id's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The watchlist is not an array of user ids.
    #[error("user_data.watchlist{0}")]
    BadWatchlist(String),
}

#[derive(Deserialize)]
struct ChannelDataFields<'a> {
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UserDataFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    watchlist: Option<&'a RawValue>,
}

/// Parses a presence subscription's `channel_data`.
pub fn parse_channel_data(channel_data: &str, limits: &Limits) -> Result<Member, PresenceError> {
    const WHAT: &str = "channel_data";
    let fields: ChannelDataFields<'_> = object(WHAT, channel_data, limits.max_channel_data)?;
    let raw = fields.user_id.ok_or(PresenceError::MissingId { what: WHAT, field: "user_id" })?;
    let bad = |reason: String| PresenceError::BadId { what: WHAT, field: "user_id", reason };
    let user_id = if let Ok(s) = serde_json::from_str::<String>(raw.get()) {
        s
    } else if let Ok(n) = serde_json::from_str::<i64>(raw.get()) {
        n.to_string()
    } else if let Ok(n) = serde_json::from_str::<u64>(raw.get()) {
        n.to_string()
    } else {
        return Err(bad(format!("must be a string or an integer, not {}", kind_of(raw))));
    };
    check_id_length(&user_id, limits).map_err(bad)?;
    Ok(Member { user_id, user_info: fields.user_info.map(RawValue::to_owned) })
}

/// Parses a sign-in's `user_data`.
pub fn parse_user_data(user_data: &str, limits: &Limits) -> Result<User, PresenceError> {
    const WHAT: &str = "user_data";
    let fields: UserDataFields<'_> = object(WHAT, user_data, limits.max_user_data)?;
    let raw = fields.id.ok_or(PresenceError::MissingId { what: WHAT, field: "id" })?;
    let bad = |reason: String| PresenceError::BadId { what: WHAT, field: "id", reason };
    let id = serde_json::from_str::<String>(raw.get())
        .map_err(|_| bad(format!("must be a string, not {}", kind_of(raw))))?;
    check_user_id(&id, limits).map_err(bad)?;
    let (watchlist, watchlist_truncated) = match fields.watchlist {
        None => (Vec::new(), false),
        Some(raw) => watchlist(raw, limits)?,
    };
    Ok(User { id, user_info: fields.user_info.map(RawValue::to_owned), watchlist, watchlist_truncated })
}

/// Checks a signed-in user's id (also what `terminate_connections` and `send_to_user` name):
/// non-empty, at most [`Limits::max_user_id`] characters, channel-name characters only.
pub fn check_user_id(id: &str, limits: &Limits) -> Result<(), String> {
    check_id_length(id, limits)?;
    match id.chars().find(|&c| !is_name_char(c)) {
        Some(c) => Err(format!("has {c:?}: only letters, digits and _ - = @ , . ; are allowed")),
        None => Ok(()),
    }
}

fn check_id_length(id: &str, limits: &Limits) -> Result<(), String> {
    let chars = id.chars().count();
    if chars == 0 {
        Err("is empty".into())
    } else if chars > limits.max_user_id {
        Err(format!("is {chars} characters long, over the limit of {}", limits.max_user_id))
    } else {
        Ok(())
    }
}

/// `text` as a JSON object of type `T`, after the length check.
fn object<'a, T: Deserialize<'a>>(what: &'static str, text: &'a str, max: usize) -> Result<T, PresenceError> {
    if text.len() > max {
        return Err(PresenceError::TooLong { what, len: text.len(), max });
    }
    let not_object = |reason: String| PresenceError::NotAnObject { what, reason };
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| not_object(e.to_string()))?;
    if !raw.get().starts_with('{') {
        return Err(not_object(format!("found {}", kind_of(raw))));
    }
    serde_json::from_str(raw.get()).map_err(|e| not_object(e.to_string()))
}

fn watchlist(raw: &RawValue, limits: &Limits) -> Result<(Vec<String>, bool), PresenceError> {
    let ids: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| PresenceError::BadWatchlist(format!(" must be an array of user ids, not {}", kind_of(raw))))?;
    let truncated = ids.len() > limits.max_watchlist;
    let mut out = Vec::with_capacity(ids.len().min(limits.max_watchlist));
    for (i, raw) in ids.into_iter().take(limits.max_watchlist).enumerate() {
        let id = serde_json::from_str::<String>(raw.get())
            .map_err(|_| PresenceError::BadWatchlist(format!("[{i}] must be a string, not {}", kind_of(raw))))?;
        check_user_id(&id, limits).map_err(|reason| PresenceError::BadWatchlist(format!("[{i}] {reason}")))?;
        out.push(id);
    }
    Ok((out, truncated))
}

/// What kind of JSON value `raw` is, for messages.
fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(s: &str) -> Result<Member, PresenceError> {
        parse_channel_data(s, &Limits::default())
    }

    fn user(s: &str) -> Result<User, PresenceError> {
        parse_user_data(s, &Limits::default())
    }

    #[test]
    fn channel_data_of_the_docs_example() {
        let m = member(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#).unwrap();
        assert_eq!(m.user_id, "10");
        assert_eq!(m.user_info.unwrap().get(), r#"{"name":"Mr. Channels"}"#);
    }

    #[test]
    fn channel_data_ids_and_info() {
        assert_eq!(member(r#"{"user_id":"a\u0062c"}"#).unwrap().user_id, "abc");
        assert_eq!(member(r#"{"user_id":-3}"#).unwrap().user_id, "-3");
        assert_eq!(member(r#"{"user_id":18446744073709551615}"#).unwrap().user_id, "18446744073709551615");
        assert!(member(r#"{"user_id":"u","user_info":null}"#).unwrap().user_info.is_none());
        // user_info is kept as it came, spaces and all; other fields are ignored.
        let m = member(r#" { "user_id" : "u" , "user_info" : { "a" : [1, 2] }, "extra": true } "#).unwrap();
        assert_eq!(m.user_info.unwrap().get(), r#"{ "a" : [1, 2] }"#);
        // Presence ids are not restricted to channel-name characters (e-mails, names).
        assert_eq!(member(r#"{"user_id":"Zoë <z@x>"}"#).unwrap().user_id, "Zoë <z@x>");
    }

    #[test]
    fn channel_data_refusals_are_precise() {
        let err = |s: &str| member(s).unwrap_err().to_string();
        assert!(err("not json").starts_with("channel_data must be a JSON object encoded as a string: expected"));
        assert_eq!(err("[1]"), "channel_data must be a JSON object encoded as a string: found an array");
        assert_eq!(err(r#""{}""#), "channel_data must be a JSON object encoded as a string: found a string");
        assert_eq!(err("{}"), "channel_data has no user_id");
        assert_eq!(err(r#"{"user_id":""}"#), "channel_data.user_id is empty");
        assert_eq!(err(r#"{"user_id":1.5}"#), "channel_data.user_id must be a string or an integer, not a number");
        assert_eq!(err(r#"{"user_id":null}"#), "channel_data has no user_id");
        assert_eq!(err(r#"{"user_id":{}}"#), "channel_data.user_id must be a string or an integer, not an object");
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(129));
        assert_eq!(err(&long), "channel_data.user_id is 129 characters long, over the limit of 128");
        let big = format!(r#"{{"user_id":"u","user_info":"{}"}}"#, "x".repeat(2048));
        assert!(err(&big).starts_with("channel_data is 2"), "{}", err(&big));
        assert!(err(r#"{"user_id":"a","user_id":"b"}"#).contains("duplicate field"));
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        // user_info is only scanned, never built into a tree: 100,000 levels pass through
        // without recursion (a recursive parser would overflow the stack and abort the test).
        let levels = 100_000;
        let deep = format!(r#"{{"user_id":"u","user_info":{}{}}}"#, "[".repeat(levels), "]".repeat(levels));
        let limits = Limits { max_channel_data: 1 << 20, ..Limits::default() };
        let m = parse_channel_data(&deep, &limits).unwrap();
        assert_eq!(m.user_info.unwrap().get().len(), 2 * levels);
        // The size limit is what bounds it.
        assert!(matches!(member(&deep), Err(PresenceError::TooLong { .. })));
    }

    #[test]
    fn user_data_of_the_docs_example() {
        let u = user(r#"{"id":"12345"}"#).unwrap();
        assert_eq!(
            (u.id.as_str(), u.user_info.is_none(), u.watchlist.len(), u.watchlist_truncated),
            ("12345", true, 0, false)
        );
        let u = user(r#"{"id":"u1","user_info":{"name":"Phil"},"watchlist":["u2","u3"]}"#).unwrap();
        assert_eq!(u.user_info.unwrap().get(), r#"{"name":"Phil"}"#);
        assert_eq!(u.watchlist, ["u2", "u3"]);
    }

    #[test]
    fn user_data_refusals_are_precise() {
        let err = |s: &str| user(s).unwrap_err().to_string();
        assert_eq!(err(r#"{"user_id":"1"}"#), "user_data has no id");
        assert_eq!(err(r#"{"id":1}"#), "user_data.id must be a string, not a number");
        assert_eq!(
            err(r#"{"id":"a b"}"#),
            r#"user_data.id has ' ': only letters, digits and _ - = @ , . ; are allowed"#
        );
        assert_eq!(
            err(r#"{"id":"u","watchlist":"u2"}"#),
            "user_data.watchlist must be an array of user ids, not a string"
        );
        assert_eq!(err(r#"{"id":"u","watchlist":["ok",7]}"#), "user_data.watchlist[1] must be a string, not a number");
        assert_eq!(err(r#"{"id":"u","watchlist":[""]}"#), "user_data.watchlist[0] is empty");
    }

    #[test]
    fn long_watchlists_are_cut_to_the_limit_and_flagged() {
        let ids: Vec<String> = (0..150).map(|i| format!("\"u{i}\"")).collect();
        let u = user(&format!(r#"{{"id":"u","watchlist":[{}]}}"#, ids.join(","))).unwrap();
        assert_eq!(u.watchlist.len(), 100);
        assert_eq!(u.watchlist[99], "u99");
        assert!(u.watchlist_truncated);
    }
}
