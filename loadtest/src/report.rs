//! Report: report.html (one self-contained file: inline CSS and SVG charts, no scripts, no
//! external resources) and the plain-text summary printed at the end of a run.

use std::fmt::Write;

use crate::failover::TargetStats;
use crate::stats::series::IntervalPoint;
use crate::stats::series::LatencySummary;
use crate::summary::Summary;
use crate::svg;
use crate::svg::escape;
use crate::svg::Chart;
use crate::svg::Line;

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.pass{color:#176117}.fail{color:#a11}\
.charts{display:flex;flex-wrap:wrap;gap:12px}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}";

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// (label, value) rows of the key numbers, shared by the text and HTML summaries.
pub fn key_rows(s: &Summary) -> Vec<(String, String)> {
    let r = &s.results;
    let c = &r.correctness;
    let mut rows = vec![
        ("measured window".to_owned(), format!("{:.1} s", r.window_secs)),
        (
            "connections".to_owned(),
            format!(
                "{} of {} (ramp {:.1} s)",
                s.setup.connected, s.config.users, s.setup.ramp_secs
            ),
        ),
        ("connects/s (ramp)".to_owned(), format!("{:.0}", r.connects_per_sec)),
        (
            "sent/s (offered)".to_owned(),
            format!("{:.0} ({:.0})", r.sent_per_sec, r.offered_rate),
        ),
        ("acked/s".to_owned(), format!("{:.0}", r.acked_per_sec)),
        ("delivered/s".to_owned(), format!("{:.0}", r.delivered_per_sec)),
        (
            "errors".to_owned(),
            format!(
                "{} {}",
                r.errors,
                r.errors_by_code
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        (
            "correctness".to_owned(),
            format!(
                "lost {} duplicated {} reordered {} gaps {} undelivered {}{} ack_mismatch {} (acked {})",
                c.lost,
                c.duplicated,
                c.reordered,
                c.gaps,
                c.undelivered,
                if c.settled {
                    ""
                } else {
                    " (node still busy at the end: not judged)"
                },
                c.ack_mismatch,
                c.acked_messages
            ),
        ),
    ];
    if r.targets.len() > 1 {
        rows.push(("targets".to_owned(), target_counts(&r.targets)));
    }
    if let Some(busy) = r.loader.cpu_utilization_window {
        rows.push(("load generator".to_owned(), format!("{busy:.2} cores busy in window")));
    }
    let sv = &r.server;
    if sv.cpu_seconds_window.is_some() || sv.rss_bytes_per_connection.is_some() {
        rows.push((
            "server".to_owned(),
            format!(
                "cpu {} s in window ({} cores busy), {} µs cpu/delivery, {} KiB rss/connection",
                opt(sv.cpu_seconds_window, 2),
                opt(sv.cpu_utilization_window, 2),
                opt(sv.cpu_us_per_delivered, 2),
                opt(sv.rss_bytes_per_connection.map(|b| b / 1024.0), 1)
            ),
        ));
    }
    rows
}

/// `url: connects (reconnects, failovers away)` per target, for runs against several nodes.
fn target_counts(targets: &[TargetStats]) -> String {
    targets
        .iter()
        .map(|t| {
            format!(
                "{}: {} connects ({} reconnects, {} failovers away)",
                t.url, t.connects, t.reconnects, t.failovers_away
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn latency_rows(s: &Summary) -> Vec<(&'static str, Option<LatencySummary>)> {
    let l = &s.results.latency_ms;
    vec![("connect", l.connect), ("ack", l.ack), ("deliver", l.deliver)]
}

/// The plain-text summary printed to stdout.
pub fn text(s: &Summary) -> String {
    let mut out = format!("\n== {} ({}) ==\n", s.name, s.schema);
    for (k, v) in key_rows(s) {
        let _ = writeln!(out, "{k:>20}  {v}");
    }
    let _ = writeln!(
        out,
        "{:>20}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "latency ms", "p50", "p90", "p99", "p99.9", "max", "count"
    );
    for (name, l) in latency_rows(s) {
        match l {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "{name:>20}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10}",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
                );
            }
            None => {
                let _ = writeln!(out, "{name:>20}  no samples");
            }
        }
    }
    for t in &s.thresholds {
        let _ = writeln!(
            out,
            "{:>20}  {} (actual {})",
            if t.breached { "BREACHED" } else { "ok" },
            t.threshold,
            opt(t.actual, 3)
        );
    }
    for example in s.results.correctness.examples.iter().take(5) {
        let _ = writeln!(out, "{:>20}  {example}", "violation");
    }
    let _ = writeln!(
        out,
        "{:>20}  {} (exit {})",
        "result",
        if s.outcome.passed { "PASS" } else { "FAIL" },
        s.outcome.exit_code
    );
    out
}

fn series(points: &[IntervalPoint], f: impl Fn(&IntervalPoint) -> Option<f64>) -> Vec<(f64, Option<f64>)> {
    points.iter().map(|p| (p.t, f(p))).collect()
}

fn charts(s: &Summary) -> Vec<Chart> {
    let p = &s.series;
    let band = p
        .iter()
        .filter(|x| x.phase == crate::stats::series::Phase::Measure)
        .map(|x| x.t)
        .fold(None, |acc: Option<(f64, f64)>, t| match acc {
            None => Some((t - 1.0, t)),
            Some((a, b)) => Some((a.min(t - 1.0), b.max(t))),
        });
    let chart = |title: &str, unit: &str, lines: Vec<Line>| Chart {
        title: title.to_owned(),
        y_unit: unit.to_owned(),
        lines,
        band,
    };
    let line = |name: &str, color: &'static str, points| Line {
        name: name.to_owned(),
        color,
        points,
    };
    vec![
        chart(
            "Send → deliver latency",
            "ms",
            vec![
                line("p50", "#2a7ab8", series(p, |x| x.deliver_p50_ms)),
                line("p99", "#c0392b", series(p, |x| x.deliver_p99_ms)),
            ],
        ),
        chart(
            "Send → ack latency",
            "ms",
            vec![
                line("p50", "#2a7ab8", series(p, |x| x.ack_p50_ms)),
                line("p99", "#c0392b", series(p, |x| x.ack_p99_ms)),
            ],
        ),
        chart(
            "Throughput",
            "per second",
            vec![
                line("sent", "#7d3c98", series(p, |x| Some(x.counts.sent as f64))),
                line("acked", "#27ae60", series(p, |x| Some(x.counts.acked as f64))),
                line("delivered", "#e67e22", series(p, |x| Some(x.counts.delivered as f64))),
            ],
        ),
        chart(
            "Connections",
            "open",
            vec![
                line("open", "#2a7ab8", series(p, |x| Some(x.connections as f64))),
                line("connect p99 ms", "#999", series(p, |x| x.connect_p99_ms)),
            ],
        ),
        chart(
            "Errors",
            "per second",
            vec![line("errors", "#c0392b", series(p, |x| Some(x.counts.errors as f64)))],
        ),
    ]
}

/// The whole report.html.
pub fn html(s: &Summary) -> String {
    let mut h = String::new();
    let verdict = if s.outcome.passed { "pass" } else { "fail" };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>roost-loadtest: {name}</title>\
         <style>{CSS}</style></head><body><h1>roost-loadtest: {name}</h1><p>{desc}</p>\
         <h2 class=\"{verdict}\">{} (exit {})</h2><table>",
        if s.outcome.passed { "PASS" } else { "FAIL" },
        s.outcome.exit_code,
        name = escape(&s.name),
        desc = escape(&s.config.description),
    );
    for (k, v) in key_rows(s) {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", escape(&k), escape(&v));
    }
    h.push_str("</table><h2>Latency (ms, planned send time → event)</h2><table><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th><th>count</th></tr>");
    for (name, l) in latency_rows(s) {
        match l {
            Some(l) => {
                let _ = write!(
                    h,
                    "<tr><td>{name}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, l.count
                );
            }
            None => {
                let _ = write!(h, "<tr><td>{name}</td><td colspan=\"7\">no samples</td></tr>");
            }
        }
    }
    h.push_str("</table>");
    if !s.thresholds.is_empty() {
        h.push_str("<h2>Thresholds</h2><table><tr><th>fail if</th><th>actual</th><th>outcome</th></tr>");
        for t in &s.thresholds {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&t.threshold),
                opt(t.actual, 3),
                if t.breached { "fail" } else { "pass" },
                if t.breached { "breached" } else { "ok" }
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Over time</h2><p>The shaded band is the measurement window.</p><div class=\"charts\">");
    for chart in charts(s) {
        h.push_str(&svg::render(&chart));
    }
    h.push_str("</div>");
    let c = &s.results.correctness;
    if !c.examples.is_empty() {
        h.push_str("<h2>Correctness violations (first examples)</h2><ul>");
        for e in &c.examples {
            let _ = write!(h, "<li>{}</li>", escape(e));
        }
        h.push_str("</ul>");
    }
    let detail = |v: &dyn erased::Json| escape(&v.pretty());
    let _ = write!(
        h,
        "<h2>Correctness detail</h2><pre>{}</pre><h2>Server cost</h2><pre>{}</pre><h2>Environment</h2><pre>{}</pre>\
         <h2>Configuration</h2><pre>{}</pre></body></html>",
        detail(&s.results.correctness),
        detail(&s.results.server),
        detail(&s.environment),
        detail(&s.config),
    );
    h
}

mod erased {
    /// Pretty JSON of any serializable value, behind a trait object.
    pub trait Json {
        fn pretty(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}
