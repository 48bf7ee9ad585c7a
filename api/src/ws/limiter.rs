//! TokenBucket: per-connection frame rate limit. Owned by one connection actor; no sharing.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `per_sec` sustained, bursts up to twice that.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            capacity: per_sec * 2.0,
            per_sec,
            tokens: per_sec * 2.0,
            last: now,
        }
    }

    /// Take one token; `Err(ms)` says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.per_sec) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, t0);
        for _ in 0..20 {
            assert!(bucket.take(t0).is_ok());
        }
        let wait = bucket.take(t0).expect_err("empty");
        assert!(wait > 0 && wait <= 100);
        assert!(bucket.take(t0 + Duration::from_millis(100)).is_ok());
    }
}
