//! The size and count limits every parser of this crate enforces, in one place, with Pusher's
//! documented values as defaults (and where Pusher's documents disagree, the reason for the pick).

/// Limits on what clients and HTTP API callers may send.
///
/// Every field is a hard cap checked before the input is used: a frame, name or body over its
/// limit is refused with an error that names the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest client frame (one WebSocket text message), in bytes. The default holds the
    /// largest client event (`max_event_data` of data, JSON-escaped) with its envelope.
    pub max_frame: usize,
    /// Longest channel name, in bytes (all allowed characters are ASCII). Pusher's client docs
    /// say 164, its server SDKs validate 200; we take 200, so whatever an SDK publishes to can
    /// also be subscribed to.
    pub max_channel_name: usize,
    /// Longest event name, in bytes (Pusher: 200).
    pub max_event_name: usize,
    /// Largest event data, in bytes: the `data` string of an HTTP API event, the raw JSON text
    /// of a client event's `data` (Pusher: 10 KB).
    pub max_event_data: usize,
    /// Most channels one HTTP API event may name (Pusher: 100).
    pub max_event_channels: usize,
    /// Most events in one `batch_events` call (Pusher: 10).
    pub max_batch_events: usize,
    /// Longest user id, in characters (Pusher: 128 for presence members).
    pub max_user_id: usize,
    /// Longest presence `channel_data` string, in bytes (Pusher documents 1 KB for the user
    /// object, Soketi 2 KB; we take 2 KiB so what works on Soketi works here).
    pub max_channel_data: usize,
    /// Longest sign-in `user_data` string, in bytes (it may carry a watchlist of
    /// `max_watchlist` user ids).
    pub max_user_data: usize,
    /// Most user ids a sign-in's watchlist may hold; the rest is dropped and the client told
    /// with code 4302 (Pusher: 100).
    pub max_watchlist: usize,
    /// Most distinct users in one presence channel, cluster-wide (Pusher: 100). Enforced where
    /// the member list is kept, not by the parsers here.
    pub max_presence_members: usize,
    /// Most channels one connection may be subscribed to at once (not documented by Pusher;
    /// bounds what a subscribe flood can make a gateway hold). Enforced by the connection.
    pub max_subscriptions: usize,
    /// Longest app key accepted in the connection path, in bytes.
    pub max_app_key: usize,
    /// How far an HTTP API request's `auth_timestamp` may be from the server's clock, in
    /// seconds (Pusher: 600).
    pub auth_timestamp_window: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 32 * 1024,
            max_channel_name: 200,
            max_event_name: 200,
            max_event_data: 10 * 1024,
            max_event_channels: 100,
            max_batch_events: 10,
            max_user_id: 128,
            max_channel_data: 2 * 1024,
            max_user_data: 8 * 1024,
            max_watchlist: 100,
            max_presence_members: 100,
            max_subscriptions: 100,
            max_app_key: 200,
            auth_timestamp_window: 600,
        }
    }
}
