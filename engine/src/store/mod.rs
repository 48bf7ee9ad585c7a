//! The store traits: the only way the engine reaches durable state.
//!
//! Three traits split by what they hold: [`AccountStore`] (users and login sessions),
//! [`ConversationStore`] (headers, members, receipts) and [`MessageStore`] (the per-conversation
//! event log with its idempotency index). [`Store`] is all three, and is what the node holds as
//! `Arc<dyn Store>`. Implementations: [`memory::MemoryStore`] (tests), [`embedded::EmbeddedStore`]
//! (single node, redb), `scylla::ScyllaStore` (ScyllaDB or Cassandra, feature `scylla`). Every
//! implementation must pass [`testing::run_suite`].
//!
//! Contract of [`MessageStore::append`], which the delivery contract rests on:
//! - the returned future resolves `Ok` only once the event (and its effects) is durable;
//! - an append of seq `s` applies only if the conversation's last stored seq is `s - 1`
//!   (otherwise [`AppendError::Conflict`]); appends submitted for one conversation are applied in
//!   submission order, so a failed append makes every later one for that conversation fail too,
//!   and the log never has a gap;
//! - the event, its dedup entry and its effects on conversation metadata are applied atomically.

pub mod embedded;
pub mod memory;
#[cfg(feature = "scylla")]
pub mod scylla;
pub mod testing;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::Event;
use crate::model::Member;
use crate::model::MessageBody;
use crate::model::NewConversation;
use crate::model::NewUser;
use crate::model::Receipt;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;

/// A failure of the store itself. `Unavailable` is worth retrying; `Corrupt` is not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{what} already exists")]
    AlreadyExists { what: &'static str },
    #[error("{what} not found")]
    NotFound { what: &'static str },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The conversation's last stored seq was not `seq - 1`: another writer, or an earlier
    /// append of this conversation failed. The caller must reload before assigning more seqs.
    #[error("append conflict: expected last seq {expected}, found {found}")]
    Conflict { expected: Seq, found: Seq },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change to conversation metadata that is applied atomically with the event that records it.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Add or update a member.
    PutMember(Member),
    RemoveMember(UserId),
    Rename(String),
    /// Replace the body of message `target` and mark it edited by the appended event.
    ReviseMessage {
        target: Seq,
        body: MessageBody,
    },
    /// Empty message `target` and mark it recalled by the appended event.
    RecallMessage {
        target: Seq,
    },
}

/// One event to append, with what must change with it.
#[derive(Clone, Debug)]
pub struct AppendOp {
    pub event: Event,
    pub effects: Vec<Effect>,
}

/// A pending durable append: already submitted to the store when this value exists.
pub type AppendTicket = Pin<Box<dyn Future<Output = Result<(), AppendError>> + Send>>;

/// Which way a history page runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, starting after the cursor.
    Forward,
    /// Newest first, starting before the cursor.
    Backward,
}

/// Which events to read: `Forward` returns seqs `> from`, `Backward` returns seqs `< from`
/// (where `from = Seq(u64::MAX)` means "from the newest").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub from: Seq,
    pub direction: Direction,
    pub limit: usize,
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Create a user; `AlreadyExists` if the (lowercase) username is taken.
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Overwrite a user's mutable fields (display name, password hash, role, disabled,
    /// last seen). `NotFound` if the id does not exist.
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
    /// Record when the user was last seen, touching no other field (so it cannot race with an
    /// administrator's change such as disabling the account). `NotFound` if the id does not exist.
    async fn set_last_seen(&self, user: UserId, at: UnixMillis) -> Result<(), StoreError>;
    /// Users ordered by id, starting after `after`.
    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<User>, StoreError>;

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn session(&self, token_hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError>;
    /// Returns whether a session was removed.
    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError>;
    /// Remove every session of a user; returns how many were removed.
    async fn delete_user_sessions(&self, user: UserId) -> Result<usize, StoreError>;
    /// Remove sessions that expired before `now`; returns how many.
    async fn purge_expired_sessions(&self, now: UnixMillis) -> Result<usize, StoreError>;
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Create a conversation with its initial members. For `Direct`, the pair of members is
    /// unique: creating it again returns the existing conversation.
    async fn create_conversation(&self, new: NewConversation) -> Result<Conversation, StoreError>;
    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError>;
    /// Members ordered by user id.
    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError>;
    /// Conversations the user is a member of, ordered by id.
    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationId>, StoreError>;
    /// Every member's receipt cursors.
    async fn receipts(&self, id: ConversationId) -> Result<Vec<(UserId, Receipt)>, StoreError>;
    /// Store a member's cursors. The caller has already merged them monotonically.
    async fn save_receipt(&self, id: ConversationId, user: UserId, receipt: Receipt) -> Result<(), StoreError>;
}

#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Submit an append; see the module docs for the contract. Submission happens in this call,
    /// before the returned future is first polled.
    fn append(&self, op: AppendOp) -> AppendTicket;
    /// The highest stored seq of a conversation, `Seq::ZERO` if none.
    async fn last_seq(&self, id: ConversationId) -> Result<Seq, StoreError>;
    /// The seq a client message id of this sender got in this conversation, if any.
    async fn find_client_msg(
        &self,
        id: ConversationId,
        sender: UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Seq>, StoreError>;
    async fn event(&self, id: ConversationId, seq: Seq) -> Result<Option<Event>, StoreError>;
    /// A page of events; see [`PageRequest`].
    async fn page(&self, id: ConversationId, request: PageRequest) -> Result<Vec<Event>, StoreError>;
    /// Make every acknowledged write durable (used on shutdown in relaxed durability modes).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Everything a node needs from its storage backend.
pub trait Store: AccountStore + ConversationStore + MessageStore {}

impl<T: AccountStore + ConversationStore + MessageStore> Store for T {}
