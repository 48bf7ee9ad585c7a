//! Conformance cases of [`AccountStore`](crate::store::AccountStore): users and sessions.

use std::sync::Arc;

use super::create_user;
use super::new_user;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::model::ServerRole;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;
use crate::store::Store;
use crate::store::StoreError;

fn session(byte: u8, user: UserId, expires_at: UnixMillis) -> SessionRecord {
    SessionRecord {
        token_hash: TokenHash([byte; 32]),
        user,
        device: format!("device-{byte}"),
        created_at: 1_700_000_000_000,
        expires_at,
    }
}

pub async fn user_create_and_get(store: Arc<dyn Store>) {
    let alice = create_user(&*store, "alice").await;
    let expected = User {
        id: alice.id,
        username: "alice".to_owned(),
        display_name: "alice display".to_owned(),
        password_hash: "$argon2id$fake$alice".to_owned(),
        role: ServerRole::User,
        disabled: false,
        created_at: 1_700_000_000_000,
        last_seen: None,
    };
    assert_eq!(alice, expected, "create_user returns the stored user");
    assert_eq!(
        store.user(alice.id).await.expect("user"),
        Some(expected),
        "user(id) reads it back"
    );

    let bob = create_user(&*store, "bob").await;
    assert_ne!(bob.id, alice.id, "every user gets its own id");
    let unknown = UserId(alice.id.0.max(bob.id.0) + 1000);
    assert_eq!(
        store.user(unknown).await.expect("user"),
        None,
        "an unknown id reads as None"
    );
}

pub async fn user_by_name_is_case_insensitive(store: Arc<dyn Store>) {
    let carol = create_user(&*store, "carol").await;
    for name in ["carol", "CAROL", "Carol"] {
        let found = store.user_by_name(name).await.expect("user_by_name");
        assert_eq!(found.as_ref().map(|u| u.id), Some(carol.id), "user_by_name({name:?})");
    }
    assert_eq!(store.user_by_name("nobody").await.expect("user_by_name"), None);
}

pub async fn duplicate_username_is_rejected(store: Arc<dyn Store>) {
    create_user(&*store, "erin").await;
    for name in ["erin", "ERIN"] {
        let again = store.create_user(new_user(name)).await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "creating {name:?} when \"erin\" exists must be AlreadyExists, got {again:?}"
        );
    }
    let all = store.list_users(None, 100).await.expect("list_users");
    assert_eq!(all.len(), 1, "a refused create stores nothing: {all:?}");
}

pub async fn update_user_overwrites_mutable_fields(store: Arc<dyn Store>) {
    let frank = create_user(&*store, "frank").await;
    let updated = User {
        display_name: "Frank F.".to_owned(),
        password_hash: "$argon2id$new".to_owned(),
        role: ServerRole::Admin,
        disabled: true,
        last_seen: Some(1_700_000_123_000),
        ..frank.clone()
    };
    store.update_user(&updated).await.expect("update_user");
    assert_eq!(store.user(frank.id).await.expect("user"), Some(updated.clone()));
    let by_name = store.user_by_name("frank").await.expect("user_by_name");
    assert_eq!(
        by_name,
        Some(updated.clone()),
        "the name index still finds the updated user"
    );

    let ghost = User {
        id: UserId(frank.id.0 + 1000),
        ..updated
    };
    let missing = store.update_user(&ghost).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "updating an unknown id must be NotFound, got {missing:?}"
    );
    assert_eq!(
        store.user(ghost.id).await.expect("user"),
        None,
        "a refused update creates nothing"
    );
}

pub async fn list_users_pages_by_id(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for name in ["u-one", "u-two", "u-three", "u-four", "u-five"] {
        ids.push(create_user(&*store, name).await.id);
    }
    ids.sort();
    let all: Vec<UserId> = store
        .list_users(None, 100)
        .await
        .expect("list_users")
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(all, ids, "list_users(None) returns every user ordered by id");

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_users(after, 2).await.expect("list_users");
        assert!(page.len() <= 2, "a page holds at most `limit` users");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        paged.extend(page.iter().map(|u| u.id));
    }
    assert_eq!(paged, ids, "paging with `after` visits every user once, in order");
    assert!(
        store.list_users(None, 0).await.expect("list_users").is_empty(),
        "limit 0"
    );
}

pub async fn sessions_insert_get_delete(store: Arc<dyn Store>) {
    let user = create_user(&*store, "gina").await;
    let record = session(1, user.id, 2_000_000_000_000);
    store.insert_session(&record).await.expect("insert_session");
    assert_eq!(
        store.session(&record.token_hash).await.expect("session"),
        Some(record.clone())
    );
    assert_eq!(store.session(&TokenHash([9; 32])).await.expect("session"), None);

    assert!(store.delete_session(&record.token_hash).await.expect("delete_session"));
    assert_eq!(store.session(&record.token_hash).await.expect("session"), None);
    assert!(
        !store.delete_session(&record.token_hash).await.expect("delete_session"),
        "deleting a missing session returns false"
    );
}

pub async fn delete_user_sessions_removes_only_that_user(store: Arc<dyn Store>) {
    let hana = create_user(&*store, "hana").await;
    let ivan = create_user(&*store, "ivan").await;
    for record in [
        session(1, hana.id, i64::MAX),
        session(2, hana.id, i64::MAX),
        session(3, ivan.id, i64::MAX),
    ] {
        store.insert_session(&record).await.expect("insert_session");
    }
    assert_eq!(
        store.delete_user_sessions(hana.id).await.expect("delete_user_sessions"),
        2
    );
    assert_eq!(store.session(&TokenHash([1; 32])).await.expect("session"), None);
    assert_eq!(store.session(&TokenHash([2; 32])).await.expect("session"), None);
    assert!(
        store.session(&TokenHash([3; 32])).await.expect("session").is_some(),
        "other users keep theirs"
    );
    assert_eq!(
        store.delete_user_sessions(hana.id).await.expect("delete_user_sessions"),
        0
    );
}

pub async fn purge_expired_sessions_removes_only_expired(store: Arc<dyn Store>) {
    let user = create_user(&*store, "jane").await;
    for (byte, expires_at) in [(1, 100), (2, 200), (3, 300)] {
        store
            .insert_session(&session(byte, user.id, expires_at))
            .await
            .expect("insert_session");
    }
    assert_eq!(
        store.purge_expired_sessions(200).await.expect("purge"),
        1,
        "only expires_at < now"
    );
    assert_eq!(store.session(&TokenHash([1; 32])).await.expect("session"), None);
    assert!(store.session(&TokenHash([2; 32])).await.expect("session").is_some());
    assert_eq!(store.purge_expired_sessions(1_000).await.expect("purge"), 2);
    assert_eq!(
        store.delete_user_sessions(user.id).await.expect("delete_user_sessions"),
        0
    );
}

/// `set_last_seen` changes that one field: a concurrent disable is never undone by it.
pub async fn set_last_seen_touches_nothing_else(store: Arc<dyn Store>) {
    let gina = create_user(&*store, "gina").await;
    let disabled = User {
        disabled: true,
        ..gina.clone()
    };
    store.update_user(&disabled).await.expect("disable");
    store
        .set_last_seen(gina.id, 1_700_000_999_000)
        .await
        .expect("set_last_seen");
    let stored = store.user(gina.id).await.expect("user").expect("exists");
    assert_eq!(stored.last_seen, Some(1_700_000_999_000));
    assert!(stored.disabled, "set_last_seen must not resurrect a disabled account");
    let missing = store.set_last_seen(UserId(gina.id.0 + 1000), 1).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "unknown id is NotFound, got {missing:?}"
    );
}
