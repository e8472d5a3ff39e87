//! The chat application (workerman-chat's `Events.php`): rooms, member lists, room and private
//! messages, join/leave notices, and a short in-memory history per room.
//!
//! Protocol (JSON text frames). Client → server: `login {name, room}`, `say {to: "all" | client
//! id, content}`, `pong`. Server → client: `welcome {client_id}`, `login {client_id, name, room,
//! time, members}`, `say {from_id, from_name, to_id, content, time}`, `logout {client_id, name,
//! time}`, `history {messages}`, `announce {content, time}`, `error {message}`, `ping`.
//! Anything invalid is answered with an `error` to that client only.
//!
//! The stock `business-worker` binary runs this handler for `app = "chat"` (its default), the
//! one-process demo runs it next to a register, a gateway and the [web backend](crate::web).
//!
//! Heartbeat: as in workerman-chat, the gateway sends `{"type":"ping"}` (its `ping_data`) every
//! `ping_interval`; clients answer `{"type":"pong"}`, which the gateway counts as activity and
//! this handler accepts and otherwise ignores. [`PING_DATA`] is the value to configure.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};

use gw_business_worker::{ClientId, Context, Events, HandlerResult, Message};

/// Longest nickname, in characters.
pub const MAX_NAME: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest message, in characters.
pub const MAX_CONTENT: usize = 2000;
/// Messages of history kept per room.
pub const HISTORY: usize = 50;

/// The gateway `ping_data` the chat page answers with `{"type":"pong"}`.
pub const PING_DATA: &str = r#"{"type":"ping"}"#;

/// The chat handler. History lives in this worker process only (no database): it is the history
/// of the current run, gone when the worker restarts.
#[derive(Debug, Default)]
pub struct Chat {
    history: Mutex<HashMap<String, VecDeque<Value>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Incoming {
    Login { name: String, room: String },
    Say { to: String, content: String },
    Pong,
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date crate.
pub fn now_string() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn error(message: &str) -> String {
    json!({"type": "error", "message": message}).to_string()
}

/// Why a nickname is refused, if it is.
pub fn check_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("nickname must not be empty");
    }
    if name.chars().count() > MAX_NAME {
        return Err("nickname is too long (at most 32 characters)");
    }
    if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err("nickname may not contain control characters or < >");
    }
    Ok(name.to_string())
}

/// Why a room name is refused, if it is.
pub fn check_room(room: &str) -> Result<String, &'static str> {
    let room = room.trim();
    if room.is_empty() || room.chars().count() > MAX_ROOM {
        return Err("room name must be 1 to 32 characters");
    }
    if !room.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
        return Err("room name may contain letters, digits, - and _ only");
    }
    Ok(room.to_string())
}

/// Why a message is refused, if it is. Markup is refused outright (the page escapes it anyway):
/// `a < b` is fine, `<script>` is not.
pub fn check_content(content: &str) -> Result<(), &'static str> {
    if content.trim().is_empty() {
        return Err("message must not be empty");
    }
    if content.chars().count() > MAX_CONTENT {
        return Err("message is too long (at most 2000 characters)");
    }
    let looks_like_tag = content
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'/' || w[1] == b'!'));
    if looks_like_tag {
        return Err("HTML is not allowed in messages");
    }
    Ok(())
}

impl Chat {
    fn remember(&self, room: &str, msg: Value) {
        let mut h = self.history.lock().expect("history lock");
        let q = h.entry(room.to_string()).or_default();
        q.push_back(msg);
        while q.len() > HISTORY {
            q.pop_front();
        }
    }

    fn history(&self, room: &str) -> Vec<Value> {
        self.history.lock().expect("history lock").get(room).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    async fn login(&self, ctx: &mut Context, name: &str, room: &str) -> HandlerResult {
        let (name, room) = match (check_name(name), check_room(room)) {
            (Ok(n), Ok(r)) => (n, r),
            (Err(e), _) | (_, Err(e)) => {
                ctx.send(error(e)).await?;
                return Ok(());
            }
        };
        let gateway = ctx.gateway().clone();
        if let Some(old) = ctx.session.get("room").and_then(Value::as_str).map(str::to_string)
            && old != room
        {
            {
                gateway.leave_group(&ctx.client_id, &old).await?;
                let old_name = ctx.session.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let bye = json!({"type": "logout", "client_id": ctx.client_id, "name": old_name, "time": now_string()});
                gateway.send_to_group(&old, bye.to_string()).await?;
            }
        }
        ctx.session.insert("name".into(), json!(name));
        ctx.session.insert("room".into(), json!(room));
        gateway.join_group(&ctx.client_id, &room).await?;
        let mut members = serde_json::Map::new();
        let sessions = gateway.sessions_by_group(&room).await?;
        for (id, session) in sessions.value {
            if let Some(n) = session.get("name").and_then(Value::as_str) {
                members.insert(id.to_string(), json!(n));
            }
        }
        // Our own session is written back after this handler; list ourselves now.
        members.insert(ctx.client_id.to_string(), json!(name));
        let msg = json!({
            "type": "login", "client_id": ctx.client_id, "name": name, "room": room,
            "time": now_string(), "members": members,
        });
        gateway.send_to_group(&room, msg.to_string()).await?;
        ctx.send(json!({"type": "history", "messages": self.history(&room)}).to_string()).await?;
        Ok(())
    }

    async fn say(&self, ctx: &mut Context, to: &str, content: &str) -> HandlerResult {
        let (Some(name), Some(room)) = (
            ctx.session.get("name").and_then(Value::as_str).map(str::to_string),
            ctx.session.get("room").and_then(Value::as_str).map(str::to_string),
        ) else {
            ctx.send(error("log in first")).await?;
            return Ok(());
        };
        if let Err(e) = check_content(content) {
            ctx.send(error(e)).await?;
            return Ok(());
        }
        let msg = json!({
            "type": "say", "from_id": ctx.client_id, "from_name": name, "to_id": to,
            "content": content, "time": now_string(),
        });
        if to == "all" {
            self.remember(&room, msg.clone());
            ctx.gateway().send_to_group(&room, msg.to_string()).await?;
            return Ok(());
        }
        // A private message: only to a member of the same room.
        let Ok(to) = to.parse::<ClientId>() else {
            ctx.send(error("unknown recipient")).await?;
            return Ok(());
        };
        let target_room = match ctx.gateway().session(&to).await? {
            Some(s) => s.get("room").and_then(Value::as_str).map(str::to_string),
            None => None,
        };
        if target_room.as_deref() != Some(room.as_str()) {
            ctx.send(error("that member is not in this room")).await?;
            return Ok(());
        }
        ctx.gateway().send_to_client(&to, msg.to_string()).await?;
        if to != ctx.client_id {
            ctx.send(msg.to_string()).await?;
        }
        Ok(())
    }
}

impl Events for Chat {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        ctx.send(json!({"type": "welcome", "client_id": ctx.client_id}).to_string()).await?;
        Ok(())
    }

    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let Some(text) = msg.as_text().filter(|_| !msg.binary) else {
            ctx.send(error("binary messages are not supported")).await?;
            return Ok(());
        };
        match serde_json::from_str::<Incoming>(text) {
            Ok(Incoming::Login { name, room }) => self.login(ctx, &name, &room).await,
            Ok(Incoming::Say { to, content }) => self.say(ctx, &to, &content).await,
            Ok(Incoming::Pong) => Ok(()),
            Err(e) => {
                let reason = if serde_json::from_str::<Value>(text).is_err() {
                    "invalid JSON".to_string()
                } else {
                    format!("invalid message: {e}")
                };
                ctx.send(error(&reason)).await?;
                Ok(())
            }
        }
    }

    async fn on_close(&self, ctx: &mut Context) -> HandlerResult {
        if let (Some(name), Some(room)) =
            (ctx.session.get("name").and_then(Value::as_str), ctx.session.get("room").and_then(Value::as_str))
        {
            let msg = json!({"type": "logout", "client_id": ctx.client_id, "name": name, "time": now_string()});
            ctx.gateway().send_to_group(room, msg.to_string()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rules() {
        assert_eq!(check_name("  Ann ").unwrap(), "Ann");
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(33)).is_err());
        assert!(check_name("<b>").is_err());
        assert!(check_room("lobby-2").is_ok());
        assert!(check_room("a b").is_err());
        assert!(check_content("a < b and 3>2").is_ok());
        assert!(check_content("<script>alert(1)</script>").is_err());
        assert!(check_content("   ").is_err());
    }

    #[test]
    fn timestamps_are_formatted() {
        let t = now_string();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
