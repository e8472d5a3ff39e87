//! The handlers: what happens when a client connects, sends a message or leaves. Handlers of one
//! client run in order; different clients run concurrently.

use gw_business_worker::{Context, Events, HandlerResult, Message};

use crate::settings::Settings;

/// The application, built once per worker process from its settings.
pub struct MyApp {
    greeting: String,
    reply_prefix: String,
}

impl MyApp {
    pub fn new(settings: &Settings) -> Self {
        Self { greeting: settings.greeting.clone(), reply_prefix: settings.reply_prefix.clone() }
    }
}

impl Events for MyApp {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        ctx.send(format!("{} {}", self.greeting, ctx.client_id)).await?;
        Ok(())
    }

    /// `all:TEXT` goes to every client; anything else is answered to its sender.
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = msg.as_text().unwrap_or_default();
        match text.strip_prefix("all:") {
            Some(rest) => ctx.gateway().send_to_all(rest.to_string()).await?,
            None => ctx.send(format!("{}{text}", self.reply_prefix)).await?,
        }
        Ok(())
    }
}
