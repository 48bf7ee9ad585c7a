//! LocalPresence: the presence directory kept in this process, for a node that runs alone.
//!
//! The state is owned by one actor ([`LocalPresenceActor`]); [`LocalPresence`] is the handle
//! that implements [`PresenceDirectory`] by sending it messages. The rules live in
//! [`LocalState`], a plain structure that takes the clock as an argument, so they are unit
//! tested without an actor or a real clock. Entries expire like the Redis ones (a node that
//! stops heartbeating drops out), and rate counters are bounded in number like the login
//! throttle's: at capacity, expired windows go first, then the oldest tenth.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use async_trait::async_trait;

use super::PresenceDirectory;
use super::PresenceEntry;
use super::PresenceError;
use super::RateDecision;
use crate::clock::now_millis;
use crate::ids::NodeId;
use crate::ids::UserId;
use crate::model::UnixMillis;

/// Heartbeat interval of a default [`LocalPresence`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Entry lifetime without a heartbeat of a default [`LocalPresence`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Most rate-limit counters kept at once.
pub const DEFAULT_COUNTER_CAPACITY: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    count: u64,
}

/// The directory's data and rules, with the clock passed in.
#[derive(Debug)]
pub struct LocalState {
    ttl: Duration,
    counter_capacity: usize,
    /// user -> node -> deadline.
    online: HashMap<UserId, BTreeMap<NodeId, Instant>>,
    last_seen: HashMap<UserId, UnixMillis>,
    counters: HashMap<String, Window>,
}

impl LocalState {
    pub fn new(ttl: Duration, counter_capacity: usize) -> Self {
        Self {
            ttl,
            counter_capacity: counter_capacity.max(2),
            online: HashMap::new(),
            last_seen: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    pub fn connected(&mut self, user: UserId, node: NodeId, now: Instant) {
        self.online.entry(user).or_default().insert(node, now + self.ttl);
    }

    pub fn disconnected(&mut self, user: UserId, node: NodeId, last_seen: UnixMillis) {
        if let Some(nodes) = self.online.get_mut(&user) {
            nodes.remove(&node);
            if nodes.is_empty() {
                self.online.remove(&user);
            }
        }
        self.seen(user, last_seen);
    }

    pub fn heartbeat(&mut self, users: &[UserId], node: NodeId, now: Instant, now_ms: UnixMillis) {
        for user in users {
            self.connected(*user, node, now);
            self.seen(*user, now_ms);
        }
    }

    pub fn lookup(&self, users: &[UserId], now: Instant) -> Vec<PresenceEntry> {
        users
            .iter()
            .map(|user| {
                let nodes: Vec<NodeId> = self
                    .online
                    .get(user)
                    .into_iter()
                    .flatten()
                    .filter(|(_, deadline)| **deadline > now)
                    .map(|(node, _)| *node)
                    .collect();
                PresenceEntry {
                    user: *user,
                    online: !nodes.is_empty(),
                    last_seen: self.last_seen.get(user).copied(),
                    nodes,
                }
            })
            .collect()
    }

    pub fn hit(&mut self, key: &str, window: Duration, limit: u32, now: Instant) -> RateDecision {
        if !self.counters.contains_key(key) && self.counters.len() >= self.counter_capacity {
            self.evict_counters(now, window);
        }
        let fresh = Window { started: now, count: 0 };
        let counter = self.counters.entry(key.to_owned()).or_insert(fresh);
        if now.saturating_duration_since(counter.started) >= window {
            *counter = fresh;
        }
        counter.count = counter.count.saturating_add(1);
        let left = window.saturating_sub(now.saturating_duration_since(counter.started));
        RateDecision::of(counter.count, limit, left)
    }

    /// Forget expired entries (and counters idle for longer than `counter_idle`).
    pub fn sweep(&mut self, now: Instant, counter_idle: Duration) {
        self.online.retain(|_, nodes| {
            nodes.retain(|_, deadline| *deadline > now);
            !nodes.is_empty()
        });
        self.counters
            .retain(|_, w| now.saturating_duration_since(w.started) < counter_idle);
    }

    fn seen(&mut self, user: UserId, at: UnixMillis) {
        let last = self.last_seen.entry(user).or_insert(at);
        *last = (*last).max(at);
    }

    fn evict_counters(&mut self, now: Instant, window: Duration) {
        // Windows differ per key; one older than the current key's window is at least stale.
        self.counters
            .retain(|_, w| now.saturating_duration_since(w.started) < window);
        if self.counters.len() < self.counter_capacity {
            return;
        }
        let mut by_age: Vec<(Instant, String)> = self.counters.iter().map(|(k, w)| (w.started, k.clone())).collect();
        by_age.sort_unstable_by_key(|(started, _)| *started);
        let drop = (self.counters.len() + 1 - self.counter_capacity).max(self.counter_capacity / 10);
        for (_, key) in by_age.into_iter().take(drop) {
            self.counters.remove(&key);
        }
    }
}

/// Owns a [`LocalState`]; sweeps expired entries once per TTL.
pub struct LocalPresenceActor {
    state: LocalState,
    ttl: Duration,
}

impl Actor for LocalPresenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.ttl, |actor, _| {
            // Counters of any sensible window (seconds to an hour) are idle well before this.
            actor.state.sweep(Instant::now(), Duration::from_secs(3600));
        });
    }
}

/// An operation on the state, given the current instant.
type Operation<R> = Box<dyn FnOnce(&mut LocalState, Instant) -> R + Send>;

/// Run an operation on the actor's state (every call is one such message).
struct Apply<R>(Operation<R>);

impl<R: Send + 'static> Message for Apply<R> {
    type Result = R;
}

impl<R: Send + 'static> Handler<Apply<R>> for LocalPresenceActor {
    type Result = MessageResult<Apply<R>>;

    fn handle(&mut self, msg: Apply<R>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((msg.0)(&mut self.state, Instant::now()))
    }
}

/// Handle to a [`LocalPresenceActor`]; cheap to clone.
#[derive(Clone)]
pub struct LocalPresence {
    addr: Addr<LocalPresenceActor>,
    heartbeat: Duration,
}

impl LocalPresence {
    /// Start the actor on the current arbiter with the default timings. Must run inside an actix
    /// `System`.
    pub fn start() -> Self {
        Self::start_with(DEFAULT_HEARTBEAT, DEFAULT_TTL)
    }

    /// Start the actor on the current arbiter; entries live `ttl` without a heartbeat, and the
    /// hub heartbeats every `heartbeat`.
    pub fn start_with(heartbeat: Duration, ttl: Duration) -> Self {
        let state = LocalState::new(ttl, DEFAULT_COUNTER_CAPACITY);
        let addr = LocalPresenceActor { state, ttl }.start();
        Self { addr, heartbeat }
    }

    async fn apply<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LocalState, Instant) -> R + Send + 'static,
    ) -> Result<R, PresenceError> {
        self.addr
            .send(Apply(Box::new(f)))
            .await
            .map_err(|_| PresenceError::Unavailable("the local presence actor stopped".into()))
    }
}

#[async_trait]
impl PresenceDirectory for LocalPresence {
    async fn user_connected(&self, user: UserId, node: NodeId) -> Result<(), PresenceError> {
        self.apply(move |s, now| s.connected(user, node, now)).await
    }

    async fn user_disconnected(&self, user: UserId, node: NodeId, last_seen: UnixMillis) -> Result<(), PresenceError> {
        self.apply(move |s, _| s.disconnected(user, node, last_seen)).await
    }

    async fn heartbeat(&self, users: &[UserId], node: NodeId) -> Result<(), PresenceError> {
        let users = users.to_vec();
        let now_ms = now_millis();
        self.apply(move |s, now| s.heartbeat(&users, node, now, now_ms)).await
    }

    async fn lookup(&self, users: &[UserId]) -> Result<Vec<PresenceEntry>, PresenceError> {
        let users = users.to_vec();
        self.apply(move |s, now| s.lookup(&users, now)).await
    }

    async fn hit(&self, key: &str, window: Duration, limit: u32) -> Result<RateDecision, PresenceError> {
        let key = key.to_owned();
        self.apply(move |s, now| s.hit(&key, window, limit, now)).await
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const TTL: Duration = Duration::from_secs(30);

    fn state() -> LocalState {
        LocalState::new(TTL, 100)
    }

    fn entry(s: &LocalState, user: u64, now: Instant) -> PresenceEntry {
        s.lookup(&[UserId(user)], now).remove(0)
    }

    #[test]
    fn online_on_any_node_until_the_last_disconnect() {
        let mut s = state();
        let now = Instant::now();
        assert_eq!(
            entry(&s, 7, now),
            PresenceEntry {
                user: UserId(7),
                online: false,
                last_seen: None,
                nodes: vec![]
            }
        );
        s.connected(UserId(7), B, now);
        s.connected(UserId(7), A, now);
        assert_eq!(entry(&s, 7, now).nodes, vec![A, B]);
        s.disconnected(UserId(7), A, 1_000);
        let e = entry(&s, 7, now);
        assert!(e.online);
        assert_eq!((e.nodes, e.last_seen), (vec![B], Some(1_000)));
        s.disconnected(UserId(7), B, 2_000);
        let e = entry(&s, 7, now);
        assert!(!e.online);
        assert_eq!(e.last_seen, Some(2_000));
    }

    #[test]
    fn lookup_keeps_the_order_asked() {
        let mut s = state();
        let now = Instant::now();
        s.connected(UserId(2), A, now);
        let users: Vec<UserId> = s
            .lookup(&[UserId(3), UserId(2), UserId(3)], now)
            .iter()
            .map(|e| e.user)
            .collect();
        assert_eq!(users, vec![UserId(3), UserId(2), UserId(3)]);
    }

    #[test]
    fn a_node_that_stops_heartbeating_expires() {
        let mut s = state();
        let t0 = Instant::now();
        s.connected(UserId(1), A, t0);
        s.connected(UserId(1), B, t0);
        for step in 1..=4u64 {
            let now = t0 + Duration::from_secs(10 * step);
            s.heartbeat(&[UserId(1)], B, now, 10_000 * step as i64);
        }
        let later = t0 + TTL + Duration::from_secs(1);
        let e = entry(&s, 1, later);
        assert_eq!(e.nodes, vec![B], "A stopped heartbeating");
        assert_eq!(e.last_seen, Some(40_000), "heartbeats advance last seen");
        s.sweep(later, Duration::from_secs(3600));
        assert_eq!(s.online[&UserId(1)].len(), 1, "the sweep forgets A's entry");
        let much_later = t0 + Duration::from_secs(40) + TTL;
        assert!(!entry(&s, 1, much_later).online);
        s.sweep(much_later, Duration::from_secs(3600));
        assert!(s.online.is_empty());
    }

    #[test]
    fn heartbeat_recreates_lost_entries_and_last_seen_never_goes_back() {
        let mut s = state();
        let now = Instant::now();
        s.heartbeat(&[UserId(5)], A, now, 5_000);
        assert!(entry(&s, 5, now).online);
        s.disconnected(UserId(5), A, 4_000);
        assert_eq!(entry(&s, 5, now).last_seen, Some(5_000));
    }

    #[test]
    fn fixed_window_counter() {
        let mut s = state();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        for i in 1..=3 {
            let d = s.hit("k", window, 3, t0);
            assert!(d.allowed, "hit {i}");
            assert_eq!(d.remaining, 3 - i);
        }
        let refused = s.hit("k", window, 3, t0 + Duration::from_secs(20));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(40));
        assert!(s.hit("other", window, 3, t0).allowed, "keys are separate");
        assert!(s.hit("k", window, 3, t0 + window).allowed, "a new window");
    }

    #[test]
    fn counters_are_bounded() {
        let mut s = LocalState::new(TTL, 50);
        let t0 = Instant::now();
        for i in 0..500u64 {
            s.hit(
                &format!("k{i}"),
                Duration::from_secs(60),
                1,
                t0 + Duration::from_millis(i),
            );
        }
        assert!(s.counters.len() <= 50, "{}", s.counters.len());
    }

    #[actix_rt::test]
    async fn the_handle_talks_to_the_actor() {
        let presence = LocalPresence::start();
        assert_eq!(presence.heartbeat_interval(), DEFAULT_HEARTBEAT);
        assert!(presence.healthy());
        presence.user_connected(UserId(1), A).await.expect("connect");
        presence.heartbeat(&[UserId(1)], A).await.expect("heartbeat");
        let found = presence.lookup(&[UserId(1), UserId(2)]).await.expect("lookup");
        assert!(found[0].online && !found[1].online);
        presence.user_disconnected(UserId(1), A, 9).await.expect("disconnect");
        let found = presence.lookup(&[UserId(1)]).await.expect("lookup");
        assert!(!found[0].online);
        assert!(found[0].last_seen.is_some());
        let window = Duration::from_secs(60);
        assert!(presence.hit("login:x", window, 1).await.expect("hit").allowed);
        assert!(!presence.hit("login:x", window, 1).await.expect("hit").allowed);
    }
}
