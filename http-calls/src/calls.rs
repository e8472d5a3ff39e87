//! The Gateway API as JSON: one argument type per call, each run by one `GatewayClient` method.
//!
//! The same types serve the HTTP API's routes (`POST /v1/<call>` with the arguments as the body),
//! its batch endpoint and its OpenAPI document, so the three cannot drift apart; and the `calls`
//! an HTTP application's endpoint answers with.
//!
//! The calls keep their wire names (`get_all_client_count`, ...), GatewayWorker's, which other
//! languages know; each runs the `GatewayClient` method of the Rust name (`client_count`, ...).

use std::collections::BTreeMap;
use std::future::Future;

use gw_gateway_client::{Answer, ClientError, ClientId, CloseReason, GatewayClient, Payload, Session};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::types::{CloseCode, CloseText, Id, Message, Name};

/// What a call does, which decides the API keys allowed to make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Pushes messages (`send_to_*`).
    Send,
    /// Changes the cluster otherwise: uids, groups, sessions, closing clients.
    Write,
    /// Asks questions; changes nothing.
    Read,
}

impl Kind {
    /// Lower-case name, for the OpenAPI document and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Write => "write",
            Kind::Read => "read",
        }
    }
}

/// A successful call: its value and the gateways that did not answer or did not get the command
/// (exactly like [`Answer`]: non-empty `missing` means the value may be partial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reply<T> {
    /// The call's result.
    pub value: T,
    /// Advertised addresses of gateways whose part is missing.
    pub missing: Vec<String>,
}

impl<T: Serialize> Reply<T> {
    /// The reply with its value as JSON.
    pub fn into_json(self) -> Reply<Value> {
        Reply { value: serde_json::to_value(self.value).unwrap_or(Value::Null), missing: self.missing }
    }
}

/// A fan-out command reached every connected gateway but these: a partial success, reported
/// like a partial answer rather than as a failure.
fn done(result: Result<(), ClientError>) -> Result<Reply<()>, ClientError> {
    match result {
        Ok(()) => Ok(Reply { value: (), missing: vec![] }),
        Err(ClientError::Unreachable { gateways }) => Ok(Reply { value: (), missing: gateways }),
        Err(e) => Err(e),
    }
}

/// `value` as JSON text.
pub(crate) fn raw_json<T: Serialize>(value: &T) -> Box<RawValue> {
    // Serializing plain data into JSON text does not fail (maps have string keys).
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("JSON"))
}

fn answer<T>(result: Result<Answer<T>, ClientError>) -> Result<Reply<T>, ClientError> {
    result.map(|a| Reply { value: a.value, missing: a.missing })
}

fn plain<T>(result: Result<T, ClientError>) -> Result<Reply<T>, ClientError> {
    result.map(|value| Reply { value, missing: vec![] })
}

fn ids(list: &[Id]) -> Vec<&ClientId> {
    list.iter().map(|i| &i.0).collect()
}

/// Client ids in an answer, as the strings the JSON carries.
trait IdsAsStrings {
    type Text;
    fn into_strings(self) -> Self::Text;
}

impl IdsAsStrings for Vec<ClientId> {
    type Text = Vec<String>;
    fn into_strings(self) -> Vec<String> {
        self.iter().map(ClientId::to_string).collect()
    }
}

impl IdsAsStrings for BTreeMap<String, Vec<ClientId>> {
    type Text = BTreeMap<String, Vec<String>>;
    fn into_strings(self) -> Self::Text {
        self.into_iter().map(|(k, v)| (k, v.into_strings())).collect()
    }
}

impl IdsAsStrings for BTreeMap<ClientId, Session> {
    type Text = BTreeMap<String, Session>;
    fn into_strings(self) -> Self::Text {
        self.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

fn ids_answer<T: IdsAsStrings>(result: Result<Answer<T>, ClientError>) -> Result<Reply<T::Text>, ClientError> {
    result.map(|a| Reply { value: a.value.into_strings(), missing: a.missing })
}

fn names(list: &[Name]) -> Vec<&str> {
    list.iter().map(|n| n.0.as_str()).collect()
}

/// One call of the Gateway API.
pub trait ApiCall: for<'de> Deserialize<'de> + JsonSchema + Send + 'static {
    /// The call's name: its route is `/v1/<NAME>`.
    const NAME: &'static str;
    /// Whether the call sends, writes or reads (what an API key's `access` may call).
    const KIND: Kind;
    /// One line for the OpenAPI document.
    const SUMMARY: &'static str;
    /// The type of the call's result.
    type Output: Serialize + JsonSchema + Send;
    /// Runs the call.
    fn run(self, gateway: &GatewayClient) -> impl Future<Output = Result<Reply<Self::Output>, ClientError>> + Send;
}

/// How an argument object becomes a call's argument type: the HTTP API's parser names the field
/// at fault in its error.
pub trait ArgsParser {
    /// Why the arguments are not the call's.
    type Error;
    /// Parses `args` as `T`.
    fn parse<T: DeserializeOwned>(&self, args: Value) -> Result<T, Self::Error>;
}

/// Something done with every call's type, in turn ([`for_each_call`]): adding its route, say.
pub trait CallVisitor {
    /// Called once per call type.
    fn visit<C: ApiCall>(&mut self);
}

/// What the OpenAPI document needs to know of each call.
pub struct CallDoc {
    /// The call's name (its route is `/v1/<name>`).
    pub name: &'static str,
    /// Send, write or read.
    pub kind: Kind,
    /// One line for the documentation.
    pub summary: &'static str,
    /// The JSON schema of its arguments.
    pub args: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The JSON schema of its result.
    pub output: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

macro_rules! calls {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident => $ty:ident [$kind:ident] { $($(#[$fattr:meta])* $field:ident : $fty:ty),* $(,)? }
            -> $out:ty = |$g:ident, $a:ident| $body:expr;
    )*) => {
        $(
            $(#[doc = $doc])+
            #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            #[allow(missing_docs, reason = "each argument is described by its type's schema (Id, Name, Message, ...)")]
            pub struct $ty { $($(#[$fattr])* pub $field: $fty),* }

            impl ApiCall for $ty {
                const NAME: &'static str = stringify!($name);
                const KIND: Kind = Kind::$kind;
                const SUMMARY: &'static str = concat!($($doc),+);
                type Output = $out;
                #[allow(clippy::manual_async_fn)]
                fn run(self, $g: &GatewayClient) -> impl Future<Output = Result<Reply<$out>, ClientError>> + Send {
                    let $a = self;
                    async move { $body }
                }
            }
        )*

        /// Any call, as an item of a batch: `{"call": "<name>", "args": {…}}`.
        #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
        #[serde(tag = "call", content = "args", rename_all = "snake_case")]
        pub enum Call { $($(#[doc = $doc])+ $ty($ty)),* }

        impl Call {
            /// The call's name.
            pub fn name(&self) -> &'static str {
                match self { $(Call::$ty(_) => $ty::NAME),* }
            }

            /// Whether the call sends, writes or reads.
            pub fn kind(&self) -> Kind {
                match self { $(Call::$ty(_) => $ty::KIND),* }
            }

            /// The call `name` with its arguments, parsed by `parser`; `None` if there is no
            /// such call.
            pub fn from_parts<P: ArgsParser>(name: &str, args: Value, parser: &P) -> Option<Result<Call, P::Error>> {
                match name {
                    $(stringify!($name) => Some(parser.parse::<$ty>(args).map(Call::$ty)),)*
                    _ => None,
                }
            }

            /// Runs the call; the value comes back as JSON.
            pub async fn run(self, gateway: &GatewayClient) -> Result<Reply<Value>, ClientError> {
                match self { $(Call::$ty(c) => c.run(gateway).await.map(Reply::into_json)),* }
            }

            /// Runs the call; the reply (`{"value", "missing"}`) comes back as JSON text, written
            /// from the call's own result type (no `Value` tree in between: for a large answer
            /// that tree takes several times the text's memory).
            pub async fn run_to_json(self, gateway: &GatewayClient) -> Result<Box<RawValue>, ClientError> {
                match self { $(Call::$ty(c) => c.run(gateway).await.map(|r| raw_json(&r))),* }
            }
        }

        /// Every call, in the order of the API documentation.
        pub fn docs() -> Vec<CallDoc> {
            vec![$(CallDoc {
                name: $ty::NAME,
                kind: $ty::KIND,
                summary: $ty::SUMMARY,
                args: |g| g.subschema_for::<$ty>(),
                output: |g| g.subschema_for::<Reply<$out>>(),
            }),*]
        }

        /// Hands every call's type to `visitor`, in the order of the API documentation.
        pub fn for_each_call<V: CallVisitor>(visitor: &mut V) {
            $(visitor.visit::<$ty>();)*
        }
    };
}

calls! {
    /// Sends a message to one client.
    send_to_client => SendToClient [Send] { client_id: Id, message: Message }
        -> () = |g, a| done(g.send_to_client(&a.client_id.0, a.message).await);
    /// Sends a message to each listed client (once each).
    send_to_clients => SendToClients [Send] { client_ids: Vec<Id>, message: Message }
        -> () = |g, a| done(g.send_to_clients(&ids(&a.client_ids), a.message).await);
    /// Sends a message to every connected client, except the listed ones.
    send_to_all => SendToAll [Send] { message: Message, #[serde(default)] exclude: Vec<Id> }
        -> () = |g, a| done(g.send_to_all_except(a.message, &ids(&a.exclude)).await);
    /// Sends a message to every connection bound to a uid.
    send_to_uid => SendToUid [Send] { uid: Name, message: Message }
        -> () = |g, a| done(g.send_to_uid(&a.uid.0, a.message).await);
    /// Sends a message to every connection of any of these uids (once per connection).
    send_to_uids => SendToUids [Send] { uids: Vec<Name>, message: Message }
        -> () = |g, a| done(g.send_to_uids(&names(&a.uids), a.message).await);
    /// Sends a message to every member of a group, except the listed clients.
    send_to_group => SendToGroup [Send] { group: Name, message: Message, #[serde(default)] exclude: Vec<Id> }
        -> () = |g, a| done(g.send_to_groups_except(&[a.group.0.as_str()], a.message, &ids(&a.exclude)).await);
    /// Sends a message to the members of several groups (once per client), except the listed clients.
    send_to_groups => SendToGroups [Send] { groups: Vec<Name>, message: Message, #[serde(default)] exclude: Vec<Id> }
        -> () = |g, a| done(g.send_to_groups_except(&names(&a.groups), a.message, &ids(&a.exclude)).await);

    /// Binds a client to a uid (replacing its previous uid).
    bind_uid => BindUid [Write] { client_id: Id, uid: Name }
        -> () = |g, a| done(g.bind_uid(&a.client_id.0, &a.uid.0).await);
    /// Unbinds a client from this uid (nothing happens if it is bound to another).
    unbind_uid => UnbindUid [Write] { client_id: Id, uid: Name }
        -> () = |g, a| done(g.unbind_uid(&a.client_id.0, &a.uid.0).await);
    /// Closes every connection of a uid.
    close_uid => CloseUid [Write] { uid: Name }
        -> () = |g, a| done(g.close_uid(&a.uid.0).await);
    /// Adds a client to a group.
    join_group => JoinGroup [Write] { client_id: Id, group: Name }
        -> () = |g, a| done(g.join_group(&a.client_id.0, &a.group.0).await);
    /// Removes a client from a group.
    leave_group => LeaveGroup [Write] { client_id: Id, group: Name }
        -> () = |g, a| done(g.leave_group(&a.client_id.0, &a.group.0).await);
    /// Dissolves a group on every gateway; its members stay connected.
    ungroup => Ungroup [Write] { group: Name }
        -> () = |g, a| done(g.ungroup(&a.group.0).await);
    /// Closes a client with a close frame, optionally after a last message and with a close code (1000, 3000-4999) and reason.
    close_client => CloseClient [Write] {
        client_id: Id,
        #[serde(default)] message: Option<Message>,
        #[serde(default)] code: Option<CloseCode>,
        #[serde(default)] reason: Option<CloseText>,
    } -> () = |g, a| {
        let close = close_reason(a.code, a.reason);
        done(g.close_client_with(&a.client_id.0, a.message.map(Payload::from), close).await)
    };
    /// Drops a client's connection without a close frame, right after the messages sent to it before.
    destroy_client => DestroyClient [Write] { client_id: Id }
        -> () = |g, a| done(g.destroy_client(&a.client_id.0).await);
    /// Replaces a client's session.
    set_session => SetSession [Write] { client_id: Id, session: Session }
        -> () = |g, a| done(g.set_session(&a.client_id.0, &a.session).await);
    /// Deep-merges into a client's session (null values delete keys).
    update_session => UpdateSession [Write] { client_id: Id, session: Session }
        -> () = |g, a| done(g.update_session(&a.client_id.0, &a.session).await);

    /// Whether a client is connected.
    is_online => IsOnline [Read] { client_id: Id }
        -> bool = |g, a| plain(g.is_online(&a.client_id.0).await);
    /// A client's session; null if the client is not connected.
    get_session => GetSession [Read] { client_id: Id }
        -> Option<Session> = |g, a| plain(g.session(&a.client_id.0).await);
    /// The uid a client is bound to, or null.
    get_uid_by_client_id => GetUidByClientId [Read] { client_id: Id }
        -> Option<String> = |g, a| plain(g.uid_of(&a.client_id.0).await);
    /// Whether any connection is bound to a uid.
    is_uid_online => IsUidOnline [Read] { uid: Name }
        -> bool = |g, a| answer(g.is_uid_online(&a.uid.0).await);
    /// For each uid, whether it has a connection.
    are_uids_online => AreUidsOnline [Read] { uids: Vec<Name> }
        -> BTreeMap<String, bool> = |g, a| answer(g.are_uids_online(&names(&a.uids)).await);
    /// Every client id bound to a uid.
    get_client_ids_by_uid => GetClientIdsByUid [Read] { uid: Name }
        -> Vec<String> = |g, a| ids_answer(g.client_ids_by_uid(&a.uid.0).await);
    /// For each uid, its client ids.
    get_client_ids_by_uids => GetClientIdsByUids [Read] { uids: Vec<Name> }
        -> BTreeMap<String, Vec<String>> = |g, a| ids_answer(g.client_ids_by_uids(&names(&a.uids)).await);
    /// Every uid bound to at least one connection.
    get_all_uids => GetAllUids [Read] {}
        -> Vec<String> = |g, _a| answer(g.uids().await);
    /// Number of distinct uids online.
    get_all_uid_count => GetAllUidCount [Read] {}
        -> u64 = |g, _a| answer(g.uid_count().await);
    /// Every member of a group.
    get_client_ids_by_group => GetClientIdsByGroup [Read] { group: Name }
        -> Vec<String> = |g, a| ids_answer(g.client_ids_by_group(&a.group.0).await);
    /// Number of members of a group.
    get_client_count_by_group => GetClientCountByGroup [Read] { group: Name }
        -> u64 = |g, a| answer(g.client_count_by_group(&a.group.0).await);
    /// Number of members of each group.
    get_client_count_by_groups => GetClientCountByGroups [Read] { groups: Vec<Name> }
        -> BTreeMap<String, u64> = |g, a| answer(g.client_count_by_groups(&names(&a.groups)).await);
    /// Distinct uids among a group's members.
    get_uids_by_group => GetUidsByGroup [Read] { group: Name }
        -> Vec<String> = |g, a| answer(g.uids_by_group(&a.group.0).await);
    /// Number of distinct uids among a group's members.
    get_uid_count_by_group => GetUidCountByGroup [Read] { group: Name }
        -> u64 = |g, a| answer(g.uid_count_by_group(&a.group.0).await);
    /// Every group with at least one member.
    get_all_group_ids => GetAllGroupIds [Read] {}
        -> Vec<String> = |g, _a| answer(g.groups().await);
    /// Every group with its members' client ids.
    get_all_group_client_id_lists => GetAllGroupClientIdLists [Read] {}
        -> BTreeMap<String, Vec<String>> = |g, _a| ids_answer(g.group_client_ids().await);
    /// Every group with its member count.
    get_all_group_client_id_counts => GetAllGroupClientIdCounts [Read] {}
        -> BTreeMap<String, u64> = |g, _a| answer(g.group_client_counts().await);
    /// Every group with the distinct uids of its members.
    get_all_group_uid_lists => GetAllGroupUidLists [Read] {}
        -> BTreeMap<String, Vec<String>> = |g, _a| answer(g.group_uids().await);
    /// Every group with its distinct uid count.
    get_all_group_uid_counts => GetAllGroupUidCounts [Read] {}
        -> BTreeMap<String, u64> = |g, _a| answer(g.group_uid_counts().await);
    /// Every connected client id.
    get_all_client_ids => GetAllClientIds [Read] {}
        -> Vec<String> = |g, _a| ids_answer(g.client_ids().await);
    /// Number of connected clients.
    get_all_client_count => GetAllClientCount [Read] {}
        -> u64 = |g, _a| answer(g.client_count().await);
    /// Every connected client with its session.
    get_all_client_sessions => GetAllClientSessions [Read] {}
        -> BTreeMap<String, Session> = |g, _a| ids_answer(g.sessions().await);
    /// The sessions of a group's members.
    get_client_sessions_by_group => GetClientSessionsByGroup [Read] { group: Name }
        -> BTreeMap<String, Session> = |g, a| ids_answer(g.sessions_by_group(&a.group.0).await);
}

/// The close frame to send: the code and reason given (both checked when parsed), 1000 if only a
/// reason is, none if neither is.
fn close_reason(code: Option<CloseCode>, reason: Option<CloseText>) -> Option<CloseReason> {
    let reason = reason.map(|r| r.0).unwrap_or_default();
    match code {
        None if reason.is_empty() => None,
        code => Some(CloseReason { code: code.map_or(1000, |c| c.0), reason }),
    }
}
