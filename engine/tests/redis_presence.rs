//! Integration tier: `RedisPresence` against a real redis-server.
//!
//! Needs Redis at `ROOST_REDIS_URL` (default `redis://127.0.0.1:6390`, what
//! `scripts/redis.sh start` runs). A test that cannot reach it fails and says so; nothing is
//! skipped. Each test writes under its own key prefix and deletes its keys at the end. The
//! outage test starts and stops a second, private redis-server (through `scripts/redis.sh`, on
//! `ROOST_REDIS_OUTAGE_PORT`, default 6391) so stopping it cannot disturb the other tests.
//! Waits are bounded polls for liveness; nothing asserts how fast Redis is.
#![cfg(feature = "redis")]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use roost_engine::ids::NodeId;
use roost_engine::ids::UserId;
use roost_engine::presence::PresenceDirectory;
use roost_engine::presence::PresenceEntry;
use roost_engine::presence::PresenceError;
use roost_engine::presence::RedisOptions;
use roost_engine::presence::RedisPresence;

const NODE_A: NodeId = NodeId(1);
const NODE_B: NodeId = NodeId(2);
/// Generous bound on how long a failing call may take (its own timeout is far shorter).
const FAIL_FAST: Duration = Duration::from_secs(5);

fn redis_url() -> String {
    std::env::var("ROOST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".to_owned())
}

/// Options for one test: its own key prefix; entries outlive any pause of a busy machine.
fn options(url: &str, test: &str) -> RedisOptions {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RedisOptions {
        url: url.to_owned(),
        key_prefix: format!("roost-test:{test}:{}:{nanos}:", std::process::id()),
        heartbeat_secs: 1,
        presence_ttl_secs: 30,
        connect_timeout_ms: 1000,
        command_timeout_ms: 500,
    }
}

/// A client on the shared test Redis, or a failure that says how to start it. Redis is up for
/// these tests, so their calls get generous timeouts: a busy machine may stall a round trip
/// for longer than the 500 ms the fail-fast tests use, and a timed-out call fails the test.
async fn connect_shared(options: RedisOptions) -> (RedisPresence, RedisOptions) {
    let options = RedisOptions {
        connect_timeout_ms: 10_000,
        command_timeout_ms: 10_000,
        ..options
    };
    let presence = RedisPresence::connect(&options).await.expect("valid options");
    if let Err(error) = presence.ping(Duration::from_secs(2)).await {
        panic!(
            "Redis is not reachable at {} ({error}). Run `scripts/redis.sh start` first \
             (or point ROOST_REDIS_URL at a Redis you can write to).",
            redis_url()
        );
    }
    (presence, options)
}

async fn another_node(options: &RedisOptions) -> RedisPresence {
    RedisPresence::connect(options).await.expect("valid options")
}

async fn entry(presence: &RedisPresence, user: u64) -> PresenceEntry {
    presence.lookup(&[UserId(user)]).await.expect("lookup").remove(0)
}

/// Poll until `check` holds for `user`, for at most `limit`.
async fn eventually(presence: &RedisPresence, user: u64, limit: Duration, check: impl Fn(&PresenceEntry) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let e = entry(presence, user).await;
        if check(&e) {
            return;
        }
        assert!(Instant::now() < deadline, "not reached within {limit:?}: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heartbeat user 7 on B, then look it up through `via`, until B is its only node. A lookup
/// right after the heartbeat sees B's entry at most one round trip old; a stall of the test longer
/// than the TTL may still let it lapse first, and the next heartbeat brings it back, so such a
/// lookup is not counted.
async fn heartbeat_until_only_b(b: &RedisPresence, via: &RedisPresence, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.heartbeat(&[UserId(7)], NODE_B).await.expect("heartbeat");
        let e = entry(via, 7).await;
        if e.nodes == vec![NODE_B] {
            return;
        }
        assert!(Instant::now() < deadline, "{failure}: {e:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Delete every key a test wrote.
async fn cleanup(options: &RedisOptions) {
    let client = redis::Client::open(options.url.as_str()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", options.key_prefix))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("del");
    }
}

async fn key_exists(options: &RedisOptions, key: &str) -> bool {
    let client = redis::Client::open(options.url.as_str()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let n: u32 = redis::cmd("EXISTS")
        .arg(format!("{}{key}", options.key_prefix))
        .query_async(&mut conn)
        .await
        .expect("exists");
    n == 1
}

#[tokio::test]
async fn two_nodes_share_one_directory() {
    let (a, options) = connect_shared(options(&redis_url(), "two_nodes")).await;
    let b = another_node(&options).await;

    tracing::info!("--- user 1 connects on both nodes, user 2 on B only");
    a.user_connected(UserId(1), NODE_A).await.expect("a");
    b.user_connected(UserId(1), NODE_B).await.expect("b");
    b.user_connected(UserId(2), NODE_B).await.expect("b");
    let found = a.lookup(&[UserId(2), UserId(1), UserId(3)]).await.expect("lookup");
    assert_eq!(
        found.iter().map(|e| e.user.0).collect::<Vec<_>>(),
        vec![2, 1, 3],
        "order kept"
    );
    assert_eq!(found[0].nodes, vec![NODE_B]);
    assert_eq!(found[1].nodes, vec![NODE_A, NODE_B]);
    assert!(found[1].online);
    assert_eq!(
        found[2],
        PresenceEntry {
            user: UserId(3),
            online: false,
            last_seen: None,
            nodes: vec![]
        }
    );

    tracing::info!("--- A's last connection closes: still online on B");
    a.user_disconnected(UserId(1), NODE_A, 1_000).await.expect("a");
    let e = entry(&b, 1).await;
    assert!(e.online);
    assert_eq!((e.nodes, e.last_seen), (vec![NODE_B], Some(1_000)));

    tracing::info!("--- B's closes too: offline; last seen never moves backwards");
    b.user_disconnected(UserId(1), NODE_B, 900).await.expect("b");
    let e = entry(&a, 1).await;
    assert!(!e.online && e.nodes.is_empty());
    assert_eq!(e.last_seen, Some(1_000));
    assert!(
        !key_exists(&options, "online:1").await,
        "an empty node set leaves no key"
    );

    tracing::info!("--- a heartbeat advances last seen");
    b.heartbeat(&[UserId(2)], NODE_B).await.expect("heartbeat");
    assert!(entry(&a, 2).await.last_seen.is_some_and(|at| at > 1_000));
    assert!(a.healthy() && b.healthy());
    cleanup(&options).await;
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_expires() {
    // A short TTL: this test waits for entries to expire.
    let short = RedisOptions {
        presence_ttl_secs: 2,
        ..options(&redis_url(), "expiry")
    };
    let (a, options) = connect_shared(short).await;
    let b = another_node(&options).await;
    a.user_connected(UserId(7), NODE_A).await.expect("a");
    b.user_connected(UserId(7), NODE_B).await.expect("b");

    tracing::info!("--- B keeps heartbeating, A goes silent (as if it crashed)");
    heartbeat_until_only_b(&b, &b, "A's entry never expired while B's stayed").await;

    tracing::info!("--- B goes silent too: the user is offline and the key is gone");
    eventually(&a, 7, Duration::from_secs(30), |e| !e.online).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while key_exists(&options, "online:7").await {
        assert!(Instant::now() < deadline, "the node set key never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tracing::info!("--- B heartbeats again (say, after Redis lost its data): the entry is back");
    heartbeat_until_only_b(&b, &a, "a heartbeat never brought B back").await;
    cleanup(&options).await;
}

#[tokio::test]
async fn rate_limit_counters_are_shared_between_nodes() {
    let (a, options) = connect_shared(options(&redis_url(), "rate")).await;
    let b = another_node(&options).await;
    let window = Duration::from_secs(3);

    // The four hits must land in one window. If this test stalled for a whole window in the
    // middle (a busy machine), the counter may have reset: try again on a fresh key.
    let mut attempt = 0;
    let key = loop {
        attempt += 1;
        assert!(attempt <= 5, "four hits never fit in one {window:?} window");
        let key = format!("login:alice{attempt}");
        let started = Instant::now();
        let first = a.hit(&key, window, 3).await.expect("hit");
        let second = b.hit(&key, window, 3).await.expect("hit");
        let third = a.hit(&key, window, 3).await.expect("hit");
        let refused = b.hit(&key, window, 3).await.expect("hit");
        if started.elapsed() >= window {
            continue;
        }
        assert!(first.allowed);
        assert_eq!(first.remaining, 2);
        assert!(second.allowed && third.allowed);
        assert!(!refused.allowed, "the fourth hit across both nodes is refused");
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= window);
        break key;
    };
    assert!(
        a.hit("login:bob", window, 3).await.expect("hit").allowed,
        "keys are separate"
    );

    tracing::info!("--- the window passes: allowed again");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.hit(&key, window, 3).await.expect("hit").allowed {
        assert!(Instant::now() < deadline, "the window never reset");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cleanup(&options).await;
}

#[tokio::test]
async fn a_dead_address_fails_fast_and_bad_options_are_refused() {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let options = options("redis://127.0.0.1:1", "dead");
    let presence = RedisPresence::connect(&options).await.expect("starts without Redis");
    assert_all_calls_fail_fast(&presence).await;

    let bad = RedisOptions {
        url: "http://127.0.0.1:6390".into(),
        ..RedisOptions::default()
    };
    assert!(matches!(
        RedisPresence::connect(&bad).await,
        Err(PresenceError::InvalidConfig(_))
    ));
}

async fn assert_all_calls_fail_fast(presence: &RedisPresence) {
    let u = [UserId(1)];
    let started = Instant::now();
    let outcomes = [
        presence.user_connected(UserId(1), NODE_A).await.err(),
        presence.user_disconnected(UserId(1), NODE_A, 1).await.err(),
        presence.heartbeat(&u, NODE_A).await.err(),
        presence.heartbeat(&[], NODE_A).await.err(),
        presence.lookup(&u).await.err(),
        presence.hit("k", Duration::from_secs(1), 1).await.err(),
    ];
    for outcome in outcomes {
        assert!(matches!(outcome, Some(PresenceError::Unavailable(_))), "{outcome:?}");
    }
    assert!(
        started.elapsed() < FAIL_FAST * 6,
        "calls must be bounded by their timeout"
    );
    assert!(!presence.healthy());
}

/// A private redis-server for the outage test, stopped when dropped.
struct PrivateRedis {
    port: String,
}

impl PrivateRedis {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis.sh")
    }

    fn run(&self, action: &str) {
        let status = Command::new("bash")
            .arg(Self::script())
            .arg(action)
            .env("ROOST_REDIS_PORT", &self.port)
            .status()
            .expect("run scripts/redis.sh");
        assert!(
            status.success(),
            "scripts/redis.sh {action} failed on port {}",
            self.port
        );
    }

    fn start() -> Self {
        let port = std::env::var("ROOST_REDIS_OUTAGE_PORT").unwrap_or_else(|_| "6391".to_owned());
        let redis = Self { port };
        redis.run("start");
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .env("ROOST_REDIS_PORT", &self.port)
            .status();
    }
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_same_client_recovers_by_itself() {
    let redis = PrivateRedis::start();
    let options = options(&redis.url(), "outage");
    let presence = RedisPresence::connect(&options).await.expect("valid options");
    presence.user_connected(UserId(1), NODE_A).await.expect("redis is up");
    assert!(presence.healthy());

    tracing::info!("--- Redis stops: every call fails fast with Unavailable");
    redis.run("stop");
    assert_all_calls_fail_fast(&presence).await;

    tracing::info!("--- Redis is back (empty): the same client reconnects, a heartbeat restores the entry");
    redis.run("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = presence.heartbeat(&[UserId(1)], NODE_A).await {
        assert!(Instant::now() < deadline, "never recovered: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(presence.healthy());
    let e = entry(&presence, 1).await;
    assert_eq!(e.nodes, vec![NODE_A], "{e:?}");
    assert!(presence.hit("k", Duration::from_secs(5), 1).await.expect("hit").allowed);
    drop(redis);
}
