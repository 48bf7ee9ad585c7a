//! Cluster configuration: what the control plane needs before it has a replicated state.
//!
//! Part of the node configuration (`[cluster]` in the TOML file, composed by the API crate).
//! Every field has a default and a doc comment, which is the operator documentation; unknown keys
//! are rejected.

use serde::Deserialize;
use serde::Serialize;

use crate::shard::DEFAULT_SHARD_COUNT;
use crate::shard::MAX_SHARD_COUNT;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Virtual shards conversations are spread over. Read once, by `roost cluster init`, and then
    /// fixed for the life of the cluster (it is stored in the replicated state, and changing it
    /// would move every conversation). More shards spread load more evenly over many nodes; 256
    /// suits clusters of up to a few dozen nodes.
    pub shard_count: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            shard_count: DEFAULT_SHARD_COUNT,
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
        problems
    }
}
