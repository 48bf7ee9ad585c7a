//! Open-loop schedule: every send has a planned time fixed before the run starts.
//!
//! Messages are numbered globally: message `i` is due `i / rate` seconds after the start and
//! belongs to sending stream (slot) `i % slots`, so the total rate is exact and the streams are
//! evenly interleaved. A stream that falls behind (a stalled socket, a slow server) sends its
//! overdue messages at once, and their latency is measured from the planned time: a stall shows
//! up in the percentiles instead of silently lowering the offered load (coordinated omission).

use std::time::Duration;

/// The planned times of every message of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Messages per second, all streams together.
    rate: f64,
    /// Number of sending streams.
    slots: usize,
    /// Nothing is planned at or after this offset.
    end: Duration,
}

impl Schedule {
    /// `rate` messages per second over `slots` streams for `length`. A zero rate or zero slots
    /// plans nothing.
    pub fn new(rate: f64, slots: usize, length: Duration) -> Schedule {
        Schedule {
            rate,
            slots,
            end: length,
        }
    }

    fn active(&self) -> bool {
        self.slots > 0 && self.rate > 0.0 && self.rate.is_finite()
    }

    /// Offset from the start at which message `k` of stream `slot` is due, or `None` if it falls
    /// at or after the end (or the stream does not exist).
    pub fn planned(&self, slot: usize, k: u64) -> Option<Duration> {
        if !self.active() || slot >= self.slots {
            return None;
        }
        let index = k.checked_mul(self.slots as u64)?.checked_add(slot as u64)?;
        let at = Duration::from_secs_f64(index as f64 / self.rate);
        (at < self.end).then_some(at)
    }

    /// How many messages stream `slot` sends in the whole schedule.
    pub fn count(&self, slot: usize) -> u64 {
        if !self.active() || slot >= self.slots {
            return 0;
        }
        // Messages with index < end * rate, i.e. k * slots + slot < n.
        let n = (self.end.as_secs_f64() * self.rate).ceil() as u64;
        let mut count = n.saturating_sub(slot as u64).div_ceil(self.slots as u64);
        // Guard against floating-point rounding at the very end.
        while count > 0 && self.planned(slot, count - 1).is_none() {
            count -= 1;
        }
        count
    }

    /// The length of the schedule.
    pub fn end(&self) -> Duration {
        self.end
    }
}

/// One stream's position in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCursor {
    pub slot: usize,
    /// The next message number of this stream.
    pub next: u64,
}

impl StreamCursor {
    pub fn new(slot: usize) -> StreamCursor {
        StreamCursor { slot, next: 0 }
    }

    /// When the next message is due, or `None` when the stream is done.
    pub fn due(&self, schedule: &Schedule) -> Option<Duration> {
        schedule.planned(self.slot, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_times_follow_the_global_rate() {
        let s = Schedule::new(100.0, 4, Duration::from_secs(1));
        // Message i is due at i * 10 ms; slot = i % 4.
        assert_eq!(s.planned(0, 0), Some(Duration::ZERO));
        assert_eq!(s.planned(1, 0), Some(Duration::from_millis(10)));
        assert_eq!(s.planned(3, 0), Some(Duration::from_millis(30)));
        assert_eq!(s.planned(0, 1), Some(Duration::from_millis(40)));
        assert_eq!(s.planned(2, 24), Some(Duration::from_millis(980)));
        assert_eq!(s.planned(0, 25), None, "1000 ms is the end, exclusive");
        assert_eq!(s.planned(4, 0), None, "no such slot");
    }

    #[test]
    fn the_rate_is_spread_evenly_over_streams() {
        let s = Schedule::new(1000.0, 7, Duration::from_secs(3));
        let counts: Vec<u64> = (0..7).map(|slot| s.count(slot)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 3000);
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{counts:?}");
        // Every stream's gaps are exactly slots / rate.
        for slot in 0..7 {
            let gap = s.planned(slot, 1).zip(s.planned(slot, 0)).map(|(b, a)| b - a);
            assert_eq!(gap, Some(Duration::from_millis(7)));
        }
    }

    #[test]
    fn counts_match_the_planned_times() {
        for (rate, slots, ms) in [(3.0, 2, 1000), (0.5, 1, 10_000), (20_000.0, 2000, 1500), (7.0, 3, 333)] {
            let s = Schedule::new(rate, slots, Duration::from_millis(ms));
            for slot in 0..slots {
                let n = s.count(slot);
                if n > 0 {
                    assert!(s.planned(slot, n - 1).is_some());
                }
                assert!(s.planned(slot, n).is_none(), "rate {rate} slots {slots} slot {slot}");
            }
        }
    }

    #[test]
    fn an_idle_schedule_plans_nothing() {
        let s = Schedule::new(0.0, 5, Duration::from_secs(10));
        assert_eq!(s.planned(0, 0), None);
        assert_eq!(s.count(0), 0);
        let mut cursor = StreamCursor::new(0);
        assert_eq!(cursor.due(&s), None);
        cursor.next += 1;
        assert_eq!(
            cursor.due(&Schedule::new(1.0, 1, Duration::from_secs(2))),
            Some(Duration::from_secs(1))
        );
    }
}
