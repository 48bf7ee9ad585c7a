//! Conformance cases of [`ConversationStore`](crate::store::ConversationStore): headers, members,
//! direct pairs and receipts.

use std::sync::Arc;

use super::create_group;
use super::create_user;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::Conversation;
use crate::model::ConversationKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::NewConversation;
use crate::model::Receipt;
use crate::store::Direction;
use crate::store::PageRequest;
use crate::store::Store;

fn direct(creator: UserId, other: UserId) -> NewConversation {
    NewConversation {
        kind: ConversationKind::Direct,
        name: String::new(),
        created_by: creator,
        created_at: 1_700_000_000_000,
        members: vec![
            Member {
                user: creator,
                role: MemberRole::Member,
            },
            Member {
                user: other,
                role: MemberRole::Member,
            },
        ],
    }
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

pub async fn group_with_members_and_conversations_of(store: Arc<dyn Store>) {
    let a = create_user(&*store, "kate").await.id;
    let b = create_user(&*store, "liam").await.id;
    let c = create_user(&*store, "mona").await.id;
    let first = create_group(&*store, a, &[b]).await;
    let expected = Conversation {
        id: first.id,
        kind: ConversationKind::Group,
        name: "group".to_owned(),
        created_by: a,
        created_at: 1_700_000_000_000,
    };
    assert_eq!(first, expected, "create_conversation returns the stored header");
    assert_eq!(
        store.conversation(first.id).await.expect("conversation"),
        Some(expected)
    );

    let members = store.members(first.id).await.expect("members");
    let mut want = vec![
        Member {
            user: a,
            role: MemberRole::Owner,
        },
        Member {
            user: b,
            role: MemberRole::Member,
        },
    ];
    want.sort_by_key(|m| m.user);
    assert_eq!(members, want, "members are ordered by user id, with their roles");

    let second = create_group(&*store, c, &[a]).await;
    assert_ne!(first.id, second.id);
    let of_a = store.conversations_of(a).await.expect("conversations_of");
    assert_eq!(
        of_a,
        sorted(vec![first.id, second.id]),
        "conversations_of is ordered by id"
    );
    assert_eq!(
        store.conversations_of(b).await.expect("conversations_of"),
        vec![first.id]
    );
    assert_eq!(
        store.conversations_of(c).await.expect("conversations_of"),
        vec![second.id]
    );
}

pub async fn direct_pair_is_unique_in_either_order(store: Arc<dyn Store>) {
    let a = create_user(&*store, "nina").await.id;
    let b = create_user(&*store, "omar").await.id;
    let c = create_user(&*store, "pia").await.id;
    let first = store.create_conversation(direct(a, b)).await.expect("create direct");
    assert_eq!(first.kind, ConversationKind::Direct);
    let again = store
        .create_conversation(direct(a, b))
        .await
        .expect("create direct again");
    assert_eq!(again, first, "the same pair returns the existing conversation");
    let reversed = store
        .create_conversation(direct(b, a))
        .await
        .expect("create direct reversed");
    assert_eq!(
        reversed, first,
        "the pair in the other order returns the same conversation"
    );

    let other = store
        .create_conversation(direct(a, c))
        .await
        .expect("create another direct");
    assert_ne!(other.id, first.id, "another pair gets its own conversation");
    let of_a = store.conversations_of(a).await.expect("conversations_of");
    assert_eq!(of_a, sorted(vec![first.id, other.id]), "each direct conversation once");
    let users: Vec<UserId> = store
        .members(first.id)
        .await
        .expect("members")
        .iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(users, sorted(vec![a, b]));
}

pub async fn receipts_save_and_load(store: Arc<dyn Store>) {
    let a = create_user(&*store, "quin").await.id;
    let b = create_user(&*store, "rosa").await.id;
    let group = create_group(&*store, a, &[b]).await.id;
    let other = create_group(&*store, b, &[]).await.id;
    let receipt = |delivered, read| Receipt {
        delivered: Seq(delivered),
        read: Seq(read),
    };

    assert!(
        store.receipts(group).await.expect("receipts").is_empty(),
        "no receipt saved yet"
    );
    store.save_receipt(group, a, receipt(5, 3)).await.expect("save_receipt");
    store.save_receipt(group, b, receipt(2, 2)).await.expect("save_receipt");
    store
        .save_receipt(group, a, receipt(6, 4))
        .await
        .expect("save_receipt overwrite");
    let mut loaded = store.receipts(group).await.expect("receipts");
    loaded.sort_by_key(|(user, _)| *user);
    let mut want = vec![(a, receipt(6, 4)), (b, receipt(2, 2))];
    want.sort_by_key(|(user, _)| *user);
    assert_eq!(loaded, want, "the last save wins");
    assert!(
        store.receipts(other).await.expect("receipts").is_empty(),
        "receipts are per conversation"
    );
}

pub async fn missing_conversation_reads_empty(store: Arc<dyn Store>) {
    let missing = ConversationId(987_654_321);
    assert_eq!(store.conversation(missing).await.expect("conversation"), None);
    assert!(store.members(missing).await.expect("members").is_empty());
    assert!(store.receipts(missing).await.expect("receipts").is_empty());
    assert_eq!(store.last_seq(missing).await.expect("last_seq"), Seq::ZERO);
    assert_eq!(store.event(missing, Seq(1)).await.expect("event"), None);
    let request = PageRequest {
        from: Seq::ZERO,
        direction: Direction::Forward,
        limit: 10,
    };
    assert!(store.page(missing, request).await.expect("page").is_empty());
}
