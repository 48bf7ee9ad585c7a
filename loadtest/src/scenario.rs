//! Scenario: the TOML file a run is described by (`loadtest/scenarios/*.toml`), and the same
//! shape filled from command-line flags, so that flags override the file field by field.
//!
//! Every field is optional here; `config::RunConfig` applies the defaults and validates the
//! result. Unknown keys are errors, so a typo never silently falls back to a default.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;

/// Why a scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

/// `SIZExCOUNT`: COUNT groups of SIZE members each, e.g. `100x20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    pub size: usize,
    pub count: usize,
}

impl FromStr for GroupSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not SIZExCOUNT (e.g. 100x20: twenty groups of 100 members)");
        let (size, count) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let size: usize = size.trim().parse().map_err(|_| bad())?;
        let count: usize = count.trim().parse().map_err(|_| bad())?;
        if size < 2 || count == 0 {
            return Err(format!(
                "`{text}`: groups need at least 2 members and a count of at least 1"
            ));
        }
        Ok(GroupSpec { size, count })
    }
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.size, self.count)
    }
}

impl<'de> Deserialize<'de> for GroupSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A scenario file. Times are whole seconds; rates are per second.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports (default: the file name).
    pub name: Option<String>,
    /// One line on what this scenario measures.
    pub description: Option<String>,
    /// Target nodes (`http://127.0.0.1:8080`); users are spread over them round-robin.
    pub urls: Option<Vec<String>>,
    /// Where to scrape `/metrics` instead of the targets (e.g. cluster nodes' internal listeners);
    /// `http://HOST:PORT[/PATH]`, the path defaulting to `/metrics`.
    pub metrics_urls: Option<Vec<String>>,
    /// Administrator who provisions the users (`POST /v1/admin/users`).
    pub admin_user: Option<String>,
    /// Virtual users, one WebSocket connection each.
    pub users: Option<usize>,
    /// Connections opened per second during the ramp.
    pub connect_rate: Option<f64>,
    /// Direct (1:1) conversations.
    pub direct_pairs: Option<usize>,
    /// Groups as `SIZExCOUNT` strings.
    pub groups: Option<Vec<GroupSpec>>,
    /// Sending streams: each is one (user, conversation); default one per conversation.
    pub senders: Option<usize>,
    /// Messages per second, in total, on a fixed open-loop schedule.
    pub rate: Option<f64>,
    /// Size of each message text, in bytes.
    pub payload_bytes: Option<usize>,
    /// Measured seconds (after the warmup).
    pub duration_secs: Option<u64>,
    /// Seconds of sending before measurement starts.
    pub warmup_secs: Option<u64>,
    /// Longest wait for outstanding acks and deliveries after sending stops.
    pub drain_secs: Option<u64>,
    /// Connections closed and reopened per second during sending (they then `sync`).
    pub churn_per_sec: Option<f64>,
    /// Seed of every random choice (churn victims), for repeatable runs.
    pub seed: Option<u64>,
    /// A send with no answer for this long is retried with the same `client_msg_id`.
    pub ack_timeout_ms: Option<u64>,
    /// Prefix of provisioned usernames (default: `lt` + a random run id).
    pub user_prefix: Option<String>,
    /// Concurrent REST requests while provisioning and checking.
    pub setup_concurrency: Option<usize>,
    /// Thresholds such as `p99_deliver_ms>50`: the run fails (exit 99) if one holds.
    pub fail_if: Option<Vec<String>>,
}

impl Scenario {
    /// Read a scenario file; its name defaults to the file stem.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: display.clone(),
            source,
        })?;
        let mut scenario = Scenario::parse(&text).map_err(|message| ScenarioError::Parse { path: display, message })?;
        if scenario.name.is_none() {
            scenario.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(scenario)
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `over`'s fields win where set. Thresholds add up: the file's and the flags' all apply.
    pub fn overlay(self, over: Scenario) -> Scenario {
        let fail_if = match (self.fail_if, over.fail_if) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => b.or(a),
        };
        Scenario {
            name: over.name.or(self.name),
            description: over.description.or(self.description),
            urls: over.urls.filter(|u| !u.is_empty()).or(self.urls),
            metrics_urls: over.metrics_urls.filter(|u| !u.is_empty()).or(self.metrics_urls),
            admin_user: over.admin_user.or(self.admin_user),
            users: over.users.or(self.users),
            connect_rate: over.connect_rate.or(self.connect_rate),
            direct_pairs: over.direct_pairs.or(self.direct_pairs),
            groups: over.groups.filter(|g| !g.is_empty()).or(self.groups),
            senders: over.senders.or(self.senders),
            rate: over.rate.or(self.rate),
            payload_bytes: over.payload_bytes.or(self.payload_bytes),
            duration_secs: over.duration_secs.or(self.duration_secs),
            warmup_secs: over.warmup_secs.or(self.warmup_secs),
            drain_secs: over.drain_secs.or(self.drain_secs),
            churn_per_sec: over.churn_per_sec.or(self.churn_per_sec),
            seed: over.seed.or(self.seed),
            ack_timeout_ms: over.ack_timeout_ms.or(self.ack_timeout_ms),
            user_prefix: over.user_prefix.or(self.user_prefix),
            setup_concurrency: over.setup_concurrency.or(self.setup_concurrency),
            fail_if,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scenario_parses() {
        let s = Scenario::parse(
            r#"
            name = "fanout"
            urls = ["http://127.0.0.1:8080"]
            metrics_urls = ["http://127.0.0.1:9090", "http://127.0.0.1:9091/metrics"]
            users = 2000
            connect_rate = 500.0
            groups = ["100x20", "10 x 3"]
            senders = 20
            rate = 4000.0
            duration_secs = 30
            fail_if = ["p99_deliver_ms>50"]
            "#,
        )
        .expect("valid");
        assert_eq!(s.users, Some(2000));
        assert_eq!(s.metrics_urls.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            s.groups,
            Some(vec![
                GroupSpec { size: 100, count: 20 },
                GroupSpec { size: 10, count: 3 }
            ])
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Scenario::parse("users = 10\nconections = 5\n").expect_err("typo");
        assert!(err.contains("conections"), "{err}");
    }

    #[test]
    fn bad_group_specs_are_rejected() {
        assert!("100".parse::<GroupSpec>().is_err());
        assert!("1x5".parse::<GroupSpec>().is_err());
        assert!("5x0".parse::<GroupSpec>().is_err());
        assert!(Scenario::parse("groups = [\"ax3\"]").is_err());
        assert_eq!("5X2".parse::<GroupSpec>(), Ok(GroupSpec { size: 5, count: 2 }));
    }

    #[test]
    fn flags_override_the_file_and_thresholds_add_up() {
        let file = Scenario {
            users: Some(10),
            rate: Some(5.0),
            fail_if: Some(vec!["errors>0".into()]),
            ..Scenario::default()
        };
        let flags = Scenario {
            users: Some(20),
            fail_if: Some(vec!["lost>0".into()]),
            ..Scenario::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.users, Some(20));
        assert_eq!(merged.rate, Some(5.0));
        assert_eq!(merged.fail_if, Some(vec!["errors>0".to_owned(), "lost>0".to_owned()]));
    }
}
