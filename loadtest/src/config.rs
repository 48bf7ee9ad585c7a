//! RunConfig: a scenario with defaults applied, validated, and its targets resolved.
//!
//! `RunConfig::build` reports every problem at once. Every run is bounded: sending lasts
//! `warmup + duration`, draining at most `drain`, and `hard_limit()` caps the whole run.
//! Targets and `/metrics` endpoints (the targets themselves unless `metrics_urls` names others)
//! both pass the loopback guard unless `--allow-remote`.

use std::time::Duration;

use serde::Serialize;

use crate::scenario::GroupSpec;
use crate::scenario::Scenario;
use crate::scrape::MetricsEndpoint;
use crate::target::Target;
use crate::threshold::Threshold;

/// Largest message text the loader will build (the server's default body limit is 16 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// The smallest text that still carries the latency stamp.
pub const MIN_PAYLOAD_BYTES: usize = 32;
/// Longest measured duration: a run must stop by itself.
pub const MAX_DURATION_SECS: u64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
#[error("invalid run configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Everything a run needs. Serialized into summary.json (without the admin password).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub name: String,
    pub description: String,
    pub urls: Vec<String>,
    #[serde(skip)]
    pub targets: Vec<Target>,
    /// `/metrics` endpoints given apart from the targets (empty: each target's own `/metrics`).
    pub metrics_urls: Vec<String>,
    /// What is scraped for server cost: `metrics_urls` resolved, else every target's `/metrics`.
    #[serde(skip)]
    pub metrics: Vec<MetricsEndpoint>,
    pub allow_remote: bool,
    pub admin_user: String,
    #[serde(skip)]
    pub admin_password: String,
    pub users: usize,
    pub connect_rate: f64,
    pub direct_pairs: usize,
    pub groups: Vec<GroupSpec>,
    pub senders: usize,
    pub rate: f64,
    pub payload_bytes: usize,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub drain_secs: u64,
    pub churn_per_sec: f64,
    pub seed: u64,
    pub ack_timeout_ms: u64,
    pub user_prefix: String,
    pub setup_concurrency: usize,
    pub thresholds: Vec<Threshold>,
    pub fail_on_correctness: bool,
}

/// What the command line adds that is not part of a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub admin_password: String,
    pub allow_remote: bool,
    pub fail_on_correctness: bool,
    /// Used when the scenario sets no `user_prefix` (a per-run random id keeps runs apart).
    pub default_prefix: String,
}

impl RunConfig {
    pub fn build(s: Scenario, options: RunOptions) -> Result<RunConfig, ConfigError> {
        let mut problems = Vec::new();
        let urls = s.urls.unwrap_or_else(|| vec!["http://127.0.0.1:8080".to_owned()]);
        let mut targets = Vec::new();
        for url in &urls {
            match Target::resolve(url, options.allow_remote) {
                Ok(t) => targets.push(t),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if urls.is_empty() {
            problems.push("at least one --url is needed".into());
        }
        let metrics_urls = s.metrics_urls.unwrap_or_default();
        let metrics = metrics_endpoints(&metrics_urls, &targets, options.allow_remote, &mut problems);
        let mut thresholds = Vec::new();
        for text in s.fail_if.unwrap_or_default() {
            match text.parse::<Threshold>() {
                Ok(t) => thresholds.push(t),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let users = s.users.unwrap_or(20);
        let groups = s.groups.unwrap_or_default();
        let direct_pairs = s.direct_pairs.unwrap_or(0);
        let conversations = direct_pairs + groups.iter().map(|g| g.count).sum::<usize>();
        let rate = s.rate.unwrap_or(0.0);
        let senders = s.senders.unwrap_or(if rate > 0.0 { conversations } else { 0 });
        let config = RunConfig {
            name: s.name.unwrap_or_else(|| "adhoc".into()),
            description: s.description.unwrap_or_default(),
            urls,
            targets,
            metrics_urls,
            metrics,
            allow_remote: options.allow_remote,
            admin_user: s.admin_user.unwrap_or_else(|| "admin".into()),
            admin_password: options.admin_password,
            users,
            connect_rate: s.connect_rate.unwrap_or(200.0),
            direct_pairs,
            groups,
            senders,
            rate,
            payload_bytes: s.payload_bytes.unwrap_or(100),
            duration_secs: s.duration_secs.unwrap_or(10),
            warmup_secs: s.warmup_secs.unwrap_or(0),
            drain_secs: s.drain_secs.unwrap_or(10),
            churn_per_sec: s.churn_per_sec.unwrap_or(0.0),
            seed: s.seed.unwrap_or(1),
            ack_timeout_ms: s.ack_timeout_ms.unwrap_or(10_000),
            user_prefix: s.user_prefix.unwrap_or(options.default_prefix),
            setup_concurrency: s.setup_concurrency.unwrap_or(16),
            thresholds,
            fail_on_correctness: options.fail_on_correctness,
        };
        config.check(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn check(&self, problems: &mut Vec<String>) {
        let mut need = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        need(self.users >= 1, "users must be at least 1".into());
        need(
            self.connect_rate.is_finite() && self.connect_rate > 0.0,
            "connect_rate must be > 0".into(),
        );
        need(self.rate.is_finite() && self.rate >= 0.0, "rate must be >= 0".into());
        need(
            self.churn_per_sec.is_finite() && self.churn_per_sec >= 0.0,
            "churn must be >= 0".into(),
        );
        need(
            self.direct_pairs == 0 || self.users >= 2,
            "direct pairs need at least 2 users".into(),
        );
        for g in &self.groups {
            need(
                g.size <= self.users,
                format!(
                    "groups of {} need at least that many users (have {})",
                    g.size, self.users
                ),
            );
        }
        let slots = self.sender_capacity();
        need(
            self.senders <= slots,
            format!(
                "senders ({}) exceed the member slots of all conversations ({slots})",
                self.senders
            ),
        );
        need(
            self.rate == 0.0 || self.senders > 0,
            "a rate needs senders and at least one conversation (--direct-pairs or --groups)".into(),
        );
        need(
            (MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&self.payload_bytes),
            format!("payload_bytes must be {MIN_PAYLOAD_BYTES} to {MAX_PAYLOAD_BYTES}"),
        );
        need(
            (1..=MAX_DURATION_SECS).contains(&self.duration_secs),
            format!("duration must be 1 to {MAX_DURATION_SECS} seconds"),
        );
        need(self.warmup_secs <= MAX_DURATION_SECS, "warmup is too long".into());
        need(self.drain_secs <= 600, "drain must be at most 600 seconds".into());
        need(self.ack_timeout_ms >= 100, "ack_timeout_ms must be at least 100".into());
        need(
            (1..=256).contains(&self.setup_concurrency),
            "setup_concurrency must be 1 to 256".into(),
        );
        let prefix_ok = !self.user_prefix.is_empty()
            && self.user_prefix.len() <= 20
            && self
                .user_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        need(
            prefix_ok,
            "user_prefix must be 1 to 20 characters of a-z 0-9 - _".into(),
        );
    }

    /// Member slots over all conversations: the most sending streams the plan can place.
    pub fn sender_capacity(&self) -> usize {
        self.direct_pairs * 2 + self.groups.iter().map(|g| g.size * g.count).sum::<usize>()
    }

    /// Time the connection ramp is planned to take.
    pub fn ramp(&self) -> Duration {
        Duration::from_secs_f64(self.users as f64 / self.connect_rate)
    }

    /// The longest a run may take from first request to report before it is aborted: setup
    /// and checking get generous fixed allowances, the load phases their configured lengths.
    pub fn hard_limit(&self) -> Duration {
        let setup = Duration::from_secs(600 + self.users as u64 / 10);
        let ramp = self.ramp() * 2 + Duration::from_secs(60);
        let load = Duration::from_secs(self.warmup_secs + self.duration_secs + self.drain_secs);
        setup + ramp + load + Duration::from_secs(600)
    }
}

/// Resolve `urls` as metrics endpoints (problems reported), or use the targets' own `/metrics`.
fn metrics_endpoints(
    urls: &[String],
    targets: &[Target],
    allow_remote: bool,
    problems: &mut Vec<String>,
) -> Vec<MetricsEndpoint> {
    if urls.is_empty() {
        return targets.iter().map(MetricsEndpoint::of_target).collect();
    }
    let mut endpoints = Vec::new();
    for url in urls {
        match MetricsEndpoint::resolve(url, allow_remote) {
            Ok(e) => endpoints.push(e),
            Err(e) => problems.push(format!("metrics URL: {e}")),
        }
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> RunOptions {
        RunOptions {
            admin_password: "pw".into(),
            default_prefix: "lt1".into(),
            ..RunOptions::default()
        }
    }

    #[test]
    fn defaults_make_a_valid_idle_run() {
        let config = RunConfig::build(Scenario::default(), options()).expect("valid");
        assert_eq!(config.users, 20);
        assert_eq!(config.senders, 0);
        assert_eq!(config.targets.len(), 1);
        assert!(config.metrics_urls.is_empty());
        assert_eq!(config.metrics, vec![MetricsEndpoint::of_target(&config.targets[0])]);
    }

    #[test]
    fn metrics_urls_replace_the_targets_metrics_and_need_not_match_in_count() {
        let s = Scenario {
            urls: Some(vec!["http://127.0.0.1:8080".into(), "http://127.0.0.1:8081".into()]),
            metrics_urls: Some(vec!["http://127.0.0.1:9090".into()]),
            ..Scenario::default()
        };
        let config = RunConfig::build(s, options()).expect("valid");
        assert_eq!(config.metrics.len(), 1);
        assert_eq!(config.metrics[0].target.url, "http://127.0.0.1:9090");
        assert_eq!(config.metrics[0].path, "/metrics");
        let json = serde_json::to_value(&config).expect("json");
        assert_eq!(json["metrics_urls"][0], "http://127.0.0.1:9090");
    }

    #[test]
    fn remote_metrics_urls_follow_the_loopback_rule() {
        let s = Scenario {
            metrics_urls: Some(vec!["http://10.2.3.4:9090".into()]),
            ..Scenario::default()
        };
        let err = RunConfig::build(s.clone(), options()).expect_err("remote metrics");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].starts_with("metrics URL:") && err.problems[0].contains("--allow-remote"));
        let allowed = RunOptions {
            allow_remote: true,
            ..options()
        };
        assert!(RunConfig::build(s, allowed).is_ok());
    }

    #[test]
    fn senders_default_to_one_per_conversation() {
        let s = Scenario {
            users: Some(10),
            direct_pairs: Some(2),
            groups: Some(vec![GroupSpec { size: 5, count: 2 }]),
            rate: Some(10.0),
            ..Scenario::default()
        };
        assert_eq!(RunConfig::build(s, options()).expect("valid").senders, 4);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = Scenario {
            urls: Some(vec!["http://10.9.9.9:80".into()]),
            users: Some(3),
            groups: Some(vec![GroupSpec { size: 5, count: 1 }]),
            rate: Some(10.0),
            senders: Some(0),
            duration_secs: Some(0),
            fail_if: Some(vec!["p99_nothing_ms>1".into()]),
            ..Scenario::default()
        };
        let err = RunConfig::build(s, options()).expect_err("invalid");
        assert!(err.problems.len() >= 5, "{err}");
        assert!(err.to_string().contains("--allow-remote"));
    }
}
