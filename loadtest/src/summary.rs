//! Summary: the versioned, machine-readable result of a run (summary.json), and the values
//! thresholds are evaluated against.
//!
//! Schema `roost-loadtest/1`. Fields are only ever added within a schema version; a renamed or
//! removed field means `roost-loadtest/2`. Rates are over the measurement window (whole seconds
//! after the warmup); latencies are over messages *planned* inside it; `errors` counts the whole
//! run. loadtest/README.md documents every field.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker::Verdict;
use crate::config::RunConfig;
use crate::env_info::Environment;
use crate::failover::TargetStats;
use crate::provision::SetupTimings;
use crate::scrape::ServerSample;
use crate::stats::recorder::Counts;
use crate::stats::series::IntervalPoint;
use crate::stats::series::LatencySummary;
use crate::threshold::Outcome;

pub const SCHEMA: &str = "roost-loadtest/1";

/// Exit codes of `roost-loadtest run`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_THRESHOLD: u8 = 99;
pub const EXIT_CORRECTNESS: u8 = 98;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub name: String,
    pub started_at_unix_ms: u64,
    pub finished_at_unix_ms: u64,
    pub config: RunConfig,
    pub environment: Environment,
    pub setup: Setup,
    pub results: Results,
    pub thresholds: Vec<Outcome>,
    pub outcome: RunOutcome,
    pub series: Vec<IntervalPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    #[serde(flatten)]
    pub timings: SetupTimings,
    pub conversations: usize,
    /// Time from the first planned connect until every user was connected and synced.
    pub ramp_secs: f64,
    /// Users connected and synced at the end of the ramp.
    pub connected: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub connect: Option<LatencySummary>,
    pub ack: Option<LatencySummary>,
    pub deliver: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Measured length of the window, in seconds (whole intervals of the time series).
    pub window_secs: f64,
    /// Counts inside the measurement window.
    pub window: Counts,
    /// Counts over the whole run (ramp to drain).
    pub total: Counts,
    pub offered_rate: f64,
    pub sent_per_sec: f64,
    pub acked_per_sec: f64,
    pub delivered_per_sec: f64,
    /// Users connected per second during the ramp.
    pub connects_per_sec: f64,
    pub latency_ms: Latencies,
    /// Errors over the whole run, and by code.
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub correctness: Verdict,
    pub server: ServerCost,
    pub loader: LoaderCost,
    /// Connections, reconnects and failovers per target node, in `config.urls` order.
    pub targets: Vec<TargetStats>,
}

/// What the load generator itself spent in the window: on a shared machine, a loader near
/// saturation adds its own delay to every latency.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoaderCost {
    pub cpu_seconds_window: Option<f64>,
    /// Cores the loader kept busy on average during the window.
    pub cpu_utilization_window: Option<f64>,
}

/// What the server spent, from its `/metrics` (omitted when the node does not export them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerCost {
    pub before_ramp: ServerSample,
    pub after_ramp: ServerSample,
    pub window_start: ServerSample,
    pub window_end: ServerSample,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_window: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_utilization_window: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_delivered: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_per_connection: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_per_delivered: Option<f64>,
}

impl ServerCost {
    /// Derive per-connection and per-message costs from the four samples.
    pub fn derive(&mut self, connections: usize, delivered: u64, window_secs: f64) {
        let cpu = self
            .window_end
            .cpu_seconds
            .zip(self.window_start.cpu_seconds)
            .map(|(b, a)| b - a);
        self.cpu_seconds_window = cpu;
        if window_secs > 0.0 {
            self.cpu_utilization_window = cpu.map(|c| c / window_secs);
        }
        if delivered > 0 {
            self.cpu_us_per_delivered = cpu.map(|c| c * 1e6 / delivered as f64);
            let grown = self
                .window_end
                .rss_bytes
                .zip(self.window_start.rss_bytes)
                .map(|(b, a)| b - a);
            self.rss_bytes_per_delivered = grown.map(|g| g / delivered as f64);
        }
        if connections > 0 {
            let held = self
                .after_ramp
                .rss_bytes
                .zip(self.before_ramp.rss_bytes)
                .map(|(b, a)| b - a);
            self.rss_bytes_per_connection = held.map(|h| h / connections as f64);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub passed: bool,
    pub thresholds_breached: usize,
    pub correctness_violations: u64,
    pub exit_code: u8,
}

impl Results {
    /// The value a threshold names (see `threshold::is_known_metric`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let c = &self.correctness;
        let scalar = match name {
            "sent_per_sec" => Some(self.sent_per_sec),
            "acked_per_sec" => Some(self.acked_per_sec),
            "delivered_per_sec" => Some(self.delivered_per_sec),
            "connects_per_sec" => Some(self.connects_per_sec),
            "errors" => Some(self.errors as f64),
            "lost" => Some(c.lost as f64),
            "duplicated" => Some(c.duplicated as f64),
            "reordered" => Some(c.reordered as f64),
            "gaps" => Some(c.gaps as f64),
            "undelivered" => Some(c.undelivered as f64),
            _ => None,
        };
        if scalar.is_some() {
            return scalar;
        }
        let (stat, kind) = name.strip_suffix("_ms")?.split_once('_')?;
        let summary = match kind {
            "connect" => self.latency_ms.connect.as_ref(),
            "ack" => self.latency_ms.ack.as_ref(),
            "deliver" => self.latency_ms.deliver.as_ref(),
            _ => None,
        }?;
        summary.stat(stat)
    }
}

/// The exit code: correctness first (98), then thresholds (99).
pub fn outcome(thresholds: &[Outcome], correctness: &Verdict, fail_on_correctness: bool) -> RunOutcome {
    let breached = thresholds.iter().filter(|t| t.breached).count();
    let violations = correctness.violations();
    let exit_code = if fail_on_correctness && violations > 0 {
        EXIT_CORRECTNESS
    } else if breached > 0 {
        EXIT_THRESHOLD
    } else {
        EXIT_OK
    };
    RunOutcome {
        passed: exit_code == EXIT_OK,
        thresholds_breached: breached,
        correctness_violations: violations,
        exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome_of(breached: bool) -> Outcome {
        Outcome {
            threshold: "x".into(),
            metric: "x".into(),
            actual: Some(1.0),
            breached,
        }
    }

    #[test]
    fn correctness_outranks_thresholds() {
        let clean = Verdict::default();
        let broken = Verdict {
            lost: 1,
            ..Verdict::default()
        };
        assert_eq!(outcome(&[outcome_of(false)], &clean, true).exit_code, EXIT_OK);
        assert_eq!(outcome(&[outcome_of(true)], &clean, true).exit_code, EXIT_THRESHOLD);
        assert_eq!(outcome(&[outcome_of(true)], &broken, true).exit_code, EXIT_CORRECTNESS);
        assert_eq!(
            outcome(&[], &broken, false).exit_code,
            EXIT_OK,
            "--no-fail-on-correctness"
        );
    }

    #[test]
    fn server_costs_are_derived_only_from_present_samples() {
        let mut cost = ServerCost {
            before_ramp: ServerSample {
                cpu_seconds: Some(1.0),
                rss_bytes: Some(100e6),
            },
            after_ramp: ServerSample {
                cpu_seconds: Some(2.0),
                rss_bytes: Some(260e6),
            },
            window_start: ServerSample {
                cpu_seconds: Some(2.0),
                rss_bytes: Some(260e6),
            },
            window_end: ServerSample {
                cpu_seconds: Some(12.0),
                rss_bytes: None,
            },
            ..ServerCost::default()
        };
        cost.derive(10_000, 1_000_000, 10.0);
        assert_eq!(cost.rss_bytes_per_connection, Some(16_000.0));
        assert_eq!(cost.cpu_us_per_delivered, Some(10.0));
        assert_eq!(cost.cpu_utilization_window, Some(1.0));
        assert_eq!(cost.rss_bytes_per_delivered, None);
        let json = serde_json::to_value(&cost).expect("json");
        assert!(json.get("rss_bytes_per_delivered").is_none(), "absent, not null");
    }
}
