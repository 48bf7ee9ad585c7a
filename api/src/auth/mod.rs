//! Auth: accounts, logins, sessions and WebSocket tickets. The only module that sees passwords.
//!
//! [`Auth`] is shared by every handler as `Arc<Auth>`. It owns the password hasher
//! ([`password`]), the login throttle ([`throttle`]) and the ticket key ([`ticket`]); sessions
//! and users live in the store, so there is no session state here. Sessions are opaque random
//! tokens ([`token`]) stored only as their SHA-256, revocable one by one (logout) or all at once
//! (disabling a user); both also close the affected WebSockets at once through the engine's
//! `SessionHub`. [`create_account`] works without a running node, for `roost user add`.
//!
//! Failure modes a client can tell apart are only those it needs: wrong username and wrong
//! password are the same `invalid_credentials`, with the same hashing work, so neither the
//! answer nor its timing reveals whether an account exists.

pub mod password;
pub mod throttle;
pub mod ticket;
pub mod token;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use roost_engine::clock::now_millis;
use roost_engine::delivery::hub::Kick;
use roost_engine::delivery::hub::SessionHub;
use roost_engine::delivery::DisconnectReason;
use roost_engine::ids::UserId;
use roost_engine::model::NewUser;
use roost_engine::model::ServerRole;
use roost_engine::model::SessionRecord;
use roost_engine::model::User;
use roost_engine::store::Store;
use roost_engine::store::StoreError;

use self::password::Passwords;
use self::throttle::LoginThrottle;
use self::ticket::TicketClaims;
use self::ticket::TicketKey;
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// Usernames are 3 to 32 of `[a-z0-9._-]`, stored lowercase.
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
/// Display names are 1 to 64 characters, without control characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 64;
/// Device labels are at most 64 characters.
pub const DEVICE_MAX_CHARS: usize = 64;

/// What the caller chooses for a new account. `Debug` does not print the password.
#[derive(Clone)]
pub struct NewAccount {
    pub username: String,
    /// Defaults to the username.
    pub display_name: Option<String>,
    pub password: String,
    pub admin: bool,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// A successful login: the token is shown to the client once and never stored.
pub struct LoginOutcome {
    pub token: String,
    pub session: SessionRecord,
    pub user: User,
}

impl fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginOutcome")
            .field("session", &self.session)
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// A verified, live session and its (enabled) user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub user: User,
    pub session: SessionRecord,
}

pub struct Auth {
    store: Arc<dyn Store>,
    hub: Addr<SessionHub>,
    config: AuthConfig,
    passwords: Passwords,
    throttle: LoginThrottle,
    tickets: TicketKey,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// `ticket_secret` signs WebSocket tickets; a random one per process is fine on one node.
    /// Invalid argon2 parameters (config validation should have refused them) fall back to the
    /// OWASP defaults with an error log, rather than leaving the node unable to log anyone in.
    pub fn new(store: Arc<dyn Store>, hub: Addr<SessionHub>, config: AuthConfig, ticket_secret: [u8; 32]) -> Auth {
        let passwords = Passwords::new(&config).unwrap_or_else(|error| {
            tracing::error!(%error, "Invalid argon2 parameters; using the defaults (m=19456, t=2, p=1).");
            Passwords::with_params(argon2::Params::DEFAULT, config.max_concurrent_hashes)
        });
        Auth {
            store,
            hub,
            throttle: LoginThrottle::new(&config),
            config,
            passwords,
            tickets: TicketKey::new(ticket_secret),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Create an account (admin or open registration), hashing under the node's hash limit.
    pub async fn create_user(&self, account: NewAccount) -> Result<User, ApiError> {
        create_with(self.store.as_ref(), &self.config, &self.passwords, account).await
    }

    /// Check a username and password and open a session for `device`. Throttled per
    /// (username, `client`) and per `client`; see [`throttle`].
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device: String,
        client: IpAddr,
    ) -> Result<LoginOutcome, ApiError> {
        let device = check_device(device)?;
        let name = username.to_ascii_lowercase();
        let attempt = self
            .throttle
            .begin(&name, client, Instant::now())
            .map_err(|wait| ApiError::rate_limited(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)))?;
        let user = match normalize_username(&name) {
            Ok(name) => self.store.user_by_name(&name).await?,
            Err(_) => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.as_str());
        let matches = self.passwords.verify(password, stored_hash).await?;
        let Some(user) = user.filter(|_| matches) else {
            attempt.failed();
            tracing::info!(username = %name, %client, "Login failed.");
            return Err(invalid_credentials());
        };
        attempt.succeeded();
        if user.disabled {
            return Err(account_disabled());
        }
        let token = token::new_token();
        let now = now_millis();
        let ttl_ms = self.config.session_ttl_hours.saturating_mul(3_600_000);
        let session = SessionRecord {
            token_hash: token::hash_token(&token),
            user: user.id,
            device,
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
        };
        self.store.insert_session(&session).await?;
        tracing::info!(user = %user.id, session = ?session.token_hash, %client, "Login succeeded.");
        Ok(LoginOutcome { token, session, user })
    }

    /// The live session a bearer token names, with its user.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, ApiError> {
        if !token::plausible_token(token) {
            return Err(ApiError::unauthorized());
        }
        let session = self.store.session(&token::hash_token(token)).await?;
        self.active(session.ok_or_else(ApiError::unauthorized)?).await
    }

    /// Delete sessions whose expiry has passed (they are already refused when presented; this
    /// keeps the store from growing). Returns how many were removed.
    pub async fn purge_expired_sessions(&self) -> Result<usize, ApiError> {
        Ok(self.store.purge_expired_sessions(now_millis()).await?)
    }

    /// End one session and close that device's WebSockets.
    pub async fn logout(&self, session: &SessionRecord) -> Result<(), ApiError> {
        self.store.delete_session(&session.token_hash).await?;
        self.hub.do_send(Kick {
            user: session.user,
            token: Some(session.token_hash),
            reason: DisconnectReason::Revoked,
        });
        Ok(())
    }

    /// Disable or re-enable a user. Disabling also ends every session and closes every socket.
    pub async fn set_disabled(&self, user: UserId, disabled: bool) -> Result<User, ApiError> {
        let mut record = self
            .store
            .user(user)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if record.disabled != disabled {
            record.disabled = disabled;
            self.store.update_user(&record).await?;
        }
        if disabled {
            // Done even if already disabled, so a retry repairs an earlier partial failure.
            let sessions = self.store.delete_user_sessions(user).await?;
            self.hub.do_send(Kick {
                user,
                token: None,
                reason: DisconnectReason::UserDisabled,
            });
            tracing::info!(%user, sessions, "User disabled; sessions revoked.");
        } else {
            tracing::info!(%user, "User enabled.");
        }
        Ok(record)
    }

    /// Lifetime of the tickets [`Auth::issue_ws_ticket`] makes.
    pub fn ws_ticket_ttl_secs(&self) -> u64 {
        self.config.ws_ticket_ttl_secs
    }

    /// A short-lived ticket a browser can put in the WebSocket URL instead of its token. It
    /// never outlives the session.
    pub fn issue_ws_ticket(&self, auth: &Authenticated) -> String {
        let ttl_ms = self.config.ws_ticket_ttl_secs.saturating_mul(1000);
        let expires_at = now_millis()
            .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
            .min(auth.session.expires_at);
        self.tickets.issue(&TicketClaims {
            user: auth.user.id,
            token_hash: auth.session.token_hash,
            expires_at,
        })
    }

    /// Check a ticket and that its session is still live and its user enabled.
    pub async fn redeem_ws_ticket(&self, ticket: &str) -> Result<Authenticated, ApiError> {
        let claims = self.tickets.verify(ticket, now_millis()).map_err(|error| {
            tracing::debug!(%error, "WebSocket ticket refused.");
            ApiError::unauthorized()
        })?;
        let session = self
            .store
            .session(&claims.token_hash)
            .await?
            .filter(|s| s.user == claims.user)
            .ok_or_else(ApiError::unauthorized)?;
        self.active(session).await
    }

    async fn active(&self, session: SessionRecord) -> Result<Authenticated, ApiError> {
        if session.expires_at <= now_millis() {
            if let Err(error) = self.store.delete_session(&session.token_hash).await {
                tracing::warn!(%error, "Could not delete an expired session.");
            }
            return Err(ApiError::unauthorized());
        }
        let user = self
            .store
            .user(session.user)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if user.disabled {
            return Err(account_disabled());
        }
        Ok(Authenticated { user, session })
    }
}

/// Create an account directly in `store`, without a running node (`roost user add`).
pub async fn create_account(store: &dyn Store, config: &AuthConfig, account: NewAccount) -> Result<User, ApiError> {
    let passwords = Passwords::new(config)?;
    create_with(store, config, &passwords, account).await
}

async fn create_with(
    store: &dyn Store,
    config: &AuthConfig,
    passwords: &Passwords,
    account: NewAccount,
) -> Result<User, ApiError> {
    let username = normalize_username(&account.username)?;
    let display_name = display_name_or(account.display_name.as_deref(), &username)?;
    password::check_password_rules(&account.password, config)?;
    let password_hash = passwords.hash(&account.password).await?;
    let new = NewUser {
        username,
        display_name,
        password_hash,
        role: if account.admin {
            ServerRole::Admin
        } else {
            ServerRole::User
        },
        created_at: now_millis(),
    };
    let user = store.create_user(new).await.map_err(|error| match error {
        StoreError::AlreadyExists { .. } => ApiError::new(ErrorCode::Conflict, "username is already taken"),
        other => other.into(),
    })?;
    tracing::info!(user = %user.id, username = %user.username, admin = account.admin, "Account created.");
    Ok(user)
}

/// Lowercase `raw` and check it is 3 to 32 of `[a-z0-9._-]`.
pub fn normalize_username(raw: &str) -> Result<String, ApiError> {
    let name = raw.to_ascii_lowercase();
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    if !USERNAME_CHARS.contains(&name.len()) || !name.bytes().all(allowed) {
        return Err(ApiError::invalid(
            "username must be 3 to 32 characters of a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(name)
}

/// The trimmed display name, or the username when none is given.
pub fn display_name_or(raw: Option<&str>, username: &str) -> Result<String, ApiError> {
    let Some(raw) = raw else {
        return Ok(username.to_owned());
    };
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > DISPLAY_NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "display_name must be 1 to {DISPLAY_NAME_MAX_CHARS} characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_device(device: String) -> Result<String, ApiError> {
    let trimmed = device.trim();
    if trimmed.chars().count() > DEVICE_MAX_CHARS || trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "device must be at most {DEVICE_MAX_CHARS} characters without control characters"
        )));
    }
    Ok(if trimmed.is_empty() {
        "unknown".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong username or password")
}

fn account_disabled() -> ApiError {
    ApiError::new(ErrorCode::AccountDisabled, "this account is disabled")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use actix::prelude::*;
    use roost_engine::delivery::hub::Connect;
    use roost_engine::delivery::ConnectionHandle;
    use roost_engine::delivery::Deliver;
    use roost_engine::delivery::Disconnect;
    use roost_engine::store::memory::MemoryStore;
    use roost_engine::store::AccountStore;

    use super::*;
    use crate::encoder::JsonEncoder;

    /// A connection that records why it was told to close.
    struct Probe(Arc<Mutex<Vec<DisconnectReason>>>);

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Probe {
        type Result = ();
        fn handle(&mut self, _msg: Deliver, _ctx: &mut Context<Self>) {}
    }

    impl Handler<Disconnect> for Probe {
        type Result = ();
        fn handle(&mut self, msg: Disconnect, _ctx: &mut Context<Self>) {
            self.0.lock().expect("lock").push(msg.reason);
        }
    }

    struct Fixture {
        auth: Auth,
        store: Arc<MemoryStore>,
        hub: Addr<SessionHub>,
    }

    fn fixture(config: AuthConfig) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let presence = Arc::new(roost_engine::presence::LocalPresence::start());
        let node = roost_engine::ids::NodeId::STANDALONE;
        let hub = SessionHub::new(store.clone(), Arc::new(JsonEncoder), 200, presence, node).start();
        let auth = Auth::new(store.clone(), hub.clone(), config, [9; 32]);
        Fixture { auth, store, hub }
    }

    fn config() -> AuthConfig {
        AuthConfig {
            login_failures_per_window: 3,
            ..password::tests::tiny_config()
        }
    }

    fn account(username: &str) -> NewAccount {
        NewAccount {
            username: username.into(),
            display_name: None,
            password: "correct horse".into(),
            admin: false,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    async fn connect(f: &Fixture, auth: &Authenticated) -> Arc<Mutex<Vec<DisconnectReason>>> {
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe(reasons.clone()).start();
        let handle = ConnectionHandle {
            deliver: probe.clone().recipient(),
            disconnect: probe.recipient(),
        };
        f.hub
            .send(Connect {
                user: auth.user.id,
                token: auth.session.token_hash,
                handle,
            })
            .await
            .expect("hub");
        reasons
    }

    /// Let the hub and probes process what was sent to them.
    async fn settle(f: &Fixture) {
        f.hub
            .send(roost_engine::delivery::hub::CountConnections)
            .await
            .expect("hub");
        actix_rt::task::yield_now().await;
    }

    #[test]
    fn username_rules() {
        assert_eq!(normalize_username("Alice.B-2_x").expect("valid"), "alice.b-2_x");
        for bad in ["ab", &"a".repeat(33), "al ice", "alice!", "ålice", "\u{212A}elvin", ""] {
            let error = normalize_username(bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidField);
        }
        assert!(normalize_username(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn display_name_and_device_rules() {
        assert_eq!(display_name_or(None, "alice").expect("default"), "alice");
        assert_eq!(display_name_or(Some("  Alice A. "), "alice").expect("trim"), "Alice A.");
        assert!(display_name_or(Some("  "), "alice").is_err());
        assert!(display_name_or(Some("a\u{7}b"), "alice").is_err());
        assert!(display_name_or(Some(&"é".repeat(64)), "alice").is_ok());
        assert!(display_name_or(Some(&"é".repeat(65)), "alice").is_err());
        assert_eq!(check_device(" ".into()).expect("default"), "unknown");
        assert!(check_device("a\nb".into()).is_err());
    }

    #[actix_rt::test]
    async fn create_account_validates_and_refuses_taken_names() {
        let f = fixture(config());
        let user = f.auth.create_user(account("Alice")).await.expect("created");
        assert_eq!(user.username, "alice");
        assert_eq!(user.display_name, "alice");
        assert_eq!(user.role, ServerRole::User);
        assert!(user.password_hash.starts_with("$argon2id$"));
        let taken = f.auth.create_user(account("ALICE")).await.expect_err("taken");
        assert_eq!(taken.code, ErrorCode::Conflict);
        let weak = NewAccount {
            password: "short".into(),
            ..account("bob")
        };
        assert_eq!(
            f.auth.create_user(weak).await.expect_err("weak").code,
            ErrorCode::InvalidField
        );
        let admin = create_account(
            f.store.as_ref(),
            &config(),
            NewAccount {
                admin: true,
                ..account("root")
            },
        )
        .await
        .expect("cli path");
        assert_eq!(admin.role, ServerRole::Admin);
    }

    #[actix_rt::test]
    async fn login_authenticate_logout() {
        let f = fixture(config());
        f.auth.create_user(account("alice")).await.expect("created");
        let outcome = f
            .auth
            .login("Alice", "correct horse", "web".into(), ip(1))
            .await
            .expect("login");
        assert_eq!(outcome.session.device, "web");
        let stored = f
            .store
            .session(&token::hash_token(&outcome.token))
            .await
            .expect("store");
        assert_eq!(stored.as_ref(), Some(&outcome.session), "only the hash is the key");
        let authed = f.auth.authenticate(&outcome.token).await.expect("valid token");
        assert_eq!(authed.user.id, outcome.user.id);
        let reasons = connect(&f, &authed).await;
        f.auth.logout(&authed.session).await.expect("logout");
        settle(&f).await;
        assert_eq!(*reasons.lock().expect("lock"), vec![DisconnectReason::Revoked]);
        let error = f.auth.authenticate(&outcome.token).await.expect_err("revoked");
        assert_eq!(error.code, ErrorCode::Unauthorized);
        assert_eq!(
            f.auth.authenticate("garbage!").await.expect_err("bad").code,
            ErrorCode::Unauthorized
        );
    }

    #[actix_rt::test]
    async fn wrong_username_and_wrong_password_look_the_same() {
        let f = fixture(config());
        f.auth.create_user(account("alice")).await.expect("created");
        let wrong_password = f
            .auth
            .login("alice", "nope", String::new(), ip(1))
            .await
            .expect_err("fails");
        let no_such_user = f
            .auth
            .login("mallory", "nope", String::new(), ip(1))
            .await
            .expect_err("fails");
        let invalid_name = f
            .auth
            .login("x", "nope", String::new(), ip(1))
            .await
            .expect_err("fails");
        for error in [&wrong_password, &no_such_user, &invalid_name] {
            assert_eq!(error.code, ErrorCode::InvalidCredentials);
            assert_eq!(error.message, wrong_password.message);
        }
    }

    #[actix_rt::test]
    async fn login_is_throttled_per_pair_only() {
        let f = fixture(config());
        f.auth.create_user(account("alice")).await.expect("created");
        for _ in 0..3 {
            let error = f
                .auth
                .login("alice", "guess", String::new(), ip(66))
                .await
                .expect_err("wrong");
            assert_eq!(error.code, ErrorCode::InvalidCredentials);
        }
        // Even the right password is not checked from the attacker's address now...
        let error = f
            .auth
            .login("alice", "correct horse", String::new(), ip(66))
            .await
            .expect_err("throttled");
        assert_eq!(error.code, ErrorCode::RateLimited);
        assert!(error.retry_after_ms.is_some_and(|ms| ms > 0));
        // ...but alice, elsewhere, is not locked out.
        f.auth
            .login("alice", "correct horse", String::new(), ip(1))
            .await
            .expect("victim unaffected");
    }

    #[actix_rt::test]
    async fn disabled_accounts_cannot_log_in_and_lose_their_sessions() {
        let f = fixture(config());
        let user = f.auth.create_user(account("alice")).await.expect("created");
        let outcome = f
            .auth
            .login("alice", "correct horse", "a".into(), ip(1))
            .await
            .expect("login");
        let authed = f.auth.authenticate(&outcome.token).await.expect("valid");
        let reasons = connect(&f, &authed).await;
        let ticket = f.auth.issue_ws_ticket(&authed);

        assert!(f.auth.set_disabled(user.id, true).await.expect("disabled").disabled);
        settle(&f).await;
        assert_eq!(*reasons.lock().expect("lock"), vec![DisconnectReason::UserDisabled]);
        assert_eq!(
            f.auth.authenticate(&outcome.token).await.expect_err("gone").code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            f.auth.redeem_ws_ticket(&ticket).await.expect_err("gone").code,
            ErrorCode::Unauthorized
        );
        let refused = f
            .auth
            .login("alice", "correct horse", String::new(), ip(1))
            .await
            .expect_err("disabled");
        assert_eq!(refused.code, ErrorCode::AccountDisabled);
        let wrong = f
            .auth
            .login("alice", "wrong", String::new(), ip(1))
            .await
            .expect_err("wrong");
        assert_eq!(
            wrong.code,
            ErrorCode::InvalidCredentials,
            "disabled is told only after a right password"
        );

        assert!(!f.auth.set_disabled(user.id, false).await.expect("enabled").disabled);
        f.auth
            .login("alice", "correct horse", String::new(), ip(1))
            .await
            .expect("login again");
        assert_eq!(
            f.auth.set_disabled(UserId(999), true).await.expect_err("none").code,
            ErrorCode::NotFound
        );
    }

    #[actix_rt::test]
    async fn expired_sessions_are_refused_and_deleted() {
        let f = fixture(config());
        let user = f.auth.create_user(account("alice")).await.expect("created");
        let token = token::new_token();
        let session = SessionRecord {
            token_hash: token::hash_token(&token),
            user: user.id,
            device: "old".into(),
            created_at: 0,
            expires_at: now_millis() - 1,
        };
        f.store.insert_session(&session).await.expect("insert");
        assert_eq!(
            f.auth.authenticate(&token).await.expect_err("expired").code,
            ErrorCode::Unauthorized
        );
        assert_eq!(f.store.session(&session.token_hash).await.expect("store"), None);
    }

    #[actix_rt::test]
    async fn ws_tickets_redeem_to_the_same_session() {
        let f = fixture(config());
        f.auth.create_user(account("alice")).await.expect("created");
        let outcome = f
            .auth
            .login("alice", "correct horse", String::new(), ip(1))
            .await
            .expect("login");
        let authed = f.auth.authenticate(&outcome.token).await.expect("valid");
        let ticket = f.auth.issue_ws_ticket(&authed);
        assert_eq!(f.auth.redeem_ws_ticket(&ticket).await.expect("redeems"), authed);
        let other = Auth::new(f.store.clone(), f.hub.clone(), config(), [8; 32]);
        assert_eq!(
            other.redeem_ws_ticket(&ticket).await.expect_err("foreign").code,
            ErrorCode::Unauthorized
        );
        f.auth.logout(&authed.session).await.expect("logout");
        assert_eq!(
            f.auth.redeem_ws_ticket(&ticket).await.expect_err("revoked").code,
            ErrorCode::Unauthorized
        );
    }
}
