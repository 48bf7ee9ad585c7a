//! `RedisOptions`: the `[redis]` section of the node configuration, used when
//! `presence = "redis"`.
//!
//! Every field has a default and a doc comment (the operator documentation); unknown keys are
//! rejected. The URL may carry a password, so `Debug` prints it redacted.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisOptions {
    /// Where Redis listens: `redis://[[user]:password@]host[:port][/db]` or
    /// `redis+unix:///path/to/redis.sock`. A single Redis (or a primary); Redis Cluster is not
    /// supported. Prefer an environment variable (`ROOST__REDIS__URL`) for a URL with a password.
    pub url: String,
    /// Prepended to every key Roost writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How often each node refreshes the entries of its online users, in seconds.
    pub heartbeat_secs: u64,
    /// How long a user's entry for a node lives without a heartbeat, in seconds: the users of a
    /// node that crashed appear offline after at most this long. At least twice
    /// `heartbeat_secs`.
    pub presence_ttl_secs: u64,
    /// Longest wait for a TCP connection to Redis, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for any one Redis call, in milliseconds. Presence is advisory: a slower
    /// answer counts as a failure and the node carries on without it.
    pub command_timeout_ms: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "roost:".to_owned(),
            heartbeat_secs: 10,
            presence_ttl_secs: 30,
            connect_timeout_ms: 1000,
            command_timeout_ms: 500,
        }
    }
}

impl RedisOptions {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// Every problem with the values, so an operator can fix them in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let schemes = ["redis://", "redis+unix://", "unix://"];
        if !schemes.iter().any(|s| self.url.starts_with(s)) {
            problems.push(format!(
                "redis.url must start with redis://, redis+unix:// or unix:// (got {})",
                redact_url(&self.url)
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            problems.push("redis.key_prefix must be 1 to 64 bytes".to_owned());
        }
        if self.heartbeat_secs == 0 {
            problems.push("redis.heartbeat_secs must be at least 1".to_owned());
        }
        if self.presence_ttl_secs < self.heartbeat_secs.saturating_mul(2) {
            problems.push("redis.presence_ttl_secs must be at least twice redis.heartbeat_secs".to_owned());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("redis.connect_timeout_ms must be at least 1".to_owned());
        }
        if self.command_timeout_ms == 0 {
            problems.push("redis.command_timeout_ms must be at least 1".to_owned());
        }
        problems
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("presence_ttl_secs", &self.presence_ttl_secs)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .finish()
    }
}

/// The URL with any password (in the user info, or a `pass`/`password` query parameter)
/// replaced by `***`. A user info without a colon is hidden whole, in case it is a password.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RedisOptions::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported() {
        let options = RedisOptions {
            url: "http://x".into(),
            key_prefix: String::new(),
            heartbeat_secs: 0,
            presence_ttl_secs: 0,
            connect_timeout_ms: 0,
            command_timeout_ms: 0,
        };
        assert_eq!(options.problems().len(), 5, "{:?}", options.problems());
        let short_ttl = RedisOptions {
            heartbeat_secs: 10,
            presence_ttl_secs: 15,
            ..RedisOptions::default()
        };
        assert_eq!(short_ttl.problems().len(), 1);
    }

    #[test]
    fn unknown_keys_are_rejected_and_missing_ones_defaulted() {
        let parsed: RedisOptions = serde_json::from_str(r#"{"url":"redis://h:1"}"#).expect("parse");
        assert_eq!(parsed.url, "redis://h:1");
        assert_eq!(parsed.key_prefix, "roost:");
        assert!(serde_json::from_str::<RedisOptions>(r#"{"urll":"redis://h"}"#).is_err());
    }

    #[test]
    fn passwords_never_reach_debug() {
        for (url, expected) in [
            ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
            ("redis://app:s3cret@db", "redis://app:***@db"),
            ("redis://s3cret@db/1", "redis://***@db/1"),
            ("redis://db:6379", "redis://db:6379"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
        ] {
            assert_eq!(redact_url(url), expected);
            let options = RedisOptions {
                url: url.to_owned(),
                ..RedisOptions::default()
            };
            assert!(!format!("{options:?}").contains("s3cret"), "{options:?}");
        }
    }
}
