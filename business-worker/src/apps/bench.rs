//! The benchmark/echo application, with the contract every measured system implements:
//! a text message is echoed to its sender; one starting with `b:` goes to every client; one
//! starting with `g:` goes to group `g`; the message `j` joins group `g` and is answered `joined`.

use crate::{Context, Events, HandlerResult, Message};

/// The echo/benchmark handler.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bench;

impl Events for Bench {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let data = &msg.data;
        if data.starts_with(b"b:") {
            ctx.gateway().send_to_all(msg).await?;
        } else if data.starts_with(b"g:") {
            ctx.gateway().send_to_group("g", msg).await?;
        } else if &data[..] == b"j" {
            ctx.gateway().join_group(&ctx.client_id, "g").await?;
            ctx.send("joined").await?;
        } else {
            ctx.send(msg).await?;
        }
        Ok(())
    }
}
