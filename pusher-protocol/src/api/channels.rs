//! The query routes: `GET /apps/{app_id}/channels` (`filter_by_prefix`, `info`),
//! `GET /apps/{app_id}/channels/{channel}` (`info`), `GET /apps/{app_id}/channels/{channel}/users`,
//! their answers, the `info` attribute list they and the event routes share, and the user id
//! of `POST /apps/{app_id}/users/{user_id}/terminate_connections`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Limits;
use crate::api::ApiError;
use crate::channel::{ChannelKind, ChannelName};

/// The attributes an `info` parameter asks for (a comma-separated list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Info {
    /// `user_count`: distinct users (presence channels only).
    pub user_count: bool,
    /// `subscription_count`: connections subscribed.
    pub subscription_count: bool,
    /// `cache`: the cached event (cache channels).
    pub cache: bool,
}

impl Info {
    /// Parses `user_count,subscription_count`; an unknown attribute is a 400 naming it.
    pub fn parse(list: &str) -> Result<Self, ApiError> {
        let mut info = Self::default();
        for attr in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                "cache" => info.cache = true,
                other => {
                    let shown: String = other.chars().take(50).collect();
                    return Err(ApiError::bad_request(format!(
                        "unknown attribute {shown:?} (known: user_count, subscription_count, cache)"
                    )));
                }
            }
        }
        Ok(info)
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The attributes of one channel in an answer; the ones not asked for are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChannelAttributes {
    /// Distinct users (presence channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    /// Connections subscribed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
}

/// `GET /apps/{app_id}/channels`: which occupied channels to list and what to say of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelsQuery {
    /// Only channels whose name starts with this.
    pub prefix: Option<String>,
    /// The attributes to answer for each.
    pub info: Info,
}

impl ChannelsQuery {
    /// Reads `filter_by_prefix` and `info` from the request's (verified) query parameters.
    /// `user_count` is only for presence channels, so it needs a `presence-` prefix (400
    /// otherwise, as Pusher answers).
    pub fn from_params(params: &[(String, String)]) -> Result<Self, ApiError> {
        let prefix = param(params, "filter_by_prefix").map(str::to_owned);
        let info = param(params, "info").map_or(Ok(Info::default()), Info::parse)?;
        if info.user_count && !prefix.as_deref().is_some_and(|p| p.starts_with("presence-")) {
            return Err(ApiError::bad_request(
                "user_count is only for presence channels: add filter_by_prefix=presence-",
            ));
        }
        Ok(Self { prefix, info })
    }
}

/// `GET /apps/{app_id}/channels/{channel}`: what to say of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelQuery {
    /// The attributes to answer.
    pub info: Info,
}

impl ChannelQuery {
    /// Reads `info` for `channel`; `user_count` of a channel that is not a presence channel is
    /// a 400 (Pusher: "requesting an attribute which is not available for the requested
    /// channel will return an error").
    pub fn from_params(channel: &ChannelName, params: &[(String, String)]) -> Result<Self, ApiError> {
        let info = param(params, "info").map_or(Ok(Info::default()), Info::parse)?;
        if info.user_count && channel.kind() != ChannelKind::Presence {
            return Err(ApiError::bad_request(format!(
                "user_count is only for presence channels, not {:?}",
                channel.as_str()
            )));
        }
        Ok(Self { info })
    }
}

/// The answer to `GET /apps/{app_id}/channels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelsAnswer {
    /// Every occupied channel (matching the prefix) with the attributes asked for.
    pub channels: BTreeMap<String, ChannelAttributes>,
}

/// The answer to `GET /apps/{app_id}/channels/{channel}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChannelAnswer {
    /// Whether anyone is subscribed.
    pub occupied: bool,
    /// The attributes asked for.
    #[serde(flatten)]
    pub attributes: ChannelAttributes,
}

/// The answer to `GET /apps/{app_id}/channels/{channel}/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsersAnswer {
    /// The presence channel's users.
    pub users: Vec<UserEntry>,
}

/// One user of [`UsersAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserEntry {
    /// Its id.
    pub id: String,
}

/// Checks the channel of `/channels/{channel}` and `/channels/{channel}/users` (the path
/// segment, percent-decoded); `users` is only for presence channels (400 otherwise).
pub fn channel_in_path(segment: &str, users: bool, limits: &Limits) -> Result<ChannelName, ApiError> {
    let channel = ChannelName::parse(segment, limits).map_err(|e| ApiError::bad_request(format!("channel: {e}")))?;
    if users && channel.kind() != ChannelKind::Presence {
        return Err(ApiError::bad_request(format!(
            "users are only listed for presence channels, not {:?}",
            channel.as_str()
        )));
    }
    Ok(channel)
}

/// Checks the user id of `terminate_connections` (the path segment, percent-decoded).
pub fn user_in_path(segment: &str, limits: &Limits) -> Result<String, ApiError> {
    crate::presence::check_user_id(segment, limits)
        .map_err(|reason| ApiError::bad_request(format!("user id {reason}")))?;
    Ok(segment.to_owned())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s, &Limits::default()).unwrap()
    }

    #[test]
    fn info_lists() {
        assert_eq!(Info::parse("").unwrap(), Info::default());
        assert!(Info::parse("").unwrap().is_empty());
        let i = Info::parse("user_count, subscription_count,").unwrap();
        assert!(i.user_count && i.subscription_count && !i.cache);
        let e = Info::parse("members").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "unknown attribute \"members\" (known: user_count, subscription_count, cache)")
        );
    }

    #[test]
    fn channels_query() {
        let q = ChannelsQuery::from_params(&p(&[("filter_by_prefix", "presence-"), ("info", "user_count")])).unwrap();
        assert_eq!(q.prefix.as_deref(), Some("presence-"));
        assert!(q.info.user_count);
        assert_eq!(ChannelsQuery::from_params(&[]).unwrap(), ChannelsQuery { prefix: None, info: Info::default() });
        let e = ChannelsQuery::from_params(&p(&[("info", "user_count")])).unwrap_err();
        assert_eq!(e.message, "user_count is only for presence channels: add filter_by_prefix=presence-");
        assert!(ChannelsQuery::from_params(&p(&[("filter_by_prefix", "private-"), ("info", "user_count")])).is_err());
        assert!(
            ChannelsQuery::from_params(&p(&[("filter_by_prefix", "private-"), ("info", "subscription_count")])).is_ok()
        );
    }

    #[test]
    fn channel_query_and_paths() {
        assert!(ChannelQuery::from_params(&ch("presence-a"), &p(&[("info", "user_count")])).unwrap().info.user_count);
        assert_eq!(
            ChannelQuery::from_params(&ch("a"), &p(&[("info", "user_count")])).unwrap_err().message,
            "user_count is only for presence channels, not \"a\""
        );
        assert!(ChannelQuery::from_params(&ch("presence-a"), &p(&[("info", "subscription_count")])).is_ok());
        let limits = Limits::default();
        assert_eq!(channel_in_path("presence-a", true, &limits).unwrap().as_str(), "presence-a");
        assert_eq!(
            channel_in_path("private-a", true, &limits).unwrap_err().message,
            "users are only listed for presence channels, not \"private-a\""
        );
        assert!(
            channel_in_path("a b", false, &limits).unwrap_err().message.starts_with("channel: channel name has ' '")
        );
        assert_eq!(user_in_path("user-42", &limits).unwrap(), "user-42");
        assert_eq!(user_in_path("", &limits).unwrap_err().message, "user id is empty");
        assert!(user_in_path("a/b", &limits).unwrap_err().message.starts_with("user id has '/'"));
    }

    #[test]
    fn answers_as_the_docs_show_them() {
        let mut channels = BTreeMap::new();
        channels.insert("presence-foobar".into(), ChannelAttributes { user_count: Some(42), subscription_count: None });
        assert_eq!(
            serde_json::to_string(&ChannelsAnswer { channels }).unwrap(),
            r#"{"channels":{"presence-foobar":{"user_count":42}}}"#
        );
        let one = ChannelAnswer {
            occupied: true,
            attributes: ChannelAttributes { user_count: Some(42), subscription_count: Some(42) },
        };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"occupied":true,"user_count":42,"subscription_count":42}"#
        );
        assert_eq!(serde_json::to_string(&ChannelAnswer::default()).unwrap(), r#"{"occupied":false}"#);
        let users = UsersAnswer { users: vec![UserEntry { id: "1".into() }, UserEntry { id: "2".into() }] };
        assert_eq!(serde_json::to_string(&users).unwrap(), r#"{"users":[{"id":"1"},{"id":"2"}]}"#);
    }
}
