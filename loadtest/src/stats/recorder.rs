//! Recorder: where every task reports latencies, counts and errors, sharded to keep lock
//! contention low, and merged by the reporter once a second.
//!
//! Each shard holds two sets of HDR histograms: the current 1-second interval (taken and reset
//! by the reporter for the time series) and the measurement window (samples whose *planned* send
//! time falls inside `[warmup end, run end)`, merged once at the end). Counts are per interval;
//! the reporter sums the intervals that lie inside the window. Locks are held for one record,
//! never across an await.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::sync::MutexGuard;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::Clock;

/// Highest recordable latency: one hour, in microseconds. Larger values are clamped.
pub const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds 1..1h with 3 digits are valid")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// WebSocket upgrade with the bearer token until the `welcome` frame.
    Connect,
    /// Planned send time to the `ack`.
    Ack,
    /// Planned send time to the event arriving at a recipient.
    Deliver,
}

/// The three latency histograms.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub connect: Histogram<u64>,
    pub ack: Histogram<u64>,
    pub deliver: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            connect: histogram(),
            ack: histogram(),
            deliver: histogram(),
        }
    }

    pub fn get(&self, kind: Latency) -> &Histogram<u64> {
        match kind {
            Latency::Connect => &self.connect,
            Latency::Ack => &self.ack,
            Latency::Deliver => &self.deliver,
        }
    }

    fn get_mut(&mut self, kind: Latency) -> &mut Histogram<u64> {
        match kind {
            Latency::Connect => &mut self.connect,
            Latency::Ack => &mut self.ack,
            Latency::Deliver => &mut self.deliver,
        }
    }

    pub fn record(&mut self, kind: Latency, micros: u64) {
        self.get_mut(kind).saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Merge `other` in. Both have the same bounds, so this cannot fail.
    pub fn add(&mut self, other: &Latencies) {
        for kind in [Latency::Connect, Latency::Ack, Latency::Deliver] {
            // Same bounds on both sides (made by `histogram()`), so the add cannot overflow range.
            let _ = self.get_mut(kind).add(other.get(kind));
        }
    }

    pub fn reset(&mut self) {
        self.connect.reset();
        self.ack.reset();
        self.deliver.reset();
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

/// Event counts of one interval (or of a sum of intervals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// First attempts of sends written to a socket.
    pub sent: u64,
    /// Resends of a send with the same `client_msg_id`.
    pub retried: u64,
    pub acked: u64,
    /// Stamped messages arriving at a connection for the first time.
    pub delivered: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.retried += o.retried;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.connects += o.connects;
        self.disconnects += o.disconnects;
        self.errors += o.errors;
    }
}

#[derive(Debug, Default)]
struct Shard {
    interval: Latencies,
    window: Latencies,
    counts: Counts,
    errors: BTreeMap<String, u64>,
}

/// What the reporter takes out every second.
#[derive(Debug, Clone, Default)]
pub struct IntervalTake {
    pub latencies: Latencies,
    pub counts: Counts,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    clock: Clock,
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    /// Open WebSocket connections.
    pub open: AtomicI64,
    /// Sends written and not yet answered (acked or given up).
    pub in_flight: AtomicI64,
    /// Acks and deliveries so far, to tell when a drain has gone quiet.
    pub activity: AtomicU64,
}

impl Recorder {
    pub fn new(shards: usize, clock: Clock) -> Recorder {
        Recorder {
            shards: (0..shards.max(1)).map(|_| Mutex::new(Shard::default())).collect(),
            clock,
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            open: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            activity: AtomicU64::new(0),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Messages planned in `[start, end)` (Unix ns) count towards the final percentiles.
    pub fn set_window(&self, start_ns: u64, end_ns: u64) {
        self.window_start_ns.store(start_ns, Ordering::Relaxed);
        self.window_end_ns.store(end_ns, Ordering::Relaxed);
    }

    /// The window as set by `set_window` (`u64::MAX` bounds before sending starts).
    pub fn window(&self) -> (u64, u64) {
        (
            self.window_start_ns.load(Ordering::Relaxed),
            self.window_end_ns.load(Ordering::Relaxed),
        )
    }

    fn shard(&self, shard: usize) -> MutexGuard<'_, Shard> {
        let cell = &self.shards[shard % self.shards.len()];
        // A panic while holding a shard lock leaves plain counters behind; keep using them.
        cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Record a latency measured from `planned_ns` to `now_ns`. Connect latencies always count
    /// towards the final percentiles; the others when their planned time is in the window.
    pub fn latency(&self, shard: usize, kind: Latency, planned_ns: u64, now_ns: u64) {
        let micros = now_ns.saturating_sub(planned_ns) / 1000;
        let in_window = kind == Latency::Connect
            || (planned_ns >= self.window_start_ns.load(Ordering::Relaxed)
                && planned_ns < self.window_end_ns.load(Ordering::Relaxed));
        let mut s = self.shard(shard);
        s.interval.record(kind, micros);
        if in_window {
            s.window.record(kind, micros);
        }
    }

    pub fn count(&self, shard: usize, update: impl FnOnce(&mut Counts)) {
        update(&mut self.shard(shard).counts);
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// Count an error by its protocol code (or a loader code such as `connect_failed`).
    pub fn error(&self, shard: usize, code: &str) {
        let mut s = self.shard(shard);
        s.counts.errors += 1;
        match s.errors.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                s.errors.insert(code.to_owned(), 1);
            }
        }
    }

    /// Take and reset the current interval of every shard, merged.
    pub fn take_interval(&self) -> IntervalTake {
        let mut take = IntervalTake::default();
        for cell in &self.shards {
            let mut s = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            take.latencies.add(&s.interval);
            s.interval.reset();
            take.counts.add(&s.counts);
            s.counts = Counts::default();
            for (code, n) in std::mem::take(&mut s.errors) {
                *take.errors.entry(code).or_default() += n;
            }
        }
        take
    }

    /// The window histograms of every shard, merged.
    pub fn window_latencies(&self) -> Latencies {
        let mut all = Latencies::new();
        for cell in &self.shards {
            let s = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            all.add(&s.window);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_one_distribution() {
        let recorder = Recorder::new(4, Clock::new());
        recorder.set_window(0, u64::MAX);
        // 1..=1000 ms spread over shards: the merged p50 is ~500 ms whatever the spread.
        for ms in 1..=1000u64 {
            recorder.latency(ms as usize, Latency::Deliver, 0, ms * 1_000_000);
        }
        let all = recorder.window_latencies();
        assert_eq!(all.deliver.len(), 1000);
        let p50 = all.deliver.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        assert_eq!(all.deliver.max() / 1000, 1000);
    }

    #[test]
    fn histograms_add_without_losing_counts() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Latency::Ack, 100);
        b.record(Latency::Ack, 300);
        b.record(Latency::Ack, MAX_MICROS * 10);
        a.add(&b);
        assert_eq!(a.ack.len(), 3);
        assert!(a.ack.max() >= MAX_MICROS - MAX_MICROS / 1000, "clamped, not dropped");
    }

    #[test]
    fn only_planned_times_inside_the_window_count_in_the_totals() {
        let recorder = Recorder::new(2, Clock::new());
        recorder.set_window(1_000, 2_000);
        recorder.latency(0, Latency::Ack, 500, 5_000_000);
        recorder.latency(0, Latency::Ack, 1_500, 5_000_000);
        recorder.latency(1, Latency::Connect, 0, 5_000_000);
        let window = recorder.window_latencies();
        assert_eq!((window.ack.len(), window.connect.len()), (1, 1));
        let take = recorder.take_interval();
        assert_eq!(take.latencies.ack.len(), 2, "the time series sees everything");
        assert_eq!(recorder.take_interval().latencies.ack.len(), 0, "taking resets");
    }

    #[test]
    fn counts_and_errors_are_summed_and_reset() {
        let recorder = Recorder::new(3, Clock::new());
        for shard in 0..6 {
            recorder.count(shard, |c| c.sent += 2);
            recorder.error(shard, "overloaded");
        }
        let take = recorder.take_interval();
        assert_eq!(take.counts.sent, 12);
        assert_eq!(take.counts.errors, 6);
        assert_eq!(take.errors.get("overloaded"), Some(&6));
        assert_eq!(recorder.take_interval().counts, Counts::default());
    }
}
