//! The conformance suite every [`Store`] implementation must pass (openraft's storage `Suite`
//! pattern). It is ordinary code, not `cfg(test)`, so integration tests of any backend can run it:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_store_conforms() {
//!     roost_engine::store::testing::run_suite(|| async { Arc::new(MyStore::new()) as Arc<dyn Store> }).await;
//! }
//! ```
//!
//! [`run_suite`] runs every case on a fresh store and panics with the name of the first case that
//! fails. Each case is also a public function taking the store, to run one alone while debugging.
//! Cases spawn tokio tasks, so they must run inside a tokio runtime.
//!
//! Beyond the trait docs, the suite pins these choices: usernames are unique case-insensitively;
//! an append whose client message id is already indexed for that sender is refused with
//! `AlreadyExists`; a revise/recall whose target is missing or not a message, and a rename of a
//! missing conversation, are refused with `NotFound`; removing a member also drops their receipt;
//! `purge_expired_sessions(now)` removes sessions with `expires_at < now`.

mod accounts;
mod conversations;
mod effects;
mod messages;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use self::accounts::*;
pub use self::conversations::*;
pub use self::effects::*;
pub use self::messages::*;
use super::AppendOp;
use super::Store;
use crate::ids::ClientMsgId;
use crate::ids::ConversationId;
use crate::ids::Seq;
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
use crate::model::ServerRole;
use crate::model::User;

/// One case of the suite, as a plain function pointer.
pub type Case = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        vec![$((stringify!($case), (|store| Box::pin($case(store))) as Case)),*]
    };
}

/// Every case of the suite with its name, in the order [`run_suite`] runs them.
pub fn cases() -> Vec<(&'static str, Case)> {
    cases![
        user_create_and_get,
        user_by_name_is_case_insensitive,
        duplicate_username_is_rejected,
        update_user_overwrites_mutable_fields,
        set_last_seen_touches_nothing_else,
        list_users_pages_by_id,
        sessions_insert_get_delete,
        delete_user_sessions_removes_only_that_user,
        purge_expired_sessions_removes_only_expired,
        group_with_members_and_conversations_of,
        direct_pair_is_unique_in_either_order,
        receipts_save_and_load,
        missing_conversation_reads_empty,
        last_seq_of_empty_conversation_is_zero,
        append_dense_seqs_and_read_back,
        append_with_wrong_prev_conflicts_and_stores_nothing,
        failed_append_fails_the_appends_behind_it,
        concurrent_appends_to_many_conversations,
        find_client_msg_after_append,
        duplicate_client_msg_id_is_rejected,
        page_forward_and_backward,
        event_lookup,
        flush_succeeds,
        membership_effects_apply_with_the_event,
        rename_effect_updates_the_header,
        revise_and_recall_update_the_target,
        refused_effects_store_nothing,
    ]
}

/// Run every case on a fresh store from `make_store`; panics naming the first failing case.
pub async fn run_suite<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, case) in cases() {
        tracing::info!(case = name, "--- Store conformance case.");
        let store = make_store().await;
        // A spawned task turns the case's panic into a JoinError, so the case can be named.
        if let Err(error) = tokio::spawn(case(store)).await {
            let why = match error.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
                Err(error) => error.to_string(),
            };
            panic!("store conformance case `{name}` failed: {why}");
        }
    }
}

// Fixtures shared by the cases.

pub(crate) fn cmid(raw: &str) -> ClientMsgId {
    ClientMsgId::parse(raw).expect("test client message ids are valid")
}

pub(crate) fn new_user(username: &str) -> NewUser {
    NewUser {
        username: username.to_owned(),
        display_name: format!("{username} display"),
        password_hash: format!("$argon2id$fake${username}"),
        role: ServerRole::User,
        created_at: 1_700_000_000_000,
    }
}

pub(crate) async fn create_user(store: &dyn Store, username: &str) -> User {
    store.create_user(new_user(username)).await.expect("create_user")
}

pub(crate) async fn create_group(store: &dyn Store, owner: UserId, others: &[UserId]) -> Conversation {
    let members = std::iter::once(Member {
        user: owner,
        role: MemberRole::Owner,
    })
    .chain(others.iter().map(|&user| Member {
        user,
        role: MemberRole::Member,
    }))
    .collect();
    let new = NewConversation {
        kind: ConversationKind::Group,
        name: "group".to_owned(),
        created_by: owner,
        created_at: 1_700_000_000_000,
        members,
    };
    store.create_conversation(new).await.expect("create_conversation")
}

/// A group of one fresh owner, for cases about the log alone.
pub(crate) async fn empty_group(store: &dyn Store, owner_name: &str) -> (User, ConversationId) {
    let owner = create_user(store, owner_name).await;
    let conversation = create_group(store, owner.id, &[]).await;
    (owner, conversation.id)
}

pub(crate) fn text(text: &str) -> MessageBody {
    MessageBody {
        text: text.to_owned(),
        ..MessageBody::default()
    }
}

pub(crate) fn event(conversation: ConversationId, seq: u64, sender: UserId, kind: EventKind) -> Event {
    Event {
        conversation,
        seq: Seq(seq),
        sender,
        at: 1_700_000_000_000 + seq as i64,
        kind,
    }
}

/// An append of a plain message whose client message id is `m-<seq>`.
pub(crate) fn message(conversation: ConversationId, seq: u64, sender: UserId) -> AppendOp {
    let kind = EventKind::Message {
        client_msg_id: cmid(&format!("m-{seq}")),
        body: text(&format!("message {seq}")),
        edited_by: None,
        recalled_by: None,
    };
    AppendOp {
        event: event(conversation, seq, sender, kind),
        effects: Vec::new(),
    }
}

/// Append `count` messages after the current last seq, pipelined, and return their events.
pub(crate) async fn append_messages(
    store: &dyn Store,
    conversation: ConversationId,
    sender: UserId,
    count: u64,
) -> Vec<Event> {
    let last = store.last_seq(conversation).await.expect("last_seq").0;
    let ops: Vec<AppendOp> = (last + 1..=last + count)
        .map(|seq| message(conversation, seq, sender))
        .collect();
    let tickets: Vec<_> = ops.iter().map(|op| store.append(op.clone())).collect();
    for (ticket, op) in tickets.into_iter().zip(&ops) {
        ticket
            .await
            .unwrap_or_else(|e| panic!("append of seq {} failed: {e}", op.event.seq));
    }
    ops.into_iter().map(|op| op.event).collect()
}
