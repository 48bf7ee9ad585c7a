//! Provisioning: before the ramp, create the plan's users with the admin account, log each one
//! in once (REST), and create the conversations as their first member.
//!
//! Usernames are `<prefix>-<n>`; a user that already exists (409, e.g. a re-run with the same
//! prefix) is reused, since logging in proves the password. Logins happen here, not during the
//! ramp, so the measured connect is the WebSocket upgrade with a bearer token until `welcome`.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use crate::config::RunConfig;
use crate::http::HttpClient;
use crate::http::HttpError;
use crate::plan::Kind;
use crate::plan::Plan;
use crate::pool;
use crate::target::Target;

/// Password of every provisioned user (test accounts on a test node).
pub const USER_PASSWORD: &str = "roost-loadtest-password";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "admin login as `{user}` failed (create it with `roost user add --admin`, pass --admin-password): {source}"
    )]
    AdminLogin {
        user: String,
        #[source]
        source: HttpError,
    },
    #[error("creating user `{username}` failed: {source}")]
    CreateUser {
        username: String,
        #[source]
        source: HttpError,
    },
    #[error("logging in `{username}` failed: {source}")]
    Login {
        username: String,
        #[source]
        source: HttpError,
    },
    #[error("creating conversation {index} failed: {source}")]
    Conversation {
        index: usize,
        #[source]
        source: HttpError,
    },
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub token: String,
    /// Index into the run's targets.
    pub target: usize,
}

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub admin_token: String,
    pub users: Vec<User>,
    /// Plan conversation index -> server conversation id.
    pub conversations: Vec<u64>,
    pub timings: SetupTimings,
}

/// How long each setup step took, in seconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SetupTimings {
    pub create_users_secs: f64,
    pub login_secs: f64,
    pub conversations_secs: f64,
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
    user: IdOnly,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

async fn login(client: &mut HttpClient, username: &str, password: &str) -> Result<LoginAnswer, HttpError> {
    let body = json!({ "username": username, "password": password, "device": "roost-loadtest" });
    client.json("POST", "/v1/auth/login", None, Some(&body)).await
}

/// Log in as the administrator on the first target.
pub async fn admin_login(target: &Target, user: &str, password: &str) -> Result<String, ProvisionError> {
    let mut client = HttpClient::new(target.clone());
    login(&mut client, user, password)
        .await
        .map(|a| a.token)
        .map_err(|source| ProvisionError::AdminLogin {
            user: user.to_owned(),
            source,
        })
}

pub async fn provision(config: &RunConfig, plan: &Plan, admin_token: String) -> Result<Provisioned, ProvisionError> {
    let targets = Arc::new(config.targets.clone());
    let prefix = Arc::new(config.user_prefix.clone());
    let concurrency = config.setup_concurrency;
    let mut timings = SetupTimings::default();

    let started = Instant::now();
    let token = Arc::new(admin_token.clone());
    let names = Arc::clone(&prefix);
    pool::run(&targets, plan.users, concurrency, move |i, mut clients| {
        let token = Arc::clone(&token);
        let username = format!("{names}-{i}");
        async move {
            let body = json!({ "username": username, "password": USER_PASSWORD, "display_name": username });
            let n = clients.len();
            let client = &mut clients[i % n];
            let result = match client
                .json::<IdOnly>("POST", "/v1/admin/users", Some(&token), Some(&body))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("conflict") => Ok(()),
                Err(source) => Err(ProvisionError::CreateUser { username, source }),
            };
            (clients, result)
        }
    })
    .await?;
    timings.create_users_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let users = pool::run(&targets, plan.users, concurrency, move |i, mut clients| {
        let username = format!("{prefix}-{i}");
        async move {
            let n = clients.len();
            let target = i % n;
            let result = match login(&mut clients[target], &username, USER_PASSWORD).await {
                Ok(a) => Ok(User {
                    id: a.user.id,
                    username,
                    token: a.token,
                    target,
                }),
                Err(source) => Err(ProvisionError::Login { username, source }),
            };
            (clients, result)
        }
    })
    .await?;
    timings.login_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let conversations = create_conversations(config, plan, &users).await?;
    timings.conversations_secs = started.elapsed().as_secs_f64();
    Ok(Provisioned {
        admin_token,
        users,
        conversations,
        timings,
    })
}

async fn create_conversations(config: &RunConfig, plan: &Plan, users: &[User]) -> Result<Vec<u64>, ProvisionError> {
    let users: Arc<Vec<User>> = Arc::new(users.to_vec());
    let planned = Arc::new(plan.conversations.clone());
    let prefix = config.user_prefix.clone();
    let count = planned.len();
    pool::run(
        &config.targets,
        count,
        config.setup_concurrency,
        move |index, mut clients| {
            let users = Arc::clone(&users);
            let planned = Arc::clone(&planned);
            let name = format!("{prefix} g{index}");
            async move {
                let c = &planned[index];
                let creator = &users[c.members[0]];
                let client = &mut clients[creator.target];
                let body = match c.kind {
                    Kind::Direct => json!({ "peer": users[c.members[1]].id }),
                    Kind::Group => {
                        let others: Vec<u64> = c.members[1..].iter().map(|&m| users[m].id).collect();
                        json!({ "name": name, "members": others })
                    }
                };
                let path = match c.kind {
                    Kind::Direct => "/v1/conversations/direct",
                    Kind::Group => "/v1/conversations/groups",
                };
                let result = client
                    .json::<IdOnly>("POST", path, Some(&creator.token), Some(&body))
                    .await
                    .map(|c| c.id)
                    .map_err(|source| ProvisionError::Conversation { index, source });
                (clients, result)
            }
        },
    )
    .await
}

/// Wait until `/readyz` answers 200 (a node just started), at most `timeout`.
pub async fn wait_ready(target: &Target, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut client = HttpClient::new(target.clone());
    while Instant::now() < deadline {
        if let Ok((200, _)) = client.raw("GET", "/readyz", None, None).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
