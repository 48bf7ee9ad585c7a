//! Server cost: scrapes each target's `/metrics` (Prometheus text) for the process CPU time and
//! resident memory the node reports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`), summed over the endpoints. A node that does not export them
//! yields `None`, and the report omits the derived numbers rather than guessing.
//!
//! A cluster node serves `/metrics` on its internal listener, not the public one, so the
//! endpoints can be given apart from the targets (`--metrics-url`, `metrics_urls`): a
//! `MetricsEndpoint` is a URL with an optional path (default `/metrics`), under the same
//! loopback rule as targets.

use crate::http::HttpClient;
use crate::target::Target;
use crate::target::TargetError;

/// Where one node's Prometheus metrics are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEndpoint {
    pub target: Target,
    /// Request path, `/metrics` unless the URL names another.
    pub path: String,
}

impl MetricsEndpoint {
    /// Parse `http://host[:port][/path]` (no path or `/` means `/metrics`), resolve it, and apply
    /// the loopback guard of targets.
    pub fn resolve(url: &str, allow_remote: bool) -> Result<MetricsEndpoint, TargetError> {
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let (base, path) = match url[after_scheme..].find('/') {
            Some(i) => url.split_at(after_scheme + i),
            None => (url, ""),
        };
        if path.contains(char::is_whitespace) {
            return Err(TargetError::Malformed { url: url.to_owned() });
        }
        let target = Target::resolve(base, allow_remote).map_err(|e| with_url(e, url))?;
        let path = match path.trim_end_matches('/') {
            "" => "/metrics".to_owned(),
            p => p.to_owned(),
        };
        Ok(MetricsEndpoint { target, path })
    }

    /// A target's own `/metrics`.
    pub fn of_target(target: &Target) -> MetricsEndpoint {
        MetricsEndpoint {
            target: target.clone(),
            path: "/metrics".to_owned(),
        }
    }
}

/// Name the whole metrics URL (with its path) in an error about its base.
fn with_url(error: TargetError, url: &str) -> TargetError {
    let url = url.to_owned();
    match error {
        TargetError::Malformed { .. } => TargetError::Malformed { url },
        TargetError::UnsupportedScheme { .. } => TargetError::UnsupportedScheme { url },
        TargetError::Remote { addr, .. } => TargetError::Remote { url, addr },
        other => other,
    }
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat; `None` elsewhere.
pub fn own_cpu_seconds() -> Option<f64> {
    // Linux reports utime and stime in clock ticks (USER_HZ = 100 on mainstream architectures);
    // they are fields 14 and 15, i.e. 11 and 12 after the parenthesized command name.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// One scrape of every target, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ServerSample {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
}

/// The first sample of `name` (with or without labels) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = match rest.chars().next()? {
            '{' => &rest[rest.find('}')? + 1..],
            ' ' | '\t' => rest,
            _ => return None,
        };
        rest.split_whitespace().next()?.parse::<f64>().ok()
    })
}

pub fn parse(text: &str) -> ServerSample {
    ServerSample {
        cpu_seconds: metric(text, "process_cpu_seconds_total"),
        rss_bytes: metric(text, "process_resident_memory_bytes"),
    }
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

/// Scrape every endpoint; one that cannot be scraped makes the sums `None`.
pub async fn scrape(endpoints: &[MetricsEndpoint]) -> ServerSample {
    let mut total = ServerSample {
        cpu_seconds: Some(0.0),
        rss_bytes: Some(0.0),
    };
    for endpoint in endpoints {
        let mut client = HttpClient::new(endpoint.target.clone());
        let sample = match client.raw("GET", &endpoint.path, None, None).await {
            Ok((200, body)) => parse(&String::from_utf8_lossy(&body)),
            _ => ServerSample::default(),
        };
        total.cpu_seconds = add(total.cpu_seconds, sample.cpu_seconds);
        total.rss_bytes = add(total.rss_bytes, sample.rss_bytes);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_with_or_without_labels() {
        let text = "# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total gauge\n\
                    process_cpu_seconds_total 12.5\nprocess_cpu_seconds_total_extra 1\n\
                    process_resident_memory_bytes{node=\"a\"} 1.5e8\n";
        assert_eq!(
            parse(text),
            ServerSample {
                cpu_seconds: Some(12.5),
                rss_bytes: Some(1.5e8)
            }
        );
        assert_eq!(parse("roost_api_ws_connections 3\n"), ServerSample::default());
    }

    #[test]
    fn metrics_urls_default_to_the_metrics_path() {
        let e = MetricsEndpoint::resolve("http://127.0.0.1:9091", false).expect("loopback");
        assert_eq!(
            (e.target.url.as_str(), e.path.as_str()),
            ("http://127.0.0.1:9091", "/metrics")
        );
        let e = MetricsEndpoint::resolve("http://127.0.0.1:9091/", false).expect("trailing slash");
        assert_eq!(e.path, "/metrics");
        let e = MetricsEndpoint::resolve("http://[::1]:9091/internal/metrics", false).expect("path");
        assert_eq!(
            (e.target.authority.as_str(), e.path.as_str()),
            ("[::1]:9091", "/internal/metrics")
        );
        assert_eq!(MetricsEndpoint::of_target(&e.target).path, "/metrics");
    }

    #[test]
    fn remote_metrics_urls_need_allow_remote() {
        let err = MetricsEndpoint::resolve("http://10.0.0.7:9091/metrics", false).expect_err("remote");
        assert!(matches!(err, TargetError::Remote { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("--allow-remote") && text.contains("10.0.0.7:9091/metrics"),
            "{text}"
        );
        assert!(MetricsEndpoint::resolve("http://10.0.0.7:9091/metrics", true).is_ok());
        assert!(matches!(
            MetricsEndpoint::resolve("https://127.0.0.1:9091", false),
            Err(TargetError::UnsupportedScheme { .. })
        ));
        assert!(MetricsEndpoint::resolve("127.0.0.1:9091", false).is_err());
        assert!(MetricsEndpoint::resolve("http://127.0.0.1:x/metrics", false).is_err());
    }

    #[test]
    fn own_cpu_time_is_readable_on_linux() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(own_cpu_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}
