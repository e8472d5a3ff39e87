//! An echo endpoint for the business worker's `http` application: answers every `message` event
//! with `{"reply": [message]}`, so `echo` through `app = "http"` measures the HTTP application's
//! cost next to the Rust echo application (not the speed of some scripting language).

use axum::Json;
use axum::routing::post;
use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Address to listen on (`ip:port`).
    #[arg(long)]
    pub listen: String,
}

pub fn main(a: EndpointArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen).await?;
        let app = axum::Router::new().route("/events", post(event));
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn event(Json(event): Json<Value>) -> Json<Value> {
    match event.get("message") {
        Some(m) if event["event"] == "message" => Json(json!({ "reply": [m] })),
        _ => Json(json!({})),
    }
}
