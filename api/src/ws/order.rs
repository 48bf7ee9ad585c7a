//! DeliveryOrder: per connection, keeps each conversation's events gap-free, in order and
//! without duplicates, whatever order live deliveries and history reads arrive in.
//!
//! Pure state machine, no I/O: the connection actor feeds it live events and history pages and
//! does what it answers (send bytes, start a read). Until the client's first `sync`, live events
//! are held (`Awaiting`): only the client knows where it stands. After it, a conversation the
//! sync did not cover (the user was just added) starts from seq 0. Per conversation:
//! - `Live { sent }`: the next live event must be `sent + 1`; older ones are dropped as
//!   duplicates; a newer one means a gap, so the state becomes `CatchingUp` and a read starts.
//! - `CatchingUp`: a history read is in flight; live events are queued (bounded) and released
//!   after the read in order.
//! - `Behind`: a client-requested sync stopped at its page limit; live events are dropped until
//!   the client syncs again, so the client never sees a gap (it was told `limited`).

use std::collections::BTreeMap;
use std::collections::HashMap;

use bytes::Bytes;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;

/// Most live events queued per conversation during a read; beyond, they are re-read instead.
pub const MAX_QUEUED: usize = 512;

#[derive(Debug)]
enum State {
    /// Before the client's first sync: hold live events until the client says what it has.
    Awaiting {
        queued: BTreeMap<Seq, Bytes>,
        overflowed: bool,
    },
    Live {
        sent: Seq,
    },
    CatchingUp {
        sent: Seq,
        queued: BTreeMap<Seq, Bytes>,
        overflowed: bool,
        sync: bool,
    },
    Behind {
        sent: Seq,
    },
}

/// What the connection should do next for one conversation.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing more to do.
    Idle,
    /// Read history after this seq (oldest first).
    Read { after: Seq },
}

#[derive(Debug, Default)]
pub struct DeliveryOrder {
    conversations: HashMap<ConversationId, State>,
    /// Whether the client has sent its first `sync`.
    synced: bool,
}

/// Outcome of a page: bytes to send in order, what to do next, and (for syncs) whether the
/// page stopped short.
#[derive(Debug)]
pub struct PageOutcome {
    pub send: Vec<Bytes>,
    pub next: Next,
    pub sent: Seq,
    pub limited: bool,
}

impl DeliveryOrder {
    /// A live event arrived. Returns the bytes to send now (possibly none) and whether a read
    /// must start.
    pub fn on_live(&mut self, conversation: ConversationId, seq: Seq, bytes: Bytes) -> (Option<Bytes>, Next) {
        let synced = self.synced;
        let state = self.conversations.entry(conversation).or_insert_with(|| {
            if synced {
                // New to this connection after the sync: the client has nothing of it.
                State::Live { sent: Seq::ZERO }
            } else {
                State::Awaiting {
                    queued: BTreeMap::new(),
                    overflowed: false,
                }
            }
        });
        match state {
            State::Awaiting { queued, overflowed } => {
                if queued.len() < MAX_QUEUED {
                    queued.insert(seq, bytes);
                } else {
                    *overflowed = true;
                }
                (None, Next::Idle)
            }
            State::Live { sent } => {
                if seq <= *sent {
                    (None, Next::Idle)
                } else if seq == sent.next() {
                    *sent = seq;
                    (Some(bytes), Next::Idle)
                } else {
                    let after = *sent;
                    *state = State::CatchingUp {
                        sent: after,
                        queued: BTreeMap::from([(seq, bytes)]),
                        overflowed: false,
                        sync: false,
                    };
                    (None, Next::Read { after })
                }
            }
            State::CatchingUp {
                sent,
                queued,
                overflowed,
                ..
            } => {
                if seq > *sent {
                    if queued.len() < MAX_QUEUED {
                        queued.insert(seq, bytes);
                    } else {
                        *overflowed = true;
                    }
                }
                (None, Next::Idle)
            }
            State::Behind { .. } => (None, Next::Idle),
        }
    }

    /// The client asked to sync from `has`. Returns `Read` unless a read is already running
    /// (its result will then be used for the sync).
    pub fn begin_sync(&mut self, conversation: ConversationId, has: Seq) -> Next {
        self.synced = true;
        match self.conversations.get_mut(&conversation) {
            Some(State::CatchingUp { sync, .. }) => {
                *sync = true;
                Next::Idle
            }
            Some(state @ State::Awaiting { .. }) => {
                let State::Awaiting { mut queued, overflowed } = std::mem::replace(state, State::Live { sent: has })
                else {
                    unreachable!("matched Awaiting above")
                };
                queued.retain(|seq, _| *seq > has);
                *state = State::CatchingUp {
                    sent: has,
                    queued,
                    overflowed,
                    sync: true,
                };
                Next::Read { after: has }
            }
            Some(state) => {
                let queued = BTreeMap::new();
                *state = State::CatchingUp {
                    sent: has,
                    queued,
                    overflowed: false,
                    sync: true,
                };
                Next::Read { after: has }
            }
            None => {
                let state = State::CatchingUp {
                    sent: has,
                    queued: BTreeMap::new(),
                    overflowed: false,
                    sync: true,
                };
                self.conversations.insert(conversation, state);
                Next::Read { after: has }
            }
        }
    }

    /// A history page (ascending, dense) arrived. `full` means the page hit its limit, so more
    /// events may exist.
    pub fn on_page(&mut self, conversation: ConversationId, page: Vec<(Seq, Bytes)>, full: bool) -> PageOutcome {
        let Some(state) = self.conversations.get_mut(&conversation) else {
            return PageOutcome {
                send: Vec::new(),
                next: Next::Idle,
                sent: Seq::ZERO,
                limited: false,
            };
        };
        let State::CatchingUp {
            sent,
            queued,
            overflowed,
            sync,
        } = state
        else {
            let sent = match state {
                State::Live { sent } | State::Behind { sent } | State::CatchingUp { sent, .. } => *sent,
                State::Awaiting { .. } => Seq::ZERO,
            };
            return PageOutcome {
                send: Vec::new(),
                next: Next::Idle,
                sent,
                limited: false,
            };
        };
        let mut send = Vec::new();
        for (seq, bytes) in page {
            if seq == sent.next() {
                *sent = seq;
                send.push(bytes);
            }
        }
        let stale: Vec<Seq> = queued.range(..=*sent).map(|(s, _)| *s).collect();
        for s in stale {
            queued.remove(&s);
        }
        while let Some(bytes) = queued.remove(&sent.next()) {
            *sent = sent.next();
            send.push(bytes);
        }
        let sent_now = *sent;
        if full && *sync {
            *state = State::Behind { sent: sent_now };
            return PageOutcome {
                send,
                next: Next::Idle,
                sent: sent_now,
                limited: true,
            };
        }
        if full || *overflowed || !queued.is_empty() {
            *overflowed = false;
            *sync = false;
            return PageOutcome {
                send,
                next: Next::Read { after: sent_now },
                sent: sent_now,
                limited: false,
            };
        }
        *state = State::Live { sent: sent_now };
        PageOutcome {
            send,
            next: Next::Idle,
            sent: sent_now,
            limited: false,
        }
    }

    /// A read failed: fall back to live delivery from where we are; the client sees the gap by
    /// seq and is told through an error frame.
    pub fn on_read_failed(&mut self, conversation: ConversationId) -> Seq {
        let sent = match self.conversations.get(&conversation) {
            Some(State::Live { sent } | State::Behind { sent } | State::CatchingUp { sent, .. }) => *sent,
            Some(State::Awaiting { .. }) | None => Seq::ZERO,
        };
        self.conversations.insert(conversation, State::Behind { sent });
        sent
    }

    /// Live events may have been lost on their way to this node (a peer node went away, or a
    /// conversation changed owner): re-read every live conversation after what was sent, so a
    /// lost tail shows up without waiting for the next event. Returns the reads to start.
    pub fn resync_live(&mut self) -> Vec<(ConversationId, Seq)> {
        let mut reads = Vec::new();
        for (id, state) in self.conversations.iter_mut() {
            if let State::Live { sent } = *state {
                *state = State::CatchingUp {
                    sent,
                    queued: BTreeMap::new(),
                    overflowed: false,
                    sync: false,
                };
                reads.push((*id, sent));
            }
        }
        reads
    }

    /// Called once a sync has begun every conversation it covers. From now on the connection is
    /// synced: conversations still held (the user joined them while the sync was being
    /// prepared) start from seq 0. Returns the reads to start.
    pub fn release_unsynced(&mut self, covered: &[ConversationId]) -> Vec<(ConversationId, Seq)> {
        self.synced = true;
        let waiting: Vec<ConversationId> = self
            .conversations
            .iter()
            .filter(|(id, state)| matches!(state, State::Awaiting { .. }) && !covered.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let mut reads = Vec::new();
        for id in waiting {
            if let Some(state @ State::Awaiting { .. }) = self.conversations.get_mut(&id) {
                let State::Awaiting { queued, overflowed } = std::mem::replace(state, State::Live { sent: Seq::ZERO })
                else {
                    continue;
                };
                *state = State::CatchingUp {
                    sent: Seq::ZERO,
                    queued,
                    overflowed,
                    sync: false,
                };
                reads.push((id, Seq::ZERO));
            }
        }
        reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ConversationId = ConversationId(1);

    fn b(seq: u64) -> Bytes {
        Bytes::from(seq.to_string())
    }

    fn page(range: std::ops::RangeInclusive<u64>) -> Vec<(Seq, Bytes)> {
        range.map(|s| (Seq(s), b(s))).collect()
    }

    fn texts(v: &[Bytes]) -> Vec<String> {
        v.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect()
    }

    /// A connection that has synced (nothing) and now sees live traffic.
    fn synced() -> DeliveryOrder {
        let mut o = DeliveryOrder::default();
        assert!(o.release_unsynced(&[]).is_empty());
        o
    }

    #[test]
    fn live_events_before_the_first_sync_wait_for_the_clients_cursor() {
        let mut o = DeliveryOrder::default();
        assert_eq!(
            o.on_live(C, Seq(50), b(50)),
            (None, Next::Idle),
            "held until the client says what it has"
        );
        assert_eq!(o.begin_sync(C, Seq(40)), Next::Read { after: Seq(40) });
        let out = o.on_page(C, page(41..=50), false);
        let expected: Vec<String> = (41..=50).map(|s| s.to_string()).collect();
        assert_eq!(texts(&out.send), expected, "50 is sent once, after 41..49");
    }

    #[test]
    fn conversations_the_sync_did_not_cover_start_from_zero() {
        let mut o = DeliveryOrder::default();
        o.on_live(C, Seq(3), b(3));
        assert_eq!(o.release_unsynced(&[]), vec![(C, Seq::ZERO)]);
        let out = o.on_page(C, page(1..=3), false);
        assert_eq!(texts(&out.send), ["1", "2", "3"]);
    }

    #[test]
    fn live_in_order_and_duplicates_dropped() {
        let mut o = synced();
        assert_eq!(o.on_live(C, Seq(1), b(1)).0, Some(b(1)));
        o.on_live(C, Seq(2), b(2));
        o.on_live(C, Seq(3), b(3));
        o.on_live(C, Seq(4), b(4));
        assert_eq!(o.on_live(C, Seq(5), b(5)).0, Some(b(5)));
        assert_eq!(o.on_live(C, Seq(5), b(5)).0, None);
        assert_eq!(o.on_live(C, Seq(6), b(6)).0, Some(b(6)));
        assert_eq!(o.on_live(C, Seq(4), b(4)).0, None);
    }

    #[test]
    fn gap_triggers_catch_up_then_releases_queue_in_order() {
        let mut o = synced();
        o.on_live(C, Seq(1), b(1));
        let (now, next) = o.on_live(C, Seq(4), b(4));
        assert_eq!(now, None);
        assert_eq!(next, Next::Read { after: Seq(1) });
        o.on_live(C, Seq(5), b(5));
        let out = o.on_page(C, page(2..=4), false);
        assert_eq!(texts(&out.send), ["2", "3", "4", "5"]);
        assert_eq!(out.next, Next::Idle);
        assert_eq!(o.on_live(C, Seq(6), b(6)).0, Some(b(6)));
    }

    #[test]
    fn sync_overlapping_live_sends_each_event_once() {
        let mut o = DeliveryOrder::default();
        assert_eq!(o.begin_sync(C, Seq(10)), Next::Read { after: Seq(10) });
        // Live events arrive while the read is in flight, overlapping what the read returns.
        o.on_live(C, Seq(12), b(12));
        o.on_live(C, Seq(13), b(13));
        let out = o.on_page(C, page(11..=12), false);
        assert_eq!(texts(&out.send), ["11", "12", "13"]);
        assert_eq!(out.sent, Seq(13));
        assert!(!out.limited);
    }

    #[test]
    fn limited_sync_drops_live_until_next_sync() {
        let mut o = DeliveryOrder::default();
        o.begin_sync(C, Seq(0));
        let out = o.on_page(C, page(1..=3), true);
        assert!(out.limited);
        assert_eq!(out.sent, Seq(3));
        assert_eq!(o.on_live(C, Seq(9), b(9)), (None, Next::Idle));
        assert_eq!(o.begin_sync(C, Seq(3)), Next::Read { after: Seq(3) });
        let out = o.on_page(C, page(4..=9), false);
        assert_eq!(out.send.len(), 6);
        assert_eq!(o.on_live(C, Seq(10), b(10)).0, Some(b(10)));
    }

    #[test]
    fn resync_rereads_live_conversations_and_keeps_later_events_in_order() {
        let mut o = synced();
        o.on_live(C, Seq(1), b(1));
        assert_eq!(o.resync_live(), vec![(C, Seq(1))]);
        // A live event while the read is in flight waits for it.
        let (now, next) = o.on_live(C, Seq(3), b(3));
        assert_eq!((now, next), (None, Next::Idle));
        let out = o.on_page(C, page(2..=2), false);
        assert_eq!(texts(&out.send), vec!["2", "3"]);
        assert_eq!(out.next, Next::Idle);
        assert!(o.resync_live().contains(&(C, Seq(3))));
    }

    #[test]
    fn overflowed_queue_reads_again_instead_of_losing() {
        let mut o = synced();
        o.on_live(C, Seq(1), b(1));
        o.on_live(C, Seq(3), b(3));
        for s in 4..(4 + MAX_QUEUED as u64 + 10) {
            o.on_live(C, Seq(s), b(s));
        }
        let out = o.on_page(C, page(2..=3), false);
        assert!(matches!(out.next, Next::Read { .. }));
        let Next::Read { after } = out.next else { unreachable!() };
        let out = o.on_page(C, page(after.0 + 1..=after.0 + 20), false);
        assert_eq!(out.next, Next::Idle);
        assert_eq!(out.sent, Seq(after.0 + 20));
    }
}
