//! LoginThrottle: counts failed logins per (username, client address) and per client address in
//! fixed windows, and refuses further attempts once a count reaches its limit.
//!
//! Throttling is keyed by the *pair*, never by the username alone: an attacker elsewhere can
//! exhaust only their own pairs and their own address, so they cannot lock a victim out. The
//! per-address limit stops one address from spraying many usernames. IPv6 clients are counted
//! per /64, since one host usually owns a whole /64.
//!
//! Every attempt is counted when it starts ([`LoginThrottle::begin`]) so that concurrent
//! guesses cannot overshoot the limit; the returned [`Attempt`] settles the count: a success
//! clears the pair and refunds the address, a failure keeps it, and an attempt dropped unsettled
//! (store error, cancelled request) is refunded.
//!
//! The counters are a cache, not domain state: losing them (restart, eviction) only forgives a
//! few failures. They live in one `std::sync::Mutex<HashMap>`, held for a few map operations and
//! never across an `.await`. The map is bounded: at capacity, expired windows are dropped first,
//! then the oldest tenth, so a flood of addresses cannot grow memory without limit (it can at
//! worst forgive older counts, which fails open rather than locking anyone out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use crate::config::AuthConfig;

/// Most counters kept at once (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Longest username prefix used as a key; longer names cannot be valid anyway.
const MAX_KEY_NAME_CHARS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, IpAddr),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    count: u32,
}

#[derive(Debug)]
pub struct LoginThrottle {
    per_pair: u32,
    per_address: u32,
    window: Duration,
    capacity: usize,
    counters: Mutex<HashMap<Key, Window>>,
}

impl LoginThrottle {
    pub fn new(config: &AuthConfig) -> Self {
        Self::with_capacity(config, DEFAULT_CAPACITY)
    }

    /// Limits of zero are treated as one, so a misconfiguration cannot refuse every login.
    pub fn with_capacity(config: &AuthConfig, capacity: usize) -> Self {
        Self {
            per_pair: config.login_failures_per_window.max(1),
            per_address: config.login_failures_per_address.max(1),
            window: Duration::from_secs(config.login_window_secs.max(1)),
            capacity: capacity.max(2),
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Count an attempt for `username` from `client`, or say how long to wait.
    pub fn begin(&self, username: &str, client: IpAddr, now: Instant) -> Result<Attempt<'_>, Duration> {
        let address = Key::Address(network_of(client));
        let pair = Key::Pair(username.chars().take(MAX_KEY_NAME_CHARS).collect(), network_of(client));
        let mut counters = self.lock();
        let waits = [
            self.wait(counters.get(&pair), self.per_pair, now),
            self.wait(counters.get(&address), self.per_address, now),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        for key in [&pair, &address] {
            self.count(&mut counters, key, now);
        }
        Ok(Attempt {
            throttle: self,
            pair,
            address,
            settled: false,
        })
    }

    /// How many counters are held (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Window>> {
        // A panic while holding the lock cannot leave a counter half-updated; keep going.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self, window: Option<&Window>, limit: u32, now: Instant) -> Option<Duration> {
        let window = window?;
        let elapsed = now.saturating_duration_since(window.started);
        (elapsed < self.window && window.count >= limit).then(|| self.window - elapsed)
    }

    fn count(&self, counters: &mut HashMap<Key, Window>, key: &Key, now: Instant) {
        if !counters.contains_key(key) && counters.len() >= self.capacity {
            self.evict(counters, now);
        }
        let fresh = Window { started: now, count: 0 };
        let window = counters.entry(key.clone()).or_insert(fresh);
        if now.saturating_duration_since(window.started) >= self.window {
            *window = fresh;
        }
        window.count = window.count.saturating_add(1);
    }

    fn evict(&self, counters: &mut HashMap<Key, Window>, now: Instant) {
        counters.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        if counters.len() < self.capacity {
            return;
        }
        let mut by_age: Vec<(Instant, Key)> = counters.iter().map(|(k, w)| (w.started, k.clone())).collect();
        by_age.sort_unstable_by_key(|(started, _)| *started);
        let excess = counters.len() + 1 - self.capacity;
        let drop = excess.max(self.capacity / 10);
        for (_, key) in by_age.into_iter().take(drop) {
            counters.remove(&key);
        }
    }

    fn refund(&self, key: &Key) {
        if let Some(window) = self.lock().get_mut(key) {
            window.count = window.count.saturating_sub(1);
        }
    }
}

/// One counted login attempt; settle it with [`Attempt::failed`] or [`Attempt::succeeded`].
/// Dropping it unsettled refunds the count.
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    pair: Key,
    address: Key,
    settled: bool,
}

impl Attempt<'_> {
    /// The credentials were wrong: the attempt stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The credentials were right: forget the pair's failures and refund the address.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle.lock().remove(&self.pair);
        self.throttle.refund(&self.address);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.refund(&self.pair);
            self.throttle.refund(&self.address);
        }
    }
}

/// The unit an address is counted in: IPv4 as is, IPv6 by its /64.
fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn throttle(per_pair: u32, per_address: u32) -> LoginThrottle {
        let config = AuthConfig {
            login_failures_per_window: per_pair,
            login_failures_per_address: per_address,
            login_window_secs: 60,
            ..AuthConfig::default()
        };
        LoginThrottle::new(&config)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn fail(t: &LoginThrottle, name: &str, addr: IpAddr, now: Instant) {
        t.begin(name, addr, now).expect("not throttled yet").failed();
    }

    #[test]
    fn pair_is_throttled_after_its_limit() {
        let t = throttle(3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            fail(&t, "alice", ip(1), now);
        }
        let wait = t.begin("alice", ip(1), now).expect_err("throttled");
        assert_eq!(wait, Duration::from_secs(60));
        let later = now + Duration::from_secs(20);
        assert_eq!(
            t.begin("alice", ip(1), later).expect_err("still"),
            Duration::from_secs(40)
        );
    }

    #[test]
    fn victim_from_another_address_is_not_locked_out() {
        let t = throttle(3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            fail(&t, "alice", ip(66), now);
        }
        assert!(t.begin("alice", ip(66), now).is_err());
        // The real alice, elsewhere, can still log in; so can others from the attacker's address.
        t.begin("alice", ip(1), now)
            .expect("other address unaffected")
            .succeeded();
        t.begin("bob", ip(66), now).expect("other username unaffected").failed();
    }

    #[test]
    fn address_is_throttled_across_usernames() {
        let t = throttle(3, 4);
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            fail(&t, name, ip(9), now);
        }
        assert!(t.begin("e", ip(9), now).is_err());
        assert!(t.begin("e", ip(10), now).is_ok());
    }

    #[test]
    fn window_expiry_resets_counts() {
        let t = throttle(2, 100);
        let now = Instant::now();
        fail(&t, "alice", ip(1), now);
        fail(&t, "alice", ip(1), now);
        assert!(t.begin("alice", ip(1), now + Duration::from_secs(59)).is_err());
        fail(&t, "alice", ip(1), now + Duration::from_secs(60));
        t.begin("alice", ip(1), now + Duration::from_secs(61))
            .expect("second of new window")
            .failed();
        assert!(t.begin("alice", ip(1), now + Duration::from_secs(62)).is_err());
    }

    #[test]
    fn success_clears_the_pair_and_unsettled_attempts_are_refunded() {
        let t = throttle(2, 100);
        let now = Instant::now();
        fail(&t, "alice", ip(1), now);
        t.begin("alice", ip(1), now).expect("allowed").succeeded();
        fail(&t, "alice", ip(1), now);
        // Dropped without settling (e.g. the store failed): not counted.
        drop(t.begin("alice", ip(1), now).expect("allowed"));
        t.begin("alice", ip(1), now).expect("allowed").failed();
        assert!(t.begin("alice", ip(1), now).is_err());
    }

    #[test]
    fn concurrent_attempts_cannot_overshoot() {
        let t = throttle(2, 100);
        let now = Instant::now();
        let first = t.begin("alice", ip(1), now).expect("one");
        let second = t.begin("alice", ip(1), now).expect("two");
        assert!(t.begin("alice", ip(1), now).is_err());
        first.failed();
        second.failed();
    }

    #[test]
    fn counters_are_bounded() {
        let config = AuthConfig::default();
        let t = LoginThrottle::with_capacity(&config, 50);
        let now = Instant::now();
        for i in 0..=255u8 {
            fail(&t, "alice", ip(i), now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.tracked() <= 50, "tracked {}", t.tracked());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(network_of(a), network_of(b));
        assert_ne!(network_of(a), network_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(network_of(mapped), ip(1));
    }
}
