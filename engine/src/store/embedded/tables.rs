//! The redb layout of the embedded store: table definitions, record encoding, error mapping, and
//! the reads shared by write transactions (which must see their own batch) and read transactions.
//!
//! Records (users, sessions, conversations, events) are postcard-encoded model types; postcard is
//! not self-describing, so any change to those types needs a new [`FORMAT_VERSION`] and a
//! migration. Indexes hold plain ids. A conversation's last seq is its last key in [`EVENTS`]; it
//! is not stored separately, so it can never disagree with the log.

use std::ops::Bound;

use redb::ReadableTable;
use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Event;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::Receipt;
use crate::store::Direction;
use crate::store::PageRequest;
use crate::store::StoreError;

/// Version of the on-disk layout, kept in [`COUNTERS`] under [`FORMAT_KEY`].
pub(super) const FORMAT_VERSION: u64 = 1;
pub(super) const FORMAT_KEY: &str = "format_version";
pub(super) const LAST_USER_KEY: &str = "last_user_id";
pub(super) const LAST_CONVERSATION_KEY: &str = "last_conversation_id";
/// The lsn of the last append-log frame applied to the database (see `wal`); 0 if none.
pub(super) const WAL_LSN_KEY: &str = "wal_lsn";

/// Named counters: the format version, the last assigned ids, the last applied log frame.
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// User id -> postcard `User`.
pub(super) const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// Lowercase username -> user id.
pub(super) const USERNAMES: TableDefinition<&str, u64> = TableDefinition::new("usernames");
/// Token hash -> postcard `SessionRecord`.
pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// (user id, token hash): the sessions of a user.
pub(super) const USER_SESSIONS: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("user_sessions");
/// (expires_at, token hash): sessions by expiry, so a purge reads only what it removes.
pub(super) const SESSION_EXPIRY: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("session_expiry");
/// Conversation id -> postcard `Conversation`.
pub(super) const CONVERSATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("conversations");
/// (lower user id, higher user id) -> id of their direct conversation.
pub(super) const DIRECT_PAIRS: TableDefinition<(u64, u64), u64> = TableDefinition::new("direct_pairs");
/// (conversation, user) -> role, see [`role_to_byte`].
pub(super) const MEMBERS: TableDefinition<(u64, u64), u8> = TableDefinition::new("members");
/// (user, conversation): the conversations of a user.
pub(super) const USER_CONVERSATIONS: TableDefinition<(u64, u64), ()> = TableDefinition::new("user_conversations");
/// (conversation, seq) -> postcard `Event`.
pub(super) const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");
/// (conversation, sender, client message id) -> seq.
pub(super) const CLIENT_MSGS: TableDefinition<(u64, u64, &str), u64> = TableDefinition::new("client_msgs");
/// (conversation, user) -> (delivered, read).
pub(super) const RECEIPTS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("receipts");

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        match error {
            redb::Error::Corrupted(why) => StoreError::Corrupt(why),
            error @ (redb::Error::UpgradeRequired(_)
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)) => StoreError::Corrupt(error.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

macro_rules! store_error_via_redb_error {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                redb::Error::from(error).into()
            }
        }
    )*};
}
store_error_via_redb_error!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

pub(super) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(record).map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("decoding {what}: {e}")))
}

pub(super) fn role_to_byte(role: MemberRole) -> u8 {
    match role {
        MemberRole::Member => 0,
        MemberRole::Admin => 1,
        MemberRole::Owner => 2,
    }
}

pub(super) fn role_from_byte(byte: u8) -> Result<MemberRole, StoreError> {
    match byte {
        0 => Ok(MemberRole::Member),
        1 => Ok(MemberRole::Admin),
        2 => Ok(MemberRole::Owner),
        other => Err(StoreError::Corrupt(format!("unknown member role {other}"))),
    }
}

/// Every `(id, second)` key of a table keyed by `(u64, u64)` whose first part is `id`.
fn pairs_of(id: u64) -> std::ops::RangeInclusive<(u64, u64)> {
    (id, 0)..=(id, u64::MAX)
}

// Reads usable both inside the writer's transaction and in read transactions.

pub(super) fn last_seq(
    events: &impl ReadableTable<(u64, u64), &'static [u8]>,
    id: ConversationId,
) -> Result<Seq, StoreError> {
    match events.range(pairs_of(id.0))?.next_back() {
        Some(entry) => Ok(Seq(entry?.0.value().1)),
        None => Ok(Seq::ZERO),
    }
}

pub(super) fn event(
    events: &impl ReadableTable<(u64, u64), &'static [u8]>,
    id: ConversationId,
    seq: Seq,
) -> Result<Option<Event>, StoreError> {
    match events.get((id.0, seq.0))? {
        Some(bytes) => decode(bytes.value(), "an event").map(Some),
        None => Ok(None),
    }
}

pub(super) fn page(
    events: &impl ReadableTable<(u64, u64), &'static [u8]>,
    id: ConversationId,
    request: PageRequest,
) -> Result<Vec<Event>, StoreError> {
    let c = id.0;
    let from = request.from.0;
    let (lower, upper) = match request.direction {
        Direction::Forward => (Bound::Excluded((c, from)), Bound::Included((c, u64::MAX))),
        Direction::Backward => (Bound::Included((c, 0)), Bound::Excluded((c, from))),
    };
    let range = events.range::<(u64, u64)>((lower, upper))?;
    let decode_entry = |entry: Result<_, redb::StorageError>| -> Result<Event, StoreError> {
        let (_, bytes): (_, redb::AccessGuard<'_, &[u8]>) = entry?;
        decode(bytes.value(), "an event")
    };
    match request.direction {
        Direction::Forward => range.take(request.limit).map(decode_entry).collect(),
        Direction::Backward => range.rev().take(request.limit).map(decode_entry).collect(),
    }
}

pub(super) fn find_client_msg(
    client_msgs: &impl ReadableTable<(u64, u64, &'static str), u64>,
    id: ConversationId,
    sender: UserId,
    client_msg_id: &ClientMsgId,
) -> Result<Option<Seq>, StoreError> {
    Ok(client_msgs
        .get((id.0, sender.0, client_msg_id.as_str()))?
        .map(|seq| Seq(seq.value())))
}

pub(super) fn members(
    members: &impl ReadableTable<(u64, u64), u8>,
    id: ConversationId,
) -> Result<Vec<Member>, StoreError> {
    let mut list = Vec::new();
    for entry in members.range(pairs_of(id.0))? {
        let (key, role) = entry?;
        list.push(Member {
            user: UserId(key.value().1),
            role: role_from_byte(role.value())?,
        });
    }
    Ok(list)
}

pub(super) fn conversations_of(
    user_conversations: &impl ReadableTable<(u64, u64), ()>,
    user: UserId,
) -> Result<Vec<ConversationId>, StoreError> {
    let mut list = Vec::new();
    for entry in user_conversations.range(pairs_of(user.0))? {
        list.push(ConversationId(entry?.0.value().1));
    }
    Ok(list)
}

pub(super) fn receipts(
    receipts: &impl ReadableTable<(u64, u64), (u64, u64)>,
    id: ConversationId,
) -> Result<Vec<(UserId, Receipt)>, StoreError> {
    let mut list = Vec::new();
    for entry in receipts.range(pairs_of(id.0))? {
        let (key, value) = entry?;
        let (delivered, read) = value.value();
        list.push((
            UserId(key.value().1),
            Receipt {
                delivered: Seq(delivered),
                read: Seq(read),
            },
        ));
    }
    Ok(list)
}
