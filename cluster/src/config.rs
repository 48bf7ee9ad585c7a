//! Cluster configuration: what the control plane needs before it has a replicated state.
//!
//! Part of the node configuration (`[cluster]` in the TOML file, composed by the API crate).
//! Every field has a default and a doc comment, which is the operator documentation; unknown keys
//! are rejected. The timing fields are the lease and failure-detection parameters of
//! ARCHITECTURE.md ("Fencing across ownership changes"); [`ClusterConfig::problems`] refuses combinations that would break its
//! safety argument (a failure timeout shorter than the longest a lease can outlive its last grant).

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::shard::DEFAULT_SHARD_COUNT;
use crate::shard::MAX_SHARD_COUNT;

/// The clock-rate error assumed between nodes (`ρ` in ARCHITECTURE.md ("Fencing across ownership changes")): 1000 ppm, twice what
/// NTP slews.
pub const CLOCK_DRIFT_PPM: u64 = 1_000;

/// The safety margin added to the lease wait (`ε` in ARCHITECTURE.md ("Fencing across ownership changes")).
pub const LEASE_MARGIN: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Virtual shards conversations are spread over. Read once, by `roost cluster init`, and then
    /// fixed for the life of the cluster (it is stored in the replicated state, and changing it
    /// would move every conversation). More shards spread load more evenly over many nodes; 256
    /// suits clusters of up to a few dozen nodes.
    pub shard_count: u32,
    /// How long a lease granted by the Raft leader lets this node sequence its shards, counted
    /// from when the renewal was sent, in milliseconds. A node cut off from the leader stops
    /// serving its conversations at most this long after its last successful renewal.
    pub lease_ms: u64,
    /// How often a node renews its lease, in milliseconds. At most a third of `lease_ms`, so that
    /// one lost round trip does not let a healthy node's lease expire.
    pub renew_ms: u64,
    /// How long a member may go without renewing its lease before the leader declares it dead and
    /// hands its shards to others, in milliseconds. At least `lease_ms * (1 + 2 * 0.001) + 100`
    /// (the longest a lease can outlast its grant, with clock drift and a margin); larger values
    /// ride out longer pauses at the cost of a longer outage when a node really fails.
    pub failure_timeout_ms: u64,
    /// How often the Raft leader sends heartbeats, in milliseconds.
    pub heartbeat_ms: u64,
    /// The shortest time without a heartbeat after which a follower calls an election, in
    /// milliseconds. Must be larger than `heartbeat_ms`.
    pub election_min_ms: u64,
    /// The longest such time (each follower picks a random timeout in between), in milliseconds.
    pub election_max_ms: u64,
    /// How often the leader checks for failed members and plans shard moves, in milliseconds.
    pub rebalance_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            shard_count: DEFAULT_SHARD_COUNT,
            lease_ms: 1_500,
            renew_ms: 300,
            failure_timeout_ms: 2_000,
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            rebalance_interval_ms: 500,
        }
    }
}

impl ClusterConfig {
    /// Every problem with the values, so an operator can fix them in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.shard_count == 0 || self.shard_count > MAX_SHARD_COUNT {
            problems.push(format!("cluster.shard_count must be between 1 and {MAX_SHARD_COUNT}"));
        }
        for (name, value) in [
            ("lease_ms", self.lease_ms),
            ("renew_ms", self.renew_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("rebalance_interval_ms", self.rebalance_interval_ms),
        ] {
            if value == 0 {
                problems.push(format!("cluster.{name} must be positive"));
            }
        }
        if self.renew_ms.saturating_mul(3) > self.lease_ms {
            problems.push("cluster.renew_ms must be at most a third of cluster.lease_ms".to_owned());
        }
        let wait = self.lease_wait();
        if self.failure_timeout() < wait {
            problems.push(format!(
                "cluster.failure_timeout_ms must be at least lease_ms * (1 + 2 * {CLOCK_DRIFT_PPM} ppm) + {} ms = {} ms",
                LEASE_MARGIN.as_millis(),
                wait.as_millis()
            ));
        }
        if self.election_min_ms <= self.heartbeat_ms {
            problems.push("cluster.election_min_ms must be larger than cluster.heartbeat_ms".to_owned());
        }
        if self.election_max_ms <= self.election_min_ms {
            problems.push("cluster.election_max_ms must be larger than cluster.election_min_ms".to_owned());
        }
        problems
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_ms)
    }

    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }

    pub fn rebalance_interval(&self) -> Duration {
        Duration::from_millis(self.rebalance_interval_ms)
    }

    /// `W = L * (1 + 2ρ) + ε`: how long after its last grant a node's lease has certainly expired,
    /// measured on the leader's clock (ARCHITECTURE.md ("Fencing across ownership changes"), failover).
    pub fn lease_wait(&self) -> Duration {
        let drift = self.lease_ms.saturating_mul(2 * CLOCK_DRIFT_PPM).div_ceil(1_000_000);
        Duration::from_millis(self.lease_ms.saturating_add(drift)) + LEASE_MARGIN
    }
}
