//! The client wire format, version 1: JSON text frames over WebSocket and JSON REST bodies.
//!
//! API boundary: these are the only types clients see. Engine types are converted here and never
//! serialized directly, so the engine can change without breaking clients. Every frame and field
//! is documented in docs/protocol.md.

use std::collections::BTreeMap;

use bytes::Bytes;
use roost_engine::conversation::command::Accepted;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::UserId;
use roost_engine::model::Attachment;
use roost_engine::model::Conversation;
use roost_engine::model::ConversationKind;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::Member;
use roost_engine::model::MemberRole;
use roost_engine::model::MessageBody;
use roost_engine::model::Receipt;
use roost_engine::model::ServerRole;
use roost_engine::model::User;
use roost_engine::service::ConversationSummary;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::error::ErrorCode;

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted `ref`, in bytes.
pub const MAX_REF_LEN: usize = 64;
/// Most attachments in one message, and mentions.
pub const MAX_ATTACHMENTS: usize = 16;
pub const MAX_MENTIONS: usize = 256;

// ----- client -> server ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Send {
        #[serde(rename = "ref")]
        reference: Option<String>,
        conversation: u64,
        client_msg_id: String,
        body: WireBody,
    },
    Edit {
        #[serde(rename = "ref")]
        reference: Option<String>,
        conversation: u64,
        client_msg_id: String,
        target: u64,
        body: WireBody,
    },
    Recall {
        #[serde(rename = "ref")]
        reference: Option<String>,
        conversation: u64,
        client_msg_id: String,
        target: u64,
    },
    Receipt {
        #[serde(rename = "ref")]
        reference: Option<String>,
        conversation: u64,
        delivered: Option<u64>,
        read: Option<u64>,
    },
    Typing {
        #[serde(rename = "ref")]
        reference: Option<String>,
        conversation: u64,
    },
    Sync {
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// Conversation id (as a string key) -> last seq the client has.
        #[serde(default)]
        conversations: BTreeMap<String, u64>,
        /// Most events per conversation in this answer (default 100, at most 200).
        limit: Option<usize>,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<String>,
    },
}

/// The frame types a client may send, for `unknown_type` errors.
pub const CLIENT_FRAME_TYPES: &[&str] = &["send", "edit", "recall", "receipt", "typing", "sync", "ping"];

impl ClientFrame {
    pub fn reference(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { reference, .. }
            | ClientFrame::Edit { reference, .. }
            | ClientFrame::Recall { reference, .. }
            | ClientFrame::Receipt { reference, .. }
            | ClientFrame::Typing { reference, .. }
            | ClientFrame::Sync { reference, .. }
            | ClientFrame::Ping { reference } => reference.as_deref(),
        }
    }
}

/// A frame that could not be decoded: the error, and the `ref` if one could be read.
#[derive(Debug)]
pub struct BadFrame {
    pub reference: Option<String>,
    pub error: ApiError,
}

/// Decode a text frame, telling malformed JSON, unknown types and bad fields apart.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, BadFrame> {
    let value: Value = serde_json::from_str(text).map_err(|e| BadFrame {
        reference: None,
        error: ApiError::new(ErrorCode::MalformedJson, format!("frame is not valid JSON: {e}")),
    })?;
    let reference = value.get("ref").and_then(Value::as_str).map(str::to_owned);
    let bad = |error: ApiError| BadFrame {
        reference: reference.clone(),
        error,
    };
    if reference.as_ref().is_some_and(|r| r.len() > MAX_REF_LEN) {
        return Err(bad(ApiError::invalid(format!(
            "ref is longer than {MAX_REF_LEN} bytes"
        ))));
    }
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(bad(ApiError::invalid("frame needs a string field `type`")));
    };
    if !CLIENT_FRAME_TYPES.contains(&kind) {
        return Err(bad(ApiError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type `{kind}`"),
        )));
    }
    serde_json::from_value::<ClientFrame>(value).map_err(|e| bad(ApiError::invalid(e.to_string())))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBody {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub mentions: Vec<u64>,
    #[serde(default)]
    pub reply_to: Option<u64>,
    #[serde(default)]
    pub attachments: Vec<WireAttachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAttachment {
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub url: String,
}

impl WireBody {
    pub fn into_body(self) -> Result<MessageBody, ApiError> {
        if self.mentions.len() > MAX_MENTIONS {
            return Err(ApiError::invalid(format!("at most {MAX_MENTIONS} mentions")));
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(ApiError::invalid(format!("at most {MAX_ATTACHMENTS} attachments")));
        }
        Ok(MessageBody {
            text: self.text,
            mentions: self.mentions.into_iter().map(UserId).collect(),
            reply_to: self.reply_to.map(Seq),
            attachments: self
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    name: a.name,
                    mime: a.mime,
                    size: a.size,
                    url: a.url,
                })
                .collect(),
        })
    }

    pub fn from_body(body: &MessageBody) -> Self {
        WireBody {
            text: body.text.clone(),
            mentions: body.mentions.iter().map(|u| u.0).collect(),
            reply_to: body.reply_to.map(|s| s.0),
            attachments: body
                .attachments
                .iter()
                .map(|a| WireAttachment {
                    name: a.name.clone(),
                    mime: a.mime.clone(),
                    size: a.size,
                    url: a.url.clone(),
                })
                .collect(),
        }
    }
}

// ----- server -> client ---------------------------------------------------------------------

/// A timeline event as clients see it (live, in sync answers and in REST history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    pub conversation: u64,
    pub seq: u64,
    pub sender: u64,
    pub at: i64,
    #[serde(flatten)]
    pub kind: WireEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireEventKind {
    Message {
        client_msg_id: String,
        body: WireBody,
        edited_by: Option<u64>,
        recalled: bool,
    },
    Edit {
        client_msg_id: String,
        target: u64,
        body: WireBody,
    },
    Recall {
        client_msg_id: String,
        target: u64,
    },
    MembersAdded {
        members: Vec<WireMember>,
    },
    MemberRemoved {
        user: u64,
    },
    MemberLeft {
        user: u64,
    },
    RoleChanged {
        user: u64,
        role: WireRole,
    },
    Renamed {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireRole {
    Member,
    Admin,
    Owner,
}

impl From<MemberRole> for WireRole {
    fn from(role: MemberRole) -> Self {
        match role {
            MemberRole::Member => WireRole::Member,
            MemberRole::Admin => WireRole::Admin,
            MemberRole::Owner => WireRole::Owner,
        }
    }
}

impl From<WireRole> for MemberRole {
    fn from(role: WireRole) -> Self {
        match role {
            WireRole::Member => MemberRole::Member,
            WireRole::Admin => MemberRole::Admin,
            WireRole::Owner => MemberRole::Owner,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMember {
    pub user: u64,
    pub role: WireRole,
}

impl From<&Member> for WireMember {
    fn from(m: &Member) -> Self {
        WireMember {
            user: m.user.0,
            role: m.role.into(),
        }
    }
}

impl From<&Event> for WireEvent {
    fn from(event: &Event) -> Self {
        let kind = match &event.kind {
            EventKind::Message {
                client_msg_id,
                body,
                edited_by,
                recalled_by,
            } => WireEventKind::Message {
                client_msg_id: client_msg_id.to_string(),
                body: WireBody::from_body(body),
                edited_by: edited_by.map(|s| s.0),
                recalled: recalled_by.is_some(),
            },
            EventKind::Edit {
                client_msg_id,
                target,
                body,
            } => WireEventKind::Edit {
                client_msg_id: client_msg_id.to_string(),
                target: target.0,
                body: WireBody::from_body(body),
            },
            EventKind::Recall { client_msg_id, target } => WireEventKind::Recall {
                client_msg_id: client_msg_id.to_string(),
                target: target.0,
            },
            EventKind::MembersAdded { members } => WireEventKind::MembersAdded {
                members: members.iter().map(WireMember::from).collect(),
            },
            EventKind::MemberRemoved { user } => WireEventKind::MemberRemoved { user: user.0 },
            EventKind::MemberLeft { user } => WireEventKind::MemberLeft { user: user.0 },
            EventKind::RoleChanged { user, role } => WireEventKind::RoleChanged {
                user: user.0,
                role: (*role).into(),
            },
            EventKind::Renamed { name } => WireEventKind::Renamed { name: name.clone() },
        };
        WireEvent {
            conversation: event.conversation.0,
            seq: event.seq.0,
            sender: event.sender.0,
            at: event.at,
            kind,
        }
    }
}

/// Frames the server sends. Serialized with a `type` tag.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        v: u32,
        user: WireUser,
        heartbeat_secs: u64,
        limits: WireLimits,
    },
    Event(&'a WireEvent),
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        conversation: u64,
        seq: u64,
        at: i64,
        duplicate: bool,
    },
    Ok {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Synced {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        conversations: Vec<SyncedConversation>,
    },
    Receipt {
        conversation: u64,
        user: u64,
        delivered: u64,
        read: u64,
    },
    Typing {
        conversation: u64,
        user: u64,
    },
    Presence {
        user: u64,
        online: bool,
        last_seen: Option<i64>,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        #[serde(flatten)]
        error: crate::error::ErrorBody<'a>,
    },
}

impl ServerFrame<'_> {
    pub fn to_bytes(&self) -> Bytes {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        Bytes::from(serde_json::to_vec(self).unwrap_or_else(|_| b"{\"type\":\"error\",\"code\":\"internal\"}".to_vec()))
    }

    pub fn ack(reference: Option<&str>, accepted: &Accepted) -> Bytes {
        ServerFrame::Ack {
            reference,
            conversation: accepted.conversation.0,
            seq: accepted.seq.0,
            at: accepted.at,
            duplicate: accepted.duplicate,
        }
        .to_bytes()
    }

    pub fn error(reference: Option<&str>, error: &ApiError) -> Bytes {
        ServerFrame::Error {
            reference,
            error: error.body(),
        }
        .to_bytes()
    }

    pub fn event(event: &Event) -> Bytes {
        ServerFrame::Event(&WireEvent::from(event)).to_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncedConversation {
    pub conversation: u64,
    /// The newest seq in the conversation when the sync answer was built.
    pub last_seq: u64,
    /// The seq the client now has (last event sent in this answer, or its cursor).
    pub synced_to: u64,
    /// More events exist after `synced_to`: sync again from there (or page history).
    pub limited: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireLimits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub max_page: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireUser {
    pub id: u64,
    pub username: String,
    pub display_name: String,
    pub admin: bool,
    pub disabled: bool,
    pub last_seen: Option<i64>,
}

impl From<&User> for WireUser {
    fn from(u: &User) -> Self {
        WireUser {
            id: u.id.0,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            admin: u.role == ServerRole::Admin,
            disabled: u.disabled,
            last_seen: u.last_seen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireConversation {
    pub id: u64,
    pub kind: WireKind,
    pub name: String,
    pub created_by: u64,
    pub created_at: i64,
}

impl From<&Conversation> for WireConversation {
    fn from(c: &Conversation) -> Self {
        WireConversation {
            id: c.id.0,
            kind: match c.kind {
                ConversationKind::Direct => WireKind::Direct,
                ConversationKind::Group => WireKind::Group,
            },
            name: c.name.clone(),
            created_by: c.created_by.0,
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReceipt {
    pub user: u64,
    pub delivered: u64,
    pub read: u64,
}

impl WireReceipt {
    pub fn new(user: UserId, r: Receipt) -> Self {
        WireReceipt {
            user: user.0,
            delivered: r.delivered.0,
            read: r.read.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSummary {
    pub conversation: WireConversation,
    pub member_count: usize,
    pub last_seq: u64,
    pub last_message: Option<WireEvent>,
    pub unread: u64,
    pub delivered: u64,
    pub read: u64,
}

impl From<&ConversationSummary> for WireSummary {
    fn from(s: &ConversationSummary) -> Self {
        WireSummary {
            conversation: (&s.conversation).into(),
            member_count: s.member_count,
            last_seq: s.last_seq.0,
            last_message: s.last_message.as_ref().map(WireEvent::from),
            unread: s.unread,
            delivered: s.receipt.delivered.0,
            read: s.receipt.read.0,
        }
    }
}

/// Parse a conversation id given as a JSON object key.
pub fn parse_conversation_key(key: &str) -> Result<ConversationId, ApiError> {
    key.parse::<u64>()
        .map(ConversationId)
        .map_err(|_| ApiError::invalid(format!("`{key}` is not a conversation id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        decode_client_frame(text).expect_err("should fail").error.code
    }

    #[test]
    fn decoding_tells_error_kinds_apart() {
        assert_eq!(code_of("{not json"), ErrorCode::MalformedJson);
        assert_eq!(code_of(r#"{"type":"launch_rockets"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"send","conversation":"x"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code_of(r#"{"no_type":1}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"ping","extra":1}"#), ErrorCode::InvalidField);
        let bad = decode_client_frame(r#"{"type":"send","ref":"r9","conversation":-1}"#).expect_err("fails");
        assert_eq!(bad.reference.as_deref(), Some("r9"));
    }

    #[test]
    fn send_round_trip() {
        let frame = decode_client_frame(
            r#"{"type":"send","ref":"a","conversation":3,"client_msg_id":"c1","body":{"text":"hi","mentions":[2]}}"#,
        )
        .expect("valid");
        let ClientFrame::Send { conversation, body, .. } = frame else {
            panic!("not a send")
        };
        assert_eq!(conversation, 3);
        assert_eq!(body.text, "hi");
        assert_eq!(body.mentions, vec![2]);
    }

    #[test]
    fn events_serialize_with_type_and_kind() {
        let event = Event {
            conversation: ConversationId(1),
            seq: Seq(2),
            sender: UserId(3),
            at: 4,
            kind: EventKind::Renamed { name: "x".into() },
        };
        let json: Value = serde_json::from_slice(&ServerFrame::event(&event)).expect("json");
        assert_eq!(json["type"], "event");
        assert_eq!(json["kind"], "renamed");
        assert_eq!(json["seq"], 2);
    }
}
