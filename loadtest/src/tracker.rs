//! ConnTracker: checks one WebSocket connection's event stream against the protocol's promise
//! (per connection, each conversation's events arrive in seq order, each once, without gaps).
//!
//! Pure state machine. A connection starts from the cursors its first `sync` named; from then on
//! each conversation must deliver `cursor+1, cursor+2, ...`:
//! - a seq at or below what already arrived is a **duplicate** (delivered twice);
//! - a seq above the next expected one opens a hole; a hole filled later counts each late seq
//!   as **reordered**; a hole still open when the connection ends counts its seqs as **gaps**.
//!
//! After a client-initiated re-sync on the same connection (the server said `limited`), the
//! server may legitimately resend seqs the client already had, because the client's cursors were
//! a snapshot; those are counted as `replayed`, not as duplicates. A new connection starts a
//! new tracker from the previous one's contiguous cursors, so reconnect + sync restarts cleanly.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::Serialize;

/// Violations seen on connections (summed over all of them in the report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamViolations {
    pub duplicated: u64,
    pub reordered: u64,
    pub gaps: u64,
    /// Resends after the loader's own re-sync: expected, reported for transparency.
    pub replayed: u64,
}

impl StreamViolations {
    pub fn add(&mut self, other: &StreamViolations) {
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.gaps += other.gaps;
        self.replayed += other.replayed;
    }
}

/// What an arriving event is, for counting deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First arrival on this connection: a delivery.
    New,
    Duplicate,
    Replay,
}

#[derive(Debug, Clone, Default)]
struct Stream {
    /// Every seq up to here arrived.
    contiguous: u64,
    /// Highest seq that arrived.
    max: u64,
    /// Missing inclusive ranges above `contiguous` and below `max`, ascending.
    holes: Vec<(u64, u64)>,
    /// A client re-sync happened: seqs up to `max` may come again.
    resynced: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ConnTracker {
    streams: HashMap<u64, Stream>,
    violations: StreamViolations,
}

impl ConnTracker {
    /// A tracker for a connection whose first sync names these cursors.
    pub fn new(cursors: &BTreeMap<u64, u64>) -> ConnTracker {
        let streams = cursors
            .iter()
            .map(|(&c, &seq)| {
                let stream = Stream {
                    contiguous: seq,
                    max: seq,
                    ..Stream::default()
                };
                (c, stream)
            })
            .collect();
        ConnTracker {
            streams,
            violations: StreamViolations::default(),
        }
    }

    pub fn on_event(&mut self, conversation: u64, seq: u64) -> Arrival {
        let stream = self.streams.entry(conversation).or_insert_with(|| Stream {
            // A conversation the sync did not name: take the first event as the start.
            contiguous: seq.saturating_sub(1),
            max: seq.saturating_sub(1),
            ..Stream::default()
        });
        if seq > stream.max {
            if seq > stream.max + 1 {
                stream.holes.push((stream.max + 1, seq - 1));
            }
            stream.max = seq;
            if stream.holes.is_empty() {
                stream.contiguous = seq;
            }
            return Arrival::New;
        }
        if let Some(i) = stream.holes.iter().position(|&(a, b)| (a..=b).contains(&seq)) {
            let (a, b) = stream.holes[i];
            match (seq == a, seq == b) {
                (true, true) => {
                    stream.holes.remove(i);
                }
                (true, false) => stream.holes[i].0 = seq + 1,
                (false, true) => stream.holes[i].1 = seq - 1,
                (false, false) => {
                    stream.holes[i].1 = seq - 1;
                    stream.holes.insert(i + 1, (seq + 1, b));
                }
            }
            stream.contiguous = stream.holes.first().map_or(stream.max, |&(a, _)| a - 1);
            self.violations.reordered += 1;
            return Arrival::New;
        }
        if stream.resynced {
            self.violations.replayed += 1;
            Arrival::Replay
        } else {
            self.violations.duplicated += 1;
            Arrival::Duplicate
        }
    }

    /// The client sent another `sync` on this connection (after `limited`).
    pub fn resynced(&mut self) {
        for stream in self.streams.values_mut() {
            stream.resynced = true;
        }
    }

    /// Per conversation, the seq up to which everything arrived (what the next sync sends).
    pub fn cursors(&self) -> BTreeMap<u64, u64> {
        self.streams.iter().map(|(&c, s)| (c, s.contiguous)).collect()
    }

    /// Close the connection: open holes become gaps.
    pub fn finish(mut self) -> (BTreeMap<u64, u64>, StreamViolations) {
        let cursors = self.cursors();
        for stream in self.streams.values() {
            self.violations.gaps += stream.holes.iter().map(|&(a, b)| b - a + 1).sum::<u64>();
        }
        (cursors, self.violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> ConnTracker {
        ConnTracker::new(&BTreeMap::from([(1, 10), (2, 0)]))
    }

    #[test]
    fn an_ordered_stream_has_no_violations() {
        let mut t = tracker();
        for seq in 11..=20 {
            assert_eq!(t.on_event(1, seq), Arrival::New);
        }
        assert_eq!(t.on_event(2, 1), Arrival::New);
        let (cursors, v) = t.finish();
        assert_eq!(v, StreamViolations::default());
        assert_eq!(cursors, BTreeMap::from([(1, 20), (2, 1)]));
    }

    #[test]
    fn repeats_are_duplicates() {
        let mut t = tracker();
        assert_eq!(t.on_event(1, 11), Arrival::New);
        assert_eq!(t.on_event(1, 11), Arrival::Duplicate);
        assert_eq!(t.on_event(1, 9), Arrival::Duplicate, "below the sync cursor");
        assert_eq!(t.finish().1.duplicated, 2);
    }

    #[test]
    fn late_seqs_are_reordered_and_missing_ones_are_gaps() {
        let mut t = tracker();
        t.on_event(1, 11);
        t.on_event(1, 14); // 12, 13 missing
        t.on_event(1, 16); // 15 missing
        assert_eq!(t.on_event(1, 13), Arrival::New);
        assert_eq!(t.cursors()[&1], 11);
        assert_eq!(t.on_event(1, 12), Arrival::New);
        assert_eq!(t.cursors()[&1], 14);
        let (cursors, v) = t.finish();
        assert_eq!(v.reordered, 2);
        assert_eq!(v.gaps, 1, "15 never came");
        assert_eq!(cursors[&1], 14, "the next connection syncs from the contiguous prefix");
    }

    #[test]
    fn a_hole_split_in_the_middle_keeps_both_sides() {
        let mut t = ConnTracker::new(&BTreeMap::from([(1, 0)]));
        t.on_event(1, 10); // 1..=9 missing
        t.on_event(1, 5);
        let (_, v) = t.finish();
        assert_eq!(v.gaps, 8);
        assert_eq!(v.reordered, 1);
    }

    #[test]
    fn replays_after_a_client_resync_are_not_duplicates() {
        let mut t = tracker();
        t.on_event(1, 11);
        t.on_event(1, 12);
        t.resynced();
        assert_eq!(t.on_event(1, 12), Arrival::Replay);
        assert_eq!(t.on_event(1, 13), Arrival::New);
        let (_, v) = t.finish();
        assert_eq!((v.duplicated, v.replayed), (0, 1));
    }
}
