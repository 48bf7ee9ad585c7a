//! Conformance cases of append effects: conversation metadata and message revisions change in the
//! same atomic step as the event that records them.

use std::sync::Arc;

use super::cmid;
use super::create_user;
use super::empty_group;
use super::event;
use super::message;
use super::text;
use crate::ids::ConversationId;
use crate::ids::Seq;
use crate::ids::UserId;
use crate::model::EventKind;
use crate::model::Member;
use crate::model::MemberRole;
use crate::model::MessageBody;
use crate::model::Receipt;
use crate::store::AppendError;
use crate::store::AppendOp;
use crate::store::Effect;
use crate::store::Store;
use crate::store::StoreError;

fn op(id: ConversationId, seq: u64, sender: UserId, kind: EventKind, effects: Vec<Effect>) -> AppendOp {
    AppendOp {
        event: event(id, seq, sender, kind),
        effects,
    }
}

async fn message_state(store: &dyn Store, id: ConversationId, seq: u64) -> (MessageBody, Option<Seq>, Option<Seq>) {
    let stored = store
        .event(id, Seq(seq))
        .await
        .expect("event")
        .expect("the target exists");
    match stored.kind {
        EventKind::Message {
            body,
            edited_by,
            recalled_by,
            ..
        } => (body, edited_by, recalled_by),
        other => panic!("seq {seq} should still be a message, found {other:?}"),
    }
}

fn assert_not_found(result: Result<(), AppendError>, what: &str) {
    assert!(
        matches!(result, Err(AppendError::Store(StoreError::NotFound { .. }))),
        "{what} must be refused with NotFound, got {result:?}"
    );
}

pub async fn membership_effects_apply_with_the_event(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "fay").await;
    let guest = create_user(&*store, "gus").await.id;
    let member = |user, role| Member { user, role };

    let added = member(guest, MemberRole::Member);
    let kind = EventKind::MembersAdded { members: vec![added] };
    store
        .append(op(id, 1, owner.id, kind, vec![Effect::PutMember(added)]))
        .await
        .expect("add");
    let members = store.members(id).await.expect("members");
    assert!(members.contains(&added), "PutMember adds the member: {members:?}");
    assert_eq!(store.conversations_of(guest).await.expect("conversations_of"), vec![id]);

    let promoted = member(guest, MemberRole::Admin);
    let kind = EventKind::RoleChanged {
        user: guest,
        role: MemberRole::Admin,
    };
    store
        .append(op(id, 2, owner.id, kind, vec![Effect::PutMember(promoted)]))
        .await
        .expect("promote");
    let members = store.members(id).await.expect("members");
    assert!(
        members.contains(&promoted) && !members.contains(&added),
        "PutMember updates the role: {members:?}"
    );

    let receipt = Receipt {
        delivered: Seq(2),
        read: Seq(1),
    };
    store.save_receipt(id, guest, receipt).await.expect("save_receipt");
    let kind = EventKind::MemberRemoved { user: guest };
    store
        .append(op(id, 3, owner.id, kind, vec![Effect::RemoveMember(guest)]))
        .await
        .expect("remove");
    let members = store.members(id).await.expect("members");
    assert!(
        members.iter().all(|m| m.user != guest),
        "RemoveMember removes the member: {members:?}"
    );
    assert!(store
        .conversations_of(guest)
        .await
        .expect("conversations_of")
        .is_empty());
    let receipts = store.receipts(id).await.expect("receipts");
    assert!(
        receipts.iter().all(|(user, _)| *user != guest),
        "a removed member's receipt goes too"
    );
    assert_eq!(
        store.conversations_of(owner.id).await.expect("conversations_of"),
        vec![id]
    );
}

pub async fn rename_effect_updates_the_header(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "hal").await;
    let kind = EventKind::Renamed {
        name: "new name".to_owned(),
    };
    store
        .append(op(id, 1, owner.id, kind, vec![Effect::Rename("new name".to_owned())]))
        .await
        .expect("rename");
    let header = store.conversation(id).await.expect("conversation").expect("header");
    assert_eq!(header.name, "new name");
    assert_eq!(header.created_by, owner.id, "a rename changes only the name");
}

pub async fn revise_and_recall_update_the_target(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "ida").await;
    store.append(message(id, 1, owner.id)).await.expect("message");

    let kind = EventKind::Edit {
        client_msg_id: cmid("e-2"),
        target: Seq(1),
        body: text("edited"),
    };
    let effects = vec![Effect::ReviseMessage {
        target: Seq(1),
        body: text("edited"),
    }];
    store
        .append(op(id, 2, owner.id, kind.clone(), effects))
        .await
        .expect("edit");
    assert_eq!(
        message_state(&*store, id, 1).await,
        (text("edited"), Some(Seq(2)), None)
    );
    let edit = store
        .event(id, Seq(2))
        .await
        .expect("event")
        .expect("the edit is stored");
    assert_eq!(edit.kind, kind, "the edit event itself is stored as appended");

    let kind = EventKind::Recall {
        client_msg_id: cmid("r-3"),
        target: Seq(1),
    };
    store
        .append(op(
            id,
            3,
            owner.id,
            kind,
            vec![Effect::RecallMessage { target: Seq(1) }],
        ))
        .await
        .expect("recall");
    assert_eq!(
        message_state(&*store, id, 1).await,
        (MessageBody::default(), Some(Seq(2)), Some(Seq(3))),
        "a recall empties the body and keeps the edit mark"
    );
}

pub async fn refused_effects_store_nothing(store: Arc<dyn Store>) {
    let (owner, id) = empty_group(&*store, "jon").await;
    store.append(message(id, 1, owner.id)).await.expect("message");
    let member = Member {
        user: UserId(owner.id.0 + 1000),
        role: MemberRole::Member,
    };
    let edit = |target| EventKind::Edit {
        client_msg_id: cmid("e-x"),
        target: Seq(target),
        body: text("x"),
    };

    // A revise of a missing target, with a membership change before it in the same op.
    let effects = vec![
        Effect::PutMember(member),
        Effect::ReviseMessage {
            target: Seq(7),
            body: text("x"),
        },
    ];
    assert_not_found(
        store.append(op(id, 2, owner.id, edit(7), effects)).await,
        "revising a missing message",
    );
    assert!(
        !store.members(id).await.expect("members").contains(&member),
        "no effect of a refused op applies"
    );
    assert_eq!(
        store.find_client_msg(id, owner.id, &cmid("e-x")).await.expect("find"),
        None
    );

    let recall = EventKind::Recall {
        client_msg_id: cmid("r-2"),
        target: Seq(1),
    };
    let effects = vec![Effect::RecallMessage { target: Seq(1) }];
    store
        .append(op(id, 2, owner.id, recall, effects))
        .await
        .expect("recall seq 1");
    let effects = vec![Effect::ReviseMessage {
        target: Seq(2),
        body: text("x"),
    }];
    assert_not_found(
        store.append(op(id, 3, owner.id, edit(2), effects)).await,
        "revising a non-message",
    );

    let missing = ConversationId(id.0 + 1000);
    let kind = EventKind::Renamed { name: "x".to_owned() };
    let result = store
        .append(op(missing, 1, owner.id, kind, vec![Effect::Rename("x".to_owned())]))
        .await;
    assert_not_found(result, "renaming a missing conversation");
    assert_eq!(store.last_seq(missing).await.expect("last_seq"), Seq::ZERO);
    assert_eq!(store.last_seq(id).await.expect("last_seq"), Seq(2));
}
