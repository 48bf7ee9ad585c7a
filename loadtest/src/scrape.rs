//! Server cost: scrapes each target's `/metrics` (Prometheus text) for the process CPU time and
//! resident memory the node reports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`), summed over the targets. A node that does not export them
//! yields `None`, and the report omits the derived numbers rather than guessing.

use crate::http::HttpClient;
use crate::target::Target;

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

/// Scrape every target; a target that cannot be scraped makes the sums `None`.
pub async fn scrape(targets: &[Target]) -> ServerSample {
    let mut total = ServerSample {
        cpu_seconds: Some(0.0),
        rss_bytes: Some(0.0),
    };
    for target in targets {
        let mut client = HttpClient::new(target.clone());
        let sample = match client.raw("GET", "/metrics", None, None).await {
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
    fn own_cpu_time_is_readable_on_linux() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(own_cpu_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}
