//! The echo application (`app = "echo"`), with the contract every measured system implements:
//! a text message is echoed to its sender; one starting with `b:` goes to every client; one
//! starting with `g:` goes to group `g`; the message `j` joins group `g` and is answered `joined`;
//! one starting with `u:` is answered, without its prefix, through the routing index: the client
//! is bound to a uid of its own (its client id) on its first such message, and the answer goes
//! by `send_to_uid` (the chaos soak sends these from half its clients).

use gw_business_worker::{Context, Events, HandlerResult, Message};

/// The echo application (the benchmark contract).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Events for Echo {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let data = &msg.data;
        if data.starts_with(b"b:") {
            ctx.gateway().send_to_all(msg).await?;
        } else if data.starts_with(b"g:") {
            ctx.gateway().send_to_group("g", msg).await?;
        } else if let Some(rest) = data.strip_prefix(b"u:") {
            let reply = Message::text(String::from_utf8_lossy(rest).into_owned());
            let uid = ctx.client_id.to_string();
            if !ctx.session.contains_key("uid") {
                ctx.gateway().bind_uid(&ctx.client_id, &uid).await?;
                ctx.session.insert("uid".into(), uid.clone().into());
            }
            ctx.gateway().send_to_uid(&uid, reply).await?;
        } else if &data[..] == b"j" {
            ctx.gateway().join_group(&ctx.client_id, "g").await?;
            ctx.send("joined").await?;
        } else {
            ctx.send(msg).await?;
        }
        Ok(())
    }
}
