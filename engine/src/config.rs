//! Engine configuration: limits and timings the domain enforces, whatever the transport.
//!
//! Part of the node configuration (`[engine]` in the TOML file). Every field has a default and a
//! doc comment, which is the operator documentation; unknown keys are rejected.

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Largest accepted message body (text plus structured fields), in bytes.
    pub max_body_bytes: usize,
    /// Largest group, in members.
    pub max_group_members: usize,
    /// Longest group name, in bytes.
    pub max_group_name_bytes: usize,
    /// How long after sending a member may edit or recall their own message, in seconds.
    /// Group admins and owners may recall any message at any time.
    pub edit_window_secs: u64,
    /// A conversation actor with no traffic for this long stops; it is rebuilt from the store on
    /// the next use.
    pub conversation_idle_secs: u64,
    /// Capacity of a conversation actor's mailbox before senders are told to back off.
    pub conversation_mailbox: usize,
    /// Appends a conversation may have waiting for the store; beyond, new sends are refused
    /// with the retryable `overloaded` error instead of queueing without bound.
    pub max_pending_appends: usize,
    /// Client message ids remembered in memory per conversation actor; older ones are found in
    /// the store.
    pub dedup_cache_entries: usize,
    /// Presence changes are pushed to members of conversations up to this size; larger groups
    /// ask for presence instead.
    pub presence_fanout_max_members: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            max_group_members: 10_000,
            max_group_name_bytes: 256,
            edit_window_secs: 120,
            conversation_idle_secs: 300,
            conversation_mailbox: 1024,
            max_pending_appends: 1024,
            dedup_cache_entries: 4096,
            presence_fanout_max_members: 200,
        }
    }
}

impl EngineConfig {
    pub fn edit_window(&self) -> Duration {
        Duration::from_secs(self.edit_window_secs)
    }

    pub fn conversation_idle(&self) -> Duration {
        Duration::from_secs(self.conversation_idle_secs)
    }

    /// Every problem with the values, so an operator can fix them in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_body_bytes == 0 || self.max_body_bytes > 1024 * 1024 {
            problems.push("engine.max_body_bytes must be between 1 and 1048576".to_owned());
        }
        if self.max_group_members < 2 {
            problems.push("engine.max_group_members must be at least 2".to_owned());
        }
        if self.conversation_idle_secs == 0 {
            problems.push("engine.conversation_idle_secs must be at least 1".to_owned());
        }
        if self.max_pending_appends == 0 {
            problems.push("engine.max_pending_appends must be at least 1".to_owned());
        }
        if self.conversation_mailbox < 16 {
            problems.push("engine.conversation_mailbox must be at least 16".to_owned());
        }
        problems
    }
}
