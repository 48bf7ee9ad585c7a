//! Every mutation of the embedded store, applied inside the writer's (batch) transaction.
//!
//! Each mutation first checks everything that can make it fail for a logical reason (append
//! conflict, username taken, missing target) and only then writes, so a logical failure leaves the
//! transaction untouched and fails only its own job. The outer `Result` of a [`Step`] is a
//! storage failure, which aborts the whole batch.
//!
//! Appends and receipts also put a record of themselves in the batch's log buffer (immediate
//! durability), which the writer writes to the append log before committing; every other mutation
//! leaves a mark that the batch must commit durably. Appends check the conversation's last seq
//! against [`Heads`], the writer's cache of it, instead of reading the last key of `events`.

use std::collections::HashMap;

use redb::ReadableTable;
use redb::Table;
use redb::WriteTransaction;

use super::tables;
use super::tables::decode;
use super::tables::encode;
use super::wal::LogBuffer;
use super::wal::LogRecord;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::ConversationKind;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MessageBody;
use crate::model::NewConversation;
use crate::model::NewUser;
use crate::model::Receipt;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;
use crate::store::memory::direct_pair;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::Effect;
use crate::store::StoreError;

/// Outcome of one mutation: `Err` aborts the batch, `Ok(Err(_))` fails only this job.
pub(super) type Step<T, E = StoreError> = Result<Result<T, E>, StoreError>;

/// Every table, opened once per batch transaction, with the batch's view of the heads cache and
/// the log records of its writes.
pub(super) struct WriteTables<'txn> {
    heads: &'txn mut Heads,
    /// Where logged writes put their record; `None` when nothing is logged (relaxed durability,
    /// replay).
    log: Option<&'txn mut LogBuffer>,
    /// The current job put its record in the log, or has nothing to log.
    job_logged: bool,
    /// A job of the batch wrote something that is not logged: the batch must commit durably.
    needs_durable: bool,
    counters: Table<'txn, &'static str, u64>,
    users: Table<'txn, u64, &'static [u8]>,
    usernames: Table<'txn, &'static str, u64>,
    sessions: Table<'txn, &'static [u8], &'static [u8]>,
    user_sessions: Table<'txn, (u64, &'static [u8]), ()>,
    session_expiry: Table<'txn, (i64, &'static [u8]), ()>,
    conversations: Table<'txn, u64, &'static [u8]>,
    direct_pairs: Table<'txn, (u64, u64), u64>,
    members: Table<'txn, (u64, u64), u8>,
    user_conversations: Table<'txn, (u64, u64), ()>,
    events: Table<'txn, (u64, u64), &'static [u8]>,
    client_msgs: Table<'txn, (u64, u64, &'static str), u64>,
    receipts: Table<'txn, (u64, u64), (u64, u64)>,
}

impl<'txn> WriteTables<'txn> {
    /// Open (creating if needed) every table of the layout.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        heads: &'txn mut Heads,
        log: Option<&'txn mut LogBuffer>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            heads,
            log,
            job_logged: false,
            needs_durable: false,
            counters: txn.open_table(tables::COUNTERS)?,
            users: txn.open_table(tables::USERS)?,
            usernames: txn.open_table(tables::USERNAMES)?,
            sessions: txn.open_table(tables::SESSIONS)?,
            user_sessions: txn.open_table(tables::USER_SESSIONS)?,
            session_expiry: txn.open_table(tables::SESSION_EXPIRY)?,
            conversations: txn.open_table(tables::CONVERSATIONS)?,
            direct_pairs: txn.open_table(tables::DIRECT_PAIRS)?,
            members: txn.open_table(tables::MEMBERS)?,
            user_conversations: txn.open_table(tables::USER_CONVERSATIONS)?,
            events: txn.open_table(tables::EVENTS)?,
            client_msgs: txn.open_table(tables::CLIENT_MSGS)?,
            receipts: txn.open_table(tables::RECEIPTS)?,
        })
    }

    /// Call before each job of the batch.
    pub(super) fn start_job(&mut self) {
        self.job_logged = false;
    }

    /// Call after each job of the batch: a job that logged nothing needs a durable commit.
    pub(super) fn finish_job(&mut self) {
        self.needs_durable |= !self.job_logged;
    }

    /// Whether some job of the batch changed state that only a durable commit keeps.
    pub(super) fn needs_durable(&self) -> bool {
        self.needs_durable
    }

    /// Whether the batch's log holds any record.
    pub(super) fn has_log_records(&self) -> bool {
        self.log.as_deref().is_some_and(|log| !log.is_empty())
    }

    /// Put the record of the current job in the batch's log (if the batch is logged).
    fn logged(&mut self, record: impl FnOnce() -> LogRecord) -> Result<(), StoreError> {
        if let Some(log) = self.log.as_deref_mut() {
            log.push(&record())?;
        }
        self.job_logged = true;
        Ok(())
    }

    /// Remember the log position the batch brings the database to (see `wal`).
    pub(super) fn set_log_position(&mut self, lsn: u64) -> Result<(), StoreError> {
        self.counters.insert(tables::WAL_LSN_KEY, lsn)?;
        Ok(())
    }

    /// Re-apply a logged write while replaying the log; `Ok(false)` if it was refused, which a
    /// deterministic replay from the state it was logged in never does.
    pub(super) fn replay(&mut self, record: LogRecord) -> Result<bool, StoreError> {
        match record {
            LogRecord::Append { event, effects } => {
                let effects = effects.into_iter().map(Effect::from).collect();
                Ok(self.append(AppendOp { event, effects })?.is_ok())
            }
            LogRecord::Receipt {
                conversation,
                user,
                receipt,
            } => Ok(self.save_receipt(conversation, user, receipt)?.is_ok()),
        }
    }

    /// Record the layout version in a new database, or refuse a database of another version.
    pub(super) fn check_format(&mut self) -> Result<(), StoreError> {
        let found = self.counters.get(tables::FORMAT_KEY)?.map(|v| v.value());
        match found {
            None => {
                self.counters.insert(tables::FORMAT_KEY, tables::FORMAT_VERSION)?;
                Ok(())
            }
            Some(tables::FORMAT_VERSION) => Ok(()),
            Some(other) => Err(StoreError::Corrupt(format!(
                "the database has format version {other}, this build reads version {}",
                tables::FORMAT_VERSION
            ))),
        }
    }

    fn next_id(&mut self, key: &str) -> Result<u64, StoreError> {
        let next = self.counters.get(key)?.map_or(0, |v| v.value()) + 1;
        self.counters.insert(key, next)?;
        Ok(next)
    }

    pub(super) fn create_user(&mut self, new: NewUser) -> Step<User> {
        let username = new.username.to_lowercase();
        if self.usernames.get(username.as_str())?.is_some() {
            return Ok(Err(StoreError::AlreadyExists { what: "username" }));
        }
        let user = User {
            id: UserId(self.next_id(tables::LAST_USER_KEY)?),
            username,
            display_name: new.display_name,
            password_hash: new.password_hash,
            role: new.role,
            disabled: false,
            created_at: new.created_at,
            last_seen: None,
        };
        self.usernames.insert(user.username.as_str(), user.id.0)?;
        self.users.insert(user.id.0, encode(&user)?.as_slice())?;
        Ok(Ok(user))
    }

    pub(super) fn update_user(&mut self, user: User) -> Step<()> {
        let Some(bytes) = self.users.get(user.id.0)? else {
            return Ok(Err(StoreError::NotFound { what: "user" }));
        };
        let stored: User = decode(bytes.value(), "a user")?;
        drop(bytes);
        // The id, username and creation time are not mutable.
        let updated = User {
            id: stored.id,
            username: stored.username,
            created_at: stored.created_at,
            ..user
        };
        self.users.insert(updated.id.0, encode(&updated)?.as_slice())?;
        Ok(Ok(()))
    }

    pub(super) fn set_last_seen(&mut self, user: UserId, at: UnixMillis) -> Step<()> {
        let Some(bytes) = self.users.get(user.0)? else {
            return Ok(Err(StoreError::NotFound { what: "user" }));
        };
        let mut stored: User = decode(bytes.value(), "a user")?;
        drop(bytes);
        stored.last_seen = Some(at);
        self.users.insert(user.0, encode(&stored)?.as_slice())?;
        Ok(Ok(()))
    }

    pub(super) fn insert_session(&mut self, session: SessionRecord) -> Step<()> {
        // A session with the same token hash is replaced, with its index entries.
        self.delete_session(&session.token_hash)??;
        let hash = &session.token_hash.0[..];
        self.sessions.insert(hash, encode(&session)?.as_slice())?;
        self.user_sessions.insert((session.user.0, hash), ())?;
        self.session_expiry.insert((session.expires_at, hash), ())?;
        Ok(Ok(()))
    }

    pub(super) fn delete_session(&mut self, token_hash: &TokenHash) -> Step<bool> {
        let hash = &token_hash.0[..];
        let Some(bytes) = self.sessions.remove(hash)? else {
            return Ok(Ok(false));
        };
        let session: SessionRecord = decode(bytes.value(), "a session")?;
        drop(bytes);
        self.user_sessions.remove((session.user.0, hash))?;
        self.session_expiry.remove((session.expires_at, hash))?;
        Ok(Ok(true))
    }

    pub(super) fn delete_user_sessions(&mut self, user: UserId) -> Step<usize> {
        let lower = (user.0, &[][..]);
        let upper = match user.0.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded((next, &[][..])),
            None => std::ops::Bound::Unbounded,
        };
        let mut hashes = Vec::new();
        for entry in self
            .user_sessions
            .range::<(u64, &[u8])>((std::ops::Bound::Included(lower), upper))?
        {
            hashes.push(token_hash(entry?.0.value().1)?);
        }
        for hash in &hashes {
            self.delete_session(hash)??;
        }
        Ok(Ok(hashes.len()))
    }

    pub(super) fn purge_expired_sessions(&mut self, now: UnixMillis) -> Step<usize> {
        let mut hashes = Vec::new();
        for entry in self.session_expiry.range::<(i64, &[u8])>(..(now, &[][..]))? {
            hashes.push(token_hash(entry?.0.value().1)?);
        }
        for hash in &hashes {
            self.delete_session(hash)??;
        }
        Ok(Ok(hashes.len()))
    }

    pub(super) fn create_conversation(&mut self, new: NewConversation) -> Step<Conversation> {
        let pair = (new.kind == ConversationKind::Direct).then(|| direct_pair(&new));
        if let Some((low, high)) = pair {
            if let Some(existing) = self.direct_pairs.get((low.0, high.0))? {
                let existing = existing.value();
                let Some(bytes) = self.conversations.get(existing)? else {
                    return Err(StoreError::Corrupt(format!("direct pair points at missing {existing}")));
                };
                return Ok(Ok(decode(bytes.value(), "a conversation")?));
            }
        }
        let conversation = Conversation {
            id: ConversationId(self.next_id(tables::LAST_CONVERSATION_KEY)?),
            kind: new.kind,
            name: new.name,
            created_by: new.created_by,
            created_at: new.created_at,
        };
        if let Some((low, high)) = pair {
            self.direct_pairs.insert((low.0, high.0), conversation.id.0)?;
        }
        for member in new.members {
            self.put_member(conversation.id, member)?;
        }
        self.conversations
            .insert(conversation.id.0, encode(&conversation)?.as_slice())?;
        Ok(Ok(conversation))
    }

    pub(super) fn save_receipt(&mut self, id: ConversationId, user: UserId, receipt: Receipt) -> Step<()> {
        self.logged(|| LogRecord::Receipt {
            conversation: id,
            user,
            receipt,
        })?;
        self.receipts
            .insert((id.0, user.0), (receipt.delivered.0, receipt.read.0))?;
        Ok(Ok(()))
    }

    fn put_member(&mut self, id: ConversationId, member: Member) -> Result<(), StoreError> {
        self.members
            .insert((id.0, member.user.0), tables::role_to_byte(member.role))?;
        self.user_conversations.insert((member.user.0, id.0), ())?;
        Ok(())
    }

    fn remove_member(&mut self, id: ConversationId, user: UserId) -> Result<(), StoreError> {
        self.members.remove((id.0, user.0))?;
        self.user_conversations.remove((user.0, id.0))?;
        self.receipts.remove((id.0, user.0))?;
        Ok(())
    }

    pub(super) fn append(&mut self, op: AppendOp) -> Step<(), AppendError> {
        if let Err(refused) = self.check_append(&op)? {
            // A refused append writes nothing, so there is nothing to log either.
            self.job_logged = true;
            return Ok(Err(refused));
        }
        self.logged(|| LogRecord::append(&op))?;
        let AppendOp { event, effects } = op;
        let id = event.conversation;
        for effect in effects {
            match effect {
                Effect::PutMember(member) => self.put_member(id, member)?,
                Effect::RemoveMember(user) => self.remove_member(id, user)?,
                Effect::Rename(name) => self.rename(id, name)?,
                Effect::ReviseMessage { target, body } => {
                    self.update_message(id, target, |kind| {
                        if let EventKind::Message {
                            body: old, edited_by, ..
                        } = kind
                        {
                            *old = body;
                            *edited_by = Some(event.seq);
                        }
                    })?;
                }
                Effect::RecallMessage { target } => {
                    self.update_message(id, target, |kind| {
                        if let EventKind::Message { body, recalled_by, .. } = kind {
                            *body = MessageBody::default();
                            *recalled_by = Some(event.seq);
                        }
                    })?;
                }
            }
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            self.client_msgs
                .insert((id.0, event.sender.0, client_msg_id.as_str()), event.seq.0)?;
        }
        self.events.insert((id.0, event.seq.0), encode(&event)?.as_slice())?;
        self.heads.set(id, event.seq);
        Ok(Ok(()))
    }

    /// The last seq of a conversation: from the heads cache, else the last key of `events`.
    fn last_seq(&mut self, id: ConversationId) -> Result<Seq, StoreError> {
        if let Some(seq) = self.heads.get(id) {
            return Ok(seq);
        }
        let seq = tables::last_seq(&self.events, id)?;
        self.heads.remember(id, seq);
        Ok(seq)
    }

    /// Everything that can refuse `op`, against the transaction's state (earlier jobs of the batch
    /// included).
    fn check_append(&mut self, op: &AppendOp) -> Step<(), AppendError> {
        let event = &op.event;
        let found = self.last_seq(event.conversation)?;
        if event.seq.0 == 0 || found.0 != event.seq.0 - 1 {
            let expected = Seq(event.seq.0.wrapping_sub(1));
            return Ok(Err(AppendError::Conflict { expected, found }));
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            let key = (event.conversation.0, event.sender.0, client_msg_id.as_str());
            if self.client_msgs.get(key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists {
                    what: "client message id",
                }
                .into()));
            }
        }
        for effect in &op.effects {
            let missing = match effect {
                Effect::Rename(_) => self
                    .conversations
                    .get(event.conversation.0)?
                    .is_none()
                    .then_some("conversation"),
                Effect::ReviseMessage { target, .. } | Effect::RecallMessage { target } => {
                    let target = tables::event(&self.events, event.conversation, *target)?;
                    (!target.is_some_and(|t| t.kind.is_message())).then_some("message")
                }
                Effect::PutMember(_) | Effect::RemoveMember(_) => None,
            };
            if let Some(what) = missing {
                return Ok(Err(StoreError::NotFound { what }.into()));
            }
        }
        Ok(Ok(()))
    }

    fn rename(&mut self, id: ConversationId, name: String) -> Result<(), StoreError> {
        let Some(bytes) = self.conversations.get(id.0)? else {
            return Err(StoreError::Corrupt(format!(
                "conversation {id} vanished during an append"
            )));
        };
        let mut header: Conversation = decode(bytes.value(), "a conversation")?;
        drop(bytes);
        header.name = name;
        self.conversations.insert(id.0, encode(&header)?.as_slice())?;
        Ok(())
    }

    fn update_message(
        &mut self,
        id: ConversationId,
        target: Seq,
        change: impl FnOnce(&mut EventKind),
    ) -> Result<(), StoreError> {
        let Some(mut event): Option<Event> = tables::event(&self.events, id, target)? else {
            return Err(StoreError::Corrupt(format!(
                "message {target} of {id} vanished during an append"
            )));
        };
        change(&mut event.kind);
        self.events.insert((id.0, target.0), encode(&event)?.as_slice())?;
        Ok(())
    }
}

/// The writer's cache of each conversation's last seq, so an append does not read it from
/// `events`. `committed` holds values of committed state; `batch` the changes of the batch being
/// applied, kept only if it commits.
#[derive(Debug, Default)]
pub(super) struct Heads {
    committed: HashMap<u64, u64>,
    batch: HashMap<u64, u64>,
}

impl Heads {
    /// Most conversations cached before the cache is emptied (about 40 MiB).
    const MAX_CACHED: usize = 1_000_000;

    fn get(&self, id: ConversationId) -> Option<Seq> {
        self.batch
            .get(&id.0)
            .or_else(|| self.committed.get(&id.0))
            .map(|s| Seq(*s))
    }

    /// A value read from the table for a conversation the batch has not changed: committed state.
    fn remember(&mut self, id: ConversationId, seq: Seq) {
        if self.committed.len() >= Self::MAX_CACHED {
            self.committed.clear();
        }
        self.committed.insert(id.0, seq.0);
    }

    fn set(&mut self, id: ConversationId, seq: Seq) {
        self.batch.insert(id.0, seq.0);
    }

    /// The batch committed: its heads are now committed state.
    pub(super) fn commit(&mut self) {
        if self.committed.len() + self.batch.len() > Self::MAX_CACHED {
            self.committed.clear();
        }
        self.committed.extend(self.batch.drain());
    }

    /// The batch was abandoned: forget its heads.
    pub(super) fn rollback(&mut self) {
        self.batch.clear();
    }
}

fn token_hash(bytes: &[u8]) -> Result<TokenHash, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("token hash of {} bytes", bytes.len())))?;
    Ok(TokenHash(array))
}
