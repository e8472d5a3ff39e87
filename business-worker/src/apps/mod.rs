//! Generic applications shipped with the stock `business-worker` binary (selected by the `app`
//! config key): `echo` and `http`. The stock binary itself, and its default app `chat`, live in
//! `chat-demo/` (the chat app implements [`Events`](crate::Events), so this crate cannot hold the
//! binary that ships it). Your own application implements [`Events`](crate::Events) in its own
//! binary the same way.

pub mod bench;
pub mod http;
