//! Series: the per-second time series and the run's totals, built by the reporter task that
//! takes the recorder's interval once a second.
//!
//! An interval belongs to the measurement window when its middle lies inside it; the window
//! starts and ends on whole seconds of the series, so window counts are sums of whole intervals,
//! and rates divide by the intervals' actual total length.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::recorder::Counts;
use super::recorder::Recorder;
use crate::progress::Progress;

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl LatencySummary {
    /// `None` for an empty histogram: no data is not zero latency.
    pub fn of(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }

    /// `p50`, `p90`, `p99`, `p999` or `max`.
    pub fn stat(&self, name: &str) -> Option<f64> {
        match name {
            "p50" => Some(self.p50_ms),
            "p90" => Some(self.p90_ms),
            "p99" => Some(self.p99_ms),
            "p999" => Some(self.p999_ms),
            "max" => Some(self.max_ms),
            _ => None,
        }
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| ms(h.value_at_quantile(q)))
}

/// What the run is doing, for the time series and the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Ramp,
    Warmup,
    Measure,
    Drain,
}

impl Phase {
    pub fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Warmup,
            2 => Phase::Measure,
            3 => Phase::Drain,
            _ => Phase::Ramp,
        }
    }
}

/// One second of the run. Counts are per interval (per second).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalPoint {
    /// End of the interval, seconds since the connection ramp started (about one apart).
    pub t: f64,
    pub phase: Phase,
    pub connections: i64,
    pub in_flight: i64,
    #[serde(flatten)]
    pub counts: Counts,
    pub connect_p99_ms: Option<f64>,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    pub deliver_p50_ms: Option<f64>,
    pub deliver_p99_ms: Option<f64>,
    pub errors_by_code: BTreeMap<String, u64>,
}

/// The time series and totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    pub points: Vec<IntervalPoint>,
    /// Every interval of the run.
    pub total: Counts,
    /// Intervals inside the measurement window.
    pub window: Counts,
    /// Actual length of the intervals inside the window, in seconds.
    pub window_secs: f64,
    pub errors_by_code: BTreeMap<String, u64>,
}

/// Take an interval every second until `stop` turns true, printing progress.
pub async fn report(
    recorder: Arc<Recorder>,
    phase: Arc<AtomicU8>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
    mut progress: Progress,
) -> Series {
    let mut series = Series::default();
    let mut ticker = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous = start;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let take = recorder.take_interval();
        let now = Instant::now();
        // The interval counts towards the window when its middle lies inside it; its rates use
        // its actual length, so a late tick (a busy machine) does not distort them.
        let clock = recorder.clock();
        let middle_ns = (clock.ns_at(previous) + clock.ns_at(now)) / 2;
        let (window_start, window_end) = recorder.window();
        let in_window = middle_ns >= window_start && middle_ns < window_end;
        if in_window {
            series.window.add(&take.counts);
            series.window_secs += now.duration_since(previous).as_secs_f64();
        }
        let point_phase = match Phase::from_u8(phase.load(Ordering::Relaxed)) {
            _ if in_window => Phase::Measure,
            Phase::Measure | Phase::Drain if middle_ns < window_start => Phase::Warmup,
            Phase::Measure => Phase::Drain,
            other => other,
        };
        previous = now;
        series.total.add(&take.counts);
        for (code, count) in &take.errors {
            *series.errors_by_code.entry(code.clone()).or_default() += count;
        }
        let l = &take.latencies;
        let point = IntervalPoint {
            t: (now.duration_since(start).as_secs_f64() * 10.0).round() / 10.0,
            phase: point_phase,
            connections: recorder.open.load(Ordering::Relaxed),
            in_flight: recorder.in_flight.load(Ordering::Relaxed),
            counts: take.counts,
            connect_p99_ms: quantile_ms(&l.connect, 0.99),
            ack_p50_ms: quantile_ms(&l.ack, 0.5),
            ack_p99_ms: quantile_ms(&l.ack, 0.99),
            deliver_p50_ms: quantile_ms(&l.deliver, 0.5),
            deliver_p99_ms: quantile_ms(&l.deliver, 0.99),
            errors_by_code: take.errors,
        };
        progress.interval(&point);
        series.points.push(point);
    }
    // Whatever arrived after the last full second still counts in the totals.
    let rest = recorder.take_interval();
    series.total.add(&rest.counts);
    for (code, count) in rest.errors {
        *series.errors_by_code.entry(code).or_default() += count;
    }
    progress.finish();
    series
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::recorder::histogram;

    #[test]
    fn empty_histograms_have_no_summary() {
        assert_eq!(LatencySummary::of(&histogram()), None);
    }

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut h = histogram();
        for us in [1_000u64, 2_000, 3_000, 4_000, 100_000] {
            h.record(us).expect("in range");
        }
        let s = LatencySummary::of(&h).expect("data");
        assert_eq!(s.count, 5);
        assert!((s.p50_ms - 3.0).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(s.stat("max"), Some(s.max_ms));
        assert_eq!(s.stat("p75"), None);
    }
}
