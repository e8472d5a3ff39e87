//! Pusher's server HTTP API (docs/pusher.md §6) beside `/v1`: what the official Pusher SDKs
//! (and so Laravel's `pusher` broadcaster) call. Requests are authenticated by Pusher request
//! signing with the app's key and secret (`[pusher]` of this daemon's config), not by the
//! daemon's API keys.
//!
//! A channel `C` of app `A` is the group `pusher:{A}:{C}` on the gateways: a publish is one
//! `send_to_groups` per channel with the frame encoded once, routed to the gateways holding the
//! group; a `socket_id` names its gateway instance, so the exclusion goes to that gateway only.
//! Counts that a gateway did not answer are never shown as complete: 504 instead.
//!
//! `user_count` and `/channels/{name}/users` come from the presence channels' home gateways
//! (docs/pusher.md §5), asked all at once (`pusher_members`): each channel has one home.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use gw_config::{PusherApp, PusherConfig};
use gw_gateway_client::{Answer, ClientId, CloseReason, Payload};
use gw_pusher_protocol::api::channels::{
    ChannelAnswer, ChannelAttributes, ChannelQuery, ChannelsAnswer, ChannelsQuery, Info, UserEntry, UsersAnswer,
    channel_in_path, user_in_path,
};
use gw_pusher_protocol::api::events::{BatchAnswer, BatchEvent, Trigger, TriggerAnswer};
use gw_pusher_protocol::api::signature::{auth_key, verify_request};
use gw_pusher_protocol::server_frame::EventData;
use gw_pusher_protocol::{ChannelName, ErrorCode, Limits, ServerFrame, SocketId};
use serde_json::Value;

use crate::Api;
use crate::error::ApiError;

/// The Pusher routes.
pub(crate) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route("/apps/{app_id}/events", post(events))
        .route("/apps/{app_id}/batch_events", post(batch_events))
        .route("/apps/{app_id}/channels", get(channels))
        .route("/apps/{app_id}/channels/{channel}", get(channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(users))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(terminate_in_app))
        .route("/users/{user_id}/terminate_connections", post(terminate))
}

/// The group of channel `channel` of app `app_id` (as the gateway names it).
fn group(app_id: &str, channel: &str) -> String {
    format!("pusher:{app_id}:{channel}")
}

fn from_pusher(e: gw_pusher_protocol::api::ApiError) -> ApiError {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match e.status {
        401 => "unauthorized",
        404 => "not_found",
        413 => "too_large",
        _ => "bad_request",
    };
    ApiError::new(status, code, e.message)
}

/// The users of presence channel `channel` of `app` (none: no member anywhere), from its home.
async fn users_of(api: &Api, app: &PusherApp, channel: &str) -> Result<Vec<String>, ApiError> {
    let mut all = complete(api.gateway.pusher_members(&app.id, Some(channel)).await?)?;
    Ok(all.remove(channel).unwrap_or_default())
}

/// A request whose signature was checked: its app and its query parameters.
struct Signed<'a> {
    app: &'a PusherApp,
    params: Vec<(String, String)>,
}

/// Finds the app (by id, or by `auth_key` when the path names none) and checks the request's
/// signature against the wall clock.
fn authenticate<'a>(
    config: Option<&'a PusherConfig>,
    app_id: Option<&str>,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Signed<'a>, ApiError> {
    let config = config.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this HTTP API serves no Pusher apps (no [pusher] section)")
    })?;
    let query = uri.query().unwrap_or("");
    let app = match app_id {
        Some(id) => config.app_by_id(id).ok_or_else(|| {
            let shown: String = id.chars().take(64).collect();
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("Unknown app id {shown:?}"))
        })?,
        None => {
            let key = auth_key(query)
                .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Missing auth_key"))?;
            config.app_by_key(&key).ok_or_else(|| {
                let shown: String = key.chars().take(64).collect();
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", format!("Unknown auth_key {shown:?}"))
            })?
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let window = Limits::default().auth_timestamp_window;
    let params = verify_request(&app.key, &app.secret, method.as_str(), uri.path(), query, body, now, window)
        .map_err(from_pusher)?;
    if !app.enabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", ErrorCode::AppDisabled.description()));
    }
    Ok(Signed { app, params })
}

/// A complete answer, or 504 naming the gateways that did not answer.
fn complete<T>(answer: Answer<T>) -> Result<T, ApiError> {
    if answer.missing.is_empty() {
        return Ok(answer.value);
    }
    let mut e = ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "some gateways did not answer; a partial count is not given as complete",
    );
    e.missing = answer.missing;
    Err(e)
}

/// Publishes one event to one channel: the frame encoded once, to the gateways holding the
/// channel's group, the `socket_id`'s connection excluded on its gateway.
async fn publish(
    api: &Api,
    app: &PusherApp,
    channel: &ChannelName,
    name: &str,
    data: &str,
    socket_id: Option<SocketId>,
) -> Result<(), ApiError> {
    let frame =
        ServerFrame::Event { channel: channel.as_str(), event: name, data: Some(EventData::Text(data)), user_id: None }
            .encode();
    let exclude: Vec<ClientId> =
        socket_id.and_then(|s| api.gateway.client_id_in_instance(s.instance, s.local)).into_iter().collect();
    let msg = Payload { data: frame.into(), binary: false };
    api.gateway.send_to_groups_except(&[group(&app.id, channel.as_str())], msg, &exclude).await?;
    Ok(())
}

/// The attributes `info` asks for, of one channel.
async fn attributes(
    api: &Api,
    app: &PusherApp,
    channel: &ChannelName,
    info: Info,
) -> Result<ChannelAttributes, ApiError> {
    let mut attrs = ChannelAttributes::default();
    if info.user_count {
        attrs.user_count = Some(users_of(api, app, channel.as_str()).await?.len() as u64);
    }
    if info.subscription_count {
        attrs.subscription_count =
            Some(complete(api.gateway.client_count_by_group(&group(&app.id, channel.as_str())).await?)?);
    }
    Ok(attrs)
}

/// `POST /apps/{app_id}/events`.
async fn events(
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<TriggerAnswer>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &body)?;
    let trigger = Trigger::parse(&body, &Limits::default()).map_err(from_pusher)?;
    api.ready()?;
    for channel in &trigger.channels {
        publish(&api, signed.app, channel, &trigger.name, &trigger.data, trigger.socket_id).await?;
    }
    tracing::debug!(app = %signed.app.id, event = %trigger.name, channels = trigger.channels.len(), "pusher event published");
    if trigger.info.is_empty() {
        return Ok(Json(TriggerAnswer::default()));
    }
    let mut channels = BTreeMap::new();
    for channel in &trigger.channels {
        channels.insert(channel.as_str().to_string(), attributes(&api, signed.app, channel, trigger.info).await?);
    }
    Ok(Json(TriggerAnswer { channels: Some(channels) }))
}

/// `POST /apps/{app_id}/batch_events`: each event as `events`, in order.
async fn batch_events(
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<BatchAnswer>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &body)?;
    let batch = BatchEvent::parse_batch(&body, &Limits::default()).map_err(from_pusher)?;
    api.ready()?;
    for e in &batch {
        publish(&api, signed.app, &e.channel, &e.name, &e.data, e.socket_id).await?;
    }
    if batch.iter().all(|e| e.info.is_empty()) {
        return Ok(Json(BatchAnswer::default()));
    }
    let mut answers = Vec::with_capacity(batch.len());
    for e in &batch {
        answers.push(attributes(&api, signed.app, &e.channel, e.info).await?);
    }
    Ok(Json(BatchAnswer { batch: Some(answers) }))
}

/// `GET /apps/{app_id}/channels`: the occupied channels (groups `pusher:{app_id}:` on any
/// gateway), optionally by prefix, with `subscription_count`.
async fn channels(
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
) -> Result<Json<ChannelsAnswer>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &[])?;
    let query = ChannelsQuery::from_params(&signed.params).map_err(from_pusher)?;
    api.ready()?;
    let prefix = group(&signed.app.id, query.prefix.as_deref().unwrap_or(""));
    let counts = complete(api.gateway.group_client_counts().await?)?;
    // user_count needs a presence- prefix (checked above): the homes' lists of the app.
    let users = if query.info.user_count {
        complete(api.gateway.pusher_members(&signed.app.id, None).await?)?
    } else {
        BTreeMap::new()
    };
    let channels = counts
        .into_iter()
        .filter(|(g, n)| *n > 0 && g.starts_with(&prefix))
        .map(|(g, n)| {
            let name = g[group(&signed.app.id, "").len()..].to_string();
            let subscription_count = query.info.subscription_count.then_some(n);
            let user_count = query.info.user_count.then(|| users.get(&name).map_or(0, |u| u.len() as u64));
            (name, ChannelAttributes { user_count, subscription_count })
        })
        .collect();
    Ok(Json(ChannelsAnswer { channels }))
}

/// `GET /apps/{app_id}/channels/{channel}`.
async fn channel(
    State(api): State<Arc<Api>>,
    Path((app_id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Json<ChannelAnswer>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &[])?;
    let channel = channel_in_path(&name, false, &Limits::default()).map_err(from_pusher)?;
    let query = ChannelQuery::from_params(&channel, &signed.params).map_err(from_pusher)?;
    api.ready()?;
    let count = complete(api.gateway.client_count_by_group(&group(&signed.app.id, channel.as_str())).await?)?;
    let subscription_count = query.info.subscription_count.then_some(count);
    let user_count = if query.info.user_count {
        Some(users_of(&api, signed.app, channel.as_str()).await?.len() as u64)
    } else {
        None
    };
    Ok(Json(ChannelAnswer { occupied: count > 0, attributes: ChannelAttributes { user_count, subscription_count } }))
}

/// `GET /apps/{app_id}/channels/{channel}/users`: the presence channel's users, from its home.
async fn users(
    State(api): State<Arc<Api>>,
    Path((app_id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> Result<Json<UsersAnswer>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &[])?;
    let channel = channel_in_path(&name, true, &Limits::default()).map_err(from_pusher)?;
    api.ready()?;
    let users = users_of(&api, signed.app, channel.as_str()).await?;
    Ok(Json(UsersAnswer { users: users.into_iter().map(|id| UserEntry { id }).collect() }))
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
async fn terminate_in_app(
    State(api): State<Arc<Api>>,
    Path((app_id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), Some(&app_id), &method, &uri, &body)?;
    terminate_user(&api, signed.app, &user).await
}

/// `POST /users/{user_id}/terminate_connections` (what the Python SDK 3.3.4 posts): the app is
/// the one of `auth_key`.
async fn terminate(
    State(api): State<Arc<Api>>,
    Path(user): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let signed = authenticate(api.pusher.as_ref(), None, &method, &uri, &body)?;
    terminate_user(&api, signed.app, &user).await
}

/// Closes every connection signed in as `user` with 4009.
async fn terminate_user(api: &Api, app: &PusherApp, user: &str) -> Result<Json<Value>, ApiError> {
    let user = user_in_path(user, &Limits::default()).map_err(from_pusher)?;
    api.ready()?;
    let uid = format!("pusher:{}:{user}", app.id);
    let ids = complete(api.gateway.client_ids_by_uid(&uid).await?)?;
    let close =
        CloseReason { code: ErrorCode::Unauthorized.code(), reason: "Connection terminated by the server".into() };
    for id in &ids {
        match api.gateway.close_client_with(id, None, Some(close.clone())).await {
            Ok(()) | Err(gw_gateway_client::ClientError::ClientGone(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(app = %app.id, user = %user, connections = ids.len(), "pusher user's connections terminated");
    Ok(Json(Value::Object(serde_json::Map::new())))
}
