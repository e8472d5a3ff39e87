//! The applications the stock `business-worker` binary ships besides the chat (selected by its
//! `app` config key): [`echo`] and [`http`]. The binary itself, and its default app `chat`, live
//! in `chat-demo/`. Each is an [`Events`](gw_business_worker::Events) implementation like your
//! own application's, in a crate of its own so that `gw-business-worker` (what applications
//! build on) compiles no HTTP client.

pub mod echo;
pub mod http;

pub use echo::Echo;
pub use http::{HttpApp, HttpAppError};
