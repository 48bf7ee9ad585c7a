//! Failover: how virtual users and history reads move between the target nodes of a cluster.
//!
//! A user starts on target *i mod n*. When its connection fails or the server closes it, it moves
//! to the next target in the list (round robin from its own), so a dead node does not pin its
//! users to a stream of `connect_failed` errors; a single target simply stays. `TargetCounters`
//! counts, per target, the connections opened, the reconnects among them and the failovers away
//! from it, cheaply (relaxed atomics), for the `targets` section of summary.json.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::target::Target;

/// The target after `current` in a list of `count` (round robin); `current` itself for one.
pub fn next_target(current: usize, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    (current + 1) % count
}

/// Every target once, starting at `first` and wrapping: the order history reads try them in.
pub fn rotation(first: usize, count: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |k| (first + k) % count)
}

/// Live counters of one target.
#[derive(Debug, Default)]
pub struct TargetCounters {
    connects: AtomicU64,
    reconnects: AtomicU64,
    failovers_away: AtomicU64,
}

/// Counters of every target, indexed like `RunConfig::targets`.
#[derive(Debug, Default)]
pub struct PerTarget {
    counters: Vec<TargetCounters>,
}

impl PerTarget {
    pub fn new(count: usize) -> PerTarget {
        PerTarget {
            counters: (0..count).map(|_| TargetCounters::default()).collect(),
        }
    }

    /// A connection to `target` was opened and welcomed; `reconnect` unless it was the user's first.
    pub fn connected(&self, target: usize, reconnect: bool) {
        if let Some(c) = self.counters.get(target) {
            c.connects.fetch_add(1, Ordering::Relaxed);
            if reconnect {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A user left `target` for another one.
    pub fn failed_over(&self, target: usize) {
        if let Some(c) = self.counters.get(target) {
            c.failovers_away.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far, with each target's URL.
    pub fn snapshot(&self, targets: &[Target]) -> Vec<TargetStats> {
        targets
            .iter()
            .zip(&self.counters)
            .map(|(t, c)| TargetStats {
                url: t.url.clone(),
                connects: c.connects.load(Ordering::Relaxed),
                reconnects: c.reconnects.load(Ordering::Relaxed),
                failovers_away: c.failovers_away.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// One target's connection counts over the whole run (summary.json `results.targets`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetStats {
    pub url: String,
    /// Connections opened to this target (welcomed), first ones included.
    pub connects: u64,
    /// Of those, connections that were not the user's first (after churn, a close or a failover).
    pub reconnects: u64,
    /// Times a user left this target for the next one because its connection failed or closed.
    pub failovers_away: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_moves_to_the_next_target_and_wraps() {
        assert_eq!(next_target(0, 3), 1);
        assert_eq!(next_target(1, 3), 2);
        assert_eq!(next_target(2, 3), 0);
        for k in 0..5 {
            assert_eq!(next_target(k, 5), (k + 1) % 5);
        }
    }

    #[test]
    fn a_single_target_stays() {
        assert_eq!(next_target(0, 1), 0);
        assert_eq!(rotation(0, 1).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_rotation_visits_every_target_once_from_its_own() {
        assert_eq!(rotation(2, 4).collect::<Vec<_>>(), vec![2, 3, 0, 1]);
        assert_eq!(rotation(0, 0).count(), 0);
    }

    #[test]
    fn counters_are_kept_per_target() {
        let targets: Vec<Target> = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
            .iter()
            .map(|u| Target::resolve(u, false).expect("loopback"))
            .collect();
        let counters = PerTarget::new(2);
        counters.connected(0, false);
        counters.failed_over(0);
        counters.connected(1, true);
        counters.connected(7, true);
        let stats = counters.snapshot(&targets);
        assert_eq!(
            (stats[0].connects, stats[0].reconnects, stats[0].failovers_away),
            (1, 0, 1)
        );
        assert_eq!(
            (stats[1].connects, stats[1].reconnects, stats[1].failovers_away),
            (1, 1, 0)
        );
        assert_eq!(stats[1].url, "http://127.0.0.1:2");
    }
}
