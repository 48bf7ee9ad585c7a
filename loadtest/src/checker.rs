//! Checker: reconciles what the server acknowledged and delivered with the durable history,
//! after the run. Pure: fed plain records, returns counts and a few examples.
//!
//! - **lost**: a `client_msg_id` acked in a conversation is not in that conversation's history.
//! - **ack_mismatch**: it is in the history, but not at the seq the ack named, or two acks of
//!   the same id named different seqs (idempotency broken).
//! - **duplicated**: an id at more than one seq of the history, plus events delivered twice to
//!   the same connection (from `tracker`).
//! - **reordered**, **gaps**: from the connections (`tracker`); gaps also count seqs missing from
//!   a history (seqs are dense from 1).
//! - **undelivered**: after the drain, a connected user's cursor is behind the conversation's
//!   last seq (events that never reached it). It counts as a violation only when the run
//!   *settled* (the drain ended with nothing in flight and no traffic for a second); if the drain
//!   timed out with the node still catching up, it is reported as a liveness problem instead.
//!
//! Sends whose outcome stayed unknown (never acked) must appear at most once; whether they
//! appear is reported, not judged.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use serde::Serialize;

use crate::tracker::StreamViolations;
use crate::wire::MsgKey;

/// An ack the loader received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRecord {
    pub conversation: u64,
    pub seq: u64,
    pub key: MsgKey,
}

/// One event of a conversation's history; `key` is set for the loader's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEvent {
    pub seq: u64,
    pub key: Option<MsgKey>,
}

/// Everything the checker looks at.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub acks: Vec<AckRecord>,
    /// Sends never acked (gave up, or still unanswered at the end): (conversation, key).
    pub unresolved: Vec<(u64, MsgKey)>,
    /// Conversation id -> its history, ascending by seq.
    pub histories: BTreeMap<u64, Vec<HistoryEvent>>,
    /// Summed over every connection.
    pub streams: StreamViolations,
    /// (conversation, cursor) for every member that was connected at the end.
    pub final_cursors: Vec<(u64, u64)>,
    /// The drain ended quiet: nothing in flight, no acks or deliveries for a second.
    pub settled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub gaps: u64,
    pub undelivered: u64,
    pub ack_mismatch: u64,
    /// Whether `undelivered` counts as a violation (see the module docs).
    pub settled: bool,
    /// Parts of the totals above, for diagnosis.
    pub history_duplicates: u64,
    pub history_gaps: u64,
    pub connection_duplicates: u64,
    pub replayed_after_resync: u64,
    pub unresolved_sends: u64,
    pub unresolved_in_history: u64,
    pub acked_messages: u64,
    pub history_events: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 20;

impl Verdict {
    /// Total count of contract violations.
    pub fn violations(&self) -> u64 {
        let undelivered = if self.settled { self.undelivered } else { 0 };
        self.lost + self.duplicated + self.reordered + self.gaps + undelivered + self.ack_mismatch
    }

    fn example(&mut self, text: impl FnOnce() -> String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text());
        }
    }
}

/// Per conversation: key -> the seqs it appears at; and the last seq.
struct Index {
    seqs_of: HashMap<(u64, MsgKey), Vec<u64>>,
    last: BTreeMap<u64, u64>,
}

fn index_histories(evidence: &Evidence, verdict: &mut Verdict) -> Index {
    let mut seqs_of: HashMap<(u64, MsgKey), Vec<u64>> = HashMap::new();
    let mut last = BTreeMap::new();
    for (&conversation, events) in &evidence.histories {
        let mut expected = 1;
        for event in events {
            verdict.history_events += 1;
            if event.seq > expected {
                let missing = event.seq - expected;
                verdict.history_gaps += missing;
                verdict.example(|| {
                    format!(
                        "conversation {conversation}: history skips seqs {expected}..{}",
                        event.seq - 1
                    )
                });
            } else if event.seq < expected {
                verdict.history_duplicates += 1;
                verdict.example(|| format!("conversation {conversation}: history repeats seq {}", event.seq));
            }
            expected = expected.max(event.seq + 1);
            if let Some(key) = event.key {
                seqs_of.entry((conversation, key)).or_default().push(event.seq);
            }
        }
        last.insert(conversation, expected - 1);
    }
    for ((conversation, key), seqs) in &seqs_of {
        if seqs.len() > 1 {
            verdict.history_duplicates += seqs.len() as u64 - 1;
            verdict.example(|| {
                format!(
                    "conversation {conversation}: {} stored at seqs {seqs:?}",
                    key.client_msg_id()
                )
            });
        }
    }
    Index { seqs_of, last }
}

pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict {
        settled: evidence.settled,
        ..Verdict::default()
    };
    let index = index_histories(evidence, &mut verdict);

    let mut acked: BTreeMap<(u64, MsgKey), BTreeSet<u64>> = BTreeMap::new();
    for ack in &evidence.acks {
        acked.entry((ack.conversation, ack.key)).or_default().insert(ack.seq);
    }
    verdict.acked_messages = acked.len() as u64;
    for ((conversation, key), ack_seqs) in &acked {
        let id = key.client_msg_id();
        if ack_seqs.len() > 1 {
            verdict.ack_mismatch += ack_seqs.len() as u64 - 1;
            verdict.example(|| format!("conversation {conversation}: {id} acked at different seqs {ack_seqs:?}"));
        }
        match index.seqs_of.get(&(*conversation, *key)) {
            None => {
                verdict.lost += 1;
                verdict.example(|| format!("conversation {conversation}: {id} acked at {ack_seqs:?}, not in history"));
            }
            Some(stored) => {
                for seq in ack_seqs.iter().filter(|s| !stored.contains(s)) {
                    verdict.ack_mismatch += 1;
                    verdict
                        .example(|| format!("conversation {conversation}: {id} acked at {seq}, stored at {stored:?}"));
                }
            }
        }
    }

    let unresolved: BTreeSet<(u64, MsgKey)> = evidence
        .unresolved
        .iter()
        .copied()
        .filter(|k| !acked.contains_key(k))
        .collect();
    verdict.unresolved_sends = unresolved.len() as u64;
    verdict.unresolved_in_history = unresolved.iter().filter(|k| index.seqs_of.contains_key(k)).count() as u64;

    for &(conversation, cursor) in &evidence.final_cursors {
        let last = index.last.get(&conversation).copied().unwrap_or(0);
        if cursor < last {
            verdict.undelivered += last - cursor;
            verdict.example(|| format!("conversation {conversation}: a member ended at seq {cursor} of {last}"));
        }
    }

    let s = &evidence.streams;
    verdict.connection_duplicates = s.duplicated;
    verdict.replayed_after_resync = s.replayed;
    verdict.duplicated = verdict.history_duplicates + s.duplicated;
    verdict.reordered = s.reordered;
    verdict.gaps = verdict.history_gaps + s.gaps;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u64) -> MsgKey {
        MsgKey { slot: 0, k }
    }

    /// Conversation 7: seq 1 is `members_added`, then messages k=0..n at seqs 2..; all acked;
    /// two members ended fully caught up.
    fn clean(n: u64) -> Evidence {
        let mut events = vec![HistoryEvent { seq: 1, key: None }];
        let mut acks = Vec::new();
        for k in 0..n {
            events.push(HistoryEvent {
                seq: k + 2,
                key: Some(key(k)),
            });
            acks.push(AckRecord {
                conversation: 7,
                seq: k + 2,
                key: key(k),
            });
        }
        Evidence {
            acks,
            unresolved: Vec::new(),
            histories: BTreeMap::from([(7, events)]),
            streams: StreamViolations::default(),
            final_cursors: vec![(7, n + 1), (7, n + 1)],
            settled: true,
        }
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let verdict = check(&clean(10));
        assert_eq!(verdict.violations(), 0, "{verdict:?}");
        assert_eq!(verdict.acked_messages, 10);
        assert!(verdict.examples.is_empty());
    }

    #[test]
    fn an_acked_message_missing_from_history_is_lost() {
        let mut e = clean(10);
        // The store "forgot" k=4 (seq 6); later events shifted down, so the history is dense.
        let history = e.histories.get_mut(&7).expect("conversation");
        history.retain(|ev| ev.key != Some(key(4)));
        for (i, ev) in history.iter_mut().enumerate() {
            ev.seq = i as u64 + 1;
        }
        let verdict = check(&e);
        assert_eq!(verdict.lost, 1);
        assert!(verdict.ack_mismatch > 0, "later acks now name the wrong seqs");
        assert!(verdict.examples.iter().any(|x| x.contains("m0.4")));
    }

    #[test]
    fn a_message_stored_twice_is_duplicated() {
        let mut e = clean(3);
        let history = e.histories.get_mut(&7).expect("conversation");
        history.push(HistoryEvent {
            seq: 5,
            key: Some(key(1)),
        });
        e.final_cursors = vec![(7, 5)];
        let verdict = check(&e);
        assert_eq!(verdict.duplicated, 1);
        assert_eq!(verdict.history_duplicates, 1);
        assert_eq!(verdict.lost, 0);
    }

    #[test]
    fn one_id_acked_at_two_seqs_breaks_idempotency() {
        let mut e = clean(3);
        e.acks.push(AckRecord {
            conversation: 7,
            seq: 9,
            key: key(0),
        });
        let verdict = check(&e);
        assert_eq!(
            verdict.ack_mismatch, 2,
            "two acks disagree, and one names a seq not stored"
        );
    }

    #[test]
    fn connection_reorders_and_gaps_are_counted() {
        let mut e = clean(5);
        e.streams = StreamViolations {
            duplicated: 1,
            reordered: 2,
            gaps: 3,
            replayed: 4,
        };
        let verdict = check(&e);
        assert_eq!((verdict.duplicated, verdict.reordered, verdict.gaps), (1, 2, 3));
        assert_eq!(verdict.replayed_after_resync, 4);
        assert_eq!(verdict.violations(), 6);
    }

    #[test]
    fn a_history_with_a_hole_has_gaps() {
        let mut e = clean(5);
        e.histories.get_mut(&7).expect("conversation").retain(|ev| ev.seq != 3);
        e.acks.retain(|a| a.seq != 3);
        let verdict = check(&e);
        assert_eq!(verdict.history_gaps, 1);
        assert_eq!(verdict.gaps, 1);
        assert_eq!(verdict.lost, 0);
    }

    #[test]
    fn members_behind_at_the_end_are_undelivered() {
        let mut e = clean(5);
        e.final_cursors = vec![(7, 6), (7, 4)];
        assert_eq!(check(&e).undelivered, 2);
        assert_eq!(check(&e).violations(), 2);
        e.settled = false;
        let busy = check(&e);
        assert_eq!(
            (busy.undelivered, busy.violations()),
            (2, 0),
            "reported, not judged, while the node is busy"
        );
    }

    #[test]
    fn unresolved_sends_are_reported_not_judged() {
        let mut e = clean(3);
        e.unresolved = vec![(7, key(2)), (7, key(99))];
        let verdict = check(&e);
        assert_eq!(verdict.unresolved_sends, 1, "k=2 was acked in the end");
        assert_eq!(verdict.unresolved_in_history, 0);
        assert_eq!(verdict.violations(), 0);
    }
}
