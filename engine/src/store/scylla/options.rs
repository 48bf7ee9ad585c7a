//! `ScyllaOptions`: how the ScyllaDB store connects, replicates and sizes its partitions.
//!
//! The doc comment on every field is operator documentation (the node's configuration file repeats
//! it). `problems()` reports every invalid value at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// Settings of the ScyllaDB (CQL) store. Works unchanged against Apache Cassandra 4.1+/5.0.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaOptions {
    /// Nodes to contact first, as `host:port` (the CQL port, 9042 by default). One reachable node is
    /// enough: the driver discovers the rest of the cluster from it.
    pub contact_points: Vec<String>,
    /// Keyspace holding Roost's tables. Letters, digits and `_`, at most 48 characters. Created by
    /// the migrations with `replication` if missing.
    pub keyspace: String,
    /// Datacenter of this node. Requests go to replicas in it first, and `local_quorum` /
    /// `local_one` count replicas in it. Unset: every node is treated as local (single-DC clusters).
    pub local_datacenter: Option<String>,
    /// Replication of the keyspace, used only when the migrations create it:
    /// `NetworkTopologyStrategy` with a replication factor per datacenter name. Production: 3 per
    /// datacenter. The default of 1 suits a single development node. Changing it later needs
    /// `ALTER KEYSPACE` and a repair, done by an operator.
    pub replication: BTreeMap<String, u32>,
    /// ScyllaDB only: create the keyspace with `tablets = {'enabled': <value>}`. Leave unset on
    /// Cassandra (which rejects the option) and on ScyllaDB releases whose tablets support
    /// lightweight transactions (2025.4 and later). Set `false` on ScyllaDB 6.0 to 2025.3, where
    /// lightweight transactions (used for usernames, direct pairs and ids) need vnodes.
    pub tablets: Option<bool>,
    /// User name for password authentication. Unset: no authentication.
    pub username: Option<String>,
    /// Password for `username`. Never logged.
    pub password: Option<String>,
    /// Consistency level of writes, including every append that precedes an acknowledgement:
    /// `local_quorum` (default: survives one replica down at RF 3, and a later `local_quorum` read
    /// sees it), `quorum`, `each_quorum`, `all`, `local_one`, `one`, `two`, `three`.
    pub write_consistency: CqlConsistency,
    /// Consistency level of reads. Keep `local_quorum` with `local_quorum` writes so that a read
    /// sees every acknowledged write (R + W > RF).
    pub read_consistency: CqlConsistency,
    /// Client-side timeout of one request, in milliseconds. A request that takes longer fails
    /// with `unavailable` (retryable), and an append that times out fails every append queued
    /// behind it in its conversation.
    pub request_timeout_ms: u64,
    /// Timeout of opening a connection, in milliseconds (also bounds `roost checkconfig`'s probe).
    pub connect_timeout_ms: u64,
    /// Events per message partition: a conversation's events are stored in partitions of this
    /// many consecutive seqs, which bounds every partition's size. Fixed when the keyspace is
    /// first migrated; a different value later is refused (it would misplace every lookup).
    pub events_per_partition: u64,
    /// User and conversation ids are taken from a shared counter in blocks of this many (one
    /// lightweight transaction per block), so ids stay small integers. Ids left in a block when a
    /// node stops are skipped.
    pub id_block_size: u64,
    /// Largest CQL batch the append pipeline writes, in bytes (approximate). Appends of one
    /// conversation that queue up while its previous batch is written are coalesced into one
    /// logged batch up to this size. Keep it below the server's `batch_size_fail_threshold`
    /// (Cassandra 50 KiB by default, ScyllaDB 1 MiB); a single larger append is written alone.
    pub max_batch_bytes: usize,
    /// Retention: seconds after which events (and their client message ids) expire, written as a
    /// per-write TTL. 0 keeps them forever. Applies to events written after the change.
    pub message_ttl_secs: u32,
    /// Apply pending schema migrations when the node starts. When false, run `roost migrate`
    /// before starting a new version; the node refuses to start on a keyspace without the schema.
    pub apply_migrations_on_start: bool,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "roost".to_owned(),
            local_datacenter: None,
            replication: BTreeMap::from([("datacenter1".to_owned(), 1)]),
            tablets: None,
            username: None,
            password: None,
            write_consistency: CqlConsistency::LocalQuorum,
            read_consistency: CqlConsistency::LocalQuorum,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            events_per_partition: 10_000,
            id_block_size: 32,
            max_batch_bytes: 48 * 1024,
            message_ttl_secs: 0,
            apply_migrations_on_start: true,
        }
    }
}

impl fmt::Debug for ScyllaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaOptions")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("local_datacenter", &self.local_datacenter)
            .field("replication", &self.replication)
            .field("tablets", &self.tablets)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("write_consistency", &self.write_consistency)
            .field("read_consistency", &self.read_consistency)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("events_per_partition", &self.events_per_partition)
            .field("id_block_size", &self.id_block_size)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("message_ttl_secs", &self.message_ttl_secs)
            .field("apply_migrations_on_start", &self.apply_migrations_on_start)
            .finish()
    }
}

/// The longest TTL CQL accepts (20 years).
pub(super) const MAX_TTL_SECS: u32 = 630_720_000;

impl ScyllaOptions {
    /// Every problem with the values, prefixed with `prefix` (e.g. `scylla.`), so an operator can
    /// fix them in one go.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.contact_points.is_empty() || self.contact_points.iter().any(|p| p.trim().is_empty()) {
            problems.push(format!("{prefix}contact_points must list at least one host:port"));
        }
        if !valid_identifier(&self.keyspace) {
            problems.push(format!(
                "{prefix}keyspace `{}` must be 1-48 letters, digits or `_`, starting with a letter",
                self.keyspace
            ));
        }
        if self.replication.is_empty() {
            problems.push(format!("{prefix}replication must name at least one datacenter"));
        }
        for (datacenter, factor) in &self.replication {
            if *factor == 0 || datacenter.is_empty() || datacenter.contains('\'') {
                problems.push(format!(
                    "{prefix}replication: `{datacenter}` = {factor} needs a datacenter name without quotes and a factor of at least 1"
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(format!("{prefix}password is set but username is not"));
        }
        if let Some(dc) = &self.local_datacenter {
            if !self.replication.contains_key(dc) {
                problems.push(format!(
                    "{prefix}local_datacenter `{dc}` has no entry in {prefix}replication: the keyspace would keep no replica there"
                ));
            }
        }
        for (name, value) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("events_per_partition", self.events_per_partition),
            ("id_block_size", self.id_block_size),
            ("max_batch_bytes", self.max_batch_bytes as u64),
        ] {
            if value == 0 {
                problems.push(format!("{prefix}{name} must be greater than 0"));
            }
        }
        if self.events_per_partition > 1_000_000 {
            problems.push(format!(
                "{prefix}events_per_partition must be at most 1000000 (partitions would grow too large)"
            ));
        }
        if self.message_ttl_secs > MAX_TTL_SECS {
            problems.push(format!(
                "{prefix}message_ttl_secs must be at most {MAX_TTL_SECS} (20 years, the CQL limit)"
            ));
        }
        problems
    }
}

/// A keyspace (or table) name CQL accepts unquoted.
pub(super) fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A CQL consistency level, as written in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CqlConsistency {
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

impl CqlConsistency {
    pub(super) fn to_driver(self) -> ::scylla::statement::Consistency {
        use ::scylla::statement::Consistency;
        match self {
            CqlConsistency::One => Consistency::One,
            CqlConsistency::Two => Consistency::Two,
            CqlConsistency::Three => Consistency::Three,
            CqlConsistency::Quorum => Consistency::Quorum,
            CqlConsistency::All => Consistency::All,
            CqlConsistency::LocalQuorum => Consistency::LocalQuorum,
            CqlConsistency::EachQuorum => Consistency::EachQuorum,
            CqlConsistency::LocalOne => Consistency::LocalOne,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_password_is_redacted() {
        let mut options = ScyllaOptions::default();
        assert_eq!(options.problems("scylla."), Vec::<String>::new());
        options.username = Some("roost".into());
        options.password = Some("hunter2".into());
        let debug = format!("{options:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn problems_are_all_reported() {
        let options = ScyllaOptions {
            contact_points: vec![],
            keyspace: "bad-name".into(),
            replication: BTreeMap::new(),
            password: Some("x".into()),
            events_per_partition: 0,
            ..ScyllaOptions::default()
        };
        let problems = options.problems("scylla.");
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("scylla.")), "{problems:#?}");
    }

    #[test]
    fn parses_with_defaults_and_refuses_unknown_keys() {
        let json = r#"{"keyspace": "chat", "replication": {"dc1": 3, "dc2": 3}, "write_consistency": "each_quorum"}"#;
        let options: ScyllaOptions = serde_json::from_str(json).expect("parses");
        assert_eq!(options.keyspace, "chat");
        assert_eq!(options.replication.len(), 2);
        assert_eq!(options.write_consistency, CqlConsistency::EachQuorum);
        assert_eq!(
            options.read_consistency,
            CqlConsistency::LocalQuorum,
            "defaults fill the rest"
        );
        assert!(serde_json::from_str::<ScyllaOptions>(r#"{"keyspaces": "x"}"#).is_err());
    }
}
