//! Conformance cases of [`MessageStore`](crate::store::MessageStore): the append contract, the
//! idempotency index and history paging.

use std::sync::Arc;

use super::append_messages;
use super::cmid;
use super::create_group;
use super::create_user;
use super::empty_group;
use super::event;
use super::message;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::model::Event;
use crate::model::EventKind;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::Direction;
use crate::store::Effect;
use crate::store::PageRequest;
use crate::store::Store;
use crate::store::StoreError;

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq.0).collect()
}

async fn page(store: &dyn Store, id: ConversationId, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
    let request = PageRequest {
        from: Seq(from),
        direction,
        limit,
    };
    seqs(&store.page(id, request).await.expect("page"))
}

async fn all_events(store: &dyn Store, id: ConversationId) -> Vec<Event> {
    let request = PageRequest {
        from: Seq::ZERO,
        direction: Direction::Forward,
        limit: usize::MAX,
    };
    store.page(id, request).await.expect("page")
}

pub async fn last_seq_of_empty_conversation_is_zero(store: Arc<dyn Store>) {
    let (_, id) = empty_group(&*store, "sara").await;
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq::ZERO);
    assert_eq!(
        store.last_seq(ConversationId(id.0 + 1000)).await.expect("last_seq"),
        Seq::ZERO
    );
}

pub async fn append_dense_seqs_and_read_back(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "theo").await;
    let appended = append_messages(&*store, id, owner.id, 10).await;
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(10));
    assert_eq!(
        all_events(&*store, id).await,
        appended,
        "the log holds exactly what was appended"
    );
}

pub async fn append_with_wrong_prev_conflicts_and_stores_nothing(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "uma").await;
    append_messages(&*store, id, owner.id, 2).await;

    let ahead = store.append(message(id, 4, owner.id)).await;
    assert!(
        matches!(
            ahead,
            Err(AppendError::Conflict {
                expected: Seq(3),
                found: Seq(2)
            })
        ),
        "appending seq 4 after 2 must conflict (expected 3, found 2), got {ahead:?}"
    );
    let behind = store.append(message(id, 2, owner.id)).await;
    assert!(
        matches!(behind, Err(AppendError::Conflict { found: Seq(2), .. })),
        "appending seq 2 again must conflict, got {behind:?}"
    );
    let zero = store.append(message(id, 0, owner.id)).await;
    assert!(
        matches!(zero, Err(AppendError::Conflict { .. })),
        "seq 0 is never appendable, got {zero:?}"
    );

    let mut with_effect = message(id, 5, owner.id);
    with_effect.effects.push(Effect::Rename("renamed".to_owned()));
    assert!(matches!(
        store.append(with_effect).await,
        Err(AppendError::Conflict { .. })
    ));

    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(2));
    assert_eq!(store.event(id, Seq(4)).await.expect("event"), None);
    assert_eq!(
        store.find_client_msg(id, owner.id, &cmid("m-4")).await.expect("find"),
        None
    );
    let header = store.conversation(id).await.expect("conversation").expect("header");
    assert_eq!(
        header.name, "group",
        "the effects of a conflicting append are not applied"
    );
}

pub async fn failed_append_fails_the_appends_behind_it(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "vera").await;
    append_messages(&*store, id, owner.id, 1).await;

    // Seq 2 is refused (its recall target does not exist); seq 3 was submitted right behind it.
    let mut refused = message(id, 2, owner.id);
    refused.effects.push(Effect::RecallMessage { target: Seq(99) });
    let refused_ticket = store.append(refused);
    let behind_ticket = store.append(message(id, 3, owner.id));
    let refused = refused_ticket.await;
    let behind = behind_ticket.await;
    assert!(
        matches!(refused, Err(AppendError::Store(StoreError::NotFound { .. }))),
        "a recall of a missing target must be NotFound, got {refused:?}"
    );
    assert!(
        matches!(
            behind,
            Err(AppendError::Conflict {
                expected: Seq(2),
                found: Seq(1)
            })
        ),
        "the append behind a failed one must conflict, leaving no gap; got {behind:?}"
    );
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(1));
    assert_eq!(
        store.event(id, Seq(3)).await.expect("event"),
        None,
        "no gap: seq 3 is not stored"
    );

    store
        .append(message(id, 2, owner.id))
        .await
        .expect("after a reload, seq 2 appends");
}

pub async fn concurrent_appends_to_many_conversations(store: Arc<dyn Store>) {
    const CONVERSATIONS: usize = 16;
    const PER_CONVERSATION: u64 = 25;
    let owner = create_user(&*store, "walt").await;
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(create_group(&*store, owner.id, &[]).await.id);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            tokio::spawn(async move { append_messages(&*store, id, owner.id, PER_CONVERSATION).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("an append task panicked");
    }
    let dense: Vec<u64> = (1..=PER_CONVERSATION).collect();
    for id in ids {
        assert_eq!(
            store.last_seq(id).await.expect("last_seq"),
            Seq(PER_CONVERSATION),
            "{id}"
        );
        assert_eq!(
            seqs(&all_events(&*store, id).await),
            dense,
            "conversation {id} is dense"
        );
    }
}

pub async fn find_client_msg_after_append(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "xena").await;
    let other = create_user(&*store, "yuri").await;
    let (_, other_conversation) = empty_group(&*store, "zack").await;
    append_messages(&*store, id, owner.id, 1).await;
    let edit = EventKind::Edit {
        client_msg_id: cmid("e-1"),
        target: Seq(1),
        body: super::text("edited"),
    };
    let op = AppendOp {
        event: event(id, 2, owner.id, edit),
        effects: vec![Effect::ReviseMessage {
            target: Seq(1),
            body: super::text("edited"),
        }],
    };
    store.append(op).await.expect("append edit");

    let find = |conversation, sender, raw: &'static str| {
        let store = store.clone();
        async move {
            store
                .find_client_msg(conversation, sender, &cmid(raw))
                .await
                .expect("find_client_msg")
        }
    };
    assert_eq!(find(id, owner.id, "m-1").await, Some(Seq(1)));
    assert_eq!(find(id, owner.id, "e-1").await, Some(Seq(2)), "edits are indexed too");
    assert_eq!(find(id, other.id, "m-1").await, None, "the index is per sender");
    assert_eq!(
        find(other_conversation, owner.id, "m-1").await,
        None,
        "the index is per conversation"
    );
    assert_eq!(find(id, owner.id, "m-9").await, None);
}

pub async fn duplicate_client_msg_id_is_rejected(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "abel").await;
    let other = create_user(&*store, "bea").await;
    append_messages(&*store, id, owner.id, 1).await;

    let mut duplicate = message(id, 2, owner.id);
    duplicate.event.kind = message(id, 1, owner.id).event.kind;
    let refused = store.append(duplicate).await;
    assert!(
        matches!(refused, Err(AppendError::Store(StoreError::AlreadyExists { .. }))),
        "a second append with an indexed client message id must be AlreadyExists, got {refused:?}"
    );
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(1));
    assert_eq!(
        store.find_client_msg(id, owner.id, &cmid("m-1")).await.expect("find"),
        Some(Seq(1))
    );

    let mut same_id_other_sender = message(id, 2, other.id);
    same_id_other_sender.event.kind = message(id, 1, other.id).event.kind;
    store
        .append(same_id_other_sender)
        .await
        .expect("another sender may use the same id");
}

pub async fn page_forward_and_backward(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "cleo").await;
    append_messages(&*store, id, owner.id, 10).await;
    let s = &*store;
    use Direction::Backward;
    use Direction::Forward;
    assert_eq!(
        page(s, id, 0, Forward, 3).await,
        vec![1, 2, 3],
        "forward from the start"
    );
    assert_eq!(
        page(s, id, 3, Forward, 3).await,
        vec![4, 5, 6],
        "forward after a cursor"
    );
    assert_eq!(page(s, id, 9, Forward, 5).await, vec![10], "forward to the end");
    assert_eq!(
        page(s, id, 10, Forward, 5).await,
        Vec::<u64>::new(),
        "forward past the end"
    );
    assert_eq!(page(s, id, u64::MAX, Forward, 5).await, Vec::<u64>::new());
    assert_eq!(
        page(s, id, u64::MAX, Backward, 3).await,
        vec![10, 9, 8],
        "backward from the newest"
    );
    assert_eq!(
        page(s, id, 8, Backward, 3).await,
        vec![7, 6, 5],
        "backward before a cursor"
    );
    assert_eq!(page(s, id, 2, Backward, 5).await, vec![1], "backward to the start");
    assert_eq!(
        page(s, id, 1, Backward, 5).await,
        Vec::<u64>::new(),
        "backward past the start"
    );
    assert_eq!(page(s, id, 0, Backward, 5).await, Vec::<u64>::new(), "backward from 0");
    assert_eq!(page(s, id, 0, Forward, 0).await, Vec::<u64>::new(), "limit 0");
    assert_eq!(page(s, id, 0, Forward, 100).await, (1..=10).collect::<Vec<_>>());
}

pub async fn event_lookup(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "dora").await;
    let appended = append_messages(&*store, id, owner.id, 3).await;
    for expected in &appended {
        assert_eq!(
            store.event(id, expected.seq).await.expect("event").as_ref(),
            Some(expected)
        );
    }
    assert_eq!(store.event(id, Seq(0)).await.expect("event"), None);
    assert_eq!(store.event(id, Seq(4)).await.expect("event"), None);
}

pub async fn flush_succeeds(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "emil").await;
    append_messages(&*store, id, owner.id, 3).await;
    store.flush().await.expect("flush");
    store.flush().await.expect("a second flush");
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(3));
}
