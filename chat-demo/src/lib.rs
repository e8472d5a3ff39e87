//! The chat application, all in one place: the handler ([`app`], workerman-chat's `Events.php`),
//! the web backend and its page ([`web`], `static/index.html`), the one-process demo that runs them
//! next to a register and a gateway ([`start`]), and the binaries that ship them:
//! `business-worker` (the stock worker: `app = "chat"`, `"echo"` or `"http"`), `chat-web` (the web
//! backend alone, for a cluster) and, at the repository root, `gatewayrs` (`cargo run`).
//! The chat protocol's tests are in `tests/`.

pub mod app;
mod demo;
pub mod web;

pub use app::Chat;
pub use demo::{DemoAddrs, DemoListeners, internal_host, start};
