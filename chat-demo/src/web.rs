//! The demo's web backend: serves the chat page and shows the second way to build on the system,
//! a web application pushing through `gateway-client` (GatewayWorker's "GatewayClient in your PHP
//! framework" pattern): the page posts its client id to `/api/bind`, the backend binds a uid and
//! joins the room's group; `/api/announce` pushes to a room, a uid or everyone and says how many
//! connections that target had.

use crate::app::{MAX_CONTENT, check_name, check_room, now_string};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gw_gateway_client::{Answer, ClientError, ClientId, GatewayClient};
use serde::Deserialize;
use serde_json::json;

const PAGE: &str = include_str!("../static/index.html");
/// The recovering WebSocket the page connects with: the one copy in `clients/js`.
const GATEWAYRS_JS: &str = include_str!("../../clients/js/gatewayrs.js");

#[derive(Clone)]
struct AppState {
    gateway: GatewayClient,
    ws_url: String,
}

/// The router of the web backend.
pub fn router(gateway: GatewayClient, ws_url: String) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        // Browsers ask for /favicon.ico whatever the page says; both names get the same icon.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/gatewayrs.js", get(gatewayrs_js))
        .route("/api/config", get(config))
        .route("/api/bind", post(bind))
        .route("/api/announce", post(announce))
        .route("/api/online", get(online))
        .with_state(AppState { gateway, ws_url })
}

/// A speech bubble in the page's header colour.
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><path d="M8 10h48a6 6 0 0 1 6 6v26a6 6 0 0 1-6 6H28L14 60V48H8a6 6 0 0 1-6-6V16a6 6 0 0 1 6-6z" fill="#2d3e50"/><circle cx="20" cy="29" r="4" fill="#9fd3ff"/><circle cx="32" cy="29" r="4" fill="#9fd3ff"/><circle cx="44" cy="29" r="4" fill="#9fd3ff"/></svg>"##;

async fn gatewayrs_js() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], GATEWAYRS_JS)
}

async fn favicon() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "image/svg+xml"), (axum::http::header::CACHE_CONTROL, "max-age=86400")],
        FAVICON,
    )
}

async fn config(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "ws_url": s.ws_url }))
}

#[derive(Deserialize)]
struct Bind {
    client_id: String,
    name: String,
    room: String,
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "ok": false, "error": msg.to_string() }))).into_response()
}

fn failed(e: ClientError) -> Response {
    let status = match e {
        ClientError::InvalidClientId(_) | ClientError::EmptyName(_) | ClientError::ClientGone(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(json!({ "ok": false, "error": e.to_string() }))).into_response()
}

/// The request body, or why it is not the expected JSON (answered with 400: axum's own
/// rejections are plain text, some with 415 or 422).
fn body<T>(req: Result<Json<T>, JsonRejection>) -> Result<T, String> {
    req.map(|Json(v)| v).map_err(|e| format!("invalid request body: {}", e.body_text()))
}

async fn bind(State(s): State<AppState>, req: Result<Json<Bind>, JsonRejection>) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let (name, room) = match (check_name(&req.name), check_room(&req.room)) {
        (Ok(n), Ok(r)) => (n, r),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let uid = format!("user:{name}");
    let client: ClientId = match req.client_id.parse() {
        Ok(id) => id,
        Err(e) => return failed(ClientError::InvalidClientId(e)),
    };
    match s.gateway.is_online(&client).await {
        Ok(true) => {}
        Ok(false) => return bad(format!("client {} is not connected", req.client_id)),
        Err(e) => return failed(e),
    }
    let result = async {
        s.gateway.bind_uid(&client, &uid).await?;
        s.gateway.join_group(&client, &room).await
    }
    .await;
    match result {
        Ok(()) => Json(json!({ "ok": true, "uid": uid, "room": room })).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct Announce {
    content: String,
    room: Option<String>,
    uid: Option<String>,
}

async fn announce(State(s): State<AppState>, req: Result<Json<Announce>, JsonRejection>) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    if req.content.trim().is_empty() || req.content.chars().count() > MAX_CONTENT {
        return bad(format!("content must be 1 to {MAX_CONTENT} characters"));
    }
    if req.room.is_some() && req.uid.is_some() {
        return bad("give a room or a uid, not both");
    }
    let room = match req.room.as_deref().map(check_room) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return bad(e),
        None => None,
    };
    let msg = json!({ "type": "announce", "content": req.content, "time": now_string() }).to_string();
    // The sends themselves report nothing per connection (as in GatewayWorker): count the
    // target's connections just before sending, so a caller learns that a uid reached nobody.
    let g = &s.gateway;
    let (target, reached, result) = match (&room, &req.uid) {
        (Some(room), _) => {
            (format!("room {room}"), g.client_count_by_group(room).await, g.send_to_group(room, msg).await)
        }
        (None, Some(uid)) => {
            let ids =
                g.client_ids_by_uid(uid).await.map(|a| Answer { value: a.value.len() as u64, missing: a.missing });
            (format!("uid {uid}"), ids, g.send_to_uid(uid, msg).await)
        }
        (None, None) => ("everyone".to_string(), g.client_count().await, g.send_to_all(msg).await),
    };
    match (result, reached) {
        (Ok(()), Ok(reached)) => {
            let mut answer = json!({
                "ok": true, "sent_to": target, "connections": reached.value,
                "complete": reached.is_complete(), "missing": reached.missing,
            });
            if reached.value == 0 {
                answer["note"] = json!(format!("{target} has no connection: nobody got the announcement"));
            }
            Json(answer).into_response()
        }
        (Err(e), _) | (_, Err(e)) => failed(e),
    }
}

async fn online(State(s): State<AppState>) -> Response {
    match (s.gateway.client_count().await, s.gateway.uid_count().await) {
        (Ok(c), Ok(u)) => Json(json!({
            "clients": c.value, "uids": u.value,
            "complete": c.is_complete() && u.is_complete(), "missing": c.missing,
        }))
        .into_response(),
        (Err(e), _) | (_, Err(e)) => failed(e),
    }
}
