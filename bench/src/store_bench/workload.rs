//! The workload: generated chat messages, the pipelined append driver and the history readers.
//!
//! Appends are submitted the way a conversation actor submits them: the next seq of a
//! conversation is assigned and submitted at once, without waiting for the previous append of that
//! conversation to complete; the store applies them in submission order. One driver keeps
//! `in_flight` appends outstanding across all conversations; each append goes to a conversation
//! chosen uniformly at random, so a conversation often has several appends in flight. An append's
//! latency runs from just before `MessageStore::append` (submission) to its ticket resolving
//! (durable and acknowledged).

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context as _;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use roost_engine::clock::now_millis;
use roost_engine::ids::ClientMsgId;
use roost_engine::ids::ConversationId;
use roost_engine::ids::Seq;
use roost_engine::ids::UserId;
use roost_engine::model::Event;
use roost_engine::model::EventKind;
use roost_engine::model::MessageBody;
use roost_engine::store::AppendOp;
use roost_engine::store::Direction;
use roost_engine::store::PageRequest;
use roost_engine::store::Store;
use serde::Serialize;

use super::stats;

const WORDS: &[&str] = &[
    "the", "build", "is", "green", "again", "can", "you", "review", "my", "pull", "request", "before", "lunch",
    "meeting", "moved", "to", "three", "pm", "room", "b", "thanks", "for", "quick", "fix", "on", "staging", "server",
    "deploy", "tomorrow", "morning", "customer", "reported", "login", "issue", "looking", "into", "it", "now", "ok",
    "sounds", "good", "let", "me", "know", "when", "ready", "ship", "release", "notes", "draft", "shared", "folder",
    "please", "update", "ticket", "status", "we", "need", "more", "tests", "here",
];

/// Users of the benchmark's conversations: a sender is drawn from these.
const USERS: u64 = 10_000;

/// The generator of appends: per-conversation next seqs, realistic bodies and client message ids.
pub struct Messages {
    rng: StdRng,
    /// `next_seq[i]` is the next seq of conversation `i + 1`.
    next_seq: Vec<u64>,
    bodies: Vec<String>,
}

impl Messages {
    pub fn new(conversations: u64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let bodies = (0..512).map(|_| body_text(&mut rng)).collect();
        Self {
            rng,
            next_seq: vec![1; conversations as usize],
            bodies,
        }
    }

    /// Mean length of a message text, in bytes.
    pub fn mean_body_bytes(&self) -> f64 {
        self.bodies.iter().map(String::len).sum::<usize>() as f64 / self.bodies.len() as f64
    }

    /// The next append: a random conversation, its next seq, a random sender, a new UUID-like
    /// client message id and a ~100-byte text.
    pub fn next_op(&mut self) -> AppendOp {
        let index = self.rng.random_range(0..self.next_seq.len());
        let seq = self.next_seq[index];
        self.next_seq[index] += 1;
        let id: u128 = self.rng.random();
        let client_msg_id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (id >> 96) as u32,
            (id >> 80) as u16,
            (id >> 68) as u16 & 0xfff,
            (id >> 56) as u16 & 0xfff,
            id as u64 & 0xffff_ffff_ffff
        );
        let body = MessageBody {
            text: self.bodies[self.rng.random_range(0..self.bodies.len())].clone(),
            ..MessageBody::default()
        };
        AppendOp {
            event: Event {
                conversation: ConversationId(index as u64 + 1),
                seq: Seq(seq),
                sender: UserId(self.rng.random_range(1..=USERS)),
                at: now_millis(),
                kind: EventKind::Message {
                    client_msg_id: ClientMsgId::parse(&client_msg_id).expect("a valid client message id"),
                    body,
                    edited_by: None,
                    recalled_by: None,
                },
            },
            effects: Vec::new(),
        }
    }

    /// The last seq of every conversation (index `i` is conversation `i + 1`).
    pub fn last_seqs(&self) -> Vec<u64> {
        self.next_seq.iter().map(|next| next - 1).collect()
    }
}

/// A chat line of 80 to 120 bytes.
fn body_text(rng: &mut StdRng) -> String {
    let target = rng.random_range(80..=120);
    let mut text = String::with_capacity(target + 12);
    while text.len() < target {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    text.truncate(target);
    text
}

/// How the append phase went.
#[derive(Clone, Debug)]
pub struct AppendOutcome {
    pub appends: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

/// Submit `count` appends keeping `in_flight` outstanding; fail on the first refused append.
pub async fn append(
    store: &Arc<dyn Store>,
    messages: &mut Messages,
    count: u64,
    in_flight: usize,
) -> anyhow::Result<AppendOutcome> {
    let mut latency = stats::histogram();
    let mut pending = FuturesUnordered::new();
    let mut submitted = 0u64;
    let started = Instant::now();
    while submitted < count || !pending.is_empty() {
        while submitted < count && pending.len() < in_flight {
            let op = messages.next_op();
            let what = (op.event.conversation, op.event.seq);
            let submit = Instant::now();
            let ticket = store.append(op);
            pending.push(async move { (ticket.await, submit.elapsed(), what) });
            submitted += 1;
        }
        if let Some((result, elapsed, (conversation, seq))) = pending.next().await {
            result.with_context(|| format!("append of seq {} to conversation {}", seq.0, conversation.0))?;
            stats::record(&mut latency, elapsed);
        }
    }
    Ok(AppendOutcome {
        appends: count,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Which history page a reader asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    /// `Backward` from `Seq(u64::MAX)`: the newest page, what a client opening a conversation reads.
    Newest,
    /// `Backward` from a random seq: scrolling up through history.
    Backward,
    /// `Forward` from a random seq: catching up after a cursor.
    Forward,
}

impl PageKind {
    pub const ALL: [PageKind; 3] = [PageKind::Newest, PageKind::Backward, PageKind::Forward];

    pub fn describe(self) -> &'static str {
        match self {
            PageKind::Newest => "newest (backward from the head)",
            PageKind::Backward => "backward from a random seq",
            PageKind::Forward => "forward from a random seq",
        }
    }

    /// A request into a conversation whose last seq is `last`, and the seqs the page must hold
    /// (first seq, count).
    fn request(self, rng: &mut StdRng, last: u64, limit: usize) -> (PageRequest, u64, usize) {
        let full = (limit as u64).min(last);
        match self {
            PageKind::Newest => {
                let request = PageRequest {
                    from: Seq(u64::MAX),
                    direction: Direction::Backward,
                    limit,
                };
                (request, last, full as usize)
            }
            PageKind::Backward => {
                // Seqs < from: any from in [full + 1, last + 1] gives a full page.
                let from = rng.random_range(full + 1..=last + 1);
                let request = PageRequest {
                    from: Seq(from),
                    direction: Direction::Backward,
                    limit,
                };
                (request, from - 1, full as usize)
            }
            PageKind::Forward => {
                // Seqs > from: any from in [0, last - full] gives a full page.
                let from = rng.random_range(0..=last - full);
                let request = PageRequest {
                    from: Seq(from),
                    direction: Direction::Forward,
                    limit,
                };
                (request, from + 1, full as usize)
            }
        }
    }
}

/// How one page phase went.
#[derive(Clone, Debug)]
pub struct PageOutcome {
    pub pages: u64,
    pub events: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

/// `count` page reads of `kind` split over `readers` concurrent readers, each reading one page at
/// a time from random conversations. Every page is checked: its length and its seqs.
pub async fn pages(
    store: &Arc<dyn Store>,
    last_seqs: &Arc<Vec<u64>>,
    kind: PageKind,
    limit: usize,
    count: u64,
    readers: usize,
    seed: u64,
) -> anyhow::Result<PageOutcome> {
    let readers = readers.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(readers);
    for reader in 0..readers {
        let share = count / readers as u64 + u64::from((reader as u64) < count % readers as u64);
        let store = store.clone();
        let last_seqs = last_seqs.clone();
        let seed = seed.wrapping_mul(31).wrapping_add(reader as u64);
        tasks.push(tokio::spawn(async move {
            read_pages(&store, &last_seqs, kind, limit, share, seed).await
        }));
    }
    let mut latency = stats::histogram();
    let mut events = 0;
    for task in tasks {
        let (histogram, read) = task.await.context("a reader task failed")??;
        latency.add(&histogram).context("merging histograms")?;
        events += read;
    }
    Ok(PageOutcome {
        pages: count,
        events,
        elapsed: started.elapsed(),
        latency,
    })
}

async fn read_pages(
    store: &Arc<dyn Store>,
    last_seqs: &[u64],
    kind: PageKind,
    limit: usize,
    count: u64,
    seed: u64,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut latency = stats::histogram();
    let mut events = 0;
    for _ in 0..count {
        let index = rng.random_range(0..last_seqs.len());
        let conversation = ConversationId(index as u64 + 1);
        let (request, first, expected) = kind.request(&mut rng, last_seqs[index], limit);
        let started = Instant::now();
        let page = store
            .page(conversation, request)
            .await
            .with_context(|| format!("reading {request:?} of conversation {}", conversation.0))?;
        stats::record(&mut latency, started.elapsed());
        check_page(&page, request.direction, first, expected)
            .with_context(|| format!("page {request:?} of conversation {}", conversation.0))?;
        events += page.len() as u64;
    }
    Ok((latency, events))
}

/// The page holds exactly `expected` events, consecutive from `first` in its direction.
fn check_page(page: &[Event], direction: Direction, first: u64, expected: usize) -> anyhow::Result<()> {
    if page.len() != expected {
        bail!("returned {} events, expected {expected}", page.len());
    }
    for (i, event) in page.iter().enumerate() {
        let want = match direction {
            Direction::Forward => first + i as u64,
            Direction::Backward => first - i as u64,
        };
        if event.seq.0 != want {
            bail!("event {i} has seq {}, expected {want}", event.seq.0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use roost_engine::store::memory::MemoryStore;

    use super::*;

    #[test]
    fn messages_are_realistic() {
        let mut messages = Messages::new(3, 7);
        let mean = messages.mean_body_bytes();
        assert!((80.0..=120.0).contains(&mean), "{mean}");
        let op = messages.next_op();
        let EventKind::Message {
            client_msg_id, body, ..
        } = &op.event.kind
        else {
            panic!("not a message");
        };
        assert_eq!(client_msg_id.as_str().len(), 36);
        assert!(body.text.len() >= 80 && body.text.len() <= 120);
        assert_eq!(op.event.seq, Seq(1));
        let total: u64 = messages.last_seqs().iter().sum();
        assert_eq!(total, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_then_checked_pages() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut messages = Messages::new(4, 1);
        let outcome = append(&store, &mut messages, 600, 16).await.expect("appends");
        assert_eq!(outcome.latency.len(), 600);
        let last_seqs = Arc::new(messages.last_seqs());
        for kind in PageKind::ALL {
            let outcome = pages(&store, &last_seqs, kind, 50, 40, 3, 9).await.expect("pages");
            assert_eq!(outcome.latency.len(), 40);
            assert_eq!(outcome.events, 40 * 50);
        }
    }
}
