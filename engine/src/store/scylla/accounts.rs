//! [`AccountStore`] on CQL: users, unique usernames, the id-ordered user directory, sessions.
//!
//! A username is claimed with a lightweight transaction (`usernames`, `IF NOT EXISTS`) before the
//! user's rows are written, so two nodes cannot both create it. Sessions expire on their own: their
//! rows carry a TTL of the session's remaining lifetime plus [`SESSION_TTL_GRACE_SECS`] (the API
//! checks `expires_at` itself, and `purge_expired_sessions` removes expired ones at once).

use async_trait::async_trait;
use futures_util::future::try_join_all;

use super::codec;
use super::codec::key;
use super::ScyllaStore;
use super::WriteBatch;
use super::USER_IDS;
use crate::ids::TokenHash;
use crate::ids::UserId;
use crate::model::NewUser;
use crate::model::SessionRecord;
use crate::model::UnixMillis;
use crate::model::User;
use crate::store::AccountStore;
use crate::store::StoreError;

/// Users per partition of `user_directory`.
pub(super) const DIRECTORY_BUCKET: u64 = 4096;
/// Session rows outlive their expiry by this long, so a clock a little behind never drops a live
/// session early; expired sessions are refused by the API before that.
pub(super) const SESSION_TTL_GRACE_SECS: i64 = 24 * 3600;

type UserRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
);

fn user_from_row(row: UserRow) -> Result<User, StoreError> {
    const OP: &str = "decoding a user";
    let (id, username, display_name, password_hash, role, disabled, created_at, last_seen) = row;
    Ok(User {
        id: UserId(codec::unsigned(OP, id)?),
        username: codec::required(OP, "username", username)?,
        display_name: display_name.unwrap_or_default(),
        password_hash: codec::required(OP, "password_hash", password_hash)?,
        role: codec::parse_server_role(OP, &codec::required(OP, "role", role)?)?,
        disabled: disabled.unwrap_or(false),
        created_at: created_at.unwrap_or(0),
        last_seen,
    })
}

type SessionRow = (Vec<u8>, Option<i64>, Option<String>, Option<i64>, Option<i64>);

fn token_hash(operation: &'static str, bytes: &[u8]) -> Result<TokenHash, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| super::errors::corrupt(operation, format!("token hash of {} bytes", bytes.len())))?;
    Ok(TokenHash(array))
}

fn session_from_row(row: SessionRow) -> Result<SessionRecord, StoreError> {
    const OP: &str = "decoding a session";
    let (hash, user, device, created_at, expires_at) = row;
    Ok(SessionRecord {
        token_hash: token_hash(OP, &hash)?,
        user: UserId(codec::unsigned(OP, codec::required(OP, "user_id", user)?)?),
        device: device.unwrap_or_default(),
        created_at: created_at.unwrap_or(0),
        expires_at: codec::required(OP, "expires_at", expires_at)?,
    })
}

/// TTL of a session's rows: its remaining lifetime plus the grace, within CQL's limits.
fn session_ttl(expires_at: UnixMillis, now: UnixMillis) -> i32 {
    let remaining = (expires_at.saturating_sub(now) / 1000).max(0);
    super::cap_ttl(remaining.saturating_add(SESSION_TTL_GRACE_SECS))
}

fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ScyllaStore {
    async fn user_row(&self, id: i64) -> Result<Option<User>, StoreError> {
        let s = &self.inner.statements;
        let row = self.inner.one::<UserRow>("user", &s.select_user, (id,)).await?;
        // A row without a username is a last_seen update that raced a missing user: not a user.
        match row {
            Some(row) if row.1.is_some() => user_from_row(row).map(Some),
            _ => Ok(None),
        }
    }

    /// Remove a session's rows; whether there was one.
    async fn remove_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let s = &inner.statements;
        let Some(user) = inner
            .one::<(Option<i64>,)>("delete_session", &s.select_session_user, (hash.0.to_vec(),))
            .await?
        else {
            return Ok(false);
        };
        let mut batch = WriteBatch::logged(&inner.options);
        batch.push(&s.delete_session, (hash.0.to_vec(),));
        if let Some(user) = user.0 {
            batch.push(&s.delete_session_of_user, (user, hash.0.to_vec()));
        }
        inner.write("delete_session", batch).await?;
        Ok(true)
    }
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        const OP: &str = "create_user";
        let inner = &self.inner;
        let s = &inner.statements;
        let username = new.username.to_lowercase();
        let id = inner.next_id(USER_IDS).await?;
        let id_value = codec::big(id)?;
        if !inner.lwt(OP, &s.claim_username, (username.as_str(), id_value)).await? {
            return Err(StoreError::AlreadyExists { what: "username" });
        }
        let user = User {
            id: UserId(id),
            username,
            display_name: new.display_name,
            password_hash: new.password_hash,
            role: new.role,
            disabled: false,
            created_at: new.created_at,
            last_seen: None,
        };
        let mut batch = WriteBatch::logged(&inner.options);
        batch.push(
            &s.insert_user,
            (
                id_value,
                user.username.clone(),
                user.display_name.clone(),
                user.password_hash.clone(),
                codec::server_role(user.role),
                false,
                user.created_at,
                None::<i64>,
            ),
        );
        batch.push(&s.insert_directory, ((id / DIRECTORY_BUCKET) as i64, id_value));
        if let Err(error) = inner.write(OP, batch).await {
            // Give the name back so that a retry can succeed; if even that fails, say how to.
            let released = inner
                .lwt(OP, &s.release_username, (user.username.as_str(), id_value))
                .await;
            if !matches!(released, Ok(true)) {
                tracing::warn!(username = %user.username, id, "A failed user creation left its username claimed; \
                    remove it with `DELETE FROM <keyspace>.usernames WHERE username = '<name>' IF user_id = <id>`.");
            }
            return Err(error);
        }
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        match key(id.0) {
            Some(id) => self.user_row(id).await,
            None => Ok(None),
        }
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let s = &self.inner.statements;
        let username = username.to_lowercase();
        let claimed = self
            .inner
            .one::<(Option<i64>,)>("user_by_name", &s.select_username, (username,))
            .await?;
        match claimed.and_then(|(id,)| id) {
            Some(id) => self.user_row(id).await,
            None => Ok(None),
        }
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let Some(id) = key(user.id.0) else {
            return Err(StoreError::NotFound { what: "user" });
        };
        // Users are never deleted, so a check then a write cannot resurrect one.
        if self.user_row(id).await?.is_none() {
            return Err(StoreError::NotFound { what: "user" });
        }
        let s = &self.inner.statements;
        let values = (
            user.display_name.clone(),
            user.password_hash.clone(),
            codec::server_role(user.role),
            user.disabled,
            user.last_seen,
            id,
        );
        self.inner.execute("update_user", &s.update_user, values).await?;
        Ok(())
    }

    async fn set_last_seen(&self, user: UserId, at: UnixMillis) -> Result<(), StoreError> {
        let Some(id) = key(user.0) else {
            return Err(StoreError::NotFound { what: "user" });
        };
        if self.user_row(id).await?.is_none() {
            return Err(StoreError::NotFound { what: "user" });
        }
        // Only the last_seen cell is written, so a concurrent disable is never undone.
        let s = &self.inner.statements;
        self.inner.execute("set_last_seen", &s.set_last_seen, (at, id)).await?;
        Ok(())
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<User>, StoreError> {
        const OP: &str = "list_users";
        let inner = &self.inner;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let highest = inner.highest_id(USER_IDS).await?;
        let mut cursor = after.map_or(0, |a| a.0);
        let mut users = Vec::new();
        while users.len() < limit && cursor < highest {
            let bucket = (cursor + 1) / DIRECTORY_BUCKET;
            let want = (limit - users.len()).min(DIRECTORY_BUCKET as usize) as i32;
            let ids = inner
                .all::<(i64,)>(
                    OP,
                    &inner.statements.select_directory,
                    (bucket as i64, codec::big(cursor)?, want),
                )
                .await?;
            let found = try_join_all(ids.iter().map(|(id,)| self.user_row(*id))).await?;
            users.extend(found.into_iter().flatten());
            // Next: the rest of this bucket if it filled the page, else the next bucket.
            cursor = match ids.last() {
                Some((id,)) if ids.len() as i32 == want => codec::unsigned(OP, *id)?,
                _ => (bucket + 1) * DIRECTORY_BUCKET - 1,
            };
        }
        users.truncate(limit);
        Ok(users)
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let inner = &self.inner;
        let s = &inner.statements;
        // A session with the same token hash is replaced, with its index entry.
        self.remove_session(&session.token_hash).await?;
        let ttl = session_ttl(session.expires_at, now_millis());
        let user = codec::big(session.user.0)?;
        let hash = session.token_hash.0.to_vec();
        let mut batch = WriteBatch::logged(&inner.options);
        batch.push(
            &s.insert_session,
            (
                hash.clone(),
                user,
                session.device.clone(),
                session.created_at,
                session.expires_at,
                ttl,
            ),
        );
        batch.push(&s.insert_session_of_user, (user, hash, ttl));
        inner.write("insert_session", batch).await
    }

    async fn session(&self, token_hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let s = &self.inner.statements;
        let row = self
            .inner
            .one::<SessionRow>("session", &s.select_session, (token_hash.0.to_vec(),))
            .await?;
        match row {
            Some(row) if row.4.is_some() => session_from_row(row).map(Some),
            _ => Ok(None),
        }
    }

    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        self.remove_session(token_hash).await
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<usize, StoreError> {
        const OP: &str = "delete_user_sessions";
        let inner = &self.inner;
        let s = &inner.statements;
        let Some(user) = key(user.0) else {
            return Ok(0);
        };
        let hashes = inner.all::<(Vec<u8>,)>(OP, &s.select_sessions_of_user, (user,)).await?;
        for chunk in hashes.chunks(64) {
            let mut batch = WriteBatch::logged(&inner.options);
            for (hash,) in chunk {
                batch.push(&s.delete_session, (hash.clone(),));
                batch.push(&s.delete_session_of_user, (user, hash.clone()));
            }
            inner.write(OP, batch).await?;
        }
        Ok(hashes.len())
    }

    async fn purge_expired_sessions(&self, now: UnixMillis) -> Result<usize, StoreError> {
        const OP: &str = "purge_expired_sessions";
        let inner = &self.inner;
        let s = &inner.statements;
        // A full scan, page by page: sessions also expire on their own (TTL), so this only
        // hurries them along and may run rarely.
        let rows = inner
            .all::<(Vec<u8>, Option<i64>, Option<i64>)>(OP, &s.scan_sessions, ())
            .await?;
        let expired: Vec<(Vec<u8>, Option<i64>)> = rows
            .into_iter()
            .filter(|(_, _, expires_at)| expires_at.is_some_and(|at| at < now))
            .map(|(hash, user, _)| (hash, user))
            .collect();
        for chunk in expired.chunks(64) {
            let mut batch = WriteBatch::logged(&inner.options);
            for (hash, user) in chunk {
                batch.push(&s.delete_session, (hash.clone(),));
                if let Some(user) = user {
                    batch.push(&s.delete_session_of_user, (*user, hash.clone()));
                }
            }
            inner.write(OP, batch).await?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::options::MAX_TTL_SECS;
    use super::*;

    #[test]
    fn session_ttl_covers_the_lifetime_and_stays_in_range() {
        let now = 1_700_000_000_000;
        assert_eq!(session_ttl(now + 3_600_000, now), 3600 + SESSION_TTL_GRACE_SECS as i32);
        assert_eq!(
            session_ttl(100, now),
            SESSION_TTL_GRACE_SECS as i32,
            "already expired: the grace"
        );
        let longest = session_ttl(i64::MAX, now);
        assert!(longest > 0 && longest <= MAX_TTL_SECS as i32, "capped: {longest}");
        assert_eq!(session_ttl(i64::MIN, now), SESSION_TTL_GRACE_SECS as i32);
    }
}
