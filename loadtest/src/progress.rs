//! Progress: one status line per second on stderr. On a terminal the line is rewritten in
//! place; otherwise (CI logs, files) each second is its own plain line.

use std::io::IsTerminal;
use std::io::Write;

use crate::stats::series::IntervalPoint;
use crate::stats::series::Phase;

#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    users: usize,
    wrote_inline: bool,
}

impl Progress {
    pub fn new(users: usize, quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            users,
            wrote_inline: false,
        }
    }

    /// Print a plain message, keeping the status line intact.
    pub fn say(&mut self, message: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.wrote_inline {
            let _ = write!(err, "\r\x1b[2K");
            self.wrote_inline = false;
        }
        let _ = writeln!(err, "{message}");
    }

    pub fn interval(&mut self, p: &IntervalPoint) {
        if self.quiet {
            return;
        }
        let line = format_line(p, self.users);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.wrote_inline = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.wrote_inline {
            let _ = writeln!(std::io::stderr());
            self.wrote_inline = false;
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Ramp => "ramp",
        Phase::Warmup => "warmup",
        Phase::Measure => "measure",
        Phase::Drain => "drain",
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"))
}

/// Large rates in k/M so the line stays short.
fn rate(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

pub fn format_line(p: &IntervalPoint, users: usize) -> String {
    format!(
        "[{:>5.0}s] {:<7} conns {}/{} sent {}/s acked {}/s delivered {}/s ack p99 {} deliver p99 {} errors {} in-flight {}",
        p.t,
        phase_name(p.phase),
        p.connections,
        users,
        rate(p.counts.sent),
        rate(p.counts.acked),
        rate(p.counts.delivered),
        opt_ms(p.ack_p99_ms),
        opt_ms(p.deliver_p99_ms),
        p.counts.errors,
        p.in_flight,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::recorder::Counts;

    #[test]
    fn the_line_is_short_and_complete() {
        let point = IntervalPoint {
            t: 12.0,
            phase: Phase::Measure,
            connections: 2000,
            in_flight: 3,
            counts: Counts {
                sent: 4000,
                acked: 4000,
                delivered: 400_000,
                ..Counts::default()
            },
            connect_p99_ms: None,
            ack_p50_ms: Some(1.0),
            ack_p99_ms: Some(3.12),
            deliver_p50_ms: None,
            deliver_p99_ms: None,
            errors_by_code: BTreeMap::new(),
        };
        let line = format_line(&point, 2000);
        assert!(line.contains("conns 2000/2000"), "{line}");
        assert!(line.contains("delivered 400.0k/s"), "{line}");
        assert!(line.contains("ack p99 3.1ms deliver p99 -"), "{line}");
    }
}
