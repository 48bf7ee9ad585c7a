//! `MemoryStore`: every store trait held in process memory, for unit and actor tests.
//!
//! It is a test double, so it keeps everything behind one `std::sync::Mutex<Inner>`: each call
//! takes the lock, checks its preconditions, then applies all of its changes before releasing it,
//! which gives the same atomicity and ordering as the durable store without any of its machinery.
//! The lock is never held across an `.await`. Appends are applied inside [`MessageStore::append`]
//! itself, so submission order is application order, and the returned ticket is already resolved.
//!
//! [`MemoryStore::set_unavailable`] makes every call fail with [`StoreError::Unavailable`], so tests
//! can exercise the "store down" paths of their callers. Nothing here is durable.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use async_trait::async_trait;

use super::AccountStore;
use super::AppendError;
use super::AppendOp;
use super::AppendTicket;
use super::ConversationStore;
use super::Direction;
use super::Effect;
use super::MessageStore;
use super::PageRequest;
use super::StoreError;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::ConversationKind;
use crate::model::Event;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::model::NewConversation;
use crate::model::NewUser;
use crate::model::Receipt;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;

/// An in-memory [`Store`](super::Store) for tests. See the module docs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    unavailable: AtomicBool,
}

#[derive(Default)]
struct Inner {
    last_user: u64,
    last_conversation: u64,
    users: BTreeMap<UserId, User>,
    usernames: HashMap<String, UserId>,
    sessions: HashMap<TokenHash, SessionRecord>,
    conversations: BTreeMap<ConversationId, Conversation>,
    direct_pairs: HashMap<(UserId, UserId), ConversationId>,
    members: BTreeMap<(ConversationId, UserId), MemberRole>,
    user_conversations: BTreeSet<(UserId, ConversationId)>,
    /// Per conversation, the event of seq `n` at index `n - 1` (the log is dense).
    events: HashMap<ConversationId, Vec<Event>>,
    client_msgs: HashMap<(ConversationId, UserId, ClientMsgId), Seq>,
    receipts: BTreeMap<(ConversationId, UserId), Receipt>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call (appends included) fails with [`StoreError::Unavailable`] and
    /// changes nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store switched off by the test".to_owned(),
            ));
        }
        // A panic while the lock was held can only come from a test assertion elsewhere; the data
        // is still consistent because every call validates before it mutates.
        Ok(self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Inner {
    fn last_seq(&self, id: ConversationId) -> Seq {
        Seq(self.events.get(&id).map_or(0, |log| log.len() as u64))
    }

    fn event(&self, id: ConversationId, seq: Seq) -> Option<&Event> {
        self.events.get(&id)?.get(log_index(seq)?)
    }

    fn event_mut(&mut self, id: ConversationId, seq: Seq) -> Option<&mut Event> {
        self.events.get_mut(&id)?.get_mut(log_index(seq)?)
    }

    fn put_member(&mut self, id: ConversationId, member: Member) {
        self.members.insert((id, member.user), member.role);
        self.user_conversations.insert((member.user, id));
    }

    fn remove_member(&mut self, id: ConversationId, user: UserId) {
        self.members.remove(&(id, user));
        self.user_conversations.remove(&(user, id));
        self.receipts.remove(&(id, user));
    }

    /// Everything that can make `op` fail, checked before anything changes.
    fn check_append(&self, op: &AppendOp) -> Result<(), AppendError> {
        let event = &op.event;
        let found = self.last_seq(event.conversation);
        if event.seq.0 == 0 || found.0 != event.seq.0 - 1 {
            return Err(AppendError::Conflict {
                expected: Seq(event.seq.0.wrapping_sub(1)),
                found,
            });
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            let key = (event.conversation, event.sender, client_msg_id.clone());
            if self.client_msgs.contains_key(&key) {
                return Err(StoreError::AlreadyExists {
                    what: "client message id",
                }
                .into());
            }
        }
        for effect in &op.effects {
            match effect {
                Effect::Rename(_) if !self.conversations.contains_key(&event.conversation) => {
                    return Err(StoreError::NotFound { what: "conversation" }.into());
                }
                Effect::ReviseMessage { target, .. } | Effect::RecallMessage { target } => {
                    let target = self.event(event.conversation, *target);
                    if !target.is_some_and(|t| t.kind.is_message()) {
                        return Err(StoreError::NotFound { what: "message" }.into());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_append(&mut self, op: AppendOp) {
        let AppendOp { event, effects } = op;
        let id = event.conversation;
        for effect in effects {
            match effect {
                Effect::PutMember(member) => self.put_member(id, member),
                Effect::RemoveMember(user) => self.remove_member(id, user),
                Effect::Rename(name) => {
                    if let Some(header) = self.conversations.get_mut(&id) {
                        header.name = name;
                    }
                }
                Effect::ReviseMessage { target, body: new_body } => {
                    if let Some(EventKind::Message { body, edited_by, .. }) =
                        self.event_mut(id, target).map(|e| &mut e.kind)
                    {
                        *body = new_body;
                        *edited_by = Some(event.seq);
                    }
                }
                Effect::RecallMessage { target } => {
                    if let Some(EventKind::Message { body, recalled_by, .. }) =
                        self.event_mut(id, target).map(|e| &mut e.kind)
                    {
                        *body = MessageBody::default();
                        *recalled_by = Some(event.seq);
                    }
                }
            }
        }
        if let Some(client_msg_id) = event.kind.client_msg_id() {
            self.client_msgs
                .insert((id, event.sender, client_msg_id.clone()), event.seq);
        }
        self.events.entry(id).or_default().push(event);
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let mut inner = self.lock()?;
        let username = new.username.to_lowercase();
        if inner.usernames.contains_key(&username) {
            return Err(StoreError::AlreadyExists { what: "username" });
        }
        inner.last_user += 1;
        let user = User {
            id: UserId(inner.last_user),
            username: username.clone(),
            display_name: new.display_name,
            password_hash: new.password_hash,
            role: new.role,
            disabled: false,
            created_at: new.created_at,
            last_seen: None,
        };
        inner.usernames.insert(username, user.id);
        inner.users.insert(user.id, user.clone());
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock()?.users.get(&id).cloned())
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let inner = self.lock()?;
        let id = inner.usernames.get(&username.to_lowercase()).copied();
        Ok(id.and_then(|id| inner.users.get(&id).cloned()))
    }

    async fn set_last_seen(&self, user: UserId, at: UnixMillis) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let stored = inner
            .users
            .get_mut(&user)
            .ok_or(StoreError::NotFound { what: "user" })?;
        stored.last_seen = Some(at);
        Ok(())
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let stored = inner
            .users
            .get_mut(&user.id)
            .ok_or(StoreError::NotFound { what: "user" })?;
        stored.display_name.clone_from(&user.display_name);
        stored.password_hash.clone_from(&user.password_hash);
        stored.role = user.role;
        stored.disabled = user.disabled;
        stored.last_seen = user.last_seen;
        Ok(())
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        let inner = self.lock()?;
        let users = inner.users.values().filter(|u| after.is_none_or(|after| u.id > after));
        Ok(users.take(limit).cloned().collect())
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.lock()?.sessions.insert(session.token_hash, session.clone());
        Ok(())
    }

    async fn session(&self, token_hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock()?.sessions.get(token_hash).cloned())
    }

    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        Ok(self.lock()?.sessions.remove(token_hash).is_some())
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let before = inner.sessions.len();
        inner.sessions.retain(|_, s| s.user != user);
        Ok(before - inner.sessions.len())
    }

    async fn purge_expired_sessions(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let before = inner.sessions.len();
        inner.sessions.retain(|_, s| s.expires_at >= now);
        Ok(before - inner.sessions.len())
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn create_conversation(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        let mut inner = self.lock()?;
        let pair = (new.kind == ConversationKind::Direct).then(|| direct_pair(&new));
        if let Some(existing) = pair.and_then(|pair| inner.direct_pairs.get(&pair).copied()) {
            return inner
                .conversations
                .get(&existing)
                .cloned()
                .ok_or(StoreError::Corrupt(format!("direct pair points at missing {existing}")));
        }
        inner.last_conversation += 1;
        let conversation = Conversation {
            id: ConversationId(inner.last_conversation),
            kind: new.kind,
            name: new.name,
            created_by: new.created_by,
            created_at: new.created_at,
        };
        if let Some(pair) = pair {
            inner.direct_pairs.insert(pair, conversation.id);
        }
        for member in new.members {
            inner.put_member(conversation.id, member);
        }
        inner.conversations.insert(conversation.id, conversation.clone());
        Ok(conversation)
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        Ok(self.lock()?.conversations.get(&id).cloned())
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError> {
        let inner = self.lock()?;
        let range = inner.members.range((id, UserId(0))..=(id, UserId(u64::MAX)));
        Ok(range.map(|(&(_, user), &role)| Member { user, role }).collect())
    }

    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationId>, StoreError> {
        let inner = self.lock()?;
        let range = inner
            .user_conversations
            .range((user, ConversationId(0))..=(user, ConversationId(u64::MAX)));
        Ok(range.map(|&(_, id)| id).collect())
    }

    async fn receipts(&self, id: ConversationId) -> Result<Vec<(UserId, Receipt)>, StoreError> {
        let inner = self.lock()?;
        let range = inner.receipts.range((id, UserId(0))..=(id, UserId(u64::MAX)));
        Ok(range.map(|(&(_, user), &receipt)| (user, receipt)).collect())
    }

    async fn save_receipt(&self, id: ConversationId, user: UserId, receipt: Receipt) -> Result<(), StoreError> {
        self.lock()?.receipts.insert((id, user), receipt);
        Ok(())
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    fn append(&self, op: AppendOp) -> AppendTicket {
        let result = self.lock().map_err(AppendError::from).and_then(|mut inner| {
            inner.check_append(&op)?;
            inner.apply_append(op);
            Ok(())
        });
        Box::pin(std::future::ready(result))
    }

    async fn last_seq(&self, id: ConversationId) -> Result<Seq, StoreError> {
        Ok(self.lock()?.last_seq(id))
    }

    async fn find_client_msg(
        &self,
        id: ConversationId,
        sender: UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Seq>, StoreError> {
        Ok(self
            .lock()?
            .client_msgs
            .get(&(id, sender, client_msg_id.clone()))
            .copied())
    }

    async fn event(&self, id: ConversationId, seq: Seq) -> Result<Option<Event>, StoreError> {
        Ok(self.lock()?.event(id, seq).cloned())
    }

    async fn page(&self, id: ConversationId, request: PageRequest) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock()?;
        let log = inner.events.get(&id).map_or(&[][..], Vec::as_slice);
        // Event of seq n is at index n - 1: seqs > from start at index `from`, seqs < from end
        // before index `from - 1`.
        let from = usize::try_from(request.from.0).unwrap_or(usize::MAX);
        let page = match request.direction {
            Direction::Forward => log.iter().skip(from).take(request.limit).cloned().collect(),
            Direction::Backward => {
                let end = from.saturating_sub(1).min(log.len());
                log[..end].iter().rev().take(request.limit).cloned().collect()
            }
        };
        Ok(page)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.lock().map(drop)
    }
}

/// Where the event of `seq` sits in a conversation's log (`None` for seq 0).
fn log_index(seq: Seq) -> Option<usize> {
    usize::try_from(seq.0.checked_sub(1)?).ok()
}

/// The unique key of a direct conversation: its two members, lower id first. A degenerate member
/// list (the creator alone) still yields a stable key.
pub(crate) fn direct_pair(new: &NewConversation) -> (UserId, UserId) {
    let users = new.members.iter().map(|m| m.user).chain([new.created_by]);
    let low = users.clone().min().unwrap_or(new.created_by);
    let high = users.max().unwrap_or(new.created_by);
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: ConversationId, seq: u64, id: &str) -> AppendOp {
        let client_msg_id = ClientMsgId::parse(id).expect("valid test id");
        AppendOp {
            event: Event {
                conversation,
                seq: Seq(seq),
                sender: UserId(1),
                at: 0,
                kind: EventKind::Message {
                    client_msg_id,
                    body: MessageBody::default(),
                    edited_by: None,
                    recalled_by: None,
                },
            },
            effects: Vec::new(),
        }
    }

    #[tokio::test]
    async fn unavailable_switch_fails_every_call_and_leaves_no_gap() {
        let store = MemoryStore::new();
        let c = ConversationId(7);
        store.append(message(c, 1, "a")).await.expect("first append");

        store.set_unavailable(true);
        let failed = store.append(message(c, 2, "b")).await;
        assert!(matches!(failed, Err(AppendError::Store(StoreError::Unavailable(_)))));
        assert!(matches!(store.last_seq(c).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.flush().await, Err(StoreError::Unavailable(_))));

        store.set_unavailable(false);
        let next = store.append(message(c, 3, "c")).await;
        assert!(
            matches!(next, Err(AppendError::Conflict { found: Seq(1), .. })),
            "an append after a failed one must conflict, got {next:?}"
        );
        assert_eq!(store.last_seq(c).await.expect("last seq"), Seq(1));
    }
}
