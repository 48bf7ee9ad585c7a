//! RedisPresence: the presence directory and rate-limit counters in Redis, shared by every node.
//!
//! Keys (all under [`RedisOptions::key_prefix`], `roost:` by default):
//! - `online:{user}`: a sorted set of the node ids holding the user's connections, each scored
//!   with its deadline (Redis clock, ms). Connects and heartbeats push a node's deadline to
//!   now + TTL; lookups ignore members past their deadline; the key itself expires at its
//!   latest deadline. So a node that crashes, or loses Redis, drops out of every user's set
//!   after at most one TTL without touching the other nodes' entries.
//! - `last_seen:{user}`: unix ms of the last disconnect or heartbeat, only ever moved forward.
//! - `rate:{key}`: a fixed-window counter (`INCR`, expiring with its window).
//!
//! Every update is one small Lua script, so it is atomic and reads one clock (Redis's `TIME`)
//! for deadlines. Needs Redis 5 or newer; Redis Cluster is not supported (scripts touch
//! several users' keys).
//!
//! Advisory, by construction: the client is a [`ConnectionManager`] that reconnects by itself;
//! every call is bounded by [`RedisOptions::command_timeout_ms`] and fails with
//! [`PresenceError::Unavailable`]; the first failure after a success is logged as a warning and
//! the recovery as info. While Redis is failing, one call per [`PROBE_INTERVAL`] goes through
//! to probe it and the others fail at once, so callers (a login's rate limit, say) do not each
//! wait out the timeout during an outage.
//!
//! The manager and its connection run on a small runtime of their own (thread `roost-redis`),
//! so they never depend on which actix arbiter happened to make a call, and they stop when the
//! last clone of the handle is dropped.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::aio::ConnectionManagerConfig;
use redis::RedisResult;
use redis::Script;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::PresenceDirectory;
use super::PresenceEntry;
use super::PresenceError;
use super::RateDecision;
use super::RedisOptions;
use crate::clock::now_millis;
use crate::ids::NodeId;
use crate::ids::UserId;
use crate::metrics;
use crate::model::UnixMillis;

/// Users per script call: bounds how long one call keeps Redis busy.
const USERS_PER_CALL: usize = 200;

/// While Redis is failing, at most one call per interval is let through to probe it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Mark users online on a node until now + TTL, and optionally advance their last seen.
/// KEYS: per user, its node set then its last-seen key. ARGV: node, TTL ms, last seen ms or ''.
const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = string.format('%.0f', now + tonumber(ARGV[2]))
local seen = tonumber(ARGV[3])
for i = 1, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
  redis.call('ZADD', KEYS[i], deadline, ARGV[1])
  local latest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[i], string.format('%.0f', tonumber(latest[2])))
  if seen then
    local current = tonumber(redis.call('GET', KEYS[i + 1]))
    if not current or current < seen then redis.call('SET', KEYS[i + 1], ARGV[3]) end
  end
end
return 1
";

/// A node no longer holds the user's connections. KEYS: node set, last-seen key.
/// ARGV: node, last seen ms.
const DISCONNECT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]))
if not current or current < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
";

/// KEYS: per user, node set then last-seen key. Returns per user {last seen or '', node...}.
const LOOKUP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = '(' .. string.format('%.0f', now)
local out = {}
for i = 1, #KEYS, 2 do
  local row = { redis.call('GET', KEYS[i + 1]) or '' }
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], live, '+inf')) do
    row[#row + 1] = node
  end
  out[#out + 1] = row
end
return out
";

/// A fixed-window counter. KEYS: counter. ARGV: window ms. Returns {count, ms left}.
const HIT: &str = r"
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return { count, left }
";

struct Scripts {
    refresh: Script,
    disconnect: Script,
    lookup: Script,
    hit: Script,
}

/// Handle to the Redis directory; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisPresence {
    inner: Arc<Inner>,
}

struct Inner {
    manager: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: String,
    heartbeat: Duration,
    ttl: Duration,
    command_timeout: Duration,
    healthy: AtomicBool,
    /// When the last call was let through while unhealthy, in ms since `epoch`.
    last_probe_ms: AtomicU64,
    epoch: Instant,
    runtime: Handle,
    /// Dropping it ends the `roost-redis` thread and the runtime with it.
    _stop: oneshot::Sender<()>,
}

impl RedisPresence {
    /// Validate `options` and start the client. Does not require Redis to be up: the first
    /// contact is waited for at most `connect_timeout_ms`, and if it fails the node starts
    /// anyway (with a warning) and the client keeps reconnecting in the background.
    pub async fn connect(options: &RedisOptions) -> Result<Self, PresenceError> {
        let problems = options.problems();
        if !problems.is_empty() {
            return Err(PresenceError::InvalidConfig(problems.join("; ")));
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| PresenceError::InvalidConfig(format!("redis.url: {e}")))?;
        let (runtime, stop) = spawn_runtime()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout()))
            .set_response_timeout(Some(options.command_timeout()))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(6);
        let manager = {
            // The manager spawns its tasks on the runtime it is created in: ours.
            let _entered = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| PresenceError::InvalidConfig(format!("redis client: {e}")))?
        };
        let presence = Self {
            inner: Arc::new(Inner {
                manager,
                scripts: Arc::new(Scripts {
                    refresh: Script::new(REFRESH),
                    disconnect: Script::new(DISCONNECT),
                    lookup: Script::new(LOOKUP),
                    hit: Script::new(HIT),
                }),
                prefix: options.key_prefix.clone(),
                heartbeat: options.heartbeat(),
                ttl: options.presence_ttl(),
                command_timeout: options.command_timeout(),
                // Optimistic, so that a first failure is reported as a transition.
                healthy: AtomicBool::new(true),
                last_probe_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                runtime,
                _stop: stop,
            }),
        };
        let first = presence.ping(options.connect_timeout()).await;
        if let Err(error) = first {
            tracing::info!(%error, "Starting without Redis; the client keeps reconnecting in the background.");
        } else {
            tracing::info!(url = %super::options::redact_url(&options.url), "Connected to Redis.");
        }
        Ok(presence)
    }

    /// Whether the most recent call succeeded (for readiness details).
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Ask Redis for a PONG within `limit`.
    pub async fn ping(&self, limit: Duration) -> Result<(), PresenceError> {
        self.run("ping", limit, |mut conn, _| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    fn online_key(&self, user: UserId) -> String {
        format!("{}online:{}", self.inner.prefix, user)
    }

    fn last_seen_key(&self, user: UserId) -> String {
        format!("{}last_seen:{}", self.inner.prefix, user)
    }

    fn user_keys(&self, users: &[UserId]) -> Vec<String> {
        users
            .iter()
            .flat_map(|u| [self.online_key(*u), self.last_seen_key(*u)])
            .collect()
    }

    /// Run `call` on the client's runtime, bounded by `limit`, and record the outcome.
    async fn run<T, F, Fut>(&self, operation: &'static str, limit: Duration, call: F) -> Result<T, PresenceError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager, Arc<Scripts>) -> Fut,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
    {
        if !self.admit() {
            metrics::presence_error(operation);
            return Err(PresenceError::Unavailable(format!(
                "redis {operation}: Redis is failing; next attempt within {PROBE_INTERVAL:?}"
            )));
        }
        let work = call(self.inner.manager.clone(), self.inner.scripts.clone());
        let outcome = self
            .inner
            .runtime
            .spawn(async move { tokio::time::timeout(limit, work).await })
            .await;
        let result = match outcome {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(PresenceError::Unavailable(format!("redis {operation}: {error}"))),
            Ok(Err(_elapsed)) => Err(PresenceError::Unavailable(format!(
                "redis {operation}: no answer within {limit:?}"
            ))),
            Err(_) => Err(PresenceError::Unavailable("the redis client runtime stopped".into())),
        };
        self.record(operation, &result);
        result
    }

    /// Whether a call may go to Redis now: always while healthy, else one per probe interval.
    fn admit(&self) -> bool {
        if self.healthy() {
            return true;
        }
        let now = self.millis();
        let last = self.inner.last_probe_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= PROBE_INTERVAL.as_millis() as u64
            && self
                .inner
                .last_probe_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record<T>(&self, operation: &'static str, result: &Result<T, PresenceError>) {
        let ok = result.is_ok();
        let was = self.inner.healthy.swap(ok, Ordering::Relaxed);
        match result {
            Err(error) => {
                metrics::presence_error(operation);
                if was {
                    // The failed call counts as the first probe.
                    self.inner.last_probe_ms.store(self.millis(), Ordering::Relaxed);
                    tracing::warn!(%error, "Redis is unavailable; presence degrades to this node's view.");
                } else {
                    tracing::debug!(%error, "Redis is still unavailable.");
                }
            }
            Ok(_) if !was => tracing::info!("Redis is reachable again; presence is shared again."),
            Ok(_) => {}
        }
    }

    async fn refresh(
        &self,
        operation: &'static str,
        users: &[UserId],
        node: NodeId,
        seen: Option<UnixMillis>,
    ) -> Result<(), PresenceError> {
        let ttl_ms = self.inner.ttl.as_millis().to_string();
        let seen = seen.map(|s| s.to_string()).unwrap_or_default();
        for chunk in users.chunks(USERS_PER_CALL) {
            let keys = self.user_keys(chunk);
            let (ttl_ms, seen) = (ttl_ms.clone(), seen.clone());
            self.run(
                operation,
                self.inner.command_timeout,
                move |mut conn, scripts| async move {
                    let mut call = scripts.refresh.prepare_invoke();
                    call.key(keys).arg(node.0).arg(ttl_ms).arg(seen);
                    call.invoke_async::<()>(&mut conn).await
                },
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PresenceDirectory for RedisPresence {
    async fn user_connected(&self, user: UserId, node: NodeId) -> Result<(), PresenceError> {
        self.refresh("user_connected", &[user], node, None).await
    }

    async fn user_disconnected(&self, user: UserId, node: NodeId, last_seen: UnixMillis) -> Result<(), PresenceError> {
        let keys = [self.online_key(user), self.last_seen_key(user)];
        self.run(
            "user_disconnected",
            self.inner.command_timeout,
            move |mut conn, scripts| async move {
                let mut call = scripts.disconnect.prepare_invoke();
                call.key(&keys[..]).arg(node.0).arg(last_seen);
                call.invoke_async::<()>(&mut conn).await
            },
        )
        .await
    }

    async fn heartbeat(&self, users: &[UserId], node: NodeId) -> Result<(), PresenceError> {
        if users.is_empty() {
            // Nothing to refresh; still check Redis, so health and reconnection keep moving.
            return self.ping(self.inner.command_timeout).await;
        }
        self.refresh("heartbeat", users, node, Some(now_millis())).await
    }

    async fn lookup(&self, users: &[UserId]) -> Result<Vec<PresenceEntry>, PresenceError> {
        let mut entries = Vec::with_capacity(users.len());
        for chunk in users.chunks(USERS_PER_CALL) {
            let keys = self.user_keys(chunk);
            let rows: Vec<Vec<String>> = self
                .run(
                    "lookup",
                    self.inner.command_timeout,
                    move |mut conn, scripts| async move {
                        let mut call = scripts.lookup.prepare_invoke();
                        call.key(keys);
                        call.invoke_async(&mut conn).await
                    },
                )
                .await?;
            if rows.len() != chunk.len() {
                return Err(PresenceError::Unavailable(format!(
                    "redis lookup: {} rows for {} users",
                    rows.len(),
                    chunk.len()
                )));
            }
            entries.extend(chunk.iter().zip(rows).map(|(user, row)| entry_from_row(*user, row)));
        }
        Ok(entries)
    }

    async fn hit(&self, key: &str, window: Duration, limit: u32) -> Result<RateDecision, PresenceError> {
        let counter = format!("{}rate:{}", self.inner.prefix, key);
        let window_ms = window.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let (count, left_ms): (i64, i64) = self
            .run("hit", self.inner.command_timeout, move |mut conn, scripts| async move {
                let mut call = scripts.hit.prepare_invoke();
                call.key(counter).arg(window_ms);
                call.invoke_async(&mut conn).await
            })
            .await?;
        let left = Duration::from_millis(left_ms.max(0) as u64);
        Ok(RateDecision::of(count.max(0) as u64, limit, left))
    }

    fn heartbeat_interval(&self) -> Duration {
        self.inner.heartbeat
    }

    fn healthy(&self) -> bool {
        RedisPresence::healthy(self)
    }
}

/// `{last seen or '', node...}` from the lookup script.
fn entry_from_row(user: UserId, row: Vec<String>) -> PresenceEntry {
    let mut row = row.into_iter();
    let last_seen = row.next().and_then(|s| s.parse::<UnixMillis>().ok());
    let mut nodes: Vec<NodeId> = row.filter_map(|n| n.parse().ok().map(NodeId)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    PresenceEntry {
        user,
        online: !nodes.is_empty(),
        last_seen,
        nodes,
    }
}

/// A current-thread runtime on its own thread, running until the returned sender is dropped.
fn spawn_runtime() -> Result<(Handle, oneshot::Sender<()>), PresenceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PresenceError::Unavailable(format!("cannot start the redis client runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("roost-redis".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| PresenceError::Unavailable(format!("cannot start the redis client thread: {e}")))?;
    Ok((handle, stop_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_entries() {
        let row = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            entry_from_row(UserId(3), row(&["1700", "7", "2", "7"])),
            PresenceEntry {
                user: UserId(3),
                online: true,
                last_seen: Some(1700),
                nodes: vec![NodeId(2), NodeId(7)]
            }
        );
        let offline = entry_from_row(UserId(4), row(&[""]));
        assert!(!offline.online);
        assert_eq!(offline.last_seen, None);
    }
}
