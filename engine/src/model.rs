//! Domain records: users, sessions, conversations, members, events and receipts.
//!
//! These are plain data. The conversation actor decides what may change; the stores persist these
//! records (and may derive `Serialize` for their own on-disk encoding). The client wire format is
//! not these types: `roost-api` converts them into its own versioned frames.

use serde::Deserialize;
use serde::Serialize;

use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::TokenHash;
use crate::ids::UserId;

/// Milliseconds since the Unix epoch, server clock. Informational only: never used for ordering.
pub type UnixMillis = i64;

/// What a user may do across the whole server (not inside one conversation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerRole {
    User,
    Admin,
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Unique, stored lowercase; 3-32 of `[a-z0-9._-]`.
    pub username: String,
    pub display_name: String,
    /// PHC string (argon2id). The engine never interprets it.
    pub password_hash: String,
    pub role: ServerRole,
    pub disabled: bool,
    pub created_at: UnixMillis,
    /// Last time the user's last connection closed; `None` if never seen.
    pub last_seen: Option<UnixMillis>,
}

/// Fields of a user that the caller chooses; the store assigns the id.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: ServerRole,
    pub created_at: UnixMillis,
}

/// A login session of one device. Looked up by the hash of its opaque token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub token_hash: TokenHash,
    pub user: UserId,
    /// Free-form device label given at login ("web", "iphone-alice").
    pub device: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationKind {
    /// Exactly two members, unique per pair, no roles that matter.
    Direct,
    Group,
}

/// Role of a member inside one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberRole {
    Member,
    Admin,
    Owner,
}

/// A conversation's durable header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    /// Group name; empty for direct conversations.
    pub name: String,
    pub created_by: UserId,
    pub created_at: UnixMillis,
}

#[derive(Clone, Debug)]
pub struct NewConversation {
    pub kind: ConversationKind,
    pub name: String,
    pub created_by: UserId,
    pub created_at: UnixMillis,
    /// Initial members with their roles; must include the creator.
    pub members: Vec<Member>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub role: MemberRole,
}

/// Metadata about a file the client uploaded elsewhere; Roost stores the description only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub url: String,
}

/// The content of a message or of an edit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    pub text: String,
    pub mentions: Vec<UserId>,
    pub reply_to: Option<Seq>,
    pub attachments: Vec<Attachment>,
}

impl MessageBody {
    /// Approximate encoded size, used for the body size limit.
    pub fn size_bytes(&self) -> usize {
        let attachments: usize = self
            .attachments
            .iter()
            .map(|a| a.name.len() + a.mime.len() + a.url.len() + 8)
            .sum();
        self.text.len() + self.mentions.len() * 8 + 8 + attachments
    }
}

/// One entry of a conversation's timeline. Everything that clients sync is an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub conversation: ConversationId,
    pub seq: Seq,
    pub sender: UserId,
    pub at: UnixMillis,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Message {
        client_msg_id: ClientMsgId,
        body: MessageBody,
        /// Set when a later `Edit` replaced the body (seq of that edit).
        edited_by: Option<Seq>,
        /// Set when a later `Recall` removed the message (seq of that recall); body is emptied.
        recalled_by: Option<Seq>,
    },
    Edit {
        client_msg_id: ClientMsgId,
        target: Seq,
        body: MessageBody,
    },
    Recall {
        client_msg_id: ClientMsgId,
        target: Seq,
    },
    MembersAdded {
        members: Vec<Member>,
    },
    MemberRemoved {
        user: UserId,
    },
    MemberLeft {
        user: UserId,
    },
    RoleChanged {
        user: UserId,
        role: MemberRole,
    },
    Renamed {
        name: String,
    },
}

impl EventKind {
    /// The idempotency key of a client-originated event, if it has one.
    pub fn client_msg_id(&self) -> Option<&ClientMsgId> {
        match self {
            EventKind::Message { client_msg_id, .. }
            | EventKind::Edit { client_msg_id, .. }
            | EventKind::Recall { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        }
    }

    pub fn is_message(&self) -> bool {
        matches!(self, EventKind::Message { .. })
    }
}

/// A member's cumulative cursors in one conversation: read <= delivered <= last seq.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub delivered: Seq,
    pub read: Seq,
}

impl Receipt {
    /// Merge a report into the cursor, keeping both monotonic and `read <= delivered <= top`.
    pub fn advance(self, delivered: Option<Seq>, read: Option<Seq>, top: Seq) -> Receipt {
        let read = read.unwrap_or(self.read).min(top).max(self.read);
        let delivered = delivered
            .unwrap_or(self.delivered)
            .min(top)
            .max(self.delivered)
            .max(read);
        Receipt { delivered, read }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_are_monotonic_and_bounded() {
        let r = Receipt::default().advance(Some(Seq(5)), Some(Seq(3)), Seq(10));
        assert_eq!(
            r,
            Receipt {
                delivered: Seq(5),
                read: Seq(3)
            }
        );
        // Going backwards changes nothing.
        let r2 = r.advance(Some(Seq(2)), Some(Seq(1)), Seq(10));
        assert_eq!(r2, r);
        // Beyond the top is clamped; read lifts delivered.
        let r3 = r.advance(None, Some(Seq(50)), Seq(10));
        assert_eq!(
            r3,
            Receipt {
                delivered: Seq(10),
                read: Seq(10)
            }
        );
    }
}
