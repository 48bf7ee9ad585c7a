//! The routing layer's peer messages: their kind numbers (32..=47 belong to routing) and their
//! postcard bodies.
//!
//! This module owns the byte layout of actor traffic between nodes and nothing else: the frame
//! around it (length, version, kind, correlation) is the transport's. Bodies are plain postcard
//! with no version byte of their own, because the frame already carries the protocol version and
//! a node refuses peers of another version at `Hello`. Decoding never panics: a truncated or
//! garbled body is a [`WireError`], answered or logged by the caller.

use bytes::Bytes;
use roost_engine::conversation::command::Command;
use roost_engine::conversation::command::Reply;
use roost_engine::delivery::Outbound;
use roost_engine::ids::ConversationId;
use roost_engine::ids::UserId;
use roost_engine::ConversationError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

pub use crate::transport::Kind;

/// Request: run a command on the owner's conversation actor. Body [`Forward`], answer
/// [`ForwardResult`].
pub const FORWARD: Kind = 32;
/// One-way: an encoded item for some of the receiving node's users. Body [`Deliver`].
pub const DELIVER: Kind = 33;
/// One-way: users whose first connection opened or last closed on the sender. Body [`UsersDelta`].
pub const USERS: Kind = 34;
/// One-way: every user connected on the sender, replacing what the receiver knew. Body
/// [`UsersSnapshot`]; sent when the link comes up.
pub const USERS_SNAPSHOT: Kind = 35;

/// The kinds this layer handles (the node dispatches them here).
pub const KINDS: std::ops::RangeInclusive<Kind> = 32..=47;

/// Why a routing body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("routing message (kind {kind}): cannot decode body: {source}")]
    Decode { kind: Kind, source: postcard::Error },
    #[error("routing message (kind {kind}): cannot encode body: {source}")]
    Encode { kind: Kind, source: postcard::Error },
}

/// A command for a conversation owned by the receiving node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forward {
    pub conversation: ConversationId,
    pub command: Command,
}

/// The owner's answer to a [`Forward`], exactly as its conversation actor gave it.
pub type ForwardResult = Result<Reply, ConversationError>;

/// An item for `users`, all connected on the receiving node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deliver {
    pub users: Vec<UserId>,
    pub item: Outbound,
}

/// Directory changes on the sending node since its previous delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersDelta {
    pub connected: Vec<UserId>,
    pub disconnected: Vec<UserId>,
}

impl UsersDelta {
    pub fn len(&self) -> usize {
        self.connected.len() + self.disconnected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every user connected on the sending node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersSnapshot {
    pub users: Vec<UserId>,
}

pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Result<Bytes, WireError> {
    postcard::to_stdvec(value)
        .map(Bytes::from)
        .map_err(|source| WireError::Encode { kind, source })
}

pub fn decode<T: DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|source| WireError::Decode { kind, source })
}

/// Encodes a [`Deliver`] item once for several nodes: postcard writes a struct as its fields
/// one after the other, so a `Deliver` body is `users` followed by `item`, and the (possibly
/// large) item bytes are encoded once per fan-out instead of once per node.
#[derive(Debug)]
pub struct DeliverEncoder {
    item: Vec<u8>,
}

impl DeliverEncoder {
    pub fn new(item: &Outbound) -> Result<Self, WireError> {
        let item = postcard::to_stdvec(item).map_err(|source| WireError::Encode { kind: DELIVER, source })?;
        Ok(Self { item })
    }

    /// The body of a [`DELIVER`] message for `users`.
    pub fn body(&self, users: &[UserId]) -> Result<Bytes, WireError> {
        let mut body = Vec::with_capacity(self.item.len() + 5 * users.len() + 5);
        body = postcard::to_extend(users, body).map_err(|source| WireError::Encode { kind: DELIVER, source })?;
        body.extend_from_slice(&self.item);
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::time::Duration;

    use roost_engine::conversation::command::Accepted;
    use roost_engine::conversation::command::ConversationView;
    use roost_engine::conversation::command::GroupChange;
    use roost_engine::ids::ClientMsgId;
    use roost_engine::ids::Seq;
    use roost_engine::model::Attachment;
    use roost_engine::model::Conversation;
    use roost_engine::model::ConversationKind;
    use roost_engine::model::Member;
    use roost_engine::model::MemberRole;
    use roost_engine::model::MessageBody;
    use roost_engine::model::Receipt;

    use super::*;

    /// Encodes, decodes and compares (by `Debug`: the engine's commands have no `PartialEq`),
    /// then checks that every strict prefix of the body is refused without a panic.
    fn round_trip<T: Serialize + DeserializeOwned + Debug>(kind: Kind, value: &T) {
        let body = encode(kind, value).expect("encodes");
        let back: T = decode(kind, &body).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
        for len in 0..body.len() {
            assert!(
                decode::<T>(kind, &body[..len]).is_err(),
                "a body truncated to {len} of {} bytes must not decode: {value:?}",
                body.len()
            );
        }
    }

    fn client_msg_id() -> ClientMsgId {
        ClientMsgId::parse("c-1").expect("valid id")
    }

    fn body() -> MessageBody {
        MessageBody {
            text: "hello ✓".to_owned(),
            mentions: vec![UserId(2)],
            reply_to: Some(Seq(4)),
            attachments: vec![Attachment {
                name: "a.png".to_owned(),
                mime: "image/png".to_owned(),
                size: 300,
                url: "https://example.test/a.png".to_owned(),
            }],
        }
    }

    fn commands() -> Vec<Command> {
        let changes = [
            GroupChange::AddMembers {
                users: vec![UserId(3), UserId(4)],
            },
            GroupChange::RemoveMember { user: UserId(3) },
            GroupChange::Leave,
            GroupChange::SetRole {
                user: UserId(4),
                role: MemberRole::Admin,
            },
            GroupChange::Rename {
                name: "team".to_owned(),
            },
        ];
        let mut commands = vec![
            Command::Send {
                sender: UserId(1),
                client_msg_id: client_msg_id(),
                body: body(),
            },
            Command::Edit {
                sender: UserId(1),
                client_msg_id: client_msg_id(),
                target: Seq(9),
                body: body(),
            },
            Command::Recall {
                sender: UserId(1),
                client_msg_id: client_msg_id(),
                target: Seq(9),
            },
            Command::Receipt {
                user: UserId(1),
                delivered: Some(Seq(3)),
                read: None,
            },
            Command::Typing { user: UserId(1) },
            Command::Authorize { user: UserId(1) },
            Command::Describe { user: UserId(1) },
            Command::Announce { creator: UserId(1) },
        ];
        commands.extend(changes.into_iter().map(|change| Command::Change {
            actor: UserId(1),
            change,
        }));
        commands
    }

    fn results() -> Vec<ForwardResult> {
        let view = ConversationView {
            conversation: Conversation {
                id: ConversationId(7),
                kind: ConversationKind::Group,
                name: "team".to_owned(),
                created_by: UserId(1),
                created_at: 1_700_000_000_000,
            },
            members: vec![Member {
                user: UserId(1),
                role: MemberRole::Owner,
            }],
            receipts: vec![(
                UserId(1),
                Receipt {
                    delivered: Seq(3),
                    read: Seq(2),
                },
            )],
            last_seq: Seq(3),
        };
        let accepted = Accepted {
            conversation: ConversationId(7),
            seq: Seq(8),
            at: -5,
            duplicate: true,
        };
        vec![
            Ok(Reply::Accepted(accepted)),
            Ok(Reply::Receipt(Receipt {
                delivered: Seq(1),
                read: Seq(1),
            })),
            Ok(Reply::View(Box::new(view))),
            Ok(Reply::Done),
            Err(ConversationError::NotFound(ConversationId(7))),
            Err(ConversationError::NotMember(ConversationId(7))),
            Err(ConversationError::Forbidden("admins only".into())),
            Err(ConversationError::Invalid("bad".to_owned())),
            Err(ConversationError::BodyTooLarge { size: 10, limit: 5 }),
            Err(ConversationError::GroupFull { limit: 5 }),
            Err(ConversationError::TargetNotFound(Seq(2))),
            Err(ConversationError::EditWindowPassed(Duration::from_secs(900))),
            Err(ConversationError::NotOwner(ConversationId(7))),
            Err(ConversationError::Overloaded),
            Err(ConversationError::Unavailable("down".to_owned())),
            Err(ConversationError::Internal("bug".to_owned())),
        ]
    }

    fn items() -> Vec<Outbound> {
        vec![
            Outbound::Event {
                conversation: ConversationId(7),
                seq: Seq(300),
                bytes: Bytes::from_static(b"{\"e\":1}"),
            },
            Outbound::Ephemeral {
                bytes: Bytes::from_static(b"typing"),
            },
        ]
    }

    #[test]
    fn forward_round_trips_every_command() {
        for command in commands() {
            round_trip(
                FORWARD,
                &Forward {
                    conversation: ConversationId(u64::MAX),
                    command,
                },
            );
        }
    }

    #[test]
    fn forward_result_round_trips_every_reply_and_error() {
        for result in results() {
            round_trip(FORWARD, &result);
        }
    }

    #[test]
    fn deliver_round_trips_and_the_shared_encoder_matches() {
        for item in items() {
            let users = vec![UserId(1), UserId(300), UserId(u64::MAX)];
            round_trip(
                DELIVER,
                &Deliver {
                    users: users.clone(),
                    item: item.clone(),
                },
            );
            let shared = DeliverEncoder::new(&item)
                .expect("item encodes")
                .body(&users)
                .expect("body encodes");
            let direct = encode(DELIVER, &Deliver { users, item }).expect("encodes");
            assert_eq!(shared, direct);
            let empty = DeliverEncoder::new(&Outbound::Ephemeral { bytes: Bytes::new() }).expect("item encodes");
            let back: Deliver = decode(DELIVER, &empty.body(&[]).expect("body encodes")).expect("decodes");
            assert!(back.users.is_empty());
        }
    }

    #[test]
    fn directory_messages_round_trip() {
        let delta = UsersDelta {
            connected: vec![UserId(1), UserId(1 << 40)],
            disconnected: vec![UserId(2)],
        };
        round_trip(USERS, &delta);
        round_trip(USERS, &UsersDelta::default());
        round_trip(
            USERS_SNAPSHOT,
            &UsersSnapshot {
                users: (0..500).map(UserId).collect(),
            },
        );
        let back: UsersDelta = decode(USERS, &encode(USERS, &delta).expect("encodes")).expect("decodes");
        assert_eq!(back, delta);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [0xff_u8; 64];
        assert!(decode::<Forward>(FORWARD, &garbage).is_err());
        assert!(decode::<ForwardResult>(FORWARD, &garbage).is_err());
        assert!(decode::<Deliver>(DELIVER, &garbage).is_err());
        assert!(decode::<UsersDelta>(USERS, &garbage).is_err());
        assert!(decode::<UsersSnapshot>(USERS_SNAPSHOT, &[]).is_err());
        let error = decode::<Forward>(FORWARD, &[]).expect_err("empty body");
        assert!(error.to_string().contains("kind 32"), "{error}");
    }

    #[test]
    fn kinds_are_distinct_and_in_the_routing_range() {
        let kinds = [FORWARD, DELIVER, USERS, USERS_SNAPSHOT];
        for (i, kind) in kinds.iter().enumerate() {
            assert!(KINDS.contains(kind));
            assert!(!kinds[..i].contains(kind));
        }
    }
}
