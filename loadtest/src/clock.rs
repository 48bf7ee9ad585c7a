//! Clock: one monotonic time base for the whole run, expressed as Unix nanoseconds.
//!
//! Planned send times are stamped into messages as Unix nanoseconds so any receiver can compute
//! latency; reading them back through the same monotonic base keeps the arithmetic immune to
//! wall-clock steps during a run. Senders and receivers are in this process, so one base serves
//! both.

use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            base_unix_ns,
        }
    }

    /// Now, as Unix nanoseconds on this run's monotonic base.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    pub fn ns_at(&self, at: Instant) -> u64 {
        self.base_unix_ns + at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The instant of a Unix-nanosecond time on this base.
    pub fn instant_of(&self, unix_ns: u64) -> Instant {
        self.base + Duration::from_nanos(unix_ns.saturating_sub(self.base_unix_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_unix_times_convert_both_ways() {
        let clock = Clock::new();
        let later = Instant::now() + Duration::from_millis(1500);
        let ns = clock.ns_at(later);
        assert_eq!(clock.instant_of(ns), later.max(clock.base));
        assert!(clock.now_ns() <= ns);
    }
}
