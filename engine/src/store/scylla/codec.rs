//! Conversions between the model and CQL rows.
//!
//! Ids and seqs are `bigint` (ids are small integers; anything above `i64::MAX` cannot exist in
//! the store, so reads of such keys find nothing). Enums are `text` (`member`, `admin`,
//! `owner`; `message`, `edit`, ...) so rows read well in cqlsh. A message body is a postcard
//! `MessageBody` in a `blob`; the data of events other than messages, edits and recalls is a
//! postcard `EventKind` in `detail`. Postcard is not self-describing: a change to those types
//! needs a schema migration that rewrites or versions them (see `migrations`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::errors;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::ConversationKind;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::model::ServerRole;
use crate::store::StoreError;

/// A key for a read: `None` when the value cannot be stored at all (so nothing is found).
pub(super) fn key(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

/// A value to write; ids and seqs above `i64::MAX` are never assigned.
pub(super) fn big(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} does not fit a CQL bigint")))
}

/// A stored bigint back to an id or seq.
pub(super) fn unsigned(operation: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| errors::corrupt(operation, format!("negative id or seq {value}")))
}

pub(super) fn required<T>(operation: &'static str, column: &str, value: Option<T>) -> Result<T, StoreError> {
    value.ok_or_else(|| errors::corrupt(operation, format!("column `{column}` is null")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| errors::corrupt(operation, e))
}

pub(super) fn member_role(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Member => "member",
        MemberRole::Admin => "admin",
        MemberRole::Owner => "owner",
    }
}

pub(super) fn parse_member_role(operation: &'static str, text: &str) -> Result<MemberRole, StoreError> {
    match text {
        "member" => Ok(MemberRole::Member),
        "admin" => Ok(MemberRole::Admin),
        "owner" => Ok(MemberRole::Owner),
        other => Err(errors::corrupt(operation, format!("unknown member role `{other}`"))),
    }
}

pub(super) fn server_role(role: ServerRole) -> &'static str {
    match role {
        ServerRole::User => "user",
        ServerRole::Admin => "admin",
    }
}

pub(super) fn parse_server_role(operation: &'static str, text: &str) -> Result<ServerRole, StoreError> {
    match text {
        "user" => Ok(ServerRole::User),
        "admin" => Ok(ServerRole::Admin),
        other => Err(errors::corrupt(operation, format!("unknown server role `{other}`"))),
    }
}

pub(super) fn conversation_kind(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

pub(super) fn parse_conversation_kind(operation: &'static str, text: &str) -> Result<ConversationKind, StoreError> {
    match text {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(errors::corrupt(
            operation,
            format!("unknown conversation kind `{other}`"),
        )),
    }
}

/// The partition (bucket) of a seq: seqs `1..=n` are bucket 0, `n+1..=2n` bucket 1, and so on.
pub(super) fn bucket(seq: u64, events_per_partition: u64) -> i64 {
    (seq.saturating_sub(1) / events_per_partition) as i64
}

/// The non-key columns of an event row, in the order of `statements::EVENT_COLUMNS` after
/// `seq`: sender, at, kind, client_msg_id, body, target, edited_by, recalled_by, detail.
pub(super) type EventColumns = (
    i64,
    i64,
    &'static str,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

/// A selected event row: seq, then the columns above, each nullable (a row whose cells expired
/// one by one may lack some).
pub(super) type EventRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

fn opt_seq(seq: Option<Seq>) -> Result<Option<i64>, StoreError> {
    seq.map(|s| big(s.0)).transpose()
}

/// The columns an event is written with.
pub(super) fn event_columns(event: &Event) -> Result<EventColumns, StoreError> {
    let sender = big(event.sender.0)?;
    let (kind, client_msg_id, body, target, edited_by, recalled_by, detail) = match &event.kind {
        EventKind::Message {
            client_msg_id,
            body,
            edited_by,
            recalled_by,
        } => (
            "message",
            Some(client_msg_id.as_str().to_owned()),
            Some(encode(body)?),
            None,
            opt_seq(*edited_by)?,
            opt_seq(*recalled_by)?,
            None,
        ),
        EventKind::Edit {
            client_msg_id,
            target,
            body,
        } => (
            "edit",
            Some(client_msg_id.as_str().to_owned()),
            Some(encode(body)?),
            Some(big(target.0)?),
            None,
            None,
            None,
        ),
        EventKind::Recall { client_msg_id, target } => (
            "recall",
            Some(client_msg_id.as_str().to_owned()),
            None,
            Some(big(target.0)?),
            None,
            None,
            None,
        ),
        other => (kind_name(other), None, None, None, None, None, Some(encode(other)?)),
    };
    Ok((
        sender,
        event.at,
        kind,
        client_msg_id,
        body,
        target,
        edited_by,
        recalled_by,
        detail,
    ))
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Message { .. } => "message",
        EventKind::Edit { .. } => "edit",
        EventKind::Recall { .. } => "recall",
        EventKind::MembersAdded { .. } => "members_added",
        EventKind::MemberRemoved { .. } => "member_removed",
        EventKind::MemberLeft { .. } => "member_left",
        EventKind::RoleChanged { .. } => "role_changed",
        EventKind::Renamed { .. } => "renamed",
    }
}

/// An event back from its row; `None` for a row without a kind (its cells expired).
pub(super) fn event_from_row(conversation: ConversationId, row: EventRow) -> Result<Option<Event>, StoreError> {
    const OP: &str = "decoding an event";
    let (seq, sender, at, kind, client_msg_id, body, target, edited_by, recalled_by, detail) = row;
    let Some(kind) = kind else {
        return Ok(None);
    };
    let client_msg_id = || -> Result<ClientMsgId, StoreError> {
        let raw = required(OP, "client_msg_id", client_msg_id.clone())?;
        ClientMsgId::parse(&raw).map_err(|e| errors::corrupt(OP, e))
    };
    let body = || -> Result<MessageBody, StoreError> {
        match &body {
            Some(bytes) => decode(OP, bytes),
            None => Ok(MessageBody::default()),
        }
    };
    let seq_of =
        |value: Option<i64>| -> Result<Option<Seq>, StoreError> { value.map(|v| unsigned(OP, v).map(Seq)).transpose() };
    let target = || -> Result<Seq, StoreError> { Ok(Seq(unsigned(OP, required(OP, "target", target)?)?)) };
    let kind = match kind.as_str() {
        "message" => EventKind::Message {
            client_msg_id: client_msg_id()?,
            body: body()?,
            edited_by: seq_of(edited_by)?,
            recalled_by: seq_of(recalled_by)?,
        },
        "edit" => EventKind::Edit {
            client_msg_id: client_msg_id()?,
            target: target()?,
            body: body()?,
        },
        "recall" => EventKind::Recall {
            client_msg_id: client_msg_id()?,
            target: target()?,
        },
        _ => decode(OP, &required(OP, "detail", detail)?)?,
    };
    Ok(Some(Event {
        conversation,
        seq: Seq(unsigned(OP, seq)?),
        sender: UserId(unsigned(OP, required(OP, "sender", sender)?)?),
        at: required(OP, "at", at)?,
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Member;

    fn round_trip(kind: EventKind) {
        let event = Event {
            conversation: ConversationId(7),
            seq: Seq(12),
            sender: UserId(3),
            at: 1_700_000_000_000,
            kind,
        };
        let c = event_columns(&event).expect("encodes");
        let row: EventRow = (
            12,
            Some(c.0),
            Some(c.1),
            Some(c.2.to_owned()),
            c.3,
            c.4,
            c.5,
            c.6,
            c.7,
            c.8,
        );
        assert_eq!(event_from_row(ConversationId(7), row).expect("decodes"), Some(event));
    }

    #[test]
    fn every_kind_round_trips() {
        let id = ClientMsgId::parse("c-1").expect("valid");
        let body = MessageBody {
            text: "hi".into(),
            mentions: vec![UserId(4)],
            reply_to: Some(Seq(2)),
            attachments: vec![],
        };
        round_trip(EventKind::Message {
            client_msg_id: id.clone(),
            body: body.clone(),
            edited_by: Some(Seq(20)),
            recalled_by: None,
        });
        round_trip(EventKind::Edit {
            client_msg_id: id.clone(),
            target: Seq(1),
            body,
        });
        round_trip(EventKind::Recall {
            client_msg_id: id,
            target: Seq(1),
        });
        round_trip(EventKind::MembersAdded {
            members: vec![Member {
                user: UserId(9),
                role: MemberRole::Admin,
            }],
        });
        round_trip(EventKind::Renamed { name: "n".into() });
    }

    #[test]
    fn buckets_hold_exactly_n_seqs() {
        assert_eq!(bucket(1, 100), 0);
        assert_eq!(bucket(100, 100), 0);
        assert_eq!(bucket(101, 100), 1);
        assert_eq!(bucket(0, 100), 0);
    }
}
