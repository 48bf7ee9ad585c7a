//! Presence directory: who is online, on which nodes, since when; plus shared rate-limit counters.
//!
//! [`PresenceDirectory`] is the seam. [`local::LocalPresence`] keeps it in this process (one
//! node, the default); [`redis::RedisPresence`] keeps it in Redis so every node sees every
//! user (feature `redis`). The [`crate::delivery::hub::SessionHub`] stays the single owner of
//! this node's connections and *reports* to the directory: a user's first connection here
//! ([`PresenceDirectory::user_connected`]), their last disconnect
//! ([`PresenceDirectory::user_disconnected`]), and a periodic
//! [`PresenceDirectory::heartbeat`] that refreshes (and re-creates) the entries of every user
//! online here. Entries carry a TTL, so the users of a node that crashes or loses the directory
//! expire by themselves.
//!
//! The directory is **advisory**. Nothing durable lives in it and no delivery waits on it: a
//! failing call returns [`PresenceError::Unavailable`] quickly, callers log and carry on with
//! their local knowledge, and the next heartbeat after the directory returns restores this
//! node's entries.

pub mod lane;
pub mod local;
pub mod options;
#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde::Serialize;

use crate::ids::NodeId;
use crate::ids::UserId;
use crate::model::UnixMillis;

pub use local::LocalPresence;
pub use options::RedisOptions;
#[cfg(feature = "redis")]
pub use redis::RedisPresence;

/// Which presence directory a node uses (`presence = "local" | "redis"` in the node config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceBackend {
    /// In this process: right for a single node.
    #[default]
    Local,
    /// In Redis (the `[redis]` section): shared by every node.
    Redis,
}

/// Why a directory call did not happen. Presence is advisory: log it and continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The directory did not answer in time or at all. Continue with local knowledge; it
    /// recovers by itself.
    #[error("presence directory unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work (for example a malformed URL). Fix the configuration.
    #[error("invalid presence configuration: {0}")]
    InvalidConfig(String),
}

/// What the directory knows about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    pub user: UserId,
    /// At least one node holds a live connection of the user.
    pub online: bool,
    /// When the user was last known to be connected (a disconnect or a heartbeat), if ever.
    pub last_seen: Option<UnixMillis>,
    /// Nodes holding the user's connections, ascending.
    pub nodes: Vec<NodeId>,
}

/// The answer to a rate-limit [`PresenceDirectory::hit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    /// The hit is within the limit.
    pub allowed: bool,
    /// Hits left in the current window after this one.
    pub remaining: u32,
    /// When refused, how long until the window resets; zero when allowed.
    pub retry_after: Duration,
}

impl RateDecision {
    /// The decision for the `count`-th hit of a window with `limit` and `left` to run.
    pub fn of(count: u64, limit: u32, left: Duration) -> Self {
        let allowed = count <= u64::from(limit);
        Self {
            allowed,
            remaining: u64::from(limit).saturating_sub(count).try_into().unwrap_or(u32::MAX),
            retry_after: if allowed { Duration::ZERO } else { left },
        }
    }
}

/// Where users are online, and shared counters. Object-safe: the node holds an
/// `Arc<dyn PresenceDirectory>`.
///
/// Every method may fail with [`PresenceError::Unavailable`]; implementations bound how long a
/// call can take, so a caller never needs its own timeout.
#[async_trait]
pub trait PresenceDirectory: Send + Sync + 'static {
    /// `user` opened their first connection on `node`.
    async fn user_connected(&self, user: UserId, node: NodeId) -> Result<(), PresenceError>;

    /// `user`'s last connection on `node` closed at `last_seen`. They stay online if another
    /// node still holds a connection. `last_seen` never moves backwards.
    async fn user_disconnected(&self, user: UserId, node: NodeId, last_seen: UnixMillis) -> Result<(), PresenceError>;

    /// `users` are (still) online on `node`: refresh their entries' TTLs, re-creating entries
    /// the directory lost, and advance their last seen. Call it every
    /// [`PresenceDirectory::heartbeat_interval`], with an empty slice on an idle node (it then
    /// checks that the directory answers).
    async fn heartbeat(&self, users: &[UserId], node: NodeId) -> Result<(), PresenceError>;

    /// One entry per requested user, in the order asked.
    async fn lookup(&self, users: &[UserId]) -> Result<Vec<PresenceEntry>, PresenceError>;

    /// Count one hit against `key` in a fixed window of `window`, allowing `limit` hits per
    /// window (a limit of 0 refuses everything). Counters are shared by every node using the
    /// same directory. When this fails, callers should fail open and rely on local limits.
    async fn hit(&self, key: &str, window: Duration, limit: u32) -> Result<RateDecision, PresenceError>;

    /// How often the hub must call [`PresenceDirectory::heartbeat`] so entries do not expire.
    fn heartbeat_interval(&self) -> Duration;

    /// Whether the directory answered its most recent call (for readiness details; the node
    /// stays ready either way, since presence is advisory).
    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_decision_arithmetic() {
        let left = Duration::from_secs(7);
        assert_eq!(
            RateDecision::of(1, 3, left),
            RateDecision {
                allowed: true,
                remaining: 2,
                retry_after: Duration::ZERO
            }
        );
        assert!(RateDecision::of(3, 3, left).allowed);
        let refused = RateDecision::of(4, 3, left);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, left);
        assert!(!RateDecision::of(1, 0, left).allowed);
    }

    #[test]
    fn backend_names() {
        #[derive(Deserialize)]
        struct Doc {
            presence: PresenceBackend,
        }
        let parse = |s: &str| serde_json::from_str::<Doc>(s).map(|d| d.presence);
        assert_eq!(parse(r#"{"presence":"local"}"#).expect("local"), PresenceBackend::Local);
        assert_eq!(parse(r#"{"presence":"redis"}"#).expect("redis"), PresenceBackend::Redis);
        assert!(parse(r#"{"presence":"etcd"}"#).is_err());
    }
}
