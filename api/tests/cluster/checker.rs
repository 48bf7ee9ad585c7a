//! The checker: every conversation's final history (read over REST) against what every client
//! sent, was acknowledged, and received. A conversation is an append-only list, so this is the
//! Jepsen `set-full` idea plus the etcd watch validators (ordered, unique, reliable) per client
//! stream, in the categories of `reliability-security.md` T1.3:
//!
//! - **lost**: an acknowledged message missing from its conversation's history; **wrong ack**: it
//!   is there, at another seq than its ack said.
//! - **duplicated**: one `(sender, client_msg_id)` at two seqs, two acks of one message with
//!   different seqs, or one event delivered twice to one client.
//! - **reordered**: a history whose seqs go backwards, a client stream going backwards, or a
//!   sender's acknowledged messages (sent one at a time) acknowledged out of send order.
//! - **silent gaps**: a history skipping seqs, or a client stream jumping over events it never gets.
//! - **diverged**: a client received at seq `s` something else than the history holds there;
//!   **incomplete**: a client stream ending before the history does (after catching up).
//!
//! Sends with an unknown outcome (never acknowledged, never rejected) may appear at most once:
//! counted as present or absent. Pure functions, fed deliberately broken histories below.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;

/// One event of a conversation's final history.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    pub seq: u64,
    pub sender: u64,
    pub client_msg_id: Option<String>,
}

/// One message as its sender saw it (a peer's messages in send order).
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub peer: String,
    pub sender: u64,
    pub conversation: u64,
    pub client_msg_id: String,
    pub ack_seqs: Vec<u64>,
    pub rejected: bool,
}

/// Everything one client received of one conversation, in arrival order, over all its
/// connections: (seq, client_msg_id).
#[derive(Clone, Debug)]
pub struct Stream {
    pub peer: String,
    pub conversation: u64,
    pub events: Vec<(u64, Option<String>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub acknowledged: usize,
    pub rejected: usize,
    pub unknown_present: usize,
    pub unknown_absent: usize,
    pub lost: usize,
    pub wrong_ack: usize,
    pub duplicated: usize,
    pub delivered_twice: usize,
    pub reordered: usize,
    pub silent_gaps: usize,
    pub diverged: usize,
    pub incomplete: usize,
    /// The first problems found, for the failure message.
    pub problems: Vec<String>,
}

impl Report {
    /// No violation of any kind (unknown outcomes and retries are not violations).
    pub fn clean(&self) -> bool {
        self.lost + self.wrong_ack + self.duplicated + self.delivered_twice + self.reordered + self.silent_gaps == 0
            && self.diverged + self.incomplete + self.rejected == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {}, acknowledged {}, rejected {}, unknown outcome {} (present {}, absent {}); lost {}, wrong ack {}, \
             duplicated {}, delivered twice {}, reordered {}, silent gaps {}, diverged {}, incomplete streams {}",
            self.sent,
            self.acknowledged,
            self.rejected,
            self.unknown_present + self.unknown_absent,
            self.unknown_present,
            self.unknown_absent,
            self.lost,
            self.wrong_ack,
            self.duplicated,
            self.delivered_twice,
            self.reordered,
            self.silent_gaps,
            self.diverged,
            self.incomplete
        )
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// Runs every check; see the module docs for the categories.
pub fn check(histories: &BTreeMap<u64, Vec<HistoryEvent>>, sent: &[SentMessage], streams: &[Stream]) -> Report {
    let mut report = Report::default();
    for (&conversation, events) in histories {
        check_history(conversation, events, &mut report);
    }
    check_sends(histories, sent, &mut report);
    for stream in streams {
        let empty = Vec::new();
        check_stream(
            stream,
            histories.get(&stream.conversation).unwrap_or(&empty),
            &mut report,
        );
    }
    report
}

/// Dense, increasing seqs; each (sender, client_msg_id) once.
fn check_history(conversation: u64, events: &[HistoryEvent], report: &mut Report) {
    let mut previous = 0;
    let mut seen: HashMap<(u64, &str), u64> = HashMap::new();
    for event in events {
        if event.seq <= previous {
            report.reordered += 1;
            report.problem(format!(
                "conversation {conversation}: history seq {} after {previous}",
                event.seq
            ));
        } else if event.seq > previous + 1 {
            report.silent_gaps += 1;
            report.problem(format!(
                "conversation {conversation}: history jumps from {previous} to {}",
                event.seq
            ));
        }
        previous = previous.max(event.seq);
        if let Some(cmid) = event.client_msg_id.as_deref() {
            if let Some(first) = seen.insert((event.sender, cmid), event.seq) {
                report.duplicated += 1;
                report.problem(format!(
                    "conversation {conversation}: {cmid} at seqs {first} and {}",
                    event.seq
                ));
            }
        }
    }
}

/// Acks against the history; FIFO per (peer, conversation); unknown outcomes located.
fn check_sends(histories: &BTreeMap<u64, Vec<HistoryEvent>>, sent: &[SentMessage], report: &mut Report) {
    let mut at: HashMap<(u64, u64, &str), u64> = HashMap::new();
    for (&conversation, events) in histories {
        for event in events {
            if let Some(cmid) = event.client_msg_id.as_deref() {
                at.entry((conversation, event.sender, cmid)).or_insert(event.seq);
            }
        }
    }
    let mut last_acked: HashMap<(&str, u64), u64> = HashMap::new();
    for message in sent {
        report.sent += 1;
        let stored = at
            .get(&(message.conversation, message.sender, message.client_msg_id.as_str()))
            .copied();
        let Some(&seq) = message.ack_seqs.first() else {
            match (message.rejected, stored) {
                (true, _) => report.rejected += 1,
                (false, Some(_)) => report.unknown_present += 1,
                (false, None) => report.unknown_absent += 1,
            }
            continue;
        };
        report.acknowledged += 1;
        if message.ack_seqs.iter().any(|&s| s != seq) {
            report.duplicated += 1;
            report.problem(format!(
                "{}: acks with seqs {:?}",
                message.client_msg_id, message.ack_seqs
            ));
        }
        match stored {
            None => {
                report.lost += 1;
                report.problem(format!(
                    "{}: acked at seq {seq}, not in the history",
                    message.client_msg_id
                ));
            }
            Some(stored) if stored != seq => {
                report.wrong_ack += 1;
                report.problem(format!(
                    "{}: acked at seq {seq}, stored at {stored}",
                    message.client_msg_id
                ));
            }
            Some(_) => {}
        }
        let last = last_acked
            .entry((message.peer.as_str(), message.conversation))
            .or_insert(0);
        if seq <= *last {
            report.reordered += 1;
            report.problem(format!(
                "{}: acked at seq {seq} after a later-sent one at {last}",
                message.client_msg_id
            ));
        }
        *last = (*last).max(seq);
    }
}

/// One client's stream: ordered, unique, reliable, the same events as the history, complete.
fn check_stream(stream: &Stream, history: &[HistoryEvent], report: &mut Report) {
    let stored: HashMap<u64, Option<&str>> = history.iter().map(|e| (e.seq, e.client_msg_id.as_deref())).collect();
    let name = format!("{} in conversation {}", stream.peer, stream.conversation);
    let mut previous = 0;
    let mut seen = HashSet::new();
    for (seq, cmid) in &stream.events {
        if !seen.insert(*seq) {
            report.delivered_twice += 1;
            report.problem(format!("{name}: seq {seq} delivered twice"));
            continue;
        }
        if *seq < previous {
            report.reordered += 1;
            report.problem(format!("{name}: seq {seq} after {previous}"));
        } else if *seq > previous + 1 {
            report.silent_gaps += 1;
            report.problem(format!("{name}: jumped from {previous} to {seq}"));
        }
        previous = previous.max(*seq);
        if stored.get(seq) != Some(&cmid.as_deref()) {
            report.diverged += 1;
            report.problem(format!(
                "{name}: got {cmid:?} at seq {seq}, history has {:?}",
                stored.get(seq)
            ));
        }
    }
    let last = history.last().map_or(0, |e| e.seq);
    if previous < last {
        report.incomplete += 1;
        report.problem(format!("{name}: stream ends at {previous}, history at {last}"));
    }
}

/// A fault injected at `at`, making `affected` conversations unavailable for a while.
#[derive(Clone, Debug)]
pub struct Fault {
    pub label: String,
    pub at: Instant,
    pub affected: Vec<u64>,
}

/// Per affected conversation: from the fault to the first ack after it (`None`: never).
pub fn unavailability(fault: &Fault, ack_times: &BTreeMap<u64, Vec<Instant>>) -> Vec<(u64, Option<Duration>)> {
    fault
        .affected
        .iter()
        .map(|c| {
            let first = ack_times
                .get(c)
                .and_then(|times| times.iter().filter(|&&t| t > fault.at).min().copied());
            (*c, first.map(|t| t - fault.at))
        })
        .collect()
}

/// (p50, p99, max) by nearest rank; zeros for no samples.
pub fn percentiles(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(i).copied().unwrap_or_default()
    };
    (rank(0.50), rank(0.99), sorted.last().copied().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Conversation 1: seq 1 announces the members, then alice's a0, a1 and bob's b0.
    fn history() -> BTreeMap<u64, Vec<HistoryEvent>> {
        let event = |seq, sender, cmid: Option<&str>| HistoryEvent {
            seq,
            sender,
            client_msg_id: cmid.map(str::to_owned),
        };
        let events = vec![
            event(1, 10, None),
            event(2, 10, Some("a0")),
            event(3, 20, Some("b0")),
            event(4, 10, Some("a1")),
        ];
        BTreeMap::from([(1, events)])
    }

    fn sent(peer: &str, sender: u64, cmid: &str, acks: &[u64]) -> SentMessage {
        SentMessage {
            peer: peer.into(),
            sender,
            conversation: 1,
            client_msg_id: cmid.into(),
            ack_seqs: acks.to_vec(),
            rejected: false,
        }
    }

    fn sends() -> Vec<SentMessage> {
        vec![
            sent("alice", 10, "a0", &[2]),
            sent("alice", 10, "a1", &[4]),
            sent("bob", 20, "b0", &[3]),
        ]
    }

    fn stream(peer: &str, seqs: &[u64]) -> Stream {
        let cmids: HashMap<u64, Option<String>> =
            history()[&1].iter().map(|e| (e.seq, e.client_msg_id.clone())).collect();
        let events = seqs.iter().map(|s| (*s, cmids.get(s).cloned().flatten())).collect();
        Stream {
            peer: peer.into(),
            conversation: 1,
            events,
        }
    }

    #[test]
    fn a_faithful_run_is_clean() {
        let report = check(
            &history(),
            &sends(),
            &[stream("alice", &[1, 2, 3, 4]), stream("bob", &[1, 2, 3, 4])],
        );
        assert!(report.clean(), "{report:?}");
        assert_eq!((report.sent, report.acknowledged), (3, 3));
    }

    #[test]
    fn an_acknowledged_message_missing_from_the_history_is_lost() {
        let mut sends = sends();
        sends.push(sent("bob", 20, "b1", &[5]));
        let report = check(&history(), &sends, &[]);
        assert_eq!(report.lost, 1, "{report:?}");
        assert!(!report.clean());
    }

    #[test]
    fn one_client_msg_id_at_two_seqs_is_a_duplicate() {
        let mut history = history();
        let events = history.get_mut(&1).unwrap();
        events.push(HistoryEvent {
            seq: 5,
            sender: 10,
            client_msg_id: Some("a0".into()),
        });
        let report = check(&history, &sends(), &[]);
        assert_eq!(report.duplicated, 1, "{report:?}");
        let report = check(&self::history(), &[sent("alice", 10, "a0", &[2, 3])], &[]);
        assert_eq!(report.duplicated, 1, "two acks, two seqs: {report:?}");
    }

    #[test]
    fn an_event_delivered_twice_to_one_client_is_caught() {
        let report = check(&history(), &sends(), &[stream("bob", &[1, 2, 2, 3, 4])]);
        assert_eq!(report.delivered_twice, 1, "{report:?}");
    }

    #[test]
    fn reordering_in_a_stream_in_the_history_and_in_a_senders_acks_is_caught() {
        let report = check(&history(), &sends(), &[stream("bob", &[1, 3, 2, 4])]);
        assert_eq!(report.reordered, 1, "stream: {report:?}");
        let mut history = history();
        history.get_mut(&1).unwrap().swap(1, 2);
        assert!(check(&history, &[], &[]).reordered >= 1, "history");
        let fifo = [sent("alice", 10, "a1", &[4]), sent("alice", 10, "a0", &[2])];
        let report = check(&self::history(), &fifo, &[]);
        assert_eq!(report.reordered, 1, "sender order: {report:?}");
    }

    #[test]
    fn a_stream_skipping_an_event_is_a_silent_gap_and_a_short_one_is_incomplete() {
        let report = check(&history(), &sends(), &[stream("bob", &[1, 2, 4])]);
        assert_eq!((report.silent_gaps, report.incomplete), (1, 0), "{report:?}");
        let report = check(&history(), &sends(), &[stream("bob", &[1, 2])]);
        assert_eq!((report.silent_gaps, report.incomplete), (0, 1), "{report:?}");
        let mut history = history();
        history.get_mut(&1).unwrap().remove(2);
        assert_eq!(check(&history, &[], &[]).silent_gaps, 1, "a hole in the history");
    }

    #[test]
    fn a_wrong_ack_and_a_diverging_stream_are_caught() {
        let report = check(&history(), &[sent("alice", 10, "a0", &[3])], &[]);
        assert_eq!(report.wrong_ack, 1, "{report:?}");
        let mut bad = stream("bob", &[1, 2, 3, 4]);
        bad.events[1].1 = Some("zz".into());
        assert_eq!(check(&history(), &[], &[bad]).diverged, 1);
    }

    #[test]
    fn unknown_outcomes_are_located_not_counted_as_violations() {
        let mut sends = sends();
        sends.push(sent("bob", 20, "b1", &[])); // never acked, absent
        sends.push(sent("alice", 10, "a1", &[])); // never acked (this attempt), present
        let report = check(&history(), &sends, &[]);
        assert_eq!((report.unknown_absent, report.unknown_present), (1, 1), "{report:?}");
    }

    #[test]
    fn unavailability_runs_from_the_fault_to_the_first_later_ack() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let fault = Fault {
            label: "kill".into(),
            at: ms(100),
            affected: vec![1, 2],
        };
        let acks = BTreeMap::from([(1, vec![ms(50), ms(900), ms(400)]), (2, vec![ms(90)])]);
        let got = unavailability(&fault, &acks);
        assert_eq!(got, vec![(1, Some(Duration::from_millis(300))), (2, None)]);
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, max) = percentiles(&samples);
        assert_eq!(
            (p50, p99, max),
            (
                Duration::from_millis(50),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
    }
}
