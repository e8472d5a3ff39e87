//! Applications shipped with the stock `business-worker` binary (selected by the `app` config key).
//! Your own application implements [`Events`](crate::Events) in its own binary the same way.

pub mod bench;
pub mod chat;
pub mod http;
